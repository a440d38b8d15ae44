"""Derm7pt: release_v0/meta/meta.csv (+ train/valid/test_indexes.csv) and images/<DIR>/<file>.

5-class grouping of Derm7PtDatasetGroupInfrequent: BCC, NEV, MEL (every 'melanoma*'), MISC, SK.
The dermoscopic image by default (``options.image = 'derm'``), the clinical one with 'clinic'.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from dermbench.data.adapters import adapter
from dermbench.data.adapters._common import check_no_empty_class, child, locate_marker
from dermbench.data.sample import DatasetError, Sample, TaskData

GROUPS = {
    "basal cell carcinoma": "BCC",
    "blue nevus": "NEV", "clark nevus": "NEV", "combined nevus": "NEV", "congenital nevus": "NEV",
    "dermal nevus": "NEV", "recurrent nevus": "NEV", "reed or spitz nevus": "NEV",
    "dermatofibroma": "MISC", "lentigo": "MISC", "melanosis": "MISC", "miscellaneous": "MISC", "vascular lesion": "MISC",
    "seborrheic keratosis": "SK",
}


def group_of(diagnosis: str) -> str | None:
    d = diagnosis.strip().lower()
    return "MEL" if d.startswith("melanoma") else GROUPS.get(d)


@adapter("derm7pt")
def load(root: Path, card) -> TaskData:
    root = locate_marker(root, ["meta"])
    meta_dir = child(root, "meta")
    csv = child(meta_dir, "meta.csv")
    if csv is None:
        raise DatasetError(f"{meta_dir}: meta.csv missing; it comes with release_v0.zip")
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    which = card.options.get("image", "derm")
    for col in ("case_num", "diagnosis", which, "sex"):
        if col not in table.columns:
            raise DatasetError(f"{csv}: column {col!r} missing; expected the Derm7pt meta.csv (case_num, diagnosis, ..., clinic, derm)")
    official = {}
    for part, tag in (("train", "train"), ("valid", "val"), ("test", "test")):
        path = child(meta_dir, f"{part}_indexes.csv")
        if path is not None:
            for i in pd.read_csv(path)["indexes"]:
                official[int(i)] = tag
    images = child(root, "images") or root
    samples = []
    for i, row in table.iterrows():
        group = group_of(row["diagnosis"])
        if group is None:
            raise DatasetError(f"{csv}: row {i} has diagnosis {row['diagnosis']!r}, which no Derm7pt group covers; "
                               f"known: {sorted(GROUPS)} and 'melanoma*'")
        rel = row[which]
        path = images / rel
        if not path.exists():  # mixed-case directories / extensions in some copies
            parts = rel.split("/")
            found = child(images, parts[0])
            path = child(found, parts[-1]) if found else None
            if path is None:
                raise DatasetError(f"{images}: image {rel} of case {row['case_num']} (column {which!r}) missing")
        samples.append(Sample(id=f"case{int(row['case_num']):04d}", image=path, label=list(card.classes).index(group),
                              groups={"sex": row["sex"] or "unknown"}, official_split=official.get(i),
                              source_label=row["diagnosis"]))
    check_no_empty_class(samples, card.classes, root, card.expected)
    return TaskData(task=card.name, root=root, samples=samples, classes=list(card.classes), notes=[f"image: {which}"])
