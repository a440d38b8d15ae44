"""ACNE04: Classification/JPEGImages/levle{G}_{n}.jpg + NNEW_{trainval,test}_{fold}.txt.

The grade (0 mild .. 3 very severe) is the second field of the split files' lines
(``<file> <grade> <lesion count>``); the file name's grade must agree with it.
"""
from __future__ import annotations

from pathlib import Path

from dermbench.data.adapters import adapter
from dermbench.data.adapters._common import check_no_empty_class, child, empty_file, locate_marker
from dermbench.data.sample import DatasetError, Sample, TaskData


@adapter("acne04")
def load(root: Path, card) -> TaskData:
    root = locate_marker(root, ["JPEGImages"], depth=3)
    images = child(root, "JPEGImages")
    fold = int(card.options.get("official_fold", 0))
    entries: dict[str, tuple[int, str]] = {}
    for part, tag in ((f"NNEW_trainval_{fold}.txt", "train"), (f"NNEW_test_{fold}.txt", "test")):
        path = child(root, part)
        if path is None:
            raise DatasetError(f"{root}: split file {part} missing; it comes with Classification.tar (LDL release)")
        for n, line in enumerate(path.read_text().splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 2 or fields[1] not in {"0", "1", "2", "3"}:
                raise DatasetError(f"{path}:{n}: expected '<file> <grade 0-3> <lesion count>', got {line!r}")
            entries[fields[0]] = (int(fields[1]), tag)
    samples, skipped = [], []
    for name, (grade, tag) in sorted(entries.items()):
        path = child(images, name)
        if path is None:
            raise DatasetError(f"{images}: {name} listed in the NNEW split files is missing")
        if empty_file(path):
            skipped.append((str(path), "empty file"))
            continue
        samples.append(Sample(id=Path(name).stem, image=path, label=grade, official_split=tag, source_label=str(grade)))
    check_no_empty_class(samples, card.classes, root, card.expected)
    return TaskData(task=card.name, root=root, samples=samples, classes=list(card.classes), skipped=skipped,
                    notes=[f"official split: NNEW fold {fold}"])
