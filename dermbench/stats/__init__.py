"""Statistics on stored predictions: metrics, the shared bootstrap, paired tests, fairness.

Owns: classification and segmentation metrics (:mod:`~dermbench.stats.metrics`), caption metrics
(:mod:`~dermbench.stats.caption_metrics`), bootstrap resamples and summaries
(:mod:`~dermbench.stats.bootstrap`), evaluation of a predictions table
(:mod:`~dermbench.stats.evaluation`), paired tests between two models
(:mod:`~dermbench.stats.paired`) and per-subgroup metrics (:mod:`~dermbench.stats.fairness`).
Everything here takes arrays or DataFrames; nothing reads the results store.

Layer 2. May import: ``dermbench.data``, ``dermbench.io``, ``dermbench.config``.
"""
