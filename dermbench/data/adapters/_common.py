"""Helpers shared by the adapters: tolerant path lookup, label mapping, mask checks."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Sequence

from dermbench.data.sample import DatasetError, Sample

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}


def child(folder: Path, name: str) -> Optional[Path]:
    """``folder/name`` matched case-insensitively (mirrors differ in letter case)."""
    exact = folder / name
    if exact.exists():
        return exact
    if not folder.is_dir():
        return None
    low = name.lower()
    for p in folder.iterdir():
        if p.name.lower() == low:
            return p
    return None


def locate_marker(root: Path, markers: Sequence[str], depth: int = 2) -> Path:
    """The folder at or below ``root`` (up to ``depth`` levels) that holds one of ``markers``.

    Tolerates an extra top level (the zip's own folder) or a missing one.
    """
    frontier = [root]
    for _ in range(depth + 1):
        nxt = []
        for folder in frontier:
            for m in markers:
                if child(folder, m) is not None:
                    return folder
            nxt += sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        frontier = nxt
    raise DatasetError(
        f"{root}: none of {list(markers)} found here or up to {depth} folder levels below; "
        "point the data root at the folder that holds the official download"
    )


def require(path: Optional[Path], what: str, where: Path, fix: str) -> Path:
    if path is None or not path.exists():
        raise DatasetError(f"{where}: {what} not found; {fix}")
    return path


def class_index(value: str, classes: Sequence[str], file: Path, column: str, line: Optional[int] = None) -> int:
    """The index of ``value`` among the card's classes. A label that differs only in case or surrounding
    spaces (``Melanoma``, ``melanoma ``) is that class when exactly one class matches so."""
    if value in classes:
        return list(classes).index(value)
    folded = [i for i, c in enumerate(classes) if c.strip().casefold() == str(value).strip().casefold()]
    if len(folded) == 1:
        return folded[0]
    where = f"{file}:{line}" if line is not None else str(file)
    raise DatasetError(f"{where}: column {column!r} has the label {value!r}, expected one of {list(classes)}; "
                       "fix the file or map the label in the task card")


def check_no_empty_class(samples: Iterable[Sample], classes: Sequence[str], root: Path, expected: dict) -> None:
    present = {s.label for s in samples}
    for i, c in enumerate(classes):
        if i not in present:
            exp = expected.get(c)
            raise DatasetError(f"{root}: class {c!r} has no images (the release has {exp if exp is not None else 'some'}); "
                               "the download is incomplete or the wrong folder was given")


def image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as im:  # reads the header only
            return im.size
    except Exception as exc:
        raise DatasetError(f"{path}: cannot be read as an image ({type(exc).__name__}: {exc}); replace the file") from exc


def check_mask(image: Path, mask: Path) -> None:
    if image_size(image) != image_size(mask):
        raise DatasetError(f"mask {mask} is {image_size(mask)} but its image {image} is {image_size(image)}; "
                           "a mask must have the size of its image: re-extract the ground truth")


def empty_file(path: Path) -> bool:
    return path.stat().st_size == 0


def images_in(folder: Path, exclude_suffixes: Sequence[str] = ()) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not any(p.name.lower().endswith(s) for s in exclude_suffixes))

