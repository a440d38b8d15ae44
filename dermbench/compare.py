"""Paired comparison of two models on the same test sets (issue #6, PROTOCOL.md "Statistics").

Two models evaluated on the same test set are *paired*: every test image is scored by both, so
their metrics are correlated and an unpaired comparison (two overlapping CIs) wastes most of the
information. This module offers the sound paired tests next to the paper's one:

- :func:`paired_bootstrap_test`: the paired bootstrap. Both models' replicates come from the same
  stored resample indices (``<results>/_bootstrap``, see :func:`dermbench.stats.shared_bootstrap_indices`),
  so replicate ``b`` of A and replicate ``b`` of B are computed on the very same resampled images.
  Works for every metric (AUROC, F1, Dice, ...).
- :func:`delong_test`: DeLong's test for two correlated AUROCs (binary; one-vs-rest per class and
  macro for more classes).
- :func:`mcnemar_test`: the exact McNemar test for accuracy.
- :func:`wilcoxon_test`: Wilcoxon signed-rank test on per-image values (segmentation Dice/Jaccard).
- :func:`paper_paired_ttest`: the DermINO paper's paired t-test over bootstrap replicates, reported
  for comparison only and labelled as unsound (its p-value shrinks as replicates are added).
- :func:`holm` / :func:`better_on_all`: Holm-Bonferroni across tasks, for claims like "A is
  better on all tasks".

The functions above are pure (arrays in, numbers out); the rest of the module reads the results
store.

:func:`compare_models` applies them to two models of a results store and returns one row per
(task, protocol); :func:`format_comparison` prints that table (``dermbench compare``).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence

import click
import numpy as np
import pandas as pd
from scipy import stats as sps

PAPER_TTEST_LABEL = "paper's t-test (unsound: p shrinks with the number of replicates)"
ALPHA = 0.05
# The p-value families of a comparison table; each is Holm-adjusted across the table's rows.
P_FAMILIES = ("p_boot", "p_delong", "p_mcnemar", "p_wilcoxon", "p_ttest_paper")
P_TITLES = {"p_boot": "paired bootstrap", "p_delong": "DeLong (AUROC)", "p_mcnemar": "McNemar (accuracy)",
            "p_wilcoxon": "Wilcoxon (per image)", "p_ttest_paper": PAPER_TTEST_LABEL}


class ComparisonError(click.ClickException, ValueError):
    """The two models' results cannot be compared (missing, or not on the same test set).

    A ``ValueError`` for Python callers; ``dermbench compare`` prints it as a one-line error.
    """


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


# --------------------------------------------------------------------------------------------
# The results store
# --------------------------------------------------------------------------------------------
CLASSIFICATION_METRICS = ("auroc", "f1", "accuracy", "balanced_accuracy")
SEGMENTATION_METRICS = ("dice", "jaccard", "pixel_accuracy", "miou")
PER_IMAGE_SEGMENTATION = ("dice", "jaccard")  # stored per image: Wilcoxon applies
_CAPTION_TEXT_COLUMNS = ("sample_id", "reference", "generated")
LABEL_EFFICIENCY = "label-efficiency"

COLUMNS = ["task", "protocol", "kind", "metric", "n_test", "n_boot", "value_a", "value_b", "diff", "ci_low", "ci_high",
           "p_boot", "p_delong", "p_mcnemar", "p_wilcoxon", "p_ttest_paper",
           *[f"{f}_holm" for f in P_FAMILIES], "acc_a", "acc_b", "delong_per_class", "note"]


def _metric_for(kind: str, requested: str, ra: dict, rb: dict) -> tuple[Optional[str], str]:
    """The metric compared for a pair of results: the requested one where both have it, else the
    task's main metric (the note says so).

    Classification and segmentation: the metrics :func:`dermbench.evaluation.replicates` computes
    (stored results with extra ``metric@setting`` entries, like label efficiency's ``auroc@0.2`` or
    the federated task's per-client ``auroc@mednode``, also accept those names where both results
    have them). Other kinds: the metric names of the stored records.
    """
    stored = [m for m in (ra.get("metrics") or {}) if m in (rb.get("metrics") or {})]
    if kind == "classification":
        available: Sequence[str] = list(dict.fromkeys([*CLASSIFICATION_METRICS, *stored]))
    elif kind == "segmentation":
        available = list(dict.fromkeys([*SEGMENTATION_METRICS, *stored]))
    else:
        available = stored
    if requested in available:
        return requested, ""
    main = ra.get("main_metric")
    if main in available:
        return main, f"{requested} not defined for this {kind} result: compared {main}"
    return (available[0] if available else None), f"{requested} not defined for this {kind} result"


def _caption_metric_columns(predictions: pd.DataFrame) -> list[str]:
    return [c for c in predictions.columns if c not in _CAPTION_TEXT_COLUMNS and not c.startswith("group_")
            and pd.api.types.is_numeric_dtype(predictions[c])]


def _load_bootstrap(results_dir: Path, ra: dict, rb: dict, n: int) -> tuple[np.ndarray, str]:
    from dermbench.io import sha256_file

    notes = []
    boot = ra.get("bootstrap") or {}
    if (rb.get("bootstrap") or {}).get("sha256") != boot.get("sha256"):
        notes.append(f"the two results used different bootstrap files; both models were resampled with "
                     f"{model_label(ra)}'s ({boot.get('path')})")
    if not boot.get("path"):
        raise ComparisonError(f"{ra['_path']} names no bootstrap file: rerun it with this dermbench version")
    path = Path(results_dir) / boot["path"]
    if not path.exists():
        raise ComparisonError(f"bootstrap file {path} (named in {ra['_path']}) is missing")
    if boot.get("sha256") and sha256_file(path) != boot["sha256"]:
        raise ComparisonError(f"bootstrap file {path} does not match the sha256 recorded in {ra['_path']}")
    idx = np.load(path)
    if idx.ndim != 2 or idx.shape[1] != n:
        raise ComparisonError(f"bootstrap file {path} has shape {idx.shape}; expected (B, {n}) for the test set of {ra['_path']}")
    return idx, "; ".join(notes)


def model_label(record: dict) -> str:
    return str(record.get("model"))


def _test_ids(record: dict, predictions: pd.DataFrame) -> list[str]:
    """The test samples in the split's order: label efficiency stores one block per (fraction, repeat)."""
    ids = predictions["sample_id"].astype(str)
    if record.get("protocol") == LABEL_EFFICIENCY:
        ids = ids.drop_duplicates(keep="first")
    return ids.tolist()


def _check_paired(ra: dict, rb: dict, pa: pd.DataFrame, pb: pd.DataFrame) -> None:
    where = f"{ra['_path']} and {rb['_path']}"
    if ra.get("split_sha256") != rb.get("split_sha256"):
        raise ComparisonError(f"{ra['task']} · {ra['protocol']}: the two results were computed on different splits "
                              f"(split sha256 {str(ra.get('split_sha256'))[:12]} vs {str(rb.get('split_sha256'))[:12]}): "
                              f"{where}. Rerun both with the same --seed and --split (and data) to compare them.")
    ids_a, ids_b = _test_ids(ra, pa), _test_ids(rb, pb)
    if ids_a != ids_b:
        detail = (f"{len(ids_a)} vs {len(ids_b)} test samples" if len(ids_a) != len(ids_b) else
                  f"first difference at row {next(i for i, (u, v) in enumerate(zip(ids_a, ids_b)) if u != v)}")
        raise ComparisonError(f"{ra['task']} · {ra['protocol']}: the predictions do not list the same test samples in "
                              f"the same order ({detail}): {where}")
    if ra.get("kind") != rb.get("kind"):
        raise ComparisonError(f"{ra['task']} · {ra['protocol']}: results of different kinds ({ra.get('kind')} vs "
                              f"{rb.get('kind')}): {where}")
    if "label" in pa.columns and "label" in pb.columns:
        la = pa.drop_duplicates("sample_id")["label"].to_numpy() if ra.get("protocol") == LABEL_EFFICIENCY else pa["label"].to_numpy()
        lb = pb.drop_duplicates("sample_id")["label"].to_numpy() if rb.get("protocol") == LABEL_EFFICIENCY else pb["label"].to_numpy()
        if not np.array_equal(la, lb):
            raise ComparisonError(f"{ra['task']} · {ra['protocol']}: same samples but different labels: {where}")


def _label_efficiency_pair(pa: pd.DataFrame, pb: pd.DataFrame, name: str, idx: np.ndarray, notes: list[str]):
    """(point_a, point_b, rep_a, rep_b) of a label-efficiency metric: the mean over repeats (and its
    replicates on the shared resamples, :func:`dermbench.protocols.label_efficiency.fraction_replicates`)."""
    from dermbench.protocols.label_efficiency import fraction_replicates

    fa, fb = fraction_replicates(pa, idx), fraction_replicates(pb, idx)
    if name not in fa or name not in fb:
        raise KeyError(name)
    ra_, rb_ = fa[name], fb[name]
    if ra_["fraction"] != rb_["fraction"]:
        notes.append(f"largest training fractions differ ({ra_['fraction']:g} vs {rb_['fraction']:g})")
    notes.append(f"mean over {len(ra_['per_repeat'])} vs {len(rb_['per_repeat'])} repeats at training fraction "
                 f"{ra_['fraction']:g}; DeLong/McNemar do not apply to an average of repeats")
    return ra_["value"], rb_["value"], ra_["replicates"], rb_["replicates"]


def compare_pair(results_dir: Path, ra: dict, rb: dict, metric: str = "auroc") -> dict[str, Any]:
    """One comparison row for two finished results of the same (task, protocol)."""
    from dermbench.evaluation import classification_arrays, replicates
    from dermbench.metrics import full_index
    from dermbench.results import read_predictions

    try:
        pa, pb = read_predictions(ra["_path"]), read_predictions(rb["_path"])
    except (OSError, ValueError) as exc:
        raise ComparisonError(f"{ra['task']} · {ra['protocol']}: {exc}") from exc
    _check_paired(ra, rb, pa, pb)
    kind = ra.get("kind")
    n_test = len(_test_ids(ra, pa))
    row: dict[str, Any] = {c: math.nan for c in COLUMNS}
    row.update(task=ra["task"], protocol=ra["protocol"], kind=kind, n_test=n_test, delong_per_class=None)
    name, note = _metric_for(kind, metric, ra, rb)
    notes = [note] if note else []
    row["metric"] = name
    if name is None:
        row["note"] = "; ".join(notes + ["no metric to compare"])
        return row

    def stored_values() -> tuple[float, float]:
        return (float((ra.get("metrics") or {}).get(name, {}).get("value", math.nan)),
                float((rb.get("metrics") or {}).get(name, {}).get("value", math.nan)))

    rep_a = rep_b = None
    per_sample = False  # DeLong / McNemar / Wilcoxon apply: one prediction per test sample, plain metric
    if ra["protocol"] == LABEL_EFFICIENCY:
        idx, boot_note = _load_bootstrap(results_dir, ra, rb, n_test)
        try:
            point_a, point_b, rep_a, rep_b = _label_efficiency_pair(pa, pb, name, idx, notes)
        except KeyError:
            point_a, point_b = stored_values()
            notes.append(f"{name} is not in both label-efficiency results: values only")
    elif kind in ("classification", "segmentation") and name in (CLASSIFICATION_METRICS + SEGMENTATION_METRICS):
        idx, boot_note = _load_bootstrap(results_dir, ra, rb, n_test)
        point_a = replicates(kind, pa, full_index(n_test))[name][0]
        point_b = replicates(kind, pb, full_index(n_test))[name][0]
        rep_a, rep_b = replicates(kind, pa, idx)[name], replicates(kind, pb, idx)[name]
        per_sample = True
        if ra["protocol"] == "federated":
            notes.append("federated: the pooled test set of all clients")
    elif kind == "caption" and name in _caption_metric_columns(pa) and name in _caption_metric_columns(pb):
        idx, boot_note = _load_bootstrap(results_dir, ra, rb, n_test)
        va, vb = pa[name].to_numpy(np.float64), pb[name].to_numpy(np.float64)
        point_a, point_b = float(va.mean()), float(vb.mean())
        rep_a, rep_b = va[idx].mean(axis=1), vb[idx].mean(axis=1)
        notes.append(f"per-sample column {name!r}: mean over samples")
    else:
        idx, boot_note = None, ""
        point_a, point_b = stored_values()
        notes.append("no per-sample metric columns in the predictions: values only, no paired test" if kind == "caption"
                     else f"{name!r} has no per-sample replicates for protocol {ra['protocol']!r}: values only")
    if boot_note:
        notes.append(boot_note)
    if idx is not None:
        row["n_boot"] = int(idx.shape[0])
    row.update(value_a=float(point_a), value_b=float(point_b), diff=float(point_a) - float(point_b))
    if rep_a is None:
        row["note"] = "; ".join(notes)
        return row

    boot = paired_bootstrap_test(rep_a, rep_b, row["diff"])
    row.update(ci_low=boot["ci_low"], ci_high=boot["ci_high"], p_boot=boot["p"])
    row["p_ttest_paper"] = paper_paired_ttest(rep_a, rep_b)["p"]
    if per_sample and kind == "classification":
        y, pred_a, scores_a = classification_arrays(pa)
        _, pred_b, scores_b = classification_arrays(pb)
        mc = mcnemar_test(y, pred_a, pred_b)
        row.update(p_mcnemar=mc["p"], acc_a=mc["acc_a"], acc_b=mc["acc_b"])
        if name == "auroc":
            dl = delong_test(y, scores_a, scores_b)
            row["p_delong"] = dl["p"]
            if dl["per_class"] is not None:
                classes = ra.get("classes") or []
                row["delong_per_class"] = [{**r, "class": classes[r["class"]] if r["class"] < len(classes) else r["class"]}
                                           for r in dl["per_class"]]
    elif per_sample and kind == "segmentation" and name in PER_IMAGE_SEGMENTATION:
        row["p_wilcoxon"] = wilcoxon_test(pa[name].to_numpy(np.float64), pb[name].to_numpy(np.float64))["p"]
    row["note"] = "; ".join(notes)
    return row


def _order_key(task: str, protocol: str) -> tuple:
    from dermbench.leaderboard import PROTOCOL_ORDER
    from dermbench.tasks import PAPER_ORDER

    t = PAPER_ORDER.index(task) if task in PAPER_ORDER else len(PAPER_ORDER)
    p = PROTOCOL_ORDER.index(protocol) if protocol in PROTOCOL_ORDER else len(PROTOCOL_ORDER)
    return (t, task, p, protocol)


def compare_models(results_dir: Path, model_a: str, model_b: str, tasks: Optional[Sequence[str]] = None,
                   metric: str = "auroc", protocol: Optional[str] = None, alpha: float = ALPHA) -> pd.DataFrame:
    """Paired comparison of two models of a results store: one row per (task, protocol) both have.

    ``model_a``/``model_b``: result labels as stored (``random-vit``, ``dermino@random``...);
    ``tasks``: task names to keep (None: all); ``protocol``: a protocol name or comma-separated
    names (None: all); ``metric``: compared where defined (classification: auroc, f1, accuracy,
    balanced_accuracy; segmentation: dice, jaccard, pixel_accuracy, miou; a stored per-setting
    name such as ``auroc@0.2`` of label efficiency), otherwise the task's main metric is used and
    the row's note says so.

    Protocols: ``retrieval``, ``linear``, ``federated`` (pooled predictions), ``seg-*``: every test
    of their kind. ``label-efficiency``: the mean over repeats, paired bootstrap only (replicates
    from :func:`dermbench.protocols.label_efficiency.fraction_replicates`). ``caption``: paired
    bootstrap on per-sample metric columns where the predictions have them, else values only.
    Stored metrics without per-sample replicates (``auroc@mednode`` of the federated task): values
    only. Each such limitation is written in the row's ``note``.

    For each pair the two results must share the split (sha256) and list the same test samples in
    the same order, else :class:`ComparisonError` names both files. Replicates come from the
    stored shared resamples (``<results>/_bootstrap``), through :func:`dermbench.evaluation.replicates`.

    Columns: ``value_a``, ``value_b``, ``diff`` (A - B) with the paired-bootstrap ``ci_low``,
    ``ci_high`` and ``p_boot``; ``p_delong`` (classification, auroc), ``p_mcnemar`` (classification,
    accuracy; ``acc_a``, ``acc_b``), ``p_wilcoxon`` (segmentation Dice/Jaccard per image),
    ``p_ttest_paper`` (the paper's unsound t-test), and ``<family>_holm`` for each, Holm-adjusted
    across the rows. ``table.attrs`` holds the model names, metric, alpha and the "better on all"
    verdicts.
    """
    from dermbench.results import iter_results

    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ComparisonError(f"results folder {results_dir} does not exist")
    records: dict[str, dict[tuple[str, str], dict]] = {}
    for r in iter_results(results_dir):
        records.setdefault(str(r.get("model")), {})[(r["task"], r["protocol"])] = r
    for label in (model_a, model_b):
        if label not in records:
            raise ComparisonError(f"no results for model {label!r} in {results_dir}; models there: "
                                  f"{', '.join(sorted(records)) or 'none'}")
    if model_a == model_b:
        raise ComparisonError(f"compare needs two different models, got {model_a!r} twice")
    protocols = None if protocol is None else {p.strip() for p in str(protocol).split(",") if p.strip()}
    keys = set(records[model_a]) & set(records[model_b])
    keys = {k for k in keys if (tasks is None or k[0] in set(tasks)) and (protocols is None or k[1] in protocols)}
    if not keys:
        only = lambda m: sorted(f"{t}/{p}" for t, p in records[m])  # noqa: E731
        raise ComparisonError(f"{model_a} and {model_b} have no (task, protocol) result in common"
                              f"{' among the selected tasks/protocols' if tasks or protocols else ''} in {results_dir}; "
                              f"{model_a}: {', '.join(only(model_a))}; {model_b}: {', '.join(only(model_b))}")
    rows = [compare_pair(results_dir, records[model_a][k], records[model_b][k], metric)
            for k in sorted(keys, key=lambda k: _order_key(*k))]
    table = pd.DataFrame(rows, columns=COLUMNS)
    for family in P_FAMILIES:
        table[f"{family}_holm"] = holm(table[family].to_numpy(np.float64))
    table.attrs.update(model_a=model_a, model_b=model_b, metric=metric, alpha=alpha, results_dir=str(results_dir),
                       better_on_all={f: better_on_all(table["diff"], table[f"{f}_holm"], alpha) for f in P_FAMILIES},
                       worse_on_all={f: better_on_all(-table["diff"], table[f"{f}_holm"], alpha) for f in P_FAMILIES})
    return table


# --------------------------------------------------------------------------------------------
# Printing
# --------------------------------------------------------------------------------------------
def _pct(v: float) -> str:
    return "—" if v is None or not np.isfinite(v) else f"{100 * v:.2f}"


def _signed_pct(v: float) -> str:
    return "—" if v is None or not np.isfinite(v) else f"{100 * v:+.2f}"


def _p(v: float) -> str:
    if v is None or not np.isfinite(v):
        return "—"
    return "<1e-4" if v < 1e-4 else f"{v:.4f}"


def _p_pair(raw: float, adjusted: float) -> str:
    return "—" if raw is None or not np.isfinite(raw) else f"{_p(raw)} ({_p(adjusted)})"


_SHORT = {"p_boot": "paired boot.", "p_delong": "DeLong", "p_mcnemar": "McNemar", "p_wilcoxon": "Wilcoxon",
          "p_ttest_paper": "paper t-test†"}
_LEGEND = {"p_delong": "DeLong: AUROC, correlated (macro one-vs-rest for > 2 classes).",
           "p_mcnemar": "McNemar: exact (binomial on discordant samples), on accuracy.",
           "p_wilcoxon": "Wilcoxon: signed-rank on per-image values."}


def format_comparison(table: pd.DataFrame) -> str:
    """A readable text table of :func:`compare_models` output, its legend, and the "better on all" line.

    Metric values and differences are in percent (points); each p-value is followed by its
    Holm-adjusted value (across the table's rows) in parentheses.
    """
    a, b = table.attrs.get("model_a", "A"), table.attrs.get("model_b", "B")
    alpha = float(table.attrs.get("alpha", ALPHA))
    # p-value columns with no test at all in this table (e.g. Wilcoxon without segmentation) are left out
    shown = [f for f in P_FAMILIES if f in ("p_boot", "p_ttest_paper") or table[f].notna().any()]
    level = f"{100 * (1 - alpha):g}%"
    header = ["task · protocol", "metric", a, b, f"A−B [{level} CI]", *[_SHORT[f] for f in shown]]
    lines_data = []
    for _, r in table.iterrows():
        diff = _signed_pct(r["diff"])
        if np.isfinite(r["ci_low"]):
            diff += f" [{_signed_pct(r['ci_low'])}, {_signed_pct(r['ci_high'])}]"
        lines_data.append([f"{r['task']} · {r['protocol']}", str(r["metric"]), _pct(r["value_a"]), _pct(r["value_b"]), diff,
                           *[_p_pair(r[f], r[f"{f}_holm"]) for f in shown]])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines_data)]
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    n_boot = sorted({int(v) for v in table["n_boot"] if np.isfinite(v)})
    out = [f"Paired comparison: A = {a}, B = {b} (metric: {table.attrs.get('metric', '?')}; values in %)", "",
           fmt(header), fmt(["-" * w for w in widths]), *[fmt(r) for r in lines_data], ""]
    out += [f"A−B: difference in percentage points; CI: percentile {level} of the paired bootstrap differences "
            f"(B = {', '.join(map(str, n_boot)) or '—'} shared resamples).",
            "p-values are two-sided; (…) Holm-adjusted across the rows above, one family per test.",
            "paired boot.: both models on the same resamples, p = 2·min share of differences ≤ 0 / ≥ 0, (k+1)/(B+1).",
            *[_LEGEND[f] for f in shown if f in _LEGEND],
            f"† {PAPER_TTEST_LABEL}."]
    notes = [f"  {r['task']} · {r['protocol']}: {r['note']}" for _, r in table.iterrows() if isinstance(r["note"], str) and r["note"]]
    if notes:
        out += ["Notes:", *notes]
    tested = table["p_boot_holm"].notna()
    wins = int(((table["diff"] > 0) & (table["p_boot_holm"] < alpha)).sum())
    losses = int(((table["diff"] < 0) & (table["p_boot_holm"] < alpha)).sum())
    holds = better_on_all(table["diff"], table["p_boot_holm"], alpha)
    untested = f", {int((~tested).sum())} untested" if (~tested).any() else ""
    reverse = (f" (the reverse claim, {b} better than {a} on all, holds)"
               if better_on_all(-table["diff"], table["p_boot_holm"], alpha) else "")
    out.append(f"Claim \"{a} better than {b} on all {len(table)} task/protocol rows\" (paired bootstrap, Holm, "
               f"α = {alpha:g}): {'HOLDS' if holds else 'NOT SUPPORTED'} — {a} significantly better on {wins}, "
               f"worse on {losses}, no significant difference on {int(tested.sum()) - wins - losses}{untested}{reverse}.")
    return "\n".join(out)
