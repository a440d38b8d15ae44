"""MED-NODE: complete_mednode_dataset/{melanoma,naevus}/*.jpg (the top folder may be missing)."""
from __future__ import annotations

from pathlib import Path

from dermbench.data.adapters import adapter
from dermbench.data.adapters._common import check_no_empty_class, child, empty_file, images_in, locate_marker
from dermbench.data.sample import Sample, TaskData

FOLDERS = {"naevus": "naevus", "melanoma": "melanoma"}  # class name -> folder (spelled 'naevus')


@adapter("mednode")
def load(root: Path, card) -> TaskData:
    root = locate_marker(root, ["melanoma", "naevus"])
    samples, skipped = [], []
    for label, cls in enumerate(card.classes):
        folder = child(root, FOLDERS[cls])
        for path in images_in(folder) if folder else []:
            if empty_file(path):
                skipped.append((str(path), "empty file"))
                continue
            samples.append(Sample(id=f"{cls}/{path.stem}", image=path, label=label, source_label=cls))
    check_no_empty_class(samples, card.classes, root, card.expected)
    return TaskData(task=card.name, root=root, samples=samples, classes=list(card.classes), skipped=skipped)
