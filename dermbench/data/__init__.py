"""Datasets: the sample record, adapters for the official layouts, splits, DermSynth.

Owns the sample records (:mod:`~dermbench.data.sample`), the task cards
(:mod:`~dermbench.data.tasks`), the dataset adapters, splits, DermSynth (:mod:`~dermbench.data.synth`)
and ``dermbench data check``.

Layer 1. May import: ``dermbench.io``, ``dermbench.config``. Nothing above.
"""
from dermbench.data.sample import DatasetError, Sample, TaskData

__all__ = ["DatasetError", "Sample", "TaskData"]
