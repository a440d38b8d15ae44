"""Leaderboard sections for robustness, cross-dataset transfer and segmentation boundary metrics.

Three section builders (registered in :mod:`dermbench.report.sections`), each reading only the stored
metrics of the results (every number with its bootstrap CI, computed by the protocols' ``evaluate``):

- :func:`build_robustness`: per task and model, the clean metric, then per corruption and severity the
  metric on corrupted images, its paired difference to clean (CI from the shared resamples) and per
  corruption the mean relative drop; a figure of the metric against severity.
- :func:`build_transfer`: per transfer family and model, the matrix train task (rows) x test task
  (columns) with CIs, the in-domain diagonal, and the drop (in-domain minus transfer) with paired CIs;
  a heatmap figure per family.
- :func:`build_boundary`: HD95, normalised surface Dice and ISIC 2018's thresholded Jaccard of the
  segmentation results, with CIs.
"""
from __future__ import annotations

import html
import io
import math
from pathlib import Path
from typing import Optional, Sequence

from dermbench.report.figures import memoized_svg
from dermbench.report.sections import Section

ROBUSTNESS_METRIC = "auroc"


def _pct(v) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def _cell(m: Optional[dict], scale: float = 100.0, digits: int = 1) -> str:
    if not m:
        return "—"
    v, lo, hi = (m.get(k, math.nan) for k in ("value", "ci_low", "ci_high"))
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    f = f"{{:.{digits}f}}"
    ci = "" if any(x is None or (isinstance(x, float) and math.isnan(x)) for x in (lo, hi)) else \
        f" [{f.format(scale * lo)}, {f.format(scale * hi)}]"
    return f.format(scale * v) + ci


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _csv(header: Sequence[str], rows: Sequence[Sequence]) -> bytes:
    import csv

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _order(records: Sequence[dict]):
    from dermbench.data.tasks import PAPER_ORDER

    rank = {t: i for i, t in enumerate(PAPER_ORDER)}
    return sorted(records, key=lambda r: (rank.get(r["task"], 999), r["task"], r["model"]))


# --- robustness ----------------------------------------------------------------------------------

def robustness_rows(record: dict, metric: str = ROBUSTNESS_METRIC) -> list[dict]:
    """One row per (corruption, severity) of a robustness result, plus each corruption's mean relative drop."""
    from dermbench.protocols.robustness import split_metric_name

    metrics = record["metrics"]
    rows = []
    for name, m in metrics.items():
        base, corruption, severity = split_metric_name(name)
        if base == metric and corruption is not None and severity is not None:
            rows.append({"corruption": corruption, "severity": severity, "value": m,
                         "delta": metrics.get(f"{metric}_delta@{corruption}@{severity}"),
                         "rel_drop": metrics.get(f"{metric}_rel_drop@{corruption}")})
    corruption_order = list((record.get("info") or {}).get("corruptions") or {})
    return sorted(rows, key=lambda r: (corruption_order.index(r["corruption"]) if r["corruption"] in corruption_order
                                       else 99, r["corruption"], r["severity"]))


def build_robustness(results_dir: Path, records: Sequence[dict]) -> Optional[Section]:
    chosen = _order([r for r in records if r.get("protocol") == "robustness"])
    if not chosen:
        return None
    metric = ROBUSTNESS_METRIC
    md = ["## Robustness to acquisition artefacts", "",
          f"Linear probe trained on clean features; {metric.upper()} (%) on corrupted test images, with 95% CIs. "
          "Δ: corrupted minus clean, CI from the paired (shared) bootstrap resamples. Rel. drop: mean over severities "
          "of (clean − corrupted) / clean. Corruptions: docs/robustness.md.", ""]
    html_parts = ["<h2>Robustness to acquisition artefacts</h2>"]
    summary_header = ["model", "task", f"clean {metric.upper()}", "mean rel. drop (%)", "corruptions", "severities"]
    summary = []
    csv_rows = []
    for r in chosen:
        m = r["metrics"]
        settings = (r.get("provenance") or {}).get("config", {}).get("protocol", {})
        summary.append([r["model"], r.get("task_title", r["task"]), _cell(m.get(metric)), _cell(m.get(f"{metric}_rel_drop")),
                        str(len(settings.get("corruptions", []))), ",".join(map(str, settings.get("severities", [])))])
    md += [_md_table(summary_header, summary), ""]
    html_parts.append(_html_table(summary_header, summary))
    header = ["corruption", "severity", metric.upper(), "Δ vs clean", "rel. drop (corruption mean)"]
    for r in chosen:
        rows = robustness_rows(r, metric)
        table = [[x["corruption"], str(x["severity"]), _cell(x["value"]), _cell(x["delta"]), _cell(x["rel_drop"])]
                 for x in rows]
        title = f"{r.get('task_title', r['task'])} · {r['model']} (clean {_cell(r['metrics'].get(metric))})"
        md += [f"### {title}", "", _md_table(header, table), ""]
        html_parts += [f"<h3>{html.escape(title)}</h3>", _html_table(header, table)]
        for x in rows:
            csv_rows.append([r["model"], r["task"], x["corruption"], x["severity"], *(
                (x[k] or {}).get(f, math.nan) for k in ("value", "delta", "rel_drop") for f in ("value", "ci_low", "ci_high"))])
    csv_header = ["model", "task", "corruption", "severity"] + [f"{k}_{f}" for k in (metric, "delta", "rel_drop")
                                                                 for f in ("value", "ci_low", "ci_high")]
    figure = ("fig_robustness.svg", robustness_svg(chosen, metric))
    md.append(f"![{metric} against severity](fig_robustness.svg)")
    return Section(name="robustness", title="Robustness", markdown="\n".join(md) + "\n", html="\n".join(html_parts),
                   files=[("robustness.csv", _csv(csv_header, csv_rows))], figures=[figure])


@memoized_svg
def robustness_svg(records: Sequence[dict], metric: str = ROBUSTNESS_METRIC) -> bytes:
    """One panel per (task, corruption): the metric against severity (0 = clean) with CI bands, one line per model."""
    from dermbench.report.figures import _figure, _render, _with_rc, colour, figure_legend

    models = sorted({r["model"] for r in records})
    panels: dict[tuple[str, str], dict[str, list]] = {}
    for r in records:
        clean = r["metrics"].get(metric, {})
        for x in robustness_rows(r, metric):
            series = panels.setdefault((r.get("task_title", r["task"]), x["corruption"]), {})
            points = series.setdefault(r["model"], [(0, clean.get("value"), clean.get("ci_low"), clean.get("ci_high"))])
            points.append((x["severity"], x["value"]["value"], x["value"]["ci_low"], x["value"]["ci_high"]))

    def draw():
        n = max(len(panels), 1)
        cols = min(n, 6)
        rows = math.ceil(n / cols)
        fig = _figure(1.0 + 1.9 * cols, 0.7 + 1.7 * rows)
        for k, ((task, corruption), series) in enumerate(panels.items()):
            ax = fig.add_subplot(rows, cols, k + 1)
            for i, model in enumerate(models):
                pts = [p for p in series.get(model, []) if p[1] is not None and not math.isnan(p[1])]
                if not pts:
                    continue
                xs = [p[0] for p in pts]
                ax.plot(xs, [100 * p[1] for p in pts], marker="o", markersize=2.5, linewidth=1.0, color=colour(i),
                        label=model)
                ax.fill_between(xs, [100 * p[2] for p in pts], [100 * p[3] for p in pts], color=colour(i), alpha=0.15,
                                linewidth=0)
            ax.set_title(f"{task}: {corruption}", fontsize=7)
            ax.set_xticks(range(0, 6))
            ax.set_xlabel("severity (0 = clean)")
            if k % cols == 0:
                ax.set_ylabel(f"{metric.upper()} (%)")
            ax.grid(linewidth=0.3, color="#cccccc")
        figure_legend(fig)
        title = f"Robustness: {metric.upper()} against corruption severity"
        fig.suptitle(title, x=0.02, ha="left")
        fig.tight_layout(rect=(0, 0, 1, 0.95))
        return _render(fig, title)

    return _with_rc(draw)


# --- transfer ------------------------------------------------------------------------------------

def transfer_matrix(records: Sequence[dict], metric: str = "auroc") -> dict[tuple[str, str], dict]:
    """family -> model -> {(source, target): {'value': metric record, 'drop': drop record or None}}."""
    out: dict = {}
    for r in records:
        info = r.get("info") or {}
        family, target = info.get("family"), r["task"]
        for source in info.get("sources", []):
            cell = r["metrics"].get(f"{metric}@{source}")
            if cell is None:
                continue
            out.setdefault(family, {}).setdefault(r["model"], {})[(source, target)] = {
                "value": cell, "drop": r["metrics"].get(f"{metric}_drop@{source}")}
    return out


def build_transfer(results_dir: Path, records: Sequence[dict]) -> Optional[Section]:
    from dermbench.data.tasks import PAPER_ORDER

    chosen = [r for r in records if r.get("protocol") == "transfer"]
    if not chosen:
        return None
    metric = "auroc"
    titles = {r["task"]: r.get("task_title", r["task"]) for r in chosen}
    rank = {t: i for i, t in enumerate(PAPER_ORDER)}
    md = ["## Cross-dataset transfer", "",
          f"Linear probe trained on the row task's training split, tested on the column task's test split through "
          f"the family's class mapping (task cards, `[transfer]`); {metric.upper()} (%) with 95% CIs. The diagonal is "
          "in-domain. Drop: in-domain (the column's diagonal) minus transfer, with a paired CI (same test set, shared "
          "resamples).", ""]
    html_parts = ["<h2>Cross-dataset transfer</h2>"]
    figures, csv_rows = [], []
    for family, by_model in sorted(transfer_matrix(chosen, metric).items()):
        for model, cells in sorted(by_model.items()):
            tasks = sorted({t for pair in cells for t in pair}, key=lambda t: (rank.get(t, 999), t))
            header = ["train \\ test"] + [titles.get(t, t) for t in tasks]
            values = [[titles.get(s, s)] + [_cell(cells.get((s, t), {}).get("value")) for t in tasks] for s in tasks]
            drops = [[titles.get(s, s)] + ["(in-domain)" if s == t else _cell((cells.get((s, t)) or {}).get("drop"))
                                           for t in tasks] for s in tasks]
            title = f"{family} · {model}"
            md += [f"### {title}: {metric.upper()}", "", _md_table(header, values), "",
                   f"### {title}: drop from in-domain", "", _md_table(header, drops), ""]
            html_parts += [f"<h3>{html.escape(title)}: {metric.upper()}</h3>", _html_table(header, values),
                           f"<h3>{html.escape(title)}: drop from in-domain</h3>", _html_table(header, drops)]
            for (s, t), c in cells.items():
                d = c.get("drop") or {}
                csv_rows.append([family, model, s, t, s == t, c["value"]["value"], c["value"]["ci_low"],
                                 c["value"]["ci_high"], d.get("value", math.nan), d.get("ci_low", math.nan),
                                 d.get("ci_high", math.nan)])
            name = f"fig_transfer_{family}_{model}.svg".replace("/", "_").replace("@", "_")
            figures.append((name, transfer_svg(title, tasks, [titles.get(t, t) for t in tasks],
                                               {k: v["value"]["value"] for k, v in cells.items()}, metric)))
            md += [f"![{title}]({name})", ""]
    header = ["family", "model", "train_task", "test_task", "in_domain", f"{metric}_value", f"{metric}_ci_low",
              f"{metric}_ci_high", "drop_value", "drop_ci_low", "drop_ci_high"]
    return Section(name="transfer", title="Transfer", markdown="\n".join(md) + "\n", html="\n".join(html_parts),
                   files=[("transfer.csv", _csv(header, csv_rows))], figures=figures)


@memoized_svg
def transfer_svg(title: str, tasks: Sequence[str], task_titles: Sequence[str], values: dict, metric: str) -> bytes:
    """Heatmap train (rows) x test (columns) with the value in each cell; the diagonal outlined."""
    import numpy as np

    from dermbench.report.figures import MISSING_COLOUR, _figure, _render, _with_rc

    def draw():
        data = np.array([[values.get((s, t), math.nan) for t in tasks] for s in tasks], dtype=float)
        fig = _figure(1.8 + 0.9 * len(tasks), 1.2 + 0.6 * len(tasks))
        ax = fig.add_subplot(1, 1, 1)
        ax.set_facecolor(MISSING_COLOUR)
        image = ax.imshow(np.ma.masked_invalid(100 * data), cmap="viridis", vmin=50, vmax=100)
        for i in range(len(tasks)):
            for j in range(len(tasks)):
                if math.isfinite(data[i, j]):
                    ax.text(j, i, f"{100 * data[i, j]:.1f}", ha="center", va="center", fontsize=7,
                            color="white" if data[i, j] < 0.8 else "black", fontweight="bold" if i == j else "normal")
        ax.set_xticks(range(len(tasks)), labels=task_titles, rotation=30, ha="right")
        ax.set_yticks(range(len(tasks)), labels=task_titles)
        ax.set_xlabel("test task")
        ax.set_ylabel("train task")
        fig.colorbar(image, ax=ax, label=f"{metric.upper()} (%)")
        ax.set_title(title)
        fig.tight_layout()
        return _render(fig, title)

    return _with_rc(draw)


# --- boundary metrics ------------------------------------------------------------------------------

BOUNDARY_METRICS = (("hd95", "HD95 (px, original resolution)", 1.0), ("surface_dice", "surface Dice (%)", 100.0),
                    ("threshold_jaccard", "thresholded Jaccard (%, ISIC 2018)", 100.0))


def build_boundary(results_dir: Path, records: Sequence[dict]) -> Optional[Section]:
    chosen = _order([r for r in records if r.get("kind") == "segmentation" and "hd95" in r.get("metrics", {})])
    if not chosen:
        return None
    header = ["task", "protocol", "model", "Dice (%)"] + [t for _, t, _ in BOUNDARY_METRICS] + ["tolerance (px)",
                                                                                                "HD95 undefined"]
    rows, csv_rows = [], []
    for r in chosen:
        m, info = r["metrics"], (r.get("info") or {}).get("boundary_metrics", {})
        rows.append([r.get("task_title", r["task"]), r["protocol"], r["model"], _cell(m.get("dice"))]
                    + [_cell(m.get(k), scale) for k, _, scale in BOUNDARY_METRICS]
                    + [f"{info.get('surface_dice_tolerance_px', math.nan):g}", str(info.get("n_test_hd95_undefined", "—"))])
        csv_rows.append([r["task"], r["protocol"], r["model"]] + [m.get(k, {}).get(f, math.nan) for k, _, _ in
                                                                  BOUNDARY_METRICS for f in ("value", "ci_low", "ci_high")])
    md = ["## Segmentation boundary metrics", "",
          "Per image at each mask's original resolution, mean over test images with 95% bootstrap CIs: HD95 (95th "
          "percentile Hausdorff distance, pixels; lower is better), normalised surface Dice at the tolerance shown, and "
          "the ISIC 2018 challenge's thresholded Jaccard (an image's Jaccard below 0.65 scores 0). HD95 is undefined "
          "when exactly one of prediction and ground truth is empty; the last column counts those images.", "",
          _md_table(header, rows), ""]
    csv_header = ["task", "protocol", "model"] + [f"{k}_{f}" for k, _, _ in BOUNDARY_METRICS
                                                  for f in ("value", "ci_low", "ci_high")]
    return Section(name="boundary", title="Boundary metrics", markdown="\n".join(md),
                   html="<h2>Segmentation boundary metrics</h2>" + _html_table(header, rows),
                   files=[("boundary.csv", _csv(csv_header, csv_rows))])
