"""Training checkpoints that resume exactly.

A checkpoint holds the full (unsharded) student, teacher and optimiser states, the iteration
counter (which also fixes the data position: the data stream is a function of the iteration),
the RNG states of every process, the configuration and the run's records. Rank 0 writes it
(to a temporary file, then renamed); every rank reads it on resume.
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

FORMAT = "dermino-pretrain-checkpoint"
VERSION = 1
LATEST = "checkpoint.pt"


def capture_rng() -> dict[str, Any]:
    """This process's RNG states, in types that ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(_as_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _as_tuples(value):
    # random.setstate needs tuples; a round trip through some serialisers gives lists
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def atomic_torch_save(obj: Any, path: Path) -> Path:
    """torch.save to a temporary file in the target folder, then rename: a reader sees the old
    complete file or the new one (streamed to disk, unlike dermbench.io's in-memory writer)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    return atomic_torch_save({"format": FORMAT, "version": VERSION, **payload}, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--resume {path}: no such checkpoint file")
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError(f"{path} is not a dermino pretraining checkpoint (no format={FORMAT!r} field); "
                         "to start from released weights use --init-weights instead of --resume")
    if obj.get("version") != VERSION:
        raise ValueError(f"{path}: checkpoint version {obj.get('version')}, this code reads version {VERSION}")
    return obj


def resolve_resume(resume: Optional[str], out_dir: Path) -> Optional[Path]:
    """'auto' -> the output folder's latest checkpoint if there is one; a path -> that file."""
    if not resume:
        return None
    if resume == "auto":
        latest = Path(out_dir) / LATEST
        return latest if latest.is_file() else None
    return Path(resume)
