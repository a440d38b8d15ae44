"""The record every adapter returns, whatever the dataset's layout."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional


class DatasetError(ValueError):
    """Bad or missing input data. The message names the file, what was expected and the fix."""


@dataclass
class Sample:
    """One evaluation item.

    ``id`` is stable across machines (derived from the dataset's own names, never from an
    absolute path) and unique within a task; splits and predictions refer to it.
    """

    id: str
    image: Path
    label: Optional[int] = None  # index into TaskData.classes; None for segmentation / captioning
    mask: Optional[Path] = None  # binary lesion mask (any nonzero value = lesion)
    caption: Optional[str] = None
    # Subgroup attributes for fairness analyses: 'skin_type' ('1'..'6' or 'unknown'),
    # 'sex', 'age', 'site', ... always strings.
    groups: dict[str, str] = field(default_factory=dict)
    official_split: Optional[str] = None  # 'train' | 'val' | 'test' where the dataset defines one
    source_label: Optional[str] = None  # the raw label string before mapping, for reports


@dataclass
class TaskData:
    """What an adapter read for one task."""

    task: str
    root: Path  # the dataset folder that was read
    samples: list[Sample]
    classes: list[str]  # empty for segmentation / captioning
    # Files that were found but could not be used, each with the reason. Reported in
    # `data check` and counted in every result: nothing is dropped silently.
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def labels(self) -> list[int]:
        return [s.label for s in self.samples]  # type: ignore[misc]

    def by_id(self) -> dict[str, Sample]:
        return {s.id: s for s in self.samples}
