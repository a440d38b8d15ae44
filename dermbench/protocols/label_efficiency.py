"""Label efficiency (paper Fig. 6c): the linear probe trained on growing fractions of the training split.

For every repeat ``r`` (default 3) the training split is subsampled once per class in a seeded random
order; fraction ``f`` keeps the first ``max(1, round(f * n_c))`` samples of each class ``c`` (round
half up), so the subsamples are *nested* (the 20% set is inside the 40% set, ...) and every class
keeps at least one sample. Each subsample trains the linear probe of
:mod:`dermbench.protocols.linear_probe` with the same hyper-parameters (``--set
label-efficiency.epochs=...`` etc.; the defaults are the linear probe's), head seed ``seed + r``; the
training samples keep the split's order, so repeat 0 at fraction 1.0 reproduces the ``linear``
result exactly.

Settings: ``fractions`` (default ``0.2,0.4,0.6,0.8,1.0``; ``--set label-efficiency.fractions=0.1,0.5,1.0``
gives a string, parsed here and recorded as a list of numbers) and ``repeats`` (default 3).

Predictions: one table with columns ``fraction, repeat`` followed by the classification columns
(``sample_id, label, pred, score_*``), sorted by fraction then repeat; each block lists the test set
in the split's order. Metrics (:func:`evaluate_label_efficiency`), from those predictions and the
task's shared bootstrap resamples only:

- ``<metric>@<fraction>`` (``auroc@0.2`` ... ``auroc@1.0``, also f1, accuracy, balanced_accuracy):
  the metric averaged over repeats; CI: percentile interval of the replicates of that average
  (replicate b of the average = average over repeats of the metric on the shared resample b).
  ``repeat_std`` is the spread over repeats (subsampling and training variation, which the
  bootstrap CI does not include), ``repeats`` their number, ``fraction`` the fraction.
- ``<metric>`` without a suffix: the largest fraction's record (100% by default), so the ordinary
  tables show the full-data number.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from dermbench.protocols.base import Protocol, ProtocolOutput, RunContext
from dermbench.protocols.classification import global_features, predictions_table
from dermbench.protocols.linear_probe import LINEAR_DEFAULTS, predict_proba, train_linear_head

DEFAULT_FRACTIONS = "0.2,0.4,0.6,0.8,1.0"
DEFAULT_REPEATS = 3
METRICS = ("auroc", "f1", "accuracy", "balanced_accuracy")


def parse_fractions(value: Any) -> list[float]:
    """'0.1,0.5,1.0' (the ``--set`` form), a number, or a list -> sorted unique fractions in (0, 1]."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.strip("[]() ").replace(";", ",").split(",") if p.strip()]
    elif isinstance(value, (int, float)):
        parts = [value]
    else:
        parts = list(value)
    try:
        fractions = sorted({round(float(p), 6) for p in parts})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"label-efficiency.fractions expects comma-separated numbers in (0, 1], e.g. 0.2,0.5,1.0; "
                         f"got {value!r}") from exc
    if not fractions or any(not (0.0 < f <= 1.0) for f in fractions):
        raise ValueError(f"label-efficiency.fractions expects numbers in (0, 1], e.g. 0.2,0.5,1.0; got {value!r}")
    return fractions


def fraction_key(fraction: float) -> str:
    """0.2 -> '0.2', 1 -> '1.0': the suffix of the per-fraction metric names."""
    text = f"{float(fraction):g}"
    return text if any(ch in text for ch in ".e") else text + ".0"


def metric_name(metric: str, fraction: float) -> str:
    return f"{metric}@{fraction_key(fraction)}"


def split_metric_name(name: str) -> tuple[str, Optional[float]]:
    """'auroc@0.2' -> ('auroc', 0.2); 'auroc' -> ('auroc', None)."""
    if "@" not in name:
        return name, None
    base, suffix = name.split("@", 1)
    try:
        return base, float(suffix)
    except ValueError:
        return name, None


def nested_subsamples(labels: np.ndarray, fractions: Sequence[float], seed: int, repeat: int) -> dict[float, np.ndarray]:
    """Sorted training indices for each fraction: stratified, nested, every class keeps >= 1 sample."""
    labels = np.asarray(labels)
    rng = np.random.default_rng([int(seed), int(repeat), 0x1E])
    orders = {c: rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)}
    out = {}
    for f in fractions:
        keep = [order[: max(1, int(np.floor(f * len(order) + 0.5)))] for order in orders.values()]
        out[float(f)] = np.sort(np.concatenate(keep))
    return out


class LabelEfficiency(Protocol):
    name = "label-efficiency"
    kind = "classification"
    defaults = {**LINEAR_DEFAULTS, "fractions": DEFAULT_FRACTIONS, "repeats": DEFAULT_REPEATS}

    def resolve_config(self, overrides: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        cfg = super().resolve_config(overrides)
        cfg["fractions"] = parse_fractions(cfg["fractions"])  # recorded as numbers, whatever form was given
        if int(cfg["repeats"]) < 1:
            raise ValueError(f"label-efficiency.repeats must be >= 1, got {cfg['repeats']!r}")
        cfg["repeats"] = int(cfg["repeats"])
        return cfg

    def run(self, ctx: RunContext) -> ProtocolOutput:
        fractions = parse_fractions(ctx.config["fractions"])
        repeats = int(ctx.config["repeats"])
        if repeats < 1:
            raise ValueError(f"label-efficiency.repeats must be >= 1, got {repeats}")
        x_train, y_train = global_features(ctx, "train")
        x_test, _ = global_features(ctx, "test")
        blocks, n_train = [], {}
        for r in range(repeats):
            for f, rows in nested_subsamples(y_train, fractions, ctx.seed, r).items():
                head = train_linear_head(x_train[rows], y_train[rows], ctx.card.num_classes, ctx.config,
                                         ctx.seed + r, ctx.device)
                proba = predict_proba(head, x_test)
                table = predictions_table(ctx, proba, proba.argmax(axis=1))
                table.insert(0, "repeat", r)
                table.insert(0, "fraction", f)
                blocks.append(table)
                n_train.setdefault(fraction_key(f), []).append(int(len(rows)))
        predictions = pd.concat(blocks, ignore_index=True).sort_values(["fraction", "repeat"], kind="mergesort")
        return ProtocolOutput(
            predictions=predictions.reset_index(drop=True), kind=self.kind, n_train=len(x_train), n_test=len(x_test),
            info={"augmentation": "none (cached frozen features)", "fractions": [fraction_key(f) for f in fractions],
                  "repeats": repeats, "n_train_per_fraction": n_train, "head_seed": "run seed + repeat",
                  "subsampling": "stratified, nested across fractions, >= 1 sample per class; seed = (run seed, repeat)"},
        )

    def bootstrap_strata(self, predictions: pd.DataFrame) -> np.ndarray:
        """One label per test sample, in test order, for the shared stratified resamples (the predictions
        hold one block per fraction and repeat, so their ``label`` column is longer than the test set)."""
        return labels_in_test_order(predictions)

    def evaluate(self, predictions: pd.DataFrame, boot_idx: np.ndarray) -> dict[str, dict]:
        return evaluate_label_efficiency(predictions, boot_idx)


def labels_in_test_order(predictions: pd.DataFrame) -> np.ndarray:
    return predictions.drop_duplicates("sample_id", keep="first")["label"].to_numpy()


def blocks_of(predictions: pd.DataFrame) -> dict[float, list[pd.DataFrame]]:
    """fraction -> the (repeat-sorted) test-set blocks of that fraction, each in the split's test order."""
    out: dict[float, list[pd.DataFrame]] = {}
    reference = None
    for (f, _r), block in predictions.groupby(["fraction", "repeat"], sort=True):
        ids = block["sample_id"].astype(str).tolist()
        if reference is None:
            reference = ids
        elif ids != reference:
            raise ValueError("label-efficiency predictions: every (fraction, repeat) block must list the same test "
                             "samples in the same order")
        out.setdefault(float(f), []).append(block.drop(columns=["fraction", "repeat"]).reset_index(drop=True))
    return out


def fraction_replicates(predictions: pd.DataFrame, idx: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per metric name (``auroc@0.2`` ..., and the plain names for the largest fraction): ``value`` (mean over
    repeats on the full test set), ``replicates`` (that mean on each row of ``idx`` [B, n_test]),
    ``per_repeat`` and ``fraction``. The leaderboard's paired tests use the replicates."""
    from dermbench.stats import metrics as M
    from dermbench.stats.evaluation import classification_arrays

    blocks = blocks_of(predictions)
    if not blocks:
        raise ValueError("label-efficiency predictions are empty")
    n = len(next(iter(blocks.values()))[0])
    if idx.shape[1] != n:
        raise ValueError(f"bootstrap indices are for {idx.shape[1]} test samples, each block has {n}")
    out: dict[str, dict[str, Any]] = {}
    for f in sorted(blocks):
        points, reps = [], []
        for block in blocks[f]:
            y, pred, scores = classification_arrays(block)
            points.append(M.classification_replicates(y, pred, scores, M.full_index(n)))
            reps.append(M.classification_replicates(y, pred, scores, idx))
        for name in METRICS:
            per_repeat = np.array([p[name][0] for p in points], dtype=np.float64)
            out[metric_name(name, f)] = {"value": float(per_repeat.mean()), "per_repeat": per_repeat, "fraction": f,
                                         "replicates": np.mean([r[name] for r in reps], axis=0)}
    top = max(blocks)
    for name in METRICS:
        out[name] = out[metric_name(name, top)]
    return out


def evaluate_label_efficiency(predictions: pd.DataFrame, boot_idx: np.ndarray) -> dict[str, dict]:
    from dermbench.stats.bootstrap import summarise

    out: dict[str, dict] = {}
    for name, r in fraction_replicates(predictions, boot_idx).items():
        per_repeat = r["per_repeat"]
        record = summarise(r["value"], r["replicates"])
        record["repeat_std"] = float(per_repeat.std(ddof=1)) if len(per_repeat) > 1 else 0.0
        record["repeats"] = int(len(per_repeat))
        record["fraction"] = float(r["fraction"])
        out[name] = record
    return out
