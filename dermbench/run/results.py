"""The results store: one JSON per result plus its per-sample predictions.

Layout (``<results>`` = ``--results``; ``<key12>``: the first 12 hex digits of the result's key,
:func:`dermbench.run.identity.result_key`)::

    <results>/<model>/<task>/<protocol>@<key12>.json               metrics, identity, settings, provenance
    <results>/<model>/<task>/<protocol>@<key12>.predictions.csv    one row per test sample
    <results>/<model>/<task>/<protocol>@<key12>.<name>.csv         extra per-sample tables (linear, retrieval: "calibration")
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

Every result JSON carries the marker ``"schema": "dermbench.result/2"`` (:data:`SCHEMA`). Results
written before the marker (``"schema": 1`` or ``2``, or none) are still read when they have the
keys every result has (model, task, protocol, metrics). A JSON in the store that cannot be parsed
(a truncated write from another tool, a disk full) or that is not a result (a stray notes file) is
skipped by :func:`iter_results` with a one-line warning naming it (:class:`SkippedFile`), never a
crash and never silently. A result whose predictions or bootstrap file is missing is read, but
reading that file raises :class:`MissingResultFile`, whose message names the file and the
``dermbench run`` line that makes it again (:func:`rerun_command`).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import pandas as pd

from dermbench.io import atomic_write_bytes, atomic_write_json, sha256_bytes, sha256_file
from dermbench.run.identity import KEY_LENGTH, key_of, legacy_identity

SCHEMA_VERSION = 2  # 2: results carry an identity and a key, and are stored under <protocol>@<key12>
# The marker every result JSON carries: what makes a JSON in the results folder a result, and of which version.
SCHEMA_PREFIX = "dermbench.result/"
SCHEMA = f"{SCHEMA_PREFIX}{SCHEMA_VERSION}"
# Keys every result has had since the first version: a JSON without the marker is read as a result
# (written before the marker) only when it has all of them.
RESULT_KEYS = ("model", "task", "protocol", "metrics")
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
    """A result counts as finished when its JSON parses, records this key (when one is given), its
    predictions file matches the recorded hash and the bootstrap file it names exists. A truncated
    JSON, or a result whose bootstrap file was deleted, is not finished: `run` recomputes it (and
    redraws the same resamples), so the leaderboard's paired tests can read it again."""
    paths = result_paths(results_dir, model, task, protocol, key)
    if not paths["json"].exists() or not paths["predictions"].exists():
        return False
    try:
        record = json.loads(paths["json"].read_text())
        recorded = record["predictions"]["sha256"]
        boot = (record.get("bootstrap") or {}).get("path")
    except (ValueError, KeyError, TypeError, AttributeError):  # unparsable, truncated, or not a result
        return False
    if key is not None and record.get("result_key") != key:
        return False  # a 12-digit prefix collision, or a hand-edited file: not this result
    if boot and not (Path(results_dir) / boot).is_file():
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
    """Write a result under its key (``record["result_key"]``; without one, the layout before keys):
    predictions, then each extra table (``<stem>.<name>.csv``), then the JSON, all atomically."""
    key = record.get("result_key")
    paths = result_paths(results_dir, record["model"], record["task"], record["protocol"], key)
    data = predictions_csv(predictions)
    atomic_write_bytes(paths["predictions"], data)
    record = dict(record)
    stored_tables = {}
    stem = paths["json"].name[: -len(".json")]
    for name, table in sorted((tables or {}).items()):
        path = paths["dir"] / f"{stem}.{name}.csv"
        table_bytes = predictions_csv(table)
        atomic_write_bytes(path, table_bytes)
        stored_tables[name] = {"path": path.name, "sha256": sha256_bytes(table_bytes), "rows": int(len(table))}
    if stored_tables:
        record["tables"] = stored_tables
    record["schema"] = SCHEMA if key else f"{SCHEMA_PREFIX}1"
    record["predictions"] = {"path": paths["predictions"].name, "sha256": sha256_bytes(data)}
    atomic_write_json(paths["json"], record)
    return paths["json"]


class MissingResultFile(FileNotFoundError):
    """A file a stored result needs (its predictions, its bootstrap resamples) is missing. The message
    names the file, the result and the fix; ``path``, ``json_path`` and ``fix`` carry them."""
    problem = "is missing"

    def __init__(self, path: Path, json_path: Path, what: str, fix: str):
        self.path, self.json_path, self.what, self.fix = Path(path), Path(json_path), what, fix
        super().__init__(f"{what} {path} (named in {json_path}) {self.problem}; {fix}")


class ModifiedResultFile(ValueError):
    """A result's predictions file no longer matches the sha256 its JSON recorded (edited, or replaced)."""
    problem = "does not match the sha256 recorded"

    def __init__(self, path: Path, json_path: Path, what: str, fix: str):
        self.path, self.json_path, self.what, self.fix = Path(path), Path(json_path), what, fix
        super().__init__(f"{path} does not match the sha256 recorded in {json_path}; the file was modified: {fix}")


def rerun_command(record: dict[str, Any], results_dir: Optional[Path] = None) -> str:
    """The `dermbench run` line that computes this result again (same backbone, weights, task, protocol,
    seeds, replicates, split and settings), into ``results_dir`` (default: the folder it is in)."""
    identity = record.get("identity") or legacy_identity(record)
    config = (record.get("provenance") or {}).get("config") or {}
    if results_dir is None and record.get("_path"):
        results_dir = Path(record["_path"]).parents[2]
    parts = ["dermbench", "run", "--model", str(identity.get("backbone") or record.get("model")),
             "--task", str(record.get("task")), "--protocol", str(record.get("protocol"))]
    weights = config.get("weights")
    if weights:
        parts += ["--weights", str(weights)]
    data_root = (record.get("data") or {}).get("root")
    if data_root:
        parts += ["--data-root", str(data_root)]
    if results_dir is not None:
        parts += ["--results", str(results_dir)]
    parts += ["--seed", str(identity.get("head_seed", record.get("seed", 0))),
              "--split-seed", str(identity.get("split_seed", record.get("split_seed", 0))),
              "--n-boot", str(identity.get("n_boot") or (record.get("bootstrap") or {}).get("n_boot") or 1000)]
    if identity.get("split_mode", "default") != "default":
        parts += ["--split", str(identity["split_mode"])]
    # the identity holds this result's own protocol's --set values, flat ({"epochs": "5"}), as the runner stores them
    for name, value in sorted((identity.get("overrides") or {}).items()):
        parts += ["--set", f"{record.get('protocol')}.{name}={_set_value(value)}"]
    return " ".join(_shell_quote(p) for p in parts)


def _set_value(value: Any) -> str:
    """A setting as --set takes it back: lists comma-separated (0.2,0.5,1.0), booleans lower-case."""
    if isinstance(value, (list, tuple)):
        return ",".join(_set_value(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _shell_quote(text: str) -> str:
    return text if re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", text) else "'" + text.replace("'", "'\\''") + "'"


def read_bootstrap(results_dir: Path, record: dict[str, Any]) -> np.ndarray:
    """The shared resample indices a result was scored with (``record["bootstrap"]["path"]``, relative to
    ``results_dir``). Missing: :class:`MissingResultFile` naming the file and the `dermbench run` line that
    redraws it (the resamples are seeded, so any one result that uses the file redraws the same file)."""
    boot = record.get("bootstrap") or {}
    if not boot.get("path"):
        raise MissingResultFile(Path(results_dir) / "_bootstrap", Path(record["_path"]), "bootstrap file",
                                f"this result names no bootstrap file (written by an old dermbench); re-run that cell: "
                                f"{rerun_command(record, Path(results_dir))} --overwrite")
    path = Path(results_dir) / boot["path"]
    if not path.is_file():
        raise MissingResultFile(path, Path(record["_path"]), "bootstrap file",
                                f"re-run that cell to redraw the same resamples: {rerun_command(record, Path(results_dir))}")
    return np.load(path)


def read_predictions(json_path: Path) -> pd.DataFrame:
    record = json.loads(Path(json_path).read_text())
    path = Path(json_path).parent / record["predictions"]["path"]
    if not path.is_file():
        record["_path"] = str(json_path)
        raise MissingResultFile(path, Path(json_path), "predictions file",
                                f"re-run that cell: {rerun_command(record)}")
    if sha256_file(path) != record["predictions"]["sha256"]:
        record["_path"] = str(json_path)
        raise ModifiedResultFile(path, Path(json_path), "predictions file", f"rerun with --overwrite: {rerun_command(record)} --overwrite")
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


@dataclass(frozen=True)
class SkippedFile:
    """A JSON in the results folder that is not read as a result, and why."""
    path: Path
    reason: str

    def line(self, results_dir: Optional[Path] = None) -> str:
        shown = self.path
        if results_dir is not None:
            try:
                shown = self.path.relative_to(results_dir)
            except ValueError:
                pass
        return f"skipped {shown}: {self.reason}"


def classify_result_json(path: Path) -> Union[dict[str, Any], SkippedFile]:
    """The record a result JSON holds, or why it is not one (unreadable, truncated, not a result, or a
    result of a newer schema)."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        return SkippedFile(Path(path), "not UTF-8 text, so not a result JSON")
    except ValueError as exc:
        return SkippedFile(Path(path), f"unreadable JSON ({exc}; a truncated or interrupted write?): "
                                       f"re-run that cell, or delete the file")
    except OSError as exc:
        return SkippedFile(Path(path), f"cannot be read ({exc.strerror or exc})")
    if not isinstance(record, dict):
        return SkippedFile(Path(path), f"not a dermbench result (a JSON {type(record).__name__}, not an object)")
    schema = record.get("schema")
    if isinstance(schema, str) and schema.startswith(SCHEMA_PREFIX):
        version = schema[len(SCHEMA_PREFIX):]
        if not version.isdigit() or int(version) > SCHEMA_VERSION:
            return SkippedFile(Path(path), f"result schema {schema!r} is newer than this dermbench reads "
                                           f"({SCHEMA}): upgrade dermbench")
        missing = [k for k in RESULT_KEYS if k not in record]
        if missing:
            return SkippedFile(Path(path), f"a {schema} result without {', '.join(missing)}: re-run that cell")
        return record
    missing = [k for k in RESULT_KEYS if k not in record]
    if missing or not isinstance(record.get("metrics"), dict):
        return SkippedFile(Path(path), f"not a dermbench result (no \"schema\": \"{SCHEMA}\" marker, and no "
                                       f"{', '.join(missing) or 'metrics object'}): move it out of the results folder")
    return record  # written before the marker


_WARNED: set[tuple[str, str]] = set()


def warn_skipped(skipped: SkippedFile) -> None:
    """One line on stderr per skipped file, once per process (the leaderboard reads the store several times)."""
    key = (str(skipped.path), skipped.reason)
    if key not in _WARNED:
        _WARNED.add(key)
        print(f"warning: {skipped.line()}", file=sys.stderr)


def forget_warnings() -> None:
    """Warn again about files already warned about (each command starts afresh; tests run many in one process)."""
    _WARNED.clear()


def iter_results(results_dir: Path, skipped: Optional[list[SkippedFile]] = None) -> Iterator[dict[str, Any]]:
    """Every result record under ``results_dir`` (sorted, shared folders skipped), in either layout.
    Each record gets ``_path`` (its JSON), ``identity`` and ``result_key``. The one reader of the store:
    the leaderboard, compare, fairness and ``results list`` all go through it.

    A JSON that is not a readable result is skipped: appended to ``skipped`` when a list is given (the
    caller reports it), else warned about on stderr (:func:`warn_skipped`)."""
    for path in sorted(Path(results_dir).glob("*/*/*.json")):
        if path.parts[-3].startswith("_"):
            continue
        record = classify_result_json(path)
        if isinstance(record, SkippedFile):
            if skipped is not None:
                skipped.append(record)
            else:
                warn_skipped(record)
            continue
        record["_path"] = str(path)
        if "result_key" not in record:
            _normalise_legacy(record)
        yield record


def describe_store(records: Sequence[dict[str, Any]]) -> str:
    """``tasks a, b; models x, y; protocols p, q`` of some stored results: what an error says the results
    folder holds when a report's filters leave nothing to report."""
    def listing(key: str) -> str:
        return ", ".join(sorted({str(r.get(key)) for r in records})) or "none"

    return f"tasks {listing('task')}; models {listing('model')}; protocols {listing('protocol')}"


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
        record = classify_result_json(path)
        if isinstance(record, SkippedFile):
            warn_skipped(record)
            continue
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
        record["schema"] = SCHEMA
        record["migrated_from"] = path.name
        atomic_write_json(new["json"], record)
        path.unlink()
        old_predictions.unlink()
    return moved


SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding the dermbench package


def source_files(package_dir: Path) -> list[tuple[str, Path]]:
    """(relative path, file) of what makes the package's numbers: its .py files and its task cards
    (``data/task_cards/*.toml``, a link to tasks/ in a checkout, copies in a wheel), sorted by path."""
    package_dir = Path(package_dir)
    out = []
    for folder, dirs, files in os.walk(package_dir, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        rel_folder = Path(folder).relative_to(package_dir)
        for name in files:
            rel = rel_folder / name
            if name.endswith(".py") or (rel.parent.as_posix() == "data/task_cards" and name.endswith(".toml")):
                out.append((rel.as_posix(), Path(folder) / name))
    return sorted(out)


def source_sha256(package_dir: Path) -> tuple[str, int]:
    """sha256 over (relative path, file sha256) of :func:`source_files`, and how many files it covers:
    it identifies the installed code where there is no git commit to name."""
    digest = hashlib.sha256()
    files = source_files(package_dir)
    for rel, path in files:
        digest.update(f"{rel}\0{sha256_file(path)}\n".encode("utf-8"))
    return digest.hexdigest(), len(files)


@lru_cache(maxsize=4)
def git_state(root: Optional[Path] = None) -> dict[str, Any]:
    """Where the running dermbench code comes from, computed once per process: the commit of the source
    tree and whether it has local changes (a git checkout), and always the package version and a sha256 of
    its sources (:func:`source_sha256`), which is all there is to name a wheel install by.

    ``root``: the folder holding the ``dermbench`` package (default: this installation's). Only a ``.git``
    in ``root`` itself counts: a package installed into a virtualenv that lives inside some other checkout
    must not report that checkout's commit."""
    root = Path(root) if root is not None else SOURCE_ROOT
    sha, n_files = source_sha256(root / "dermbench")
    state: dict[str, Any] = {"git_commit": None, "git_dirty": None, "source": "installed package",
                             "package_version": _dermbench_version(), "source_sha256": sha, "source_files": n_files}
    if not (root / ".git").exists():
        return state
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10, check=True).stdout.strip())
        return {**state, "git_commit": commit, "git_dirty": dirty, "source": "git checkout"}
    except (OSError, subprocess.SubprocessError):
        return state


def _dermbench_version() -> Optional[str]:
    try:
        return metadata.version("dermbench")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        from dermbench import __version__

        return __version__


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
