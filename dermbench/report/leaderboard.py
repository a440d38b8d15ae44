"""Leaderboard tables and figures built from the results store only.

Tables, as in the paper: one per (task group, protocol, metric), rows models, columns the group's
datasets plus the group average (AUROC and F1 for retrieval / linear / label-efficiency, Dice and
Jaccard for segmentation, caption metrics, the federated task); and for protocols whose metrics
are per setting (``auroc@0.2`` for label efficiency) one table per task with a column per setting.

A cell is ``value [CI low, CI high]`` in percent (percentile 95% bootstrap CI). **Bold**: the best
value in the column. †: significantly worse than the column's best by the two-sided paired bootstrap
(:func:`dermbench.stats.paired.paired_bootstrap_test`) on the shared resamples, p < 0.05, uncorrected
(use ``dermbench compare`` for Holm-corrected claims). °: no paired test against the best could be
computed (no per-sample replicates, e.g. captions): it says nothing about significance. ‡: the
backbone's weights saw the task's training images during pretraining; ‡?: a weights file of unknown
origin (whether it saw them is unknown). "—": no result. Avg: mean over the group's datasets,
complete rows only (its replicates are the mean of the datasets' replicates, so it gets a † too).
Results trained with several head seeds show the spread over seeds: ``(sd x, k seeds)``.

Records: one result per (model, task, protocol), chosen by
:func:`dermbench.run.identity.select_results` (filters, then the paper's defaults); results of one
(task, protocol) on different splits or different shared resamples are refused
(:func:`dermbench.run.identity.check_same_test_set`), since the marks need paired results.

The CSV carries every number: the percentile CI, the bootstrap sd, the paper's μ and v and its
interval μ ± v (labelled ``paper_mu_minus_v`` / ``paper_mu_plus_v``: a variance added to a mean,
reported for comparison with the paper only), the p-value against the column's best.

With ``rebuild=True`` every metric is recomputed from the stored predictions and bootstrap indices
(nothing is taken from the JSON numbers); significance, fairness and figures always come from
the predictions. Output is byte-for-byte reproducible: building twice, or rebuilding, writes the
same files.
"""
from __future__ import annotations

import csv
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from dermbench.io import atomic_write_bytes
from dermbench.run.identity import SELECTION_RULE, Selection, check_same_test_set, select_results
from dermbench.run.results import MissingResultFile, ModifiedResultFile, SkippedFile, iter_results
from dermbench.report.store_memo import memoised, read_bootstrap, read_predictions, reading_once
from dermbench.data.tasks import GROUPS, PAPER_ORDER

from dermbench.report.labels import MAIN_METRIC, METRIC_TITLES, PROTOCOL_ORDER, TABLE_METRICS  # noqa: F401

HEATMAP_PROTOCOLS = ("retrieval", "linear", "seg-linear", "seg-upernet")
# The paper's fairness figure (Fig. 6a): Fitzpatrick17k-3 by skin type, Derm7pt by sex. Tables cover every subgroup column.
FAIRNESS_FIGURES = (("fitzpatrick17k-3", "skin_type"), ("derm7pt", "sex"))
FAIRNESS_METRICS = ("auroc", "dice")
ALPHA = 0.05

LEGEND = ("Cells: value [95% percentile bootstrap CI], in percent. **Bold**: best in the column. "
          "†: significantly worse than the column's best (two-sided paired bootstrap on the shared resamples, "
          "p < 0.05, not corrected for multiple comparisons; `dermbench compare` gives Holm-corrected tests). "
          "°: no paired test against the column's best could be computed (no per-sample replicates): "
          "not a statement of no difference. "
          "—: no result. Avg: mean over the group's datasets, complete rows only, with the bootstrap CI of the mean. "
          "‡: the backbone's weights saw this task's training images during pretraining; ‡?: weights of unknown "
          "origin (a weights file), whether they saw them is unknown. "
          "(sd x, k seeds): standard deviation of the value over k head seeds on the same split. "
          "Label efficiency: mean over repeats; the group tables show the largest training fraction. "
          "Results shown: " + SELECTION_RULE)


@dataclass
class Table:
    group: str
    protocol: str
    metric: str
    tasks: list[str]  # column keys: task names, or metric keys (auroc@0.2) for a per-task table
    titles: list[str]  # column titles
    models: list[str]
    cells: dict[tuple[str, str], dict]  # (model, column) -> metric record (+ contaminated, p_vs_best)
    task: Optional[str] = None  # per-task tables (one column per setting, e.g. training fraction)
    task_title: str = ""
    avg_p: dict[str, float] = field(default_factory=dict)  # model -> p of its average against the best average
    # model -> percentile 95% CI of its average: the per-task replicates averaged replicate by replicate
    # (each task's resamples are drawn independently, so this is the bootstrap of the mean over tasks)
    avg_ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    tested: bool = False  # paired tests against the best were attempted (a results folder was given)

    @property
    def title(self) -> str:
        metric = METRIC_TITLES.get(self.metric, self.metric)
        if self.task is not None:
            by = "training fraction" if self.protocol == "label-efficiency" else "setting"
            return f"{self.task_title or self.task} · {self.protocol} · {metric} by {by}"
        suffix = " (largest training fraction)" if self.protocol == "label-efficiency" else ""
        return f"{self.group} · {self.protocol} · {metric}{suffix}"

    @property
    def has_average(self) -> bool:
        return self.task is None and len(self.tasks) > 1

    def value(self, model: str, column: str) -> Optional[float]:
        if column == "avg":
            return self.average(model)
        cell = self.cells.get((model, column))
        if cell is None or cell["value"] is None or math.isnan(cell["value"]):
            return None
        return float(cell["value"])

    def average(self, model: str) -> Optional[float]:
        if not self.has_average:
            return None
        values = [self.value(model, t) for t in self.tasks]
        if any(v is None for v in values):
            return None  # only complete rows get an average
        return float(np.mean(values))

    def best(self, column: str) -> Optional[float]:
        values = [self.value(m, column) for m in self.models]
        values = [v for v in values if v is not None]
        return max(values) if values else None

    def is_best(self, model: str, column: str) -> bool:
        v = self.value(model, column)
        return v is not None and v == self.best(column)

    def p_vs_best(self, model: str, column: str) -> Optional[float]:
        if column == "avg":
            return self.avg_p.get(model)
        return (self.cells.get((model, column)) or {}).get("p_vs_best")

    def untested(self, model: str, column: str) -> bool:
        """A value that is not the best and has no paired test against the best (shown with °)."""
        if column == "avg":
            p = self.avg_p.get(model)
            return (self.tested and self.average(model) is not None and not self.is_best(model, "avg")
                    and (p is None or math.isnan(p)))
        return bool((self.cells.get((model, column)) or {}).get("untested")) and not self.is_best(model, column)

    def worse(self, model: str, column: str) -> bool:
        p = self.p_vs_best(model, column)
        return p is not None and not math.isnan(p) and p < ALPHA and not self.is_best(model, column)


# ---------------------------------------------------------------------------------------------
# Records, metrics, replicates
# ---------------------------------------------------------------------------------------------
def load_records(results_dir: Path, rebuild: bool = False, selection: Optional[Selection] = None,
                 skipped: Optional[list[SkippedFile]] = None) -> list[dict]:
    """One record per (model, task, protocol) by the selection rule, each with its ``seed_spread``
    (per metric: sd over the head seeds of otherwise identical results); refuses results of one
    (task, protocol) on different test sets or resamples. JSONs that are not readable results are
    left out: appended to ``skipped`` if given, else warned about on stderr."""
    records = select_records(list(iter_results(results_dir, skipped)), selection)
    if rebuild:
        for r in records:
            r["metrics"] = recompute_metrics(Path(results_dir), r)
    return records


def select_records(records: Sequence[dict], selection: Optional[Selection] = None) -> list[dict]:
    picked = select_results(records, selection)
    out = []
    for _, p in sorted(picked.items()):
        record = dict(p.record)
        if len(p.seed_records) > 1:
            spread = {}
            for name in record.get("metrics") or {}:
                values = [float(r["metrics"][name]["value"]) for r in p.seed_records
                          if name in (r.get("metrics") or {}) and r["metrics"][name].get("value") is not None]
                values = [v for v in values if math.isfinite(v)]
                if len(values) > 1:
                    spread[name] = {"sd": float(np.std(values, ddof=1)), "mean": float(np.mean(values)), "n": len(values)}
            record["seed_spread"] = spread
            record["seeds"] = [int((r.get("identity") or {}).get("head_seed", r.get("seed", 0))) for r in p.seed_records]
        out.append(record)
    by_column: dict[tuple[str, str], list[dict]] = {}
    for r in out:
        by_column.setdefault((r["task"], r["protocol"]), []).append(r)
    for (task, protocol), rows in sorted(by_column.items()):
        check_same_test_set(rows, f"leaderboard column {task} · {protocol}")
    return out


def recompute_metrics(results_dir: Path, record: dict) -> dict:
    """Metrics from the stored predictions and bootstrap indices alone."""
    from dermbench.stats.evaluation import evaluate_result
    from dermbench.protocols import get_protocol

    predictions = read_predictions(record["_path"])
    boot = read_bootstrap(Path(results_dir), record)  # a missing file stops the rebuild, naming the fix
    return evaluate_result(get_protocol(record["protocol"]), record["kind"], predictions, boot)


class ReplicateStore:
    """Bootstrap replicates of each stored result's metrics, computed once from its predictions and
    its shared resample file. None where a result has no per-sample replicates (captions, federated).
    Within one leaderboard build every store shares the replicates (:mod:`dermbench.report.store_memo`):
    the main tables compute them, the ranks section reuses them.

    A result that has per-sample replicates but whose predictions or bootstrap file is missing: with
    ``allow_missing=False`` (the leaderboard's default) :class:`MissingResultFile` is raised, naming the
    file and the fix, so a deleted file cannot silently turn † marks into °; with ``allow_missing=True``
    the result has no replicates (its cells get °) and the file is listed in ``missing``."""

    def __init__(self, results_dir: Path, allow_missing: bool = True):
        self.results_dir = Path(results_dir)
        self.allow_missing = allow_missing
        self.missing: list[Union[MissingResultFile, ModifiedResultFile]] = []
        self._cache: dict[str, Optional[dict[str, np.ndarray]]] = {}

    def get(self, record: dict) -> Optional[dict[str, np.ndarray]]:
        key = record["_path"]
        if key not in self._cache:
            self._cache[key] = self._compute(record)
        return self._cache[key]

    def _compute(self, record: dict) -> Optional[dict[str, np.ndarray]]:
        hook = _metric_replicates_hook(record.get("protocol"))
        if record.get("protocol") != "label-efficiency" and hook is None \
                and record.get("kind") not in ("classification", "segmentation"):
            return None  # no per-sample replicates whatever the files hold (captions, federated)
        try:
            return memoised("replicates", self.results_dir, record,
                            lambda: _result_replicates(self.results_dir, record, hook))
        except (MissingResultFile, ModifiedResultFile) as exc:
            if not self.allow_missing:
                raise
            if all(str(m.path) != str(exc.path) for m in self.missing):
                self.missing.append(exc)
            return None


def _result_replicates(results_dir: Path, record: dict, hook) -> Optional[dict[str, np.ndarray]]:
    """{metric: replicates [B]} of one result from its predictions and shared resamples (see ReplicateStore)."""
    from dermbench.stats.evaluation import replicates

    try:
        predictions = read_predictions(record["_path"])
        idx = read_bootstrap(results_dir, record)
    except (MissingResultFile, ModifiedResultFile):
        raise  # the store is incomplete: ReplicateStore stops or notes it
    except (OSError, ValueError, KeyError):
        return None  # unreadable: no replicates (its cells get °)
    if record.get("protocol") == "label-efficiency":
        from dermbench.protocols.label_efficiency import fraction_replicates

        return {k: v["replicates"] for k, v in fraction_replicates(predictions, idx).items()}
    if hook is not None:  # several prediction blocks per test image (robustness, transfer)
        return {k: reps for k, (_value, reps) in hook(predictions, idx).items()}
    if record.get("kind") not in ("classification", "segmentation") or predictions["sample_id"].duplicated().any():
        return None
    if idx.shape[1] != len(predictions):
        return None
    return replicates(record["kind"], predictions, idx)


def _metric_replicates_hook(protocol: Optional[str]):
    """A protocol's own ``metric_replicates(predictions, idx) -> {name: (value, replicates)}``, if it has one."""
    from dermbench.protocols import get_protocol, names

    return getattr(get_protocol(protocol), "metric_replicates", None) if protocol in names() else None


def _paired_test() -> Optional[Callable[..., dict]]:
    try:
        from dermbench.stats.paired import paired_bootstrap_test
    except ImportError:  # the comparison module is not part of this installation
        return None
    return paired_bootstrap_test


def _paired(a: dict, b: dict) -> bool:
    """Same test set and the same stored resamples: replicate b of one is comparable with replicate b of the other."""
    return (a.get("split_sha256") == b.get("split_sha256")
            and (a.get("bootstrap") or {}).get("sha256") == (b.get("bootstrap") or {}).get("sha256"))


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------
def _metric_key_parts(name: str) -> tuple[str, Optional[str]]:
    return tuple(name.split("@", 1)) if "@" in name else (name, None)  # type: ignore[return-value]


def _setting_title(protocol: str, suffix: str) -> str:
    if protocol == "label-efficiency":
        try:
            return f"{100 * float(suffix):g}%"
        except ValueError:
            pass
    return suffix


def _setting_order(suffix: str) -> tuple:
    """Numeric settings (training fractions) by value; federated settings: sites, centralised, local, differences."""
    try:
        return (0, float(suffix), suffix)
    except ValueError:
        pass
    head = suffix.split("/", 1)[0]
    rank = 4 if head.startswith("federated-") else 3 if head == "local" else 2 if head == "centralised" else 1
    return (rank, float(suffix.count("/")), suffix)


def _cell_record(record: dict, metric: str) -> dict:
    spread = (record.get("seed_spread") or {}).get(metric) or {}
    return {**record["metrics"][metric], "contaminated": record.get("contaminated", False),
            "seed_sd": spread.get("sd"), "n_seeds": spread.get("n")}


def build_tables(records: Sequence[dict], results_dir: Optional[Path] = None,
                 replicates: Optional[ReplicateStore] = None) -> list[Table]:
    """All tables; with ``results_dir`` each cell also gets its paired-bootstrap p against the column's best
    (from ``replicates``; default: a store that stops on a missing predictions or bootstrap file)."""
    tables = []
    order = {t: i for i, t in enumerate(PAPER_ORDER)}
    sources: dict[int, dict[tuple[str, str], tuple[dict, str]]] = {}  # id(table) -> (model, column) -> (record, metric key)
    for group in GROUPS:
        in_group = [r for r in records if r["task_group"] == group]
        protocols = sorted({r["protocol"] for r in in_group},
                           key=lambda p: (PROTOCOL_ORDER.index(p) if p in PROTOCOL_ORDER else 99, p))
        for protocol in protocols:
            rows = [r for r in in_group if r["protocol"] == protocol]
            kind = rows[0]["kind"]
            plain = sorted({m for r in rows for m in r["metrics"] if "@" not in m})
            metrics = [m for m in TABLE_METRICS.get(kind, ()) if m in plain] or plain[:4]
            tasks = sorted({r["task"] for r in rows}, key=lambda t: (order.get(t, 999), t))
            titles = {r["task"]: r.get("task_title", r["task"]) for r in rows}
            models = sorted({r["model"] for r in rows})
            for metric in metrics:
                cells, src = {}, {}
                for r in rows:
                    if metric in r["metrics"]:
                        cells[(r["model"], r["task"])] = _cell_record(r, metric)
                        src[(r["model"], r["task"])] = (r, metric)
                t = Table(group, protocol, metric, tasks, [titles[x] for x in tasks], models, cells)
                tables.append(t)
                sources[id(t)] = src
            # per-task tables for metrics with a setting: auroc@0.2 ... (label efficiency), one column per setting
            for task in tasks:
                task_rows = [r for r in rows if r["task"] == task]
                keyed = {m for r in task_rows for m in r["metrics"] if "@" in m}
                if not keyed or protocol == "robustness":  # corruption x severity: its own section (report/robustness.py)
                    continue
                for metric in metrics:
                    columns = sorted({k for k in keyed if _metric_key_parts(k)[0] == metric},
                                     key=lambda k: _setting_order(_metric_key_parts(k)[1] or ""))
                    if not columns:
                        continue
                    cells, src = {}, {}
                    for r in task_rows:
                        for k in columns:
                            if k in r["metrics"]:
                                cells[(r["model"], k)] = _cell_record(r, k)
                                src[(r["model"], k)] = (r, k)
                    t = Table(group, protocol, metric, columns,
                              [_setting_title(protocol, _metric_key_parts(k)[1] or k) for k in columns],
                              sorted({r["model"] for r in task_rows}), cells, task=task, task_title=titles[task])
                    tables.append(t)
                    sources[id(t)] = src
    if results_dir is not None:
        test = _paired_test()
        if test is not None:
            store = replicates if replicates is not None else ReplicateStore(Path(results_dir), allow_missing=False)
            for t in tables:
                _add_replicate_statistics(t, sources[id(t)], store, test)
    return tables


def _add_replicate_statistics(table: Table, src: dict[tuple[str, str], tuple[dict, str]], store: ReplicateStore,
                      test: Callable[..., dict]) -> None:
    """From each cell's bootstrap replicates: its paired p against the column's best (the † marks), and
    for the Avg column the same test plus the Avg's own CI (replicates averaged over the datasets)."""

    def reps(model: str, column: str) -> Optional[np.ndarray]:
        if (model, column) not in src:
            return None
        record, key = src[(model, column)]
        all_reps = store.get(record)
        return None if all_reps is None or key not in all_reps else np.asarray(all_reps[key], dtype=np.float64)

    table.tested = True
    for column in table.tasks:
        best_models = [m for m in table.models if table.is_best(m, column)]
        if not best_models:
            continue
        ref = best_models[0]
        ref_reps: Optional[np.ndarray] = None
        for m in table.models:
            if (m, column) not in table.cells:
                continue
            if m in best_models:
                table.cells[(m, column)]["p_vs_best"] = None
                continue
            # read only when a test needs it: a lone model's missing bootstrap file stops nothing
            ref_reps = reps(ref, column) if ref_reps is None else ref_reps
            mine = reps(m, column)
            value = table.value(m, column)
            if mine is None or ref_reps is None or value is None or mine.shape != ref_reps.shape \
                    or not _paired(src[(m, column)][0], src[(ref, column)][0]):
                # its own mark (°): an untested cell must not read as "not significantly worse"
                table.cells[(m, column)]["untested"] = value is not None
                continue
            p = float(test(mine, ref_reps, value - table.best(column))["p"])
            table.cells[(m, column)]["p_vs_best"] = p
            table.cells[(m, column)]["untested"] = math.isnan(p)
    if not table.has_average:
        return

    def avg_reps(model: str) -> Optional[np.ndarray]:
        parts = [reps(model, t) for t in table.tasks]
        if any(p is None for p in parts) or len({p.shape for p in parts}) != 1:
            return None
        return np.mean(np.stack(parts), axis=0)

    for m in table.models:
        mine = avg_reps(m) if table.average(m) is not None else None
        valid = mine[np.isfinite(mine)] if mine is not None else None
        if valid is not None and valid.size:
            table.avg_ci[m] = (float(np.percentile(valid, 100 * ALPHA / 2)), float(np.percentile(valid, 100 * (1 - ALPHA / 2))))
    best_models = [m for m in table.models if table.is_best(m, "avg")]
    if not best_models:
        return
    ref_reps = avg_reps(best_models[0])
    for m in table.models:
        avg = table.average(m)
        if avg is None or m in best_models or ref_reps is None:
            continue
        mine = avg_reps(m)
        if mine is None or any(not _paired(src[(m, t)][0], src[(best_models[0], t)][0]) for t in table.tasks):
            continue
        table.avg_p[m] = float(test(mine, ref_reps, avg - table.best("avg"))["p"])


# ---------------------------------------------------------------------------------------------
# Text formats
# ---------------------------------------------------------------------------------------------
def _fmt(v: Optional[float]) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def _cell_text(cell: Optional[dict], dagger: str = " †", ddag: str = " ‡", worse: bool = False,
               untested_mark: str = " °") -> str:
    if cell is None or cell.get("value") is None or math.isnan(cell["value"]):
        return "—"
    contaminated = cell.get("contaminated")
    marks = (dagger if worse else "") + (untested_mark if cell.get("untested") and not worse else "")
    marks += ddag if contaminated is True else (ddag + "?") if contaminated == "unknown" else ""
    spread = ""
    if cell.get("n_seeds"):
        spread = f" (sd {_fmt(cell['seed_sd'])}, {int(cell['n_seeds'])} seeds)"
    return f"{_fmt(cell['value'])} [{_fmt(cell['ci_low'])}, {_fmt(cell['ci_high'])}]{spread}{marks}"


def _avg_text(t: Table, model: str, dagger: str = " †", untested_mark: str = " °") -> str:
    avg = t.average(model)
    if avg is None:
        return "—"
    ci = t.avg_ci.get(model)
    marks = dagger if t.worse(model, "avg") else untested_mark if t.untested(model, "avg") else ""
    return _fmt(avg) + (f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "") + marks


def _columns(t: Table) -> list[str]:
    return t.titles + (["Avg"] if t.has_average else [])


def to_markdown(tables: Sequence[Table], figures: Sequence[str] = ()) -> str:
    out = ["# Leaderboard", "", LEGEND, ""]
    for t in tables:
        columns = _columns(t)
        out += [f"## {t.title}", "", "| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for m in t.models:
            cells = []
            for task in t.tasks:
                text = _cell_text(t.cells.get((m, task)), worse=t.worse(m, task))
                cells.append(f"**{text}**" if t.is_best(m, task) else text)
            if t.has_average:
                text = _avg_text(t, m)
                cells.append(f"**{text}**" if t.is_best(m, "avg") else text)
            out.append(f"| {m} | " + " | ".join(cells) + " |")
        out.append("")
    if figures:
        out += ["## Figures", ""] + [f"![{name}]({name})" for name in figures] + [""]
    return "\n".join(out)


CSV_COLUMNS = ["group", "protocol", "metric", "table_task", "column", "model", "task", "value", "ci_low", "ci_high",
               "std", "n_boot_valid", "paper_mu", "paper_v", "paper_mu_minus_v", "paper_mu_plus_v", "repeat_std",
               "best_in_column", "p_vs_best", "worse_than_best", "contaminated", "untested", "seed_sd", "n_seeds"]


def _num(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{float(v):.6f}"


def _contamination_text(value: Any) -> str:
    return "unknown" if value == "unknown" else str(int(bool(value)))


def to_csv(tables: Sequence[Table]) -> str:
    """Long format, one row per (table, model, column). ``ci_low``/``ci_high``: percentile 95% bootstrap CI;
    ``paper_mu_minus_v``/``paper_mu_plus_v``: the paper's μ ± v (v = bootstrap variance), for comparison only."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for t in tables:
        head = [t.group, t.protocol, t.metric, t.task or ""]
        for m in t.models:
            for col, title in zip(t.tasks, t.titles):
                task = t.task or col
                c = t.cells.get((m, col))
                if c is None:
                    writer.writerow(head + [col, m, task] + [""] * (len(CSV_COLUMNS) - 7))
                    continue
                mu = c.get("boot_mean")
                v = None if mu is None or c.get("paper_high") is None else c["paper_high"] - mu
                writer.writerow(head + [col, m, task, _num(c["value"]), _num(c.get("ci_low")), _num(c.get("ci_high")),
                                        _num(c.get("std")), c.get("n_boot_valid", ""), _num(mu), _num(v),
                                        _num(c.get("paper_low")), _num(c.get("paper_high")), _num(c.get("repeat_std")),
                                        int(t.is_best(m, col)), _num(t.p_vs_best(m, col)), int(t.worse(m, col)),
                                        _contamination_text(c.get("contaminated")), int(t.untested(m, col)),
                                        _num(c.get("seed_sd")), c.get("n_seeds") or ""])
            if t.has_average:
                avg, ci = t.average(m), t.avg_ci.get(m, (None, None))
                writer.writerow(head + ["avg", m, "avg", _num(avg), _num(ci[0]), _num(ci[1])] + [""] * 8 +
                                [int(t.is_best(m, "avg")), _num(t.p_vs_best(m, "avg")), int(t.worse(m, "avg")), "",
                                 int(t.untested(m, "avg")), "", ""])
    return buf.getvalue()


def _latex_escape(text: str) -> str:
    return (text.replace("\\", "\\textbackslash{}").replace("&", "\\&").replace("%", "\\%").replace("_", "\\_")
            .replace("#", "\\#").replace("·", "$\\cdot$").replace("—", "--"))


def to_latex(tables: Sequence[Table]) -> str:
    out = ["% dermbench leaderboard: value [95% percentile bootstrap CI] in percent; best per column in bold;",
           "% $^\\dagger$ significantly worse than the column's best (paired bootstrap, p < 0.05, uncorrected);",
           "% $^\\circ$ no paired test could be computed; -- no result; Avg over complete rows;",
           "% $^\\ddag$ the weights saw the task's training images ($^\\ddag$? weights of unknown origin).",
           "% Needs \\usepackage{booktabs}."]
    for t in tables:
        columns = _columns(t)
        out += ["\\begin{table}[t]", "\\centering", "\\small",
                f"\\caption{{{_latex_escape(t.title)}}}",
                "\\begin{tabular}{l" + "c" * len(columns) + "}", "\\toprule",
                "Model & " + " & ".join(_latex_escape(c) for c in columns) + " \\\\", "\\midrule"]
        for m in t.models:
            cells = []
            for task in t.tasks:
                text = _cell_text(t.cells.get((m, task)), dagger="$^\\dagger$", ddag="$^\\ddag$", worse=t.worse(m, task),
                                  untested_mark="$^\\circ$")
                text = "--" if text == "—" else text
                cells.append(f"\\textbf{{{text}}}" if t.is_best(m, task) else text)
            if t.has_average:
                text = _avg_text(t, m, dagger="$^\\dagger$", untested_mark="$^\\circ$").replace("—", "--")
                cells.append(f"\\textbf{{{text}}}" if t.is_best(m, "avg") else text)
            out.append(_latex_escape(m) + " & " + " & ".join(cells) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(out)




def _html_legend() -> str:
    text = html.escape(LEGEND).replace("**Bold**", "<b>Bold</b>").replace("`dermbench compare`",
                                                                          "<code>dermbench compare</code>")
    return f"<p>{text}</p>"


def to_html(tables: Sequence[Table], figures: Sequence[tuple[str, bytes]] = (), fairness_html: str = "",
            sections_html: str = "", kinds: Optional[dict[tuple[str, str], str]] = None) -> str:
    """The interactive self-contained page of :mod:`dermbench.report.html` (inline CSS and script, SVG data URIs)."""
    from dermbench.report.html import render_leaderboard

    return render_leaderboard(tables, figures, fairness_html, sections_html, _html_legend(), kinds)


def fairness_to_html(df, markdown: Optional[str] = None) -> str:
    """The fairness tables of :func:`dermbench.report.fairness.format_fairness` as HTML (``markdown``: that
    function's text of ``df`` when the caller has it already)."""
    from dermbench.report.fairness import format_fairness

    if df is None or df.empty:
        return ""
    metric = df.attrs.get("metric") or df["metric"].iloc[0]
    out = [f"<h2>Fairness: {html.escape(METRIC_TITLES.get(metric, metric))} by subgroup</h2>"]
    lines = (format_fairness(df) if markdown is None else markdown).split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            out.append(f"<h3>{html.escape(line[3:])}</h3>")
        elif line.startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header = [c.strip() for c in line.strip("|").split("|")]
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("| "):
                rows.append([c.strip() for c in lines[i].strip("|").split("|")])
                i += 1
            out.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" +
                       "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows) +
                       "</table>")
            continue
        elif line.startswith("- "):
            out.append(f"<p>{html.escape(line)}</p>")
        elif line.strip() and not line.startswith("Notes"):
            out.append(f"<p>{html.escape(line)}</p>")
        i += 1
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------
def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in name)


def build_figures(records: Sequence[dict], tables: Sequence[Table], fairness_df=None) -> list[tuple[str, bytes]]:
    """(file name, SVG bytes) of every leaderboard figure, in a fixed order."""
    from dermbench.report import figures as F

    out: list[tuple[str, bytes]] = []
    order = {t: i for i, t in enumerate(PAPER_ORDER)}
    # cross-task heatmaps (Fig. 5d): models × tasks, each task's main metric
    for protocol in HEATMAP_PROTOCOLS:
        rows = [r for r in records if r["protocol"] == protocol]
        if not rows:
            continue
        tasks = sorted({r["task"] for r in rows}, key=lambda t: (order.get(t, 999), t))
        titles = {r["task"]: r.get("task_title", r["task"]) for r in rows}
        models = sorted({r["model"] for r in rows})
        values, metric_names = {}, set()
        for r in rows:
            main = r.get("main_metric") if r.get("main_metric") in r["metrics"] else MAIN_METRIC.get(r["kind"])
            if main in r["metrics"]:
                values[(r["model"], r["task"])] = r["metrics"][main]["value"]
                metric_names.add(METRIC_TITLES.get(main, main))
        metric_title = " / ".join(sorted(metric_names)) or "main metric"
        out.append((f"fig_heatmap_{_safe(protocol)}.svg",
                    F.heatmap_svg(f"{protocol} · {metric_title}", models, tasks, [titles[t] for t in tasks], values,
                                  metric_title)))
    # bars with CI whiskers per task group, main metric of the kind
    for t in tables:
        if t.task is not None or t.metric != MAIN_METRIC.get(_kind_of(records, t), t.metric):
            continue
        cells = {k: (c["value"], c.get("ci_low", math.nan), c.get("ci_high", math.nan)) for k, c in t.cells.items()}
        name = f"fig_bars_{_safe(t.group)}_{_safe(t.protocol)}_{_safe(t.metric)}.svg"
        out.append((name, F.bars_svg(t.title, t.models, t.tasks, t.titles, cells, METRIC_TITLES.get(t.metric, t.metric))))
    # fairness (Fig. 6a)
    if fairness_df is not None and not fairness_df.empty:
        subs = fairness_df[fairness_df["row"] == "subgroup"]
        for task, attribute in FAIRNESS_FIGURES:
            part = subs[(subs["task"] == task) & (subs["attribute"] == attribute)]
            if part.empty:
                continue
            protocols = list(dict.fromkeys(part["protocol"]))
            protocol = "linear" if "linear" in protocols else protocols[0]
            part = part[part["protocol"] == protocol]
            groups = list(dict.fromkeys(part["subgroup"]))
            labels = [f"{part[part['subgroup'] == g]['label'].iloc[0]}\nn={int(part[part['subgroup'] == g]['n'].iloc[0])}"
                      for g in groups]
            cells = {(r.model, r.subgroup): (r.value, r.ci_low, r.ci_high) for r in part.itertuples()}
            metric = part["metric"].iloc[0]
            title = f"{task} · {protocol} · {METRIC_TITLES.get(metric, metric)} by {attribute.replace('_', ' ')}"
            out.append((f"fig_fairness_{_safe(task)}_{_safe(protocol)}_{_safe(attribute)}.svg",
                        F.fairness_svg(title, sorted(set(part["model"])), groups, labels, cells,
                                       METRIC_TITLES.get(metric, metric))))
    # label efficiency (Fig. 6c): one panel per task, main metric
    le = [r for r in records if r["protocol"] == "label-efficiency"]
    if le:
        from dermbench.protocols.label_efficiency import split_metric_name

        tasks = sorted({r["task"] for r in le}, key=lambda t: (order.get(t, 999), t))
        panels = []
        for task in tasks:
            series: dict[str, dict[float, tuple[float, float, float]]] = {}
            fractions: set[float] = set()
            for r in le:
                if r["task"] != task:
                    continue
                for name, m in r["metrics"].items():
                    base, f = split_metric_name(name)
                    if base == "auroc" and f is not None:
                        series.setdefault(r["model"], {})[f] = (m["value"], m.get("ci_low", math.nan), m.get("ci_high", math.nan))
                        fractions.add(f)
            title = next(r.get("task_title", task) for r in le if r["task"] == task)
            panels.append((title, sorted(fractions), series))
        out.append(("fig_label_efficiency_auroc.svg",
                    F.label_efficiency_svg("label efficiency · AUROC (mean over repeats, 95% bootstrap band)", panels,
                                           sorted({r["model"] for r in le}), "AUROC")))
    return out


def _kind_of(records: Sequence[dict], t: Table) -> str:
    return next((r["kind"] for r in records if r["task_group"] == t.group and r["protocol"] == t.protocol), "")


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------
class FilterError(ValueError):
    """A --task/--protocol/--metric value the results store has nothing for (the message names the option)."""


def _plain_metrics(records: Sequence[dict]) -> list[str]:
    return sorted({_metric_key_parts(m)[0] for r in records for m in r.get("metrics") or {}})


def filter_records(records: Sequence[dict], tasks: Optional[Sequence[str]] = None,
                   protocols: Optional[Sequence[str]] = None, metrics: Optional[Sequence[str]] = None) -> list[dict]:
    """The records of the given tasks (task names or group names) and protocols, each value checked against
    what the records hold (:class:`FilterError` listing what there is); ``metrics`` is only checked here
    (it selects tables, not records)."""
    from dermbench.data.tasks import CLASSIFICATION_GROUPS

    if tasks:  # the names `run --task` takes for several groups at once
        tasks = [g for t in tasks for g in (CLASSIFICATION_GROUPS if t == "classification" else GROUPS if t == "all" else (t,))]
        tasks = [t for t in tasks if t not in GROUPS or any(r["task_group"] == t for r in records)] or tasks
    present_tasks = sorted({r["task"] for r in records}, key=lambda t: (PAPER_ORDER.index(t) if t in PAPER_ORDER else 999, t))
    present_groups = [g for g in GROUPS if any(r["task_group"] == g for r in records)]
    present_protocols = sorted({r["protocol"] for r in records},
                               key=lambda p: (PROTOCOL_ORDER.index(p) if p in PROTOCOL_ORDER else 99, p))
    for option, given, there in (("--task", tasks, present_tasks + present_groups), ("--protocol", protocols, present_protocols),
                                 ("--metric", metrics, _plain_metrics(records))):
        unknown = [v for v in given or () if v not in there]
        if unknown:
            what = ("tasks: " + ", ".join(present_tasks) + "; groups: " + ", ".join(present_groups)) if option == "--task" \
                else ", ".join(there)
            raise FilterError(f"{option} {','.join(unknown)}: not in the results folder; it has {what}")
    out = [r for r in records
           if (not tasks or r["task"] in tasks or r["task_group"] in tasks) and (not protocols or r["protocol"] in protocols)]
    if metrics:
        out = [r for r in out if any(_metric_key_parts(m)[0] in metrics for m in r.get("metrics") or {})]
    if not out:
        raise FilterError(f"no result matches --task {','.join(tasks or ['(any)'])} --protocol "
                          f"{','.join(protocols or ['(any)'])} --metric {','.join(metrics or ['(any)'])} together; "
                          f"drop one of them (`dermbench results list` shows what there is)")
    return out


def store_notes(results_dir: Path, skipped: Sequence[SkippedFile],
                missing: Sequence[Union[MissingResultFile, ModifiedResultFile]]) -> list[str]:
    """The notes a leaderboard prints under its tables: JSONs not read, and files whose absence left cells
    without a paired test (°, with --allow-missing-bootstrap)."""
    notes = [s.line(results_dir) for s in skipped]
    for m in missing:
        notes.append(f"{m.what} {_relative(m.path, results_dir)} of {_relative(m.json_path, results_dir)} {m.problem} "
                     f"(--allow-missing-bootstrap): the cells that use it show ° (no paired test); {m.fix}")
    return notes


def _files_present(results_dir: Path, record: dict) -> bool:
    """Whether the predictions file and the bootstrap file a result names are both there."""
    predictions = (record.get("predictions") or {}).get("path")
    boot = (record.get("bootstrap") or {}).get("path")
    return bool(predictions) and (Path(record["_path"]).parent / predictions).is_file() \
        and (not boot or (Path(results_dir) / boot).is_file())


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(Path(path).relative_to(folder))
    except ValueError:
        return str(path)


def notes_markdown(notes: Sequence[str]) -> str:
    return "" if not notes else "## Notes\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def build_leaderboard(results_dir: Path, out_dir: Optional[Path] = None, formats: Sequence[str] = ("md",),
                      rebuild: bool = False, figures: bool = True, selection: Optional[Selection] = None,
                      tasks: Optional[Sequence[str]] = None, protocols: Optional[Sequence[str]] = None,
                      metrics: Optional[Sequence[str]] = None, allow_missing_bootstrap: bool = False) -> dict:
    """Tables from the results store; written to ``out_dir`` in ``formats`` (md, csv, latex, html) if given,
    with the fairness tables (md, csv) and the figures (SVG) beside them. Returns markdown, tables, paths,
    notes (files skipped or missing: also at the end of the markdown) and kinds ((group, protocol) -> kind).

    ``tasks`` (task or group names), ``protocols``, ``metrics``: only these (each checked against the store,
    :class:`FilterError`). A JSON in the store that is not a readable result is skipped and noted. A result
    whose predictions or bootstrap file a paired test needs is missing: :class:`MissingResultFile` (naming
    the file and the `dermbench run` line that makes it again), or with ``allow_missing_bootstrap`` its cells
    show ° and the file is noted. ``rebuild`` needs every file (it always stops on a missing one)."""
    from threadpoolctl import threadpool_limits

    # Every matrix product of a build is small ([1,000 replicates x a test set] by a few columns), and
    # there are thousands of them: BLAS threads cost more to wake and join than they save (on a busy
    # 2-core machine, twice the wall time). One thread gives the same bits (OpenBLAS splits the output
    # between threads, never a sum). reading_once: each file read and each result's replicates computed
    # once for the whole build (main tables, fairness, sections), see dermbench.report.store_memo.
    with threadpool_limits(limits=1, user_api="blas"), reading_once():
        return _build_leaderboard(results_dir, out_dir, formats, rebuild, figures, selection, tasks, protocols,
                                  metrics, allow_missing_bootstrap)


def _build_leaderboard(results_dir: Path, out_dir: Optional[Path], formats: Sequence[str], rebuild: bool,
                       figures: bool, selection: Optional[Selection], tasks: Optional[Sequence[str]],
                       protocols: Optional[Sequence[str]], metrics: Optional[Sequence[str]],
                       allow_missing_bootstrap: bool) -> dict:
    writers = ("md", "csv", "latex", "html")
    unknown = [f for f in formats if f not in writers]
    if unknown:
        raise ValueError(f"unknown leaderboard format(s) {unknown}; available: {', '.join(writers)}")
    results_dir = Path(results_dir)
    skipped: list[SkippedFile] = []
    records = load_records(results_dir, rebuild=False, selection=selection, skipped=skipped)
    for s in skipped:  # one line on stderr as well as the notes, so a piped table still warns
        from dermbench.run.results import warn_skipped

        warn_skipped(s)
    if not records:
        raise FileNotFoundError(f"no results under {results_dir}"
                                + (selection.matching() if selection else "")
                                + (f" ({len(skipped)} JSON file(s) skipped, see the warnings)" if skipped else "")
                                + "; run `dermbench run ...` first")
    if tasks or protocols or metrics:
        records = filter_records(records, tasks, protocols, metrics)
    if rebuild:
        for r in records:
            r["metrics"] = recompute_metrics(results_dir, r)
    store = ReplicateStore(results_dir, allow_missing=allow_missing_bootstrap)
    tables = build_tables(records, results_dir, replicates=store)
    if metrics:
        tables = [t for t in tables if t.metric in metrics]
    notes = store_notes(results_dir, skipped, store.missing)
    kinds = {(r["task_group"], r["protocol"]): r["kind"] for r in records}
    paths: list[Path] = []
    if out_dir is None:
        markdown = to_markdown(tables) + ("\n" + notes_markdown(notes) if notes else "")
        return {"markdown": markdown, "tables": tables, "paths": paths, "notes": notes, "kinds": kinds}

    import pandas as pd

    from dermbench.report.fairness import COLUMNS as FAIRNESS_COLUMNS
    from dermbench.report.fairness import fairness_table, format_fairness

    out_dir = Path(out_dir)
    # the fairness tables and the sections read every result's predictions and resamples: with
    # --allow-missing-bootstrap, the results missing one are left out of them (and that is noted)
    readable = [r for r in records if _files_present(results_dir, r)]
    if len(readable) < len(records):
        left_out = sorted(_relative(Path(r["_path"]), results_dir) for r in records if r not in readable)
        notes.append(f"left out of the fairness tables and the sections (a predictions or bootstrap file is missing): "
                     f"{', '.join(left_out)}")
    # classification subgroups by AUROC, segmentation subgroups by Dice (each kind's main metric)
    parts = [df for df in (fairness_table(results_dir, metric=m, records=readable) for m in FAIRNESS_METRICS) if not df.empty]
    fairness_df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=FAIRNESS_COLUMNS)
    from dermbench.report.sections import build_sections

    sections = build_sections(results_dir, readable)
    figs = build_figures(records, tables, fairness_df) if figures else []
    if figures:
        figs += [fig for s in sections for fig in s.figures]
    markdown = to_markdown(tables, [name for name, _ in figs])
    for s in sections:
        if s.in_summary:
            markdown += "\n" + s.markdown
    if notes:
        markdown += "\n" + notes_markdown(notes)
    fairness_texts = [format_fairness(df) for df in parts]  # for fairness.md and the HTML page
    files: list[tuple[str, bytes]] = []
    for s in sections:
        if "md" in formats:
            files.append((f"{s.name}.md", s.markdown.encode("utf-8")))
        files += s.files
    if "md" in formats:
        files.append(("leaderboard.md", markdown.encode("utf-8")))
        if not fairness_df.empty:
            text = "\n".join(fairness_texts)
            files.append(("fairness.md", ("# Fairness\n\n" + text).encode("utf-8")))
    if "csv" in formats:
        files.append(("leaderboard.csv", to_csv(tables).encode("utf-8")))
        if not fairness_df.empty:
            buf = io.StringIO()
            fairness_df.to_csv(buf, index=False, float_format="%.6f", lineterminator="\n")
            files.append(("fairness.csv", buf.getvalue().encode("utf-8")))
    if "latex" in formats:
        files.append(("leaderboard.tex", to_latex(tables).encode("utf-8")))
    if "html" in formats:
        fairness_html = "\n".join(fairness_to_html(df, text) for df, text in zip(parts, fairness_texts))
        sections_html = "\n".join(s.html for s in sections if s.html)
        files.append(("leaderboard.html", to_html(tables, figs, fairness_html, sections_html, kinds).encode("utf-8")))
    files += figs
    for name, data in files:
        path = out_dir / name
        atomic_write_bytes(path, data)
        paths.append(path)
    # what this folder was built from, so `dermbench paper --leaderboard` can link to it instead of
    # building a second copy (written last: a folder without it, or with another one, is not reused)
    options = {"formats": sorted(formats), "rebuild": rebuild, "figures": figures,
               "selection": selection.describe() if selection else "no filters", "tasks": list(tasks or []),
               "protocols": list(protocols or []), "metrics": list(metrics or []),
               "allow_missing_bootstrap": allow_missing_bootstrap}
    inputs = {"schema": INPUTS_SCHEMA, **leaderboard_inputs(results_dir), "options": options,
              "files": sorted(name for name, _ in files)}
    atomic_write_bytes(out_dir / INPUTS_FILE, (json.dumps(inputs, indent=1, sort_keys=True) + "\n").encode("utf-8"))
    paths.append(out_dir / INPUTS_FILE)
    return {"markdown": markdown, "tables": tables, "paths": paths, "fairness": fairness_df, "sections": sections,
            "notes": notes, "kinds": kinds}


INPUTS_FILE = "leaderboard.inputs.json"
INPUTS_SCHEMA = "dermbench.leaderboard-inputs/1"
# what `dermbench paper` needs of a leaderboard folder it links to: every format, figures, no filter
PAPER_OPTIONS = {"formats": ["csv", "html", "latex", "md"], "rebuild": False, "figures": True, "selection": "no filters",
                 "tasks": [], "protocols": [], "metrics": [], "allow_missing_bootstrap": False}


def leaderboard_inputs(results_dir: Path) -> dict[str, Any]:
    """The results folder (resolved), a fingerprint of everything in it but the run's bookkeeping
    (``_jobs/``: claims and logs change while nothing a table shows does) — relative path, size and
    mtime of each file, so any rewrite counts as a change — and the sha256 of dermbench's sources."""
    import hashlib
    import os

    from dermbench.run.results import git_state

    results_dir = Path(results_dir).resolve()
    digest = hashlib.sha256()
    for folder, dirs, names in os.walk(results_dir):
        dirs[:] = sorted(d for d in dirs if not (Path(folder) == results_dir and d == "_jobs"))
        for name in sorted(names):
            st = os.stat(os.path.join(folder, name))
            rel = os.path.relpath(os.path.join(folder, name), results_dir)
            digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return {"results": str(results_dir), "results_fingerprint": digest.hexdigest(),
            "code_sha256": git_state().get("source_sha256")}


def reusable_leaderboard(folder: Path, results_dir: Path) -> tuple[Optional[list[Path]], str]:
    """The files of the leaderboard in ``folder`` when it was built by this code from the results in
    ``results_dir`` as they are now, with every format and no filter; else None. Second item: why not."""
    folder = Path(folder)
    try:
        built = json.loads((folder / INPUTS_FILE).read_text())
    except FileNotFoundError:
        return None, f"{folder} holds no {INPUTS_FILE} (not written by `dermbench leaderboard --out`)"
    except (OSError, ValueError) as exc:
        return None, f"{folder / INPUTS_FILE} is unreadable ({exc})"
    if built.get("schema") != INPUTS_SCHEMA:
        return None, f"{folder / INPUTS_FILE} is of another dermbench version"
    now = leaderboard_inputs(results_dir)
    if built.get("results") != now["results"]:
        return None, f"it was built from the results in {built.get('results')}, not {now['results']}"
    if built.get("results_fingerprint") != now["results_fingerprint"]:
        return None, "the results changed since it was built"
    if built.get("code_sha256") != now["code_sha256"]:
        return None, "it was built by another version of dermbench"
    if built.get("options") != PAPER_OPTIONS:
        return None, ("it was not built with --format all and without filters "
                      f"(built with {json.dumps(built.get('options'), sort_keys=True)})")
    files = [folder / name for name in built.get("files", [])]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        return None, f"files are missing from it: {', '.join(missing[:5])}"
    return files, ""


__all__ = ["FilterError", "Table", "build_tables", "filter_records", "build_figures", "build_leaderboard", "load_records", "recompute_metrics",
           "reusable_leaderboard",
           "to_csv", "to_html", "to_latex", "to_markdown", "ReplicateStore"]
