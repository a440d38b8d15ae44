"""dermbench.progress: when a bar is drawn (quiet, terminal or not, DERMBENCH_PROGRESS) and what it shows."""
from __future__ import annotations

import io

import pytest

from dermbench.progress import ENV_VAR, beside_bars, progress_bar, progress_enabled, step_name


class Terminal(io.StringIO):
    """A stream that says it is a terminal (stderr of an interactive shell)."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


def test_bars_only_on_a_terminal_by_default():
    assert progress_enabled(stream=Terminal()) is True
    assert progress_enabled(stream=io.StringIO()) is False  # a log file, CI, a pipe


def test_quiet_wins_over_a_terminal_and_over_forcing(monkeypatch):
    assert progress_enabled(False, stream=Terminal()) is False
    monkeypatch.setenv(ENV_VAR, "1")
    assert progress_enabled(False, stream=Terminal()) is False


@pytest.mark.parametrize("value, terminal, expected", [
    ("1", False, True), ("true", False, True), ("ON", False, True),  # forced on without a terminal
    ("0", True, False), ("no", True, False),  # forced off on a terminal
])
def test_environment_forces_bars_on_or_off(monkeypatch, value, terminal, expected):
    monkeypatch.setenv(ENV_VAR, value)
    assert progress_enabled(stream=Terminal() if terminal else io.StringIO()) is expected


def test_an_unknown_environment_value_warns_and_is_ignored(monkeypatch, capsys):
    import re

    import dermbench.progress

    monkeypatch.setattr(dermbench.progress, "_warned_values", set())
    monkeypatch.setenv(ENV_VAR, "sometimes")
    assert progress_enabled(stream=io.StringIO()) is False
    assert re.search(r"warning: DERMBENCH_PROGRESS='sometimes': expected 1 .* or 0", capsys.readouterr().err)
    assert progress_enabled(stream=Terminal()) is True  # warned once; the terminal rule applies


def test_forced_bar_goes_to_stderr_with_step_count_and_rate(monkeypatch, capsys):
    monkeypatch.setenv(ENV_VAR, "1")
    assert list(progress_bar(range(5), step=("ph2-seg", "seg-upernet", "train"), unit="step")) == list(range(5))
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout stays for results
    last = captured.err.replace("\r", "\n").strip().splitlines()[-1]  # the final state stays in a log
    assert last.startswith("ph2-seg · seg-upernet · train: 100%")
    assert "5/5 [" in last and "step/s]" in last


def test_no_bar_when_stderr_is_not_a_terminal_or_quiet(monkeypatch, capsys):
    assert list(progress_bar(range(3), step="data check")) == [0, 1, 2]  # pytest's stderr is no terminal
    monkeypatch.setenv(ENV_VAR, "1")
    with progress_bar(total=3, step="data check", enabled=False) as bar:  # --quiet
        bar.update(3)
    assert capsys.readouterr().err == ""


def test_log_lines_beside_a_bar(monkeypatch, capsys):
    monkeypatch.setenv(ENV_VAR, "1")
    lines = []
    with progress_bar(total=2, step="pretrain") as bar:
        say = beside_bars(lines.append)
        bar.update()
        say("iteration 1 total 0.5")
        bar.update()
    assert lines == ["iteration 1 total 0.5"]
    assert "pretrain: 100%" in capsys.readouterr().err


def test_step_name_skips_empty_parts():
    assert step_name("ph2-seg", None, "", "seg-linear", "train") == "ph2-seg · seg-linear · train"


def test_a_terminal_gets_a_bar_that_is_removed_when_done(monkeypatch):
    import sys

    terminal = Terminal()  # reports no size, like a pty opened without one: the bar falls back to 100 columns
    monkeypatch.setattr(sys, "stderr", terminal)
    for _ in progress_bar(range(3), step=("isic2018", "seg-linear", "predict"), unit="img", mininterval=0):
        pass
    frames = terminal.getvalue().split("\r")
    assert any(f.startswith("isic2018 · seg-linear · predict: 100%") and "3/3 [" in f for f in frames), frames
    assert frames[-1].strip() == ""  # cleared: the terminal shows the results, not finished bars
