"""Results store: atomic writes, finished-result detection, tamper detection."""
from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from dermbench import io as dio
from dermbench.run.results import is_finished, iter_results, read_predictions, result_paths, write_result


def _record():
    return {"model": "m", "task": "ddi", "protocol": "linear", "metrics": {"auroc": {"value": 0.5}}}


def test_write_then_finished_then_tamper(tmp_path):
    preds = pd.DataFrame({"sample_id": ["a", "b"], "label": [0, 1], "pred": [0, 1], "score_0": [0.9, 0.2], "score_1": [0.1, 0.8]})
    assert not is_finished(tmp_path, "m", "ddi", "linear")
    path = write_result(tmp_path, _record(), preds)
    assert is_finished(tmp_path, "m", "ddi", "linear")
    rec = json.loads(path.read_text())
    assert rec["predictions"]["path"] == "linear.predictions.csv" and rec["schema"] == 1
    pd.testing.assert_frame_equal(read_predictions(path), preds)
    assert [r["task"] for r in iter_results(tmp_path)] == ["ddi"]
    # a modified predictions file no longer counts as finished, and reading it is refused
    p = result_paths(tmp_path, "m", "ddi", "linear")["predictions"]
    p.write_text(p.read_text().replace("0.9", "0.7"))
    assert not is_finished(tmp_path, "m", "ddi", "linear")
    with pytest.raises(ValueError, match="does not match the sha256"):
        read_predictions(path)


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    dio.atomic_write_text(target, "old")

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        dio.atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left behind


def test_json_written_after_predictions(tmp_path, monkeypatch):
    """An interruption between the two writes leaves no JSON: the result is not 'finished'."""
    preds = pd.DataFrame({"sample_id": ["a"], "label": [0], "pred": [0], "score_0": [1.0]})
    calls = []
    real = dio.atomic_write_bytes

    def record_then_fail(path, data):
        calls.append(path.name)
        if path.suffix == ".json":
            raise KeyboardInterrupt
        real(path, data)

    monkeypatch.setattr("dermbench.run.results.atomic_write_bytes", record_then_fail)
    monkeypatch.setattr("dermbench.io.atomic_write_bytes", record_then_fail)
    with pytest.raises(KeyboardInterrupt):
        write_result(tmp_path, _record(), preds)
    assert calls[0].endswith(".predictions.csv")
    assert not is_finished(tmp_path, "m", "ddi", "linear")


def test_written_files_follow_the_umask_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        dio.atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644


def test_stored_predictions_round_trip_exactly(tmp_path):
    import numpy as np

    from dermbench.run.results import as_stored

    rng = np.random.default_rng(0)
    preds = pd.DataFrame({"sample_id": ["001", "b"], "label": [0, 1], "dice": rng.random(2), "group_sex": ["f", None]})
    stored = as_stored(preds)  # what the runner scores
    path = write_result(tmp_path, _record(), preds)
    pd.testing.assert_frame_equal(read_predictions(path), stored)  # what a rebuild scores
    assert list(stored["sample_id"]) == ["001", "b"] and np.allclose(stored["dice"], preds["dice"], rtol=1e-9)
