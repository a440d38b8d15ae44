"""Results store: atomic writes, finished-result detection, tamper detection."""
from __future__ import annotations

import json
import os
import shutil

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
    assert rec["predictions"]["path"] == "linear.predictions.csv" and rec["schema"] == "dermbench.result/1"
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


# --- the schema marker, files that are not results, missing files (issue #16) ----------------------
def _keyed_record(tmp_path, key="a" * 64):
    preds = pd.DataFrame({"sample_id": ["a", "b"], "label": [0, 1], "pred": [0, 1], "score_0": [0.9, 0.2], "score_1": [0.1, 0.8]})
    boot = tmp_path / "_bootstrap" / "ddi.split.seed0.strat.B2.npy"
    boot.parent.mkdir(parents=True, exist_ok=True)
    import numpy as np

    np.save(boot, np.array([[0, 1], [1, 1]]))
    record = {**_record(), "result_key": key, "identity": {"backbone": "m", "head_seed": 0, "split_seed": 0, "n_boot": 2},
              "bootstrap": {"path": "_bootstrap/ddi.split.seed0.strat.B2.npy", "n_boot": 2}}
    return write_result(tmp_path, record, preds), boot


def test_results_carry_the_schema_marker_and_older_results_are_still_read(tmp_path):
    from dermbench.run.results import SCHEMA

    path, _ = _keyed_record(tmp_path)
    assert json.loads(path.read_text())["schema"] == SCHEMA == "dermbench.result/2"
    # a result written before the marker (an integer schema, or none): read by its keys
    for name, schema in (("retrieval", 2), ("seg-linear", None)):
        old = {**_record(), "protocol": name, **({"schema": schema} if schema else {})}
        (tmp_path / "m" / "ddi" / f"{name}.json").write_text(json.dumps(old))
    assert sorted(r["protocol"] for r in iter_results(tmp_path)) == ["linear", "retrieval", "seg-linear"]


def test_truncated_stray_and_newer_jsons_are_skipped_and_named(tmp_path, capsys):
    from dermbench.run.results import forget_warnings

    path, _ = _keyed_record(tmp_path)
    folder = path.parent
    (folder / "retrieval@bbbbbbbbbbbb.json").write_text(path.read_text()[:57])  # an interrupted copy
    (folder / "notes.json").write_text('{"todo": "rerun ddi"}')
    (folder / "list.json").write_text("[1, 2]")
    (folder / "future.json").write_text(json.dumps({**_record(), "schema": "dermbench.result/9"}))
    (folder / "latin1.json").write_bytes(b'{"model": "\xe9"}')
    skipped = []
    assert [r["protocol"] for r in iter_results(tmp_path, skipped)] == ["linear"]
    reasons = {s.path.name: s.reason for s in skipped}
    assert set(reasons) == {"retrieval@bbbbbbbbbbbb.json", "notes.json", "list.json", "future.json", "latin1.json"}
    assert "unreadable JSON" in reasons["retrieval@bbbbbbbbbbbb.json"] and "re-run that cell" in reasons["retrieval@bbbbbbbbbbbb.json"]
    assert "not a dermbench result" in reasons["notes.json"] and "not a dermbench result" in reasons["list.json"]
    assert "newer" in reasons["future.json"] and "not UTF-8" in reasons["latin1.json"]
    assert capsys.readouterr().err == ""  # collected, not printed
    # without a list: one warning line per file on stderr, once per process until forgotten
    forget_warnings()
    list(iter_results(tmp_path))
    list(iter_results(tmp_path))
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 5 and all(line.startswith("warning: skipped ") for line in err)
    assert any(str(folder / "notes.json") in line for line in err)


def test_a_truncated_json_or_a_deleted_bootstrap_file_is_not_finished(tmp_path):
    path, boot = _keyed_record(tmp_path)
    assert is_finished(tmp_path, "m", "ddi", "linear", "a" * 64)
    boot.unlink()
    assert not is_finished(tmp_path, "m", "ddi", "linear", "a" * 64)  # `run` recomputes it, redrawing the resamples
    _keyed_record(tmp_path)
    path.write_text(path.read_text()[:40])
    assert not is_finished(tmp_path, "m", "ddi", "linear", "a" * 64)
    path.write_text("[]")
    assert not is_finished(tmp_path, "m", "ddi", "linear", "a" * 64)


def test_missing_files_name_themselves_and_the_run_line_that_remakes_them(tmp_path):
    from dermbench.run.results import MissingResultFile, read_bootstrap, rerun_command

    path, boot = _keyed_record(tmp_path)
    record = {**json.loads(path.read_text()), "_path": str(path)}
    record["identity"].update(overrides={"epochs": "5", "fractions": [0.2, 1.0], "save_masks": True},
                              split_mode="official", head_seed=2)  # flat: the runner stores the protocol's own
    record["provenance"] = {"config": {"weights": "/w/my weights.pt"}}
    record["data"] = {"root": "/data/derm"}
    line = rerun_command(record)
    assert line == (f"dermbench run --model m --task ddi --protocol linear --weights '/w/my weights.pt' --data-root /data/derm "
                    f"--results {tmp_path} --seed 2 --split-seed 0 --n-boot 2 --split official --set linear.epochs=5 "
                    f"--set linear.fractions=0.2,1.0 --set linear.save_masks=true")
    assert read_bootstrap(tmp_path, record).shape == (2, 2)
    boot.unlink()
    with pytest.raises(MissingResultFile) as exc:
        read_bootstrap(tmp_path, record)
    assert str(boot) in str(exc.value) and str(path) in str(exc.value) and "dermbench run --model m" in str(exc.value)
    (path.parent / "linear@aaaaaaaaaaaa.predictions.csv").unlink()
    with pytest.raises(MissingResultFile, match="predictions file .*linear@aaaaaaaaaaaa.predictions.csv"):
        read_predictions(path)


# --- provenance of an installation without a git checkout ------------------------------------------
def test_provenance_of_a_tree_without_git_is_its_version_and_source_sha256(tmp_path):
    from dermbench.run.results import SOURCE_ROOT, git_state, source_sha256

    copy = tmp_path / "site-packages"
    # a wheel's layout: the package's sources and its task cards as plain files (the link followed)
    shutil.copytree(SOURCE_ROOT / "dermbench", copy / "dermbench", ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "dermbench" / "notes.txt").write_text("not a source file")
    state = git_state(copy)
    assert state["git_commit"] is None and state["git_dirty"] is None and state["source"] == "installed package"
    assert state["package_version"] and len(state["source_sha256"]) == 64
    n_py = len(list((SOURCE_ROOT / "dermbench").rglob("*.py")))
    n_cards = len(list((SOURCE_ROOT / "dermbench" / "data" / "task_cards").glob("*.toml")))
    assert n_cards > 10 and state["source_files"] == n_py + n_cards
    # the same sources hash the same wherever they are installed; any change to a source or a task card shows
    assert state["source_sha256"] == source_sha256(SOURCE_ROOT / "dermbench")[0]
    assert git_state(copy) is state  # computed once per process
    card = next((copy / "dermbench" / "data" / "task_cards").glob("*.toml"))
    card.write_text(card.read_text() + "\n# edited\n")
    assert source_sha256(copy / "dermbench")[0] != state["source_sha256"]
    # a checkout still names its commit, and the package hash beside it
    here = git_state()
    assert here["source"] == "git checkout" and len(here["git_commit"]) == 40 and len(here["source_sha256"]) == 64
