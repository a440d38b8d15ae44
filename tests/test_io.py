"""dermbench.io: folders built once by concurrent processes."""
from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from dermbench.io import build_folder_once


def _build_slowly(tmp: Path, log: Path) -> None:
    with open(log, "a") as fh:  # one line per build that ran
        fh.write(f"{tmp.name}\n")
    time.sleep(0.5)  # long enough for the other process to arrive while this one builds
    (tmp / "payload.txt").write_text("built")
    (tmp / "DONE.json").write_text("{}")


def _want(target: str, log: str, started) -> None:
    started.set()
    build_folder_once(Path(target), "DONE.json", lambda tmp: _build_slowly(tmp, Path(log)))


def test_a_folder_two_processes_want_at_once_is_built_once(tmp_path):
    target, log = tmp_path / "cache" / "v1", tmp_path / "builds.log"
    ctx = multiprocessing.get_context("fork")
    first_started, second_started = ctx.Event(), ctx.Event()
    first = ctx.Process(target=_want, args=(str(target), str(log), first_started))
    first.start()
    assert first_started.wait(10)
    time.sleep(0.1)  # the first is inside its build (0.5 s) when the second asks
    second = ctx.Process(target=_want, args=(str(target), str(log), second_started))
    second.start()
    for p in (first, second):
        p.join(20)
        assert p.exitcode == 0
    assert len(log.read_text().splitlines()) == 1  # the second used the first's folder
    assert (target / "payload.txt").read_text() == "built"
    assert not list(target.parent.glob(".tmp-*"))  # no half-built copy left behind
    # a later call finds the folder and builds nothing
    assert build_folder_once(target, "DONE.json", lambda tmp: _build_slowly(tmp, log)) == target
    assert len(log.read_text().splitlines()) == 1


def test_a_builder_that_died_is_taken_over(tmp_path):
    """A claim left by a builder killed mid-build (its pid gone) does not make the next process wait forever."""
    from dermbench import claims

    target, log = tmp_path / "cache" / "v1", tmp_path / "builds.log"
    ctx = multiprocessing.get_context("fork")
    dead = ctx.Process(target=claims.try_claim, args=(target.parent / ".claims", target.name))
    dead.start()
    dead.join(10)  # it claimed the folder and exited without building or releasing
    assert (target.parent / ".claims" / f"{target.name}.claim").is_file()
    started = time.monotonic()
    assert build_folder_once(target, "DONE.json", lambda tmp: _build_slowly(tmp, log)) == target
    assert time.monotonic() - started < 10 and (target / "payload.txt").read_text() == "built"
    assert not list((target.parent / ".claims").glob("*.claim"))  # released
