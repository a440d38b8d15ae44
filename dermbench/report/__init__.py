"""Reports built from a results store: leaderboard tables, figures, HTML, comparisons, fairness tables.

Layer 6. May import every layer below: ``dermbench.run`` (reading the results store),
``dermbench.protocols`` (each protocol's own evaluation for ``--rebuild``), ``dermbench.stats``,
``dermbench.data``, ``dermbench.models``, ``dermbench.io``, ``dermbench.config``.
"""
