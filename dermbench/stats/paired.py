"""Paired tests between two models scored on the same test images (PROTOCOL.md "Statistics").

Two models evaluated on the same test set are *paired*: every test image is scored by both, so
their metrics are correlated and an unpaired comparison (two overlapping CIs) wastes most of the
information. The sound paired tests, next to the paper's one; arrays in, numbers out:

- :func:`paired_bootstrap_test`: the paired bootstrap. Both models' replicates come from the same
  stored resample indices (see :func:`dermbench.stats.bootstrap.shared_bootstrap_indices`), so
  replicate ``b`` of A and replicate ``b`` of B are computed on the very same resampled images.
- :func:`delong_test`: DeLong's test for two correlated AUROCs (binary; one-vs-rest per class and
  macro for more classes).
- :func:`mcnemar_test`: the exact McNemar test for accuracy.
- :func:`wilcoxon_test`: Wilcoxon signed-rank test on per-image values (segmentation Dice/Jaccard).
- :func:`paper_paired_ttest`: the DermINO paper's paired t-test over bootstrap replicates, reported
  for comparison only and labelled as unsound (its p-value shrinks as replicates are added).
- :func:`holm` / :func:`better_on_all`: Holm-Bonferroni across tasks, for claims like "A is
  better on all tasks".
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np
from scipy import stats as sps

PAPER_TTEST_LABEL = "paper's t-test (unsound: p shrinks with the number of replicates)"
ALPHA = 0.05
# The p-value families of a comparison table; each is Holm-adjusted across the table's rows.
P_FAMILIES = ("p_boot", "p_delong", "p_mcnemar", "p_wilcoxon", "p_ttest_paper")
P_TITLES = {"p_boot": "paired bootstrap", "p_delong": "DeLong (AUROC)", "p_mcnemar": "McNemar (accuracy)",
            "p_wilcoxon": "Wilcoxon (per image)", "p_ttest_paper": PAPER_TTEST_LABEL}


# --------------------------------------------------------------------------------------------
# Pure statistics
# --------------------------------------------------------------------------------------------
def paper_paired_ttest(rep_a: np.ndarray, rep_b: np.ndarray) -> dict[str, Any]:
    """The DermINO paper's comparison: a two-sided paired t-test over the bootstrap replicates.

    Computes ``scipy.stats.ttest_rel(rep_a, rep_b)`` over the replicates where both are finite.
    Reported only to reproduce the paper: the replicates are not independent observations, and
    their number B is chosen by the analyst, so t grows like sqrt(B) and p can be made as small as
    one likes by drawing more replicates. Use :func:`paired_bootstrap_test`, :func:`delong_test`
    or :func:`mcnemar_test` for inference.

    Returns ``{"t", "p", "n", "label"}``.
    """
    a, b = np.asarray(rep_a, np.float64), np.asarray(rep_b, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    n = int(ok.sum())
    if n < 2:
        return {"t": math.nan, "p": math.nan, "n": n, "label": PAPER_TTEST_LABEL}
    d = a[ok] - b[ok]
    if np.all(d == d[0]):  # constant difference: t undefined (scipy would warn and return NaN)
        t, p = (0.0, 1.0) if d[0] == 0 else (math.copysign(math.inf, d[0]), 0.0)
    else:
        res = sps.ttest_rel(a[ok], b[ok])
        t, p = float(res.statistic), float(res.pvalue)
    return {"t": t, "p": p, "n": n, "label": PAPER_TTEST_LABEL}


def paired_bootstrap_test(rep_a: np.ndarray, rep_b: np.ndarray, observed_diff: float,
                          alpha: float = ALPHA) -> dict[str, Any]:
    """Paired bootstrap comparison of two models from replicates on the SAME resamples.

    ``rep_a[b]`` and ``rep_b[b]`` must be the two models' metric on resample ``b`` (same resampled
    test images), so that ``d_b = rep_a[b] - rep_b[b]`` is a bootstrap replicate of the difference:
    the pairing cancels the variation due to which images were drawn, which the two models share.

    - CI: percentile (1 - alpha) interval of ``d_b`` (sound: on the metric's scale).
    - p (two-sided): ``min(1, 2 * min(P(d <= 0), P(d >= 0)))`` with each share estimated as
      ``(k + 1) / (B + 1)`` (k: replicates on that side of 0, B: finite replicates), the usual
      Monte-Carlo correction so that p is never 0 with finitely many replicates. This is the
      percentile-interval inversion: p < alpha exactly when the (1 - alpha) percentile CI of the
      difference excludes 0 (up to the +1 correction).

    Returns ``{"diff", "ci_low", "ci_high", "p", "n_boot_valid"}`` (``diff`` = ``observed_diff``).
    """
    a, b = np.asarray(rep_a, np.float64), np.asarray(rep_b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired replicates must have the same shape, got {a.shape} and {b.shape}")
    d = a - b
    d = d[np.isfinite(d)]
    n = int(d.size)
    if n == 0:
        return {"diff": float(observed_diff), "ci_low": math.nan, "ci_high": math.nan, "p": math.nan, "n_boot_valid": 0}
    le, ge = int((d <= 0).sum()), int((d >= 0).sum())
    p = min(1.0, 2.0 * min((le + 1) / (n + 1), (ge + 1) / (n + 1)))
    low, high = np.percentile(d, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return {"diff": float(observed_diff), "ci_low": float(low), "ci_high": float(high), "p": float(p), "n_boot_valid": n}


def _midranks(x: np.ndarray) -> np.ndarray:
    """Midranks (ties get the average rank, ranks start at 1) along the last axis."""
    return sps.rankdata(x, method="average", axis=-1)


def delong_placements(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUROCs and DeLong placement values of k score vectors on one binary problem.

    ``positive``: [n] bool; ``scores``: [k, n]. Returns ``(auc [k], v10 [k, m], v01 [k, n_neg])``:
    ``v10[:, i]`` is the share of negatives scored below positive i (ties 1/2), ``v01[:, j]`` the
    share of positives scored above negative j (ties 1/2), so that each AUC is the mean of either.
    Computed with midranks in O(k n log n) (Sun & Xu 2014, "Fast implementation of DeLong's
    algorithm", IEEE SPL 21:1389) instead of the O(k m n) pairwise comparisons.
    """
    positive = np.asarray(positive, bool)
    scores = np.atleast_2d(np.asarray(scores, np.float64))
    x, y = scores[:, positive], scores[:, ~positive]
    m, n = x.shape[1], y.shape[1]
    if m == 0 or n == 0:
        raise ValueError("DeLong's test needs at least one positive and one negative sample")
    tz = _midranks(np.concatenate([x, y], axis=1))
    tx, ty = _midranks(x), _midranks(y)
    v10 = (tz[:, :m] - tx) / n  # rank among all minus rank among positives = negatives below (+ ties/2)
    v01 = 1.0 - (tz[:, m:] - ty) / m  # 1 - positives below negative j (+ ties/2)
    auc = v10.mean(axis=1)
    return auc, v10, v01


def delong_covariance(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong, DeLong & Clarke-Pearson (1988) AUROCs and their covariance matrix for k scores.

    ``S = S10 / m + S01 / n`` with S10, S01 the unbiased (ddof = 1) covariance matrices of the
    positive and negative placement values (:func:`delong_placements`); m, n: positives, negatives.
    Returns ``(auc [k], cov [k, k])``.
    """
    auc, v10, v01 = delong_placements(positive, scores)
    m, n = v10.shape[1], v01.shape[1]
    s10 = np.cov(v10, ddof=1).reshape(len(auc), len(auc)) if m > 1 else np.zeros((len(auc), len(auc)))
    s01 = np.cov(v01, ddof=1).reshape(len(auc), len(auc)) if n > 1 else np.zeros((len(auc), len(auc)))
    return auc, s10 / m + s01 / n


def _z_test(diff: float, var: float) -> tuple[float, float, float]:
    """(se, z, two-sided normal p); a zero variance gives p = 1 for a zero difference, NaN otherwise."""
    se = math.sqrt(max(var, 0.0))
    if se == 0.0 or not math.isfinite(se):
        return se, (0.0 if diff == 0 else math.nan), (1.0 if diff == 0 else math.nan)
    z = diff / se
    return se, z, float(2.0 * sps.norm.sf(abs(z)))


def _binary_delong(positive: np.ndarray, score_a: np.ndarray, score_b: np.ndarray) -> dict[str, float]:
    auc, cov = delong_covariance(positive, np.stack([score_a, score_b]))
    diff = float(auc[0] - auc[1])
    se, z, p = _z_test(diff, float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]))
    return {"auc_a": float(auc[0]), "auc_b": float(auc[1]), "diff": diff, "se": se, "z": z, "p": p}


def delong_test(y: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> dict[str, Any]:
    """DeLong's test of H0: AUROC_A = AUROC_B for two models scored on the same test samples.

    Binary (``scores`` [n] of the positive class, or [n, 2] as in dermbench predictions, where
    column 1 is the positive class — the same score dermbench's AUROC uses): the classic test,
    ``z = (AUC_A - AUC_B) / sqrt(Var_A + Var_B - 2 Cov_AB)`` with the DeLong covariance
    (:func:`delong_covariance`), two-sided normal p.

    Multi-class ([n, C], C > 2), matching dermbench's macro one-vs-rest AUROC:

    - ``per_class``: for each class c, the binary DeLong test of the one-vs-rest AUROCs of
      ``scores[:, c]`` (class c against all others), exactly as a binary problem would give.
    - macro (top-level ``auc_a``, ``auc_b``, ``diff``, ``se``, ``z``, ``p``): the difference of the
      averaged AUROCs, ``D = mean_c (AUC_A,c - AUC_B,c)``. Its variance combines the per-class
      structural components: DeLong's estimate is the variance of a sum of independent per-sample
      terms, and here sample i contributes, for every class c, ``(V10_c(i) - AUC_c) / m_c`` if it
      belongs to c and ``(V01_c(i) - AUC_c) / n_c`` otherwise (the placement values of the
      one-vs-rest problem); these are averaged over classes and differenced between models,
      giving one term ``psi(i)``. ``Var(D) = sum_k n_k / (n_k - 1) * sum_{i in class k} (psi(i) -
      mean_k psi)^2``, i.e. DeLong's unbiased variance computed within each true class — the class
      counts are held fixed, as in DeLong's two-sample setting and in dermbench's stratified
      bootstrap. For one binary problem (two groups: positives, negatives) this formula is exactly
      DeLong's ``S10/m + S01/n``; with C > 2 classes the covariances between the classes' AUROCs
      (they share every sample) are included automatically.

    Returns ``{"auc_a", "auc_b", "diff", "se", "z", "p", "per_class"}`` (``per_class`` is None for
    binary problems, else a list of per-class dicts with the same keys).
    """
    y = np.asarray(y)
    sa, sb = np.asarray(scores_a, np.float64), np.asarray(scores_b, np.float64)
    if sa.shape != sb.shape or sa.shape[0] != len(y):
        raise ValueError(f"scores must have the same shape with one row per label: {sa.shape}, {sb.shape}, n = {len(y)}")
    if sa.ndim == 1 or sa.shape[1] == 2:
        positive = (y == 1)
        a1 = sa if sa.ndim == 1 else sa[:, 1]
        b1 = sb if sb.ndim == 1 else sb[:, 1]
        return {**_binary_delong(positive, a1, b1), "per_class": None}
    n_classes = sa.shape[1]
    y = y.astype(np.int64)
    present = [c for c in range(n_classes) if 0 < (y == c).sum() < len(y)]
    if len(present) < 2:
        raise ValueError("DeLong's multi-class test needs at least two classes present in the labels")
    per_class, psi = [], np.zeros(len(y))
    for c in present:
        positive = y == c
        per_class.append({"class": c, **_binary_delong(positive, sa[:, c], sb[:, c])})
        auc, v10, v01 = delong_placements(positive, np.stack([sa[:, c], sb[:, c]]))
        m, n = int(positive.sum()), int((~positive).sum())
        term = np.empty((2, len(y)))
        term[:, positive] = (v10 - auc[:, None]) / m
        term[:, ~positive] = (v01 - auc[:, None]) / n
        psi += (term[0] - term[1]) / len(present)
    var = 0.0
    for k in np.unique(y):
        members = psi[y == k]
        if len(members) > 1:
            var += len(members) / (len(members) - 1) * float(((members - members.mean()) ** 2).sum())
    auc_a = float(np.mean([r["auc_a"] for r in per_class]))
    auc_b = float(np.mean([r["auc_b"] for r in per_class]))
    diff = float(np.mean([r["diff"] for r in per_class]))
    se, z, p = _z_test(diff, var)
    return {"auc_a": auc_a, "auc_b": auc_b, "diff": diff, "se": se, "z": z, "p": p, "per_class": per_class}


def mcnemar_test(y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> dict[str, Any]:
    """Exact McNemar test of H0: accuracy_A = accuracy_B on the same test samples.

    Only the discordant samples carry information: ``n10`` (A right, B wrong) and ``n01`` (A
    wrong, B right). Under H0 each discordant sample is equally likely to go either way, so
    ``n10 ~ Binomial(n10 + n01, 1/2)``; p is the exact two-sided binomial p
    (``scipy.stats.binomtest``), 1 when there is no discordant sample.

    Returns ``{"acc_a", "acc_b", "n10", "n01", "p"}``.
    """
    y, pa, pb = np.asarray(y), np.asarray(pred_a), np.asarray(pred_b)
    if not (len(y) == len(pa) == len(pb)):
        raise ValueError(f"labels and predictions must have the same length: {len(y)}, {len(pa)}, {len(pb)}")
    ra, rb = pa == y, pb == y
    n10, n01 = int((ra & ~rb).sum()), int((~ra & rb).sum())
    p = 1.0 if n10 + n01 == 0 else float(sps.binomtest(n10, n10 + n01, 0.5, alternative="two-sided").pvalue)
    return {"acc_a": float(ra.mean()) if len(y) else math.nan, "acc_b": float(rb.mean()) if len(y) else math.nan,
            "n10": n10, "n01": n01, "p": p}


def wilcoxon_test(values_a: np.ndarray, values_b: np.ndarray) -> dict[str, Any]:
    """Wilcoxon signed-rank test (two-sided) on paired per-sample values, e.g. per-image Dice.

    Tests whether the per-image differences ``a_i - b_i`` are symmetric about 0
    (``scipy.stats.wilcoxon``, zero differences dropped — its default ``zero_method='wilcox'``).
    p = 1 when every difference is 0. Returns ``{"statistic", "p", "n"}``.
    """
    a, b = np.asarray(values_a, np.float64), np.asarray(values_b, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    d = a[ok] - b[ok]
    if d.size == 0 or np.all(d == 0):
        return {"statistic": math.nan, "p": 1.0 if d.size else math.nan, "n": int(d.size)}
    res = sps.wilcoxon(a[ok], b[ok])
    return {"statistic": float(res.statistic), "p": float(res.pvalue), "n": int(d.size)}


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone), in the input order.

    With the m finite p-values sorted ascending, ``p_adj(i) = min(1, max_{j <= i} (m - j + 1) p_(j))``.
    Rejecting where ``p_adj < alpha`` controls the family-wise error rate at alpha under any
    dependence between the tests. NaN entries (tests that could not be run) stay NaN and do not
    count in m.
    """
    p = np.asarray(pvalues, np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="mergesort")]
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out


def better_on_all(diffs: Sequence[float], p_adjusted: Sequence[float], alpha: float = ALPHA) -> bool:
    """Whether "A is better than B on all tasks" holds: every difference is > 0 and every
    (Holm-)adjusted p-value is < alpha. False for an empty family or when any task could not be
    tested (NaN), since the claim then is not established for that task."""
    d, p = np.asarray(diffs, np.float64), np.asarray(p_adjusted, np.float64)
    if d.size == 0 or d.shape != p.shape:
        return False
    return bool(np.all(np.isfinite(d)) and np.all(np.isfinite(p)) and np.all(d > 0) and np.all(p < alpha))
