"""`dermbench run`: backbones × tasks × protocols → results store.

One loop for every protocol: load the task through its adapter, make (or reuse) the
seeded split, run the protocol on cached frozen features, compute metrics with the
shared bootstrap from the per-sample predictions, write the result atomically.
Finished results are skipped unless ``overwrite``; a failure in one (task, protocol)
is reported and the run goes on, and the run exits non-zero at the end.
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
from dermbench.io import sha256_file
from dermbench.protocols import get_protocol, is_available
from dermbench.protocols.base import RunContext
from dermbench.run.results import as_stored, is_finished, now, provenance, result_paths, write_result
from dermbench.data.splits import Split, make_split, write_split
from dermbench.stats.bootstrap import DEFAULT_N_BOOT, shared_bootstrap_indices
from dermbench.data.tasks import TaskCard, get_card, select_tasks


@dataclass
class RunSettings:
    models: list[str]
    tasks: str = "all"
    protocols: Optional[list[str]] = None  # None: every protocol of each task's card
    data_root: Optional[Path] = None
    weights: Optional[str] = None  # None | 'random' | path (applies to every model given)
    output: Optional[Path] = None
    seed: int = 0
    device: str = "cpu"
    overwrite: bool = False
    n_boot: int = DEFAULT_N_BOOT
    split_mode: str = "default"  # 'default' (card rule) | 'official'
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # protocol -> {setting: value}
    progress: bool = True
    synth_scale: float = 1.0
    workers: Optional[int] = None  # feature-decode processes; None: one per core, at most 16
    precision: str = "auto"  # feature extraction: auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    draft_decode: bool = False  # PIL draft-mode JPEG decoding for features (changes them; in the cache key)


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
        self.seed = seed
        self.split_mode = split_mode
        self._data: dict[str, TaskData] = {}
        self._splits: dict[str, Split] = {}

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
    log(f"Results: {results_dir}")
    tasks = TaskCache(data_root, results_dir, settings.seed, settings.split_mode)
    features = _feature_cache(settings)
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
            _extract_features(settings, label, get_backbone, card, protocols, tasks, features, results_dir, device, log)
            for protocol_name in protocols:
                outcome = _run_one(settings, label, entry, get_backbone, card, protocol_name, tasks, features,
                                   results_dir, device, explicit, log)
                outcomes.append(outcome)
    _summarise(outcomes, log)
    return outcomes


def _run_one(settings, label, entry, get_backbone, card, protocol_name, tasks, features, results_dir, device,
             explicit, log) -> Outcome:
    where = f"{label} · {card.name} · {protocol_name}"
    if not settings.overwrite and is_finished(results_dir, label, card.name, protocol_name):
        log(f"{where}: finished earlier, skipped (use --overwrite to recompute)")
        return Outcome(label, card.name, protocol_name, "skipped", "finished earlier")
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
    except DatasetError as exc:
        if card.name in explicit:
            raise
        log(f"{where}: skipped, {exc}")
        return Outcome(label, card.name, protocol_name, "skipped", str(exc))

    started = now()
    config = protocol.resolve_config({**protocol.data_defaults(data), **(settings.overrides.get(protocol_name) or {})})
    paths = result_paths(results_dir, label, card.name, protocol_name)
    ctx = RunContext(card=card, data=data, split=split, get_backbone=get_backbone, features=features,
                     seed=settings.seed, device=device, config=config, artifacts_dir=paths["artifacts"],
                     progress=settings.progress)
    try:
        out = protocol.run(ctx)
        predictions = as_stored(_with_groups(out.predictions, data))
        stratified = out.kind == "classification"
        strata = protocol.bootstrap_strata(predictions) if stratified else None
        boot_idx, boot_path, boot_sha = shared_bootstrap_indices(
            results_dir / "_bootstrap", card.name, split.sha256, settings.seed, len(split.test), strata, settings.n_boot)
        from dermbench.stats.evaluation import evaluate_result

        metrics = evaluate_result(protocol, out.kind, predictions, boot_idx)
        backbone = get_backbone()
        record = {
            "model": label,
            "backbone": {**entry.meta.to_dict(), "weights_sha256": backbone.weights_sha256,
                         "fingerprint": backbone.fingerprint(), "num_params": backbone.num_params(),
                         "variant": backbone.variant},
            "task": card.name, "task_title": card.title, "task_group": card.group, "task_card_sha256": card.sha256,
            "protocol": protocol_name, "kind": out.kind, "classes": list(data.classes),
            "n_train": out.n_train, "n_test": out.n_test, "seed": settings.seed, "main_metric": card.main_metric,
            "metrics": metrics,
            "split": {"rule": split.rule, "seed": split.seed, "path": os.path.relpath(split.path, results_dir),
                      "sha256": split.sha256, "notes": split.notes},
            "split_sha256": split.sha256,
            "bootstrap": {"n_boot": int(boot_idx.shape[0]), "path": os.path.relpath(boot_path, results_dir),
                          "sha256": boot_sha, "stratified": stratified},
            "data": {"root": str(tasks.data_root), "dataset_root": str(data.root), "n_samples": len(data.samples)},
            "contaminated": card.name in entry.meta.seen_tasks,
            "skipped": [list(s) for s in data.skipped],
            "info": out.info,
            "artifacts": out.artifacts,
            "provenance": provenance({"protocol": config, "weights": settings.weights, "split_mode": settings.split_mode,
                                      "n_boot": settings.n_boot, "features": features.settings(device)},
                                     device, started),
        }
        write_result(results_dir, record, predictions)
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


def _feature_cache(settings: RunSettings):
    from dermbench.features import FeatureCache

    return FeatureCache(cache_dir(), workers=settings.workers, precision=settings.precision, draft=settings.draft_decode)


def _extract_features(settings, label, get_backbone, card, protocols, tasks, features, results_dir, device, log) -> None:
    """One extraction pass per (backbone, task) for every (kind, view) its protocols will read, so each
    image is decoded once; the protocols then find their features in the cache."""
    todo = [p for p in protocols if is_available(p) and (settings.overwrite or not is_finished(results_dir, label, card.name, p))]
    requests = sorted({r for p in todo for r in get_protocol(p).feature_requests})
    if not requests:
        return
    try:
        data, split = tasks.data(card), tasks.split(card)
    except DatasetError:
        return  # each protocol reports (or raises) it as before
    samples = split.select(data, "train") + split.select(data, "test")
    try:
        features.extract(get_backbone(), samples, requests, device=device, progress=settings.progress, desc=card.name)
    except Exception as exc:  # each protocol then meets the problem itself and reports it as its failure
        log(f"{label} · {card.name}: feature extraction for all protocols failed ({type(exc).__name__}: {exc})")


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _summarise(outcomes: list[Outcome], log) -> None:
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    log(f"{counts['done']} result(s) computed, {counts['skipped']} skipped, {counts['failed']} failed")
    for o in outcomes:
        if o.status == "failed":
            log(f"  failed: {o.model} · {o.task} · {o.protocol}: {o.message}")
