"""Reader-study statistics against hand-worked cases and statsmodels / scikit-learn."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dermbench.stats import reader_study as RS


def _readings(rows):
    """rows: (reader, experience, image, round, answer, truth) on one dataset 'd'."""
    df = pd.DataFrame(rows, columns=["reader", "experience", "image", "round", "answer", "truth"])
    df["dataset"] = "d"
    df["correct"] = df["answer"] == df["truth"]
    return df


def _answers(mapping):
    return pd.Series(list(mapping.values()), index=pd.MultiIndex.from_tuples([("d", k) for k in mapping]))


def test_clopper_pearson_hand_worked_and_statsmodels():
    from statsmodels.stats.proportion import proportion_confint

    # k = 0: [0, 1 - (alpha/2)^(1/n)]; k = n: [(alpha/2)^(1/n), 1]
    lo, hi = RS.clopper_pearson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 10), abs=1e-12)
    lo, hi = RS.clopper_pearson(10, 10)
    assert lo == pytest.approx(0.025 ** (1 / 10), abs=1e-12) and hi == 1.0
    for k, n in [(1, 10), (7, 20), (88, 119), (50, 50), (3, 4)]:
        ref = proportion_confint(k, n, alpha=0.05, method="beta")
        assert RS.clopper_pearson(k, n) == pytest.approx(ref, abs=1e-10)
    assert all(math.isnan(v) for v in RS.clopper_pearson(0, 0))


def test_reader_and_experience_accuracy_hand_worked():
    truth = ["a", "b", "a", "b"]
    r1 = ["a", "b", "a", "a"]  # 3/4
    r2 = ["a", "a", "b", "b"]  # 2/4
    r3 = ["a", "b", "a", "b"]  # 4/4
    rows = []
    for reader, group, answers in (("R1", "junior", r1), ("R2", "junior", r2), ("R3", "senior", r3)):
        rows += [(reader, group, i, "without-ai", a, t) for i, (a, t) in enumerate(zip(answers, truth))]
    df = _readings(rows)
    acc = RS.reader_accuracy(df).set_index("reader")
    assert acc.loc["R1", "accuracy"] == 0.75 and acc.loc["R2", "accuracy"] == 0.5 and acc.loc["R3", "accuracy"] == 1.0
    assert (acc.loc["R1", "ci_low"], acc.loc["R1", "ci_high"]) == pytest.approx(RS.clopper_pearson(3, 4))
    exp = RS.experience_accuracy(df, ["junior", "senior"]).set_index("experience")
    assert exp.loc["junior", "mean_accuracy"] == 0.625 and exp.loc["junior", "readers"] == 2
    # t interval over readers: mean 0.625, sd = 0.1767767, se = 0.125, t(0.975, 1) = 12.7062
    assert exp.loc["junior", "ci_low"] == pytest.approx(0.625 - 12.706205 * 0.125, abs=1e-5)
    assert exp.loc["all", "mean_accuracy"] == pytest.approx(0.75)
    assert math.isnan(exp.loc["senior", "ci_low"])  # one reader: no interval across readers


def test_model_vs_each_reader_is_exact_mcnemar_hand_worked_and_statsmodels():
    from statsmodels.stats.contingency_tables import mcnemar

    # 10 images: the model is right on all; the reader is wrong on images 0..5 -> n10 = 6, n01 = 0
    truth = ["a"] * 10
    reader = ["b"] * 6 + ["a"] * 4
    df = _readings([("R1", "x", i, "without-ai", reader[i], truth[i]) for i in range(10)])
    answers = _answers({i: "a" for i in range(10)})
    out = RS.model_vs_readers(df, answers).iloc[0]
    assert (out.n10, out.n01) == (6, 0)
    assert out.p_mcnemar == pytest.approx(2 * 0.5 ** 6)  # exact two-sided binomial: 0.03125
    assert out.model_accuracy == 1.0 and out.reader_accuracy == 0.4
    # a mixed case against statsmodels' exact McNemar
    rng = np.random.default_rng(3)
    truth = rng.choice(["a", "b", "c"], 40)
    model = np.where(rng.random(40) < 0.8, truth, "c")
    reader = np.where(rng.random(40) < 0.6, truth, "b")
    df = _readings([("R1", "x", i, "without-ai", reader[i], truth[i]) for i in range(40)])
    out = RS.model_vs_readers(df, _answers(dict(enumerate(model)))).iloc[0]
    mr, rr = model == truth, reader == truth
    table = [[int((mr & rr).sum()), int((mr & ~rr).sum())], [int((~mr & rr).sum()), int((~mr & ~rr).sum())]]
    assert out.p_mcnemar == pytest.approx(mcnemar(table, exact=True).pvalue, abs=1e-12)


def test_model_vs_reader_mean_and_holm():
    per_reader = pd.DataFrame({"reader": ["R1", "R2", "R3"], "model_accuracy": [0.9, 0.9, 0.9],
                               "reader_accuracy": [0.6, 0.7, 0.8], "difference": [0.3, 0.2, 0.1],
                               "p_mcnemar": [0.01, 0.04, 0.3]})
    out = RS.model_vs_reader_mean(per_reader)
    assert out["mean_difference"] == pytest.approx(0.2) and out["reader_mean_accuracy"] == pytest.approx(0.7)
    # t = 0.2 / (0.1 / sqrt(3)) = 2 sqrt(3); df 2: two-sided p = 1 - t / sqrt(t^2 + 2)
    t = 2 * math.sqrt(3)
    assert out["p_ttest"] == pytest.approx(1 - t / math.sqrt(t * t + 2), abs=1e-12)


def _two_rounds():
    truth = ["a", "b", "a", "b"]
    rounds = {  # reader: (without, with)
        "R1": (["a", "a", "a", "a"], ["a", "b", "a", "a"]),  # 2/4 -> 3/4
        "R2": (["b", "b", "b", "b"], ["a", "b", "a", "b"]),  # 2/4 -> 4/4
        "R3": (["a", "b", "b", "b"], ["a", "b", "a", "a"]),  # 3/4 -> 3/4 ... see test
    }
    rows = []
    for reader, (w, a) in rounds.items():
        rows += [(reader, "x", i, "without-ai", w[i], truth[i]) for i in range(4)]
        rows += [(reader, "x", i, "with-ai", a[i], truth[i]) for i in range(4)]
    return _readings(rows)


def test_ai_assistance_hand_worked():
    per_reader, summary = RS.ai_assistance(_two_rounds())
    change = per_reader.set_index("reader")["change"]
    assert list(change) == pytest.approx([0.25, 0.5, 0.0])
    assert summary["mean_change"] == pytest.approx(0.25) and summary["paired_readings"] == 12
    # t = 0.25 / (0.25 / sqrt(3)) = sqrt(3), df 2
    t = math.sqrt(3)
    assert summary["p_ttest"] == pytest.approx(1 - t / math.sqrt(t * t + 2), abs=1e-12)


def test_cohens_kappa_hand_worked_sklearn_and_statsmodels():
    from sklearn.metrics import cohen_kappa_score
    from statsmodels.stats.inter_rater import cohens_kappa

    # reader a,a,b,b vs model a,b,b,b: po = 3/4, pe = 1/2 * 1/4 + 1/2 * 3/4 = 1/2, kappa = 1/2
    df = _readings([("R1", "x", i, "without-ai", a, "a") for i, a in enumerate("aabb")])
    out = RS.agreement_with_model(df, _answers(dict(enumerate("abbb")))).iloc[0]
    assert out.kappa == pytest.approx(0.5) and out.agreement == 0.75
    rng = np.random.default_rng(0)
    reader, model = rng.choice(list("abc"), 60), rng.choice(list("abc"), 60)
    df = _readings([("R1", "x", i, "without-ai", a, "a") for i, a in enumerate(reader)])
    out = RS.agreement_with_model(df, _answers(dict(enumerate(model)))).iloc[0]
    assert out.kappa == pytest.approx(cohen_kappa_score(reader, model))
    table = pd.crosstab(pd.Series(reader), pd.Series(model)).to_numpy()
    assert out.kappa == pytest.approx(cohens_kappa(table).kappa)


def test_followed_when_wrong_hand_worked():
    # the model is wrong on images 2 and 3 (answers b on truth a, a on truth b)
    answers = _answers({0: "a", 1: "b", 2: "b", 3: "a"})
    per_reader, s = RS.followed_when_wrong(_two_rounds(), answers)
    # images 2, 3 (model b, a): unaided R1 a,a  R2 b,b  R3 b,b -> the model's wrong answer: R1 on 3, R2 on 2,
    # R3 on 2 (3 of 6); with AI R1 a,a  R2 a,b  R3 a,a -> followed: R1 on 3, R3 on 3 (2 of 6); switched
    # (followed, and unaided a different answer): R3 on 3 only
    assert s["model_wrong_images"] == 2 and s["model_wrong_readings"] == 6
    assert s["followed"] == 2 and s["same_without"] == 3 and s["switched"] == 1
    assert s["followed_rate"] == pytest.approx(2 / 6)
    assert per_reader.set_index("reader")["switched"].to_dict() == {"R1": 0, "R2": 0, "R3": 1}


def _simulated(effect: float, n_readers=8, n_cases=25, seed=0):
    rng = np.random.default_rng(seed)
    reader_fx, case_fx = rng.normal(0, 0.5, n_readers), rng.normal(0, 0.8, n_cases)
    rows = []
    for r in range(n_readers):
        for c in range(n_cases):
            for rnd, x in (("without-ai", 0.0), ("with-ai", 1.0)):
                p = 1 / (1 + math.exp(-(0.3 + effect * x + reader_fx[r] - case_fx[c])))
                ok = rng.random() < p
                rows.append((f"R{r}", "x", c, rnd, "a" if ok else "b", "a"))
    return _readings(rows)


def test_mixed_effects_matches_statsmodels_and_recovers_the_effect():
    from statsmodels.genmod.bayes_mixed_glm import BinomialBayesMixedGLM

    df = _simulated(1.0)
    out = RS.mixed_effects_round_effect(df)
    data = pd.DataFrame({"correct": df["correct"].astype(float), "with_ai": (df["round"] == "with-ai").astype(float),
                         "reader": df["reader"], "case": "d/" + df["image"].astype(str)})
    ref = BinomialBayesMixedGLM.from_formula("correct ~ with_ai", {"reader": "0 + C(reader)", "case": "0 + C(case)"},
                                             data).fit_vb(rng=np.random.default_rng(0))
    assert out["log_odds_ratio"] == pytest.approx(ref.fe_mean[1], rel=1e-9)
    assert out["sd"] == pytest.approx(ref.fe_sd[1], rel=1e-9)
    assert RS.mixed_effects_round_effect(df) == out  # seeded starting values: the same numbers every time
    assert out["or_ci_low"] < math.exp(1.0) < out["or_ci_high"] and out["p"] < 1e-3
    assert out["readers"] == 8 and out["cases"] == 25
    with pytest.raises(ValueError, match="both rounds"):
        RS.mixed_effects_round_effect(df[df["round"] == "without-ai"])
