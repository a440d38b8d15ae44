"""The Flower ``ServerApp``: FedAvg (Flower's own) over every client, weighted by sample count.

The server builds the initial head (seeded), runs ``num-server-rounds`` rounds of
:class:`AllClientsFedAvg` (Flower's ``FedAvg`` that waits for every client and aggregates the replies
in a fixed order), and writes the aggregated head, the head after every round and the per-round
client metrics to ``result-path`` (an ``.npz``; see :func:`read_result`).

Settings come from the run config (``[tool.flwr.app.config]`` of the Flower App, overridable with
``flwr run --run-config``); the simulation engine passes them to :func:`build_server_app` instead,
because ``run_simulation`` has no run config.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from dermbench.federated.client_app import arrays_to_head, head_to_arrays
from dermbench.federated.training import init_head
from dermbench.progress import progress_bar

# The run config of the Flower App (names in Flower's dash style) and its defaults.
RUN_CONFIG_DEFAULTS: dict[str, Any] = {
    "num-server-rounds": 2,
    "local-epochs": 2,
    "lr": 2e-4,
    "eta-min": 1e-6,
    "batch-size": 32,
    "weight-decay": 0.0,
    "init-std": 0.01,
    "schedule": "run",
    "seed": 0,
    "num-clients": 3,
    "feature-dim": 0,
    "num-classes": 2,
    "round-timeout": 3600.0,
    "client-evaluate": True,
    "result-path": "",
}
TRAIN_KEYS = ("local-epochs", "lr", "eta-min", "batch-size", "weight-decay", "schedule", "seed")


class AllClientsFedAvg(FedAvg):
    """Flower's FedAvg with every client in every round, replies aggregated in a fixed order.

    The weighted average is Flower's (``FedAvg.aggregate_train`` → ``aggregate_arrayrecords``, weights
    ``num-examples``). Two additions: a round in which a client failed or did not answer is an error
    (not a silent average over fewer sites), and the replies are sorted (by sample count, then by the
    bytes of their arrays) before averaging, so that the float sum does not depend on the order in
    which processes answered: the same seeds give a bit-identical head under any engine.
    """

    def __init__(self, num_clients: int, evaluate: bool = True) -> None:
        super().__init__(fraction_train=1.0, fraction_evaluate=1.0 if evaluate else 0.0, min_train_nodes=num_clients,
                         min_evaluate_nodes=num_clients, min_available_nodes=num_clients)
        self.num_clients = num_clients
        self.evaluate = evaluate

    def _checked(self, replies: Iterable[Message], what: str) -> list[Message]:
        replies = list(replies)
        failed = [f"node {m.metadata.src_node_id}: {m.error.reason}" for m in replies if m.has_error()]
        if failed or len(replies) != self.num_clients:
            raise RuntimeError(f"{what}: {len(replies) - len(failed)} of {self.num_clients} clients answered"
                               + (f"; errors: {'; '.join(failed)}" if failed else ""))
        return sorted(replies, key=_reply_order)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        return super().aggregate_train(server_round, self._checked(replies, f"round {server_round} training"))

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]):
        if not self.evaluate:
            return None
        return super().aggregate_evaluate(server_round, self._checked(replies, f"round {server_round} evaluation"))


def _reply_order(msg: Message) -> tuple:
    content = msg.content
    metrics = next(iter(content.metric_records.values()))
    digest = hashlib.sha256()
    for record in content.array_records.values():
        for key in sorted(record):
            digest.update(key.encode())
            digest.update(record[key].data)
    digest.update(json.dumps({k: metrics[k] for k in sorted(metrics)}, default=str).encode())
    return (-float(metrics["num-examples"]), digest.hexdigest())


def run_fedavg(grid: Grid, cfg: dict[str, Any], progress: Optional[str] = None) -> dict[str, Any]:
    """Run the federated training described by ``cfg`` (run-config keys) on ``grid``; returns the result.

    ``progress``: the step name of a bar over the rounds (``<task> · federated · round``), or None for
    no bar. The bar ticks when a round's aggregated head arrives; it never touches the head."""
    rounds, n_clients = int(cfg["num-server-rounds"]), int(cfg["num-clients"])
    if int(cfg["feature-dim"]) <= 0:
        raise ValueError("run config feature-dim must be the dimension of the clients' features (> 0)")
    initial = init_head(int(cfg["feature-dim"]), int(cfg["num-classes"]), float(cfg["init-std"]), int(cfg["seed"]))
    train_config = ConfigRecord({k: cfg[k] for k in TRAIN_KEYS})
    train_config["total-epochs"] = rounds * int(cfg["local-epochs"])
    heads: dict[int, dict[str, np.ndarray]] = {}

    bar = progress_bar(total=rounds, step=(progress, "round"), unit="round", enabled=progress is not None)

    def snapshot(server_round: int, arrays: ArrayRecord) -> Optional[MetricRecord]:
        heads[server_round] = arrays_to_head(arrays)  # the global head after each round (0: initial)
        if server_round > 0:  # Flower calls this once before the first round, then after every round
            bar.update()
        return None

    strategy = AllClientsFedAvg(n_clients, evaluate=bool(cfg["client-evaluate"]))
    with bar:
        result = strategy.start(grid=grid, initial_arrays=head_to_arrays(initial), num_rounds=rounds,
                                timeout=float(cfg["round-timeout"]), train_config=train_config,
                                evaluate_config=ConfigRecord(), evaluate_fn=snapshot)
    history = {
        "train": {str(r): dict(m) for r, m in result.train_metrics_clientapp.items()},
        "evaluate": {str(r): dict(m) for r, m in result.evaluate_metrics_clientapp.items()},
    }
    return {"head": arrays_to_head(result.arrays), "heads": heads, "history": history}


def write_result(path: str | Path, result: dict[str, Any], cfg: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"{k}": v for k, v in result["head"].items()}
    for r, head in result["heads"].items():
        arrays.update({f"round{r}_{k}": v for k, v in head.items()})
    meta = {"history": result["history"], "run_config": cfg}
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, meta=np.array(json.dumps(meta, default=str)), **arrays)
    tmp.replace(path)  # atomic: a waiting process never reads half a file
    return path


def read_result(path: str | Path) -> dict[str, Any]:
    """{"head": {...}, "heads": {round: {...}}, "history": {...}, "run_config": {...}} from a result file."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        head = {k: z[k] for k in ("weight", "bias")}
        heads: dict[int, dict[str, np.ndarray]] = {}
        for name in z.files:
            if name.startswith("round"):
                r, key = name[len("round"):].split("_", 1)
                heads.setdefault(int(r), {})[key] = z[name]
    return {"head": head, "heads": dict(sorted(heads.items())), **meta}


def build_server_app(defaults: Optional[dict[str, Any]] = None, progress: Optional[str] = None) -> ServerApp:
    """A ServerApp; ``defaults`` (simulation) stand in for the run config, which takes precedence.

    ``progress``: the step name of the bar over rounds (simulation, where the ServerApp runs in this
    process), None for none; it is not part of the run config, so it changes nothing that is stored."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = {**RUN_CONFIG_DEFAULTS, **(defaults or {}), **dict(context.run_config)}
        if not cfg["result-path"]:
            raise ValueError("run config result-path is empty: the server needs a file to write the head to")
        write_result(cfg["result-path"], run_fedavg(grid, cfg, progress), cfg)

    return app


# The component `flwr run` loads (deployment): settings from the run config.
app = build_server_app()
