"""``dermbench compare``: two models of a results store, every (task, protocol) both have.

:func:`compare_models` applies the paired tests of :mod:`dermbench.stats.paired` to two models of
a results store and returns one row per (task, protocol); :func:`format_comparison` prints that
table.

**The claim** ("A better than B on all rows") is one family: the table's rows, one per (task,
protocol), each on one metric (the requested one, else the task's main metric; label efficiency at
its largest training fraction only, never every fraction of the curve), Holm-corrected at alpha.
Each row is tested with a test whose p-value can reach the corrected level (:func:`claim_test`):
DeLong for AUROC, exact McNemar for accuracy, Wilcoxon signed-rank for per-image Dice/Jaccard, and
otherwise the paired bootstrap on resamples drawn for the claim, at least ``20·m/alpha`` of them
(m rows), since a bootstrap p can be no smaller than ``2/(B+1)``: with the 1,000 stored resamples
Holm over 53 rows could never reject. A row whose test cannot reach ``alpha/m`` says so.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence

import click
import numpy as np
import pandas as pd
from scipy import stats as sps

from dermbench.stats.paired import (  # noqa: F401  (re-exported for callers of compare)
    ALPHA, P_FAMILIES, P_TITLES, PAPER_TTEST_LABEL, better_on_all, delong_test, holm, mcnemar_test, paired_bootstrap_test, paper_paired_ttest, wilcoxon_test,
)


class ComparisonError(click.ClickException, ValueError):
    """The two models' results cannot be compared (missing, or not on the same test set).

    A ``ValueError`` for Python callers; ``dermbench compare`` prints it as a one-line error.
    """



# --------------------------------------------------------------------------------------------
# The results store
# --------------------------------------------------------------------------------------------
CLASSIFICATION_METRICS = ("auroc", "f1", "accuracy", "balanced_accuracy")
SEGMENTATION_METRICS = ("dice", "jaccard", "pixel_accuracy", "miou")
PER_IMAGE_SEGMENTATION = ("dice", "jaccard")  # stored per image: Wilcoxon applies
_CAPTION_TEXT_COLUMNS = ("sample_id", "reference", "generated")
LABEL_EFFICIENCY = "label-efficiency"
# Protocols whose predictions hold one block per setting (each block lists the test set once); those
# besides label efficiency give their replicates through Protocol.metric_replicates
REPLICATE_HOOK = ("robustness", "transfer")
MULTI_BLOCK = (LABEL_EFFICIENCY, *REPLICATE_HOOK)

COLUMNS = ["task", "protocol", "kind", "metric", "n_test", "n_boot", "value_a", "value_b", "diff", "ci_low", "ci_high",
           "p_boot", "p_delong", "p_mcnemar", "p_wilcoxon", "p_ttest_paper",
           *[f"{f}_holm" for f in P_FAMILIES], "acc_a", "acc_b", "delong_per_class",
           "claim_test", "claim_n_boot", "claim_floor", "p_claim", "p_claim_holm", "note"]
CLAIM_REPLICATES_PER_TEST = 20  # bootstrap replicates for a claim: 20 · m / alpha (p floor 2/(B+1) ≈ alpha/(10 m))


def claim_replicates(m: int, alpha: float) -> int:
    """Paired-bootstrap replicates a claim over ``m`` rows needs: ``ceil(20 · m / alpha)``."""
    return int(math.ceil(CLAIM_REPLICATES_PER_TEST * max(m, 1) / alpha))


def bootstrap_floor(n_boot: int) -> float:
    """The smallest two-sided paired-bootstrap p with ``n_boot`` replicates: ``2 / (B + 1)``."""
    return 2.0 / (n_boot + 1)


def _metric_for(kind: str, requested: str, ra: dict, rb: dict) -> tuple[Optional[str], str]:
    """The metric compared for a pair of results: the requested one where both have it, else the
    task's main metric (the note says so).

    Classification and segmentation: the metrics :func:`dermbench.stats.evaluation.replicates` computes
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

    notes: list[str] = []
    boot = ra.get("bootstrap") or {}
    if (rb.get("bootstrap") or {}).get("sha256") != boot.get("sha256"):
        from dermbench.run.identity import differing_settings

        raise ComparisonError(f"{ra['task']} · {ra['protocol']}: {ra['_path']} and {rb['_path']} were resampled "
                              f"differently (bootstrap files {boot.get('path')} vs {(rb.get('bootstrap') or {}).get('path')}; "
                              f"they differ in {', '.join(differing_settings([ra, rb])) or 'their resamples'}); paired "
                              f"tests need the same resamples: select results with the same --n-boot and --split-seed")
    if not boot.get("path"):
        raise ComparisonError(f"{ra['_path']} names no bootstrap file: rerun it with this dermbench version")
    path = Path(results_dir) / boot["path"]
    if not path.exists():
        from dermbench.run.results import read_bootstrap

        read_bootstrap(results_dir, ra)  # raises MissingResultFile: the file, and the `dermbench run` line that redraws it
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
    if record.get("protocol") in MULTI_BLOCK:
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
        la = pa.drop_duplicates("sample_id")["label"].to_numpy() if ra.get("protocol") in MULTI_BLOCK else pa["label"].to_numpy()
        lb = pb.drop_duplicates("sample_id")["label"].to_numpy() if rb.get("protocol") in MULTI_BLOCK else pb["label"].to_numpy()
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


def claim_test(kind: Optional[str], metric: Optional[str], per_sample: bool) -> str:
    """The test a claim uses for a row: 'delong' (AUROC), 'mcnemar' (accuracy), 'wilcoxon' (per-image
    Dice/Jaccard) on one prediction per test sample; otherwise 'bootstrap' (the paired bootstrap on
    resamples drawn for the claim)."""
    if per_sample and kind == "classification" and metric == "auroc":
        return "delong"
    if per_sample and kind == "classification" and metric == "accuracy":
        return "mcnemar"
    if per_sample and kind == "segmentation" and metric in PER_IMAGE_SEGMENTATION:
        return "wilcoxon"
    return "bootstrap"


def _claim_bootstrap(ra: dict, pa: pd.DataFrame, pb: pd.DataFrame, name: str, n_test: int,
                     n_boot: int) -> tuple[np.ndarray, np.ndarray]:
    """Both models' replicates of ``name`` on ``n_boot`` fresh paired resamples of the test set, drawn
    for the claim (stratified by label for classification, like the stored ones; seeded from the
    task, the split and the split seed, so every comparison on this split draws the same)."""
    from dermbench.stats.bootstrap import bootstrap_indices, bootstrap_seed
    from dermbench.stats.evaluation import replicates

    kind, protocol = ra.get("kind"), ra.get("protocol")
    labels = None
    if kind == "classification" and "label" in pa.columns:  # one label per test image, also where blocks repeat them
        labels = (pa.drop_duplicates("sample_id") if protocol in MULTI_BLOCK else pa)["label"].to_numpy()
    split_seed = int(ra.get("split_seed", (ra.get("split") or {}).get("seed", ra.get("seed", 0))) or 0)
    seed = bootstrap_seed(f"{ra['task']}|claim", str(ra.get("split_sha256")), split_seed)
    idx = bootstrap_indices(n_test, n_boot, seed, labels)

    def one(chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if protocol == LABEL_EFFICIENCY:
            from dermbench.protocols.label_efficiency import fraction_replicates

            return fraction_replicates(pa, chunk)[name]["replicates"], fraction_replicates(pb, chunk)[name]["replicates"]
        if protocol in REPLICATE_HOOK:  # the protocol's own replicates of its blocks, as for the stored resamples
            from dermbench.protocols import get_protocol

            hook = get_protocol(protocol).metric_replicates
            return hook(pa, chunk)[name][1], hook(pb, chunk)[name][1]
        if kind == "caption":
            va, vb = pa[name].to_numpy(np.float64), pb[name].to_numpy(np.float64)
            return va[chunk].mean(axis=1), vb[chunk].mean(axis=1)
        return replicates(kind, pa, chunk)[name], replicates(kind, pb, chunk)[name]

    # in blocks of resamples: tens of thousands of them on a large test set would not fit in memory at once
    parts = [one(idx[i:i + 2000]) for i in range(0, len(idx), 2000)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def compare_pair(results_dir: Path, ra: dict, rb: dict, metric: str = "auroc",
                 claim_n_boot: Optional[int] = None) -> dict[str, Any]:
    """One comparison row for two finished results of the same (task, protocol).

    ``claim_n_boot``: replicates of the claim's paired bootstrap for a row that no analytical test
    covers (None: the claim bootstrap is not drawn, ``p_claim`` is the stored-resample bootstrap)."""
    from dermbench.stats.evaluation import classification_arrays, replicates
    from dermbench.stats.metrics import full_index
    from dermbench.run.results import read_predictions

    from dermbench.run.results import MissingResultFile

    try:
        pa, pb = read_predictions(ra["_path"]), read_predictions(rb["_path"])
    except MissingResultFile:
        raise  # its message names the file and the fix; the command exits 1
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
    elif ra["protocol"] in REPLICATE_HOOK:  # the protocol's own replicates of each block's metrics
        from dermbench.protocols import get_protocol

        idx, boot_note = _load_bootstrap(results_dir, ra, rb, n_test)
        hook = get_protocol(ra["protocol"]).metric_replicates
        ha, hb = hook(pa, idx), hook(pb, idx)
        if name in ha and name in hb:
            (point_a, rep_a), (point_b, rep_b) = ha[name], hb[name]
        else:
            point_a, point_b = stored_values()
            notes.append(f"{name} is not in both {ra['protocol']} results: values only")
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
        row.update(claim_test="none", p_claim=math.nan)
        notes.append("no paired test: this row cannot support a claim")
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
    test = claim_test(kind, name, per_sample)
    row["claim_test"] = test
    if test != "bootstrap":
        row["p_claim"] = row[f"p_{test}"]
    else:
        b = int(claim_n_boot) if claim_n_boot else int(row["n_boot"])
        if claim_n_boot:
            claim_a, claim_b = _claim_bootstrap(ra, pa, pb, name, n_test, b)
            row["p_claim"] = paired_bootstrap_test(claim_a, claim_b, row["diff"])["p"]
        else:
            row["p_claim"] = row["p_boot"]
        row.update(claim_n_boot=b, claim_floor=bootstrap_floor(b))
    row["note"] = "; ".join(notes)
    return row


def _order_key(task: str, protocol: str) -> tuple:
    from dermbench.report.labels import PROTOCOL_ORDER
    from dermbench.data.tasks import PAPER_ORDER

    t = PAPER_ORDER.index(task) if task in PAPER_ORDER else len(PAPER_ORDER)
    p = PROTOCOL_ORDER.index(protocol) if protocol in PROTOCOL_ORDER else len(PROTOCOL_ORDER)
    return (t, task, p, protocol)


def compare_models(results_dir: Path, model_a: str, model_b: str, tasks: Optional[Sequence[str]] = None,
                   metric: str = "auroc", protocol: Optional[str] = None, alpha: float = ALPHA,
                   selection=None, claim_boot: Optional[int] = None) -> pd.DataFrame:
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
    stored shared resamples (``<results>/_bootstrap``), through :func:`dermbench.stats.evaluation.replicates`.

    Columns: ``value_a``, ``value_b``, ``diff`` (A - B) with the paired-bootstrap ``ci_low``,
    ``ci_high`` and ``p_boot``; ``p_delong`` (classification, auroc), ``p_mcnemar`` (classification,
    accuracy; ``acc_a``, ``acc_b``), ``p_wilcoxon`` (segmentation Dice/Jaccard per image),
    ``p_ttest_paper`` (the paper's unsound t-test), and ``<family>_holm`` for each, Holm-adjusted
    across the rows. ``table.attrs`` holds the model names, metric, alpha and the "better on all"
    verdicts.

    The claim (see the module docstring): ``claim_test`` per row, ``p_claim`` and ``p_claim_holm``
    (Holm over the rows), ``claim_n_boot``/``claim_floor`` for rows on the paired bootstrap
    (``claim_boot``: its replicates; None: ``20·m/alpha``, drawn automatically). ``table.attrs["claim"]``
    holds the verdict. Results: one per (model, task, protocol) by
    :func:`dermbench.run.identity.select_results` (``selection``: its filters).
    """
    from dermbench.run.identity import select_results
    from dermbench.run.results import iter_results

    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ComparisonError(f"results folder {results_dir} does not exist")
    if claim_boot is not None and claim_boot < 1:
        raise ComparisonError(f"--claim-boot must be a positive number of replicates, got {claim_boot}")
    records: dict[str, dict[tuple[str, str], dict]] = {}
    wanted = {model_a, model_b}
    for (model, task, proto), picked in select_results([r for r in iter_results(results_dir)
                                                        if str(r.get("model")) in wanted], selection).items():
        records.setdefault(model, {})[(task, proto)] = picked.record
    for label in (model_a, model_b):
        if label not in records:
            there = sorted({str(r.get("model")) for r in iter_results(results_dir)})
            raise ComparisonError(f"no results for model {label!r} in {results_dir}"
                                  + (selection.matching() if selection is not None else "")
                                  + f"; models there: {', '.join(there) or 'none'}")
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
    m = len(keys)
    n_claim = claim_boot if claim_boot is not None else claim_replicates(m, alpha)
    rows = [compare_pair(results_dir, records[model_a][k], records[model_b][k], metric, claim_n_boot=n_claim)
            for k in sorted(keys, key=lambda k: _order_key(*k))]
    table = pd.DataFrame(rows, columns=COLUMNS)
    for family in P_FAMILIES:
        table[f"{family}_holm"] = holm(table[family].to_numpy(np.float64))
    # Holm over the whole family: a row without a test counts in m (it is part of the claim) and fails it
    p_claim = table["p_claim"].to_numpy(np.float64)
    adjusted = holm(np.where(np.isfinite(p_claim), p_claim, 1.0))
    table["p_claim_holm"] = np.where(np.isfinite(p_claim), adjusted, np.nan)
    level = alpha / max(m, 1)
    unprovable = [f"{r.task} · {r.protocol}" for r in table.itertuples()
                  if r.claim_test == "bootstrap" and np.isfinite(r.claim_floor) and r.claim_floor >= level]
    table.attrs.update(model_a=model_a, model_b=model_b, metric=metric, alpha=alpha, results_dir=str(results_dir),
                       better_on_all={f: better_on_all(table["diff"], table[f"{f}_holm"], alpha) for f in P_FAMILIES},
                       worse_on_all={f: better_on_all(-table["diff"], table[f"{f}_holm"], alpha) for f in P_FAMILIES},
                       claim={"m": m, "level": level, "claim_n_boot": n_claim, "unprovable": unprovable,
                              "supported": better_on_all(table["diff"], table["p_claim_holm"], alpha),
                              "reverse_supported": better_on_all(-table["diff"], table["p_claim_holm"], alpha)})
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
    header = ["task · protocol", "metric", a, b, f"A−B [{level} CI]", *[_SHORT[f] for f in shown], "claim test: p (Holm)"]
    lines_data = []
    for _, r in table.iterrows():
        diff = _signed_pct(r["diff"])
        if np.isfinite(r["ci_low"]):
            diff += f" [{_signed_pct(r['ci_low'])}, {_signed_pct(r['ci_high'])}]"
        test = r["claim_test"] if isinstance(r["claim_test"], str) else "none"
        claim = "no test" if test == "none" else f"{_CLAIM_SHORT.get(test, test)}: {_p_pair(r['p_claim'], r['p_claim_holm'])}"
        lines_data.append([f"{r['task']} · {r['protocol']}", str(r["metric"]), _pct(r["value_a"]), _pct(r["value_b"]), diff,
                           *[_p_pair(r[f], r[f"{f}_holm"]) for f in shown], claim])
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
    out += _claim_lines(table, a, b, alpha)
    return "\n".join(out)


_CLAIM_SHORT = {"delong": "DeLong", "mcnemar": "McNemar", "wilcoxon": "Wilcoxon", "bootstrap": "boot."}


def _claim_lines(table: pd.DataFrame, a: str, b: str, alpha: float) -> list[str]:
    """The family, the tests, the replicates and the verdict of "A better than B on all rows"."""
    claim = table.attrs.get("claim") or {}
    m = int(claim.get("m", len(table)))
    level = float(claim.get("level", alpha / max(m, 1)))
    counts = table["claim_test"].fillna("none").value_counts().to_dict()
    tests = ", ".join(f"{_CLAIM_SHORT.get(t, t)} {n}" for t, n in sorted(counts.items()) if t != "none")
    metrics = ", ".join(sorted({str(x) for x in table["metric"]}))
    out = ["", f"Claim family: the {m} rows above, one per task · protocol, each on one metric ({metrics}; label "
           f"efficiency at its largest training fraction only), Holm-corrected at α = {alpha:g} (smallest threshold "
           f"α/m = {level:.2g}). Tests: {tests or 'none'}"
           + (f", no test {counts['none']}" if counts.get("none") else "") + "."]
    boot_rows = table[table["claim_test"] == "bootstrap"]
    if len(boot_rows):
        b_used = sorted({int(x) for x in boot_rows["claim_n_boot"] if np.isfinite(x)})
        floor = bootstrap_floor(min(b_used)) if b_used else math.nan
        out.append(f"Paired bootstrap for the claim: B = {', '.join(map(str, b_used))} resamples drawn for these rows "
                   f"(needed: 20·m/α = {claim_replicates(m, alpha)}); smallest attainable p = 2/(B+1) = {floor:.2g}"
                   + (f" ≥ α/m: {len(claim['unprovable'])} row(s) cannot be proven at these replicates "
                      f"({', '.join(claim['unprovable'])}); draw more with --claim-boot" if claim.get("unprovable") else
                      " < α/m") + ".")
    p = table["p_claim_holm"]
    wins = int(((table["diff"] > 0) & (p < alpha)).sum())
    losses = int(((table["diff"] < 0) & (p < alpha)).sum())
    untested = int(p.isna().sum())
    verdict = "SUPPORTED" if claim.get("supported") else "NOT SUPPORTED"
    reverse = f" (the reverse claim, {b} better than {a} on all, is supported)" if claim.get("reverse_supported") else ""
    out.append(f"Claim \"{a} better than {b} on all {m} task/protocol rows\": {verdict} — {a} significantly better on "
               f"{wins}, worse on {losses}, no significant difference on {m - wins - losses - untested}"
               + (f", no test possible on {untested}" if untested else "") + f"{reverse}.")
    return out
