"""``dermbench fairness``: per-subgroup metrics of stored results (:mod:`dermbench.stats.fairness`)."""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd

from dermbench.stats.fairness import (  # noqa: F401  (re-exported)
    CLASSIFICATION_METRICS, COLUMNS, EXCLUDED_PROTOCOLS, MIN_SAMPLES, SEGMENTATION_METRICS, UNKNOWN,
    fairness_rows, subgroup_label, subgroup_order, subgroup_values,
)


def record_fairness(results_dir: Path, record: dict, metric: str = "auroc", attributes: Optional[Sequence[str]] = None,
                    min_samples: int = MIN_SAMPLES, predictions: Optional[pd.DataFrame] = None) -> list[dict]:
    """Fairness rows of one stored result (its predictions and shared resamples read from the store)."""
    from dermbench.report.store_memo import read_bootstrap, read_predictions  # once per leaderboard build

    kind = record.get("kind")
    allowed = CLASSIFICATION_METRICS if kind == "classification" else SEGMENTATION_METRICS if kind == "segmentation" else ()
    if metric not in allowed:
        return []
    preds = read_predictions(record["_path"]) if predictions is None else predictions
    if not any(c.startswith("group_") for c in preds.columns):
        return []
    shared = read_bootstrap(Path(results_dir), record)  # missing: MissingResultFile naming the file and the fix
    return fairness_rows(record, preds, shared, metric, attributes, min_samples)


def _names(value: Union[None, str, Sequence[str]]) -> Optional[set[str]]:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    return {p.strip() for item in items for p in str(item).split(",") if p.strip()}


def fairness_table(results_dir: Path, model: Union[None, str, Sequence[str]] = None,
                   task: Union[None, str, Sequence[str]] = None, metric: str = "auroc",
                   protocol: Union[None, str, Sequence[str]] = None, attribute: Union[None, str, Sequence[str]] = None,
                   min_samples: int = MIN_SAMPLES, selection=None, records: Optional[Sequence[dict]] = None,
                   empty_is_error: bool = False) -> pd.DataFrame:
    """Per-subgroup metrics, the largest gap and the overall value for the results under ``results_dir``.

    ``model``, ``task``, ``protocol``, ``attribute``: names (a string may be comma-separated, a task
    may be a group or 'all'); None: every result with ``group_*`` columns. Label-efficiency and
    federated results are skipped (several predictions per test image). Columns: see ``COLUMNS``;
    ``row`` is 'subgroup', 'gap' or 'overall'. Values are fractions (not percent).

    One result per (model, task, protocol) by :func:`dermbench.run.identity.select_results`
    (``selection``: its filters), or the given ``records`` (already selected, as the leaderboard
    passes them); results of one (task, protocol) on different test sets are refused.
    """
    from dermbench.report.labels import PROTOCOL_ORDER
    from dermbench.run.results import iter_results
    from dermbench.data.tasks import PAPER_ORDER, select_tasks

    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results folder {results_dir} does not exist; run `dermbench run ...` first")
    if metric not in CLASSIFICATION_METRICS + SEGMENTATION_METRICS:
        raise ValueError(f"fairness metric {metric!r}: choose one of {', '.join(CLASSIFICATION_METRICS)} "
                         f"(classification) or {', '.join(SEGMENTATION_METRICS)} (segmentation)")
    models, protocols, attributes = _names(model), _names(protocol), _names(attribute)
    tasks = None
    if task is not None:
        tasks = set()
        for part in _names(task) or ():
            try:
                tasks |= {c.name for c in select_tasks(part)}
            except KeyError:
                tasks.add(part)  # a task of another card folder, matched by name
    if records is None:
        from dermbench.run.identity import select_results

        records = [p.record for p in select_results(list(iter_results(results_dir)), selection).values()]
    stored = list(records)
    records = [r for r in records
               if r.get("protocol") not in EXCLUDED_PROTOCOLS
               and (models is None or r["model"] in models) and (tasks is None or r["task"] in tasks)
               and (protocols is None or r["protocol"] in protocols)]
    order = {t: i for i, t in enumerate(PAPER_ORDER)}
    records.sort(key=lambda r: (order.get(r["task"], len(order)), r["task"],
                                PROTOCOL_ORDER.index(r["protocol"]) if r["protocol"] in PROTOCOL_ORDER else 99,
                                r["protocol"], r["model"]))
    from dermbench.run.identity import check_same_test_set

    for key in dict.fromkeys((r["task"], r["protocol"]) for r in records):
        check_same_test_set([r for r in records if (r["task"], r["protocol"]) == key], f"fairness {key[0]} · {key[1]}")
    rows = []
    for r in records:
        rows += record_fairness(results_dir, r, metric, sorted(attributes) if attributes else None, min_samples)
    if not rows and empty_is_error:  # the fairness command: an empty table is an error that says why
        raise ValueError(f"fairness: {_why_no_rows(stored, records, metric, attributes)}")
    table = pd.DataFrame(rows, columns=COLUMNS)
    table.attrs.update(metric=metric, min_samples=min_samples, results_dir=str(results_dir))
    return table


def _why_no_rows(stored: Sequence[dict], matching: Sequence[dict], metric: str, attributes: Optional[set[str]]) -> str:
    """Why no result gave a fairness row, naming what the store holds (for the option to change)."""
    from dermbench.report.store_memo import read_predictions
    from dermbench.run.results import describe_store
    from dermbench.stats.skin_tone import ATTRIBUTE as ESTIMATED

    def listing(values) -> str:
        return ", ".join(sorted(set(values))) or "none"

    if not matching:
        return f"no stored result matches --model/--task/--protocol; the results folder holds {describe_store(stored)}"
    scored = [r for r in matching if metric in (CLASSIFICATION_METRICS if r.get("kind") == "classification"
                                                else SEGMENTATION_METRICS if r.get("kind") == "segmentation" else ())]
    if not scored:
        return (f"--metric {metric} applies to none of the {len(matching)} matching results (kinds: "
                f"{listing(str(r.get('kind')) for r in matching)}); classification: {', '.join(CLASSIFICATION_METRICS)}; "
                f"segmentation: {', '.join(SEGMENTATION_METRICS)}")
    present: dict[str, set[str]] = {}  # attribute -> tasks whose predictions carry it
    for r in scored:
        for column in read_predictions(r["_path"]).columns:
            if column.startswith("group_"):
                present.setdefault(column[len("group_"):], set()).add(r["task"])
    if not present:
        return (f"none of the {len(scored)} matching results has subgroups (tasks {listing(r['task'] for r in scored)}); "
                "fairness needs tasks with subgroups, e.g. fitzpatrick17k-3 (skin type) or derm7pt (sex)")
    there = "; ".join(f"{a} ({', '.join(sorted(t))})" for a, t in sorted(present.items()))
    hint = (f"; {ESTIMATED}, the skin tone `dermbench skin-tone` estimates, joins the tables at an operating "
            "point: add --threshold youden" if attributes and ESTIMATED in attributes else "")
    return (f"--attribute {','.join(sorted(attributes or ()))}: none of the matching results has it; "
            f"attributes there: {there}{hint}")


def _pct(v: float) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def grouped_rows(rows: Sequence[dict], keys: Sequence[str]) -> dict[tuple, list[dict]]:
    """Rows (dicts) by their values of ``keys``; groups and the rows in each in order of first appearance
    (as ``groupby(sort=False)``, in one pass instead of pandas masks per group)."""
    out: dict[tuple, list[dict]] = {}
    for r in rows:
        out.setdefault(tuple(r[k] for k in keys), []).append(r)
    return out


def format_fairness(df: pd.DataFrame) -> str:
    """Markdown: one table per (task, protocol, attribute); rows models, columns subgroups, gap and overall."""
    from dermbench.report.labels import METRIC_TITLES

    if df.empty:
        return ("No subgroup results: no stored predictions with group_<attribute> columns matched "
                "(fairness needs classification or segmentation results of tasks with subgroups, e.g. "
                "fitzpatrick17k-3 (skin type) or derm7pt (sex)).")
    metric = df.attrs.get("metric") or df["metric"].iloc[0]
    out = [f"Subgroup {METRIC_TITLES.get(metric, metric)} in percent: value [95% percentile bootstrap CI within the "
           "subgroup]. Gap test: highest − lowest subgroup on the full test set, their paired difference [95% "
           "paired-bootstrap CI over the shared test-set resamples] and its two-sided p (the pair is picked from the "
           "data, so p is optimistic). max − min: descriptive only, over subgroups ('unknown' excluded), with the "
           "percentile interval of max − min over the same resamples; that interval is biased upward and cannot "
           "contain 0, so it is not a test. overall = whole test set. —: not reported (see notes).", ""]
    # the rows as dicts, grouped by (task, protocol, attribute), in the table's order: one pass over the
    # table instead of a boolean mask per cell
    for (task, protocol, attribute), part in grouped_rows(df.to_dict("records"), ("task", "protocol", "attribute")).items():
        first: dict = {}  # subgroup -> its first row (label, n), in order of appearance
        for r in part:
            if r["row"] == "subgroup":
                first.setdefault(r["subgroup"], r)
        order = list(first)
        header = [f"{first[s]['label']} (n={int(first[s]['n'])})" for s in order] + [
            "gap test: highest − lowest [paired CI], p", "max − min (descriptive)", "overall"]
        out += [f"## {task} · {protocol} · {attribute}", "", "| model | " + " | ".join(header) + " |",
                "|---" * (len(header) + 1) + "|"]
        by_model = {m: rows for (m,), rows in grouped_rows(part, ("model",)).items()}
        models = list(by_model)
        notes: dict[tuple[str, str], list[str]] = {}
        for m in models:
            rows = by_model[m]
            first_of: dict[tuple[str, str], dict] = {}  # (row kind, subgroup) -> the model's first such row
            kinds: dict[str, dict] = {}  # row kind (subgroup, gap, overall) -> the model's first such row
            for r in rows:
                first_of.setdefault((r["row"], r["subgroup"]), r)
                kinds.setdefault(r["row"], r)
            cells = []
            for s in order:
                r = first_of.get(("subgroup", s))
                cells.append(_cell(r) if r is not None else "—")
                if r is not None and r["note"]:
                    notes.setdefault((str(first[s]["label"]), r["note"]), []).append(m)
            gap = kinds.get("gap")
            if gap is not None and not math.isnan(gap["value"]):
                g = gap
                where = g["note"].split(";")[0].replace("max ", "").replace(", min ", " − ")
                cells.append(f"{where}: {_pct(g['pair_diff'])} [{_pct(g['pair_ci_low'])}, {_pct(g['pair_ci_high'])}], "
                             f"p {_p(g['pair_p'])}")
                cells.append(_cell(g))
            else:
                cells += ["—", "—"]
                if gap is not None:
                    notes.setdefault(("gap", gap["note"]), []).append(m)
            overall = kinds.get("overall")
            cells.append(_cell(overall) if overall is not None else "—")
            out.append(f"| {m} | " + " | ".join(cells) + " |")
        out.append("")
        if notes:
            out.append("Notes:")
            for (label, note), who in notes.items():
                out.append(f"- {label}: {note}" + ("" if len(who) == len(models) else f" ({', '.join(who)})"))
            out.append("")
    return "\n".join(out)


def _p(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return "<1e-4" if v < 1e-4 else f"{v:.4f}"


def _cell(row: pd.Series) -> str:
    if row["value"] is None or math.isnan(row["value"]):
        return "—"
    return f"{_pct(row['value'])} [{_pct(row['ci_low'])}, {_pct(row['ci_high'])}]"
