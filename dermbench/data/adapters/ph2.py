"""PH2: 'PH2 Dataset images'/IMDxxx/{IMDxxx_Dermoscopic_Image,IMDxxx_lesion}/ + PH2_dataset.xlsx (or .txt).

Clinical diagnosis: the xlsx marks one of Common Nevus / Atypical Nevus / Melanoma with "X"
(header on Excel row 13); the txt has 0 / 1 / 2 in its third ``||`` field.
PH2(cls): common + atypical nevus -> nevus, melanoma -> melanoma. PH2(seg): the lesion masks.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from dermbench.data.adapters import adapter
from dermbench.data.adapters._common import check_mask, check_no_empty_class, child, locate_marker
from dermbench.data.sample import DatasetError, Sample, TaskData

DIAGNOSES = ("common nevus", "atypical nevus", "melanoma")


def read_diagnoses(root: Path) -> dict[str, str]:
    xlsx, txt = child(root, "PH2_dataset.xlsx"), child(root, "PH2_dataset.txt")
    if xlsx is not None:
        table = pd.read_excel(xlsx, header=12, dtype=str)
        cols = {c.strip().lower(): c for c in table.columns if isinstance(c, str)}
        needed = ["image name", "common nevus", "atypical nevus", "melanoma"]
        if not all(n in cols for n in needed):
            raise DatasetError(f"{xlsx}: expected the header on row 13 with columns {needed}; found {list(table.columns)[:8]}")
        out = {}
        for _, row in table.iterrows():
            name = str(row[cols["image name"]]).strip()
            if not name.startswith("IMD"):
                continue
            marked = [d for d in DIAGNOSES if str(row[cols[d]]).strip().upper() == "X"]
            if len(marked) != 1:
                raise DatasetError(f"{xlsx}: {name} has {len(marked)} clinical diagnoses marked with X, expected exactly one")
            out[name] = marked[0]
        return out
    if txt is not None:
        out = {}
        for line in txt.read_text(errors="replace").splitlines():
            fields = [f.strip() for f in line.split("||")]  # keep empty fields: the histology one is often blank
            if len(fields) > 3 and fields[1].startswith("IMD"):
                if fields[3] not in {"0", "1", "2"}:
                    raise DatasetError(f"{txt}: {fields[1]} has clinical diagnosis {fields[3]!r}, expected 0, 1 or 2")
                out[fields[1]] = DIAGNOSES[int(fields[3])]
        return out
    raise DatasetError(f"{root}: neither PH2_dataset.xlsx nor PH2_dataset.txt found; they come with PH2Dataset.rar")


@adapter("ph2")
def load(root: Path, card) -> TaskData:
    root = locate_marker(root, ["PH2 Dataset images"])
    images = child(root, "PH2 Dataset images")
    diagnoses = read_diagnoses(root)
    with_masks = bool(card.options.get("masks"))
    samples = []
    for case, diagnosis in sorted(diagnoses.items()):
        case_dir = child(images, case)
        if case_dir is None:
            raise DatasetError(f"{images}: folder {case} listed in the metadata is missing; re-extract PH2Dataset.rar")
        image = child(child(case_dir, f"{case}_Dermoscopic_Image") or case_dir, f"{case}.bmp")
        if image is None:
            raise DatasetError(f"{case_dir}: {case}_Dermoscopic_Image/{case}.bmp missing")
        sample = Sample(id=case, image=image, source_label=diagnosis)
        if with_masks:
            mask = child(child(case_dir, f"{case}_lesion") or case_dir, f"{case}_lesion.bmp")
            if mask is None:
                raise DatasetError(f"{case_dir}: lesion mask {case}_lesion/{case}_lesion.bmp missing")
            check_mask(image, mask)
            sample.mask = mask
        else:
            sample.label = list(card.classes).index("melanoma" if diagnosis == "melanoma" else "nevus")
        samples.append(sample)
    if not with_masks:
        check_no_empty_class(samples, card.classes, root, card.expected)
    return TaskData(task=card.name, root=root, samples=samples, classes=list(card.classes))
