"""Fairness at an operating point from the results store (:mod:`dermbench.stats.operating_point`).

For every classification result that stored held-out training scores (``<protocol>.calibration.csv``)
and has subgroup columns: the threshold chosen on those scores (``youden`` by default, or
``sensitivity=<t>``), then per subgroup TPR, FPR, PPV, AUROC and ECE with percentile 95% CIs on the
task's shared resamples, and the gaps (TPR, FPR, PPV, ECE), the equalized-odds difference and the
worst-group AUROC, with paired bootstrap p-values Holm-adjusted per (task, protocol, attribute) table. The estimated
skin tone (``dermbench skin-tone``, :mod:`dermbench.run.skin_tone`) joins as its own attribute
``ita_estimated``, labelled as estimated.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from dermbench.report.calibration import eligible, markdown_html
from dermbench.report.fairness import grouped_rows
from dermbench.report.sections import Section
from dermbench.stats import operating_point as OP
from dermbench.stats import skin_tone as ST
from dermbench.stats.fairness import MIN_SAMPLES

DEFAULT_ATTRIBUTES = ("skin_type", "sex", ST.ATTRIBUTE)
ATTRIBUTE_TITLES = {ST.ATTRIBUTE: "ita_estimated (ESTIMATED from image colour, not a Fitzpatrick label)"}


def with_estimated_skin_tone(results_dir: Path, task: str, preds: pd.DataFrame) -> pd.DataFrame:
    from dermbench.run.skin_tone import read_skin_tone

    tone = read_skin_tone(results_dir, task)
    if tone is None or ST.COLUMN in preds.columns:
        return preds
    mapping = dict(zip(tone["sample_id"], tone[ST.COLUMN]))
    out = preds.copy()
    out[ST.COLUMN] = [mapping.get(i, "unknown") for i in out["sample_id"]]
    return out


def operating_point_table(results_dir: Path, records: Optional[Sequence[dict]] = None, rule: str = "youden",
                          attributes: Optional[Sequence[str]] = DEFAULT_ATTRIBUTES, intersectional: bool = True,
                          min_samples: int = MIN_SAMPLES, models: Optional[Sequence[str]] = None,
                          tasks: Optional[Sequence[str]] = None, protocols: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Rows of :data:`dermbench.stats.operating_point.COLUMNS` for the matching results, Holm-adjusted together.
    Results without held-out scores are listed in ``table.attrs['without_calibration']``."""
    from dermbench.report.store_memo import read_bootstrap, read_predictions, read_table  # once per leaderboard build
    from dermbench.run.results import iter_results

    OP.parse_rule(rule)
    results_dir = Path(results_dir)
    if records is None:
        if not results_dir.is_dir():
            raise FileNotFoundError(f"results folder {results_dir} does not exist; run `dermbench run ...` first")
        records = list(iter_results(results_dir))
    rows, without = [], []
    for r in eligible(records):
        if (models and r["model"] not in models) or (tasks and r["task"] not in tasks) or (protocols and r["protocol"] not in protocols):
            continue
        cal = read_table(r["_path"], "calibration")
        if cal is None:
            without.append(f"{r['model']} · {r['task']} · {r['protocol']}")
            continue
        preds = with_estimated_skin_tone(results_dir, r["task"], read_predictions(r["_path"]))
        shared = read_bootstrap(results_dir, r)  # a missing file: named, with the run line that redraws it
        rows += OP.operating_point_rows(r, preds, cal, shared, rule, attributes, intersectional, min_samples)
    table = OP.holm_family(pd.DataFrame(rows, columns=OP.COLUMNS))
    table.attrs.update(rule=rule, without_calibration=without, min_samples=min_samples)
    return table


def _pct(v) -> str:
    return "—" if v is None or not math.isfinite(float(v)) else f"{100 * float(v):.1f}"


def _ci(row) -> str:
    if row is None or not math.isfinite(row["value"]):
        return "—"
    return f"{_pct(row['value'])} [{_pct(row['ci_low'])}, {_pct(row['ci_high'])}]"


def _p(v) -> str:
    return "—" if v is None or not math.isfinite(float(v)) else f"{float(v):.3f}"


def format_operating_point(table: pd.DataFrame) -> str:
    rule = table.attrs.get("rule", "youden")
    if table.empty:
        text = ("No result with held-out training scores and subgroup columns (the linear and retrieval protocols store "
                "<protocol>.calibration.csv; rerun older results with --overwrite).")
        return text
    out = [f"Threshold rule: **{rule}**, chosen on the held-out 20% of the training split (never the test set) and held "
           "fixed; one-vs-rest per class (binary tasks: the positive class). Values in percent: value [95% percentile "
           "bootstrap CI on the task's shared resamples, the same replicates for every subgroup and model]. Gaps: max − "
           "min over subgroups with a defined value ('unknown' and subgroups below "
           f"{table.attrs.get('min_samples', MIN_SAMPLES)} images excluded); EOD = max(TPR gap, FPR gap); p_holm: paired "
           "bootstrap p of highest vs lowest subgroup, Holm-adjusted across the gap tests (TPR, FPR, PPV, ECE; every model "
           "and class) of each table below; with B bootstrap replicates no p is below about 2/(B + 1).", ""]
    for (task, protocol, attribute), part in _blocks(table).items():
        out += [f"### {task} · {protocol} · {ATTRIBUTE_TITLES.get(attribute, attribute)}", "",
                "| model | class | threshold | TPR gap | FPR gap | EOD | p_holm (EOD) | worst-group AUROC | ECE gap | p_holm (ECE gap) |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for (model, cls), g in grouped_rows([r for r in part if r["row"] == "gap"], ("model", "class_name")).items():
            get = {r["metric"]: r for r in g}
            thr = g[0]["threshold"]
            out.append(f"| {model} | {cls} | {thr:.3f} | {_ci(get.get('tpr_gap'))} | {_ci(get.get('fpr_gap'))} | "
                       f"{_ci(get.get('eod'))} | {_p(get['eod']['p_holm']) if 'eod' in get else '—'} | "
                       f"{_ci(get.get('worst_auroc'))} | {_ci(get.get('ece_gap'))} | "
                       f"{_p(get['ece_gap']['p_holm']) if 'ece_gap' in get else '—'} |")
        shown = _figure_class_of(part)
        others = "" if len({r["class"] for r in part}) == 1 else "; the other classes are in operating_point.csv"
        out += ["", f"Per subgroup, class '{next(r['class_name'] for r in part if r['class'] == shown)}' ('—': fewer than "
                f"{table.attrs.get('min_samples', MIN_SAMPLES)} images, or undefined{others}):", "",
                "| model | class | subgroup (n, positives) | TPR | FPR | PPV | AUROC | ECE |", "|---|---|---|---|---|---|---|---|"]
        subs = [r for r in part if r["row"] in ("subgroup", "overall") and r["class"] == shown]
        for (model, cls, label), g in grouped_rows(subs, ("model", "class_name", "label")).items():
            get = {r["metric"]: r for r in g}
            first = g[0]
            out.append(f"| {model} | {cls} | {label} ({int(first['n'])}, {int(first['n_pos'])}) | "
                       + " | ".join(_ci(get.get(m)) for m in ("tpr", "fpr", "ppv", "auroc", "ece")) + " |")
        out.append("")
    without = table.attrs.get("without_calibration") or []
    if without:
        out.append("Without held-out training scores (rerun with --overwrite to include): " + "; ".join(without))
    return "\n".join(out)


def _blocks(table: pd.DataFrame) -> dict[tuple, list[dict]]:
    """The rows with an attribute, as dicts, by (task, protocol, attribute) in order of first appearance (as
    groupby(sort=False) would): one pass over the table instead of pandas masks, groupbys and iterrows per block."""
    return grouped_rows([r for r in table.to_dict("records") if r["attribute"] != ""], ("task", "protocol", "attribute"))


def _figure_class_of(rows: Sequence[dict]) -> int:
    """Binary: the positive class; more classes: the class with the fewest test positives (the rare one)."""
    return int(min((r for r in rows if r["row"] == "overall" and r["metric"] == "tpr"),
                   key=lambda r: (r["n_pos"], r["class"]))["class"])


def build(results_dir: Path, records: Sequence[dict]) -> Optional[Section]:
    from dermbench.report import figures as F

    table = operating_point_table(results_dir, records)
    if table.empty:
        return None
    markdown = "## Fairness at an operating point\n\n" + format_operating_point(table)
    buf = io.StringIO()
    table.to_csv(buf, index=False, float_format="%.6f", lineterminator="\n")
    figs = []
    for (task, protocol, attribute), part in _blocks(table).items():
        c = _figure_class_of(part)
        subs = [r for r in part if r["row"] == "subgroup" and r["class"] == c and r["metric"] == "tpr"]
        label_of: dict[str, str] = {}  # subgroup -> its label, in order of first appearance
        for r in subs:
            label_of.setdefault(r["subgroup"], r["label"])
        cells = {(r["model"], r["subgroup"]): (r["value"], r["ci_low"], r["ci_high"]) for r in subs}
        if not any(math.isfinite(v[0]) for v in cells.values()):
            continue  # no subgroup large enough: the table says so, an empty figure would not
        name = subs[0]["class_name"] if subs else str(c)
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in f"{task}_{protocol}_{attribute}")
        figs.append((f"fig_operating_point_{safe}.svg",
                     F.fairness_svg(f"{task} · {protocol} · TPR of '{name}' at the {table.attrs['rule']} threshold",
                                    sorted({r["model"] for r in subs}), list(label_of), list(label_of.values()),
                                    cells, "TPR")))
    return Section(name="operating_point", title="Fairness at an operating point", markdown=markdown,
                   html=markdown_html(markdown), files=[("operating_point.csv", buf.getvalue().encode("utf-8"))],
                   figures=figs, in_summary=True)
