"""Find each task's folder under the data root and read it through its adapter."""
from __future__ import annotations

from pathlib import Path

from dermbench.data.adapters import get_adapter
from dermbench.data.sample import DatasetError, TaskData


def find_task_root(data_root: Path, card) -> Path:
    """The first of the card's official folder names present under ``data_root`` (case-insensitive)."""
    data_root = Path(data_root)
    if not data_root.is_dir():
        raise DatasetError(f"data root {data_root} is not a folder; pass --data-root DIR or set DERMBENCH_DATA_ROOT")
    entries = {p.name.lower(): p for p in data_root.iterdir() if p.is_dir()}
    for name in card.folders:
        if name.lower() in entries:
            return entries[name.lower()]
    # the official archives extracted straight into the data root (no wrapper folder)
    if any(name.lower() in entries for name in card.unzipped):
        return data_root
    also = f", or its archives' folders {list(card.unzipped)} directly in it" if card.unzipped else ""
    if data_root.name.lower() in {name.lower() for name in card.folders}:  # the dataset's folder given as the root
        raise DatasetError(f"task {card.name}: the data root {data_root} looks like the {card.title} folder itself; the data "
                           f"root is the folder above the datasets: pass --data-root {data_root.parent}")
    raise DatasetError(f"task {card.name}: none of the folders {list(card.folders)} found in {data_root}{also}; "
                       f"download {card.title} and extract it there under one of those names")


def load_task(data_root: Path, card) -> TaskData:
    if card.adapter == "federated":
        return get_adapter("federated")(Path(data_root), card)
    return get_adapter(card.adapter)(find_task_root(data_root, card), card)
