"""End to end through the CLI on DermSynth: run, resume/skip, overwrite, leaderboard."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dermbench.cli import app
from dermbench.stats.evaluation import evaluate_result
from dermbench.protocols import get_protocol
from dermbench.run.results import iter_results, read_predictions
from dermbench.data.tasks import get_card

runner = CliRunner()
FAST = ["--set", "linear.epochs=5", "--set", "label-efficiency.epochs=5", "--set", "label-efficiency.repeats=2",
        "--n-boot", "200", "--quiet"]
TASKS = ("ddi", "acne04", "fitzpatrick17k-2", "fitzpatrick17k-3")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    res = runner.invoke(app, ["run", "--model", "random-vit", "--task", "ddi,acne04,fitzpatrick17k-2,fitzpatrick17k-3",
                              "--output", str(out), *FAST])
    assert res.exit_code == 0, res.output
    return out, res.output


def test_run_writes_one_result_per_task_and_protocol(results):
    out, log = results
    assert "DermSynth" in log
    recs = {(r["task"], r["protocol"]): r for r in iter_results(out)}
    # every protocol each task card lists (retrieval, linear, label-efficiency for these)
    assert set(recs) == {(t, p) for t in TASKS for p in get_card(t).protocols}
    assert all({"retrieval", "linear", "label-efficiency"} <= set(get_card(t).protocols) for t in TASKS)
    r = recs[("acne04", "linear")]
    for key in ("model", "task", "protocol", "metrics", "n_train", "n_test", "classes", "split_sha256", "seed", "provenance"):
        assert key in r
    assert r["classes"] == ["mild", "moderate", "severe", "very severe"]
    assert set(r["metrics"]) == {"auroc", "f1", "accuracy", "balanced_accuracy"}
    m = r["metrics"]["auroc"]
    assert m["ci_low"] <= m["value"] <= m["ci_high"] or m["ci_low"] <= m["boot_mean"] <= m["ci_high"]
    prov = r["provenance"]
    assert prov["packages"]["torch"] and prov["config"]["protocol"]["epochs"] == 5
    assert r["backbone"]["weights_sha256"].startswith("random:")
    # the split file is where the result says, with the recorded hash
    split_path = out / r["split"]["path"]
    import hashlib
    assert hashlib.sha256(split_path.read_bytes()).hexdigest() == r["split_sha256"]


def test_derived_split_is_the_parent_split_restricted(results):
    out, _ = results
    recs = {(r["task"], r["protocol"]): r for r in iter_results(out)}
    child = json.loads((out / recs[("fitzpatrick17k-2", "linear")]["split"]["path"]).read_text())
    parent = json.loads((out / recs[("fitzpatrick17k-3", "linear")]["split"]["path"]).read_text())
    assert set(child["train"]) <= set(parent["train"]) and set(child["test"]) <= set(parent["test"])


def test_stored_metrics_recompute_from_predictions(results):
    out, _ = results
    import numpy as np
    from sklearn.metrics import f1_score, roc_auc_score

    for r in iter_results(out):
        preds = read_predictions(r["_path"])
        boot = np.load(out / r["bootstrap"]["path"])
        again = evaluate_result(get_protocol(r["protocol"]), r["kind"], preds, boot)
        assert again == r["metrics"]
        if r["protocol"] == "label-efficiency":  # several blocks per test sample; tested in test_leaderboard
            continue
        scores = preds[[c for c in preds.columns if c.startswith("score_")]].to_numpy()
        y = preds["label"].to_numpy()
        expected_auc = roc_auc_score(y, scores[:, 1]) if scores.shape[1] == 2 else roc_auc_score(y, scores, multi_class="ovr")
        assert r["metrics"]["auroc"]["value"] == pytest.approx(expected_auc, abs=1e-12)
        assert r["metrics"]["f1"]["value"] == pytest.approx(f1_score(y, preds["pred"], average="macro"), abs=1e-12)


def test_rerun_skips_and_overwrite_recomputes_identically(results):
    out, _ = results
    before = {r["_path"]: r["metrics"] for r in iter_results(out)}
    res = runner.invoke(app, ["run", "--model", "random-vit", "--task", "ddi", "--output", str(out), *FAST])
    assert res.exit_code == 0 and res.output.count("finished earlier with these settings") == len(get_card("ddi").protocols)
    res = runner.invoke(app, ["run", "--model", "random-vit", "--task", "ddi", "--output", str(out), "--overwrite", *FAST])
    assert res.exit_code == 0 and "skipped" not in res.output.split("result(s) computed")[0]
    after = {r["_path"]: r["metrics"] for r in iter_results(out)}
    assert after == before  # same inputs, same numbers


def test_leaderboard_prints_tables_with_cis(results):
    out, _ = results
    res = runner.invoke(app, ["leaderboard", "--results", str(out), "--format", "md"])
    assert res.exit_code == 0, res.output
    assert "random-vit" in res.output and "ACNE04" in res.output and "[" in res.output
