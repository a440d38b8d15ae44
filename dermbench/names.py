"""Names a user types (models, tasks, protocols, settings): the close one to suggest when a name is unknown.

Layer 0: imports nothing of dermbench.
"""
from __future__ import annotations

import difflib
from typing import Iterable


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'dinov2'?)`` for a name close to one of ``choices`` (letter case ignored), else ``""``."""
    choices = list(choices)
    by_folded = {c.casefold(): c for c in choices}
    close = difflib.get_close_matches(str(name).casefold(), list(by_folded), n=1)
    return f" (did you mean {by_folded[close[0]]!r}?)" if close else ""
