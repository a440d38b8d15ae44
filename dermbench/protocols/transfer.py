"""Cross-dataset transfer: the linear probe trained on one task's training split, tested on another's test split.

Pairs come from the task cards: tasks that declare the same ``[transfer] family`` (tasks/README.md,
section "transfer") map their classes into the family's label space, and every ordered pair of members
is a transfer pair. The protocol runs on the *target* task: for each member (source) it trains the
``linear`` protocol's head (same hyper-parameters and seed) on the source's training images of mapped
classes, labelled in family classes, and predicts this task's test split. The source equal to the
target is the in-domain diagonal; with an identity mapping it reproduces the ``linear`` result exactly.
Every source is evaluated on the same test set with the task's shared bootstrap resamples, so the drop
(in-domain minus transfer) has a paired CI.

Test images of classes outside the family mapping (e.g. Derm7pt's BCC) stay in the predictions with
``label = -1`` and no scores, and are left out of every metric; the shared resamples are stratified by
the task's own classes, so each resample holds the same number of mapped images.

Predictions: blocks ``source`` + ``sample_id, task_label, label, pred, score_*`` (the target's own
class index in ``task_label``; family class index in ``label``), the in-domain block first.
Metrics: ``auroc@<source>`` (and f1, accuracy, balanced_accuracy); ``auroc_drop@<source>`` = in-domain
minus transfer; plain ``auroc`` etc. = the mean over the other sources (the transfer performance).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from dermbench.data.sample import DatasetError
from dermbench.data.tasks import TaskCard, get_card, transfer_members
from dermbench.protocols.base import Protocol, ProtocolOutput, RunContext
from dermbench.protocols.linear_probe import LINEAR_DEFAULTS, predict_proba, train_linear_head

METRICS = ("auroc", "f1", "accuracy", "balanced_accuracy")
EXCLUDED = -1


def family_labels(card: TaskCard, own_labels: np.ndarray) -> np.ndarray:
    """Own class indices -> family class indices (``EXCLUDED`` for classes outside the mapping)."""
    spec = card.transfer
    lookup = np.array([spec.classes.index(spec.map[c]) if c in spec.map else EXCLUDED for c in card.classes])
    return lookup[np.asarray(own_labels, dtype=np.int64)]


class Transfer(Protocol):
    name = "transfer"
    kind = "classification"
    defaults = {**LINEAR_DEFAULTS, "sources": "all"}

    def applies_to(self, card: TaskCard) -> bool:
        return self.name in card.protocols and card.transfer is not None

    def accepts(self, card: TaskCard) -> bool:
        return card.transfer is not None  # any task of a family may be asked for by name

    def sources(self, card: TaskCard, config: dict[str, Any]) -> list[TaskCard]:
        members = transfer_members(card.transfer.family)
        wanted = config.get("sources", "all")
        if wanted != "all":
            names = [n.strip() for n in (wanted.split(",") if isinstance(wanted, str) else wanted) if n.strip()]
            unknown = [n for n in names if n not in {m.name for m in members}]
            if unknown:
                raise ValueError(f"transfer.sources: {unknown} are not members of family {card.transfer.family!r} "
                                 f"({', '.join(m.name for m in members)})")
            members = [m for m in members if m.name in names or m.name == card.name]
        # the in-domain source first
        return sorted(members, key=lambda m: m.name != card.name)

    def run(self, ctx: RunContext) -> ProtocolOutput:
        card = ctx.card
        if card.transfer is None:
            raise DatasetError(f"task {card.name!r} declares no [transfer] family in {card.path}; see tasks/README.md")
        if ctx.load_task is None:
            raise ValueError("the transfer protocol needs the runner's load_task to read its source tasks")
        spec = card.transfer
        backbone = ctx.get_backbone()
        test = ctx.test
        own = np.array([s.label for s in test], dtype=np.int64)
        y_test = family_labels(card, own)
        x_test = self._features(ctx, backbone, test, f"{card.name} test")
        blocks, n_train, skipped = [], {}, {}
        for source in self.sources(card, ctx.config):
            try:
                data, split = (ctx.data, ctx.split) if source.name == card.name else ctx.load_task(source.name)
            except DatasetError as exc:  # a source whose data is absent is recorded, not silently dropped
                skipped[source.name] = str(exc)
                continue
            train = split.select(data, "train")
            y_src = family_labels(source, np.array([s.label for s in train], dtype=np.int64))
            keep = np.flatnonzero(y_src != EXCLUDED)
            train = [train[i] for i in keep]
            x_train = self._features(ctx, backbone, train, f"{source.name} train")
            head = train_linear_head(x_train, y_src[keep], len(spec.classes), ctx.config, ctx.seed, ctx.device)
            proba = predict_proba(head, x_test)
            block = pd.DataFrame({"source": source.name, "sample_id": [s.id for s in test], "task_label": own,
                                  "label": y_test, "pred": np.where(y_test == EXCLUDED, EXCLUDED, proba.argmax(1))})
            for c in range(proba.shape[1]):
                block[f"score_{c}"] = np.where(y_test == EXCLUDED, np.nan, proba[:, c])
            blocks.append(block)
            n_train[source.name] = int(len(train))
        if len(blocks) < 2:
            raise DatasetError(f"task {card.name!r}: transfer needs at least one other member of family "
                               f"{spec.family!r} with data; unavailable: {skipped or 'none declared'}")
        return ProtocolOutput(
            predictions=pd.concat(blocks, ignore_index=True), kind=self.kind, n_train=n_train[card.name],
            n_test=len(test),
            info={"family": spec.family, "family_classes": list(spec.classes), "map": dict(spec.map),
                  "sources": list(n_train), "n_train_per_source": n_train, "skipped_sources": skipped,
                  "n_test_mapped": int((y_test != EXCLUDED).sum()),
                  "n_test_excluded": int((y_test == EXCLUDED).sum()),
                  "source_maps": {s: dict(get_card(s).transfer.map) for s in n_train},
                  "augmentation": "none (cached frozen features)"},
        )

    @staticmethod
    def _features(ctx: RunContext, backbone, samples, desc: str) -> np.ndarray:
        feats = ctx.features.get(backbone, samples, kind="global", view="eval",
                                 batch_size=int(ctx.config.get("batch_size_features", 32)), device=ctx.device,
                                 progress=ctx.progress, desc=desc)
        return np.asarray(feats, dtype=np.float32)

    def bootstrap_strata(self, predictions: pd.DataFrame) -> np.ndarray:
        """The task's own labels in test order: the same stratification as ``linear``, so the resamples are shared."""
        first = predictions["source"].iloc[0]
        return predictions[predictions["source"] == first]["task_label"].to_numpy()

    def evaluate(self, predictions: pd.DataFrame, boot_idx: np.ndarray) -> dict[str, dict]:
        return evaluate_transfer(predictions, boot_idx)

    def metric_replicates(self, predictions: pd.DataFrame, idx: np.ndarray) -> dict[str, tuple[float, np.ndarray]]:
        return transfer_replicates(predictions, idx)


def mapped_resamples(label: np.ndarray, boot_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows of mapped test images, resamples re-indexed into those rows).

    The resamples are stratified by the task's own classes, so every replicate draws the same number of
    mapped images; anything else is an error (resamples from another stratification)."""
    mapped = np.flatnonzero(label != EXCLUDED)
    if len(mapped) == len(label):
        return mapped, boot_idx
    position = np.full(len(label), -1, dtype=np.int64)
    position[mapped] = np.arange(len(mapped))
    keep = label[boot_idx] != EXCLUDED
    counts = keep.sum(axis=1)
    if counts.min() != counts.max():
        raise ValueError("transfer: the bootstrap resamples are not stratified by the task's classes "
                         "(mapped images per replicate vary); delete the task's resample file to redraw")
    return mapped, position[boot_idx[keep]].reshape(boot_idx.shape[0], int(counts[0]))


def transfer_replicates(predictions: pd.DataFrame, boot_idx: np.ndarray) -> dict[str, tuple[float, np.ndarray]]:
    """Every metric of :func:`evaluate_transfer` as (value on the full test set, replicates on the rows of
    ``boot_idx``); the leaderboard's and ``compare``'s paired tests use the replicates."""
    from dermbench.stats import metrics as M
    from dermbench.stats.evaluation import classification_arrays

    sources = list(dict.fromkeys(predictions["source"]))
    results: dict[str, dict[str, tuple[float, np.ndarray]]] = {}
    for source in sources:
        block = predictions[predictions["source"] == source].drop(columns=["source"]).reset_index(drop=True)
        if boot_idx.shape[1] != len(block):
            raise ValueError(f"bootstrap indices are for {boot_idx.shape[1]} test samples, each block has {len(block)}")
        rows, idx = mapped_resamples(block["label"].to_numpy(np.int64), boot_idx)
        y, pred, scores = classification_arrays(block.iloc[rows].reset_index(drop=True))
        point = M.classification_replicates(y, pred, scores, M.full_index(len(rows)))
        reps = M.classification_replicates(y, pred, scores, idx)
        results[source] = {m: (float(point[m][0]), reps[m]) for m in METRICS}
    in_domain = sources[0]
    out: dict[str, tuple[float, np.ndarray]] = {}
    for source, r in results.items():
        for m in METRICS:
            out[f"{m}@{source}"] = r[m]
            if source != in_domain:
                d_value, d_reps = results[in_domain][m]
                out[f"{m}_drop@{source}"] = (d_value - r[m][0], d_reps - r[m][1])
    others = [s for s in sources if s != in_domain]
    for m in METRICS:
        out[m] = (float(np.mean([results[s][m][0] for s in others])), np.mean([results[s][m][1] for s in others], axis=0))
        out[f"{m}_in_domain"] = results[in_domain][m]
    return out


def evaluate_transfer(predictions: pd.DataFrame, boot_idx: np.ndarray) -> dict[str, dict]:
    from dermbench.stats.bootstrap import summarise

    return {name: summarise(value, reps) for name, (value, reps) in transfer_replicates(predictions, boot_idx).items()}
