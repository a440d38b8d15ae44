"""The results store: one JSON per result plus its per-sample predictions.

Layout (``<results>`` = ``--output``; ``<key12>``: the first 12 hex digits of the result's key,
:func:`dermbench.run.identity.result_key`)::

    <results>/<model>/<task>/<protocol>@<key12>.json               metrics, identity, settings, provenance
    <results>/<model>/<task>/<protocol>@<key12>.predictions.csv    one row per test sample
    <results>/<model>/<task>/<protocol>@<key12>.artifacts/         figures, masks (optional)
    <results>/_splits/<task>.<rule>.seed<seed>.<sha12>.json        the split (its sha256 is in every result)
    <results>/_bootstrap/<task>.<split>.seed<seed>...npy           resample indices shared by every model

Results of one (model, task, protocol) made with different settings (seeds, ``--set``, replicates,
split, data, weights) have different keys and live side by side. The layout before keys
(``<protocol>.json``) is still read: :func:`iter_results` gives such a result the identity
reconstructed from what it stored, and :func:`migrate_results` (``dermbench results migrate``)
renames it into the keyed layout without recomputing anything.

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
from dermbench.run.identity import KEY_LENGTH, key_of, legacy_identity

SCHEMA_VERSION = 2  # 2: results carry an identity and a key, and are stored under <protocol>@<key12>
TRACKED_PACKAGES = ("dermbench", "torch", "torchvision", "timm", "open_clip_torch", "transformers", "numpy",
                    "scipy", "scikit-learn", "pandas", "peft", "flwr", "pycocoevalcap", "rouge-score")


def result_paths(results_dir: Path, model: str, task: str, protocol: str, key: Optional[str] = None) -> dict[str, Path]:
    """Where the result of ``key`` lives (``key`` None: the layout before keys, ``<protocol>.json``)."""
    folder = Path(results_dir) / model / task
    stem = protocol if key is None else f"{protocol}@{key[:KEY_LENGTH]}"
    return {
        "dir": folder,
        "json": folder / f"{stem}.json",
        "predictions": folder / f"{stem}.predictions.csv",
        "artifacts": folder / f"{stem}.artifacts",
    }


def is_finished(results_dir: Path, model: str, task: str, protocol: str, key: Optional[str] = None) -> bool:
    """A result counts as finished when its JSON exists, records this key (when one is given), and its
    predictions file matches the recorded hash."""
    paths = result_paths(results_dir, model, task, protocol, key)
    if not paths["json"].exists() or not paths["predictions"].exists():
        return False
    try:
        record = json.loads(paths["json"].read_text())
        recorded = record["predictions"]["sha256"]
    except (ValueError, KeyError):
        return False
    if key is not None and record.get("result_key") != key:
        return False  # a 12-digit prefix collision, or a hand-edited file: not this result
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


def write_result(results_dir: Path, record: dict[str, Any], predictions: pd.DataFrame) -> Path:
    """Write a result under its key (``record["result_key"]``; without one, the layout before keys)."""
    key = record.get("result_key")
    paths = result_paths(results_dir, record["model"], record["task"], record["protocol"], key)
    data = predictions_csv(predictions)
    atomic_write_bytes(paths["predictions"], data)
    record = dict(record)
    record["schema"] = SCHEMA_VERSION if key else 1
    record["predictions"] = {"path": paths["predictions"].name, "sha256": sha256_bytes(data)}
    atomic_write_json(paths["json"], record)
    return paths["json"]


def read_predictions(json_path: Path) -> pd.DataFrame:
    record = json.loads(Path(json_path).read_text())
    path = Path(json_path).parent / record["predictions"]["path"]
    if sha256_file(path) != record["predictions"]["sha256"]:
        raise ValueError(f"{path} does not match the sha256 recorded in {json_path}; the file was modified: rerun with --overwrite")
    return parse_predictions(path)


def _normalise_legacy(record: dict[str, Any]) -> dict[str, Any]:
    """A result of the layout before keys, read as a keyed one: its identity reconstructed, and the
    contamination flag corrected (those results flagged untrained weights too)."""
    record.setdefault("identity", legacy_identity(record))
    record.setdefault("result_key", key_of(record))
    weights = ((record.get("provenance") or {}).get("config") or {}).get("weights")
    if weights == "random" or str(record.get("model", "")).endswith("@random"):
        record["contaminated"] = False
    elif weights and record.get("contaminated"):
        record["contaminated"] = "unknown"
    record["legacy_layout"] = True
    return record


def iter_results(results_dir: Path) -> Iterator[dict[str, Any]]:
    """Every finished result record under ``results_dir`` (sorted, shared folders skipped), in either
    layout. Each record gets ``_path`` (its JSON), ``identity`` and ``result_key``. The one reader of
    the store: the leaderboard, compare, fairness and ``results list`` all go through it."""
    for path in sorted(Path(results_dir).glob("*/*/*.json")):
        if path.parts[-3].startswith("_"):
            continue
        record = json.loads(path.read_text())
        record["_path"] = str(path)
        if "result_key" not in record:
            _normalise_legacy(record)
        yield record


def migrate_results(results_dir: Path, dry_run: bool = False) -> list[tuple[Path, Path]]:
    """Move results of the layout before keys (``<protocol>.json``) to ``<protocol>@<key12>.json``.

    Nothing is recomputed: the JSON gains its reconstructed ``identity`` and ``result_key`` (its data
    hash is unknown: ``data_sha256`` null), the predictions file and artifacts are renamed. The new
    files are written before the old ones are removed, so an interruption leaves a readable store.
    Returns (old JSON, new JSON) pairs.
    """
    moved = []
    for path in sorted(Path(results_dir).glob("*/*/*.json")):
        if path.parts[-3].startswith("_") or "@" in path.stem:
            continue
        record = json.loads(path.read_text())
        if "result_key" in record or "predictions" not in record:
            continue
        old_predictions = path.parent / record["predictions"]["path"]
        if sha256_file(old_predictions) != record["predictions"]["sha256"]:
            raise ValueError(f"{old_predictions} does not match the sha256 recorded in {path}; not migrated: "
                             f"rerun that result with --overwrite")
        record["_path"] = str(path)
        _normalise_legacy(record)
        for k in ("_path", "legacy_layout"):
            record.pop(k, None)
        new = result_paths(results_dir, record["model"], record["task"], record["protocol"], record["result_key"])
        moved.append((path, new["json"]))
        if dry_run:
            continue
        old_artifacts = result_paths(results_dir, record["model"], record["task"], record["protocol"])["artifacts"]
        atomic_write_bytes(new["predictions"], old_predictions.read_bytes())
        if old_artifacts.is_dir():
            old_artifacts.rename(new["artifacts"])
            prefix = old_artifacts.name + "/"
            record["artifacts"] = [new["artifacts"].name + "/" + a[len(prefix):] if str(a).startswith(prefix) else a
                                   for a in record.get("artifacts") or []]
        record["predictions"] = {"path": new["predictions"].name, "sha256": record["predictions"]["sha256"]}
        record["schema"] = SCHEMA_VERSION
        record["migrated_from"] = path.name
        atomic_write_json(new["json"], record)
        path.unlink()
        old_predictions.unlink()
    return moved


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
