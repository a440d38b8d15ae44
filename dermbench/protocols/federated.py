"""Federated learning with Flower (PROTOCOL.md, "Federated learning"; docs/federated.md).

One Flower client per site (``fl-malignancy``: Fitzpatrick17k-2, MED-Node, PH2; each keeps its own
task's split), or K label-skewed Dirichlet(α) clients made from the pooled training data
(``clients=K``). Every client trains a linear head on its own cached frozen global features:
``local_epochs`` epochs per round, Adam ``lr``, cosine schedule to ``eta_min``, batch ``batch_size``;
the server aggregates with Flower's FedAvg weighted by sample count, for ``rounds`` rounds.

Engines (``engine``): ``simulation`` (``flwr.simulation.run_simulation``, Ray, 1 CPU per client) and
``deployment`` (a SuperLink and one SuperNode per client as separate processes on localhost, the
Flower App submitted with ``flwr run``). Both give the same head for the same seeds. Clients read
their features from one ``.npz`` each (a temporary folder), never through Ray or the server.

Reported, from per-sample predictions only (the ``evaluate`` hook; recomputable from the files),
as ``metric@setting`` keys beside the plain pooled ones:

- the aggregated model on the pooled test set (the predictions' ``score_*``; ``auroc``, ``f1`` ...)
  and on each client's test split (``auroc@mednode`` ...);
- the centralised baseline, one head trained on the pooled training data with the same optimiser and
  epoch budget (``rounds × local_epochs``) (columns ``central_*``; ``auroc@centralised``,
  ``auroc@centralised/mednode`` ...);
- local-only heads, each client's head trained on its own data only and tested on its own test split
  (columns ``local_*``; ``auroc@local`` pooled over clients, ``auroc@local/mednode`` ...);
- paired differences on the same bootstrap replicates (``auroc@federated-centralised``,
  ``auroc@federated-local``).
"""
from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermbench.progress import step_name
from dermbench.protocols.base import Protocol, ProtocolOutput, RunContext
from dermbench.protocols.classification import global_features, predictions_table

FEDERATED_DEFAULTS: dict[str, Any] = {
    "engine": "simulation",  # simulation | deployment
    "rounds": 2,
    "local_epochs": 2,
    "lr": 2e-4,
    "eta_min": 1e-6,
    "batch_size": 32,
    "weight_decay": 0.0,
    "init_std": 0.01,
    "schedule": "run",  # run: one cosine over rounds × local_epochs | round: the cosine restarts each round
    "clients": 0,  # 0: one client per site; K > 0: K Dirichlet(alpha) label-skewed clients
    "dirichlet_alpha": 0.5,
    "client_evaluate": True,  # Flower's federated evaluation every round (loss/accuracy history in info)
    "baselines": True,  # centralised and local-only heads
    "ray_num_cpus": 0,  # simulation: CPUs given to Ray (0: min(clients, CPUs))
    "timeout": 1800.0,  # seconds for a round (simulation) or the whole run (deployment)
    "verbose": False,  # Flower's INFO log on the console
    "batch_size_features": 32,
}
ENGINES = ("simulation", "deployment")
BASELINES = (("central", "centralised"), ("local", "local"))  # column prefix, metric prefix


class Federated(Protocol):
    name = "federated"
    kind = "classification"
    defaults = dict(FEDERATED_DEFAULTS)
    requires = ("flwr", "ray")
    extra = "federated"

    def accepts(self, card) -> bool:
        # any classification task can be federated on request: by its manifest's `site` column, or
        # as K Dirichlet clients (--set federated.clients=K)
        return card.is_classification

    # -- training ----------------------------------------------------------------------------
    def run(self, ctx: RunContext) -> ProtocolOutput:
        from dermbench.federated.partition import ClientData, write_client
        from dermbench.federated.server_app import RUN_CONFIG_DEFAULTS
        from dermbench.federated.training import derive_seed, init_head, predict_proba, train_head

        cfg = ctx.config
        engine = str(cfg["engine"])
        if engine not in ENGINES:
            raise ValueError(f"federated.engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        if str(cfg["schedule"]) not in ("run", "round"):
            raise ValueError(f"federated.schedule must be 'run' or 'round', got {cfg['schedule']!r}")
        if int(cfg["rounds"]) < 1 or int(cfg["local_epochs"]) < 1:
            raise ValueError(f"federated.rounds and federated.local_epochs must be >= 1, got "
                             f"{cfg['rounds']} and {cfg['local_epochs']}")
        x_train, y_train = global_features(ctx, "train")
        x_test, y_test = global_features(ctx, "test")
        site_train = np.array([_site(s, ctx) for s in ctx.train])
        site_test = np.array([_site(s, ctx) for s in ctx.test])
        test_ids = np.array([s.id for s in ctx.test])
        clients = _make_clients(ctx, y_train, y_test, site_train, site_test)

        n_classes, dim = ctx.card.num_classes, x_train.shape[1]
        rounds, local_epochs = int(cfg["rounds"]), int(cfg["local_epochs"])
        run_config = {
            **RUN_CONFIG_DEFAULTS,
            "num-server-rounds": rounds, "local-epochs": local_epochs, "lr": float(cfg["lr"]),
            "eta-min": float(cfg["eta_min"]), "batch-size": int(cfg["batch_size"]),
            "weight-decay": float(cfg["weight_decay"]), "init-std": float(cfg["init_std"]),
            "schedule": str(cfg["schedule"]), "seed": int(ctx.seed), "num-clients": len(clients),
            "feature-dim": int(dim), "num-classes": int(n_classes), "round-timeout": float(cfg["timeout"]),
            "client-evaluate": bool(cfg["client_evaluate"]),
        }
        with tempfile.TemporaryDirectory(prefix="dermbench-fl-") as tmp:
            work = Path(tmp)
            paths = [write_client(work / "clients" / f"{name}.npz",
                                  ClientData(name, x_train[tr], y_train[tr], x_test[te], y_test[te], test_ids[te]))
                     for name, tr, te in clients]
            run_config["result-path"] = str(work / "result.npz")
            started = time.perf_counter()
            if engine == "simulation":
                from dermbench.federated import simulation

                result = simulation.run(paths, run_config, num_cpus=int(cfg["ray_num_cpus"]), verbose=bool(cfg["verbose"]),
                                        progress=step_name(ctx.card.name, self.name) if ctx.progress else None)
            else:
                from dermbench.federated import deployment

                result = deployment.run(paths, run_config, work / "deployment", timeout=float(cfg["timeout"]),
                                        verbose=bool(cfg["verbose"]))
            wall = time.perf_counter() - started

        head = result["head"]
        proba = predict_proba(head, x_test)
        table = predictions_table(ctx, proba, proba.argmax(axis=1))
        client_of_test = np.empty(len(x_test), dtype=object)
        for name, _, te in clients:
            client_of_test[te] = name
        table["site"] = site_test
        table["client"] = client_of_test

        heads = {"federated": head, **{f"federated_round{r}": h for r, h in result["heads"].items()}}
        if cfg["baselines"]:
            budget = dict(epochs=rounds * local_epochs, first_epoch=0, horizon=rounds * local_epochs,
                          lr=float(cfg["lr"]), eta_min=float(cfg["eta_min"]), batch_size=int(cfg["batch_size"]),
                          weight_decay=float(cfg["weight_decay"]))
            initial = init_head(dim, n_classes, float(cfg["init_std"]), int(ctx.seed))  # the federated start
            central, _ = train_head(initial, x_train, y_train, seed=derive_seed(ctx.seed, "centralised"), **budget)
            heads["centralised"] = central
            _add_scores(table, "central", predict_proba(central, x_test))
            local_scores = np.full((len(x_test), n_classes), np.nan)
            for name, tr, te in clients:
                local, _ = train_head(initial, x_train[tr], y_train[tr], seed=derive_seed(ctx.seed, "local", name), **budget)
                heads[f"local_{name}"] = local
                local_scores[te] = predict_proba(local, x_test[te])
            _add_scores(table, "local", local_scores)

        ctx.artifacts_dir.mkdir(parents=True, exist_ok=True)
        heads_path = ctx.artifacts_dir / "heads.npz"
        np.savez(heads_path, **{f"{name}.{k}": v for name, h in heads.items() for k, v in h.items()})
        info = {
            "engine": engine,
            "wall_time_s": round(wall, 2),
            **({"timings": result["timings"]} if "timings" in result else {}),
            "flwr_version": _flwr_version(),
            "strategy": "flwr.serverapp.strategy.FedAvg (every client each round, weights: num-examples)",
            "clients": [{"name": name, "n_train": int(len(tr)), "n_test": int(len(te)),
                         "train_class_counts": np.bincount(y_train[tr], minlength=n_classes).tolist()}
                        for name, tr, te in clients],
            "partition": "sites" if int(cfg["clients"]) == 0 else f"dirichlet(alpha={float(cfg['dirichlet_alpha'])})",
            "history": result["history"],
            "baselines": ("centralised: one head on the pooled training data; local: one head per client on its "
                          "own data; both from the federated initial head, Adam, one cosine over rounds x "
                          "local_epochs epochs") if cfg["baselines"] else "off",
            "seeds": "client c, round r: derive_seed(seed, 'client', r, c); initial head: derive_seed(seed, 'init')",
            "augmentation": "none (cached frozen features)",
        }
        return ProtocolOutput(predictions=table, kind=self.kind, n_train=len(x_train), n_test=len(x_test), info=info,
                              artifacts=[f"{ctx.artifacts_dir.name}/{heads_path.name}"])

    # -- metrics -----------------------------------------------------------------------------
    def evaluate(self, predictions: pd.DataFrame, boot_idx: np.ndarray) -> dict[str, dict]:
        """Metrics with bootstrap CIs from the predictions alone (the runner's and a rebuild's hook).

        Pooled metrics use the shared resamples ``boot_idx``. Per-client metrics use stratified
        resamples within the client's test rows, seeded from ``boot_idx`` and the client's name,
        so a rebuild from the stored files draws the very same ones.
        """
        from dermbench.stats.bootstrap import bootstrap_indices, summarise

        models = [("", predictions)] + [(model, _baseline_view(predictions, col))
                                        for col, model in BASELINES if f"{col}_pred" in predictions.columns]
        out: dict[str, dict] = {}
        pooled: dict[str, tuple] = {}
        for model, preds in models:
            point, reps = _point_and_replicates(preds, boot_idx)
            pooled[model] = (point, reps)
            out.update({_key(m, model): summarise(point[m], reps[m]) for m in point})
        fed_point, fed_reps = pooled[""]
        for model, (point, reps) in pooled.items():
            if model:  # paired: the same replicates score both models
                out.update({_key(m, f"federated-{model}"): summarise(fed_point[m] - point[m], fed_reps[m] - reps[m])
                            for m in point})
        group_col = "client" if "client" in predictions.columns else "site"
        if group_col in predictions.columns:
            groups = predictions[group_col].astype(str).to_numpy()
            labels = predictions["label"].to_numpy()
            digest = hashlib.sha256(np.ascontiguousarray(boot_idx).tobytes()).hexdigest()
            for g in dict.fromkeys(groups):  # first-seen order
                rows = np.flatnonzero(groups == g)
                seed = int.from_bytes(hashlib.sha256(f"{digest}|{g}".encode()).digest()[:8], "little")
                idx = bootstrap_indices(len(rows), boot_idx.shape[0], seed, labels[rows])
                for model, preds in models:
                    point, reps = _point_and_replicates(preds.iloc[rows].reset_index(drop=True), idx)
                    out.update({_key(m, f"{model}/{g}" if model else g): summarise(point[m], reps[m]) for m in point})
        return out


def _key(metric: str, setting: str) -> str:
    """``auroc`` (federated, pooled), ``auroc@mednode``, ``auroc@centralised/mednode``: the ``metric@setting``
    names the leaderboard turns into one column per setting."""
    return f"{metric}@{setting}" if setting else metric


def _site(sample, ctx: RunContext) -> str:
    return str(sample.groups.get("site", ctx.card.name))


def _make_clients(ctx: RunContext, y_train, y_test, site_train, site_test) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, train row indices, test row indices) per client."""
    from dermbench.federated.partition import dirichlet_partition

    k = int(ctx.config["clients"])
    if k < 0:
        raise ValueError(f"federated.clients must be 0 (one client per site) or a number of clients, got {k}")
    if k > 0:
        train, test = dirichlet_partition(y_train, y_test, k, float(ctx.config["dirichlet_alpha"]), ctx.seed)
        return [(f"client{i}", tr, te) for i, (tr, te) in enumerate(zip(train, test))]
    sites = list(getattr(ctx.card, "sites", None) or []) or list(dict.fromkeys(site_train))
    clients = []
    for site in sites:
        tr, te = np.flatnonzero(site_train == site), np.flatnonzero(site_test == site)
        if len(tr) == 0:
            raise ValueError(f"site {site} has no training samples in this data root; a federated client needs "
                             f"data (run `dermbench data check`)")
        clients.append((site, tr, te))
    if len(clients) < 2:
        raise ValueError(f"task {ctx.card.name} has {len(clients)} site(s); federated learning needs two or more "
                         f"clients: set federated.clients=K for K Dirichlet clients")
    return clients


def _add_scores(table: pd.DataFrame, prefix: str, scores: np.ndarray) -> None:
    table[f"{prefix}_pred"] = scores.argmax(axis=1).astype(np.int64)
    for c in range(scores.shape[1]):
        table[f"{prefix}_score_{c}"] = scores[:, c].astype(np.float64)


def _baseline_view(predictions: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """The baseline's columns renamed to label / pred / score_c, for the shared metric code."""
    scores = sorted((c for c in predictions.columns if c.startswith(f"{prefix}_score_")),
                    key=lambda c: int(c.rsplit("_", 1)[1]))
    view = predictions[["label", f"{prefix}_pred", *scores]].copy()
    view.columns = ["label", "pred", *[f"score_{c.rsplit('_', 1)[1]}" for c in scores]]
    return view


def _point_and_replicates(preds: pd.DataFrame, idx: np.ndarray) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    from dermbench.stats.evaluation import replicates
    from dermbench.stats.metrics import full_index

    point = {m: float(v[0]) for m, v in replicates("classification", preds, full_index(len(preds))).items()}
    return point, replicates("classification", preds, idx)


def _flwr_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("flwr")
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"
