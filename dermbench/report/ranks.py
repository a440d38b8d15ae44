"""Ranks with uncertainty for every leaderboard table (:mod:`dermbench.stats.ranks`).

For each leaderboard table (task group × protocol × metric; per-setting tables excluded) and for each
protocol × metric over *all* its tasks: the models' mean rank, Borda count and position with 95% bootstrap
intervals (test images resampled within each task with the stored shared resamples), the Friedman test
with the Nemenyi critical difference (≥ 3 models, ≥ 2 tasks), and the bootstrap pairwise tests of the
mean-rank differences (Holm over the pairs) that draw the critical-difference diagram. A model is ranked
in a table only when it has a result on every task of the table (others are listed as left out); a task
whose models' replicates are not on the same stored resamples is left out and named.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from dermbench.report.calibration import markdown_html
from dermbench.report.figures import memoized_svg
from dermbench.report.sections import Section
from dermbench.stats.ranks import RankResult, rank_models

CSV_COLUMNS = ["table", "model", "n_tasks", "mean_rank", "mean_rank_low", "mean_rank_high", "borda", "borda_low",
               "borda_high", "position", "position_low", "position_high", "n_boot_valid", "friedman_chi2", "friedman_p",
               "nemenyi_cd"]


def _rankings(results_dir: Path, records: Sequence[dict]) -> list[tuple[str, RankResult, list[str]]]:
    from dermbench.report.leaderboard import ReplicateStore, _paired, build_tables
    from dermbench.report.labels import METRIC_TITLES

    store = ReplicateStore(Path(results_dir))
    index = {(r["model"], r["task"], r["protocol"]): r for r in records}
    tables = [t for t in build_tables(records) if t.task is None and len(t.models) >= 2]
    specs = [(t.title, t.protocol, t.metric, list(t.tasks), list(t.models)) for t in tables]
    # the same protocol × metric over every task of every group
    for protocol, metric in dict.fromkeys((t.protocol, t.metric) for t in tables):
        tasks = [x for t in tables if (t.protocol, t.metric) == (protocol, metric) for x in t.tasks]
        groups = {t.group for t in tables if (t.protocol, t.metric) == (protocol, metric)}
        if len(groups) > 1:
            models = sorted({m for t in tables if (t.protocol, t.metric) == (protocol, metric) for m in t.models})
            specs.append((f"all tasks · {protocol} · {METRIC_TITLES.get(metric, metric)}", protocol, metric, tasks, models))
    out = []
    for title, protocol, metric, tasks, models in specs:
        notes = []
        complete = [m for m in models if all((m, t, protocol) in index and metric in index[(m, t, protocol)]["metrics"]
                                             for t in tasks)]
        if len(complete) < len(models):
            notes.append("left out (a result missing on some task): " + ", ".join(sorted(set(models) - set(complete))))
        points, reps, used = {}, {}, []
        for t in tasks:
            recs = [index[(m, t, protocol)] for m in complete]
            rep = [store.get(r) for r in recs]
            if any(x is None or metric not in x for x in rep) or any(not _paired(recs[0], r) for r in recs[1:]):
                notes.append(f"{t}: no paired replicates, left out")
                continue
            points[t] = np.array([float(r["metrics"][metric]["value"]) for r in recs])
            reps[t] = np.stack([np.asarray(x[metric], np.float64) for x in rep])
            used.append(t)
        if len(complete) < 2 or not used:
            continue
        try:
            out.append((title, rank_models(complete, used, points, reps), notes))
        except ValueError as exc:
            notes.append(str(exc))
    return out


def _iv(v: float, lo: float, hi: float, digits: int = 2) -> str:
    f = lambda x: "—" if not math.isfinite(x) else f"{x:.{digits}f}"  # noqa: E731
    return f"{f(v)} [{f(lo)}, {f(hi)}]"


def format_ranks(rankings) -> str:
    out = ["Per table: position (1 = best), mean rank over the table's tasks (1 = best) and Borda count (points for "
           "each model beaten, ½ per tie), each with its 95% bootstrap interval (test images resampled within every task "
           "with the stored shared resamples). Pairs: bootstrap test of the mean-rank difference, Holm over the pairs; "
           "Friedman/Nemenyi where ≥ 3 models and ≥ 2 tasks.", ""]
    for title, res, notes in rankings:
        out += [f"### {title} ({len(res.tasks)} task{'s' if len(res.tasks) != 1 else ''})", "",
                "| model | position | mean rank | Borda |", "|---|---|---|---|"]
        for i in np.argsort(res.mean_rank, kind="stable"):
            iv = res.intervals
            out.append(f"| {res.models[i]} | {_iv(res.position[i], *iv['position'][i], 1)} | "
                       f"{_iv(res.mean_rank[i], *iv['mean_rank'][i])} | {_iv(res.borda[i], *iv['borda'][i], 1)} |")
        out.append("")
        f = res.friedman
        out.append(f"Friedman: χ² = {f['chi2']:.3f}, p = {f['p']:.4f}, Nemenyi CD (α = 0.05) = {f['cd']:.3f}."
                   if math.isfinite(f.get("chi2", math.nan)) else f"Friedman: {f['note']}.")
        pairs = "; ".join(f"{p['a']} vs {p['b']}: Δ mean rank {p['diff']:+.2f} [{p['ci_low']:+.2f}, {p['ci_high']:+.2f}], "
                          f"p_holm {p['p_holm']:.3f}{' (distinguishable)' if p['distinguishable'] else ''}" for p in res.pairs)
        out.append(f"Pairs: {pairs}. Replicates used: {res.n_boot_valid}.")
        for n in notes:
            out.append(f"Note: {n}.")
        out.append("")
    return "\n".join(out)


@memoized_svg
def cd_svg(title: str, res: RankResult) -> bytes:
    """Critical-difference diagram: models on the mean-rank axis (1 = best, left) with their bootstrap
    intervals; a thick bar joins models the bootstrap pairwise tests cannot tell apart (Holm, α = 0.05);
    the Nemenyi CD, where defined, is drawn above the axis."""
    from dermbench.report.figures import _figure, _render, _with_rc, colour

    def draw():
        k = len(res.models)
        order = list(np.argsort(res.mean_rank, kind="stable"))
        fig = _figure(5.0, 1.4 + 0.28 * k)
        ax = fig.add_subplot(1, 1, 1)
        for row, i in enumerate(order):
            y = -(row + 1)
            lo, hi = res.intervals["mean_rank"][i]
            ax.plot([lo, hi], [y, y], color=colour(i), linewidth=1.2)
            ax.plot([res.mean_rank[i]], [y], "o", color=colour(i), markersize=4)
            ax.text(k + 0.15, y, f"{res.models[i]} ({res.mean_rank[i]:.2f})", va="center", fontsize=7)
        # connect consecutive runs of indistinguishable models
        together = {(p["a"], p["b"]) for p in res.pairs if not p["distinguishable"]}
        together |= {(b, a) for a, b in together}
        level = 0
        for s in range(k):
            e = s
            while e + 1 < k and all((res.models[order[a]], res.models[order[e + 1]]) in together for a in range(s, e + 1)):
                e += 1
            if e > s:
                xs = [res.mean_rank[order[s]], res.mean_rank[order[e]]]
                ax.plot(xs, [0.35 + 0.2 * level] * 2, color="#333333", linewidth=3, solid_capstyle="butt")
                level += 1
        cd = res.friedman.get("cd", math.nan)
        if math.isfinite(cd):
            ax.plot([1, 1 + cd], [0.35 + 0.2 * level + 0.3] * 2, color="#d62728", linewidth=1.5)
            ax.text(1 + cd / 2, 0.35 + 0.2 * level + 0.45, f"Nemenyi CD {cd:.2f}", ha="center", fontsize=6.5, color="#d62728")
        ax.set_xlim(0.8, k + 1.6)
        ax.set_ylim(-(k + 0.8), 1.3 + 0.2 * level)
        ax.set_yticks([])
        ax.set_xticks(range(1, k + 1))
        ax.set_xlabel("mean rank (1 = best), 95% bootstrap interval")
        ax.set_title(title)
        for side in ("left", "right", "top"):
            ax.spines[side].set_visible(False)
        fig.tight_layout()
        return _render(fig, title)

    return _with_rc(draw)


def build(results_dir: Path, records: Sequence[dict]) -> Optional[Section]:
    rankings = _rankings(results_dir, records)
    if not rankings:
        return None
    rows = []
    for title, res, _ in rankings:
        for i, m in enumerate(res.models):
            iv = res.intervals
            rows.append({"table": title, "model": m, "n_tasks": len(res.tasks), "mean_rank": res.mean_rank[i],
                         "mean_rank_low": iv["mean_rank"][i][0], "mean_rank_high": iv["mean_rank"][i][1],
                         "borda": res.borda[i], "borda_low": iv["borda"][i][0], "borda_high": iv["borda"][i][1],
                         "position": res.position[i], "position_low": iv["position"][i][0],
                         "position_high": iv["position"][i][1], "n_boot_valid": res.n_boot_valid,
                         "friedman_chi2": res.friedman.get("chi2"), "friedman_p": res.friedman.get("p"),
                         "nemenyi_cd": res.friedman.get("cd")})
    buf = io.StringIO()
    pd.DataFrame(rows, columns=CSV_COLUMNS).to_csv(buf, index=False, float_format="%.6f", lineterminator="\n")
    markdown = "## Ranks with uncertainty\n\n" + format_ranks(rankings)
    figures = []
    # one diagram per protocol × metric over all tasks; with a single task group, one per multi-task table
    overall = [x for x in rankings if x[0].startswith("all tasks")] or [x for x in rankings if len(x[1].tasks) > 1]
    for title, res, _ in overall:
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in title.replace(" · ", "_"))
        figures.append((f"fig_critical_difference_{safe}.svg", cd_svg(f"{title}: critical difference", res)))
    return Section(name="ranks", title="Ranks with uncertainty", markdown=markdown, html=markdown_html(markdown),
                   files=[("ranks.csv", buf.getvalue().encode("utf-8"))], figures=figures, in_summary=True)
