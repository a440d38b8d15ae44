"""Waterloo 'Skincancer' (DermIS + DermQuest): <name>_orig.jpg beside <name>_contour.png.

Pairing follows the DermINO rule: drop the last '_' token of the image stem, add '_contour.png'.
The class comes from the folder (melanoma / notmelanoma); kept as a subgroup attribute.
"""
from __future__ import annotations

from pathlib import Path

from dermbench.data.adapters import adapter
from dermbench.data.adapters._common import check_mask
from dermbench.data.sample import DatasetError, Sample, TaskData


@adapter("waterloo")
def load(root: Path, card) -> TaskData:
    # Extracted straight into a shared data root, only the archives' own folders are searched.
    unzipped = {name.lower() for name in card.unzipped}
    tops = [p for p in root.iterdir() if p.is_dir() and p.name.lower() in unzipped] or [root]
    originals = sorted(p for top in tops for p in top.rglob("*") if p.is_file() and p.stem.lower().endswith("_orig")
                       and p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if not originals:
        raise DatasetError(f"{root}: no '<name>_orig.jpg' images found below; extract skin_image_data_set-1.zip and -2.zip here")
    samples = []
    for image in originals:
        base = "_".join(image.stem.split("_")[:-1])
        siblings = {p.name.lower(): p for p in image.parent.iterdir()}
        mask = siblings.get(f"{base}_contour.png".lower())
        if mask is None:
            raise DatasetError(f"{image}: its mask {base}_contour.png is missing from {image.parent}")
        check_mask(image, mask)
        parts = [p.lower() for p in image.relative_to(root).parts]
        cls = "notmelanoma" if "notmelanoma" in parts else "melanoma" if "melanoma" in parts else "unknown"
        source = next((p for p in parts if p in {"dermis", "dermquest"}), "unknown")
        samples.append(Sample(id=f"{cls}/{source}/{base}", image=image, mask=mask,
                              groups={"diagnosis": cls, "source": source}))
    return TaskData(task=card.name, root=root, samples=samples, classes=[])
