"""`dermbench run`: backbones × tasks × protocols → results store.

One loop for every protocol: load the task through its adapter, make (or reuse) the
seeded split, run the protocol on cached frozen features, compute metrics with the
shared bootstrap from the per-sample predictions, write the result atomically.
Every result is stored under its key (:mod:`dermbench.run.identity`: backbone and weights,
task card, data, split, protocol settings and version, head seed, bootstrap replicates); a
result whose key is already finished is skipped unless ``overwrite``, and results of other
settings stay beside it. A failure in one (task, protocol) is reported and the run goes on,
and the run exits non-zero at the end.
"""
from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pandas as pd

from dermbench.models import registry
from dermbench.config import cache_dir, resolve_data_root
from dermbench.data.sample import DatasetError, TaskData
from dermbench.io import ensure_folder, sha256_file
from dermbench.protocols import get_protocol, is_available
from dermbench.protocols.base import RunContext
from dermbench.run.identity import result_identity, result_key
from dermbench.run.results import as_stored, is_finished, now, provenance, result_paths, write_result
from dermbench.data.splits import Split, make_split, write_split
from dermbench.stats.bootstrap import DEFAULT_N_BOOT, bootstrap_seed, shared_bootstrap_indices
from dermbench.data.tasks import TaskCard, get_card, select_tasks


@dataclass
class RunSettings:
    models: list[str]
    tasks: str = "all"
    protocols: Optional[list[str]] = None  # None: every protocol of each task's card
    data_root: Optional[Path] = None
    weights: Optional[str] = None  # None | 'random' | path (applies to every model given)
    output: Optional[Path] = None
    seed: int = 0  # seed of the heads when ``seeds`` is not given
    device: str = "cpu"
    overwrite: bool = False
    n_boot: int = DEFAULT_N_BOOT
    split_mode: str = "default"  # 'default' (card rule) | 'official'
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # protocol -> {setting: value}
    progress: bool = True
    synth_scale: float = 1.0
    seeds: Optional[list[int]] = None  # head seeds: one result per seed, all on the same split (None: [seed])
    split_seed: int = 0  # seed of the split and of the shared bootstrap resamples

    @property
    def head_seeds(self) -> list[int]:
        return list(dict.fromkeys(self.seeds)) if self.seeds else [self.seed]


@dataclass
class Outcome:
    model: str
    task: str
    protocol: str
    status: str  # 'done' | 'skipped' | 'failed'
    message: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    main_metric: str = ""


def default_results_dir(data_root: Optional[Path]) -> Path:
    """results/ for real data, results/dermsynth when running on the embedded DermSynth."""
    return Path("results") if data_root is not None else Path("results") / "dermsynth"


def resolve_device(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda was given but no CUDA device is available; use --device cpu")
    return device


def model_label(key: str, weights: Optional[str]) -> str:
    """Results folder name: the key for default weights, key@random, or key@<sha8> for a weights file."""
    if weights is None:
        return key
    if weights == "random":
        return key if key == "random-vit" else f"{key}@random"
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"--weights {weights}: no such file; give a weights file, 'random', or leave it out")
    return f"{key}@{sha256_file(path)[:8]}"


class TaskCache:
    """Loaded task data and splits, shared by every model of a run."""

    def __init__(self, data_root: Path, results_dir: Path, seed: int, split_mode: str):
        self.data_root = data_root
        self.splits_dir = results_dir / "_splits"
        self.seed = seed  # the split seed
        self.split_mode = split_mode
        self._data: dict[str, TaskData] = {}
        self._splits: dict[str, Split] = {}
        self._hashes: dict[str, str] = {}

    def data_sha256(self, card: TaskCard) -> str:
        """Hash of the task's samples and image contents (part of every result's key)."""
        if card.name not in self._hashes:
            from dermbench.features.cache import _HASHES
            from dermbench.run.identity import data_sha256

            self._hashes[card.name] = data_sha256(self.data(card).samples, _HASHES)
        return self._hashes[card.name]

    def data(self, card: TaskCard) -> TaskData:
        if card.name not in self._data:
            from dermbench.data.adapters import get_adapter
            from dermbench.data.locate import load_task

            if card.adapter == "federated":  # sites are found under the data root itself
                self._data[card.name] = get_adapter("federated")(self.data_root, card)
            else:
                self._data[card.name] = load_task(self.data_root, card)
        return self._data[card.name]

    def split(self, card: TaskCard) -> Split:
        if card.name in self._splits:
            return self._splits[card.name]
        data = self.data(card)
        if self.split_mode == "official" and card.split != "sites":
            split = make_split(data, "official", self.seed)
        elif card.split == "derived":
            split = make_split(data, "derived", self.seed, parent=self.split(get_card(card.split_from)))
        elif card.split == "sites":
            split = self._sites_split(card, data)
        else:
            split = make_split(data, card.split, self.seed, card.train_fraction)
        self._splits[card.name] = write_split(split, self.splits_dir)
        return split

    def _sites_split(self, card: TaskCard, data: TaskData) -> Split:
        """Federated: each site keeps its own task's split; ids are '<site>/<id>'."""
        train, test, notes = [], [], []
        for site in card.sites:
            site_split = self.split(get_card(site))
            train += [f"{site}/{i}" for i in site_split.train]
            test += [f"{site}/{i}" for i in site_split.test]
            notes.append(f"site {site}: split sha256 {site_split.sha256[:12]}")
        have = {s.id for s in data.samples}
        train = sorted(i for i in train if i in have)
        test = sorted(i for i in test if i in have)
        return Split(task=card.name, rule="sites", seed=self.seed, train=train, test=test, notes=notes)


def _with_groups(predictions: pd.DataFrame, data: TaskData) -> pd.DataFrame:
    """Add group_<attribute> columns from the samples, so fairness analyses need only the predictions."""
    by_id = data.by_id()
    keys = sorted({k for s in data.samples for k in s.groups})
    out = predictions.copy()
    for k in keys:
        col = f"group_{k}"
        if col not in out.columns:
            out[col] = [by_id[i].groups.get(k, "unknown") for i in out["sample_id"]]
    return out


def run_benchmark(settings: RunSettings, log: Callable[[str], None] = print) -> list[Outcome]:
    cards = select_tasks(settings.tasks)
    explicit = set(settings.tasks.split(",")) & {c.name for c in cards}
    for p in settings.protocols or []:
        get_protocol(p)  # unknown names fail early with the list of valid ones
    device = resolve_device(settings.device)

    data_root, source = resolve_data_root(settings.data_root)
    if data_root is None:
        from dermbench.data.synth import ensure_dermsynth

        data_root = ensure_dermsynth(scale=settings.synth_scale)
        log(f"No --data-root given: using the embedded synthetic benchmark DermSynth at {data_root}")
    else:
        log(f"Data root: {data_root} (from {source})")
    results_dir = Path(settings.output) if settings.output else default_results_dir(None if source.startswith("default") else data_root)
    ensure_folder(results_dir)  # an unwritable results folder fails here, before any work, naming the path
    log(f"Results: {results_dir}")
    tasks = TaskCache(data_root, results_dir, settings.split_seed, settings.split_mode)
    features = _feature_cache()
    outcomes: list[Outcome] = []

    for key in settings.models:
        entry = registry.get(key)
        label = model_label(key, settings.weights)
        backbone_holder: dict[str, Any] = {}

        def get_backbone(entry=entry, holder=backbone_holder):
            if "bb" not in holder:
                log(f"Building backbone {entry.meta.key} (weights: {settings.weights or 'default'})")
                holder["bb"] = entry.build(weights=settings.weights)
            return holder["bb"]

        for card in cards:
            protocols = [p for p in card.protocols if settings.protocols is None or p in settings.protocols]
            protocols += [p for p in settings.protocols or [] if p not in card.protocols and get_protocol(p).accepts(card)]
            if not protocols:
                if card.name in explicit:  # asked for by name: say why nothing ran
                    log(f"{label} · {card.name}: none of the requested protocols ({', '.join(settings.protocols)}) "
                        f"runs on this task; its card lists: {', '.join(card.protocols)}")
                continue
            for protocol_name in protocols:
                for head_seed in settings.head_seeds:
                    outcome = _run_one(settings, label, entry, get_backbone, card, protocol_name, tasks, features,
                                       results_dir, device, explicit, log, head_seed)
                    outcomes.append(outcome)
    _summarise(outcomes, log)
    return outcomes


def contamination(card: TaskCard, entry, weights: Optional[str]):
    """Whether the weights saw this task's training images: True / False, or 'unknown' for a weights
    file of unknown origin. Untrained weights (``--weights random``, random-vit) saw nothing."""
    if weights == "random" or entry.meta.key == "random-vit":
        return False
    if weights is not None:
        return "unknown"
    return card.name in entry.meta.seen_tasks


def _run_one(settings, label, entry, get_backbone, card, protocol_name, tasks, features, results_dir, device,
             explicit, log, head_seed: int = 0) -> Outcome:
    where = f"{label} · {card.name} · {protocol_name}" + (f" · seed {head_seed}" if len(settings.head_seeds) > 1 else "")
    if not is_available(protocol_name):
        msg = f"protocol {protocol_name!r} is not available in this version of dermbench"
        log(f"{where}: skipped, {msg}")
        return Outcome(label, card.name, protocol_name, "skipped", msg)
    try:
        protocol = get_protocol(protocol_name)
        missing = [m for m in protocol.requires if not _importable(m)]
        if missing:
            msg = f"needs {', '.join(missing)}: pip install 'dermbench[{protocol.extra}]'"
            log(f"{where}: skipped, {msg}")
            return Outcome(label, card.name, protocol_name, "skipped", msg)
        data = tasks.data(card)
        split = tasks.split(card)
        data_hash = tasks.data_sha256(card)
    except DatasetError as exc:
        if card.name in explicit:
            raise
        log(f"{where}: skipped, {exc}")
        return Outcome(label, card.name, protocol_name, "skipped", str(exc))

    started = now()
    overrides = settings.overrides.get(protocol_name) or {}
    config = protocol.resolve_config({**protocol.data_defaults(data), **overrides})
    try:
        backbone = get_backbone()  # the weights' sha256 is part of the key
    except Exception as exc:
        log(f"{where}: FAILED: {type(exc).__name__}: {exc}")
        return Outcome(label, card.name, protocol_name, "failed", f"{type(exc).__name__}: {exc}")
    identity = result_identity(
        backbone=entry.meta.key, weights_sha256=backbone.weights_sha256, task=card.name, task_card_sha256=card.sha256,
        data_sha256=data_hash, split_rule=split.rule, split_seed=split.seed, split_sha256=split.sha256,
        protocol=protocol_name, protocol_version=protocol.VERSION, settings=config, head_seed=head_seed,
        n_boot=settings.n_boot, bootstrap_seed=bootstrap_seed(card.name, split.sha256, split.seed),
        overrides=overrides, split_mode=settings.split_mode)
    key = result_key(identity)
    if not settings.overwrite and is_finished(results_dir, label, card.name, protocol_name, key):
        log(f"{where}: finished earlier with these settings (result {key[:12]}), skipped (use --overwrite to recompute)")
        return Outcome(label, card.name, protocol_name, "skipped", "finished earlier")
    paths = result_paths(results_dir, label, card.name, protocol_name, key)
    ctx = RunContext(card=card, data=data, split=split, get_backbone=get_backbone, features=features,
                     seed=head_seed, device=device, config=config, artifacts_dir=paths["artifacts"],
                     progress=settings.progress,
                     load_task=lambda name: (tasks.data(get_card(name)), tasks.split(get_card(name))))
    try:
        out = protocol.run(ctx)
        predictions = as_stored(_with_groups(out.predictions, data))
        stratified = out.kind == "classification"
        strata = protocol.bootstrap_strata(predictions) if stratified else None
        boot_idx, boot_path, boot_sha = shared_bootstrap_indices(
            results_dir / "_bootstrap", card.name, split.sha256, split.seed, len(split.test), strata, settings.n_boot)
        from dermbench.stats.evaluation import evaluate_result

        metrics = evaluate_result(protocol, out.kind, predictions, boot_idx)
        record = {
            "model": label, "result_key": key, "identity": identity,
            "backbone": {**entry.meta.to_dict(), "weights_sha256": backbone.weights_sha256,
                         "fingerprint": backbone.fingerprint(), "num_params": backbone.num_params(),
                         "variant": backbone.variant},
            "task": card.name, "task_title": card.title, "task_group": card.group, "task_card_sha256": card.sha256,
            "protocol": protocol_name, "kind": out.kind, "classes": list(data.classes),
            "n_train": out.n_train, "n_test": out.n_test, "seed": head_seed, "split_seed": split.seed,
            "main_metric": card.main_metric,
            "metrics": metrics,
            "split": {"rule": split.rule, "seed": split.seed, "path": os.path.relpath(split.path, results_dir),
                      "sha256": split.sha256, "notes": split.notes},
            "split_sha256": split.sha256,
            "bootstrap": {"n_boot": int(boot_idx.shape[0]), "path": os.path.relpath(boot_path, results_dir),
                          "sha256": boot_sha, "stratified": stratified},
            "data": {"root": str(tasks.data_root), "dataset_root": str(data.root), "n_samples": len(data.samples),
                     "sha256": data_hash},
            "contaminated": contamination(card, entry, settings.weights),
            "skipped": [list(s) for s in data.skipped],
            "info": out.info,
            "artifacts": out.artifacts,
            "provenance": provenance({"protocol": config, "overrides": overrides, "weights": settings.weights,
                                      "split_mode": settings.split_mode, "n_boot": settings.n_boot,
                                      "head_seed": head_seed, "split_seed": split.seed}, device, started),
        }
        tables = {name: as_stored(_with_groups(t, data)) for name, t in out.tables.items()}
        write_result(results_dir, record, predictions, tables)
    except Exception as exc:  # reported, the run goes on; the exit code says something failed
        log(f"{where}: FAILED: {type(exc).__name__}: {exc}")
        if os.environ.get("DERMBENCH_DEBUG"):
            traceback.print_exc()
        return Outcome(label, card.name, protocol_name, "failed", f"{type(exc).__name__}: {exc}")
    main = card.main_metric if card.main_metric in metrics else next(iter(metrics))
    m = metrics[main]
    log(f"{where}: {main} {100 * m['value']:.2f} [{100 * m['ci_low']:.2f}, {100 * m['ci_high']:.2f}] "
        f"(n_train {out.n_train}, n_test {out.n_test})")
    return Outcome(label, card.name, protocol_name, "done", metrics=metrics, main_metric=main)


def _feature_cache():
    from dermbench.features import FeatureCache

    return FeatureCache(cache_dir())


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _summarise(outcomes: list[Outcome], log) -> None:
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    log(f"{counts['done']} result(s) computed, {counts['skipped']} skipped, {counts['failed']} failed")
    for o in outcomes:
        if o.status == "failed":
            log(f"  failed: {o.model} · {o.task} · {o.protocol}: {o.message}")
