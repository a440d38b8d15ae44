"""Progress bars for every long step (tqdm), shown to a person at a terminal and nowhere else.

Every loop that may run for more than a few seconds (feature extraction, segmentation and captioning
heads, federated rounds, pretraining, DermSynth generation, ``data check``) draws its bar through
:func:`progress_bar`, so all bars look alike: on stderr, named by the step
(``ph2-seg · seg-upernet · train``), with the count, the rate and the time left.

When a bar is drawn (:func:`progress_enabled`):

- never when the caller asks for silence (``--quiet``: ``requested=False``);
- ``DERMBENCH_PROGRESS=1`` draws bars even when stderr is not a terminal (a log file, CI), and
  ``DERMBENCH_PROGRESS=0`` never draws them;
- otherwise only when stderr is a terminal, so logs and CI output stay clean.

A bar only counts: it draws no random numbers and reads nothing the loop computes, so the numbers
of a run are the same with and without bars.
"""
from __future__ import annotations

import os
import sys
import warnings
from typing import Any, Callable, Iterable, Optional, TextIO, Union

ENV_VAR = "DERMBENCH_PROGRESS"
SEPARATOR = " · "
_ON = ("1", "true", "yes", "on")
_OFF = ("0", "false", "no", "off")
_warned_values: set[str] = set()


def _forced() -> Optional[bool]:
    """True/False when ``DERMBENCH_PROGRESS`` forces bars on/off; None when it is unset (or not understood)."""
    raw = os.environ.get(ENV_VAR, "")
    value = raw.strip().lower()
    if not value:
        return None
    if value in _ON:
        return True
    if value in _OFF:
        return False
    if raw not in _warned_values:  # say it once per value, then behave as if it were unset
        _warned_values.add(raw)
        # a plain line on stderr, not warnings.warn: a user sees it once, without a Python source line
        print(f"warning: {ENV_VAR}={raw!r}: expected 1 (bars even without a terminal) or 0 (no bars); "
              f"ignoring it (bars only when stderr is a terminal)", file=sys.stderr)
    return None


def _is_terminal(stream: Optional[TextIO]) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # a closed or wrapped stream without a terminal behind it
        return False


def _has_width(stream: TextIO) -> bool:
    """Whether a terminal reports its width (a pty opened without a size reports 0 columns, and tqdm
    would then fit the bar into nothing)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns > 0
    except (AttributeError, OSError, ValueError):
        return False


def progress_enabled(requested: bool = True, stream: Optional[TextIO] = None) -> bool:
    """Whether to draw a bar on ``stream`` (default: the current stderr); see the module docstring."""
    if not requested:
        return False
    forced = _forced()
    if forced is not None:
        return forced
    return _is_terminal(sys.stderr if stream is None else stream)


def step_name(*parts: Any) -> str:
    """``ph2-seg · seg-upernet · train`` from its non-empty parts."""
    return SEPARATOR.join(str(p) for p in parts if p is not None and str(p) != "")


def progress_bar(iterable: Optional[Iterable] = None, *, step: Union[str, tuple, list], total: Optional[float] = None,
                 unit: str = "it", enabled: bool = True, leave: bool = False, **options: Any):
    """A tqdm bar on stderr named ``step`` (a string, or parts joined by :func:`step_name`).

    ``enabled=False`` (the caller's ``--quiet`` or ``progress`` flag) or :func:`progress_enabled` saying no
    gives a disabled bar: the same object, iterating and updating at no cost and drawing nothing. On a
    terminal a finished bar is removed (``leave``); written to a file (forced by ``DERMBENCH_PROGRESS=1``)
    the last state of every bar stays, one line each, so the log shows what ran and how fast.
    ``options`` go to tqdm (``postfix``, ``unit_scale``, ``position``...).
    """
    from tqdm import tqdm

    stream = sys.stderr  # looked up now, so a redirected or captured stderr is honoured
    name = step if isinstance(step, str) else step_name(*step)
    terminal = _is_terminal(stream)
    if not terminal:
        # A log has no cursor: nested bars (data check's tasks and images) all draw on the current line
        # instead of moving up and down with escape codes, and each leaves its last state as one line.
        options.setdefault("position", 0)
        leave = True
    dynamic = terminal and _has_width(stream)
    if not dynamic:
        # a log, or a terminal that does not say its size (tqdm would take 0 x 0 and draw nothing)
        options.setdefault("ncols", 100)
        options.setdefault("nrows", 50)
    return tqdm(iterable, total=total, desc=name, unit=unit, file=stream,
                disable=not progress_enabled(enabled, stream), leave=leave, dynamic_ncols=dynamic, **options)


def beside_bars(log: Callable[[str], None]) -> Callable[[str], None]:
    """``log`` wrapped so that its lines do not tear a bar apart: bars are cleared, the line is written,
    and the bars are redrawn below it (tqdm's ``external_write_mode``)."""
    from tqdm import tqdm

    def write(message: str) -> None:
        with tqdm.external_write_mode():
            log(message)

    return write
