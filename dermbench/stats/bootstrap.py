"""Statistics: shared bootstrap resamples and interval summaries.

The bootstrap resample indices are drawn ONCE per (task, split, seed) and stored, so every
model is evaluated on the very same resamples: paired comparisons need that, and it
makes results reproducible from the stored files alone.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Optional

import numpy as np

from dermbench.io import atomic_write_bytes, sha256_file

DEFAULT_N_BOOT = 1000


def bootstrap_indices(n: int, n_boot: int, seed: int, strata: Optional[np.ndarray] = None) -> np.ndarray:
    """Resample indices [n_boot, n] into a test set of size n.

    With ``strata`` (the test labels) the resampling is stratified: each replicate keeps
    every class's count, so AUROC and macro-F1 are defined on every replicate.
    """
    rng = np.random.default_rng(seed)
    if strata is None:
        return rng.integers(0, n, size=(n_boot, n), dtype=np.int64).astype(np.int32)
    strata = np.asarray(strata)
    out = np.empty((n_boot, n), dtype=np.int32)
    col = 0
    for value in np.unique(strata):
        members = np.flatnonzero(strata == value)
        draws = rng.integers(0, len(members), size=(n_boot, len(members)))
        out[:, col : col + len(members)] = members[draws]
        col += len(members)
    return out


def bootstrap_seed(task: str, split_sha256: str, seed: int) -> int:
    digest = hashlib.sha256(f"{task}|{split_sha256}|{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def shared_bootstrap_indices(
    store_dir: Path,
    task: str,
    split_sha256: str,
    seed: int,
    n: int,
    strata: Optional[np.ndarray] = None,
    n_boot: int = DEFAULT_N_BOOT,
) -> tuple[np.ndarray, Path, str]:
    """Load the stored resamples for (task, split, seed), or draw and store them. Returns (idx, path, sha256)."""
    kind = "strat" if strata is not None else "plain"
    path = Path(store_dir) / f"{task}.{split_sha256[:12]}.seed{seed}.{kind}.B{n_boot}.npy"
    if path.exists():
        idx = np.load(path)
        if idx.shape != (n_boot, n):
            raise ValueError(f"bootstrap file {path} has shape {idx.shape}, expected {(n_boot, n)}; delete it to redraw")
    else:
        idx = bootstrap_indices(n, n_boot, bootstrap_seed(task, split_sha256, seed), strata)
        buf = io.BytesIO()
        np.save(buf, idx)
        atomic_write_bytes(path, buf.getvalue())
    return idx, path, sha256_file(path)


def summarise(value: float, replicates: np.ndarray, alpha: float = 0.05) -> dict:
    """Point estimate on the full test set plus bootstrap summaries.

    ``ci_low``/``ci_high``: percentile interval (sound). ``paper_low``/``paper_high``: the DermINO
    paper's μ ± v with v the bootstrap *variance* (reported for comparison only: it mixes units).
    """
    reps = np.asarray(replicates, dtype=np.float64)
    valid = reps[np.isfinite(reps)]
    if valid.size == 0:
        nan = float("nan")
        return {"value": float(value), "ci_low": nan, "ci_high": nan, "std": nan, "boot_mean": nan,
                "paper_low": nan, "paper_high": nan, "n_boot_valid": 0}
    mean = float(valid.mean())
    var = float(valid.var(ddof=1)) if valid.size > 1 else 0.0
    # both ends in one call (one partition of the replicates; each end computed as by its own call)
    low, high = np.percentile(valid, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return {
        "value": float(value),
        "ci_low": float(low),
        "ci_high": float(high),
        "std": float(np.sqrt(var)),
        "boot_mean": mean,
        "paper_low": mean - var,
        "paper_high": mean + var,
        "n_boot_valid": int(valid.size),
    }
