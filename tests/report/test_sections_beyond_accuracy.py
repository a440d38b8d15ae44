"""The calibration, operating-point and ranks sections on a small in-memory results store."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from dermbench.io import sha256_file
from dermbench.run.results import iter_results, read_table, write_result
from dermbench.stats.bootstrap import shared_bootstrap_indices
from dermbench.stats.evaluation import evaluate

TASKS = {"ddi": ("malignancy", ["benign", "malignant"]), "fitzpatrick17k-3": ("multi-category", ["benign", "malignant", "non-neoplastic"])}
MODELS = {"good": 2.5, "fair": 1.2, "poor": 0.3}


def _scores(rng, y, k, strength):
    logits = rng.normal(0, 1, (len(y), k)) + strength * np.eye(k)[y]
    return np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


def _table(ids, y, p, rng, groups):
    df = pd.DataFrame({"sample_id": ids, "label": y, "pred": p.argmax(1)})
    for c in range(p.shape[1]):
        df[f"score_{c}"] = p[:, c]
    if groups:
        df["group_skin_type"] = rng.choice(["1", "3", "5"], len(y))
        df["group_sex"] = rng.choice(["female", "male"], len(y))
    return df


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    for t, (task, (group, classes)) in enumerate(TASKS.items()):
        k, n = len(classes), 120
        y = np.random.default_rng(t).integers(0, k, n)
        y_cal = np.random.default_rng(100 + t).integers(0, k, 60)
        idx, path, sha = shared_bootstrap_indices(root / "_bootstrap", task, "s" * 64, 0, n, y, 100)
        for m, (model, strength) in enumerate(MODELS.items()):
            rng = np.random.default_rng(10 * t + m)
            preds = _table([f"t{i}" for i in range(n)], y, _scores(rng, y, k, strength), np.random.default_rng(1000 + t), True)
            cal = _table([f"c{i}" for i in range(60)], y_cal, _scores(rng, y_cal, k, strength), rng, False)
            for protocol in ("linear",):
                record = {"model": model, "task": task, "task_title": task, "task_group": group, "protocol": protocol,
                          "kind": "classification", "classes": classes, "seed": 0, "split_sha256": "s" * 64,
                          "metrics": evaluate("classification", preds, idx), "contaminated": False,
                          "bootstrap": {"n_boot": 100, "path": str(path.relative_to(root)), "sha256": sha}}
                write_result(root, record, preds, {"calibration": cal})
    return root


def test_extra_tables_are_stored_beside_the_predictions_and_checked(store):
    rec = next(iter_results(store))
    assert rec["tables"]["calibration"]["rows"] == 60
    assert len(read_table(rec["_path"], "calibration")) == 60
    assert read_table(rec["_path"], "nonexistent") is None
    path = store / rec["model"] / rec["task"] / rec["tables"]["calibration"]["path"]
    original = path.read_bytes()
    path.write_bytes(original + b"\n")
    with pytest.raises(ValueError, match="sha256"):
        read_table(rec["_path"], "calibration")
    path.write_bytes(original)


def test_calibration_section(store):
    from dermbench.report import calibration as RC

    section = RC.build(store, list(iter_results(store)))
    assert section.name == "calibration" and "| model | ECE |" in section.markdown
    table = pd.read_csv(pd.io.common.BytesIO(section.files[0][1]))
    before = table[(table["stage"] == "before") & (table["metric"] == "ece")]
    # ECE is biased upwards under resampling, so its interval may sit just above the point estimate
    assert len(before) == 6 and (before["ci_low"] < before["ci_high"]).all()
    brier = table[(table["stage"] == "before") & (table["metric"] == "brier")]
    assert ((brier["ci_low"] <= brier["value"]) & (brier["value"] <= brier["ci_high"])).all()
    assert table[table["stage"] == "after"]["temperature"].notna().all()
    assert (table.loc[table["diff_vs_best"].notna(), "diff_vs_best"] >= -1e-12).all()  # differences to the lowest
    assert any(name.startswith("fig_reliability_ddi") for name, _ in section.figures)
    assert section.figures[0][1].startswith(b"<?xml")


def test_operating_point_section_and_cli(store):
    from typer.testing import CliRunner

    from dermbench.cli import app
    from dermbench.report import operating_point as RO

    section = RO.build(store, list(iter_results(store)))
    assert "Fairness at an operating point" in section.markdown and "skin_type×sex" in section.markdown
    table = pd.read_csv(pd.io.common.BytesIO(section.files[0][1]))
    eod = table[table["metric"] == "eod"]
    assert eod["value"].notna().all() and (eod["ci_low"] <= eod["ci_high"]).all() and eod["p_holm"].notna().all()
    runner = CliRunner()
    res = runner.invoke(app, ["fairness", "--results", str(store), "--threshold", "sensitivity=0.9", "-t", "ddi"])
    assert res.exit_code == 0, res.output
    assert "sensitivity=0.9" in res.output and "fitzpatrick17k-3" not in res.output
    bad = runner.invoke(app, ["fairness", "--results", str(store), "--threshold", "spec=0.9"])
    assert bad.exit_code == 2 and "sensitivity=<target" in bad.output
    cal = runner.invoke(app, ["calibration", "--results", str(store), "-m", "good"])
    assert cal.exit_code == 0 and "| good |" in cal.output and "| poor |" not in cal.output


def test_ranks_section(store):
    from dermbench.report import ranks as RR

    section = RR.build(store, list(iter_results(store)))
    assert "all tasks · linear · AUROC (2 tasks)" in section.markdown
    table = pd.read_csv(pd.io.common.BytesIO(section.files[0][1]))
    overall = table[table["table"] == "all tasks · linear · AUROC"].set_index("model")
    assert overall.loc["good", "mean_rank"] == pytest.approx(1.0) and overall.loc["poor", "mean_rank"] == pytest.approx(3.0)
    assert overall.loc["good", "mean_rank_low"] <= 1.0 <= overall.loc["good", "mean_rank_high"]
    assert math.isfinite(overall.loc["good", "friedman_chi2"]) and overall.loc["good", "nemenyi_cd"] > 0
    assert any(name.startswith("fig_critical_difference_all_tasks") for name, _ in section.figures)


def test_leaderboard_contains_the_three_sections(store, tmp_path):
    from dermbench.report.leaderboard import build_leaderboard

    build_leaderboard(store, tmp_path, formats=("md", "html"), figures=False)
    text = (tmp_path / "leaderboard.md").read_text()
    for title in ("## Calibration", "## Fairness at an operating point", "## Ranks with uncertainty"):
        assert title in text
    assert (tmp_path / "ranks.csv").exists() and (tmp_path / "operating_point.md").exists()
    assert "Ranks with uncertainty" in (tmp_path / "leaderboard.html").read_text()
