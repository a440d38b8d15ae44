"""Calibration of every stored classification result (:mod:`dermbench.stats.calibration`): the table,
temperature scaling before/after, paired differences between models, and reliability diagrams.

Per (task, protocol), one row per model: ECE (equal-width and equal-mass bins), classwise ECE, Brier
score and NLL, each with its percentile 95% CI on the task's stored shared resamples; the temperature
T fitted on the result's held-out training scores (``<protocol>.calibration.csv``; results without that
file show "—": rerun them) and ECE / NLL of the temperature-scaled test scores. †: ECE significantly
higher than the lowest ECE of the block (two-sided paired bootstrap on the shared resamples, p < 0.05,
uncorrected, as the leaderboard's †). The CSV carries every number and each model's paired difference
to the block's best ECE.
"""
from __future__ import annotations

import html
import io
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from dermbench.report.figures import memoized_svg
from dermbench.report.sections import Section
from dermbench.stats import calibration as C
from dermbench.stats.fairness import EXCLUDED_PROTOCOLS

CSV_COLUMNS = ["model", "task", "protocol", "stage", "metric", "value", "ci_low", "ci_high", "n_boot_valid",
               "temperature", "n_calibration", "diff_vs_best", "diff_ci_low", "diff_ci_high", "p_vs_best"]
TITLES = {"ece": "ECE", "ece_mass": "ECE (equal mass)", "classwise_ece": "classwise ECE", "brier": "Brier", "nll": "NLL"}
ALPHA = 0.05


def _order(records: Sequence[dict]) -> list[dict]:
    from dermbench.data.tasks import PAPER_ORDER
    from dermbench.report.labels import PROTOCOL_ORDER

    rank = {t: i for i, t in enumerate(PAPER_ORDER)}
    return sorted(records, key=lambda r: (rank.get(r["task"], 999), r["task"],
                                          PROTOCOL_ORDER.index(r["protocol"]) if r["protocol"] in PROTOCOL_ORDER else 99,
                                          r["protocol"], r["model"]))


def eligible(records: Sequence[dict]) -> list[dict]:
    """Classification results with one prediction row per test image."""
    return _order([r for r in records if r.get("kind") == "classification" and r.get("protocol") not in EXCLUDED_PROTOCOLS])


def record_calibration(results_dir: Path, record: dict) -> Optional[dict]:
    """{'before': {metric: summary+replicates}, 'after': ... or None, 'temperature', 'n_calibration', 'bins'}."""
    from dermbench.report.store_memo import read_bootstrap, read_predictions, read_table  # once per leaderboard build
    from dermbench.stats.evaluation import classification_arrays

    preds = read_predictions(record["_path"])
    if preds["sample_id"].duplicated().any():
        return None
    shared = read_bootstrap(results_dir, record)  # a missing file: named, with the run line that redraws it
    y, pred, scores = classification_arrays(preds)
    out = {"before": C.evaluate_calibration(y, pred, scores, shared), "after": None, "temperature": math.nan,
           "n_calibration": 0}
    conf, correct = C.top_label(scores, y, pred)
    out["bins"] = C.reliability_bins(conf, correct)
    cal = read_table(record["_path"], "calibration")
    if cal is not None and len(cal):
        y_cal, _, s_cal = classification_arrays(cal)
        t = C.fit_temperature(y_cal, s_cal)
        scaled = C.apply_temperature(scores, t)
        out.update(after=C.evaluate_calibration(y, pred, scaled, shared), temperature=t, n_calibration=int(len(cal)))
        conf_t, _ = C.top_label(scaled, y, pred)
        out["bins_after"] = C.reliability_bins(conf_t, correct)
    return out


def calibration_table(results_dir: Path, records: Sequence[dict]) -> tuple[pd.DataFrame, dict]:
    """Long table (CSV_COLUMNS) and the per-record results keyed by the record's path."""
    from dermbench.report.leaderboard import _paired

    results = {r["_path"]: record_calibration(results_dir, r) for r in eligible(records)}
    rows = []
    by_block: dict[tuple[str, str], list[dict]] = {}
    for r in eligible(records):
        if results.get(r["_path"]) is not None:
            by_block.setdefault((r["task"], r["protocol"]), []).append(r)
    for (task, protocol), recs in by_block.items():
        for stage in ("before", "after"):
            for metric in C.CALIBRATION_METRICS:
                have = [r for r in recs if results[r["_path"]][stage] is not None]
                if not have:
                    continue
                best = min(have, key=lambda r: results[r["_path"]][stage][metric]["value"])
                ref = results[best["_path"]][stage][metric]
                for r in have:
                    res = results[r["_path"]]
                    s = res[stage][metric]
                    diff = {"diff": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan}
                    if r is not best and _paired(r, best):
                        diff = C.paired_difference(s["replicates"], ref["replicates"], s["value"], ref["value"])
                    elif r is best:
                        diff = {"diff": 0.0, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan}
                    rows.append({"model": r["model"], "task": task, "protocol": protocol, "stage": stage, "metric": metric,
                                 "value": s["value"], "ci_low": s["ci_low"], "ci_high": s["ci_high"],
                                 "n_boot_valid": s["n_boot_valid"], "temperature": res["temperature"],
                                 "n_calibration": res["n_calibration"], "diff_vs_best": diff["diff"],
                                 "diff_ci_low": diff["ci_low"], "diff_ci_high": diff["ci_high"], "p_vs_best": diff["p"]})
    return pd.DataFrame(rows, columns=CSV_COLUMNS), results


def _num(v: float, scale: float = 1.0, digits: int = 2) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{scale * v:.{digits}f}"


def _cell(row: Optional[pd.Series], scale: float, digits: int, dagger: bool = False) -> str:
    if row is None:
        return "—"
    text = f"{_num(row['value'], scale, digits)} [{_num(row['ci_low'], scale, digits)}, {_num(row['ci_high'], scale, digits)}]"
    if dagger and math.isfinite(row["p_vs_best"]) and row["p_vs_best"] < ALPHA and row["diff_vs_best"] > 0:
        text += " †"
    return text


FORMAT = {"ece": (100, 2), "ece_mass": (100, 2), "classwise_ece": (100, 2), "brier": (1, 3), "nll": (1, 3)}


def format_calibration(table: pd.DataFrame) -> str:
    if table.empty:
        return "No classification results with one prediction per test image: nothing to calibrate."
    out = ["ECE, equal-mass ECE and classwise ECE in percent (15 bins), Brier score and NLL as numbers; lower is better. "
           "value [95% percentile bootstrap CI on the task's shared resamples]. †: ECE significantly higher than the "
           "block's lowest (paired bootstrap, p < 0.05, uncorrected). T: temperature fitted on the held-out 20% of the "
           "training split (never the test set); 'after TS': the test scores divided by T. —: no held-out scores stored.", ""]
    for (task, protocol), part in table.groupby(["task", "protocol"], sort=False):
        out += [f"### {task} · {protocol}", "",
                "| model | ECE | ECE (equal mass) | classwise ECE | Brier | NLL | T | ECE after TS | NLL after TS |",
                "|---|---|---|---|---|---|---|---|---|"]
        for model, rows in part.groupby("model", sort=False):
            get = {(r["stage"], r["metric"]): r for _, r in rows.iterrows()}
            cells = [_cell(get.get(("before", m)), *FORMAT[m], dagger=(m == "ece")) for m in C.CALIBRATION_METRICS]
            t = rows["temperature"].iloc[0]
            t_text = _num(t, 1, 3)
            if math.isfinite(t) and min(abs(t - b) / b for b in C.TEMPERATURE_BOUNDS) < 1e-3:
                t_text += " (bound)"  # the NLL kept falling towards the search bound (tiny or separable held-out set)
            cells += [t_text, _cell(get.get(("after", "ece")), *FORMAT["ece"]),
                      _cell(get.get(("after", "nll")), *FORMAT["nll"])]
            out.append(f"| {model} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


@memoized_svg
def reliability_svg(title: str, curves: Sequence[tuple[str, pd.DataFrame, Optional[pd.DataFrame]]]) -> bytes:
    """Accuracy against mean confidence per equal-width bin, one colour per model (solid: as stored, dashed:
    after temperature scaling); marker area ∝ the bin's share of the test set."""
    from dermbench.report.figures import _figure, _render, _with_rc, colour

    def draw():
        fig = _figure(3.6, 3.4)
        ax = fig.add_subplot(1, 1, 1)
        ax.plot([0, 1], [0, 1], color="#999999", linewidth=0.8, linestyle=":", label="perfect calibration")
        for i, (model, before, after) in enumerate(curves):
            for bins, style, suffix in ((before, "-", ""), (after, "--", " after TS")):
                if bins is None:
                    continue
                b = bins[bins["n"] > 0]
                total = max(int(bins["n"].sum()), 1)
                ax.plot(b["confidence"], b["accuracy"], linestyle=style, color=colour(i), linewidth=1.0, label=model + suffix)
                if style == "-":
                    ax.scatter(b["confidence"], b["accuracy"], s=4 + 80 * b["n"] / total, color=colour(i), zorder=3)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("mean confidence in bin")
        ax.set_ylabel("accuracy in bin")
        ax.set_title(title)
        ax.legend(loc="upper left", frameon=False)
        fig.tight_layout()
        return _render(fig, title)

    return _with_rc(draw)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def build(results_dir: Path, records: Sequence[dict]) -> Optional[Section]:
    table, results = calibration_table(results_dir, records)
    if table.empty:
        return None
    markdown = "## Calibration\n\n" + format_calibration(table)
    buf = io.StringIO()
    table.to_csv(buf, index=False, float_format="%.6f", lineterminator="\n")
    figures = []
    for (task, protocol), part in table.groupby(["task", "protocol"], sort=False):
        curves = []
        for model in dict.fromkeys(part["model"]):
            rec = next(r for r in records if r["model"] == model and r["task"] == task and r["protocol"] == protocol)
            res = results[rec["_path"]]
            curves.append((model, res["bins"], res.get("bins_after")))
        figures.append((f"fig_reliability_{_safe(task)}_{_safe(protocol)}.svg",
                        reliability_svg(f"{task} · {protocol} · reliability (15 bins)", curves)))
    return Section(name="calibration", title="Calibration", markdown=markdown, html=markdown_html(markdown),
                   files=[("calibration.csv", buf.getvalue().encode("utf-8"))], figures=figures, in_summary=True)


def markdown_html(markdown: str) -> str:
    """Minimal markdown-table-to-HTML for the leaderboard page (headings, paragraphs, tables)."""
    out, table = [], []

    def flush():
        if table:
            head, body = table[0], table[2:]
            cells = lambda line: [c.strip() for c in line.strip().strip("|").split("|")]  # noqa: E731
            out.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cells(head)) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells(r)) + "</tr>" for r in body)
                       + "</table>")
            table.clear()

    for line in markdown.split("\n"):
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 1, 4)
            out.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    flush()
    return "\n".join(out)
