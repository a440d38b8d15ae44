"""Running the benchmark: the runner, the results store, site export for federations.

Layer 5. May import: ``dermbench.protocols``, ``dermbench.federated``, ``dermbench.features``,
``dermbench.stats``, ``dermbench.models``, ``dermbench.data``, ``dermbench.io``, ``dermbench.config``.
"""
