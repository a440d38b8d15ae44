"""The Flower ``ClientApp``: one client trains the linear head on its own cached features.

Message API (Flower 1.41). A ``train`` message carries the global head (``ArrayRecord`` under
``"arrays"``) and the round's settings (``ConfigRecord`` under ``"config"``: ``server-round``,
``local-epochs``, ``lr``, ``eta-min``, ``batch-size``, ``weight-decay``, ``seed``, ``schedule``,
``total-epochs``); the reply carries the locally trained head and a ``MetricRecord`` with
``num-examples`` (the FedAvg weight) and ``train-loss``. An ``evaluate`` message is answered with
the global head's loss and accuracy on the client's own test split.

Where a client finds its data (:mod:`dermbench.federated.partition` file):

- deployment: the SuperNode's node config, ``--node-config 'data-path="/site/features.npz"'``;
- simulation: ``partition-id`` (set by the simulation engine) indexes the list of paths given to
  :func:`build_client_app`.

The client's torch seed for a round is ``derive_seed(seed, "client", round, client name)``.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from dermbench.federated.partition import ClientData, read_client
from dermbench.federated.training import cross_entropy, derive_seed, predict_proba, train_head

HEAD_KEYS = ("weight", "bias")


def head_to_arrays(head: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(head[k], dtype=np.float32)) for k in HEAD_KEYS})


def arrays_to_head(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: np.asarray(record[k].numpy(), dtype=np.float32) for k in HEAD_KEYS}


def client_data(context: Context, partitions: Optional[Sequence[str]] = None) -> ClientData:
    node = context.node_config
    if "data-path" in node:
        return read_client(str(node["data-path"]))
    if partitions is not None and "partition-id" in node:
        return read_client(partitions[int(node["partition-id"])])
    raise ValueError("this SuperNode has no data: start it with --node-config 'data-path=\"/path/client.npz\"' "
                     "(see docs/federated.md)")


def local_round(head: dict[str, np.ndarray], data: ClientData, config) -> tuple[dict[str, np.ndarray], float]:
    """One round of local training with the settings of a train message's ConfigRecord."""
    rnd = int(config["server-round"])
    local_epochs = int(config["local-epochs"])
    if str(config["schedule"]) == "run":  # one cosine over all rounds: round r trains its slice of it
        first, horizon = (rnd - 1) * local_epochs, int(config["total-epochs"])
    else:  # "round": the cosine restarts every round
        first, horizon = 0, local_epochs
    return train_head(head, data.x_train, data.y_train, epochs=local_epochs, first_epoch=first, horizon=horizon,
                      lr=float(config["lr"]), eta_min=float(config["eta-min"]), batch_size=int(config["batch-size"]),
                      weight_decay=float(config["weight-decay"]),
                      seed=derive_seed(int(config["seed"]), "client", rnd, data.name))


def build_client_app(partitions: Optional[Sequence[str]] = None) -> ClientApp:
    """A ClientApp; ``partitions`` (simulation only) maps ``partition-id`` to a client file."""
    paths = [str(p) for p in partitions] if partitions is not None else None
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        data = client_data(context, paths)
        head, loss = local_round(arrays_to_head(msg.content["arrays"]), data, msg.content["config"])
        metrics = MetricRecord({"num-examples": data.n_train, "train-loss": float(loss)})
        return Message(RecordDict({"arrays": head_to_arrays(head), "metrics": metrics}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        data = client_data(context, paths)
        head = arrays_to_head(msg.content["arrays"])
        if data.n_test:
            loss = cross_entropy(head, data.x_test, data.y_test)
            acc = float(np.mean(predict_proba(head, data.x_test).argmax(axis=1) == data.y_test))
        else:  # weight 0 in the aggregate
            loss, acc = 0.0, 0.0
        metrics = MetricRecord({"num-examples": data.n_test, "eval-loss": loss, "eval-accuracy": acc})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    return app


# The component `flwr run` loads (deployment): data from each SuperNode's node config.
app = build_client_app()
