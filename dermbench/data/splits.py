"""Train/test splits: seeded, stratified, written to a file whose sha256 goes into every result.

Rules (from the task card's ``split``):
- ``stratified``: per class, a seeded shuffle, ``train_fraction`` of it to train (the paper's 50/50);
- ``random``: the same with a single stratum (segmentation, captioning);
- ``derived``: the split of ``split_from`` restricted to this task's samples (Fitzpatrick17k-2/-9
  from Fitzpatrick17k-3, PH2(seg) from PH2(cls));
- ``official`` (asked for with ``--split official``): the dataset's own train(+val)/test tags.
Sample ids are sorted before shuffling, so the split depends only on the data and the seed.
"""
from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from dermbench.data.sample import DatasetError, Sample, TaskData
from dermbench.io import atomic_write_text


@dataclass
class Split:
    task: str
    rule: str
    seed: int
    train: list[str]
    test: list[str]
    parent: Optional[str] = None
    notes: list[str] = field(default_factory=list)
    # --split official: the samples without a train/val/test tag, left out of both sides (listed in the file)
    untagged: list[str] = field(default_factory=list)
    path: Optional[Path] = None
    sha256: str = ""

    def select(self, data: TaskData, part: str) -> list[Sample]:
        ids = self.train if part == "train" else self.test
        by_id = data.by_id()
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise DatasetError(
                f"split {self.path} lists {len(missing)} sample(s) that task {self.task!r} no longer has "
                f"(e.g. {missing[:3]}); the data changed since the split was made: delete the split file to remake it"
            )
        return [by_id[i] for i in ids]

    def to_json(self) -> str:
        body = {"task": self.task, "rule": self.rule, "seed": self.seed, "parent": self.parent,
                "n_train": len(self.train), "n_test": len(self.test), "notes": self.notes,
                "train": self.train, "test": self.test}
        if self.untagged:  # only then: every other split file (and its sha256) stays as it was
            body["untagged"] = self.untagged
        return json.dumps(body, indent=1, sort_keys=True) + "\n"


def _stratified(ids_by_stratum: dict, fraction: float, seed: int) -> tuple[list[str], list[str], list[str]]:
    rng = np.random.default_rng(seed)
    train: list[str] = []
    test: list[str] = []
    notes: list[str] = []
    for stratum in sorted(ids_by_stratum, key=str):
        ids = sorted(ids_by_stratum[stratum])
        order = rng.permutation(len(ids))
        n = len(ids)
        n_train = 1 if n == 1 else int(min(max(round(n * fraction), 1), n - 1))  # n == 1: refused by the caller
        train += [ids[i] for i in order[:n_train]]
        test += [ids[i] for i in order[n_train:]]
    return sorted(train), sorted(test), notes


def _check_every_class_on_both_sides(data: TaskData, rule: str, train: set, test: set) -> None:
    """A class absent from the test set makes AUROC undefined and F1 meaningless: refuse the split."""
    counts = {c: [0, 0] for c in range(len(data.classes))}
    for s in data.samples:
        if s.label is None:
            continue
        if s.id in train:
            counts[s.label][0] += 1
        elif s.id in test:
            counts[s.label][1] += 1
    bad = [(data.classes[c], n_train, n_test) for c, (n_train, n_test) in counts.items() if n_train == 0 or n_test == 0]
    if bad:
        detail = "; ".join(f"class {name!r}: {n_train} train, {n_test} test image(s)" for name, n_train, n_test in bad)
        raise DatasetError(f"task {data.task!r} ({data.root}): split {rule!r} leaves a class without training or test "
                           f"images ({detail}); every class needs at least 2 images, one on each side: add images "
                           "or remove the class from the task card")


def make_split(
    data: TaskData,
    rule: str,
    seed: int,
    train_fraction: float = 0.5,
    parent: Optional[Split] = None,
) -> Split:
    ids = [s.id for s in data.samples]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"task {data.task!r} ({data.root}): sample ids are not unique; the adapter must make them unique")
    if rule == "stratified":
        strata: dict = defaultdict(list)
        for s in data.samples:
            strata[s.label].append(s.id)
        train, test, notes = _stratified(strata, train_fraction, seed)
    elif rule == "random":
        train, test, notes = _stratified({"all": ids}, train_fraction, seed)
    elif rule == "derived":
        if parent is None:
            raise ValueError(f"task {data.task!r}: a derived split needs the parent task's split")
        have = set(ids)
        train = [i for i in parent.train if i in have]
        test = [i for i in parent.test if i in have]
        orphans = have - set(train) - set(test)
        if orphans:
            raise DatasetError(
                f"task {data.task!r}: {len(orphans)} sample(s) (e.g. {sorted(orphans)[:3]}) are not in the split of "
                f"{parent.task!r} it derives from; both tasks must read the same release"
            )
        notes = [f"derived from the split of {parent.task} (sha256 {parent.sha256[:12]})"]
    elif rule == "official":
        tagged = [s for s in data.samples if s.official_split]
        if not tagged:
            raise DatasetError(f"task {data.task!r}: --split official, but this dataset has no official split; use the default")
        train = sorted(s.id for s in tagged if s.official_split in ("train", "val"))
        test = sorted(s.id for s in tagged if s.official_split == "test")
        notes = ["official split: train+val -> train, test -> test"]
        untagged = sorted(s.id for s in data.samples if not s.official_split)
        if untagged:
            notes.append(f"{len(untagged)} samples without an official split are not used")
    else:
        raise ValueError(f"unknown split rule {rule!r}")
    if rule != "official":
        untagged = []
    if not train or not test:
        raise DatasetError(f"task {data.task!r} ({data.root}): split {rule!r} left an empty train or test set "
                           f"({len(train)} train, {len(test)} test); the dataset is too small")
    if data.classes:
        _check_every_class_on_both_sides(data, rule, set(train), set(test))
    return Split(task=data.task, rule=rule, seed=seed, train=train, test=test,
                 parent=parent.task if parent else None, notes=notes, untagged=untagged)


def train_test_duplicates(split: Split, digest_of: Mapping[str, str]) -> list[tuple[str, str]]:
    """(train id, test id) pairs whose images have the same content hash (``digest_of``: sample id -> sha256
    of its image). A test image also seen in training inflates every metric of the task; `data check` reports
    these pairs as leaks and `run` warns about them (or refuses them with --strict)."""
    by_digest: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for side, ids in ((0, split.train), (1, split.test)):
        for i in ids:
            if i in digest_of:
                by_digest[digest_of[i]][side].append(i)
    return [(a, b) for train, test in by_digest.values() for a in train for b in test]


def write_split(split: Split, out_dir: Path) -> Split:
    """Write the split file (atomically) and record its path and sha256."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = split.to_json()
    sha = hashlib.sha256(text.encode()).hexdigest()
    # the hash in the name: splits of other data (another data root) never overwrite each other
    path = out_dir / f"{split.task}.{split.rule}.seed{split.seed}.{sha[:12]}.json"
    atomic_write_text(path, text)
    split.path = path
    split.sha256 = sha
    return split
