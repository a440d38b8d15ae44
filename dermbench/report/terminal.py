"""The leaderboard as a person reads it in a terminal: one compact table per task group and protocol,
on the group's main metric, fitted to the terminal's width.

A cell is the value in percent and its marks (the legend of :mod:`dermbench.report.leaderboard`;
``*`` stands in for bold). CIs and seed spreads are left out to keep a row on one line; the full
tables (``--format md|csv|latex|html``) carry them. A table wider than the terminal first gets its
column titles abbreviated (a key under the table spells them out), then its columns wrapped into
several blocks, each repeating the model column; nothing is cut off.
"""
from __future__ import annotations

import textwrap
from typing import Optional, Sequence

from dermbench.report.labels import MAIN_METRIC, METRIC_TITLES
from dermbench.report.leaderboard import Table, _fmt

GAP = 2  # spaces between columns
MIN_TITLE = 4  # an abbreviated column title keeps at least this many characters
LEGEND = ("Values: percent, each group's main metric. * best in the column · † significantly worse than the "
          "column's best (paired bootstrap, p < 0.05, uncorrected) · ° no paired test · ‡ the weights saw the task's "
          "training images (‡? unknown) · — no result · Avg: mean over the group's datasets, complete rows. "
          "CIs, seed spreads, every metric: --format md|csv|latex|html.")


def compact_tables(tables: Sequence[Table], kinds: dict[tuple[str, str], str],
                   metrics: Optional[Sequence[str]] = None) -> list[Table]:
    """The tables the terminal shows: per (group, protocol), its table(s) on ``metrics`` if given, else on
    the kind's main metric (``kinds``: (group, protocol) -> kind; the first metric where the kind has none).
    Group tables when the (group, protocol) has them, else its per-task tables (e.g. federated settings)."""
    out = []
    for group, protocol in dict.fromkeys((t.group, t.protocol) for t in tables):
        mine = [t for t in tables if (t.group, t.protocol) == (group, protocol)]
        level = [t for t in mine if t.task is None] or mine
        if metrics is not None:
            out += [t for t in level if t.metric in metrics]
            continue
        main = MAIN_METRIC.get(kinds.get((group, protocol), ""))
        chosen = [t for t in level if t.metric == main] or [t for t in level if t.metric == level[0].metric]
        out += chosen
    return out


def cell_text(table: Table, model: str, column: str) -> str:
    """Value in percent with its marks, or — (no result)."""
    if column == "avg":
        value = table.average(model)
        if value is None:
            return "—"
        marks = "†" if table.worse(model, "avg") else "°" if table.untested(model, "avg") else ""
    else:
        cell = table.cells.get((model, column))
        value = table.value(model, column)
        if cell is None or value is None:
            return "—"
        worse = table.worse(model, column)
        marks = "†" if worse else "°" if cell.get("untested") and not table.is_best(model, column) else ""
        contaminated = cell.get("contaminated")
        marks += "‡" if contaminated is True else "‡?" if contaminated == "unknown" else ""
    best = "*" if table.is_best(model, column) else ""
    return _fmt(value) + best + marks


def _shorten(title: str, limit: int) -> str:
    """``title`` in ``limit`` characters, keeping its start and its end (Fitzpatrick17k-9 -> Fit…k-9: the
    variants of a dataset differ at the end)."""
    if len(title) <= limit:
        return title
    tail = (limit - 1) // 2
    head = limit - 1 - tail
    return title[:head].rstrip(" -_") + "…" + title[len(title) - tail:] if tail else title[:head] + "…"


def _abbreviate(titles: list[str], widths: list[int]) -> tuple[list[str], list[tuple[str, str]]]:
    """Titles shortened to their column's width (at least MIN_TITLE characters), unique; and the key."""
    short, key, seen = [], [], set()
    for title, width in zip(titles, widths):
        limit = max(width, MIN_TITLE)
        text = _shorten(title, limit)
        n = 2
        while text in seen:  # two titles alike at both ends: number them
            suffix = str(n)
            text = _shorten(title, max(limit - len(suffix), 2)) + suffix
            n += 1
        seen.add(text)
        short.append(text)
        if text != title:
            key.append((text, title))
    return short, key


def _blocks(widths: list[int], width: int, total) -> list[list[int]]:
    """Column indices per block: as few blocks as fit in ``width`` (greedily counted), then the columns
    spread evenly over them (so the last block is not a lone Avg) when that still fits."""
    greedy: list[list[int]] = [[]]
    for j, w in enumerate(widths):
        if greedy[-1] and total([widths[i] for i in greedy[-1]] + [w]) > width:
            greedy.append([])
        greedy[-1].append(j)
    n, k = len(greedy), len(widths)
    if n == 1:
        return greedy
    per = -(-k // n)
    even = [list(range(start, min(start + per, k))) for start in range(0, k, per)]
    fits = len(even) == n and all(total([widths[i] for i in b]) <= width for b in even)
    return even if fits else greedy


def render_table(table: Table, width: int) -> list[str]:
    """One table as lines no wider than ``width`` (when even one column and the model names fit)."""
    columns = list(table.tasks) + (["avg"] if table.has_average else [])
    titles = list(table.titles) + (["Avg"] if table.has_average else [])
    cells = {(m, c): cell_text(table, m, c) for m in table.models for c in columns}
    cell_widths = [max(len(cells[(m, c)]) for m in table.models) for c in columns]
    widest = max(cell_widths + [MIN_TITLE])  # the narrowest a block with one column can be
    # the model column: the names in full unless that leaves no room for one value column
    model_width = max(len("model"), *(len(m) for m in table.models))
    model_width = min(model_width, max(len("model"), width - GAP - widest))
    models = [m if len(m) <= model_width else m[: model_width - 1] + "…" for m in table.models]

    def total(ws: Sequence[int]) -> int:
        return model_width + sum(GAP + w for w in ws)

    key: list[tuple[str, str]] = []
    widths = [max(cw, len(t)) for cw, t in zip(cell_widths, titles)]
    blocks = _blocks(widths, width, total)
    overflows = any(total([widths[i] for i in b]) > width for b in blocks)  # one column too wide on its own
    if len(blocks) > 1 or overflows:
        # abbreviated titles, unless the full ones fit and need at most one block more (full titles read better)
        short, short_key = _abbreviate(titles, cell_widths)
        short_widths = [max(cw, len(t)) for cw, t in zip(cell_widths, short)]
        short_blocks = _blocks(short_widths, width, total)
        if overflows or len(short_blocks) < len(blocks) - 1:
            titles, key, widths, blocks = short, short_key, short_widths, short_blocks

    metric = METRIC_TITLES.get(table.metric, table.metric)
    lines = []
    for b, block in enumerate(blocks):
        head = table.title if metric in table.title else f"{table.title} · {metric}"
        if len(blocks) > 1:
            span = f"{block[0] + 1}" if len(block) == 1 else f"{block[0] + 1}–{block[-1] + 1}"
            head += f" (column{'s' if len(block) > 1 else ''} {span} of {len(columns)})"
        lines += textwrap.wrap(head, width=max(width, 20), break_on_hyphens=False)
        row_width = total([widths[i] for i in block])
        lines.append("model".ljust(model_width) + "".join(" " * GAP + titles[i].rjust(widths[i]) for i in block))
        lines.append("─" * row_width)
        for name, m in zip(models, table.models):
            lines.append(name.ljust(model_width) + "".join(" " * GAP + cells[(m, columns[i])].rjust(widths[i]) for i in block))
        if b < len(blocks) - 1:
            lines.append("")
    if key:
        lines += textwrap.wrap("  ".join(f"{short} = {full}" for short, full in key), width=max(width, 20),
                               initial_indent="  ", subsequent_indent="  ", break_on_hyphens=False)
    return lines


def to_terminal(tables: Sequence[Table], width: int, notes: Sequence[str] = ()) -> str:
    """The compact tables, the legend and the notes (skipped files, cells without a paired test), as text
    no wider than ``width`` wherever the model names and one column fit."""
    width = max(int(width), 20)
    out: list[str] = []
    for t in tables:
        out += render_table(t, width) + [""]
    if not tables:
        out += ["No table matches the filters.", ""]
    if notes:
        out.append("Notes:")
        for note in notes:
            out += textwrap.wrap(note, width=width, initial_indent="- ", subsequent_indent="  ", break_on_hyphens=False,
                                 break_long_words=True)
        out.append("")
    out += textwrap.wrap(LEGEND, width=width, break_on_hyphens=False)  # after the tables: they come first on screen
    return "\n".join(out).rstrip("\n") + "\n"


__all__ = ["LEGEND", "compact_tables", "cell_text", "render_table", "to_terminal"]
