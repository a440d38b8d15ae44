"""Reader-study statistics (the paper's Fig. 6c–d and Supplementary Table 2): DataFrames in, numbers out.

A reader study has readers (dermatologists, each with an experience group) who answer the same
images, once without and once with the model's answer shown (rounds ``without-ai`` / ``with-ai``).
Every function takes the *scored readings*: one row per (reader, image, round) with the columns

    reader, experience, dataset, image, round, answer, truth, correct (bool)

and, where the model is compared, the model's answers as a Series indexed by ``(dataset, image)``.
An image is identified by ``(dataset, image)``; the same id in two datasets is two images.

- :func:`clopper_pearson`: the exact binomial 95% interval of an accuracy.
- :func:`reader_accuracy`: per reader and round: correct / n, accuracy, Clopper–Pearson CI.
- :func:`experience_accuracy`: per experience group and round: the readers' mean accuracy with a
  t interval across readers (readers are the unit: their readings are not independent).
- :func:`model_vs_readers`: the model against each reader on the images that reader read, by the
  exact McNemar test (:func:`dermbench.stats.paired.mcnemar_test`), Holm-adjusted across readers;
  and :func:`model_vs_reader_mean`: the model against the readers' mean (per-reader differences,
  one-sample t-test and Wilcoxon signed-rank across readers).
- :func:`ai_assistance`: each reader's accuracy without and with AI on the images read in both
  rounds, and the paired t-test and Wilcoxon signed-rank test of the change across readers.
- :func:`mixed_effects_round_effect`: the multi-reader multi-case analysis: a mixed-effects logistic
  model ``correct ~ with_ai`` with random intercepts for reader and for case (image), fitted by
  statsmodels' ``BinomialBayesMixedGLM`` (variational Bayes). Readers and cases both vary, so its
  interval generalises to new readers *and* new images, which the per-reader tests do not.
- :func:`agreement_with_model`: Cohen's kappa between each reader's answers and the model's
  (scikit-learn ``cohen_kappa_score``), per round.
- :func:`followed_when_wrong`: on the images the model got wrong, how often a reader gave the
  model's wrong answer with AI, how often they gave it without AI, and how often they switched to it.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import pandas as pd
from scipy import stats as sps

from dermbench.stats.paired import holm, mcnemar_test

WITHOUT_AI = "without-ai"
WITH_AI = "with-ai"
ROUNDS = (WITHOUT_AI, WITH_AI)
SCORED_COLUMNS = ("reader", "experience", "dataset", "image", "round", "answer", "truth", "correct")
CONFIDENCE = 0.95


def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact (Clopper–Pearson) interval of a proportion k/n: the beta quantiles, so that each tail
    holds at most (1 - confidence) / 2. (0, 1) is never narrowed below the data: k = 0 gives low 0."""
    if n <= 0:
        return (math.nan, math.nan)
    ci = sps.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def _t_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return (math.nan, math.nan)
    mean, se = float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size))
    if se == 0:
        return (mean, mean)
    half = float(sps.t.ppf(0.5 + confidence / 2, values.size - 1)) * se
    return mean - half, mean + half


def check_scored(readings: pd.DataFrame) -> None:
    missing = [c for c in SCORED_COLUMNS if c not in readings.columns]
    if missing:
        raise ValueError(f"scored readings lack column(s) {missing}; expected {list(SCORED_COLUMNS)}")


# ---------------------------------------------------------------------------------------------
# Accuracy of readers
# ---------------------------------------------------------------------------------------------
def reader_accuracy(readings: pd.DataFrame) -> pd.DataFrame:
    """One row per (reader, round): experience, n, correct, accuracy, ci_low, ci_high (Clopper–Pearson)."""
    check_scored(readings)
    rows = []
    for (reader, rnd), part in readings.groupby(["reader", "round"], sort=True):
        k, n = int(part["correct"].sum()), len(part)
        lo, hi = clopper_pearson(k, n)
        rows.append({"reader": reader, "experience": part["experience"].iloc[0], "round": rnd, "n": n,
                     "correct": k, "accuracy": k / n, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows, columns=["reader", "experience", "round", "n", "correct", "accuracy", "ci_low", "ci_high"])


def experience_accuracy(readings: pd.DataFrame, order: Optional[list[str]] = None) -> pd.DataFrame:
    """One row per (experience group, round): readers, mean accuracy over readers, sd, min, max and the
    t interval of the mean across readers; plus an 'all' row per round."""
    per_reader = reader_accuracy(readings)
    groups = order or sorted(per_reader["experience"].unique(), key=str)
    rows = []
    for rnd in [r for r in ROUNDS if r in set(per_reader["round"])]:
        in_round = per_reader[per_reader["round"] == rnd]
        for group in [*groups, "all"]:
            part = in_round if group == "all" else in_round[in_round["experience"] == group]
            if part.empty:
                continue
            acc = part["accuracy"].to_numpy(np.float64)
            lo, hi = _t_interval(acc)
            rows.append({"experience": group, "round": rnd, "readers": len(part), "readings": int(part["n"].sum()),
                         "mean_accuracy": float(acc.mean()), "sd": float(acc.std(ddof=1)) if acc.size > 1 else math.nan,
                         "min": float(acc.min()), "max": float(acc.max()), "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows, columns=["experience", "round", "readers", "readings", "mean_accuracy", "sd", "min", "max",
                                       "ci_low", "ci_high"])


# ---------------------------------------------------------------------------------------------
# The model against the readers
# ---------------------------------------------------------------------------------------------
def _model_on(part: pd.DataFrame, model_answers: pd.Series) -> np.ndarray:
    keys = list(zip(part["dataset"], part["image"]))
    missing = [k for k in keys if k not in model_answers.index]
    if missing:
        raise ValueError(f"the model has no answer for {len(missing)} image(s) the readers read, e.g. {missing[:3]}")
    return model_answers.loc[keys].to_numpy()


def model_vs_readers(readings: pd.DataFrame, model_answers: pd.Series, rnd: str = WITHOUT_AI) -> pd.DataFrame:
    """Per reader of round ``rnd``: the model's and the reader's accuracy on the images the reader read,
    the discordant counts (n10: model right and reader wrong; n01: the reverse), the exact McNemar p and
    the Holm-adjusted p across readers."""
    check_scored(readings)
    rows = []
    for reader, part in readings[readings["round"] == rnd].groupby("reader", sort=True):
        model = _model_on(part, model_answers)
        test = mcnemar_test(part["truth"].to_numpy(), model, part["answer"].to_numpy())
        rows.append({"reader": reader, "experience": part["experience"].iloc[0], "n": len(part),
                     "model_accuracy": test["acc_a"], "reader_accuracy": test["acc_b"],
                     "difference": test["acc_a"] - test["acc_b"], "n10": test["n10"], "n01": test["n01"],
                     "p_mcnemar": test["p"]})
    out = pd.DataFrame(rows, columns=["reader", "experience", "n", "model_accuracy", "reader_accuracy", "difference",
                                      "n10", "n01", "p_mcnemar"])
    out["p_holm"] = holm(out["p_mcnemar"].to_numpy()) if len(out) else []
    return out


def model_vs_reader_mean(per_reader: pd.DataFrame) -> dict[str, Any]:
    """The model against the readers' mean, from :func:`model_vs_readers`: the mean per-reader difference
    (model − reader, each on that reader's images) with its t interval, the one-sample t-test and the
    Wilcoxon signed-rank test of those differences against 0 (readers are the unit)."""
    d = per_reader["difference"].to_numpy(np.float64)
    out: dict[str, Any] = {"readers": int(d.size), "model_accuracy": float(per_reader["model_accuracy"].mean()),
                           "reader_mean_accuracy": float(per_reader["reader_accuracy"].mean()),
                           "mean_difference": float(d.mean()) if d.size else math.nan}
    out["ci_low"], out["ci_high"] = _t_interval(d)
    out["p_ttest"] = float(sps.ttest_1samp(d, 0.0).pvalue) if d.size > 1 and d.std() > 0 else math.nan
    out["p_wilcoxon"] = float(sps.wilcoxon(d).pvalue) if d.size > 0 and np.any(d != 0) else math.nan
    return out


# ---------------------------------------------------------------------------------------------
# AI assistance
# ---------------------------------------------------------------------------------------------
def paired_rounds(readings: pd.DataFrame) -> pd.DataFrame:
    """One row per (reader, image) read in both rounds: answer/correct without and with AI."""
    check_scored(readings)
    keys = ["reader", "experience", "dataset", "image", "truth"]
    without = readings[readings["round"] == WITHOUT_AI].set_index(keys)[["answer", "correct"]]
    with_ai = readings[readings["round"] == WITH_AI].set_index(keys)[["answer", "correct"]]
    both = without.merge(with_ai, how="inner", left_index=True, right_index=True, suffixes=("_without", "_with"))
    return both.reset_index()


def ai_assistance(readings: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per reader: accuracy without and with AI on the images read in both rounds, and the change; and
    across readers: the mean change with its t interval, the paired t-test and the Wilcoxon signed-rank
    test (two-sided). Readings present in one round only are left out (counted in ``unpaired``)."""
    both = paired_rounds(readings)
    rows = []
    for reader, part in both.groupby("reader", sort=True):
        a, b = float(part["correct_without"].mean()), float(part["correct_with"].mean())
        rows.append({"reader": reader, "experience": part["experience"].iloc[0], "n": len(part),
                     "accuracy_without": a, "accuracy_with": b, "change": b - a})
    per_reader = pd.DataFrame(rows, columns=["reader", "experience", "n", "accuracy_without", "accuracy_with", "change"])
    change = per_reader["change"].to_numpy(np.float64)
    summary: dict[str, Any] = {"readers": int(change.size), "paired_readings": int(len(both)),
                               "unpaired": int(len(readings) - 2 * len(both)),
                               "mean_without": float(per_reader["accuracy_without"].mean()) if change.size else math.nan,
                               "mean_with": float(per_reader["accuracy_with"].mean()) if change.size else math.nan,
                               "mean_change": float(change.mean()) if change.size else math.nan}
    summary["ci_low"], summary["ci_high"] = _t_interval(change)
    summary["p_ttest"] = (float(sps.ttest_rel(per_reader["accuracy_with"], per_reader["accuracy_without"]).pvalue)
                          if change.size > 1 and change.std() > 0 else math.nan)
    summary["p_wilcoxon"] = float(sps.wilcoxon(change).pvalue) if change.size and np.any(change != 0) else math.nan
    return per_reader, summary


def mixed_effects_round_effect(readings: pd.DataFrame, seed: int = 0) -> dict[str, Any]:
    """The multi-reader multi-case analysis of accuracy: ``logit P(correct) = b0 + b1·[with AI] + u_reader +
    v_case`` with independent normal random intercepts for readers and for cases (dataset/image),
    fitted by statsmodels' ``BinomialBayesMixedGLM.fit_vb`` (variational Bayes, its default priors).

    Returns b1 (log odds ratio of being correct with AI), its posterior sd, the odds ratio with the
    95% interval exp(b1 ± 1.96 sd), the two-sided normal p of b1 / sd, the sd of the reader and case
    effects, and the model's mean accuracy without and with AI for a typical reader and case
    (u = v = 0). ``fit_vb`` draws the starting values of the variational sds at random (fresh OS
    entropy unless given a generator), so ``seed`` fixes them: the same readings give the same numbers."""
    from statsmodels.genmod.bayes_mixed_glm import BinomialBayesMixedGLM

    check_scored(readings)
    present = set(readings["round"])
    if not set(ROUNDS) <= present:
        raise ValueError(f"the mixed-effects analysis needs both rounds {ROUNDS}; the readings have {sorted(present)}")
    data = pd.DataFrame({"correct": readings["correct"].astype(float).to_numpy(),
                         "with_ai": (readings["round"] == WITH_AI).astype(float).to_numpy(),
                         "reader": readings["reader"].astype(str).to_numpy(),
                         "case": (readings["dataset"].astype(str) + "/" + readings["image"].astype(str)).to_numpy()})
    model = BinomialBayesMixedGLM.from_formula("correct ~ with_ai", {"reader": "0 + C(reader)", "case": "0 + C(case)"},
                                               data)
    fit = model.fit_vb(rng=np.random.default_rng(seed))
    names = list(model.exog_names)
    i = names.index("with_ai")
    b0, b1 = float(fit.fe_mean[0]), float(fit.fe_mean[i])
    sd = float(fit.fe_sd[i])
    z = b1 / sd if sd > 0 else math.nan
    vc = dict(zip(model.vcp_names, np.exp(fit.vcp_mean)))  # posterior mean of log sd -> sd

    def expit(x: float) -> float:
        return 1.0 / (1.0 + math.exp(-x))

    return {"method": "mixed-effects logistic (statsmodels BinomialBayesMixedGLM, variational Bayes)",
            "formula": "correct ~ with_ai + (1 | reader) + (1 | case)",
            "readings": int(len(data)), "readers": int(data["reader"].nunique()), "cases": int(data["case"].nunique()),
            "log_odds_ratio": b1, "sd": sd, "odds_ratio": math.exp(b1),
            "or_ci_low": math.exp(b1 - 1.959964 * sd), "or_ci_high": math.exp(b1 + 1.959964 * sd),
            "z": z, "p": float(2 * sps.norm.sf(abs(z))) if sd > 0 else math.nan,
            "reader_sd": float(vc.get("reader", math.nan)), "case_sd": float(vc.get("case", math.nan)),
            "typical_accuracy_without": expit(b0), "typical_accuracy_with": expit(b0 + b1), "seed": seed}


# ---------------------------------------------------------------------------------------------
# Agreement with the model, following its mistakes
# ---------------------------------------------------------------------------------------------
def agreement_with_model(readings: pd.DataFrame, model_answers: pd.Series) -> pd.DataFrame:
    """Per (reader, round): Cohen's kappa between the reader's and the model's answers on the same images
    (scikit-learn), and the raw agreement. Kappa is NaN when both gave one and the same answer throughout."""
    from sklearn.metrics import cohen_kappa_score

    check_scored(readings)
    rows = []
    for (reader, rnd), part in readings.groupby(["reader", "round"], sort=True):
        model = _model_on(part, model_answers).astype(str)
        answers = part["answer"].astype(str).to_numpy()
        if len(set(model) | set(answers)) < 2:
            kappa = math.nan
        else:
            kappa = float(cohen_kappa_score(answers, model))
        rows.append({"reader": reader, "experience": part["experience"].iloc[0], "round": rnd, "n": len(part),
                     "agreement": float(np.mean(answers == model)), "kappa": kappa})
    return pd.DataFrame(rows, columns=["reader", "experience", "round", "n", "agreement", "kappa"])


def followed_when_wrong(readings: pd.DataFrame, model_answers: pd.Series) -> tuple[pd.DataFrame, dict[str, Any]]:
    """On the images the model answered wrongly, read in both rounds, per reader: how many such readings,
    how often the with-AI answer equals the model's wrong answer (followed), how often the unaided answer
    already did (the base rate of that same mistake), and how often the reader switched to it (own answer
    different, with-AI answer the model's). Pooled rates over every reader in the summary."""
    both = paired_rounds(readings)
    if both.empty:
        empty = pd.DataFrame(columns=["reader", "experience", "model_wrong", "followed", "same_without", "switched"])
        return empty, {"model_wrong_readings": 0}
    model = pd.Series(_model_on(both, model_answers), index=both.index)
    wrong = both[model != both["truth"]].copy()
    wrong["model_answer"] = model[wrong.index]
    wrong["followed"] = wrong["answer_with"] == wrong["model_answer"]
    wrong["same_without"] = wrong["answer_without"] == wrong["model_answer"]
    wrong["switched"] = wrong["followed"] & ~wrong["same_without"]
    rows = []
    for reader, part in wrong.groupby("reader", sort=True):
        rows.append({"reader": reader, "experience": part["experience"].iloc[0], "model_wrong": len(part),
                     "followed": int(part["followed"].sum()), "same_without": int(part["same_without"].sum()),
                     "switched": int(part["switched"].sum())})
    per_reader = pd.DataFrame(rows, columns=["reader", "experience", "model_wrong", "followed", "same_without", "switched"])
    n = int(len(wrong))
    summary: dict[str, Any] = {"model_wrong_images": int(wrong[["dataset", "image"]].drop_duplicates().shape[0]),
                               "model_wrong_readings": n}
    for key in ("followed", "same_without", "switched"):
        k = int(wrong[key].sum())
        lo, hi = clopper_pearson(k, n)
        summary[key] = k
        summary[f"{key}_rate"] = k / n if n else math.nan
        summary[f"{key}_ci_low"], summary[f"{key}_ci_high"] = lo, hi
    return per_reader, summary


__all__ = ["ROUNDS", "SCORED_COLUMNS", "WITHOUT_AI", "WITH_AI", "agreement_with_model", "ai_assistance",
           "clopper_pearson", "experience_accuracy", "followed_when_wrong", "mixed_effects_round_effect",
           "model_vs_reader_mean", "model_vs_readers", "paired_rounds", "reader_accuracy"]
