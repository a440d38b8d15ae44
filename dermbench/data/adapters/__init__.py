"""Dataset adapters: one module per public dataset, plus the generic manifest.

An adapter is a function ``load(root: Path, card: TaskCard) -> TaskData`` registered
with :func:`adapter`. ``root`` is the dataset's folder (found under the data root by
the card's ``folders``); the adapter tolerates the known variants of the official
layout (an extra or missing top level, letter case, older column names).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from dermbench.data.sample import TaskData

if TYPE_CHECKING:
    from dermbench.data.tasks import TaskCard

Loader = Callable[[Path, "TaskCard"], TaskData]
_ADAPTERS: dict[str, Loader] = {}

# adapter key -> module that registers it (imported on first use)
_MODULES = {
    "ddi": "ddi",
    "fitzpatrick17k": "fitzpatrick17k",
    "mednode": "mednode",
    "ph2": "ph2",
    "acne04": "acne04",
    "derm7pt": "derm7pt",
    "skincap": "skincap",
    "isic2016": "isic",
    "isic2017": "isic",
    "isic2018": "isic",
    "waterloo": "waterloo",
    "manifest": "manifest",
    "federated": "federated",
}


def adapter(key: str) -> Callable[[Loader], Loader]:
    def decorator(fn: Loader) -> Loader:
        _ADAPTERS[key] = fn
        return fn

    return decorator


def get_adapter(key: str) -> Loader:
    if key not in _ADAPTERS:
        if key not in _MODULES:
            raise KeyError(f"unknown dataset adapter {key!r}; known: {', '.join(sorted(_MODULES))}")
        importlib.import_module(f"dermbench.data.adapters.{_MODULES[key]}")
    return _ADAPTERS[key]
