"""Generic manifest: the six private tasks and any user dataset (format in docs/datasets.md).

``<task folder>/manifest.csv`` with columns ``image`` and ``label`` (a class name of the task
card, or its 0-based index), optionally ``id``, ``split`` (train/val/test), ``skin_type``,
``sex``, ``age``, ``site``, ``mask``, ``caption``. Relative paths are relative to the manifest's folder.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from dermbench.data.adapters import adapter
from dermbench.data.adapters._common import check_mask, check_no_empty_class, child, class_index, empty_file
from dermbench.data.sample import DatasetError, Sample, TaskData
from dermbench.data.user_csv import read_user_csv

SUBGROUPS = ("skin_type", "sex", "age", "site")
KNOWN_COLUMNS = ("image", "label", "id", "split", *SUBGROUPS, "mask", "caption")
SPLITS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@adapter("manifest")
def load(root: Path, card) -> TaskData:
    name = card.options.get("manifest", "manifest.csv")
    csv = child(root, name)
    if csv is None:
        raise DatasetError(f"{root}: {name} not found; a manifest task needs a CSV with columns image,label "
                           "(optional: id, split, skin_type, sex, age, site, mask, caption) — see docs/datasets.md")
    table = _excel_friendly(read_user_csv(csv, "manifest", "image,label (see docs/datasets.md)"), csv)
    needs_label = bool(card.classes)
    required = ["image"] + (["label"] if needs_label else [])
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DatasetError(f"{csv}: column(s) {missing} missing; found {list(table.columns)}; "
                           "expected image,label[,id,split,skin_type,sex,age,site,mask,caption]")
    samples, skipped, seen = [], [], set()
    for n, row in enumerate(table.to_dict("records"), start=2):
        image = _path(csv, row["image"], n, "image")
        if empty_file(image):
            skipped.append((str(image), "empty file"))
            continue
        sid = row.get("id") or _relative_id(csv, row["image"], image, n)
        if sid in seen:
            raise DatasetError(f"{csv}:{n}: id {sid!r} appears twice; ids (or image paths) must be unique")
        seen.add(sid)
        sample = Sample(id=sid, image=image, groups={g: str(row[g]) for g in SUBGROUPS if g in row and row[g] != ""})
        if needs_label:
            raw = str(row["label"]).strip()
            sample.label = int(raw) if raw.isdigit() and int(raw) < len(card.classes) else class_index(raw, card.classes, csv, "label", n)
            sample.source_label = raw
        if row.get("split"):
            split = SPLITS.get(str(row["split"]).strip().lower())
            if split is None:
                raise DatasetError(f"{csv}:{n}: split {row['split']!r}, expected one of train, val, test")
            sample.official_split = split
        if row.get("mask"):
            sample.mask = _path(csv, row["mask"], n, "mask")
            check_mask(image, sample.mask)
        if row.get("caption"):
            sample.caption = row["caption"]
        samples.append(sample)
    if needs_label:
        check_no_empty_class(samples, card.classes, root, card.expected)
    return TaskData(task=card.name, root=root, samples=samples, classes=list(card.classes), skipped=skipped)


def _relative_id(csv: Path, value: str, image: Path, line: int) -> str:
    """The sample id of a row without an ``id``: the image path relative to the manifest's folder, without
    suffix, so that ids (and the split and hashes built on them) do not depend on where the data lives."""
    if not Path(value).is_absolute():
        return Path(value).with_suffix("").as_posix()
    try:
        return image.resolve().relative_to(csv.parent.resolve()).with_suffix("").as_posix()
    except ValueError:
        raise DatasetError(f"{csv}:{line}: image {value!r} is an absolute path outside the manifest's folder, so it "
                           "cannot name the sample; add an 'id' column, or give paths relative to the manifest") from None


def _excel_friendly(table: pd.DataFrame, csv: Path) -> pd.DataFrame:
    """Column names as spreadsheets export them (``Image``, `` label``) read as the known columns; a header
    that would map two columns to one name is refused rather than guessed."""
    names = [str(c).strip().lower() if str(c).strip().lower() in KNOWN_COLUMNS else str(c) for c in table.columns]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise DatasetError(f"{csv}: column(s) {doubled} appear more than once (names compared without case and "
                           f"spaces); found {list(table.columns)}")
    return table.set_axis(names, axis=1)


def _path(csv: Path, value: str, line: int, column: str) -> Path:
    path = Path(value)
    path = path if path.is_absolute() else csv.parent / path
    if not path.exists():
        raise DatasetError(f"{csv}:{line}: {column} {value!r} does not exist ({path}); paths are relative to the manifest's folder")
    return path
