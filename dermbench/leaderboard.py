"""Leaderboard tables built from the results store only.

One table per (task group, protocol, metric) as in the paper: rows are models, columns the
group's datasets plus the group average. A cell is ``value [CI low, CI high]`` in percent
(percentile 95% bootstrap CI). The best value per column is bold. A missing result is shown as
"—", and the average is given only for rows that have every dataset of the group. ‡ marks a
result on a task whose training images the backbone saw during pretraining.

With ``rebuild=True`` every metric is recomputed from the stored predictions and bootstrap
indices (nothing is taken from the JSON numbers), so the tables are reproducible from the
per-sample files alone.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from dermbench.io import atomic_write_text
from dermbench.results import iter_results, read_predictions
from dermbench.tasks import GROUPS, PAPER_ORDER

# Which metrics each kind of protocol reports in the tables (the paper's choice).
TABLE_METRICS = {
    "classification": ("auroc", "f1"),
    "segmentation": ("dice", "jaccard"),
    "caption": ("bleu4", "meteor", "cider", "rougeL"),
}
METRIC_TITLES = {"auroc": "AUROC", "f1": "F1", "dice": "Dice", "jaccard": "Jaccard", "accuracy": "Accuracy",
                 "balanced_accuracy": "Balanced accuracy", "bleu4": "BLEU-4", "meteor": "METEOR", "cider": "CIDEr",
                 "rougeL": "ROUGE-L"}
PROTOCOL_ORDER = ("retrieval", "linear", "seg-linear", "seg-upernet", "caption", "federated", "label-efficiency")


@dataclass
class Table:
    group: str
    protocol: str
    metric: str
    tasks: list[str]  # column keys
    titles: list[str]  # column titles
    models: list[str]
    cells: dict[tuple[str, str], dict]  # (model, task) -> metric record (+ 'contaminated')

    @property
    def title(self) -> str:
        return f"{self.group} · {self.protocol} · {METRIC_TITLES.get(self.metric, self.metric)}"

    def average(self, model: str) -> Optional[float]:
        values = [self.cells[(model, t)]["value"] for t in self.tasks if (model, t) in self.cells]
        if len(values) != len(self.tasks) or len(self.tasks) < 2:
            return None  # only complete rows get an average
        return float(np.mean(values))

    def best(self, column: str) -> Optional[float]:
        if column == "avg":
            values = [self.average(m) for m in self.models]
        else:
            values = [self.cells[(m, column)]["value"] for m in self.models if (m, column) in self.cells]
        values = [v for v in values if v is not None and not math.isnan(v)]
        return max(values) if values else None


def load_records(results_dir: Path, rebuild: bool = False) -> list[dict]:
    records = list(iter_results(results_dir))
    if rebuild:
        for r in records:
            r["metrics"] = recompute_metrics(Path(results_dir), r)
    return records


def recompute_metrics(results_dir: Path, record: dict) -> dict:
    """Metrics from the stored predictions and bootstrap indices alone."""
    from dermbench.evaluation import evaluate

    predictions = read_predictions(record["_path"])
    boot = np.load(results_dir / record["bootstrap"]["path"])
    if record["protocol"] in ("label-efficiency",):
        from dermbench.protocols import get_protocol

        return get_protocol(record["protocol"]).evaluate(predictions, boot)
    return evaluate(record["kind"], predictions, boot)


def build_tables(records: Sequence[dict]) -> list[Table]:
    tables = []
    order = {t: i for i, t in enumerate(PAPER_ORDER)}
    for group in GROUPS:
        in_group = [r for r in records if r["task_group"] == group]
        for protocol in sorted({r["protocol"] for r in in_group}, key=lambda p: (PROTOCOL_ORDER.index(p) if p in PROTOCOL_ORDER else 99, p)):
            rows = [r for r in in_group if r["protocol"] == protocol]
            kind = rows[0]["kind"]
            metrics = [m for m in TABLE_METRICS.get(kind, ()) if any(m in r["metrics"] for r in rows)]
            if not metrics:
                metrics = sorted({m for r in rows for m in r["metrics"]})[:4]
            tasks = sorted({r["task"] for r in rows}, key=lambda t: (order.get(t, 999), t))
            titles = {r["task"]: r.get("task_title", r["task"]) for r in rows}
            models = sorted({r["model"] for r in rows})
            for metric in metrics:
                cells = {(r["model"], r["task"]): {**r["metrics"][metric], "contaminated": r.get("contaminated", False)}
                         for r in rows if metric in r["metrics"]}
                tables.append(Table(group, protocol, metric, tasks, [titles[t] for t in tasks], models, cells))
    return tables


def _fmt(v: Optional[float]) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def _cell_text(cell: Optional[dict]) -> str:
    if cell is None:
        return "—"
    mark = " ‡" if cell.get("contaminated") else ""
    return f"{_fmt(cell['value'])} [{_fmt(cell['ci_low'])}, {_fmt(cell['ci_high'])}]{mark}"


def to_markdown(tables: Sequence[Table]) -> str:
    out = ["# Leaderboard", "",
           "Cells: value [95% percentile bootstrap CI], in percent. **Bold**: best in the column. "
           "—: no result. Avg: mean over the group's datasets, complete rows only. "
           "‡: the backbone saw this task's training images during pretraining.", ""]
    for t in tables:
        columns = t.titles + (["Avg"] if len(t.tasks) > 1 else [])
        out += [f"## {t.title}", "", "| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for m in t.models:
            cells = []
            for task in t.tasks:
                cell = t.cells.get((m, task))
                text = _cell_text(cell)
                if cell is not None and t.best(task) is not None and cell["value"] == t.best(task):
                    text = f"**{text}**"
                cells.append(text)
            if len(t.tasks) > 1:
                avg = t.average(m)
                text = _fmt(avg)
                cells.append(f"**{text}**" if avg is not None and avg == t.best("avg") else text)
            out.append(f"| {m} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def to_csv(tables: Sequence[Table]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["group", "protocol", "metric", "model", "task", "value", "ci_low", "ci_high", "std",
                     "paper_low", "paper_high", "best_in_column", "contaminated"])
    for t in tables:
        for m in t.models:
            for task in t.tasks:
                c = t.cells.get((m, task))
                if c is None:
                    writer.writerow([t.group, t.protocol, t.metric, m, task, "", "", "", "", "", "", "", ""])
                    continue
                writer.writerow([t.group, t.protocol, t.metric, m, task] +
                                [f"{c[k]:.6f}" for k in ("value", "ci_low", "ci_high", "std", "paper_low", "paper_high")] +
                                [int(c["value"] == t.best(task)), int(bool(c.get("contaminated")))])
            if len(t.tasks) > 1:
                avg = t.average(m)
                writer.writerow([t.group, t.protocol, t.metric, m, "avg", "" if avg is None else f"{avg:.6f}",
                                 "", "", "", "", "", int(avg is not None and avg == t.best("avg")), ""])
    return buf.getvalue()


def _latex_escape(text: str) -> str:
    return text.replace("\\", "\\textbackslash{}").replace("&", "\\&").replace("%", "\\%").replace("_", "\\_").replace("#", "\\#")


def to_latex(tables: Sequence[Table]) -> str:
    out = ["% dermbench leaderboard: value [95% percentile bootstrap CI] in percent; best per column in bold;",
           "% -- no result; Avg over complete rows; \\ddag: the backbone saw the task's training images."]
    for t in tables:
        columns = t.titles + (["Avg"] if len(t.tasks) > 1 else [])
        out += ["\\begin{table}[t]", "\\centering", "\\small",
                f"\\caption{{{_latex_escape(t.title)}}}",
                "\\begin{tabular}{l" + "c" * len(columns) + "}", "\\toprule",
                "Model & " + " & ".join(_latex_escape(c) for c in columns) + " \\\\", "\\midrule"]
        for m in t.models:
            cells = []
            for task in t.tasks:
                c = t.cells.get((m, task))
                text = "--" if c is None else f"{_fmt(c['value'])} [{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}]" + \
                    ("$^\\ddag$" if c.get("contaminated") else "")
                if c is not None and c["value"] == t.best(task):
                    text = f"\\textbf{{{text}}}"
                cells.append(text)
            if len(t.tasks) > 1:
                avg = t.average(m)
                text = "--" if avg is None else _fmt(avg)
                cells.append(f"\\textbf{{{text}}}" if avg is not None and avg == t.best("avg") else text)
            out.append(_latex_escape(m) + " & " + " & ".join(cells) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(out)


BEST_ATTR = ' class="best"'


def to_html(tables: Sequence[Table]) -> str:
    """One self-contained page: inline CSS, no scripts, no external requests."""
    import html

    parts = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\"><title>dermbench leaderboard</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}"
             "th,td{border:1px solid #ccc;padding:4px 8px;text-align:center}th{background:#f0f0f0}"
             "td.best{font-weight:bold;background:#eaf5ea}caption{font-weight:bold;text-align:left;padding:4px 0}</style>",
             "</head><body><h1>dermbench leaderboard</h1>",
             "<p>Cells: value [95% percentile bootstrap CI], in percent. Bold: best in the column. "
             "&mdash;: no result. Avg: mean over the group's datasets, complete rows only. "
             "&Dagger;: the backbone saw this task's training images during pretraining.</p>"]
    for t in tables:
        columns = t.titles + (["Avg"] if len(t.tasks) > 1 else [])
        parts.append(f"<table><caption>{html.escape(t.title)}</caption><tr><th>model</th>"
                     + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr>")
        for m in t.models:
            row = [f"<td>{html.escape(m)}</td>"]
            for task in t.tasks:
                c = t.cells.get((m, task))
                best = c is not None and c["value"] == t.best(task)
                row.append(f"<td{BEST_ATTR if best else ''}>{html.escape(_cell_text(c))}</td>")
            if len(t.tasks) > 1:
                avg = t.average(m)
                best = avg is not None and avg == t.best("avg")
                row.append(f"<td{BEST_ATTR if best else ''}>{_fmt(avg)}</td>")
            parts.append("<tr>" + "".join(row) + "</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def build_leaderboard(results_dir: Path, out_dir: Optional[Path] = None, formats: Sequence[str] = ("md",),
                      rebuild: bool = False) -> dict:
    """Tables from the results store; written to ``out_dir`` in ``formats`` if given. Returns markdown and paths."""
    records = load_records(Path(results_dir), rebuild=rebuild)
    if not records:
        raise FileNotFoundError(f"no results under {results_dir}; run `dermbench run ...` first")
    tables = build_tables(records)
    markdown = to_markdown(tables)
    paths = []
    if out_dir is not None:
        writers = {"md": ("leaderboard.md", lambda: markdown), "csv": ("leaderboard.csv", lambda: to_csv(tables)),
                   "latex": ("leaderboard.tex", lambda: to_latex(tables)), "html": ("leaderboard.html", lambda: to_html(tables))}
        unknown = [f for f in formats if f not in writers]
        if unknown:
            raise ValueError(f"unknown leaderboard format(s) {unknown}; available: {', '.join(writers)}")
        for fmt in formats:
            name, render = writers[fmt]
            path = Path(out_dir) / name
            atomic_write_text(path, render())
            paths.append(path)
    return {"markdown": markdown, "tables": tables, "paths": paths}
