"""Subgroup performance and the largest gap between subgroups, from stored predictions only.

Every result whose predictions carry ``group_<attribute>`` columns (added by the runner from the
adapters: ``group_skin_type`` on Fitzpatrick17k and DDI, ``group_sex`` on Derm7pt, ``group_skin_type``,
``group_sex``, ``group_age``, ``group_site`` on manifest tasks) gets, per attribute:

- one row per subgroup: the metric on the subgroup's test images, with a percentile 95% bootstrap CI
  from resamples drawn *within* the subgroup (stratified by label for classification). The
  resamples are derived, not stored: seed = :func:`dermbench.stats.bootstrap.bootstrap_seed` of
  ``"<task>|fairness|<attribute>=<value>"``, the split's sha256 and the run seed, with the result's
  replicate count; so every model of a task is resampled identically and every number is
  reproducible from the results folder.
- one ``gap`` row with two numbers:

  * the **test**: ``pair_diff`` = the difference between the two subgroups that are highest and
    lowest on the full test set, with its paired percentile CI (``pair_ci_low``/``pair_ci_high``)
    and two-sided paired-bootstrap ``pair_p`` (:func:`dermbench.stats.paired.paired_bootstrap_test`),
    from the *whole* test set resampled with the task's stored shared indices
    (``<results>/_bootstrap``), every subgroup's metric recomputed on each replicate. The CI can
    contain 0. The pair is chosen on the same data, so this p is somewhat optimistic (a post-hoc
    pick of the extremes); it is still a paired difference, not a maximum.
  * **descriptive only**: ``value``/``ci_low``/``ci_high`` = max − min over the subgroups with a
    defined metric (``unknown`` excluded), and the percentile interval of max − min over the same
    replicates. A maximum of noisy differences is biased upward and this interval cannot contain 0
    (max − min ≥ 0 on every replicate), so it is no test of "no gap"; it is labelled descriptive.
- one ``overall`` row: the metric on the whole test set with the shared resamples (the stored number).

Subgroups: values as stored; empty or missing values, and Fitzpatrick's ``-1``, are ``unknown`` and
reported in their own row, never dropped. Ages (``group_age``) that are numbers are binned into
<20, 20–39, 40–59, 60–79, ≥80. A subgroup with fewer than ``min_samples`` images, or with a single
class (classification), gets NaN and a note; it is shown as missing.

AUROC in a subgroup: binary tasks, the AUROC of the positive-class score; more classes, the macro
one-vs-rest AUROC over the classes present in the subgroup (sklearn's ``roc_auc_score(...,
multi_class='ovr')`` when all are present). The within-subgroup resamples are stratified, so they keep
every class; a gap replicate (whole test set resampled) that misses a class inside a subgroup
averages that subgroup's remaining classes.
F1, accuracy and balanced accuracy follow :mod:`dermbench.stats.metrics`; segmentation tasks report the
mean per-image Dice / Jaccard.
"""
from __future__ import annotations

import math
import warnings
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd

from dermbench.stats import metrics as M

UNKNOWN = "unknown"
MIN_SAMPLES = 10
CLASSIFICATION_METRICS = ("auroc", "f1", "accuracy", "balanced_accuracy")
SEGMENTATION_METRICS = ("dice", "jaccard")
# Per-sample predictions only: label-efficiency and federated results hold several blocks per test image.
EXCLUDED_PROTOCOLS = ("label-efficiency", "federated", "robustness", "transfer")  # several blocks per test image
SKIN_TYPES = {"1": "I", "2": "II", "3": "III", "4": "IV", "5": "V", "6": "VI",
              "12": "I–II", "34": "III–IV", "56": "V–VI"}  # DDI groups Fitzpatrick types in pairs
AGE_BINS = ((0, 20, "<20"), (20, 40, "20–39"), (40, 60, "40–59"), (60, 80, "60–79"), (80, math.inf, "≥80"))
COLUMNS = ["model", "task", "protocol", "attribute", "row", "subgroup", "label", "n", "metric", "value", "ci_low",
           "ci_high", "std", "n_boot_valid", "pair_diff", "pair_ci_low", "pair_ci_high", "pair_p", "note"]


# ---------------------------------------------------------------------------------------------
# Subgroup values
# ---------------------------------------------------------------------------------------------
def _clean(value, attribute: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return UNKNOWN
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if text == "" or text.lower() in ("nan", "none", "unknown", "-1", "na", "n/a"):
        return UNKNOWN
    if attribute == "age":
        try:
            age = float(text)
        except ValueError:
            return text
        return next(label for low, high, label in AGE_BINS if low <= age < high) if age >= 0 else UNKNOWN
    return text


def subgroup_values(column: pd.Series, attribute: str) -> np.ndarray:
    """The subgroup of each test image as a string; missing values become 'unknown'."""
    return np.array([_clean(v, attribute) for v in column.tolist()], dtype=object)


def subgroup_order(values: Sequence[str], attribute: str) -> list[str]:
    """Fitzpatrick types I..VI, age bins in age order, other values alphabetically; 'unknown' last."""
    known = sorted({v for v in values if v != UNKNOWN})
    if attribute == "skin_type":
        known.sort(key=lambda v: (0, int(v)) if v in SKIN_TYPES else (1, v))
    elif attribute == "age":
        rank = {label: i for i, (_, _, label) in enumerate(AGE_BINS)}
        known.sort(key=lambda v: (rank.get(v, len(rank)), v))
    return known + ([UNKNOWN] if UNKNOWN in set(values) else [])


def subgroup_label(value: str, attribute: str) -> str:
    if attribute == "skin_type" and value in SKIN_TYPES:
        return SKIN_TYPES[value]
    return value


# ---------------------------------------------------------------------------------------------
# Metrics on weighted samples (counts: [B, n] multiplicities, see dermbench.stats.metrics)
# ---------------------------------------------------------------------------------------------
def metric_replicates(metric: str, kind: str, predictions: pd.DataFrame, counts: np.ndarray,
                      classes: Optional[Sequence[int]] = None) -> np.ndarray:
    """``metric`` on each row of ``counts`` [B, n] over the rows of ``predictions`` (one subgroup)."""
    return _replicates_of(metric, kind, _metric_arrays(metric, kind, predictions), counts, classes)


def _metric_arrays(metric: str, kind: str, predictions: pd.DataFrame) -> tuple[np.ndarray, ...]:
    """What :func:`metric_replicates` reads of the predictions: (per-image metric,) for segmentation, else
    (y, pred, scores). Rows of these arrays are rows of the predictions, so a subgroup's are a slice."""
    if kind == "segmentation":
        return (predictions[metric].to_numpy(np.float64),)
    from dermbench.stats.evaluation import classification_arrays

    return classification_arrays(predictions)


def _replicates_of(metric: str, kind: str, arrays: tuple[np.ndarray, ...], counts: np.ndarray,
                   classes: Optional[Sequence[int]] = None) -> np.ndarray:
    if kind == "segmentation":
        (v,) = arrays
        return (counts @ v) / counts.sum(axis=1)
    y, pred, scores = arrays
    n_classes = scores.shape[1]
    if metric == "auroc":
        if n_classes == 2:
            return M._auroc_weighted(scores[:, 1], y == 1, counts)
        classes = sorted(set(np.unique(y).tolist())) if classes is None else list(classes)
        per_class = np.stack([M._auroc_weighted(scores[:, c], y == c, counts) for c in classes], axis=1)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: the replicate is undefined
            # a replicate of the whole test set may miss a class inside the subgroup: average the others
            return np.nanmean(per_class, axis=1)
    if metric == "f1":
        return M.f1_macro(y, pred, None, n_classes, counts)
    if metric == "accuracy":
        return M.accuracy(y, pred, None, counts)
    if metric == "balanced_accuracy":
        return M.balanced_accuracy(y, pred, None, n_classes, counts)
    raise ValueError(f"fairness metric {metric!r} is not one of {CLASSIFICATION_METRICS + SEGMENTATION_METRICS}")


def _summary(value: float, reps: np.ndarray) -> dict:
    from dermbench.stats.bootstrap import summarise

    s = summarise(value, reps)
    return {k: s[k] for k in ("value", "ci_low", "ci_high", "std", "n_boot_valid")}


def _nan_summary() -> dict:
    return {"value": math.nan, "ci_low": math.nan, "ci_high": math.nan, "std": math.nan, "n_boot_valid": 0}


def fairness_rows(record: dict, preds: pd.DataFrame, shared: np.ndarray, metric: str = "auroc",
                  attributes: Optional[Sequence[str]] = None, min_samples: int = MIN_SAMPLES) -> list[dict]:
    """Fairness rows (see the module docstring) of one result; [] if it has no subgroup columns.

    ``record``: the result's metadata (kind, model, task, protocol, split_sha256, seed); ``preds``:
    its predictions; ``shared``: its shared bootstrap resample indices [B, n].
    """
    from dermbench.stats.bootstrap import bootstrap_indices, bootstrap_seed

    kind = record.get("kind")
    allowed = CLASSIFICATION_METRICS if kind == "classification" else SEGMENTATION_METRICS if kind == "segmentation" else ()
    if metric not in allowed:
        return []
    group_cols = sorted(c for c in preds.columns if c.startswith("group_"))
    if attributes is not None:
        group_cols = [c for c in group_cols if c[len("group_"):] in set(attributes)]
    if not group_cols:
        return []
    if preds["sample_id"].duplicated().any():
        return []  # not one row per test image
    n = len(preds)
    if shared.shape[1] != n:
        raise ValueError(f"{record.get('_path', record['task'])}: bootstrap file has {shared.shape[1]} columns "
                         f"for {n} predictions")
    n_boot = int(shared.shape[0])
    counts_full = M.resample_counts(shared, n)
    one = np.ones((1, n))
    stratified = kind == "classification"
    base = {"model": record["model"], "task": record["task"], "protocol": record["protocol"], "metric": metric}
    rows: list[dict] = []
    arrays = _metric_arrays(metric, kind, preds)  # read once; a subgroup's arrays are slices of these
    for col in group_cols:
        attribute = col[len("group_"):]
        values = subgroup_values(preds[col], attribute)
        point_all = float(_replicates_of(metric, kind, arrays, one)[0])
        rows.append({**base, "attribute": attribute, "row": "overall", "subgroup": "all", "label": "all", "n": n,
                     **_summary(point_all, _replicates_of(metric, kind, arrays, counts_full)), "note": ""})
        eligible: dict[str, tuple[float, np.ndarray]] = {}
        for value in subgroup_order(values.tolist(), attribute):
            members = np.flatnonzero(values == value)
            sub = preds.iloc[members].reset_index(drop=True)
            sub_arrays = tuple(a[members] for a in arrays)
            row = {**base, "attribute": attribute, "row": "subgroup", "subgroup": value,
                   "label": subgroup_label(value, attribute), "n": int(len(members))}
            classes = sorted(set(sub["label"].tolist())) if stratified else None
            if len(members) < min_samples:
                rows.append({**row, **_nan_summary(), "note": f"n = {len(members)} < {min_samples}: not reported"})
                continue
            if stratified and len(classes) < 2:
                rows.append({**row, **_nan_summary(), "note": "a single class in this subgroup: metric undefined"})
                continue
            point = float(_replicates_of(metric, kind, sub_arrays, np.ones((1, len(members))), classes)[0])
            # the split seed (the resamples of the test set), not the head seed: every head seed and model alike
            split_seed = int(record.get("split_seed", (record.get("split") or {}).get("seed", record.get("seed", 0))))
            seed = bootstrap_seed(f"{record['task']}|fairness|{attribute}={value}", record["split_sha256"], split_seed)
            idx = bootstrap_indices(len(members), n_boot, seed, sub["label"].to_numpy() if stratified else None)
            reps = _replicates_of(metric, kind, sub_arrays, M.resample_counts(idx, len(members)), classes)
            note = ""
            if stratified and len(classes) < (preds["label"].nunique()):
                note = f"{len(classes)} of {preds['label'].nunique()} classes present"
            rows.append({**row, **_summary(point, reps), "note": note})
            if value != UNKNOWN and not math.isnan(point):
                eligible[value] = (point, _replicates_of(metric, kind, sub_arrays, counts_full[:, members], classes))
        gap_row = {**base, "attribute": attribute, "row": "gap", "subgroup": "gap", "label": "gap (max − min)",
                   "n": int(sum(int((values == v).sum()) for v in eligible))}
        if len(eligible) < 2:
            rows.append({**gap_row, **_nan_summary(), "note": f"{len(eligible)} subgroup(s) with a defined metric: no gap"})
            continue
        names = list(eligible)
        points = np.array([eligible[v][0] for v in names])
        reps = np.stack([eligible[v][1] for v in names], axis=1)  # [B, groups]
        with np.errstate(invalid="ignore"):
            gap_reps = reps.max(axis=1) - reps.min(axis=1)  # NaN propagates: the replicate is dropped
        i_hi, i_lo = int(points.argmax()), int(points.argmin())
        hi, lo = names[i_hi], names[i_lo]
        from dermbench.stats.paired import paired_bootstrap_test

        pair = paired_bootstrap_test(reps[:, i_hi], reps[:, i_lo], float(points[i_hi] - points[i_lo]))
        rows.append({**gap_row, **_summary(float(points.max() - points.min()), gap_reps),
                     "pair_diff": pair["diff"], "pair_ci_low": pair["ci_low"], "pair_ci_high": pair["ci_high"],
                     "pair_p": pair["p"],
                     "note": f"max {subgroup_label(hi, attribute)}, min {subgroup_label(lo, attribute)}; "
                             f"over {len(names)} subgroups" + ("; 'unknown' excluded" if UNKNOWN in set(values) else "")})
    return rows
