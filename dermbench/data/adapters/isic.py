"""ISIC 2016 / 2017 / 2018 lesion segmentation (Part 1 / Task 1), in the challenge folder names.

Images ``ISIC_<7 digits>.jpg`` (``*_superpixels.png`` and other files ignored); masks
``<id>_Segmentation.png`` / ``<id>_segmentation.png`` matched case-insensitively.
The task pool is restricted to ``options.official_splits`` (the paper: the union of the
challenge validation and test sets).
"""
from __future__ import annotations

import re
from pathlib import Path

from dermbench.data.adapters import adapter
from dermbench.data.adapters._common import check_mask, child
from dermbench.data.sample import DatasetError, Sample, TaskData

LAYOUTS = {
    2016: {"train": ("ISBI2016_ISIC_Part1_Training_Data", "ISBI2016_ISIC_Part1_Training_GroundTruth"),
           "test": ("ISBI2016_ISIC_Part1_Test_Data", "ISBI2016_ISIC_Part1_Test_GroundTruth")},
    2017: {"train": ("ISIC-2017_Training_Data", "ISIC-2017_Training_Part1_GroundTruth"),
           "val": ("ISIC-2017_Validation_Data", "ISIC-2017_Validation_Part1_GroundTruth"),
           "test": ("ISIC-2017_Test_v2_Data", "ISIC-2017_Test_v2_Part1_GroundTruth")},
    2018: {"train": ("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth"),
           "val": ("ISIC2018_Task1-2_Validation_Input", "ISIC2018_Task1_Validation_GroundTruth"),
           "test": ("ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth")},
}
IMAGE = re.compile(r"^ISIC_\d{7}\.jpe?g$", re.IGNORECASE)


def _find(root: Path, name: str) -> Path | None:
    """The folder ``name`` directly in root or one level below (each zip extracts to its own folder)."""
    found = child(root, name)
    if found is not None:
        return found
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        found = child(sub, name)
        if found is not None:
            return found
    return None


def _load(root: Path, card, year: int) -> TaskData:
    wanted = list(card.options.get("official_splits", list(LAYOUTS[year])))
    samples = []
    for part in wanted:
        data_name, gt_name = LAYOUTS[year][part]
        data_dir, gt_dir = _find(root, data_name), _find(root, gt_name)
        if data_dir is None or gt_dir is None:
            raise DatasetError(f"{root}: ISIC {year} {part} folders {data_name}/ and {gt_name}/ expected; "
                               "extract each official zip into the task folder")
        masks = {p.name.lower(): p for p in gt_dir.iterdir() if p.is_file()}
        for image in sorted(p for p in data_dir.iterdir() if IMAGE.match(p.name)):
            mask = masks.get(f"{image.stem}_segmentation.png".lower())
            if mask is None:
                raise DatasetError(f"{gt_dir}: no mask {image.stem}_segmentation.png for {image}")
            check_mask(image, mask)
            samples.append(Sample(id=image.stem, image=image, mask=mask, official_split=part))
    if not samples:
        raise DatasetError(f"{root}: no ISIC_<7 digits>.jpg images in the {wanted} folders")
    return TaskData(task=card.name, root=root, samples=samples, classes=[],
                    notes=[f"pool: official {' + '.join(wanted)} sets"])


@adapter("isic2016")
def load_2016(root: Path, card) -> TaskData:
    return _load(root, card, 2016)


@adapter("isic2017")
def load_2017(root: Path, card) -> TaskData:
    return _load(root, card, 2017)


@adapter("isic2018")
def load_2018(root: Path, card) -> TaskData:
    return _load(root, card, 2018)
