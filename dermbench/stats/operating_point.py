"""Fairness at an operating point: a threshold chosen on training data, then per-subgroup rates with CIs.

A deployed classifier is used at a threshold. For each one-vs-rest problem (binary tasks: the positive
class, column 1; more classes: every class c, score ``score_c`` against ``label == c``):

1. **Threshold** from the protocol's held-out *training* scores (the ``calibration`` table the linear
   and retrieval protocols store, see :mod:`dermbench.protocols.classification`), never from the test
   set: ``youden`` maximises TPR − FPR over the ROC thresholds (scikit-learn's ``roc_curve``; ties: the
   highest threshold), ``sensitivity=0.9`` takes the highest threshold whose TPR is ≥ 0.9. A test image
   is called positive when its score is ≥ the threshold. The threshold is held fixed in the bootstrap
   (the CIs are conditional on it). The held-out scores come from the head fit on the other 80% of the
   training split, the test scores from the head fit on all of it (so the test metrics stay those of
   the protocol): the threshold is that of a slightly weaker sibling head, as in any practical
   validation-set threshold choice.
2. **Per subgroup** (``group_<attribute>`` columns of the predictions; values, 'unknown' and its own
   row as in :mod:`dermbench.stats.fairness`, whose helpers are reused): TPR, FPR, PPV at the
   threshold, the subgroup's AUROC of the score, and its ECE (equal-width, 15 bins, of ``score_c``
   against ``label == c``, as in :mod:`dermbench.stats.calibration`).
3. **Across subgroups** ('unknown' and subgroups below ``min_samples`` or without a defined value left
   out): ``tpr_gap``, ``fpr_gap``, ``ppv_gap`` (max − min), the equalized-odds difference
   ``eod = max(tpr_gap, fpr_gap)`` (fairlearn's definition), ``worst_auroc`` (the minimum subgroup
   AUROC) and ``ece_gap``.

Every value has a percentile 95% CI over the task's stored shared resamples (the whole test set
resampled, every subgroup's value recomputed on the same replicate), so the intervals are paired across
subgroups and across models. Each gap has a two-sided paired bootstrap p (:func:`dermbench.stats.paired.
paired_bootstrap_test`) for "the highest and the lowest subgroup (on the full test set) differ", and
``p_holm`` is Holm-adjusted (:func:`dermbench.stats.paired.holm`) across a family of gap tests: by
default every gap test of one (task, protocol, attribute) table — all its models, classes and gap
metrics — the unit a claim such as "model A's TPR differs between skin types" is read from
(``holm_family(table, by=())`` takes the whole table as one family). With B replicates no p is below
about 2/(B + 1), so small families and B = 1000 are needed for adjusted p-values under 0.05. ``eod`` takes the p of
the rate that attains it; ``worst_auroc`` is a level, not a difference, and has no p.

Intersectional groups: with ``intersectional=True`` and both ``group_skin_type`` and ``group_sex``
present, the attribute ``skin_type×sex`` (values ``<type>|<sex>``; unknown in either → 'unknown').
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from dermbench.stats import metrics as M
from dermbench.stats.calibration import ece_equal_width, normalised
from dermbench.stats.fairness import MIN_SAMPLES, UNKNOWN, subgroup_label, subgroup_order, subgroup_values
from dermbench.stats.paired import holm, paired_bootstrap_test

RATE_METRICS = ("tpr", "fpr", "ppv", "auroc", "ece")
GAP_METRICS = ("tpr_gap", "fpr_gap", "ppv_gap", "eod", "worst_auroc", "ece_gap")
INTERSECTION = "skin_type×sex"
COLUMNS = ["model", "task", "protocol", "attribute", "class", "class_name", "rule", "threshold", "row", "subgroup",
           "label", "n", "n_pos", "metric", "value", "ci_low", "ci_high", "n_boot_valid", "p", "p_holm", "note"]


# ---------------------------------------------------------------------------------------------
# Thresholds
# ---------------------------------------------------------------------------------------------
def parse_rule(text: str) -> tuple[str, Optional[float]]:
    """'youden' → ('youden', None); 'sensitivity=0.9' → ('sensitivity', 0.9). ValueError names the fix."""
    t = str(text).strip().lower()
    if t == "youden":
        return "youden", None
    if t.startswith("sensitivity="):
        try:
            target = float(t.split("=", 1)[1])
        except ValueError:
            target = math.nan
        if 0 < target <= 1:
            return "sensitivity", target
    raise ValueError(f"threshold rule {text!r}: expected 'youden' or 'sensitivity=<target in (0, 1]>', e.g. sensitivity=0.9")


def choose_threshold(positive: np.ndarray, score: np.ndarray, rule: str) -> float:
    """The operating threshold of ``score`` on (training) data; see the module docstring."""
    from sklearn.metrics import roc_curve

    kind, target = parse_rule(rule)
    positive = np.asarray(positive, bool)
    if positive.all() or not positive.any():
        raise ValueError("a threshold needs positive and negative held-out samples")
    fpr, tpr, thr = roc_curve(positive, np.asarray(score, np.float64), drop_intermediate=False)
    if kind == "youden":
        i = int(np.argmax(tpr - fpr))  # first maximum: the highest such threshold
    else:
        i = int(np.flatnonzero(tpr >= target - 1e-12)[0])
    t = float(thr[i])
    return t if math.isfinite(t) else float(np.max(score)) + 1e-12  # thr[0] = inf: call nothing positive


# ---------------------------------------------------------------------------------------------
# Per-subgroup replicates
# ---------------------------------------------------------------------------------------------
def _rates(positive: np.ndarray, called: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    pos, call = positive.astype(np.float64), called.astype(np.float64)
    tp, fn = counts @ (pos * call), counts @ (pos * (1 - call))
    fp, tn = counts @ ((1 - pos) * call), counts @ ((1 - pos) * (1 - call))
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"tpr": tp / (tp + fn), "fpr": fp / (fp + tn), "ppv": tp / (tp + fp)}


def group_replicates(positive, called, score, counts: np.ndarray) -> dict[str, np.ndarray]:
    """TPR, FPR, PPV, AUROC and ECE of one subgroup on each row of ``counts`` [B, n_group] (NaN: undefined)."""
    out = _rates(positive, called, counts)
    out["auroc"] = M._auroc_weighted(score, positive, counts)
    out["ece"] = ece_equal_width(score, positive.astype(np.float64), counts)
    return out


def intersectional_values(preds: pd.DataFrame) -> Optional[np.ndarray]:
    if "group_skin_type" not in preds.columns or "group_sex" not in preds.columns:
        return None
    skin = subgroup_values(preds["group_skin_type"], "skin_type")
    sex = subgroup_values(preds["group_sex"], "sex")
    return np.array([UNKNOWN if UNKNOWN in (a, b) else f"{a}|{b}" for a, b in zip(skin, sex)], dtype=object)


def _order_and_label(values: np.ndarray, attribute: str) -> tuple[list[str], dict[str, str]]:
    from dermbench.stats import skin_tone as ST

    if attribute == ST.ATTRIBUTE:  # ITA categories from light to dark, then anything else, 'unknown' last
        present = set(values.tolist())
        order = [c for c in ST.ORDER if c in present] + sorted(present - set(ST.ORDER) - {UNKNOWN})
        order += [UNKNOWN] if UNKNOWN in present else []
        return order, {v: v if v == UNKNOWN else f"{v} (est.)" for v in order}
    if attribute != INTERSECTION:
        order = subgroup_order(values.tolist(), attribute)
        return order, {v: subgroup_label(v, attribute) for v in order}
    pairs = sorted({v for v in values if v != UNKNOWN}, key=lambda v: (subgroup_order([v.split("|")[0]], "skin_type"), v))
    skins = subgroup_order([v.split("|")[0] for v in pairs], "skin_type")
    pairs.sort(key=lambda v: (skins.index(v.split("|")[0]), v.split("|")[1]))
    order = pairs + ([UNKNOWN] if UNKNOWN in set(values) else [])
    return order, {v: v if v == UNKNOWN else f"{subgroup_label(v.split('|')[0], 'skin_type')} · {v.split('|')[1]}" for v in order}


def _summary(value: float, reps: np.ndarray) -> dict:
    from dermbench.stats.bootstrap import summarise

    s = summarise(value, reps)
    return {"value": s["value"], "ci_low": s["ci_low"], "ci_high": s["ci_high"], "n_boot_valid": s["n_boot_valid"]}


def operating_point_rows(record: dict, preds: pd.DataFrame, calibration: pd.DataFrame, shared: np.ndarray,
                         rule: str = "youden", attributes: Optional[Sequence[str]] = None,
                         intersectional: bool = False, min_samples: int = MIN_SAMPLES) -> list[dict]:
    """Rows (see COLUMNS) of one classification result; ``calibration``: its held-out training scores.

    ``p_holm`` is left NaN here; :func:`holm_family` fills it across a whole table.
    """
    from dermbench.stats.evaluation import classification_arrays

    parse_rule(rule)
    y, _, scores = classification_arrays(preds)
    scores = normalised(scores)
    y_cal, _, s_cal = classification_arrays(calibration)
    s_cal = normalised(s_cal)
    n, n_classes = scores.shape
    if shared.shape[1] != n:
        raise ValueError(f"{record.get('_path', record['task'])}: bootstrap file has {shared.shape[1]} columns for {n} predictions")
    groups: dict[str, np.ndarray] = {}
    for col in sorted(c for c in preds.columns if c.startswith("group_")):
        attribute = col[len("group_"):]
        groups[attribute] = subgroup_values(preds[col], attribute)
    if intersectional:
        inter = intersectional_values(preds)
        if inter is not None:
            groups[INTERSECTION] = inter
    if attributes is not None:
        wanted = set(attributes) | ({INTERSECTION} if intersectional else set())
        groups = {a: v for a, v in groups.items() if a in wanted}
    if not groups:
        return []
    counts_full = M.resample_counts(shared, n)
    one = np.ones((1, n))
    classes = list(record.get("classes") or range(n_classes))
    problems = [1] if n_classes == 2 else list(range(n_classes))
    rows: list[dict] = []
    for c in problems:
        positive, score = y == c, scores[:, c]
        base = {"model": record["model"], "task": record["task"], "protocol": record["protocol"], "class": c,
                "class_name": str(classes[c]) if c < len(classes) else str(c), "rule": rule}
        try:
            threshold = choose_threshold(y_cal == c, s_cal[:, c], rule)
        except ValueError as exc:
            rows.append({**base, "attribute": "", "threshold": math.nan, "row": "overall", "subgroup": "all",
                         "label": "all", "n": n, "n_pos": int(positive.sum()), "metric": "tpr", "value": math.nan,
                         "ci_low": math.nan, "ci_high": math.nan, "n_boot_valid": 0, "p": math.nan,
                         "p_holm": math.nan, "note": f"no threshold: {exc}"})
            continue
        called = score >= threshold
        base["threshold"] = threshold
        point_all = group_replicates(positive, called, score, one)
        reps_all = group_replicates(positive, called, score, counts_full)
        overall = {m: _summary(float(point_all[m][0]), reps_all[m]) for m in RATE_METRICS}  # the same for every attribute
        for attribute, values in groups.items():
            here = {**base, "attribute": attribute, "p": math.nan, "p_holm": math.nan}
            for metric in RATE_METRICS:
                rows.append({**here, "row": "overall", "subgroup": "all", "label": "all", "n": n,
                             "n_pos": int(positive.sum()), "metric": metric, **overall[metric], "note": ""})
            order, labels = _order_and_label(values, attribute)
            eligible: dict[str, dict[str, tuple[float, np.ndarray]]] = {m: {} for m in RATE_METRICS}
            for value in order:
                members = np.flatnonzero(values == value)
                sub = {"row": "subgroup", "subgroup": value, "label": labels[value], "n": int(len(members)),
                       "n_pos": int(positive[members].sum())}
                if len(members) < min_samples:
                    for metric in RATE_METRICS:
                        rows.append({**here, **sub, "metric": metric, "value": math.nan, "ci_low": math.nan,
                                     "ci_high": math.nan, "n_boot_valid": 0,
                                     "note": f"n = {len(members)} < {min_samples}: not reported"})
                    continue
                args = (positive[members], called[members], score[members])
                point = group_replicates(*args, np.ones((1, len(members))))
                reps = group_replicates(*args, counts_full[:, members])
                for metric in RATE_METRICS:
                    v = float(point[metric][0])
                    note = "" if math.isfinite(v) else "undefined (no positives or no negatives, or nothing called positive)"
                    rows.append({**here, **sub, "metric": metric, **_summary(v, reps[metric]), "note": note})
                    if value != UNKNOWN and math.isfinite(v):
                        eligible[metric][value] = (v, reps[metric])
            rows += _gap_rows(here, eligible, labels, values)
    return rows


def _gap_rows(here: dict, eligible: dict, labels: dict, values: np.ndarray) -> list[dict]:
    out: list[dict] = []
    pair_tests: dict[str, dict] = {}
    n_groups = {m: len(v) for m, v in eligible.items()}

    def gap(metric: str) -> dict:
        names = list(eligible[metric])
        if len(names) < 2:
            return {"value": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n_boot_valid": 0, "p": math.nan,
                    "note": f"{len(names)} subgroup(s) with a defined {metric}: no gap"}
        points = np.array([eligible[metric][v][0] for v in names])
        reps = np.stack([eligible[metric][v][1] for v in names], axis=1)
        with np.errstate(invalid="ignore"):
            gap_reps = reps.max(axis=1) - reps.min(axis=1)  # a NaN subgroup drops the replicate
        hi, lo = int(points.argmax()), int(points.argmin())
        test = paired_bootstrap_test(reps[:, hi], reps[:, lo], float(points[hi] - points[lo]))
        pair_tests[metric] = test
        return {**_summary(float(points.max() - points.min()), gap_reps), "p": test["p"],
                "note": f"max {labels[names[hi]]}, min {labels[names[lo]]}; over {len(names)} subgroups"
                        + ("; 'unknown' excluded" if UNKNOWN in set(values) else ""),
                "_reps": gap_reps}

    gaps = {m: gap(m) for m in ("tpr", "fpr", "ppv", "ece")}
    common = {**here, "row": "gap", "subgroup": "gap", "label": "gap", "n_pos": -1}
    n_total = int(sum(int((values == v).sum()) for v in set(eligible["tpr"]) | set(eligible["fpr"])))
    for metric in ("tpr", "fpr", "ppv", "ece"):
        g = {k: v for k, v in gaps[metric].items() if k != "_reps"}
        out.append({**common, "n": n_total, "metric": f"{metric}_gap", **g})
    # equalized-odds difference: max of the TPR and FPR gaps, replicate by replicate
    t, f = gaps["tpr"], gaps["fpr"]
    if "_reps" in t and "_reps" in f:
        which = "tpr" if t["value"] >= f["value"] else "fpr"
        with np.errstate(invalid="ignore"):
            eod_reps = np.maximum(t["_reps"], f["_reps"])
        out.append({**common, "n": n_total, "metric": "eod", **_summary(max(t["value"], f["value"]), eod_reps),
                    "p": gaps[which]["p"], "note": f"attained by the {which.upper()} gap ({gaps[which]['note']})"})
    else:
        out.append({**common, "n": n_total, "metric": "eod", "value": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                    "n_boot_valid": 0, "p": math.nan, "note": "TPR or FPR gap undefined"})
    names = list(eligible["auroc"])
    if names:
        points = np.array([eligible["auroc"][v][0] for v in names])
        reps = np.stack([eligible["auroc"][v][1] for v in names], axis=1)
        with np.errstate(invalid="ignore"):
            worst = reps.min(axis=1)
        out.append({**common, "n": n_total, "metric": "worst_auroc", **_summary(float(points.min()), worst),
                    "p": math.nan, "note": f"worst {labels[names[int(points.argmin())]]} of {n_groups['auroc']} subgroups"})
    else:
        out.append({**common, "n": n_total, "metric": "worst_auroc", "value": math.nan, "ci_low": math.nan,
                    "ci_high": math.nan, "n_boot_valid": 0, "p": math.nan, "note": "no subgroup with a defined AUROC"})
    return out


FAMILY = ("task", "protocol", "attribute")


def holm_family(table: pd.DataFrame, by: Sequence[str] = FAMILY) -> pd.DataFrame:
    """Fill ``p_holm``: Holm across the gap tests (tpr/fpr/ppv/ece gaps) of each family (rows sharing the
    ``by`` columns; ``by=()``: the whole table); ``eod`` takes the adjusted p of the gap that attains it
    (it is not a separate test)."""
    table = table.copy()
    tests = table["row"].eq("gap") & table["metric"].isin(["tpr_gap", "fpr_gap", "ppv_gap", "ece_gap"])
    table["p_holm"] = math.nan
    if tests.any():
        families = table.loc[tests, list(by)].astype(str).agg("|".join, axis=1) if by else pd.Series("", index=table.index[tests])
        for _, members in families.groupby(families).groups.items():
            table.loc[members, "p_holm"] = holm(table.loc[members, "p"].to_numpy(np.float64))
    keys = ["model", "task", "protocol", "attribute", "class", "metric"]
    # (model, task, protocol, attribute, class, gap metric) -> adjusted p of the first such test row
    adjusted: dict[tuple, float] = {}
    for key, p in zip(table.loc[tests, keys].itertuples(index=False, name=None), table.loc[tests, "p_holm"]):
        adjusted.setdefault(key, p)
    column = table.columns.get_loc("p_holm")
    for i in np.flatnonzero(table["metric"].eq("eod").to_numpy()):
        row = table.iloc[i]
        which = "tpr_gap" if "by the TPR" in str(row["note"]) else "fpr_gap"
        key = tuple(row[k] for k in keys[:-1]) + (which,)
        if key in adjusted:
            table.iloc[i, column] = adjusted[key]
    return table
