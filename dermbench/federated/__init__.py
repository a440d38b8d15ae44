"""Federated learning with Flower on frozen features (the ``federated`` protocol's machinery).

- :mod:`dermbench.federated.training`: the linear head, its seeded initialisation and the local
  training step (Adam, cosine schedule), shared by the Flower clients and the baselines.
- :mod:`dermbench.federated.partition`: one ``.npz`` of features per client (a site, or a
  Dirichlet(α) label-skewed share of one task), so clients load their own data from disk.
- :mod:`dermbench.federated.client_app` / :mod:`dermbench.federated.server_app`: the Flower
  ``ClientApp`` and ``ServerApp`` (Message API, FedAvg weighted by sample count).
- :mod:`dermbench.federated.simulation`: ``flwr.simulation.run_simulation`` (Ray backend).
- :mod:`dermbench.federated.deployment`: a SuperLink and one SuperNode per client as separate
  processes, and the Flower App that ``flwr run`` submits.

Flower is an optional extra (``pip install 'dermbench[federated]'``); nothing here imports it at
module level. Flower's telemetry and update check are switched off unless the user set them:
the harness never talks to the network during a run.

Layer 3. May import: ``dermbench.features``, ``dermbench.stats``, ``dermbench.models``,
``dermbench.data``, ``dermbench.io``, ``dermbench.config``. Site export (which loads tasks like a run)
lives in :mod:`dermbench.run.federated_sites`.
"""
from __future__ import annotations

import os

for _key, _value in (("FLWR_TELEMETRY_ENABLED", "0"), ("FLWR_DISABLE_UPDATE_CHECK", "1"),
                     ("RAY_USAGE_STATS_ENABLED", "0"), ("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")):
    os.environ.setdefault(_key, _value)
