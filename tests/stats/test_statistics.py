"""Paired-comparison statistics (dermbench.report.compare) against references, and `dermbench compare` end to end."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from dermbench.stats import metrics as M
from dermbench.cli import app
from dermbench.report.compare import ComparisonError, compare_models, format_comparison
from dermbench.stats.paired import (PAPER_TTEST_LABEL, better_on_all, delong_covariance, delong_placements, delong_test,
                                    holm, mcnemar_test, paired_bootstrap_test, paper_paired_ttest, wilcoxon_test)
from dermbench.stats.bootstrap import bootstrap_indices

runner = CliRunner()
FAST = ["--set", "linear.epochs=5", "--n-boot", "200", "--quiet"]


# --- DeLong ---------------------------------------------------------------------------------------
def slow_delong(positive, scores_a, scores_b):
    """DeLong, DeLong & Clarke-Pearson (1988) straight from the paper: O(m n) kernel matrix
    psi(X, Y) = 1 if X > Y, 1/2 if X = Y, 0 otherwise; placement values V10(X_i) = mean_j psi(X_i, Y_j),
    V01(Y_j) = mean_i psi(X_i, Y_j); S10, S01 their sample covariance matrices over the two markers."""
    positive = np.asarray(positive, bool)
    v10, v01, aucs = [], [], []
    for s in (np.asarray(scores_a, float), np.asarray(scores_b, float)):
        x, y = s[positive], s[~positive]
        psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
        aucs.append(psi.mean())
    m, n = positive.sum(), (~positive).sum()
    s10, s01 = np.cov(np.array(v10)), np.cov(np.array(v01))
    cov = s10 / m + s01 / n
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    z = (aucs[0] - aucs[1]) / math.sqrt(var)
    return aucs, cov, z, 2 * sps.norm.sf(abs(z))


def test_delong_hand_worked_example():
    # Positives A = [0.9, 0.7, 0.6], negatives A = [0.8, 0.6, 0.5, 0.4] (one tie at 0.6).
    # V10 = [4/4, 3/4, 2.5/4] -> AUC = 19/24; V01 = [1/3, 2.5/3, 1, 1] (mean 19/24 too).
    # S10 = var(V10, ddof=1) = 0.0729167/2; S01 = var(V01, ddof=1) = 0.298611/3;
    # Var(AUC_A) = S10/3 + S01/4 = 1/27. Model B separates perfectly: AUC 1, variance 0, covariance 0,
    # so z = (19/24 - 1) / sqrt(1/27) = -5*sqrt(3)/8 and p = 2 Phi(-5 sqrt(3) / 8) = 0.27902.
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    a = np.array([0.9, 0.7, 0.6, 0.8, 0.6, 0.5, 0.4])
    auc, v10, v01 = delong_placements(y == 1, a[None])
    assert v10[0] == pytest.approx([1, 0.75, 0.625]) and v01[0] == pytest.approx([1 / 3, 2.5 / 3, 1, 1])
    auc, cov = delong_covariance(y == 1, a[None])
    assert auc[0] == pytest.approx(19 / 24) and cov[0, 0] == pytest.approx(1 / 27)
    r = delong_test(y, a, y.astype(float))
    assert r["auc_a"] == pytest.approx(19 / 24) and r["auc_b"] == 1.0
    assert r["z"] == pytest.approx(-5 * math.sqrt(3) / 8)
    assert r["p"] == pytest.approx(2 * sps.norm.cdf(-5 * math.sqrt(3) / 8)) and r["p"] == pytest.approx(0.27902, abs=1e-5)


@pytest.mark.parametrize("seed", range(6))
def test_fast_delong_equals_the_1988_formulas_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 120))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    a = (rng.normal(size=n) + y).round(1)  # rounded: many ties, within and across classes
    b = (0.5 * a + rng.normal(size=n) + 0.5 * y).round(1)
    aucs, cov, z, p = slow_delong(y == 1, a, b)
    r = delong_test(y, np.c_[1 - a, a], np.c_[1 - b, b])  # the dermbench layout: column 1 = positive class
    assert [r["auc_a"], r["auc_b"]] == pytest.approx(aucs, abs=1e-12)
    assert r["auc_a"] == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert r["z"] == pytest.approx(z, rel=1e-9) and r["p"] == pytest.approx(p, rel=1e-9)
    fast_auc, fast_cov = delong_covariance(y == 1, np.stack([a, b]))
    assert fast_cov == pytest.approx(cov, rel=1e-9)


def test_delong_variance_is_the_unbiased_placement_value_variance():
    # Var(AUC) = var(V10, ddof=1)/m + var(V01, ddof=1)/n, with V10(x) = P(Y < x) + P(Y = x)/2 over the
    # negatives and V01(y) = P(X > y) + P(X = y)/2 over the positives (placements via searchsorted).
    rng = np.random.default_rng(11)
    x, yneg = rng.integers(0, 30, 70).astype(float), rng.integers(0, 25, 90).astype(float)
    ys, xs = np.sort(yneg), np.sort(x)
    v10 = (np.searchsorted(ys, x, "left") + np.searchsorted(ys, x, "right")) / 2 / len(ys)
    v01 = 1 - (np.searchsorted(xs, yneg, "left") + np.searchsorted(xs, yneg, "right")) / 2 / len(xs)
    labels = np.r_[np.ones(70, bool), np.zeros(90, bool)]
    auc, cov = delong_covariance(labels, np.r_[x, yneg][None])
    assert auc[0] == pytest.approx(v10.mean()) and auc[0] == pytest.approx(v01.mean())
    assert cov[0, 0] == pytest.approx(v10.var(ddof=1) / 70 + v01.var(ddof=1) / 90, rel=1e-12)


def test_multiclass_delong_per_class_is_one_vs_rest_and_macro_matches_dermbench_auroc():
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(4), [15, 25, 20, 30])
    sa = rng.normal(size=(len(y), 4)) + 1.5 * np.eye(4)[y]
    sb = sa + rng.normal(size=sa.shape)
    r = delong_test(y, sa, sb)
    assert len(r["per_class"]) == 4
    for c, pc in enumerate(r["per_class"]):
        binary = delong_test((y == c).astype(int), sa[:, c], sb[:, c])
        assert {k: pc[k] for k in ("auc_a", "auc_b", "z", "p")} == pytest.approx({k: binary[k] for k in ("auc_a", "auc_b", "z", "p")})
    full = M.full_index(len(y))
    probs = np.exp(sa) / np.exp(sa).sum(axis=1, keepdims=True)  # sklearn wants probabilities; OvR AUROC is rank-based
    assert r["auc_a"] == pytest.approx(M.auroc(y, sa, full)[0])
    assert delong_test(y, probs, sb)["auc_a"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr"))
    assert r["auc_b"] == pytest.approx(M.auroc(y, sb, full)[0])


def test_multiclass_delong_macro_variance_matches_the_sampling_variance():
    # Fixed class counts, correlated models; 1,000 simulated test sets. The relative Monte-Carlo error
    # of the empirical variance is sqrt(2/999) = 4.5%, so 15% is > 3 standard errors (seeded: deterministic).
    rng = np.random.default_rng(7)
    y = np.repeat(np.arange(3), [40, 60, 50])
    mu = np.eye(3)[y] * np.array([1.0, 0.7, 1.2])
    diffs, variances = [], []
    for _ in range(1000):
        shared = rng.normal(size=mu.shape)
        r = delong_test(y, mu + shared + 0.8 * rng.normal(size=mu.shape), 0.8 * mu + shared + 0.8 * rng.normal(size=mu.shape))
        diffs.append(r["diff"])
        variances.append(r["se"] ** 2)
    assert np.mean(variances) == pytest.approx(np.var(diffs, ddof=1), rel=0.15)


def test_delong_of_identical_models_is_p_one():
    y = np.array([0, 1, 0, 1, 1, 0])
    s = np.array([0.1, 0.9, 0.4, 0.35, 0.8, 0.2])
    r = delong_test(y, s, s)
    assert r["diff"] == 0 and r["p"] == 1.0


# --- McNemar, t-test, Wilcoxon, Holm ------------------------------------------------------------------
def test_mcnemar_is_the_exact_binomial_on_discordant_pairs():
    # 7 samples only A gets right, 2 only B gets right, 20 both, 5 neither:
    # p = 2 P(Bin(9, 1/2) <= 2) = 2 (1 + 9 + 36) / 512 = 0.1796875
    y = np.zeros(34, int)
    pred_a = np.r_[np.zeros(7), np.ones(2), np.zeros(20), np.ones(5)].astype(int)
    pred_b = np.r_[np.ones(7), np.zeros(2), np.zeros(20), np.ones(5)].astype(int)
    r = mcnemar_test(y, pred_a, pred_b)
    assert (r["n10"], r["n01"]) == (7, 2)
    assert r["p"] == pytest.approx(92 / 512) and r["p"] == pytest.approx(sps.binomtest(7, 9).pvalue)
    assert r["acc_a"] == pytest.approx(27 / 34) and r["acc_b"] == pytest.approx(22 / 34)
    assert mcnemar_test(y, pred_a, pred_a)["p"] == 1.0


def test_paper_ttest_is_scipy_ttest_rel_and_its_p_shrinks_with_replicates():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.80, 0.03, 1000), rng.normal(0.79, 0.03, 1000)
    r = paper_paired_ttest(a, b)
    ref = sps.ttest_rel(a, b)
    assert r["t"] == pytest.approx(ref.statistic) and r["p"] == pytest.approx(ref.pvalue)
    assert r["label"] == PAPER_TTEST_LABEL and "unsound" in r["label"]
    # the same distribution of replicates, 10x more of them: p collapses (why the test is unsound)
    more = paper_paired_ttest(rng.normal(0.80, 0.03, 10000), rng.normal(0.79, 0.03, 10000))
    assert more["p"] < r["p"]


def test_wilcoxon_is_scipy_and_all_equal_is_p_one():
    rng = np.random.default_rng(1)
    a, b = rng.random(30), rng.random(30)
    assert wilcoxon_test(a, b)["p"] == pytest.approx(sps.wilcoxon(a, b).pvalue)
    assert wilcoxon_test(a, a)["p"] == 1.0


def test_holm_against_a_hand_computed_example():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone: 0.06
    p = [0.01, 0.04, 0.03, 0.005]
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    got = holm([0.01, np.nan, 0.02])  # NaN: not tested, not counted
    assert np.isnan(got[1]) and got[[0, 2]] == pytest.approx([0.02, 0.02])
    assert holm([]).size == 0


def test_holm_equals_statsmodels_when_installed():
    multipletests = pytest.importorskip("statsmodels.stats.multitest").multipletests
    p = np.random.default_rng(5).random(17) ** 3
    assert holm(p) == pytest.approx(multipletests(p, method="holm")[1])


def test_better_on_all():
    assert better_on_all([0.02, 0.05], [0.01, 0.04])
    assert not better_on_all([0.02, -0.05], [0.01, 0.04])  # worse on one task
    assert not better_on_all([0.02, 0.05], [0.01, 0.06])  # not significant on one task
    assert not better_on_all([0.02, 0.05], [0.01, np.nan])  # one task untested
    assert not better_on_all([], [])


# --- paired bootstrap ----------------------------------------------------------------------------------
def test_paired_bootstrap_p_on_known_cases():
    base = np.linspace(0.6, 0.9, 999)
    # 24 of 999 differences <= 0: p = 2 * (24 + 1) / (999 + 1) = 0.05 exactly
    diff = np.r_[-np.arange(1, 25) / 1000, np.arange(1, 976) / 1000]
    r = paired_bootstrap_test(base + diff, base, observed_diff=0.3)
    assert r["p"] == pytest.approx(0.05) and r["n_boot_valid"] == 999 and r["diff"] == 0.3
    assert r["ci_low"] == pytest.approx(np.percentile(diff, 2.5)) and r["ci_high"] == pytest.approx(np.percentile(diff, 97.5))
    # every difference positive: the smallest p B replicates can give, 2 / (B + 1), never 0
    assert paired_bootstrap_test(base + 0.01, base, 0.01)["p"] == pytest.approx(2 / 1000)
    # identical models: p = 1; NaN replicates are left out
    assert paired_bootstrap_test(base, base, 0.0)["p"] == 1.0
    with_nan = paired_bootstrap_test(np.r_[base + 0.01, np.nan], np.r_[base, 0.5], 0.01)
    assert with_nan["n_boot_valid"] == 999


def test_paired_bootstrap_is_paired():
    # Two models whose per-resample metrics move together: the unpaired CIs overlap widely, yet
    # A is better on every resample; pairing sees it.
    rng = np.random.default_rng(2)
    common = rng.normal(0.8, 0.05, 500)
    r = paired_bootstrap_test(common + 0.01, common, 0.01)
    assert r["p"] == pytest.approx(2 / 501) and r["ci_low"] == pytest.approx(0.01)


def test_percentile_auroc_ci_coverage_on_a_binormal_model():
    # Binormal scores: negatives N(0, 1), positives N(d, 1), true AUROC = Phi(d / sqrt(2)) = 0.8.
    # 2,000 simulated test sets of 100 + 100, 400 stratified resamples each (dermbench.stats.bootstrap), percentile
    # 95% CIs of metrics.auroc. Monte-Carlo standard error of the coverage: sqrt(.95 * .05 / 2000) = 0.49%,
    # so [93%, 97%] is +-4 standard errors around the nominal 95% (seeded, hence deterministic).
    true_auc = 0.8
    d = math.sqrt(2) * sps.norm.ppf(true_auc)
    rng = np.random.default_rng(2024)
    y = np.r_[np.ones(100, int), np.zeros(100, int)]
    covered, n_sim = 0, 2000
    for s in range(n_sim):
        x = np.r_[rng.normal(d, 1, 100), rng.normal(0, 1, 100)]
        reps = M.auroc(y, np.c_[-x, x], bootstrap_indices(len(y), 400, seed=s, strata=y))
        low, high = np.percentile(reps, [2.5, 97.5])
        covered += low <= true_auc <= high
    assert 0.93 <= covered / n_sim <= 0.97


# --- compare_models on hand-made stores (segmentation, caption, errors) -----------------------------
def _write(store, model, task, protocol, kind, predictions, metrics, boot_name, split="s" * 64, main="dice"):
    from dermbench.io import sha256_file
    from dermbench.run.results import write_result

    boot = store / "_bootstrap" / boot_name
    return write_result(store, {"model": model, "task": task, "protocol": protocol, "kind": kind, "main_metric": main,
                                "split_sha256": split, "metrics": metrics, "classes": [],
                                "bootstrap": {"path": f"_bootstrap/{boot_name}", "sha256": sha256_file(boot)}},
                        predictions)


@pytest.fixture
def small_store(tmp_path):
    rng = np.random.default_rng(4)
    n = 30
    (tmp_path / "_bootstrap").mkdir()
    np.save(tmp_path / "_bootstrap" / "seg.npy", bootstrap_indices(n, 300, seed=1))
    np.save(tmp_path / "_bootstrap" / "cap.npy", bootstrap_indices(n, 300, seed=2))
    ids = [f"img{i}" for i in range(n)]
    for model, shift in (("a", 0.1), ("b", 0.0)):
        dice = np.clip(rng.uniform(0.5, 0.9, n) + shift, 0, 1)
        seg = pd.DataFrame({"sample_id": ids, "dice": dice, "jaccard": dice / (2 - dice),
                            "tp": 50, "fp": 5, "fn": 5, "tn": 100})
        _write(tmp_path, model, "ph2-seg", "seg-linear", "segmentation", seg, {"dice": {"value": float(dice.mean())}}, "seg.npy")
        cap = pd.DataFrame({"sample_id": ids, "reference": "a lesion", "generated": "a lesion", "rouge1": rng.random(n)})
        _write(tmp_path, model, "skincap", "caption", "caption", cap, {"cider": {"value": 0.5}, "rouge1": {"value": 0.4}},
               "cap.npy", main="cider")
    return tmp_path


def test_compare_segmentation_and_caption_rows(small_store):
    table = compare_models(small_store, "a", "b")
    rows = {r["task"]: r for _, r in table.iterrows()}
    seg = rows["ph2-seg"]
    assert seg["metric"] == "dice" and "auroc not defined" in seg["note"]
    assert seg["diff"] > 0 and seg["p_boot"] < 0.05 and np.isfinite(seg["p_wilcoxon"])
    assert np.isnan(seg["p_delong"]) and np.isnan(seg["p_mcnemar"])
    cap = rows["skincap"]  # main metric cider has no per-sample column: values only, no test
    assert cap["value_a"] == 0.5 and np.isnan(cap["p_boot"]) and "no per-sample" in cap["note"]
    cap = compare_models(small_store, "a", "b", metric="rouge1", tasks=["skincap"]).iloc[0]
    assert cap["metric"] == "rouge1" and 0 < cap["p_boot"] <= 1  # per-sample rouge1 column: paired bootstrap
    assert list(table["task"]) == ["skincap", "ph2-seg"]  # the paper's task order
    assert table["p_boot_holm"].iloc[1] == pytest.approx(holm(table["p_boot"])[1]) and np.isnan(table["p_boot_holm"].iloc[0])
    assert "NOT SUPPORTED" in format_comparison(table)  # the caption row is untested


def test_compare_multiclass_classification_row(tmp_path):
    from dermbench.run.results import iter_results

    rng = np.random.default_rng(9)
    y = np.repeat(np.arange(3), [20, 30, 25])
    (tmp_path / "_bootstrap").mkdir()
    np.save(tmp_path / "_bootstrap" / "cls.npy", bootstrap_indices(len(y), 300, seed=3, strata=y))
    scores = {}
    for model, strength in (("a", 2.0), ("b", 0.5)):
        s = rng.random((len(y), 3)) + strength * np.eye(3)[y]
        scores[model] = s / s.sum(axis=1, keepdims=True)
        preds = pd.DataFrame({"sample_id": [f"s{i}" for i in range(len(y))], "label": y, "pred": scores[model].argmax(axis=1),
                              **{f"score_{c}": scores[model][:, c] for c in range(3)}})
        metrics = {"auroc": {"value": 0.0}, "auroc@site1": {"value": 0.9 if model == "a" else 0.6}}  # as federated stores
        _write(tmp_path, model, "acne04", "linear", "classification", preds, metrics, "cls.npy", main="auroc")
    for path in tmp_path.glob("*/acne04/linear.json"):  # class names, as the runner stores them
        record = json.loads(path.read_text())
        record["classes"] = ["mild", "moderate", "severe"]
        path.write_text(json.dumps(record))
    assert len(list(iter_results(tmp_path))) == 2
    row = compare_models(tmp_path, "a", "b").iloc[0]
    ref = delong_test(y, scores["a"], scores["b"])
    assert row["value_a"] == pytest.approx(ref["auc_a"]) and row["p_delong"] == pytest.approx(ref["p"])
    assert [c["class"] for c in row["delong_per_class"]] == ["mild", "moderate", "severe"]
    assert row["p_boot"] < 0.05 and row["p_delong"] < 0.05 and row["p_mcnemar"] < 0.05
    assert row["acc_a"] == pytest.approx(np.mean(scores["a"].argmax(axis=1) == y))
    # a stored per-setting metric without per-sample replicates: the two values, no test
    row = compare_models(tmp_path, "a", "b", metric="auroc@site1").iloc[0]
    assert row["metric"] == "auroc@site1" and row["diff"] == pytest.approx(0.3) and np.isnan(row["p_boot"])
    assert "values only" in row["note"]
    row = compare_models(tmp_path, "a", "b", metric="dice").iloc[0]  # not a classification metric: the main one
    assert row["metric"] == "auroc" and "dice not defined" in row["note"]


def test_compare_refuses_results_on_different_test_sets(small_store):
    from dermbench.run.results import read_predictions, result_paths

    paths = result_paths(small_store, "b", "ph2-seg", "seg-linear")
    preds = read_predictions(paths["json"]).iloc[::-1]  # same samples, other order
    record = json.loads(paths["json"].read_text())
    _write(small_store, "b", "ph2-seg", "seg-linear", "segmentation", preds, record["metrics"], "seg.npy")
    with pytest.raises(ComparisonError, match="same order") as err:
        compare_models(small_store, "a", "b", tasks=["ph2-seg"])
    assert str(paths["json"]) in str(err.value) and "/a/ph2-seg/seg-linear.json" in str(err.value)
    _write(small_store, "b", "ph2-seg", "seg-linear", "segmentation", preds, record["metrics"], "seg.npy", split="t" * 64)
    with pytest.raises(ValueError, match="different splits"):
        compare_models(small_store, "a", "b", tasks=["ph2-seg"])
    with pytest.raises(ComparisonError, match="no results for model 'c'"):
        compare_models(small_store, "a", "c")


# --- end to end: dermbench run + dermbench compare ------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare-results")
    res = runner.invoke(app, ["run", "--model", "random-vit,dermino-tiny", "--task", "ddi,ph2-cls", "--output", str(out), *FAST])
    assert res.exit_code == 0, res.output
    return out


def test_compare_models_end_to_end(store):
    from dermbench.stats.evaluation import replicates
    from dermbench.run.results import iter_results, read_predictions

    from dermbench.protocols.label_efficiency import fraction_replicates

    table = compare_models(store, "random-vit", "dermino-tiny")
    protocols = ("retrieval", "linear", "label-efficiency")
    assert list(zip(table["task"], table["protocol"])) == [(t, p) for t in ("ddi", "ph2-cls") for p in protocols]
    records = {(r["model"], r["task"], r["protocol"]): r for r in iter_results(store)}
    for _, row in table.iterrows():
        ra, rb = records[("random-vit", row["task"], row["protocol"])], records[("dermino-tiny", row["task"], row["protocol"])]
        # the values are the stored ones; the replicates come from the one shared bootstrap file
        assert row["value_a"] == pytest.approx(ra["metrics"]["auroc"]["value"])
        assert row["value_b"] == pytest.approx(rb["metrics"]["auroc"]["value"])
        assert ra["bootstrap"]["sha256"] == rb["bootstrap"]["sha256"] and row["n_boot"] == 200 and row["n_test"] == 40
        idx = np.load(store / ra["bootstrap"]["path"])
        pa, pb = read_predictions(ra["_path"]), read_predictions(rb["_path"])
        if row["protocol"] == "label-efficiency":  # mean over repeats at the largest fraction: bootstrap only
            rep_a, rep_b = fraction_replicates(pa, idx)["auroc"]["replicates"], fraction_replicates(pb, idx)["auroc"]["replicates"]
            assert np.isnan(row["p_delong"]) and np.isnan(row["p_mcnemar"]) and "repeats" in row["note"]
        else:
            rep_a, rep_b = replicates("classification", pa, idx)["auroc"], replicates("classification", pb, idx)["auroc"]
            for family in ("p_delong", "p_mcnemar"):
                assert 0 < row[family] <= 1
        assert row["p_boot"] == pytest.approx(paired_bootstrap_test(rep_a, rep_b, row["diff"])["p"])
        assert row["p_ttest_paper"] == pytest.approx(paper_paired_ttest(rep_a, rep_b)["p"])
        assert 0 < row["p_boot"] <= 1 and np.isnan(row["p_wilcoxon"])
    for family in ("p_boot", "p_delong", "p_mcnemar", "p_ttest_paper"):
        assert table[f"{family}_holm"].to_numpy() == pytest.approx(holm(table[family]), nan_ok=True)
    # a label-efficiency setting: auroc@0.2 (mean over repeats at 20% of the training data)
    low = compare_models(store, "random-vit", "dermino-tiny", metric="auroc@0.2", protocol="label-efficiency")
    assert list(low["metric"]) == ["auroc@0.2"] * 2 and low["p_boot"].between(0, 1).all()
    ddi = records[("random-vit", "ddi", "label-efficiency")]["metrics"]["auroc@0.2"]["value"]
    assert low["value_a"].iloc[0] == pytest.approx(ddi)


def test_compare_cli(store):
    res = runner.invoke(app, ["compare", "--model", "random-vit", "--model", "dermino-tiny", "--results", str(store)])
    assert res.exit_code == 0, res.output
    for text in ("ddi · retrieval", "ph2-cls · linear", "DeLong", "McNemar", PAPER_TTEST_LABEL, "Holm",
                 'Claim "random-vit better than dermino-tiny on all 6 task/protocol rows"'):
        assert text in res.output
    res = runner.invoke(app, ["compare", "--model", "random-vit,dermino-tiny", "--task", "ddi", "--protocol", "linear",
                              "--metric", "f1", "--results", str(store)])
    assert res.exit_code == 0, res.output
    assert "ddi · linear" in res.output and "ph2-cls" not in res.output and "ddi · retrieval" not in res.output
    assert "on all 1 task/protocol rows" in res.output
    res = runner.invoke(app, ["compare", "--model", "random-vit", "--results", str(store)])
    assert res.exit_code != 0 and "exactly two" in res.output
    res = runner.invoke(app, ["compare", "--model", "random-vit,dermino-tiny", "--alpha", "0.01", "--results", str(store)])
    assert res.exit_code == 0 and "A−B [99% CI]" in res.output and "α = 0.01" in res.output, res.output
    assert compare_models(store, "random-vit", "dermino-tiny", alpha=0.01).attrs["alpha"] == 0.01
    res = runner.invoke(app, ["compare", "--model", "random-vit,dermino-tiny", "--alpha", "1.5", "--results", str(store)])
    assert res.exit_code != 0 and "--alpha" in res.output


def test_compare_cli_names_both_files_when_splits_differ(store, tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    path = next((copy / "dermino-tiny" / "ddi").glob("linear@*.json"))
    record = json.loads(path.read_text())
    record["split_sha256"] = "0" * 64
    path.write_text(json.dumps(record))
    res = runner.invoke(app, ["compare", "--model", "random-vit", "--model", "dermino-tiny", "--results", str(copy)])
    assert res.exit_code != 0
    # the error box may wrap anywhere: compare without whitespace and box drawing
    compact = "".join(ch for ch in res.output if not ch.isspace() and ch not in "│╭╮╰╯─")
    assert "differentsplits" in compact
    for model in ("random-vit", "dermino-tiny"):
        assert "".join(str(next((copy / model / "ddi").glob("linear@*.json"))).split()) in compact


def test_compare_with_an_untrained_architecture(store, tmp_path):
    # `--weights random` results are labelled model@random and compare like any other; the untrained
    # dermino-tiny architecture keeps this quick (dermino@random, a ViT-B/14 at 224 px, takes minutes)
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    res = runner.invoke(app, ["run", "--model", "dermino-tiny", "--weights", "random", "--task", "ddi", "--output", str(copy), *FAST])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["compare", "--model", "random-vit", "--model", "dermino-tiny@random", "--results", str(copy)])
    assert res.exit_code == 0, res.output
    assert "dermino-tiny@random" in res.output and "ddi · linear" in res.output and "ph2-cls" not in res.output
    table = compare_models(copy, "random-vit", "dermino-tiny@random")
    assert list(table["protocol"]) == ["retrieval", "linear", "label-efficiency"]
    assert table.loc[table["protocol"] != "label-efficiency", "p_delong"].between(0, 1).all()


# --- claims the statistics can support ----------------------------------------------------------------
def _two_model_store(store, n_rows, n=60, seed=0, n_boot=1000):
    """``n_rows`` binary tasks where model a separates the classes well (AUROC ≈ 0.95) and b barely (≈ 0.6)."""
    rng = np.random.default_rng(seed)
    (store / "_bootstrap").mkdir(exist_ok=True)
    y = np.repeat([0, 1], n // 2)
    np.save(store / "_bootstrap" / "claim.npy", bootstrap_indices(n, n_boot, seed=5, strata=y))
    for t in range(n_rows):
        for model, shift in (("a", 2.5), ("b", 0.35)):
            logit = rng.normal(0, 1, n) + shift * (2 * y - 1)
            p1 = 1 / (1 + np.exp(-logit))
            preds = pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "label": y, "pred": (p1 > 0.5).astype(int),
                                  "score_0": 1 - p1, "score_1": p1})
            _write(store, model, f"task{t:02d}", "linear", "classification", preds,
                   {"auroc": {"value": float(roc_auc_score(y, p1))}}, "claim.npy", main="auroc")


def test_a_large_true_difference_on_53_rows_is_supported_at_the_defaults(tmp_path):
    _two_model_store(tmp_path, 53)
    table = compare_models(tmp_path, "a", "b")
    assert len(table) == 53 and set(table["claim_test"]) == {"delong"}
    assert (table["p_claim_holm"] < 0.05).all() and table.attrs["claim"]["supported"]
    # the stored 1,000 resamples alone could never support it: 2/(B+1) > 0.05/53
    assert (table["p_boot_holm"] >= 0.05).all()
    text = format_comparison(table)
    assert 'Claim "a better than b on all 53 task/protocol rows": SUPPORTED' in text
    assert "Claim family: the 53 rows above" in text and "DeLong 53" in text
    res = runner.invoke(app, ["compare", "--model", "a,b", "--results", str(tmp_path)])
    assert res.exit_code == 0 and ": SUPPORTED" in res.output, res.output


def test_claim_bootstrap_draws_enough_replicates_or_prints_its_floor(tmp_path):
    _two_model_store(tmp_path, 53, n=40, n_boot=200)
    # F1 has no analytical test: the paired bootstrap, on 20·m/α resamples drawn for the claim
    table = compare_models(tmp_path, "a", "b", metric="f1", tasks=[f"task{t:02d}" for t in range(4)])
    assert set(table["claim_test"]) == {"bootstrap"} and set(table["claim_n_boot"]) == {math.ceil(20 * 4 / 0.05)}
    assert table.attrs["claim"]["supported"] and not table.attrs["claim"]["unprovable"]
    assert "(needed: 20·m/α = 1600)" in format_comparison(table)
    # with fewer replicates than the family needs, the floor is printed and the rows say they cannot be proven
    table = compare_models(tmp_path, "a", "b", metric="f1", claim_boot=1000)
    assert len(table.attrs["claim"]["unprovable"]) == 53 and not table.attrs["claim"]["supported"]
    text = format_comparison(table)
    assert "smallest attainable p = 2/(B+1) = 0.002 ≥ α/m" in text and "NOT SUPPORTED" in text
    # accuracy: the exact McNemar test
    assert set(compare_models(tmp_path, "a", "b", metric="accuracy", tasks=["task00"])["claim_test"]) == {"mcnemar"}
