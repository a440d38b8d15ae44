"""Leaderboard, fairness, label efficiency and figures, on one small DermSynth store.

One module-scoped run (random-vit and dermino-tiny on DDI, Fitzpatrick17k-3 and Derm7pt: retrieval,
linear, label-efficiency) serves every test; DermSynth and the feature cache are the session's.
"""
from __future__ import annotations

import base64
import hashlib
import importlib.util
import inspect
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dermbench.cli import app

runner = CliRunner()
TASKS = "ddi,fitzpatrick17k-3,derm7pt"
FAST = ["--set", "linear.epochs=5", "--set", "label-efficiency.epochs=5", "--set", "label-efficiency.fractions=0.25,0.5,1.0",
        "--set", "label-efficiency.repeats=2", "--n-boot", "200", "--quiet"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("lb-results")
    res = runner.invoke(app, ["run", "--model", "random-vit,dermino-tiny", "--task", TASKS, "--output", str(out), *FAST])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def built(store, tmp_path_factory):
    from dermbench.report.leaderboard import build_leaderboard

    out = tmp_path_factory.mktemp("lb-out")
    result = build_leaderboard(store, out, formats=("md", "csv", "latex", "html"))
    return out, result


def _records(store):
    from dermbench.run.results import iter_results

    return {(r["model"], r["task"], r["protocol"]): r for r in iter_results(store)}


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


# --- bit-identical rebuild -------------------------------------------------------------------
def test_rebuild_is_bit_identical_from_predictions_alone(store, built, tmp_path):
    out, result = built
    names = {p.name for p in result["paths"]}
    assert {"leaderboard.md", "leaderboard.csv", "leaderboard.tex", "leaderboard.html", "fairness.md", "fairness.csv",
            "fig_heatmap_linear.svg", "fig_heatmap_retrieval.svg", "fig_label_efficiency_auroc.svg",
            "fig_fairness_fitzpatrick17k-3_linear_skin_type.svg", "fig_fairness_derm7pt_linear_sex.svg",
            "fig_bars_malignancy_linear_auroc.svg"} <= names
    reference = _digest(out)
    assert set(reference) == names

    # the JSON numbers are not used by --rebuild: scramble them in a copy of the store
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    for path in copy.glob("*/*/*.json"):
        if path.relative_to(copy).parts[0].startswith("_"):
            continue  # the run's bookkeeping (_jobs/, _splits/), not results
        record = json.loads(path.read_text())
        for m in record["metrics"].values():
            m.update(value=0.123, ci_low=0.1, ci_high=0.2)
        path.write_text(json.dumps(record))

    import matplotlib

    rebuilt = tmp_path / "rebuilt"
    # the caller's matplotlib settings must not leak into the figures
    with matplotlib.rc_context({"font.size": 23.0, "svg.hashsalt": None, "lines.linewidth": 4.0}):
        res = runner.invoke(app, ["leaderboard", "--results", str(copy), "--format", "all", "--out", str(rebuilt), "--rebuild"])
    assert res.exit_code == 0, res.output
    # every table and figure bit-identical; the inputs record differs as it must (it names the copy)
    from dermbench.report.leaderboard import INPUTS_FILE

    rebuilt_digest = _digest(rebuilt)
    assert json.loads((rebuilt / INPUTS_FILE).read_text())["results"] == str(copy.resolve())
    assert rebuilt_digest.pop(INPUTS_FILE) != reference[INPUTS_FILE]
    assert rebuilt_digest == {k: v for k, v in reference.items() if k != INPUTS_FILE}

    # building again into the same folder rewrites the same bytes
    from dermbench.report.leaderboard import build_leaderboard

    build_leaderboard(store, out, formats=("md", "csv", "latex", "html"))
    assert _digest(out) == reference
    for name in names:
        if name.endswith(".svg"):
            text = (out / name).read_text()
            assert "<dc:date>" not in text and "dermbench" in text


# --- fairness --------------------------------------------------------------------------------
def _subgroup_auroc(y, scores, classes_present):
    from sklearn.metrics import roc_auc_score

    if scores.shape[1] == 2:
        return roc_auc_score(y, scores[:, 1])
    if len(classes_present) == scores.shape[1]:
        return roc_auc_score(y, scores, multi_class="ovr")
    return float(np.mean([roc_auc_score(y == c, scores[:, c]) for c in classes_present]))


def test_fairness_matches_sklearn_per_subgroup(store):
    from dermbench.report.fairness import fairness_table, subgroup_values
    from dermbench.run.results import read_predictions

    table = fairness_table(store, protocol="linear", min_samples=5)
    records = _records(store)
    assert set(zip(table["task"], table["attribute"])) == {("ddi", "skin_type"), ("fitzpatrick17k-3", "skin_type"),
                                                           ("derm7pt", "sex")}
    checked = 0
    for (model, task, attribute), part in table.groupby(["model", "task", "attribute"]):
        preds = read_predictions(records[(model, task, "linear")]["_path"])
        values = subgroup_values(preds[f"group_{attribute}"], attribute)
        scores = preds[[c for c in preds.columns if c.startswith("score_")]].to_numpy()
        y = preds["label"].to_numpy()
        subs = part[part["row"] == "subgroup"]
        assert subs["n"].sum() == len(preds)  # every test image is in a subgroup, 'unknown' included
        for row in subs.itertuples():
            members = values == row.subgroup
            present = sorted(set(y[members]))
            if row.n < 5 or len(present) < 2:
                assert math.isnan(row.value) and row.note
                continue
            assert row.value == pytest.approx(_subgroup_auroc(y[members], scores[members], present), abs=1e-12)
            assert row.ci_low <= row.ci_high and row.n_boot_valid == 200
            checked += 1
        defined = subs[(subs["subgroup"] != "unknown") & subs["value"].notna()]
        gap = part[part["row"] == "gap"].iloc[0]
        assert gap["value"] == pytest.approx(defined["value"].max() - defined["value"].min(), abs=1e-12)
        # the test: the paired difference of the two extreme subgroups, its CI and p (max − min is descriptive)
        assert gap["pair_diff"] == pytest.approx(gap["value"], abs=1e-12) and 0 < gap["pair_p"] <= 1
        assert gap["pair_ci_low"] <= gap["pair_ci_high"]
        overall = part[part["row"] == "overall"].iloc[0]
        assert overall["value"] == pytest.approx(records[(model, task, "linear")]["metrics"]["auroc"]["value"], abs=1e-12)
    assert checked >= 10
    # Fitzpatrick17k-3: the unknown skin type has its own row, reported as missing (DermSynth has 1 such image)
    unknown = table[(table["task"] == "fitzpatrick17k-3") & (table["subgroup"] == "unknown")]
    assert len(unknown) == 2 and unknown["value"].isna().all() and (unknown["n"] >= 1).all()
    # deterministic
    again = fairness_table(store, protocol="linear", min_samples=5)
    assert again.equals(table)


def test_fairness_subgroup_ci_is_the_documented_within_subgroup_bootstrap(store):
    from sklearn.metrics import roc_auc_score

    from dermbench.report.fairness import fairness_table, subgroup_values
    from dermbench.run.results import read_predictions
    from dermbench.stats.bootstrap import bootstrap_indices, bootstrap_seed

    record = _records(store)[("random-vit", "ddi", "linear")]
    table = fairness_table(store, model="random-vit", task="ddi", protocol="linear")
    row = table[(table["row"] == "subgroup")].dropna(subset=["value"]).iloc[0]
    preds = read_predictions(record["_path"])
    sub = preds[subgroup_values(preds["group_skin_type"], "skin_type") == row["subgroup"]].reset_index(drop=True)
    seed = bootstrap_seed(f"ddi|fairness|skin_type={row['subgroup']}", record["split_sha256"], record["seed"])
    idx = bootstrap_indices(len(sub), 200, seed, sub["label"].to_numpy())
    y, s = sub["label"].to_numpy(), sub["score_1"].to_numpy()
    reps = np.array([roc_auc_score(y[i], s[i]) for i in idx])
    assert row["ci_low"] == pytest.approx(np.percentile(reps, 2.5), abs=1e-12)
    assert row["ci_high"] == pytest.approx(np.percentile(reps, 97.5), abs=1e-12)


def test_fairness_small_subgroups_are_missing_with_a_note(store):
    from dermbench.report.fairness import fairness_table, format_fairness

    table = fairness_table(store, task="fitzpatrick17k-3", protocol="linear", min_samples=10)
    small = table[(table["row"] == "subgroup") & (table["n"] < 10)]
    assert len(small) and small["value"].isna().all() and small["note"].str.contains("< 10").all()
    text = format_fairness(table)
    assert "fitzpatrick17k-3 · linear · skin_type" in text and "unknown" in text and "—" in text and "Notes:" in text
    assert "VI" in text and "max − min (descriptive)" in text and "gap test: highest − lowest [paired CI], p" in text
    assert "No subgroup results" in format_fairness(fairness_table(store, task="ddi", attribute="nope"))


def test_fairness_cli_prints_the_table_and_writes_csv(store, tmp_path):
    import pandas as pd

    from dermbench.report.fairness import fairness_table, format_fairness

    csv = tmp_path / "fair.csv"
    res = runner.invoke(app, ["fairness", "--results", str(store), "--task", "fitzpatrick17k-3", "--protocol", "linear",
                              "--attribute", "skin_type", "--min-samples", "5", "--csv", str(csv)])
    assert res.exit_code == 0, res.output
    expected = fairness_table(store, task="fitzpatrick17k-3", protocol="linear", attribute="skin_type", min_samples=5)
    assert format_fairness(expected) in res.output
    written = pd.read_csv(csv)
    assert len(written) == len(expected) and set(written["model"]) == {"random-vit", "dermino-tiny"}
    res = runner.invoke(app, ["fairness", "--results", str(tmp_path / "nowhere")])
    assert res.exit_code != 0 and "does not exist" in res.output


# --- label efficiency ------------------------------------------------------------------------
def test_label_efficiency_end_to_end(store):
    from dermbench.stats.evaluation import evaluate
    from dermbench.protocols.label_efficiency import evaluate_label_efficiency
    from dermbench.run.results import read_predictions

    records = _records(store)
    for model in ("random-vit", "dermino-tiny"):
        for task in TASKS.split(","):
            r = records[(model, task, "label-efficiency")]
            assert r["provenance"]["config"]["protocol"]["fractions"] == [0.25, 0.5, 1.0]
            assert r["provenance"]["config"]["protocol"]["repeats"] == 2
            preds = read_predictions(r["_path"])
            assert list(preds.columns[:4]) == ["fraction", "repeat", "sample_id", "label"]
            assert len(preds) == 3 * 2 * r["n_test"]
            for f in ("0.25", "0.5", "1.0"):
                m = r["metrics"][f"auroc@{f}"]
                assert m["ci_low"] <= m["ci_high"] and m["repeats"] == 2 and m["n_boot_valid"] == 200
            assert r["metrics"]["auroc"] == r["metrics"]["auroc@1.0"]
            sizes = r["info"]["n_train_per_fraction"]
            assert sizes["0.25"][0] < sizes["0.5"][0] < sizes["1.0"][0] == r["n_train"]
            boot = np.load(store / r["bootstrap"]["path"])
            assert evaluate_label_efficiency(preds, boot) == r["metrics"]
            # repeat 0 at 100% is the linear probe itself, on the same shared resamples
            lin = records[(model, task, "linear")]
            assert lin["bootstrap"]["sha256"] == r["bootstrap"]["sha256"]
            block = preds[(preds["fraction"] == 1.0) & (preds["repeat"] == 0)].drop(columns=["fraction", "repeat"])
            linear_preds = read_predictions(lin["_path"])
            assert np.array_equal(block.reset_index(drop=True)[linear_preds.columns].to_numpy(), linear_preds.to_numpy())
            assert evaluate("classification", block.reset_index(drop=True), boot)["auroc"]["value"] == \
                lin["metrics"]["auroc"]["value"]


def test_label_efficiency_subsamples_are_nested_and_stratified():
    from dermbench.protocols.label_efficiency import nested_subsamples, parse_fractions

    y = np.array([0] * 17 + [1] * 3 + [2] * 40)
    subsets = nested_subsamples(y, [0.2, 0.4, 0.6, 0.8, 1.0], seed=0, repeat=1)
    previous = set()
    for f, idx in subsets.items():
        assert set(np.unique(y[idx])) == {0, 1, 2}  # every class keeps at least one image
        assert previous <= set(idx.tolist()) and list(idx) == sorted(idx)
        previous = set(idx.tolist())
    assert len(subsets[1.0]) == len(y)
    assert np.array_equal(subsets[0.2], nested_subsamples(y, [0.2], seed=0, repeat=1)[0.2])  # seeded
    assert not np.array_equal(subsets[0.4], nested_subsamples(y, [0.4], seed=0, repeat=2)[0.4])
    assert parse_fractions("0.1,0.5,1.0") == parse_fractions([1.0, 0.5, 0.1]) == [0.1, 0.5, 1.0]
    for bad in ("0,0.5", "1.5", "a,b", ""):
        with pytest.raises(ValueError):
            parse_fractions(bad)


def test_label_efficiency_alone_on_a_fresh_store(tmp_path):
    import dermbench.run.runner

    if "bootstrap_strata" not in inspect.getsource(dermbench.run.runner):
        pytest.skip("dermbench.run.runner does not yet ask the protocol for bootstrap strata (protocol.bootstrap_strata); "
                    "label-efficiency run alone on a fresh store needs that two-line runner change")
    res = runner.invoke(app, ["run", "--model", "random-vit", "--task", "ddi", "--protocol", "label-efficiency",
                              "--output", str(tmp_path), *FAST])
    assert res.exit_code == 0, res.output
    assert list((tmp_path / "random-vit" / "ddi").glob("label-efficiency@*.json"))


# --- tables: missing cells, averages, significance -------------------------------------------
def _cell(v):
    return {"value": v, "ci_low": v - 0.05, "ci_high": v + 0.05, "std": 0.02, "boot_mean": v, "paper_low": v - 0.0004,
            "paper_high": v + 0.0004, "n_boot_valid": 200}


def test_missing_cells_and_complete_row_averages():
    from dermbench.report.leaderboard import Table, to_csv, to_latex, to_markdown

    t = Table("malignancy", "linear", "auroc", ["ddi", "mednode"], ["DDI", "MED-Node"], ["a", "b", "c"],
              {("a", "ddi"): _cell(0.7), ("a", "mednode"): _cell(0.9), ("b", "ddi"): _cell(0.8),
               ("c", "ddi"): _cell(0.6), ("c", "mednode"): _cell(0.7)})
    assert t.average("a") == pytest.approx(0.8) and t.average("b") is None and t.average("c") == pytest.approx(0.65)
    assert t.best("avg") == pytest.approx(0.8) and t.best("ddi") == pytest.approx(0.8)
    md = to_markdown([t])
    row_b = next(line for line in md.splitlines() if line.startswith("| b |"))
    assert row_b == "| b | **80.00 [75.00, 85.00]** | — | — |"
    row_a = next(line for line in md.splitlines() if line.startswith("| a |"))
    assert row_a.endswith("| **90.00 [85.00, 95.00]** | **80.00** |")
    rows = [line.split(",") for line in to_csv([t]).splitlines()]
    header = rows[0]
    b_mednode = next(r for r in rows if r[header.index("model")] == "b" and r[header.index("task")] == "mednode")
    assert b_mednode[header.index("value")] == ""
    a_ddi = next(r for r in rows if r[header.index("model")] == "a" and r[header.index("task")] == "ddi")
    # the paper's mu ± v sits beside the percentile CI, labelled as such
    assert float(a_ddi[header.index("paper_mu_minus_v")]) == pytest.approx(0.6996)
    assert float(a_ddi[header.index("paper_v")]) == pytest.approx(0.0004)
    assert float(a_ddi[header.index("ci_low")]) == pytest.approx(0.65)
    b_avg = next(r for r in rows if r[header.index("model")] == "b" and r[header.index("task")] == "avg")
    assert b_avg[header.index("value")] == ""
    assert "--" in to_latex([t]) and "\\textbf{80.00}" in to_latex([t])


def test_a_cell_without_a_paired_test_gets_its_own_mark(tmp_path):
    from dermbench.report.leaderboard import LEGEND, build_tables, to_csv, to_markdown

    # caption-like results: no per-sample replicates, so no paired test against the best is possible
    records = [{"model": m, "task": "skincap", "task_title": "SkinCAP", "task_group": "caption", "protocol": "caption",
                "kind": "caption", "metrics": {"cider": _cell(v)}, "contaminated": c, "_path": str(tmp_path / f"{m}.json"),
                "split_sha256": "s", "bootstrap": {"sha256": "b", "path": "none.npy"}}
               for m, v, c in (("a", 0.5, False), ("b", 0.4, "unknown"), ("c", 0.3, True))]
    (table,) = [t for t in build_tables(records, tmp_path) if t.metric == "cider"]
    assert not table.untested("a", "skincap") and table.untested("b", "skincap") and not table.worse("b", "skincap")
    md = to_markdown([table])
    assert "| a | **50.00 [45.00, 55.00]** |" in md
    assert "| b | 40.00 [35.00, 45.00] ° ‡? |" in md and "| c | 30.00 [25.00, 35.00] ° ‡ |" in md
    assert "°: no paired test" in LEGEND and "‡?" in LEGEND
    rows = [line.split(",") for line in to_csv([table]).splitlines()]
    header = rows[0]
    b = next(r for r in rows if r[header.index("model")] == "b")
    assert b[header.index("untested")] == "1" and b[header.index("contaminated")] == "unknown"


def test_missing_result_in_a_real_store(store, tmp_path):
    from dermbench.report.leaderboard import build_leaderboard

    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    next((copy / "dermino-tiny" / "derm7pt").glob("linear@*.json")).unlink()
    built = build_leaderboard(copy, tmp_path / "out", formats=("md",))
    table = next(t for t in built["tables"] if t.group == "multi-category" and t.protocol == "linear" and t.metric == "auroc")
    assert table.tasks == ["derm7pt", "fitzpatrick17k-3"]
    assert ("dermino-tiny", "derm7pt") not in table.cells and table.average("dermino-tiny") is None
    assert table.average("random-vit") is not None and table.is_best("random-vit", "avg")
    section = built["markdown"].split("## multi-category · linear · AUROC")[1].split("##")[0]
    row = next(line for line in section.splitlines() if line.startswith("| dermino-tiny |"))
    assert row.startswith("| dermino-tiny | — | ") and row.endswith(" | — |")


def test_significance_against_the_best_is_the_paired_bootstrap(store, built):
    from dermbench.stats.paired import paired_bootstrap_test
    from dermbench.stats.evaluation import replicates
    from dermbench.run.results import read_predictions

    _, result = built
    records = _records(store)
    checked = marked = 0
    for t in result["tables"]:
        if t.task is not None or t.protocol not in ("retrieval", "linear"):
            continue
        for column in t.tasks:
            best = [m for m in t.models if t.is_best(m, column)]
            ref = records[(best[0], column, t.protocol)]
            idx = np.load(store / ref["bootstrap"]["path"])
            ref_reps = replicates("classification", read_predictions(ref["_path"]), idx)[t.metric]
            for m in t.models:
                if m in best:
                    assert t.p_vs_best(m, column) is None
                    continue
                r = records[(m, column, t.protocol)]
                reps = replicates("classification", read_predictions(r["_path"]), idx)[t.metric]
                p = paired_bootstrap_test(reps, ref_reps, t.value(m, column) - t.best(column))["p"]
                assert t.p_vs_best(m, column) == pytest.approx(p)
                assert t.worse(m, column) == (p < 0.05)
                checked += 1
                marked += t.worse(m, column)
    assert checked >= 8 and marked >= 1
    md = result["markdown"]
    assert "†" in md.split("Cells:")[1].split("\n\n", 1)[1]  # at least one mark beyond the legend


def test_group_average_ci_is_the_bootstrap_of_the_mean_over_tasks(store, built):
    from dermbench.stats.evaluation import replicates
    from dermbench.run.results import read_predictions

    _, result = built
    records = _records(store)
    checked = 0
    for t in result["tables"]:
        if not t.has_average or t.protocol != "linear":
            continue
        for m in t.models:
            if t.average(m) is None:
                assert m not in t.avg_ci
                continue
            per_task = []
            for task in t.tasks:
                r = records[(m, task, "linear")]
                per_task.append(replicates("classification", read_predictions(r["_path"]),
                                           np.load(store / r["bootstrap"]["path"]))[t.metric])
            mean = np.mean(per_task, axis=0)
            assert t.avg_ci[m] == pytest.approx((np.percentile(mean, 2.5), np.percentile(mean, 97.5)), abs=1e-12)
            assert f"[{100 * t.avg_ci[m][0]:.2f}, {100 * t.avg_ci[m][1]:.2f}]" in result["markdown"]
            checked += 1
    assert checked >= 2


# --- HTML page ---------------------------------------------------------------------------------
EXTERNAL = re.compile(r"""(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:https?:|//|ftp:)""", re.I)


def test_html_is_self_contained_and_valid(built):
    out, _ = built
    page = (out / "leaderboard.html").read_text(encoding="utf-8")
    assert not EXTERNAL.search(page)
    assert "url(" not in page and "@import" not in page and "<link" not in page.lower()
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.I)  # the page's one script is inline
    try:
        import html5lib
    except ImportError:
        html5lib = None
    if html5lib is not None:
        parser = html5lib.HTMLParser(strict=True)
        parser.parse(page)  # raises on any parse error
    else:
        from html.parser import HTMLParser

        HTMLParser().feed(page)
    images = re.findall(r'<img alt="([^"]+)" src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)">', page)
    assert len(images) == len(list(out.glob("fig_*.svg"))) >= 5
    import xml.etree.ElementTree as ET

    for name, data in images:
        svg = base64.b64decode(data)
        assert svg == (out / name).read_bytes()
        ET.fromstring(svg)  # well-formed XML


def _browser() -> str | None:
    for name in ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome", "headless_shell"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_html_loads_in_headless_chromium_without_console_errors(built):
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright is not installed (pip install playwright); the HTML is still checked by a parser")
    executable = _browser()
    if executable is None:
        pytest.skip("no Chromium binary found (apt-get install chromium-headless-shell, or chromium); "
                    "the HTML is still checked by a parser")
    from playwright.sync_api import sync_playwright

    out, _ = built
    errors, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page()
        page.on("console", lambda msg: errors.append(msg.text) if msg.type in ("error", "warning") else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("request", lambda req: requests.append(req.url))
        page.goto((out / "leaderboard.html").as_uri(), wait_until="load")
        broken = page.evaluate("Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).length")
        n_images = page.evaluate("document.images.length")
        tables = page.evaluate("document.querySelectorAll('table').length")
        browser.close()
    assert errors == []
    assert broken == 0 and n_images >= 5 and tables >= 10
    assert all(u.startswith(("file:", "data:")) for u in requests), requests


def test_per_setting_tables_for_federated_style_metrics():
    from dermbench.report.leaderboard import build_tables, to_markdown

    def record(model, value):
        metrics = {k: _cell(value + d) for k, d in [("auroc", 0.0), ("f1", -0.1), ("auroc@mednode", 0.01),
                                                     ("auroc@centralised", 0.02), ("auroc@federated-centralised", -0.3),
                                                     ("auroc@ph2-cls", 0.03), ("auroc@local/mednode", 0.04)]}
        return {"model": model, "task": "fl-malignancy", "task_title": "FL", "task_group": "federated",
                "protocol": "federated", "kind": "classification", "metrics": metrics, "_path": f"/x/{model}"}

    tables = build_tables([record("a", 0.6), record("b", 0.7)])
    assert [(t.metric, t.task) for t in tables] == [("auroc", None), ("f1", None), ("auroc", "fl-malignancy")]
    per_site = tables[-1]
    assert per_site.titles == ["mednode", "ph2-cls", "centralised", "local/mednode", "federated-centralised"]
    assert not per_site.has_average and per_site.is_best("b", "auroc@mednode")
    assert "## FL · federated · AUROC by setting" in to_markdown(tables)


# --- the terminal leaderboard (issue #16) ---------------------------------------------------------
def test_terminal_leaderboard_is_one_compact_table_per_group_and_protocol_fitted_to_columns(store, tmp_path):
    res = runner.invoke(app, ["leaderboard", "--results", str(store)], env={"COLUMNS": "70"})
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert max(len(line) for line in lines) <= 70, res.stdout
    titles = [line for line in lines if " · " in line and not line.startswith(("random-vit", "dermino-tiny"))]
    # main metric only (AUROC for classification): no F1 table, no per-fraction tables, no CIs
    assert not any("F1" in t for t in titles) and not any("by training fraction" in t for t in titles)
    assert any(t.startswith("malignancy · linear · AUROC") for t in titles)
    assert any(t.startswith("multi-category · retrieval · AUROC") for t in titles)
    assert "[" not in "\n".join(line for line in lines if line.startswith("dermino-tiny"))
    tables, _ = _markdown_tables(store)
    lin = tables["multi-category · linear · AUROC"]
    row = next(line for line in lines[lines.index(next(t for t in titles if t.startswith("multi-category · linear"))):]
               if line.startswith("random-vit"))
    for value in lin["random-vit"]:  # the same numbers as the markdown table, in the same column order
        assert value.split(" [")[0].strip("*") in row
    # filters: only the asked tasks, protocols and metrics; --out without --format writes the markdown files
    out = tmp_path / "lb"
    res = runner.invoke(app, ["leaderboard", "--results", str(store), "--task", "malignancy", "--protocol", "linear",
                              "--metric", "f1,auroc", "--out", str(out)], env={"COLUMNS": "70"})
    assert res.exit_code == 0, res.output
    shown = [line for line in res.stdout.splitlines() if line.startswith("malignancy") or line.startswith("multi-category")]
    assert shown == ["malignancy · linear · AUROC", "malignancy · linear · F1"], res.stdout
    assert (out / "leaderboard.md").is_file() and not (out / "leaderboard.csv").exists()
    assert "## malignancy · linear · F1" in (out / "leaderboard.md").read_text()
    assert "multi-category" not in (out / "leaderboard.md").read_text().split("## Figures")[0]


def _markdown_tables(store):
    """{table title: {model: [cells]}} from the printed markdown (`--format md`)."""
    res = runner.invoke(app, ["leaderboard", "--results", str(store), "--format", "md"])
    assert res.exit_code == 0, res.output
    tables, title = {}, None
    for line in res.stdout.splitlines():
        if line.startswith("## "):
            title = line[3:]
            tables[title] = {}
        elif title and line.startswith("| ") and not line.startswith("| model"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            tables[title][cells[0]] = cells[1:]
    return tables, res.stdout


# --- one build's memo of the store's files and replicates (report/store_memo.py) -------------------
def _rewrite_predictions(json_path: Path, change) -> None:
    """Replace a result's predictions by ``change(predictions)`` and record the new file's sha256, as a
    re-run with --overwrite would leave it (a valid result with other predictions)."""
    from dermbench.io import sha256_bytes
    from dermbench.run.results import parse_predictions, predictions_csv

    record = json.loads(json_path.read_text())
    path = json_path.parent / record["predictions"]["path"]
    data = predictions_csv(change(parse_predictions(path)))
    path.write_bytes(data)
    record["predictions"]["sha256"] = sha256_bytes(data)
    json_path.write_text(json.dumps(record))


def _reversed_scores(preds):
    """Each row's scores in reverse class order (AUROC, calibration and the replicates all change)."""
    from dermbench.stats.evaluation import score_columns

    columns = score_columns(preds)
    preds[columns] = preds[columns[::-1]].to_numpy()
    return preds


def test_memo_on_or_off_gives_the_same_bytes_so_sections_and_main_tables_agree(store, built, tmp_path, monkeypatch):
    """Every section (calibration, operating point, ranks, ...) and the fairness tables read the files and the
    replicates the main tables read first, through the build's memo: the same build with the memo off (every
    part reading and computing afresh, as before the memo) writes byte-identical files."""
    import contextlib

    from dermbench.report import leaderboard as L
    from dermbench.report.store_memo import reading_once

    out, _ = built
    monkeypatch.setattr(L, "reading_once", contextlib.nullcontext)
    L.build_leaderboard(store, tmp_path / "no-memo", formats=("md", "csv", "latex", "html"))
    fresh = _digest(tmp_path / "no-memo")
    fresh.pop("leaderboard.inputs.json")  # names the store and the code, not a number
    assert fresh == {k: v for k, v in _digest(out).items() if k in fresh} and set(fresh) <= set(_digest(out))

    # the ranks section's store serves the main tables' replicates (one computation), equal to a fresh one
    record = next(r for r in _records(store).values() if r["protocol"] == "linear")
    with reading_once():
        main = L.ReplicateStore(store, allow_missing=False).get(record)
        ranks = L.ReplicateStore(store).get(record)
        assert ranks is main and not main["auroc"].flags.writeable
    alone = L.ReplicateStore(store).get(record)
    assert alone is not main and set(alone) == set(main)
    assert all(np.array_equal(alone[k], main[k], equal_nan=True) for k in main)


def test_memo_cannot_serve_stale_data_across_builds(store, built, tmp_path, monkeypatch):
    """Two builds in one process with the store changed in between (the module's build, then one of the
    changed copy): the second shows the new numbers (the same as a build without any memo), not the first's."""
    import contextlib

    from dermbench.report import leaderboard as L

    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    files = ("leaderboard.csv", "calibration.csv", "operating_point.csv", "ranks.csv", "fairness.csv")
    before = {f: (built[0] / f).read_bytes() for f in files}
    for path in (copy / "random-vit" / "ddi").glob("linear@*.json"):
        _rewrite_predictions(path, _reversed_scores)
    L.build_leaderboard(copy, tmp_path / "after", formats=("csv",), figures=False)
    after = {f: (tmp_path / "after" / f).read_bytes() for f in files}
    assert after["calibration.csv"] != before["calibration.csv"]
    assert after["operating_point.csv"] != before["operating_point.csv"]
    assert after["fairness.csv"] != before["fairness.csv"]
    monkeypatch.setattr(L, "reading_once", contextlib.nullcontext)
    L.build_leaderboard(copy, tmp_path / "no-memo", formats=("csv",), figures=False)
    assert after == {f: (tmp_path / "no-memo" / f).read_bytes() for f in files}


def test_memo_rereads_a_rewritten_file_and_never_hides_an_edit_or_a_deletion(store, tmp_path):
    """Within one build: a file rewritten after it was read is read again; an edited predictions file (sha256
    no longer the recorded one) or a deleted bootstrap file raises the reader's own error even after an earlier
    read; what a caller gets cannot change what the next caller reads."""
    from dermbench.report.store_memo import read_bootstrap, read_predictions, read_table, reading_once
    from dermbench.run.results import MissingResultFile, ModifiedResultFile

    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    json_path = next((copy / "random-vit" / "ddi").glob("retrieval@*.json"))
    with reading_once():
        first = read_predictions(json_path)
        first["pred"] = -1  # a caller's own copy
        again = read_predictions(json_path)
        assert (again["pred"] >= 0).all()
        _rewrite_predictions(json_path, _reversed_scores)
        rewritten = read_predictions(json_path)
        score = rewritten.filter(like="score_").to_numpy()
        assert np.array_equal(score, again.filter(like="score_").to_numpy()[:, ::-1])
        assert read_table(json_path, "calibration") is not None

        record = json.loads(json_path.read_text())
        record["_path"] = str(json_path)
        idx = read_bootstrap(copy, record)
        assert read_bootstrap(copy, record) is idx and not idx.flags.writeable

        predictions_file = json_path.parent / record["predictions"]["path"]
        predictions_file.write_bytes(predictions_file.read_bytes().replace(b"\n", b"\n\n", 1))
        with pytest.raises(ModifiedResultFile, match="does not match the sha256"):
            read_predictions(json_path)
        (copy / record["bootstrap"]["path"]).unlink()
        with pytest.raises(MissingResultFile, match="re-run that cell"):
            read_bootstrap(copy, record)


def test_the_rerun_line_of_a_result_made_with_set_overrides_remakes_it(store, tmp_path):
    """A missing predictions file of a result run with --set: exit 1 and a `dermbench run` line carrying the same
    --set values, which, run, makes the same result key (it used to crash on the overrides' shape)."""
    import shlex

    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    json_path = next((copy / "random-vit" / "ddi").glob("label-efficiency@*.json"))
    record = json.loads(json_path.read_text())
    (json_path.parent / record["predictions"]["path"]).unlink()
    res = runner.invoke(app, ["leaderboard", "--results", str(copy), "--out", str(tmp_path / "lb")])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    line = next(ln for ln in res.output.splitlines() if "re-run that cell: " in ln)
    words = shlex.split(line[line.index("dermbench run"):].split(" (or pass")[0])  # the command, not the hint after it
    assert "label-efficiency.fractions=0.25,0.5,1.0" in words and "label-efficiency.repeats=2" in words, line
    fresh = tmp_path / "again"
    args = words[2:]  # drop "dermbench run"
    args[args.index("--results") + 1] = str(fresh)
    again = runner.invoke(app, ["run", *args, "--quiet"])
    assert again.exit_code == 0, again.output
    (remade,) = fresh.glob("random-vit/ddi/label-efficiency@*.json")
    assert remade.name == json_path.name  # the same settings: the same result key
