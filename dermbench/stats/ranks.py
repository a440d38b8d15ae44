"""Ranks of models over tasks, with bootstrap intervals, and the critical difference of their mean ranks.

Input: for each task the models' metric (higher is better) on the full test set and on each of the task's
stored shared resamples (replicate b of every model is computed on the same resampled test images).

- **Mean rank**: within each task the models are ranked (1 = best, ties share their average rank,
  ``scipy.stats.rankdata``), then averaged over the tasks.
- **Borda count**: each task gives a model one point per model it beats and a half per tie
  (``n_models − rank``), summed over the tasks.
- **Position**: the model's place when sorted by mean rank (ties: average place).
- **Bootstrap intervals**: replicate b draws test images *within every task* (the stored resamples;
  tasks are resampled independently), ranks the models on every task with the replicate-b values and
  recomputes the three numbers; the 95% interval is the percentile interval over the replicates
  (a replicate where some model's metric is undefined on some task is dropped). Every task must
  have the same number of replicates.
- **Friedman test** over tasks (k ≥ 3 models, N ≥ 2 tasks): ``chi2_F = 12N/(k(k+1)) [sum_j R_j^2 −
  k(k+1)^2/4]`` with the tie correction of ``scipy.stats.friedmanchisquare`` (tested equal), and
  the **Nemenyi critical difference** ``CD = q_alpha sqrt(k(k+1)/(6N))`` with ``q_alpha`` the
  studentized range quantile / sqrt(2) (Demšar 2006): two models whose mean ranks differ by less
  than CD are not distinguishable.
- **Bootstrap equivalent** (any k ≥ 2, any N): for every pair, the paired bootstrap p of the
  difference of their mean ranks on the same replicates (:func:`dermbench.stats.paired.
  paired_bootstrap_test`), Holm-adjusted over the pairs; a pair with p_holm ≥ alpha is connected in the
  critical-difference diagram. With few tasks this is the one that applies: the Friedman/Nemenyi test
  treats the N tasks as the sample and has little power for small N.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from scipy import stats as sps

from dermbench.stats.paired import ALPHA, holm, paired_bootstrap_test


def task_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks (1 = best, ties averaged) of the models along axis 0 of ``values`` [k, ...]; higher is better."""
    return sps.rankdata(-np.asarray(values, np.float64), method="average", axis=0)


@dataclass
class RankResult:
    models: list[str]
    tasks: list[str]
    mean_rank: np.ndarray            # [k]
    borda: np.ndarray                # [k]
    position: np.ndarray             # [k]
    intervals: dict[str, np.ndarray]  # name -> [k, 2] percentile intervals (mean_rank, borda, position)
    n_boot_valid: int
    pairs: list[dict] = field(default_factory=list)  # bootstrap pairwise tests of mean-rank differences
    friedman: dict = field(default_factory=dict)     # chi2, p, cd (Nemenyi), or a note why not


def _summaries(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean rank, Borda, position) of values [k, N] (or [k, N, B]: per replicate along the last axis)."""
    k = values.shape[0]
    ranks = task_ranks(values)
    mean_rank = ranks.mean(axis=1)
    borda = (k - ranks).sum(axis=1)
    position = sps.rankdata(mean_rank, method="average", axis=0)
    return mean_rank, borda, position


def friedman_nemenyi(values: np.ndarray, alpha: float = ALPHA) -> dict:
    """Friedman chi2 (tie-corrected), its p, and the Nemenyi CD for values [k models, N tasks]."""
    k, n = values.shape
    if k < 3 or n < 2:
        return {"chi2": math.nan, "p": math.nan, "cd": math.nan,
                "note": f"Friedman needs at least 3 models and 2 tasks (here {k} models, {n} tasks)"}
    ranks = task_ranks(values)  # [k, N]
    r = ranks.sum(axis=1)
    chi2 = 12.0 / (n * k * (k + 1)) * float((r ** 2).sum()) - 3.0 * n * (k + 1)
    ties = sum(float((c ** 3 - c).sum()) for c in (np.unique(ranks[:, j], return_counts=True)[1] for j in range(n)))
    correction = 1.0 - ties / (k * (k * k - 1) * n)
    chi2 = chi2 / correction if correction > 0 else math.nan
    p = float(sps.chi2.sf(chi2, k - 1)) if math.isfinite(chi2) else math.nan
    q = float(sps.studentized_range.ppf(1 - alpha, k, np.inf)) / math.sqrt(2.0)
    return {"chi2": float(chi2), "p": p, "cd": q * math.sqrt(k * (k + 1) / (6.0 * n)), "q_alpha": q, "note": ""}


def rank_models(models: Sequence[str], tasks: Sequence[str], points: Mapping[str, np.ndarray],
                replicates: Mapping[str, np.ndarray], alpha: float = ALPHA) -> RankResult:
    """Ranks over ``tasks``. ``points[task]``: [k] values of ``models``; ``replicates[task]``: [k, B]."""
    models, tasks = list(models), list(tasks)
    if not tasks or len(models) < 2:
        raise ValueError(f"ranking needs at least 2 models and 1 task, got {len(models)} model(s), {len(tasks)} task(s)")
    values = np.stack([np.asarray(points[t], np.float64) for t in tasks], axis=1)  # [k, N]
    if not np.isfinite(values).all():
        raise ValueError("every model needs a finite value on every task to be ranked")
    shapes = {np.asarray(replicates[t]).shape for t in tasks}
    if len(shapes) != 1:
        raise ValueError(f"the tasks' replicates differ in shape {sorted(shapes)}; rerun them with the same --n-boot")
    reps = np.stack([np.asarray(replicates[t], np.float64) for t in tasks], axis=1)  # [k, N, B]
    ok = np.isfinite(reps).all(axis=(0, 1))
    reps = reps[:, :, ok]
    mean_rank, borda, position = _summaries(values)
    boot = dict(zip(("mean_rank", "borda", "position"), _summaries(reps)))  # each [k, B']
    q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
    intervals = {name: (np.percentile(b, q, axis=1).T if b.shape[1] else np.full((len(models), 2), np.nan))
                 for name, b in boot.items()}
    pairs = []
    for i, j in itertools.combinations(range(len(models)), 2):
        test = paired_bootstrap_test(boot["mean_rank"][i], boot["mean_rank"][j], float(mean_rank[i] - mean_rank[j]), alpha)
        pairs.append({"a": models[i], "b": models[j], **test})
    for pair, p_adj in zip(pairs, holm([p["p"] for p in pairs])):
        pair["p_holm"] = float(p_adj)
        pair["distinguishable"] = bool(np.isfinite(p_adj) and p_adj < alpha)
    return RankResult(models, tasks, mean_rank, borda, position, intervals, int(ok.sum()), pairs,
                      friedman_nemenyi(values, alpha))
