"""What every protocol receives and returns.

A protocol trains/evaluates a head on frozen features and returns *per-sample
predictions*; metrics, bootstrap intervals and every table are computed from those
predictions by :mod:`dermbench.stats.evaluation`, so any number can be recomputed later
from the stored files alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pandas as pd

from dermbench.data.sample import Sample, TaskData
from dermbench.data.splits import Split
from dermbench.data.tasks import TaskCard
from dermbench.names import did_you_mean

# Families of per-sample predictions; each has its metrics in dermbench.stats.evaluation.
#  classification: columns sample_id, label, pred, score_0..score_{C-1}
#  segmentation:   columns sample_id, dice, jaccard, tp, fp, fn, tn (lesion-class pixel counts)
#  caption:        columns sample_id, reference, generated, and one column per per-sample metric
KINDS = ("classification", "segmentation", "caption")


@dataclass
class RunContext:
    card: TaskCard
    data: TaskData
    split: Split
    get_backbone: Callable[[], Any]  # lazy: builds the FrozenBackbone on first call
    features: Any  # dermbench.features.FeatureCache
    seed: int
    device: str
    config: dict[str, Any]  # this protocol's resolved hyper-parameters (defaults + overrides)
    artifacts_dir: Path  # <output>/<model>/<task>/<protocol>.artifacts/ for figures, masks...
    progress: bool = True
    # Another task's (data, split) by name, as the runner loads them (the transfer protocol trains on one
    # task and tests on another); None outside the runner.
    load_task: Optional[Callable[[str], tuple[TaskData, Split]]] = None

    @property
    def train(self) -> list[Sample]:
        return self.split.select(self.data, "train")

    @property
    def test(self) -> list[Sample]:
        return self.split.select(self.data, "test")


@dataclass
class ProtocolOutput:
    predictions: pd.DataFrame
    kind: str  # one of KINDS
    n_train: int
    n_test: int
    info: dict[str, Any] = field(default_factory=dict)  # training curves, skipped metrics, notes
    artifacts: list[str] = field(default_factory=list)  # relative to the result folder
    # Further per-sample tables stored beside the predictions as <protocol>.<name>.csv (e.g. "calibration":
    # held-out training-split scores for temperature scaling and operating-point thresholds).
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


class Protocol:
    """Base: subclasses set name/kind/defaults and implement run()."""

    name: str = ""
    kind: str = "classification"
    # Bumped whenever a change to the protocol would change its numbers: part of every result's key,
    # so results of an older version are recomputed beside the old ones, never mistaken for new ones.
    VERSION: int = 1
    defaults: dict[str, Any] = {}
    # Modules the protocol needs beyond the core install, and the pip extra that provides them;
    # checked before running so that a missing extra is a clear skip, not a traceback.
    requires: tuple[str, ...] = ()
    extra: str = ""
    # The (kind, view) features the protocol reads from ctx.features; the runner extracts them for all of
    # a task's protocols in one pass (one decode per image) before they run. Most read global 'eval' ones.
    feature_requests: tuple[tuple[str, str], ...] = (("global", "eval"),)

    def applies_to(self, card: TaskCard) -> bool:
        return self.name in card.protocols

    def accepts(self, card: TaskCard) -> bool:
        """Whether the protocol may run on a task whose card does not list it, when the user asks for it
        by name (``--protocol``). Off by default: a card's protocols are the benchmark's definition."""
        return False

    def feature_needs(self) -> tuple[tuple[str, str], ...]:
        """The frozen features run() reads, as (kind, view) pairs of :class:`dermbench.features.FeatureCache`.
        The run plan extracts them in a job of their own (on GPUs) before the protocol runs (on CPUs)."""
        return (("global", "eval"),)

    def data_defaults(self, data: TaskData) -> dict[str, Any]:
        """Settings whose default depends on the data (applied before the user's overrides)."""
        return {}

    def resolve_config(self, overrides: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        cfg = dict(self.defaults)
        for k, v in (overrides or {}).items():
            if k not in cfg:
                raise KeyError(f"--set {self.name}.{k}: protocol {self.name!r} has no setting {k!r}"
                               f"{did_you_mean(k, cfg)}; settings: {', '.join(sorted(cfg))}")
            cfg[k] = _coerce(self.name, k, cfg[k], v)
            _check_range(self.name, k, cfg[k])
        return cfg

    def bootstrap_strata(self, predictions) -> Any:
        """One label per test sample, in test order, for the task's shared stratified resamples.
        Protocols whose predictions hold several blocks per test sample (label efficiency) override it."""
        return predictions["label"].to_numpy()

    def run(self, ctx: RunContext) -> ProtocolOutput:  # pragma: no cover - interface
        raise TypeError(f"protocol {self.name!r} does not implement run()")


_KIND_NAMES = {int: "an integer", float: "a number", str: "a string"}
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}

# Settings that only make sense in a range, by name across protocols: a head trained for 0 or -5
# epochs, a batch of 0 or a learning rate of 0 would store an untrained head as a result.
_AT_LEAST_ONE = ("epochs", "batch_size", "k", "repeats", "rounds", "local_epochs", "clients", "n_image_tokens",
                 "lora_r", "max_new_tokens", "upernet_channels")
_POSITIVE_PREFIXES = ("lr",)
_UNIT_INTERVAL = ("dropout", "lora_dropout")


def _check_range(protocol: str, key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if (key in _AT_LEAST_ONE or key.endswith("_epochs") or "batch_size" in key) and value < 1:
        raise ValueError(f"--set {protocol}.{key}={value}: must be at least 1")
    if any(key == p or key.startswith(p + "_") for p in _POSITIVE_PREFIXES) and not value > 0:
        raise ValueError(f"--set {protocol}.{key}={value}: a learning rate must be greater than 0")
    if key in _UNIT_INTERVAL and not 0 <= value < 1:
        raise ValueError(f"--set {protocol}.{key}={value}: must lie in [0, 1)")


def _coerce(protocol: str, key: str, default: Any, value: Any) -> Any:
    """Cast a command-line override (usually a string) to the type of the default.

    bool needs its own rule: ``bool("false")`` is True, which would silently flip a switch.
    """
    if default is None or isinstance(default, (list, tuple)) or not isinstance(value, str):
        return value
    if isinstance(default, bool):
        low = value.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"--set {protocol}.{key}={value}: expected true or false (or 1/0, yes/no, on/off), got {value!r}")
    try:
        return type(default)(value)
    except ValueError as exc:
        raise ValueError(f"--set {protocol}.{key}={value}: expected {_KIND_NAMES.get(type(default), type(default).__name__)}, "
                         f"got {value!r}") from exc
