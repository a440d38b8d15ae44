"""The results store: one JSON per (model, task, protocol) plus its per-sample predictions.

Layout (``<results>`` = ``--output``)::

    <results>/<model>/<task>/<protocol>.json               metrics, settings, provenance
    <results>/<model>/<task>/<protocol>.predictions.csv    one row per test sample
    <results>/<model>/<task>/<protocol>.<name>.csv         extra per-sample tables (linear, retrieval: "calibration")
    <results>/<model>/<task>/<protocol>.artifacts/         figures, masks (optional)
    <results>/_splits/<task>.<rule>.seed<seed>.json        the split (its sha256 is in every result)
    <results>/_bootstrap/<task>.<split>.seed<seed>...npy   resample indices shared by every model

The predictions file is written first and the JSON last, both atomically: a JSON on disk
means a finished result, so an interrupted run resumes by skipping finished results.
"""
from __future__ import annotations

import io
import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import pandas as pd

from dermbench.io import atomic_write_bytes, atomic_write_json, sha256_bytes, sha256_file

SCHEMA_VERSION = 1
TRACKED_PACKAGES = ("dermbench", "torch", "torchvision", "timm", "open_clip_torch", "transformers", "numpy",
                    "scipy", "scikit-learn", "pandas", "peft", "flwr", "pycocoevalcap", "rouge-score")


def result_paths(results_dir: Path, model: str, task: str, protocol: str) -> dict[str, Path]:
    folder = Path(results_dir) / model / task
    return {
        "dir": folder,
        "json": folder / f"{protocol}.json",
        "predictions": folder / f"{protocol}.predictions.csv",
        "artifacts": folder / f"{protocol}.artifacts",
    }


def is_finished(results_dir: Path, model: str, task: str, protocol: str) -> bool:
    """A result counts as finished when its JSON exists and its predictions file matches the recorded hash."""
    paths = result_paths(results_dir, model, task, protocol)
    if not paths["json"].exists() or not paths["predictions"].exists():
        return False
    try:
        recorded = json.loads(paths["json"].read_text())["predictions"]["sha256"]
    except (ValueError, KeyError):
        return False
    return recorded == sha256_file(paths["predictions"])


def predictions_csv(predictions: pd.DataFrame) -> bytes:
    """The stored form of a predictions table: 10 significant digits per float."""
    buf = io.StringIO()
    predictions.to_csv(buf, index=False, float_format="%.10g", lineterminator="\n")
    return buf.getvalue().encode("utf-8")


def parse_predictions(data: Union[bytes, Path]) -> pd.DataFrame:
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    # the runner scores what this returns (as_stored), so a rebuild parses the file the same way
    return pd.read_csv(source, keep_default_na=False, na_values=[""], dtype={"sample_id": str})


def as_stored(predictions: pd.DataFrame) -> pd.DataFrame:
    """The predictions exactly as a later read of the stored CSV gives them. The runner computes the
    metrics from this, so `leaderboard --rebuild` reproduces every stored number bit for bit."""
    return parse_predictions(predictions_csv(predictions))


def write_result(results_dir: Path, record: dict[str, Any], predictions: pd.DataFrame,
                 tables: Optional[dict[str, pd.DataFrame]] = None) -> Path:
    """Predictions, then each extra table (``<protocol>.<name>.csv``), then the JSON, all atomically."""
    paths = result_paths(results_dir, record["model"], record["task"], record["protocol"])
    data = predictions_csv(predictions)
    atomic_write_bytes(paths["predictions"], data)
    record = dict(record)
    stored_tables = {}
    for name, table in sorted((tables or {}).items()):
        path = paths["dir"] / f"{record['protocol']}.{name}.csv"
        table_bytes = predictions_csv(table)
        atomic_write_bytes(path, table_bytes)
        stored_tables[name] = {"path": path.name, "sha256": sha256_bytes(table_bytes), "rows": int(len(table))}
    if stored_tables:
        record["tables"] = stored_tables
    record["schema"] = SCHEMA_VERSION
    record["predictions"] = {"path": paths["predictions"].name, "sha256": sha256_bytes(data)}
    atomic_write_json(paths["json"], record)
    return paths["json"]


def read_predictions(json_path: Path) -> pd.DataFrame:
    record = json.loads(Path(json_path).read_text())
    path = Path(json_path).parent / record["predictions"]["path"]
    if sha256_file(path) != record["predictions"]["sha256"]:
        raise ValueError(f"{path} does not match the sha256 recorded in {json_path}; the file was modified: rerun with --overwrite")
    return parse_predictions(path)


def read_table(json_path: Path, name: str) -> Optional[pd.DataFrame]:
    """An extra table of a result (e.g. "calibration"), checked against its recorded sha256; None if it has none."""
    record = json.loads(Path(json_path).read_text())
    entry = (record.get("tables") or {}).get(name)
    if entry is None:
        return None
    path = Path(json_path).parent / entry["path"]
    if not path.exists() or sha256_file(path) != entry["sha256"]:
        raise ValueError(f"{path} is missing or does not match the sha256 recorded in {json_path}; rerun with --overwrite")
    return parse_predictions(path)


def iter_results(results_dir: Path) -> Iterator[dict[str, Any]]:
    """Every finished result record under ``results_dir`` (sorted, shared folders skipped)."""
    for path in sorted(Path(results_dir).glob("*/*/*.json")):
        if path.parts[-3].startswith("_"):
            continue
        record = json.loads(path.read_text())
        record["_path"] = str(path)
        yield record


@lru_cache(maxsize=1)
def git_state() -> dict[str, Any]:
    """Commit of the dermbench source tree (if it is a git checkout) and whether it has local changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10, check=True).stdout.strip())
        return {"git_commit": commit, "git_dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}


def package_versions() -> dict[str, Optional[str]]:
    out = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def provenance(config: dict[str, Any], device: str, started: str) -> dict[str, Any]:
    return {
        **git_state(),
        "dermbench_version": package_versions()["dermbench"],
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": device,
        "command": " ".join(sys.argv),
        "config": config,
        "started": started,
        "finished": now(),
    }


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
