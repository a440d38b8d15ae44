"""Subgroup performance and the largest gap between subgroups, from stored predictions only.

Every result whose predictions carry ``group_<attribute>`` columns (added by the runner from the
adapters: ``group_skin_type`` on Fitzpatrick17k and DDI, ``group_sex`` on Derm7pt, ``group_skin_type``,
``group_sex``, ``group_age``, ``group_site`` on manifest tasks) gets, per attribute:

- one row per subgroup: the metric on the subgroup's test images, with a percentile 95% bootstrap CI
  from resamples drawn *within* the subgroup (stratified by label for classification). The
  resamples are derived, not stored: seed = :func:`dermbench.stats.bootstrap_seed` of
  ``"<task>|fairness|<attribute>=<value>"``, the split's sha256 and the run seed, with the result's
  replicate count; so every model of a task is resampled identically and every number is
  reproducible from the results folder.
- one ``gap`` row: max − min of the subgroup point estimates, over the subgroups with a defined
  metric, ``unknown`` excluded. Its CI resamples the *whole* test set with the task's stored shared
  indices (``<results>/_bootstrap``), recomputes every subgroup's metric on each replicate and takes
  max − min per replicate (a replicate where a subgroup's metric is undefined is dropped). The
  bootstrap of a maximum is biased upwards: with similar subgroups the interval can lie above the
  point estimate. ``pair_ci_low``/``pair_ci_high`` give the sounder companion: the CI of the
  difference between the two subgroups that are highest and lowest on the full test set, on the
  same replicates (it may include 0).
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
F1, accuracy and balanced accuracy follow :mod:`dermbench.metrics`; segmentation tasks report the
mean per-image Dice / Jaccard.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd

from dermbench import metrics as M

UNKNOWN = "unknown"
MIN_SAMPLES = 10
CLASSIFICATION_METRICS = ("auroc", "f1", "accuracy", "balanced_accuracy")
SEGMENTATION_METRICS = ("dice", "jaccard")
# Per-sample predictions only: label-efficiency and federated results hold several blocks per test image.
EXCLUDED_PROTOCOLS = ("label-efficiency", "federated")
SKIN_TYPES = {"1": "I", "2": "II", "3": "III", "4": "IV", "5": "V", "6": "VI",
              "12": "I–II", "34": "III–IV", "56": "V–VI"}  # DDI groups Fitzpatrick types in pairs
AGE_BINS = ((0, 20, "<20"), (20, 40, "20–39"), (40, 60, "40–59"), (60, 80, "60–79"), (80, math.inf, "≥80"))
COLUMNS = ["model", "task", "protocol", "attribute", "row", "subgroup", "label", "n", "metric", "value", "ci_low",
           "ci_high", "std", "n_boot_valid", "pair_ci_low", "pair_ci_high", "note"]


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
# Metrics on weighted samples (counts: [B, n] multiplicities, see dermbench.metrics)
# ---------------------------------------------------------------------------------------------
def metric_replicates(metric: str, kind: str, predictions: pd.DataFrame, counts: np.ndarray,
                      classes: Optional[Sequence[int]] = None) -> np.ndarray:
    """``metric`` on each row of ``counts`` [B, n] over the rows of ``predictions`` (one subgroup)."""
    if kind == "segmentation":
        v = predictions[metric].to_numpy(np.float64)
        return (counts @ v) / counts.sum(axis=1)
    from dermbench.evaluation import classification_arrays

    y, pred, scores = classification_arrays(predictions)
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
    from dermbench.stats import summarise

    s = summarise(value, reps)
    return {k: s[k] for k in ("value", "ci_low", "ci_high", "std", "n_boot_valid")}


def _nan_summary() -> dict:
    return {"value": math.nan, "ci_low": math.nan, "ci_high": math.nan, "std": math.nan, "n_boot_valid": 0}


def record_fairness(results_dir: Path, record: dict, metric: str = "auroc", attributes: Optional[Sequence[str]] = None,
                    min_samples: int = MIN_SAMPLES, predictions: Optional[pd.DataFrame] = None) -> list[dict]:
    """Fairness rows (see the module docstring) of one stored result; [] if it has no subgroup columns."""
    from dermbench.results import read_predictions
    from dermbench.stats import bootstrap_indices, bootstrap_seed

    kind = record.get("kind")
    allowed = CLASSIFICATION_METRICS if kind == "classification" else SEGMENTATION_METRICS if kind == "segmentation" else ()
    if metric not in allowed:
        return []
    preds = read_predictions(record["_path"]) if predictions is None else predictions
    group_cols = sorted(c for c in preds.columns if c.startswith("group_"))
    if attributes is not None:
        group_cols = [c for c in group_cols if c[len("group_"):] in set(attributes)]
    if not group_cols:
        return []
    if preds["sample_id"].duplicated().any():
        return []  # not one row per test image
    n = len(preds)
    shared = np.load(Path(results_dir) / record["bootstrap"]["path"])
    if shared.shape[1] != n:
        raise ValueError(f"{record['_path']}: bootstrap file has {shared.shape[1]} columns for {n} predictions")
    n_boot = int(shared.shape[0])
    counts_full = M.resample_counts(shared, n)
    one = np.ones((1, n))
    stratified = kind == "classification"
    base = {"model": record["model"], "task": record["task"], "protocol": record["protocol"], "metric": metric}
    rows: list[dict] = []
    for col in group_cols:
        attribute = col[len("group_"):]
        values = subgroup_values(preds[col], attribute)
        point_all = float(metric_replicates(metric, kind, preds, one)[0])
        rows.append({**base, "attribute": attribute, "row": "overall", "subgroup": "all", "label": "all", "n": n,
                     **_summary(point_all, metric_replicates(metric, kind, preds, counts_full)), "note": ""})
        eligible: dict[str, tuple[float, np.ndarray]] = {}
        for value in subgroup_order(values.tolist(), attribute):
            members = np.flatnonzero(values == value)
            sub = preds.iloc[members].reset_index(drop=True)
            row = {**base, "attribute": attribute, "row": "subgroup", "subgroup": value,
                   "label": subgroup_label(value, attribute), "n": int(len(members))}
            classes = sorted(set(sub["label"].tolist())) if stratified else None
            if len(members) < min_samples:
                rows.append({**row, **_nan_summary(), "note": f"n = {len(members)} < {min_samples}: not reported"})
                continue
            if stratified and len(classes) < 2:
                rows.append({**row, **_nan_summary(), "note": "a single class in this subgroup: metric undefined"})
                continue
            point = float(metric_replicates(metric, kind, sub, np.ones((1, len(members))), classes)[0])
            seed = bootstrap_seed(f"{record['task']}|fairness|{attribute}={value}", record["split_sha256"], int(record["seed"]))
            idx = bootstrap_indices(len(members), n_boot, seed, sub["label"].to_numpy() if stratified else None)
            reps = metric_replicates(metric, kind, sub, M.resample_counts(idx, len(members)), classes)
            note = ""
            if stratified and len(classes) < (preds["label"].nunique()):
                note = f"{len(classes)} of {preds['label'].nunique()} classes present"
            rows.append({**row, **_summary(point, reps), "note": note})
            if value != UNKNOWN and not math.isnan(point):
                eligible[value] = (point, metric_replicates(metric, kind, sub, counts_full[:, members], classes))
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
        pair = _summary(float(points[i_hi] - points[i_lo]), reps[:, i_hi] - reps[:, i_lo])
        rows.append({**gap_row, **_summary(float(points.max() - points.min()), gap_reps),
                     "pair_ci_low": pair["ci_low"], "pair_ci_high": pair["ci_high"],
                     "note": f"max {subgroup_label(hi, attribute)}, min {subgroup_label(lo, attribute)}; "
                             f"over {len(names)} subgroups" + ("; 'unknown' excluded" if UNKNOWN in set(values) else "")})
    return rows


def _names(value: Union[None, str, Sequence[str]]) -> Optional[set[str]]:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    return {p.strip() for item in items for p in str(item).split(",") if p.strip()}


def fairness_table(results_dir: Path, model: Union[None, str, Sequence[str]] = None,
                   task: Union[None, str, Sequence[str]] = None, metric: str = "auroc",
                   protocol: Union[None, str, Sequence[str]] = None, attribute: Union[None, str, Sequence[str]] = None,
                   min_samples: int = MIN_SAMPLES) -> pd.DataFrame:
    """Per-subgroup metrics, the largest gap and the overall value for the results under ``results_dir``.

    ``model``, ``task``, ``protocol``, ``attribute``: names (a string may be comma-separated, a task
    may be a group or 'all'); None: every result with ``group_*`` columns. Label-efficiency and
    federated results are skipped (several predictions per test image). Columns: see ``COLUMNS``;
    ``row`` is 'subgroup', 'gap' or 'overall'. Values are fractions (not percent).
    """
    from dermbench.leaderboard import PROTOCOL_ORDER
    from dermbench.results import iter_results
    from dermbench.tasks import PAPER_ORDER, select_tasks

    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results folder {results_dir} does not exist; run `dermbench run ...` first")
    if metric not in CLASSIFICATION_METRICS + SEGMENTATION_METRICS:
        raise ValueError(f"fairness metric {metric!r}: choose one of {', '.join(CLASSIFICATION_METRICS)} "
                         f"(classification) or {', '.join(SEGMENTATION_METRICS)} (segmentation)")
    models, protocols, attributes = _names(model), _names(protocol), _names(attribute)
    tasks = None
    if task is not None:
        tasks = set()
        for part in _names(task) or ():
            try:
                tasks |= {c.name for c in select_tasks(part)}
            except KeyError:
                tasks.add(part)  # a task of another card folder, matched by name
    records = [r for r in iter_results(results_dir)
               if r.get("protocol") not in EXCLUDED_PROTOCOLS
               and (models is None or r["model"] in models) and (tasks is None or r["task"] in tasks)
               and (protocols is None or r["protocol"] in protocols)]
    order = {t: i for i, t in enumerate(PAPER_ORDER)}
    records.sort(key=lambda r: (order.get(r["task"], len(order)), r["task"],
                                PROTOCOL_ORDER.index(r["protocol"]) if r["protocol"] in PROTOCOL_ORDER else 99,
                                r["protocol"], r["model"]))
    rows = []
    for r in records:
        rows += record_fairness(results_dir, r, metric, sorted(attributes) if attributes else None, min_samples)
    table = pd.DataFrame(rows, columns=COLUMNS)
    table.attrs.update(metric=metric, min_samples=min_samples, results_dir=str(results_dir))
    return table


def _pct(v: float) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def format_fairness(df: pd.DataFrame) -> str:
    """Markdown: one table per (task, protocol, attribute); rows models, columns subgroups, gap and overall."""
    from dermbench.leaderboard import METRIC_TITLES

    if df.empty:
        return ("No subgroup results: no stored predictions with group_<attribute> columns matched "
                "(fairness needs classification or segmentation results of tasks with subgroups, e.g. "
                "fitzpatrick17k-3 (skin type) or derm7pt (sex)).")
    metric = df.attrs.get("metric") or df["metric"].iloc[0]
    out = [f"Subgroup {METRIC_TITLES.get(metric, metric)} in percent: value [95% percentile bootstrap CI within the "
           "subgroup]; gap = max − min over subgroups ('unknown' excluded) [CI of max − min over the shared test-set "
           "resamples] (highest − lowest subgroup: [paired CI of their difference on the same resamples]); "
           "overall = whole test set. —: not reported (see notes).", ""]
    keys = list(dict.fromkeys(zip(df["task"], df["protocol"], df["attribute"])))
    for task, protocol, attribute in keys:
        part = df[(df["task"] == task) & (df["protocol"] == protocol) & (df["attribute"] == attribute)]
        subs = part[part["row"] == "subgroup"]
        order = list(dict.fromkeys(subs["subgroup"]))
        first = {s: subs[subs["subgroup"] == s].iloc[0] for s in order}
        header = [f"{first[s]['label']} (n={int(first[s]['n'])})" for s in order] + ["gap (max − min)", "overall"]
        out += [f"## {task} · {protocol} · {attribute}", "", "| model | " + " | ".join(header) + " |",
                "|---" * (len(header) + 1) + "|"]
        models = list(dict.fromkeys(part["model"]))
        notes: dict[tuple[str, str], list[str]] = {}
        for m in models:
            rows = part[part["model"] == m]
            cells = []
            for s in order:
                r = rows[(rows["row"] == "subgroup") & (rows["subgroup"] == s)]
                cells.append(_cell(r.iloc[0]) if len(r) else "—")
                if len(r) and r.iloc[0]["note"]:
                    notes.setdefault((str(first[s]["label"]), r.iloc[0]["note"]), []).append(m)
            gap = rows[rows["row"] == "gap"]
            if len(gap) and not math.isnan(gap.iloc[0]["value"]):
                g = gap.iloc[0]
                where = g["note"].split(";")[0].replace("max ", "").replace(", min ", " − ")
                cells.append(f"{_cell(g)} ({where}: [{_pct(g['pair_ci_low'])}, {_pct(g['pair_ci_high'])}])")
            else:
                cells.append("—")
                if len(gap):
                    notes.setdefault(("gap", gap.iloc[0]["note"]), []).append(m)
            overall = rows[rows["row"] == "overall"]
            cells.append(_cell(overall.iloc[0]) if len(overall) else "—")
            out.append(f"| {m} | " + " | ".join(cells) + " |")
        out.append("")
        if notes:
            out.append("Notes:")
            for (label, note), who in notes.items():
                out.append(f"- {label}: {note}" + ("" if len(who) == len(models) else f" ({', '.join(who)})"))
            out.append("")
    return "\n".join(out)


def _cell(row: pd.Series) -> str:
    if row["value"] is None or math.isnan(row["value"]):
        return "—"
    return f"{_pct(row['value'])} [{_pct(row['ci_low'])}, {_pct(row['ci_high'])}]"
