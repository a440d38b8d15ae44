"""Robustness to acquisition artefacts: the linear probe trained on clean features, tested on corrupted images.

The head is the ``linear`` protocol's (same hyper-parameters, seed and clean training features), so the
clean block reproduces the ``linear`` result exactly. Each test image is then corrupted
(:mod:`dermbench.data.corruptions`: generic corruptions and dermatology artefacts, severities 1-5) *as
the model sees it* -- after the backbone's resize and crop, before normalisation -- and its features
are extracted through the feature cache under a view that names (corruption, severity, seed,
implementation version), so corrupted features are computed once and never confused with clean ones.
The corruption seed is the run seed.

Settings: ``corruptions`` ('all' | 'generic' | 'dermatology' | names), ``severities`` (default 1..5),
plus the linear probe's. On DermSynth (the CPU-scale demo) the default is four corruptions at severities
1, 3, 5 (recorded in the result's settings); ``--set robustness.corruptions=all --set
robustness.severities=1,2,3,4,5`` runs everything there.

Predictions: blocks ``corruption, severity`` + the classification columns, the clean block first
(``corruption='clean', severity=0``), each listing the test set in split order. Metrics
(:func:`evaluate_robustness`), all with the task's shared bootstrap resamples, so differences are paired:

- ``auroc`` etc. (plain names): the clean result;
- ``auroc@<corruption>@<severity>``: the metric on corrupted images;
- ``auroc_delta@<corruption>@<severity>``: corrupted minus clean, CI from the paired replicates;
- ``auroc_rel_drop@<corruption>``: mean over severities of (clean - corrupted) / clean;
  ``auroc_rel_drop``: the mean over every corruption and severity (the "mean relative drop").
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import pandas as pd

from dermbench.data.corruptions import Corrupt, describe, parse_corruptions, parse_severities, view_name
from dermbench.protocols.base import Protocol, ProtocolOutput, RunContext
from dermbench.protocols.classification import global_features, predictions_table
from dermbench.protocols.linear_probe import LINEAR_DEFAULTS, predict_proba, train_linear_head

METRICS = ("auroc", "f1", "accuracy", "balanced_accuracy")
CLEAN = "clean"
# The DermSynth demo runs on two CPU cores: by default four corruptions (two generic, two dermatology) at
# severities 1, 3 and 5 there (12 passes over the test set instead of 90).
DERMSYNTH_CORRUPTIONS = "gaussian_noise,defocus_blur,black_corner,hair"
DERMSYNTH_SEVERITIES = "1,3,5"


def corrupting_transform(backbone, corruption: str, severity: int, seed: int):
    """The backbone's evaluation transform with the corruption inserted after resize/crop, before ToTensor."""
    from torchvision import transforms as T

    base = backbone.transform()
    steps = list(getattr(base, "transforms", []))
    at = next((i for i, t in enumerate(steps) if isinstance(t, (T.ToTensor, T.PILToTensor))), None)
    if at is None:
        raise ValueError(f"backbone {backbone.name!r}: its transform {base!r} is not a torchvision Compose with a "
                         "ToTensor step, so the robustness protocol cannot corrupt the image as the model sees it")
    return T.Compose(steps[:at] + [Corrupt(corruption, severity, seed)] + steps[at:])


def metric_name(metric: str, corruption: str, severity: int) -> str:
    return f"{metric}@{corruption}@{int(severity)}"


def split_metric_name(name: str) -> tuple[str, Optional[str], Optional[int]]:
    """'auroc@hair@3' -> ('auroc', 'hair', 3); 'auroc_rel_drop@hair' -> ('auroc_rel_drop', 'hair', None)."""
    parts = name.split("@")
    if len(parts) == 3:
        return parts[0], parts[1], int(parts[2])
    if len(parts) == 2:
        return parts[0], parts[1], None
    return name, None, None


class Robustness(Protocol):
    name = "robustness"
    kind = "classification"
    defaults = {**LINEAR_DEFAULTS, "corruptions": "all", "severities": "1,2,3,4,5"}
    requires = ("medmnistc", "cv2")
    extra = "robustness"

    def accepts(self, card) -> bool:
        return card.is_classification  # any classification task when asked for by name (--protocol robustness)

    def data_defaults(self, data) -> dict[str, Any]:
        from dermbench.data.synth import is_dermsynth

        return {"corruptions": DERMSYNTH_CORRUPTIONS, "severities": DERMSYNTH_SEVERITIES} if is_dermsynth(data.root) else {}

    def resolve_config(self, overrides: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        cfg = super().resolve_config(overrides)
        cfg["corruptions"] = parse_corruptions(cfg["corruptions"])  # recorded as the list of names
        cfg["severities"] = parse_severities(cfg["severities"])
        return cfg

    def run(self, ctx: RunContext) -> ProtocolOutput:
        import time

        corruptions = parse_corruptions(ctx.config["corruptions"])
        severities = parse_severities(ctx.config["severities"])
        x_train, y_train = global_features(ctx, "train")
        x_test, _ = global_features(ctx, "test")
        head = train_linear_head(x_train, y_train, ctx.card.num_classes, ctx.config, ctx.seed, ctx.device)
        blocks = [_block(ctx, predict_proba(head, x_test), CLEAN, 0)]
        backbone = ctx.get_backbone()
        seconds: dict[str, float] = {}
        for corruption in corruptions:
            started = time.perf_counter()
            for severity in severities:
                feats = ctx.features.get(
                    backbone, ctx.test, kind="global", view=view_name("eval", corruption, severity, ctx.seed),
                    transform=corrupting_transform(backbone, corruption, severity, ctx.seed),
                    batch_size=int(ctx.config["batch_size_features"]), device=ctx.device, progress=ctx.progress,
                    desc=f"{ctx.card.name} test {corruption}@{severity}")
                blocks.append(_block(ctx, predict_proba(head, np.asarray(feats, dtype=np.float32)), corruption, severity))
            seconds[corruption] = round(time.perf_counter() - started, 2)
        return ProtocolOutput(
            predictions=pd.concat(blocks, ignore_index=True), kind=self.kind, n_train=len(x_train), n_test=len(x_test),
            info={"augmentation": "none (cached frozen features)", "corruptions": describe(corruptions),
                  "severities": severities, "corruption_seed": ctx.seed,
                  "corrupted_at": "after the backbone's resize/crop, before ToTensor and normalisation",
                  "seconds_per_corruption": seconds},
        )

    def bootstrap_strata(self, predictions: pd.DataFrame) -> np.ndarray:
        return predictions[predictions["corruption"] == CLEAN]["label"].to_numpy()

    def evaluate(self, predictions: pd.DataFrame, boot_idx: np.ndarray) -> dict[str, dict]:
        return evaluate_robustness(predictions, boot_idx)

    def metric_replicates(self, predictions: pd.DataFrame, idx: np.ndarray) -> dict[str, tuple[float, np.ndarray]]:
        return robustness_replicates(predictions, idx)


def _block(ctx: RunContext, proba: np.ndarray, corruption: str, severity: int) -> pd.DataFrame:
    table = predictions_table(ctx, proba, proba.argmax(axis=1))
    table.insert(0, "severity", int(severity))
    table.insert(0, "corruption", corruption)
    return table


def block_replicates(predictions: pd.DataFrame, idx: np.ndarray) -> dict[tuple[str, int], dict[str, tuple[float, np.ndarray]]]:
    """(corruption, severity) -> metric -> (value on the full test set, replicates on the rows of ``idx``)."""
    from dermbench.stats import metrics as M
    from dermbench.stats.evaluation import classification_arrays

    out: dict[tuple[str, int], dict[str, tuple[float, np.ndarray]]] = {}
    reference = None
    for (corruption, severity), block in predictions.groupby(["corruption", "severity"], sort=False):
        block = block.drop(columns=["corruption", "severity"]).reset_index(drop=True)
        ids = block["sample_id"].astype(str).tolist()
        if reference is None:
            reference = ids
        elif ids != reference:
            raise ValueError("robustness predictions: every (corruption, severity) block must list the same test "
                             "samples in the same order")
        if idx.shape[1] != len(block):
            raise ValueError(f"bootstrap indices are for {idx.shape[1]} test samples, each block has {len(block)}")
        y, pred, scores = classification_arrays(block)
        point = M.classification_replicates(y, pred, scores, M.full_index(len(block)))
        reps = M.classification_replicates(y, pred, scores, idx)
        out[(str(corruption), int(severity))] = {m: (float(point[m][0]), reps[m]) for m in METRICS}
    if (CLEAN, 0) not in out:
        raise ValueError("robustness predictions have no clean block (corruption='clean', severity=0)")
    return out


def robustness_replicates(predictions: pd.DataFrame, idx: np.ndarray) -> dict[str, tuple[float, np.ndarray]]:
    """Every metric of :func:`evaluate_robustness` as (value on the full test set, replicates on the rows of
    ``idx``); the leaderboard's and ``compare``'s paired tests use the replicates."""
    blocks = block_replicates(predictions, idx)
    clean = blocks[(CLEAN, 0)]
    out: dict[str, tuple[float, np.ndarray]] = {m: clean[m] for m in METRICS}
    by_corruption: dict[str, list[int]] = {}
    for (corruption, severity) in blocks:
        if corruption != CLEAN:
            by_corruption.setdefault(corruption, []).append(severity)
    rel_all: dict[str, list] = {m: [] for m in METRICS}
    for corruption, severities in by_corruption.items():
        for m in METRICS:
            c_value, c_reps = clean[m]
            rel = []
            for s in severities:
                value, reps = blocks[(corruption, s)][m]
                out[metric_name(m, corruption, s)] = (value, reps)
                out[metric_name(f"{m}_delta", corruption, s)] = (value - c_value, reps - c_reps)
                with np.errstate(invalid="ignore", divide="ignore"):
                    rel.append(((c_value - value) / c_value if c_value else np.nan, (c_reps - reps) / c_reps))
            out[f"{m}_rel_drop@{corruption}"] = (float(np.mean([v for v, _ in rel])), np.mean([r for _, r in rel], axis=0))
            rel_all[m] += rel
    for m in METRICS:
        if rel_all[m]:
            out[f"{m}_rel_drop"] = (float(np.mean([v for v, _ in rel_all[m]])), np.mean([r for _, r in rel_all[m]], axis=0))
    return out


def evaluate_robustness(predictions: pd.DataFrame, boot_idx: np.ndarray) -> dict[str, dict]:
    from dermbench.stats.bootstrap import summarise

    return {name: summarise(value, reps) for name, (value, reps) in robustness_replicates(predictions, boot_idx).items()}
