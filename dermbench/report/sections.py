"""Extra leaderboard sections beside the main tables (calibration, ranks, robustness, ...).

A section builder takes the results folder and the loaded records and returns a :class:`Section`
(or None when the store has nothing for it). ``build_leaderboard`` writes each section's markdown
as ``<name>.md``, its other files (CSV, SVG) as given, appends its HTML to ``leaderboard.html`` and
its markdown to the printed leaderboard when ``in_summary`` is set. Register a builder by adding it
to :data:`BUILDERS` (a "module:function" string, imported only when the leaderboard is built).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence


@dataclass
class Section:
    name: str                      # file stem: <name>.md
    title: str
    markdown: str
    html: str = ""
    files: list[tuple[str, bytes]] = field(default_factory=list)   # (file name, bytes): CSV, SVG, ...
    figures: list[tuple[str, bytes]] = field(default_factory=list)  # SVG figures shown on the HTML page
    in_summary: bool = False


# "module:function" of every section builder, in page order.
BUILDERS: list[str] = ["dermbench.report.calibration:build", "dermbench.report.operating_point:build",
                       "dermbench.report.ranks:build",
                       "dermbench.report.robustness:build_robustness", "dermbench.report.robustness:build_transfer",
                       "dermbench.report.robustness:build_boundary"]


def builders() -> list[Callable[[Path, Sequence[dict]], Optional[Section]]]:
    out = []
    for spec in BUILDERS:
        module, func = spec.split(":")
        out.append(getattr(importlib.import_module(module), func))
    return out


def build_sections(results_dir: Path, records: Sequence[dict]) -> list[Section]:
    sections = []
    for build in builders():
        section = build(Path(results_dir), records)
        if section is not None:
            sections.append(section)
    return sections
