"""The bar over federated rounds, on Flower's own FedAvg loop with in-process clients (no Ray: fast)."""
from __future__ import annotations

import numpy as np
import torch  # noqa: F401  (imported at collection, as in the suite: the call then times the rounds alone)
import pytest

pytest.importorskip("flwr")

from dermbench.federated.partition import ClientData  # noqa: E402
from dermbench.federated.server_app import RUN_CONFIG_DEFAULTS, run_fedavg  # noqa: E402
from dermbench.progress import ENV_VAR  # noqa: E402


class InProcessGrid:
    """A Flower Grid whose nodes are ClientData in this process: each train message is answered as the
    ClientApp answers it (dermbench.federated.client_app.local_round), with no simulation engine."""

    def __init__(self, clients: list[ClientData]) -> None:
        self.clients = {node: data for node, data in enumerate(clients, start=1)}

    def get_node_ids(self):
        return list(self.clients)

    def send_and_receive(self, messages, timeout=None):
        from flwr.app import Message, MetricRecord, RecordDict

        from dermbench.federated.client_app import arrays_to_head, head_to_arrays, local_round

        replies = []
        for msg in messages:
            data = self.clients[msg.metadata.dst_node_id]
            head, loss = local_round(arrays_to_head(msg.content["arrays"]), data, msg.content["config"])
            metrics = MetricRecord({"num-examples": data.n_train, "train-loss": float(loss)})
            replies.append(Message(RecordDict({"arrays": head_to_arrays(head), "metrics": metrics}), reply_to=msg))
        return replies


def _clients() -> list[ClientData]:
    rng = np.random.default_rng(0)
    out = []
    for name in ("site-a", "site-b"):
        x = rng.normal(size=(20, 6)).astype(np.float32)
        y = (x[:, 0] > 0).astype(np.int64)
        out.append(ClientData(name, x[:16], y[:16], x[16:], y[16:], np.array([f"{name}/{i}" for i in range(4)])))
    return out


def test_federated_rounds_show_a_bar_and_the_same_head(monkeypatch, capsys):
    cfg = {**RUN_CONFIG_DEFAULTS, "num-server-rounds": 3, "local-epochs": 1, "num-clients": 2, "feature-dim": 6,
           "client-evaluate": False, "batch-size": 8}
    from flwr.supercore.task_identity import TaskIdentity

    # what a SuperLink or the simulation sets for the ServerApp's process
    monkeypatch.setattr(TaskIdentity, "_run_id", 1, raising=False)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0, raising=False)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1, raising=False)
    monkeypatch.setenv(ENV_VAR, "1")
    plain = run_fedavg(InProcessGrid(_clients()), cfg)  # no step name: no bar
    assert capsys.readouterr().err == ""
    shown = run_fedavg(InProcessGrid(_clients()), cfg, progress="mednode · federated")
    lines = [line.split("\r")[-1] for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert any(l.startswith("mednode · federated · round: 100%") and "3/3 [" in l for l in lines), lines
    for key in ("weight", "bias"):  # the bar only counts rounds
        assert np.array_equal(plain["head"][key], shown["head"][key])
    assert sorted(shown["heads"]) == [0, 1, 2, 3]
