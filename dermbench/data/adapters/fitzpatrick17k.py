"""Fitzpatrick17k: fitzpatrick17k.csv + <md5hash>.jpg images (data/finalfitz17k/ or beside the CSV)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from dermbench.data.adapters import adapter
from dermbench.data.adapters._common import check_no_empty_class, child, class_index, empty_file, locate_marker
from dermbench.data.sample import DatasetError, Sample, TaskData


def _image_dir(root: Path, first: str) -> Path:
    for candidate in (root / "data" / "finalfitz17k", root / "finalfitz17k", root / "images", root):
        if (candidate / f"{first}.jpg").exists():
            return candidate
    raise DatasetError(f"{root}: image {first}.jpg not found in data/finalfitz17k/, finalfitz17k/, images/ or beside "
                       "fitzpatrick17k.csv; extract the image archive there")


@adapter("fitzpatrick17k")
def load(root: Path, card) -> TaskData:
    root = locate_marker(root, ["fitzpatrick17k.csv"])
    csv = child(root, "fitzpatrick17k.csv")
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    if "fitzpatrick_scale" not in table.columns and "fitzpatrick" in table.columns:  # older column name
        table = table.rename(columns={"fitzpatrick": "fitzpatrick_scale"})
    label_col = card.options.get("label_column", "three_partition_label")
    for col in ("md5hash", label_col):
        if col not in table.columns:
            raise DatasetError(f"{csv}: column {col!r} missing; expected the Fitzpatrick17k CSV "
                               "(md5hash, fitzpatrick_scale, label, nine_partition_label, three_partition_label, ...)")
    keep = card.options.get("keep")
    if keep:
        table = table[table[label_col].isin(keep)]
    image_dir = _image_dir(root, table["md5hash"].iloc[0])
    samples, skipped = [], []
    for row in table.to_dict("records"):
        path = image_dir / f"{row['md5hash']}.jpg"
        if not path.exists():
            raise DatasetError(f"{path}: listed in {csv} (md5hash {row['md5hash']}) but missing; re-extract the images")
        if empty_file(path):
            skipped.append((str(path), "empty file"))
            continue
        scale = str(row.get("fitzpatrick_scale", "-1")).strip()
        samples.append(Sample(id=row["md5hash"], image=path, label=class_index(row[label_col], card.classes, csv, label_col),
                              groups={"skin_type": scale if scale in {"1", "2", "3", "4", "5", "6"} else "unknown"},
                              source_label=row.get("label")))
    check_no_empty_class(samples, card.classes, root, card.expected)
    return TaskData(task=card.name, root=root, samples=samples, classes=list(card.classes), skipped=skipped)
