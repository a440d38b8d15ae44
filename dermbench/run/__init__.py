"""Running the benchmark: the run plan and its executors (local, shards, Slurm) with claim files, the
runner of one job, the results store, site export for federations.

Layer 5. May import: ``dermbench.protocols``, ``dermbench.federated``, ``dermbench.features``,
``dermbench.stats``, ``dermbench.models``, ``dermbench.data``, ``dermbench.io``, ``dermbench.config``.
"""
