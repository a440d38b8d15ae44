"""The interactive leaderboard page: one self-contained HTML file that works offline.

Everything is inside the file: the CSS, one inline script (no ``src``), the figures as SVG data
URIs; it makes no request. What a reader can do on it:

- choose the task group, the protocol and the metric (three selects; "all" shows every table of
  that kind); the page opens on each protocol's main metric, and a count says how many tables show;
- sort any table by any column (click its header; again to reverse; missing values always last);
- read each cell's 95% CI under its value, the † of a significant paired-bootstrap difference from
  the column's best (the p-value is in the cell's tooltip), ‡ for contamination, the best in bold;
- open a task (the drill-down select): its results in every protocol, its per-setting tables
  (label efficiency by training fraction, federated settings) and links to every figure it appears in;
- see every Section (ranks with intervals, calibration, ...) as its builder rendered it, the fairness
  tables and all figures.

At 390 px the page stays readable: a viewport meta, the controls wrap, and each table scrolls
inside its own box instead of widening the page.

The tables are the leaderboard's :class:`~dermbench.report.leaderboard.Table` objects, used
through their public methods only (``value``, ``is_best``, ``worse``, ``p_vs_best``, ``cells``,
``avg_ci``), so this module does not import the leaderboard (which calls it).
"""
from __future__ import annotations

import base64
import html
import math
import re
from typing import Any, Optional, Sequence

from dermbench.report.labels import MAIN_METRIC, METRIC_TITLES

PAGE_TITLE = "dermbench leaderboard"

CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d1d1f;line-height:1.4}
header{position:sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid #ddd;padding:.6em 1em}
header h1{font-size:1.2em;margin:0 0 .4em 0}
main{padding:0 1em 2em 1em;max-width:1400px}
.controls{display:flex;flex-wrap:wrap;gap:.5em 1em;align-items:center}
.controls label{font-size:.9em;display:flex;flex-direction:column}
.controls select{font-size:1em;padding:.2em;max-width:15em}
nav{display:flex;flex-wrap:wrap;gap:.3em 1em;font-size:.9em;margin-top:.4em}
.count{font-size:.85em;color:#555}
.legend{font-size:.85em;color:#444}
.scroll{display:inline-block;vertical-align:top;overflow-x:auto;max-width:100%;-webkit-overflow-scrolling:touch;margin-bottom:1.4em;border:1px solid #e3e3e3}
table{border-collapse:collapse;font-size:.88em}
caption{font-weight:600;text-align:left;padding:.4em .5em;white-space:normal}
th,td{border:1px solid #ddd;padding:.3em .5em;text-align:center;white-space:nowrap}
th{background:#f3f4f6;position:relative}
th button{font:inherit;font-weight:600;background:none;border:0;cursor:pointer;padding:0;color:inherit}
th[aria-sort=ascending] button::after{content:" \\25B2"}
th[aria-sort=descending] button::after{content:" \\25BC"}
td:first-child,th:first-child{text-align:left;position:sticky;left:0;background:#fff}
th:first-child{background:#f3f4f6}
td.best{font-weight:700;background:#e8f5e9}
td.best:first-child{background:#e8f5e9}
.ci{display:block;font-size:.8em;color:#555;font-weight:400}
.sig{color:#b00020;font-weight:700}
.ddag{color:#8a6d00}
.missing{color:#999}
section.lb[hidden],section.task[hidden]{display:none}
figure{margin:1em 0 2em 0}
figure img{max-width:100%;height:auto}
figcaption{font-size:.85em;color:#444}
.figlinks{font-size:.9em}
h2{font-size:1.1em;margin-top:1.6em}
h3{font-size:1em}
@media (max-width:600px){header{position:static;padding:.5em}main{padding:0 .5em 2em .5em}
 table{font-size:.8em}.controls select{max-width:100%}}
"""

# The page's behaviour: filtering, sorting, drill-down. Plain DOM code, no library.
SCRIPT = r"""
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  function filter() {
    var g = $("f-group").value, p = $("f-protocol").value, m = $("f-metric").value, shown = 0;
    document.querySelectorAll("section.lb").forEach(function (s) {
      var metricOk = m === "main" ? s.dataset.main === "1" : (m === "all" || s.dataset.metric === m);
      var ok = (g === "all" || s.dataset.group === g) && (p === "all" || s.dataset.protocol === p) && metricOk;
      s.hidden = !ok;
      if (ok) { shown += 1; }
    });
    $("lb-count").textContent = shown + " of " + document.querySelectorAll("section.lb").length + " tables shown";
  }
  function drill() {
    var t = $("f-task").value;
    document.querySelectorAll("section.task").forEach(function (s) { s.hidden = s.dataset.task !== t; });
  }
  function sortBy(th) {
    var table = th.closest("table"), body = table.tBodies[0];
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var dir = th.getAttribute("aria-sort") === "descending" ? "ascending" : "descending";
    table.querySelectorAll("thead th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir);
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
      var xn = x === undefined || x === "" ? null : Number(x), yn = y === undefined || y === "" ? null : Number(y);
      if (xn === null && yn === null) { return 0; }
      if (xn === null) { return 1; }
      if (yn === null) { return -1; }
      if (isNaN(xn) || isNaN(yn)) {
        return dir === "ascending" ? String(x).localeCompare(String(y)) : String(y).localeCompare(String(x));
      }
      return dir === "ascending" ? xn - yn : yn - xn;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  document.addEventListener("DOMContentLoaded", function () {
    ["f-group", "f-protocol", "f-metric"].forEach(function (id) { $(id).addEventListener("change", filter); });
    $("f-task").addEventListener("change", drill);
    document.querySelectorAll("th button").forEach(function (b) {
      b.addEventListener("click", function () { sortBy(b.parentNode); });
    });
    filter();
    drill();
  });
})();
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-").lower() or "x"


def _pct(v: Optional[float]) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def _num_attr(v: Optional[float]) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.6g}"


def _cell(t, model: str, column: str) -> str:
    """One value cell: the value, its CI below, † (with the p-value in the tooltip) and ‡."""
    value = t.value(model, column)
    cls = ' class="best"' if t.is_best(model, column) else ""
    if value is None:
        return '<td data-v=""><span class="missing">—</span></td>'
    if column == "avg":
        ci = t.avg_ci.get(model)
        contaminated = False
    else:
        c = t.cells.get((model, column)) or {}
        ci = (c.get("ci_low"), c.get("ci_high")) if c.get("ci_low") is not None else None
        contaminated = bool(c.get("contaminated"))
    p = t.p_vs_best(model, column)
    tip = [f"{_pct(value)}"]
    if ci:
        tip.append(f"95% CI [{_pct(ci[0])}, {_pct(ci[1])}]")
    if p is not None and not (isinstance(p, float) and math.isnan(p)):
        tip.append(f"p vs best = {p:.3g} (paired bootstrap)")
    marks = ""
    if t.worse(model, column):
        marks += '<span class="sig" title="significantly worse than the column\'s best (paired bootstrap, p &lt; 0.05)">†</span>'
    if contaminated:
        marks += '<span class="ddag" title="the backbone saw this task\'s training images during pretraining">‡</span>'
    ci_text = f'<span class="ci">[{_pct(ci[0])}, {_pct(ci[1])}]</span>' if ci else ""
    return f'<td{cls} data-v="{_num_attr(value)}" title="{_e("; ".join(tip))}">{_pct(value)}{marks}{ci_text}</td>'


def table_html(t, table_id: str) -> str:
    columns = t.titles + (["Avg"] if t.has_average else [])
    keys = list(t.tasks) + (["avg"] if t.has_average else [])
    head = '<th scope="col"><button type="button">model</button></th>' + "".join(
        f'<th scope="col"><button type="button">{_e(c)}</button></th>' for c in columns)
    rows = []
    for m in t.models:
        rows.append(f'<tr><td data-v="{_e(m)}">{_e(m)}</td>' + "".join(_cell(t, m, k) for k in keys) + "</tr>")
    return (f'<div class="scroll"><table id="{table_id}"><caption>{_e(t.title)}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


def _is_main(t, kinds: dict[tuple[str, str], str]) -> bool:
    return t.metric == MAIN_METRIC.get(kinds.get((t.group, t.protocol), ""), t.metric)


def _options(select_id: str, label: str, values: Sequence[tuple[str, str]], selected: str) -> str:
    opts = "".join(f'<option value="{_e(v)}"{" selected" if v == selected else ""}>{_e(text)}</option>'
                   for v, text in values)
    return f'<label for="{select_id}">{_e(label)}<select id="{select_id}">{opts}</select></label>'


def _figure_id(name: str) -> str:
    return "fig-" + _slug(name.rsplit(".", 1)[0])


def _safe(name: str) -> str:
    """The leaderboard's figure-name spelling of a group, protocol or task."""
    return "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in name)


def _figures_of_task(task: str, group: str, protocols: Sequence[str], figures: Sequence[tuple[str, bytes]]) -> list[str]:
    """The figures a task appears in: the bars of its group, the heatmaps of its protocols, the figures
    named after it (fairness) and the label-efficiency panels when it has that protocol."""
    wanted = {f"fig_heatmap_{_safe(p)}.svg" for p in protocols}
    out = []
    for name, _ in figures:
        if (name.startswith(f"fig_bars_{_safe(group)}_") or name in wanted or f"_{_safe(task)}_" in name
                or (name.startswith("fig_label_efficiency") and "label-efficiency" in protocols)):
            out.append(name)
    return out


def render_leaderboard(tables: Sequence, figures: Sequence[tuple[str, bytes]] = (), fairness_html: str = "",
                       sections_html: str = "", legend_html: str = "", kinds: Optional[dict[tuple[str, str], str]] = None,
                       title: str = PAGE_TITLE) -> str:
    """The whole page. ``kinds``: (group, protocol) -> result kind, to know each table's main metric."""
    kinds = kinds or {}
    group_tables = [t for t in tables if t.task is None]
    task_tables = [t for t in tables if t.task is not None]
    groups = list(dict.fromkeys(t.group for t in group_tables))
    protocols = list(dict.fromkeys(t.protocol for t in group_tables))
    metrics = list(dict.fromkeys(t.metric for t in group_tables))
    controls = "".join([
        _options("f-group", "task group", [("all", "all groups"), *[(g, g) for g in groups]], "all"),
        _options("f-protocol", "protocol", [("all", "all protocols"), *[(p, p) for p in protocols]], "all"),
        _options("f-metric", "metric", [("main", "main metric of each"), ("all", "all metrics"),
                                        *[(m, METRIC_TITLES.get(m, m)) for m in metrics]], "main"),
    ])
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">', f"<title>{_e(title)}</title>",
             f"<style>{CSS}</style>", f"<script>{SCRIPT}</script>", "</head>", "<body>",
             f'<header><h1>{_e(title)}</h1><div class="controls">{controls}'
             '<span class="count" id="lb-count" aria-live="polite"></span></div>'
             '<nav aria-label="sections"><a href="#tables">tables</a><a href="#tasks">per task</a>'
             + ('<a href="#sections">ranks and more</a>' if sections_html else "")
             + ('<a href="#fairness">fairness</a>' if fairness_html else "")
             + ('<a href="#figures">figures</a>' if figures else "") + "</nav></header>", "<main>"]
    if legend_html:
        parts.append(f'<div class="legend">{legend_html}</div>')
    parts.append('<h2 id="tables">Tables</h2>')
    for i, t in enumerate(group_tables):
        parts.append(f'<section class="lb" data-group="{_e(t.group)}" data-protocol="{_e(t.protocol)}" '
                     f'data-metric="{_e(t.metric)}" data-main="{int(_is_main(t, kinds))}">'
                     + table_html(t, f"t{i}") + "</section>")
    # per-task drill-down
    tasks: dict[str, tuple[str, str]] = {}
    for t in group_tables:
        for key, name in zip(t.tasks, t.titles):
            tasks.setdefault(key, (name, t.group))
    parts.append('<h2 id="tasks">Per task</h2>')
    parts.append(_options("f-task", "task", [(k, v[0]) for k, v in tasks.items()], next(iter(tasks), "")))
    for key, (name, group) in tasks.items():
        body = [f"<h3>{_e(name)}</h3>"]
        in_task = [t for t in group_tables if key in t.tasks and _is_main(t, kinds)]
        models = sorted({m for t in in_task for m in t.models})
        if in_task:
            head = '<th scope="col"><button type="button">model</button></th>' + "".join(
                f'<th scope="col"><button type="button">{_e(t.protocol)} · {_e(METRIC_TITLES.get(t.metric, t.metric))}</button></th>'
                for t in in_task)
            rows = "".join(f'<tr><td data-v="{_e(m)}">{_e(m)}</td>' + "".join(
                _cell(t, m, key) if m in t.models else '<td data-v=""><span class="missing">—</span></td>' for t in in_task)
                + "</tr>" for m in models)
            body.append(f'<div class="scroll"><table id="task-{_slug(key)}"><caption>{_e(name)}: every protocol, '
                        f"main metric</caption><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>")
        for j, t in enumerate(x for x in task_tables if x.task == key):
            body.append(table_html(t, f"task-{_slug(key)}-{j}"))
        links = _figures_of_task(key, group, sorted({t.protocol for t in group_tables if key in t.tasks}), figures)
        if links:
            body.append('<p class="figlinks">Figures: ' + ", ".join(
                f'<a href="#{_figure_id(n)}">{_e(n)}</a>' for n in links) + "</p>")
        parts.append(f'<section class="task" data-task="{_e(key)}">' + "".join(body) + "</section>")
    if sections_html:
        parts.append(f'<h2 id="sections">Ranks and more</h2>{sections_html}')
    if fairness_html:
        parts.append(f'<div id="fairness">{_scrolling(fairness_html)}</div>')
    if figures:
        parts.append('<h2 id="figures">Figures</h2>')
        for name, svg in figures:
            data = base64.b64encode(svg).decode("ascii")
            parts.append(f'<figure id="{_figure_id(name)}"><img alt="{_e(name)}" src="data:image/svg+xml;base64,{data}">'
                         f"<figcaption>{_e(name)}</figcaption></figure>")
    parts += ["</main>", "</body>", "</html>"]
    return "\n".join(parts) + "\n"


def _scrolling(fragment: str) -> str:
    """Wrap every bare table of an HTML fragment in a scrolling box (fairness tables come as plain tables)."""
    return re.sub(r"(<table\b.*?</table>)", r'<div class="scroll">\1</div>', fragment, flags=re.S)


def page(title: str, body_html: str) -> str:
    """A plain self-contained page in the same style (the paper folder's index): viewport meta, inline CSS."""
    return "\n".join(["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
                      '<meta name="viewport" content="width=device-width, initial-scale=1">', f"<title>{_e(title)}</title>",
                      # long text (captions, architectures) wraps here; the leaderboard's numbers do not
                      f"<style>{CSS}td{{white-space:normal;min-width:6em}}</style>", "</head>", "<body>",
                      f"<header><h1>{_e(title)}</h1></header>",
                      f"<main>{_scrolling(body_html)}</main>", "</body>", "</html>"]) + "\n"


__all__ = ["page", "render_leaderboard", "table_html"]
