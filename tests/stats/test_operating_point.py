"""Operating-point fairness: thresholds from training scores, per-subgroup rates against scikit-learn."""
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

from dermbench.stats import operating_point as OP
from dermbench.stats.bootstrap import bootstrap_indices


def _table(n, k, seed, groups=True):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k)) + 1.5 * np.eye(k)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    df = pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "label": y, "pred": p.argmax(1)})
    for c in range(k):
        df[f"score_{c}"] = p[:, c]
    if groups:
        df["group_skin_type"] = rng.choice(["1", "2", "3", "unknown"], n, p=[0.35, 0.3, 0.3, 0.05])
        df["group_sex"] = rng.choice(["female", "male"], n)
    return df


RECORD = {"model": "m", "task": "t", "protocol": "linear", "classes": ["a", "b", "c"]}


def test_parse_rule_errors_name_the_fix():
    assert OP.parse_rule("youden") == ("youden", None)
    assert OP.parse_rule("sensitivity=0.9") == ("sensitivity", 0.9)
    for bad in ("sens=0.9", "sensitivity=1.5", "sensitivity=x"):
        with pytest.raises(ValueError, match="sensitivity=<target"):
            OP.parse_rule(bad)


def test_thresholds_against_brute_force():
    cal = _table(300, 2, 1, groups=False)
    pos, s = cal["label"].to_numpy() == 1, cal["score_1"].to_numpy()
    fpr, tpr, thr = roc_curve(pos, s)
    t = OP.choose_threshold(pos, s, "youden")
    j = lambda th: (s[pos] >= th).mean() - (s[~pos] >= th).mean()
    assert j(t) == pytest.approx(max(j(x) for x in np.unique(s)))
    t9 = OP.choose_threshold(pos, s, "sensitivity=0.9")
    assert (s[pos] >= t9).mean() >= 0.9
    higher = np.unique(s)[np.unique(s) > t9]
    assert all((s[pos] >= h).mean() < 0.9 for h in higher)  # the highest threshold that reaches 0.9


def test_subgroup_rates_match_sklearn_and_gaps_are_consistent():
    test, cal = _table(600, 3, 2), _table(400, 3, 3)
    idx = bootstrap_indices(600, 100, seed=4, strata=test["label"].to_numpy())
    rows = pd.DataFrame(OP.operating_point_rows(RECORD, test, cal, idx, "youden", intersectional=True))
    for c in range(3):
        thr = OP.choose_threshold(cal["label"].to_numpy() == c, cal[f"score_{c}"].to_numpy(), "youden")
        part = rows[(rows["class"] == c) & (rows["attribute"] == "skin_type")]
        assert np.allclose(part["threshold"], thr)
        for g in ("1", "2", "3"):
            m = test["group_skin_type"] == g
            truth = test.loc[m, "label"].to_numpy() == c
            called = test.loc[m, f"score_{c}"].to_numpy() >= thr
            tn, fp, fn, tp = confusion_matrix(truth, called, labels=[False, True]).ravel()
            got = part[(part["subgroup"] == g)].set_index("metric")
            assert got.loc["tpr", "value"] == pytest.approx(tp / (tp + fn))
            assert got.loc["fpr", "value"] == pytest.approx(fp / (fp + tn))
            assert got.loc["ppv", "value"] == pytest.approx(tp / (tp + fp))
            assert got.loc["auroc", "value"] == pytest.approx(roc_auc_score(truth, test.loc[m, f"score_{c}"]))
            assert got.loc["tpr", "ci_low"] <= got.loc["tpr", "value"] <= got.loc["tpr", "ci_high"]
        sub = part[part["row"] == "subgroup"].set_index(["subgroup", "metric"])["value"]
        gaps = part[part["row"] == "gap"].set_index("metric")
        tpr = [sub[(g, "tpr")] for g in ("1", "2", "3")]
        fpr = [sub[(g, "fpr")] for g in ("1", "2", "3")]
        assert gaps.loc["tpr_gap", "value"] == pytest.approx(max(tpr) - min(tpr))  # 'unknown' excluded
        assert gaps.loc["eod", "value"] == pytest.approx(max(max(tpr) - min(tpr), max(fpr) - min(fpr)))
        assert gaps.loc["worst_auroc", "value"] == pytest.approx(min(sub[(g, "auroc")] for g in ("1", "2", "3")))
    inter = rows[rows["attribute"] == OP.INTERSECTION]
    assert {"1|female", "3|male"} <= set(inter["subgroup"]) and "I · female" in set(inter["label"])


def test_holm_family_and_small_groups():
    test, cal = _table(200, 2, 5), _table(200, 2, 6)
    test.loc[:5, "group_sex"] = "other"  # 6 images: below min_samples, reported as such
    idx = bootstrap_indices(200, 100, seed=7, strata=test["label"].to_numpy())
    rows = pd.DataFrame(OP.operating_point_rows(RECORD, test, cal, idx, "sensitivity=0.9"))
    table = OP.holm_family(rows, by=())  # one family: the whole table
    small = table[(table["subgroup"] == "other") & (table["metric"] == "tpr")]
    assert math.isnan(small["value"].iloc[0]) and "< 10" in small["note"].iloc[0]
    tests = table[table["metric"].isin(["tpr_gap", "fpr_gap", "ppv_gap", "ece_gap"]) & table["p"].notna()]
    assert len(tests) >= 4
    assert (tests["p_holm"] >= tests["p"] - 1e-12).all()
    m = len(tests)
    assert tests["p_holm"].min() == pytest.approx(min(1.0, m * tests["p"].min()))
    eod = table[table["metric"] == "eod"]
    assert eod["p_holm"].notna().all()


def test_threshold_needs_both_classes():
    with pytest.raises(ValueError, match="positive and negative"):
        OP.choose_threshold(np.ones(5, bool), np.linspace(0, 1, 5), "youden")


def test_holm_families_are_per_table_by_default():
    test, cal = _table(200, 2, 8), _table(200, 2, 9)
    idx = bootstrap_indices(200, 100, seed=7, strata=test["label"].to_numpy())
    rows = pd.DataFrame(OP.operating_point_rows(RECORD, test, cal, idx, "youden"))
    per_table = OP.holm_family(rows)
    gaps = per_table[per_table["metric"].isin(["tpr_gap", "fpr_gap", "ppv_gap", "ece_gap"]) & per_table["p"].notna()]
    for attribute, part in gaps.groupby("attribute"):
        m = len(part)
        assert part["p_holm"].min() == pytest.approx(min(1.0, m * part["p"].min()))
