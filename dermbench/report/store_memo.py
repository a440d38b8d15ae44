"""Read each file of the results store once per leaderboard build, and compute each result's replicates once.

One build reads the same results many times: the main tables, the fairness tables and every section
(calibration, operating point, ranks, ...) each read a result's predictions (a sha256 check, then a CSV
parse), its extra tables and its shared bootstrap resamples, and the main tables and the ranks each
compute the same bootstrap replicates of its metrics. Inside :func:`reading_once` (opened by
``build_leaderboard``) the readers below keep what they read and what :func:`memoised` computed, for
that build only; outside it they are the plain readers of :mod:`dermbench.run.results`.

Why this cannot serve stale data:

- the memo lives only as long as the ``with reading_once():`` block: every build, also a second one in
  the same process, starts empty and reads the store as it is then;
- every entry is keyed by the path, size, mtime and inode of each file it was made from (the result
  JSON, its predictions file, its bootstrap file): a file rewritten during the build is read again;
- nothing is memoised when a read fails: a missing or edited file raises the reader's own error
  (:class:`~dermbench.run.results.MissingResultFile`, :class:`~dermbench.run.results.ModifiedResultFile`)
  each time it is asked for, exactly as without the memo;
- callers get their own copy of each predictions table, and read-only bootstrap and replicate arrays,
  so no part of a build can change what the next one reads.

The memo is one per process (builds run one at a time; builds in several threads at once would stay
correct, as every key carries its files' signatures, but might not share).
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TypeVar

import numpy as np
import pandas as pd

from dermbench.run import results as store_files

T = TypeVar("T")
FileSignature = tuple[str, int, int, int]

_active: Optional[dict[tuple, Any]] = None  # the open build's memo; None outside reading_once()


@contextmanager
def reading_once() -> Iterator[None]:
    """Memoise the readers of this module until the block ends (a nested block shares the outer memo)."""
    global _active
    outer = _active
    if outer is None:
        _active = {}
    try:
        yield
    finally:
        _active = outer


def _signature(path: Path) -> Optional[FileSignature]:
    try:
        st = os.stat(path)
    except OSError:
        return None  # missing: the plain reader raises its error naming the file and the fix
    return (str(path), st.st_size, st.st_mtime_ns, st.st_ino)


def _remember(key: tuple, compute: Callable[[], T]) -> T:
    assert _active is not None
    if key not in _active:
        _active[key] = compute()  # an exception propagates and nothing is kept
    return _active[key]


def _result_json(json_path: Path) -> Optional[tuple[FileSignature, dict]]:
    """The result JSON as it is now (its signature and content), or None if it cannot be read."""
    sig = _signature(Path(json_path))
    if sig is None:
        return None
    try:
        return sig, _remember(("json", sig), lambda: json.loads(Path(json_path).read_text()))
    except (OSError, ValueError):
        return None


def read_predictions(json_path: Path) -> pd.DataFrame:
    """:func:`dermbench.run.results.read_predictions` (sha256 checked), read once per build."""
    if _active is None:
        return store_files.read_predictions(json_path)
    stored = _result_json(json_path)
    name = ((stored[1].get("predictions") or {}).get("path") if stored else None)
    data_sig = _signature(Path(json_path).parent / name) if name else None
    if data_sig is None:
        return store_files.read_predictions(json_path)  # raises the error naming the file and the fix
    frame = _remember(("predictions", stored[0], data_sig), lambda: store_files.read_predictions(json_path))
    return frame.copy()


def read_table(json_path: Path, name: str) -> Optional[pd.DataFrame]:
    """:func:`dermbench.run.results.read_table` (sha256 checked), read once per build."""
    if _active is None:
        return store_files.read_table(json_path, name)
    stored = _result_json(json_path)
    if stored is None:
        return store_files.read_table(json_path, name)
    entry = (stored[1].get("tables") or {}).get(name)
    data_sig = _signature(Path(json_path).parent / entry["path"]) if entry and entry.get("path") else ("none",)
    if data_sig is None:
        return store_files.read_table(json_path, name)
    frame = _remember(("table", name, stored[0], data_sig), lambda: store_files.read_table(json_path, name))
    return None if frame is None else frame.copy()


def read_bootstrap(results_dir: Path, record: dict[str, Any]) -> np.ndarray:
    """:func:`dermbench.run.results.read_bootstrap`, read once per build (the array is read-only)."""
    path = (record.get("bootstrap") or {}).get("path")
    sig = _signature(Path(results_dir) / path) if path and _active is not None else None
    if sig is None:
        return store_files.read_bootstrap(results_dir, record)  # no memo, or a missing file: its named error

    def load() -> np.ndarray:
        idx = store_files.read_bootstrap(results_dir, record)
        idx.setflags(write=False)
        return idx

    return _remember(("bootstrap", sig), load)


def memoised(what: str, results_dir: Path, record: dict[str, Any], compute: Callable[[], T]) -> T:
    """``compute()`` once per build for this result as its files are now (JSON, predictions, bootstrap):
    for what is derived from those files alone, e.g. the bootstrap replicates of its metrics. Arrays in
    a returned dict are made read-only, as the value is shared by every caller."""
    if _active is None:
        return compute()
    sigs = [_signature(Path(record["_path"]))]
    predictions = (record.get("predictions") or {}).get("path")
    sigs.append(_signature(Path(record["_path"]).parent / predictions) if predictions else ("none",))
    boot = (record.get("bootstrap") or {}).get("path")
    sigs.append(_signature(Path(results_dir) / boot) if boot else ("none",))
    if any(s is None for s in sigs):
        return compute()  # a file is missing: no memo, the computation raises or reports it

    def compute_frozen() -> T:
        value = compute()
        for array in (value.values() if isinstance(value, dict) else ()):
            if isinstance(array, np.ndarray):
                array.setflags(write=False)
        return value

    return _remember((what, *sigs), compute_frozen)
