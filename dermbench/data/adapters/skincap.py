"""SkinCAP: skincap/<file>.png + skincap_v240623.csv (caption_zh_polish_en) or skincap_v240715.xlsx (caption_en).

``skincap/not_include/`` holds images the release excludes: never read.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from dermbench.data.adapters import adapter
from dermbench.data.adapters._common import child, locate_marker
from dermbench.data.sample import DatasetError, Sample, TaskData

CAPTION_COLUMNS = ("caption_zh_polish_en", "caption_en")


def read_table(root: Path) -> tuple[pd.DataFrame, Path, str]:
    candidates = sorted(root.glob("*.csv")) + sorted(root.glob("*.xlsx"))
    for path in candidates:
        table = pd.read_csv(path, dtype=str, keep_default_na=False) if path.suffix == ".csv" else \
            pd.read_excel(path, dtype=str).fillna("")
        for col in CAPTION_COLUMNS:
            if col in table.columns:
                return table, path, col
    raise DatasetError(f"{root}: no CSV/XLSX with a caption column {CAPTION_COLUMNS}; expected skincap_v240623.csv "
                       "or skincap_v240715.xlsx from the SkinCAP release")


@adapter("skincap")
def load(root: Path, card) -> TaskData:
    root = locate_marker(root, ["skincap"])
    table, path, caption_col = read_table(root)
    images = child(root, "skincap")
    file_col = "skincap_file_path" if "skincap_file_path" in table.columns else "id"
    samples, skipped = [], []
    for row in table.to_dict("records"):
        name = str(row[file_col])
        if not Path(name).suffix:
            name += ".png"
        image = child(images, name)
        if image is None:
            raise DatasetError(f"{images}: {name} listed in {path.name} is missing")
        caption = str(row[caption_col]).strip()
        if not caption:
            skipped.append((str(image), f"empty {caption_col} in {path.name}"))
            continue
        samples.append(Sample(id=str(row.get("id", Path(name).stem)), image=image, caption=caption,
                              source_label=row.get("disease")))
    return TaskData(task=card.name, root=root, samples=samples, classes=[], skipped=skipped,
                    notes=[f"captions from {path.name}:{caption_col}; skincap/not_include/ excluded"])
