"""Embedding maps (the paper's Extended Data Fig. 5): t-SNE of each model's global (CLS) features.

For every model with classification results, the test images of its classification tasks (from the
stored predictions, so exactly the images scored) are embedded with the same backbone and weights
the results record, through the public :class:`~dermbench.features.FeatureCache` API — a cache hit
for every image the run already extracted, computed and cached otherwise, as
:mod:`dermbench.run.runner` does. The features are standardised and mapped to 2-D by scikit-learn's
``TSNE`` (PCA initialisation, ``random_state`` fixed, perplexity ``min(30, (n - 1) / 3)``), and drawn
twice: coloured by class ("<task>: <class>") and by dataset.

A model that cannot be rebuilt here (weights not on this machine) is reported and left out, never
replaced by other features.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

CLASSIFICATION_KINDS = ("classification",)
MAX_PER_TASK = 200  # t-SNE is O(n^2); the paper's maps are of test sets of this order


@dataclass
class EmbeddingMap:
    model: str
    coords: np.ndarray       # [N, 2]
    tasks: list[str]         # per point
    classes: list[str]       # per point, "<task>: <class>"


def _weights(record: dict) -> Optional[str]:
    return ((record.get("provenance") or {}).get("config") or {}).get("weights")


def _points(results_dir: Path, records: Sequence[dict], model: str) -> list[tuple[str, object, str]]:
    """(task, Sample, class name) of the test images of the model's classification results (linear first)."""
    from dermbench.data.locate import load_task
    from dermbench.data.tasks import get_card
    from dermbench.run.results import read_predictions

    chosen: dict[str, dict] = {}
    for r in records:
        if r["model"] != model or r["kind"] not in CLASSIFICATION_KINDS or r["protocol"] in ("federated",):
            continue
        if r["task"] not in chosen or r["protocol"] == "linear":
            chosen[r["task"]] = r
    out = []
    for task, r in sorted(chosen.items()):
        card = get_card(task)
        data = load_task(Path(r["data"]["root"]), card)
        by_id = data.by_id()
        pred = read_predictions(Path(r["_path"]))
        ids = list(dict.fromkeys(pred["sample_id"]))[:MAX_PER_TASK]
        out += [(task, by_id[i], data.classes[by_id[i].label]) for i in ids if i in by_id]
    return out


def embedding_map(results_dir: Path, records: Sequence[dict], model: str, seed: int = 0,
                  device: str = "cpu") -> Optional[EmbeddingMap]:
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler

    from dermbench.config import cache_dir
    from dermbench.features import FeatureCache
    from dermbench.models import registry

    points = _points(results_dir, records, model)
    if len(points) < 5:
        return None
    record = next(r for r in records if r["model"] == model)
    key = record["backbone"]["key"]
    backbone = registry.get(key).build(weights=_weights(record))
    if backbone.fingerprint() != record["backbone"].get("fingerprint", backbone.fingerprint()):
        raise ValueError(f"model {model}: the backbone built here (fingerprint {backbone.fingerprint()[:12]}) is not the "
                         f"one the results record ({record['backbone']['fingerprint'][:12]}); its weights changed")
    features = FeatureCache(cache_dir()).get(backbone, [p[1] for p in points], kind="global", device=device)
    x = StandardScaler().fit_transform(np.asarray(features, dtype=np.float64))
    perplexity = float(min(30.0, (len(points) - 1) / 3))
    coords = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    return EmbeddingMap(model, coords, [p[0] for p in points], [f"{p[0]}: {p[2]}" for p in points])


def build(results_dir: Path, records: Sequence[dict], models: Optional[Sequence[str]] = None,
          seed: int = 0, device: str = "cpu") -> tuple[list[tuple[str, bytes]], list[str]]:
    """(file name, SVG) per model, and notes for the models left out (and why)."""
    from dermbench.report.figures import embedding_svg

    figures, notes = [], []
    for model in models or sorted({r["model"] for r in records}):
        try:
            emb = embedding_map(results_dir, records, model, seed, device=device)
        except Exception as exc:  # a backbone that cannot be rebuilt here: said, not hidden
            notes.append(f"{model}: no embedding map ({type(exc).__name__}: {exc})")
            continue
        if emb is None:
            notes.append(f"{model}: fewer than 5 classification test images; no embedding map")
            continue
        name = "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in model)
        figures.append((f"fig_tsne_{name}.svg",
                        embedding_svg(f"{model} · t-SNE of global features ({len(emb.tasks)} test images)", emb.coords,
                                      [("by class", emb.classes), ("by dataset", emb.tasks)])))
    return figures, notes


__all__ = ["EmbeddingMap", "build", "embedding_map"]
