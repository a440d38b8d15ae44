"""DDI (Diverse Dermatology Images): flat 000001.png files (or images/) + ddi_metadata.csv."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from dermbench.data.adapters import adapter
from dermbench.data.adapters._common import check_no_empty_class, child, empty_file, locate_marker, require
from dermbench.data.sample import DatasetError, Sample, TaskData

TRUE, FALSE = {"true", "1", "yes"}, {"false", "0", "no"}


@adapter("ddi")
def load(root: Path, card) -> TaskData:
    root = locate_marker(root, ["ddi_metadata.csv"])
    csv = child(root, "ddi_metadata.csv")
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    table = table.loc[:, [c for c in table.columns if not c.startswith("Unnamed")]]  # pandas index column
    # older releases: malignancy(malig=1) as 0/1 instead of malignant TRUE/FALSE
    mal_col = "malignant" if "malignant" in table.columns else "malignancy(malig=1)" if "malignancy(malig=1)" in table.columns else None
    for col in ("DDI_file", "skin_tone"):
        if col not in table.columns:
            raise DatasetError(f"{csv}: column {col!r} missing; expected DDI_ID, DDI_file, skin_tone, malignant, disease")
    if mal_col is None:
        raise DatasetError(f"{csv}: neither 'malignant' nor 'malignancy(malig=1)' column; expected the DDI metadata file")
    image_dir = root if (root / table["DDI_file"].iloc[0]).exists() else (child(root, "images") or root)
    samples, skipped = [], []
    for row in table.to_dict("records"):
        value = str(row[mal_col]).strip().lower()
        if value not in TRUE | FALSE:
            raise DatasetError(f"{csv}: {mal_col}={row[mal_col]!r} for {row['DDI_file']}; expected TRUE/FALSE or 1/0")
        path = require(child(image_dir, row["DDI_file"]), f"image {row['DDI_file']} listed in {csv.name}", image_dir,
                       "DDI-Code keeps the PNGs beside the CSV or in images/: re-extract the download")
        if empty_file(path):
            skipped.append((str(path), "empty file"))
            continue
        samples.append(Sample(id=Path(row["DDI_file"]).stem, image=path, label=int(value in TRUE),
                              groups={"skin_type": str(row["skin_tone"])}, source_label=row.get("disease")))
    check_no_empty_class(samples, card.classes, root, card.expected)
    return TaskData(task=card.name, root=root, samples=samples, classes=list(card.classes), skipped=skipped)
