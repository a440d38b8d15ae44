"""The interactive leaderboard in a real browser: headless Chromium (Debian's ``chromium``) through playwright.

The page is rendered from hand-made leaderboard tables (no run needed), loaded from a file, and
operated: the metric select filters the tables, a header click sorts a table, the task select opens
a drill-down, and at 390 px the page does not scroll sideways while a wide table scrolls in its box.
`.ci/run` installs Chromium when it is missing; the test skips, saying why, only where it cannot be
found or playwright is not installed.
"""
from __future__ import annotations

import importlib.util
import math
import re
import shutil
import tempfile
from pathlib import Path

import pytest

LAUNCH_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "chromium-headless-shell"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


def _cell(value, lo, hi, p=None, contaminated=False):
    return {"value": value, "ci_low": lo, "ci_high": hi, "p_vs_best": p, "contaminated": contaminated}


def _tables():
    from dermbench.report.leaderboard import Table

    models = ["alpha", "beta", "gamma"]
    tasks = [f"task{i}" for i in range(9)]  # nine columns: wider than a phone
    auroc = {(m, t): _cell(0.6 + 0.1 * i + 0.01 * j, 0.5 + 0.1 * i, 0.7 + 0.1 * i, p=0.01 if i == 0 else None)
             for i, m in enumerate(models) for j, t in enumerate(tasks)}
    f1 = {(m, t): _cell(0.9 - 0.1 * i, 0.8 - 0.1 * i, 0.95 - 0.1 * i) for i, m in enumerate(models) for t in tasks}
    auroc[("beta", "task0")]["contaminated"] = True
    seg = {("alpha", "seg"): _cell(0.8, 0.7, 0.9), ("beta", "seg"): _cell(0.7, 0.6, 0.8, p=0.2)}
    settings = {(m, f"auroc@{f}"): _cell(0.5 + 0.1 * i + f / 10, 0.4, 0.9) for i, m in enumerate(models) for f in (0.2, 1.0)}
    return [
        Table("malignancy", "linear", "auroc", tasks, [t.upper() for t in tasks], models, auroc),
        Table("malignancy", "linear", "f1", tasks, [t.upper() for t in tasks], models, f1),
        Table("segmentation", "seg-upernet", "dice", ["seg"], ["SEG"], ["alpha", "beta"], seg),
        Table("malignancy", "label-efficiency", "auroc", ["auroc@0.2", "auroc@1.0"], ["20%", "100%"], models, settings,
              task="task0", task_title="TASK0"),
    ]


@pytest.fixture(scope="module")
def page_file():
    from dermbench.report.leaderboard import to_html

    kinds = {("malignancy", "linear"): "classification", ("segmentation", "seg-upernet"): "segmentation",
             ("malignancy", "label-efficiency"): "classification"}
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'
    sections = '<h2>Ranks</h2><table id="ranks"><tr><th>model</th><th>rank [95% CI]</th></tr><tr><td>alpha</td><td>1 [1, 2]</td></tr></table>'
    text = to_html(_tables(), [("fig_bars_malignancy_linear_auroc.svg", svg)], "", sections, kinds)
    folder = Path(tempfile.mkdtemp(prefix="dermbench-browser-"))
    path = folder / "leaderboard.html"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def browser():
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright is not installed (pip install playwright); `.ci/run` installs it with the dev extra")
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium binary (apt-get install -y chromium, as `.ci/run` does)")
    from playwright.sync_api import sync_playwright

    # launch() gives Chromium a fresh, empty profile of its own (it refuses an explicit --user-data-dir)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=LAUNCH_FLAGS)
        yield b
        b.close()


def _open(browser, path: Path, width: int):
    page = browser.new_page(viewport={"width": width, "height": 800})
    errors, requests = [], []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type in ("error", "warning") else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("request", lambda req: requests.append(req.url))
    page.goto(path.as_uri(), wait_until="load")
    return page, errors, requests


def _visible_captions(page) -> list[str]:
    return page.eval_on_selector_all("section.lb:not([hidden]) caption", "els => els.map(e => e.textContent)")


def test_page_is_self_contained_with_an_inline_script_only(page_file):
    text = page_file.read_text(encoding="utf-8")
    assert '<meta name="viewport"' in text
    assert not re.search(r"<script[^>]*\bsrc\s*=", text, re.I) and "<link" not in text.lower()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:|//)""", text, re.I)


def test_filters_sort_and_drill_down_in_chromium(browser, page_file):
    page, errors, requests = _open(browser, page_file, 1400)
    # opens on each protocol's main metric: the two AUROC/Dice group tables, not F1, not per-task tables
    assert _visible_captions(page) == ["malignancy · linear · AUROC", "segmentation · seg-upernet · Dice"]
    assert page.text_content("#lb-count") == "2 of 3 tables shown"  # per-task tables live in the drill-down
    page.select_option("#f-metric", "f1")
    assert _visible_captions(page) == ["malignancy · linear · F1"]
    page.select_option("#f-metric", "all")
    page.select_option("#f-group", "segmentation")
    assert _visible_captions(page) == ["segmentation · seg-upernet · Dice"]
    page.select_option("#f-group", "all")
    page.select_option("#f-protocol", "linear")
    assert len(_visible_captions(page)) == 2

    # sorting: F1 is best for alpha; click TASK0 once (descending), then again (ascending)
    first_rows = "t => Array.from(document.querySelectorAll('#' + t + ' tbody tr')).map(r => r.cells[0].textContent)"
    header = "#t1 thead th:nth-child(2) button"
    page.click(header)
    assert page.evaluate(first_rows, "t1") == ["alpha", "beta", "gamma"]
    assert page.get_attribute("#t1 thead th:nth-child(2)", "aria-sort") == "descending"
    page.click(header)
    assert page.evaluate(first_rows, "t1") == ["gamma", "beta", "alpha"]
    page.click("#t1 thead th:nth-child(1) button")  # the model column sorts by name
    assert page.evaluate(first_rows, "t1") in (["gamma", "beta", "alpha"], ["alpha", "beta", "gamma"])

    # CIs and marks are in the cells: alpha is significantly worse on AUROC (p 0.01), beta contaminated
    cell = page.inner_text("#t0 tbody tr:nth-child(1) td:nth-child(2)")
    assert "†" in cell and "[" in cell and "]" in cell
    assert "‡" in page.inner_text("#t0 tbody tr:nth-child(2) td:nth-child(2)")
    assert "p vs best = 0.01" in page.get_attribute("#t0 tbody tr:nth-child(1) td:nth-child(2)", "title")

    # drill-down: task0 has its per-setting table and links to the figure of its group
    page.select_option("#f-task", "task0")
    shown = page.eval_on_selector_all("section.task:not([hidden])", "els => els.map(e => e.dataset.task)")
    assert shown == ["task0"]
    assert page.is_visible("section.task[data-task=task0] >> text=TASK0 · label-efficiency · AUROC by training fraction")
    href = page.get_attribute("section.task[data-task=task0] .figlinks a", "href")
    assert href == "#fig-fig_bars_malignancy_linear_auroc"
    assert page.evaluate("document.querySelector('#fig-fig_bars_malignancy_linear_auroc img').naturalWidth") == 10
    page.select_option("#f-task", "seg")
    assert page.eval_on_selector_all("section.task:not([hidden])", "els => els.map(e => e.dataset.task)") == ["seg"]
    assert page.is_visible("#ranks")  # Sections are rendered as their builders wrote them
    page.close()
    assert errors == []
    assert all(u.startswith(("file:", "data:")) for u in requests), requests


def test_readable_at_390_px(browser, page_file):
    page, errors, _ = _open(browser, page_file, 390)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling of the page
    box = page.evaluate("(() => { const b = document.querySelector('#t0').parentElement;"
                        " return [b.clientWidth, b.scrollWidth, getComputedStyle(b).overflowX]; })()")
    assert box[0] <= 390 and box[1] > box[0] and box[2] == "auto"  # the nine-column table scrolls in its box
    font = page.evaluate("parseFloat(getComputedStyle(document.querySelector('#t0 td')).fontSize)")
    assert font >= 11 and not math.isnan(font)
    page.close()
    assert errors == []
