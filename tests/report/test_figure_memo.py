"""The figure memo (dermbench.report.figures.memoized_svg): equal data and code give the drawn bytes back
without drawing; any change of data or code draws again; what it cannot key exactly is drawn every time."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dermbench.report import figures as F

MODELS = ["a", "b"]
TASKS = ["t1", "t2"]
VALUES = {("a", "t1"): 0.81, ("a", "t2"): 0.62, ("b", "t1"): 0.74, ("b", "t2"): math.nan}


@pytest.fixture(autouse=True)
def private_memo(tmp_path, monkeypatch):
    monkeypatch.setenv("DERMBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "figures"


def _heatmap(values=VALUES, title="linear · AUROC"):
    return F.heatmap_svg(title, MODELS, TASKS, ["Task 1", "Task 2"], values, "AUROC")


def _memo_files(folder):
    return sorted(folder.rglob("*.svg")) if folder.exists() else []


def test_a_second_call_returns_the_drawn_bytes_without_drawing(private_memo, monkeypatch):
    first = _heatmap()
    assert first.startswith(b"<?xml") and len(_memo_files(private_memo)) == 1
    assert first == F.heatmap_svg.uncached("linear · AUROC", MODELS, TASKS, ["Task 1", "Task 2"], VALUES, "AUROC")

    def no_drawing(draw):
        raise AssertionError("drew a figure the memo holds")

    monkeypatch.setattr(F, "_with_rc", no_drawing)
    assert _heatmap(dict(VALUES)) == first  # an equal (not the same) dict


def test_any_change_of_the_data_draws_again(private_memo):
    base = _heatmap()
    changed = {**VALUES, ("a", "t1"): 0.81 + 1e-12}
    assert F.memo_key(F.heatmap_svg.uncached, ("x", MODELS, TASKS, TASKS, VALUES, "AUROC"), {}) != \
        F.memo_key(F.heatmap_svg.uncached, ("x", MODELS, TASKS, TASKS, changed, "AUROC"), {})
    other = _heatmap(title="linear · F1")
    assert other != base and len(_memo_files(private_memo)) == 2
    # same values, other types or order: other keys (an int is not a float, a list is not a tuple)
    keys = {F.memo_key(F.heatmap_svg.uncached, (v,), {}) for v in (1, 1.0, "1", [1.0], (1.0,), {"a": 1, "b": 2},
                                                                  {"b": 2, "a": 1}, np.float32(1.0), np.array([1.0]),
                                                                  np.array([1.0], dtype=np.float32))}
    assert len(keys) == 9  # np.float32(1.0) is keyed as the Python float 1.0 it equals exactly


def test_frames_and_arrays_are_keyed_by_their_content():
    frame = pd.DataFrame({"confidence": [0.1, 0.5], "accuracy": [0.0, 1.0]})
    key = F.memo_key(F.heatmap_svg.uncached, (frame,), {})
    assert key == F.memo_key(F.heatmap_svg.uncached, (frame.copy(),), {})
    edited = frame.copy()
    edited.loc[1, "accuracy"] = 0.5
    assert key != F.memo_key(F.heatmap_svg.uncached, (edited,), {})
    assert key != F.memo_key(F.heatmap_svg.uncached, (frame.rename(columns={"accuracy": "acc"}),), {})


def test_an_argument_it_cannot_key_is_drawn_every_time(private_memo):
    class Opaque:
        pass

    assert F.memo_key(F.heatmap_svg.uncached, (Opaque(),), {}) is None
    calls = []

    @F.memoized_svg
    def figure(thing):
        calls.append(thing)
        return b"<svg/>"

    assert figure(Opaque()) == b"<svg/>" and figure(Opaque()) == b"<svg/>"
    assert len(calls) == 2 and not _memo_files(private_memo)


def test_the_key_follows_the_code(tmp_path):
    module = tmp_path / "figure_module.py"
    module.write_text("def f():\n    return 1\n")
    before = F._code_digest(str(module))
    F._code_digest.cache_clear()
    module.write_text("def f():\n    return 2\n")
    assert F._code_digest(str(module)) != before
    # two figure functions with the same arguments never share an entry
    assert F.memo_key(F.heatmap_svg.uncached, ("x",), {}) != F.memo_key(F.bars_svg.uncached, ("x",), {})


def test_an_unwritable_cache_only_loses_the_speed_up(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("DERMBENCH_CACHE", str(blocker))
    assert _heatmap() == F.heatmap_svg.uncached("linear · AUROC", MODELS, TASKS, ["Task 1", "Task 2"], VALUES, "AUROC")
