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
from typing import Optional

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
        if n == 1:
            n_train = 1
            notes.append(f"class {stratum!r} has a single sample: it goes to train and is absent from test")
        else:
            n_train = int(min(max(round(n * fraction), 1), n - 1))
        train += [ids[i] for i in order[:n_train]]
        test += [ids[i] for i in order[n_train:]]
    return sorted(train), sorted(test), notes


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
        untagged = len(data.samples) - len(tagged)
        if untagged:
            notes.append(f"{untagged} samples without an official split are not used")
    else:
        raise ValueError(f"unknown split rule {rule!r}")
    if not train or not test:
        raise DatasetError(f"task {data.task!r} ({data.root}): split {rule!r} left an empty train or test set "
                           f"({len(train)} train, {len(test)} test); the dataset is too small")
    return Split(task=data.task, rule=rule, seed=seed, train=train, test=test,
                 parent=parent.task if parent else None, notes=notes)


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
