"""One hospital's part of a real federation: its client file, made from its own images.

``dermbench federated export-client`` runs this at each site: the site's task (an official layout or
a manifest CSV under its data root) is loaded and split exactly as ``dermbench run`` would, the
frozen global features of both parts come from the feature cache, and the result is one client file
(:mod:`dermbench.federated.partition`) plus a JSON sidecar saying what it was made from. Only the
file's path goes into the site's SuperNode config; only the linear head ever leaves the site.

Every site of one federation must use the same backbone, weights and class order: the sidecar
records them (with the weights' sha256 and the split's) so that the coordinator can check.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from dermbench.federated.partition import ClientData, write_client


def export_client(model: str, task: str, data_root: Path, out: Path, name: Optional[str] = None,
                  weights: Optional[str] = None, seed: int = 0, split_mode: str = "default", device: str = "cpu",
                  batch_size: int = 32, progress: bool = True) -> dict:
    """Write ``out`` (the client file) and ``out.with_suffix('.json')`` (its provenance); return the latter."""
    from dermbench.models import registry
    from dermbench.config import cache_dir
    from dermbench.features import FeatureCache
    from dermbench.io import atomic_write_text
    from dermbench.protocols.base import RunContext
    from dermbench.protocols.classification import global_features
    from dermbench.run.results import now, provenance
    from dermbench.run.runner import TaskCache
    from dermbench.data.tasks import get_card

    card = get_card(task)
    if not card.is_classification or card.adapter == "federated":
        raise ValueError(f"task {task!r} is not a single-site classification task; export one site's own task "
                         f"(e.g. mednode, ph2-cls, or a manifest task) per hospital")
    out = Path(out)
    started = now()
    tasks = TaskCache(Path(data_root), out.parent, seed, split_mode)  # the split file goes to <out dir>/_splits
    data, split = tasks.data(card), tasks.split(card)
    backbone = registry.get(model).build(weights=weights)
    # the same cached features as `dermbench run` extracts for this task (one RunContext, no protocol)
    ctx = RunContext(card=card, data=data, split=split, get_backbone=lambda: backbone, features=FeatureCache(cache_dir()),
                     seed=seed, device=device, config={"batch_size_features": batch_size}, artifacts_dir=out.parent,
                     progress=progress)
    (x_train, y_train), (x_test, y_test) = global_features(ctx, "train"), global_features(ctx, "test")
    test_ids = np.array([s.id for s in ctx.test])
    client = ClientData(name or task, x_train, y_train, x_test, y_test, test_ids)
    write_client(out, client)
    info = {
        "client": client.name, "model": model, "weights": weights or "default",
        "weights_sha256": backbone.weights_sha256, "fingerprint": backbone.fingerprint(),
        "feature_dim": int(x_train.shape[1]), "task": task,
        # canonical class names (the card's class_aliases), so that sites spelling a class differently match
        "classes": list(card.canonical_classes), "source_classes": list(data.classes),
        "n_train": client.n_train, "n_test": client.n_test,
        "train_class_counts": np.bincount(y_train, minlength=len(data.classes)).tolist(),
        "split": {"rule": split.rule, "seed": split.seed, "sha256": split.sha256, "path": str(split.path)},
        "data_root": str(data_root), "skipped": [list(s) for s in data.skipped],
        "provenance": provenance({"seed": seed, "split_mode": split_mode, "batch_size": batch_size}, device, started),
    }
    atomic_write_text(out.with_suffix(".json"), json.dumps(info, indent=2) + "\n")
    return info


def check_sites(sidecars: list[Path]) -> dict:
    """The coordinator's check that client files belong to one federation: same backbone fingerprint,
    weights, feature size and classes. Returns the shared values (for the Flower App's run config)."""
    infos = []
    for p in sidecars:
        p = Path(p)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no client sidecar; `dermbench federated export-client` writes "
                                    f"<client>.json beside each <client>.npz")
        infos.append((p, json.loads(p.read_text())))
    first_path, first = infos[0]
    for p, info in infos[1:]:
        for key in ("fingerprint", "weights_sha256", "feature_dim", "classes"):
            if info.get(key) != first.get(key):
                raise ValueError(f"{p} and {first_path} differ in {key} ({info.get(key)!r} vs {first.get(key)!r}): "
                                 f"every site must export with the same backbone, weights and class order")
    return {"num-clients": len(infos), "feature-dim": int(first["feature_dim"]),
            "num-classes": len(first["classes"]), "classes": first["classes"]}
