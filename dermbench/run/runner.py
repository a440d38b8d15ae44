"""`dermbench run`: backbones × tasks × protocols → results store, as plan → execute.

:func:`run_benchmark` makes the plan (:mod:`dermbench.run.plan`: per backbone × task a features job,
then one job per protocol) and hands it to an executor (:mod:`dermbench.run.executors`: this process,
a shard, Slurm), whose workers call :func:`run_jobs`. One code path for every protocol job: load the
task through its adapter, make (or reuse) the seeded split, run the protocol on cached frozen
features, compute metrics with the shared bootstrap from the per-sample predictions, write the
result atomically. Every result is stored under its key (:mod:`dermbench.run.identity`: backbone
and weights, task card, data, split, protocol settings and version, head seed, bootstrap
replicates); a result whose key is already finished is skipped unless ``overwrite``, and results of
other settings stay beside it. A failure in one job is reported and the run goes on, and the run
exits non-zero at the end.

Before any work, :func:`preflight` checks what would otherwise fail or mislead job by job: each
model's weights once, each task found, loaded and split, and per task the rows ``--split official``
leaves out and the train/test pairs of identical images (said once, stored in every result of the
task, refused with ``--strict``). Non-finite features (a backbone with NaN weights) stop the run:
every later result would be as wrong (:class:`RunStopped`).
"""
from __future__ import annotations

import json
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pandas as pd

from dermbench.models import registry
from dermbench.config import cache_dir, resolve_data_root
from dermbench.data.sample import DatasetError, TaskData
from dermbench.io import atomic_write_json, ensure_folder
from dermbench.protocols import get_protocol
from dermbench.protocols.base import RunContext
from dermbench import claims
from dermbench.run.identity import result_identity, result_key
from dermbench.run.plan import (Job, Outcome, claims_dir, clear_failure, default_results_dir, done_marker,  # noqa: F401
                                failure_record, is_done, log_path, model_label, plan, runnable, save_plan,
                                write_failure)
from dermbench.run.results import as_stored, is_finished, now, provenance, result_paths, write_result
from dermbench.data.splits import Split, make_split, write_split
from dermbench.features.extract import NonFiniteFeatures
from dermbench.stats.bootstrap import DEFAULT_N_BOOT, bootstrap_seed, shared_bootstrap_indices
from dermbench.data.tasks import TaskCard, get_card


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
    workers: Optional[int] = None  # feature-decode processes; None: one per core, at most 16
    precision: str = "auto"  # feature extraction: auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    draft_decode: bool = False  # PIL draft-mode JPEG decoding for features (changes them; in the cache key)
    strict: bool = False  # refuse (before any work) a task whose test set holds images of its training set

    @property
    def head_seeds(self) -> list[int]:
        return list(dict.fromkeys(self.seeds)) if self.seeds else [self.seed]


def resolve_device(device: str) -> str:
    """The device to run on (:func:`dermbench.models.devices.resolve_device`, the one resolver of every
    command's ``--device``); its DeviceError is a ValueError."""
    from dermbench.models.devices import resolve_device as resolve

    return resolve(device)


@dataclass
class TaskChecks:
    """What a run must say about a task's data and split before its numbers can be trusted; stored in every
    result of the task (``info``: ``warnings`` and the counts)."""

    task: str
    split_path: Optional[Path]
    untagged: int = 0  # --split official: samples without a train/val/test tag, left out
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (train id, test id) with identical images
    example: str = ""  # one duplicate pair, with its files
    data_root: Optional[Path] = None  # for the `data check` command the warning suggests
    n_samples: int = 0

    @property
    def warnings(self) -> list[str]:
        out = []
        if self.untagged:
            out.append(f"--split official left out {self.untagged} of {self.n_samples} images that have no split tag "
                       f"(listed in {self.split_path})")
        if self.duplicates:
            out.append(f"{len(self.duplicates)} train/test pair(s) are the same image (identical content hash; e.g. "
                       f"{self.example}): test images also seen in training inflate this task's numbers; remove the "
                       f"duplicates ({self.check_command} lists every pair) or run with --strict to refuse such a "
                       "task")
        return out

    @property
    def check_command(self) -> str:
        root = f" --data-root {self.data_root}" if self.data_root else ""
        return f"`dermbench data check{root} --task {self.task}`"

    def info(self, split_mode: str) -> dict[str, Any]:
        """The fields added to each result's ``info`` (the counts even when 0: the check was made)."""
        out: dict[str, Any] = {"n_train_test_duplicates": len(self.duplicates)}
        if split_mode == "official":
            out["n_untagged_left_out"] = self.untagged
        return out


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
        self._digests: dict[str, dict[str, str]] = {}
        self._checks: dict[str, TaskChecks] = {}

    def file_digests(self, card: TaskCard) -> dict[str, str]:
        """sha256 of every image and mask file of the task, by path. Content hashes are remembered on disk by
        (path, size, mtime), shared with the feature cache, so a large dataset is read in full once, not on
        every run."""
        if card.name not in self._digests:
            from dermbench.features import ImageHashes

            samples = self.data(card).samples
            paths = [s.image for s in samples] + [s.mask for s in samples if s.mask is not None]
            hashes = ImageHashes(cache_dir() / "image-hashes").many(paths, threads=4)
            self._digests[card.name] = dict(zip(map(str, paths), hashes))
        return self._digests[card.name]

    def data_sha256(self, card: TaskCard) -> str:
        """Hash of the task's samples and image contents (part of every result's key)."""
        if card.name not in self._hashes:
            from dermbench.run.identity import data_sha256

            known = self.file_digests(card)
            self._hashes[card.name] = data_sha256(self.data(card).samples, lambda path: known[str(path)])
        return self._hashes[card.name]

    def checks(self, card: TaskCard) -> TaskChecks:
        """Untagged samples left out by --split official, and train/test pairs of identical images (the pairs
        `data check` reports as leaks, found from the same content hashes as the data hash)."""
        if card.name not in self._checks:
            from dermbench.data.splits import train_test_duplicates

            data, split = self.data(card), self.split(card)
            digests = self.file_digests(card)
            by_id = data.by_id()
            pairs = train_test_duplicates(split, {s.id: digests[str(s.image)] for s in data.samples})
            example = ""
            if pairs:
                a, b = pairs[0]
                example = f"train {a} ({by_id[a].image}) = test {b} ({by_id[b].image})"
            self._checks[card.name] = TaskChecks(card.name, split.path, len(split.untagged), pairs, example,
                                                 self.data_root, len(data.samples))
        return self._checks[card.name]

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


def contamination(card: TaskCard, entry, weights: Optional[str]):
    """Whether the weights saw this task's training images: True / False, or 'unknown' for a weights
    file of unknown origin. Untrained weights (``--weights random``, random-vit) saw nothing."""
    if weights == "random" or entry.meta.key == "random-vit":
        return False
    if weights is not None:
        return "unknown"
    return card.name in entry.meta.seen_tasks


def resolve_run(settings: RunSettings, log: Callable[[str], None] = print, check_device: bool = True) -> RunSettings:
    """A copy of ``settings`` that every worker of a run can use as is: the data root found (DermSynth
    generated when none is given), the results folder and the data root absolute, the device checked
    (not for Slurm, where the GPUs are on the nodes, not here)."""
    from dataclasses import replace

    device = resolve_device(settings.device) if check_device else settings.device
    data_root, source = resolve_data_root(settings.data_root)
    if data_root is None:
        from dermbench.data.synth import ensure_dermsynth

        data_root = ensure_dermsynth(scale=settings.synth_scale, progress=settings.progress)
        log(f"No --data-root given: using the embedded synthetic benchmark DermSynth at {data_root}")
    else:
        log(f"Data root: {data_root} (from {source})")
    results_dir = Path(settings.output) if settings.output else default_results_dir(None if source.startswith("default") else data_root)
    ensure_folder(results_dir)  # an unwritable results folder fails here, before any work, naming the path
    log(f"Results: {results_dir}")
    return replace(settings, data_root=Path(data_root).resolve(), output=results_dir.resolve(), device=device)


class RunStopped(RuntimeError):
    """The run stopped part-way because going on would store wrong numbers (e.g. NaN features); the jobs
    after the failing one were not run. The message names the backbone, the image and the fix."""


class RunOutcomes(list):
    """The outcomes of a run's protocol jobs (a list, as before), with what the run left out before any work:
    ``refused_models`` (model label -> why: its weights are missing), ``missing_tasks`` (task -> why: not
    found under the data root) and ``unusable_tasks`` (task -> why: found, but it cannot be read or split),
    both for tasks not named on the command line, and ``planned``: how many protocol jobs the plan held after
    them."""

    def __init__(self, outcomes=(), refused_models=None, missing_tasks=None, unusable_tasks=None, planned: int = 0):
        super().__init__(outcomes)
        self.refused_models: dict[str, str] = dict(refused_models or {})
        self.missing_tasks: dict[str, str] = dict(missing_tasks or {})
        self.unusable_tasks: dict[str, str] = dict(unusable_tasks or {})
        self.planned = planned

    @property
    def computed(self) -> int:
        return sum(o.status == "done" for o in self)

    @property
    def stored(self) -> int:
        """Results found finished under their key (a resumed run)."""
        return sum(o.status == "skipped" and bool(o.result_key) for o in self)

    @property
    def nothing_done(self) -> bool:
        """Nothing was computed and nothing was already stored: the run produced no result at all. A run whose
        plan was left empty (every model refused, every task missing) counts; a shard or a Slurm submission
        that returned no outcomes (nothing of the plan for it, or all of it done before) does not."""
        if self.planned == 0:
            return True
        return bool(self) and self.computed == 0 and self.stored == 0


@dataclass
class Preflight:
    """The plan after the checks made before any work (weights once per model, each task's data)."""

    jobs: list[Job]
    refused_models: dict[str, str] = field(default_factory=dict)
    missing_tasks: dict[str, str] = field(default_factory=dict)
    unusable_tasks: dict[str, str] = field(default_factory=dict)


def preflight(settings: RunSettings, jobs: list[Job], log: Callable[[str], None] = print) -> Preflight:
    """Check, before any work, what would otherwise fail (or mislead) job by job; ``settings`` resolved.

    - weights: once per model (:func:`dermbench.run.plan.weights_problem`); a model without them is reported
      in one line and its jobs are dropped. No model usable: WeightsError.
    - tasks: each task's data is loaded and split. A task named on the command line that is not found (or
      cannot be split) is a DatasetError naming it, where it was looked for and the fix; one of a group or
      ``all`` is dropped and named in the summary.
    - per task, once: the images ``--split official`` leaves out for want of a tag, and train/test pairs of
      identical images (refused with ``--strict``: DatasetError).
    """
    from dermbench.data.locate import find_task_root
    from dermbench.models.weights import WeightsError
    from dermbench.run.plan import weights_problem

    refused: dict[str, str] = {}
    checked: dict[str, Optional[str]] = {}
    for job in jobs:
        if job.model not in checked:
            checked[job.model] = weights_problem(job.model_key, settings.weights)
            if checked[job.model]:
                refused[job.model] = checked[job.model]
    if len(refused) == 1 and len(checked) == 1:  # the run's only model: its message is the error, said once
        raise WeightsError(f"no model of this run has its weights; nothing was run. {next(iter(refused.values()))}")
    for model, problem in refused.items():
        log(f"{model}: not run (none of its jobs): {problem}")
    if refused and len(refused) == len(checked):
        raise WeightsError(f"no model of this run has its weights ({', '.join(refused)}); nothing was run. "
                           "Each model's line above says which file to put where.")
    jobs = [j for j in jobs if j.model not in refused]

    data_root = Path(settings.data_root)
    if not data_root.is_dir():
        raise DatasetError(f"--data-root {data_root}: no such folder; pass --data-root DIR holding the datasets "
                           "(layout: docs/datasets.md), or leave it out to run on the embedded DermSynth "
                           "(`dermbench data synth --out DIR` writes a copy)")
    tasks = TaskCache(data_root, Path(settings.output), settings.split_seed, settings.split_mode)
    missing: dict[str, str] = {}
    unusable: dict[str, str] = {}
    for task in dict.fromkeys(j.task for j in jobs):
        card = get_card(task)
        explicit = any(j.explicit for j in jobs if j.task == task)
        try:
            if card.adapter != "federated":  # a federation finds its sites under the data root itself
                find_task_root(data_root, card)
        except DatasetError as exc:
            if explicit:
                said = str(exc).removeprefix(f"task {task}: ")
                raise DatasetError(f"--task {task}: {said}. Pass --data-root DIR where the dataset lies (layout: "
                                   "docs/datasets.md; `dermbench data check --data-root DIR` shows what each task "
                                   "finds), or leave --data-root out to run on the embedded DermSynth "
                                   "(`dermbench data synth --out DIR` writes a copy)") from None
            missing[task] = str(exc)
            continue
        try:
            checks = tasks.checks(card)  # reads the task (its adapter), splits it, hashes its images
        except DatasetError as exc:  # the message names the file or the class, and the fix
            if explicit:
                raise
            unusable[task] = str(exc)
            log(f"{task}: not run: {exc}")
            continue
        if settings.strict and checks.duplicates:
            raise DatasetError(f"--strict: task {task}: {len(checks.duplicates)} train/test pair(s) are the same "
                               f"image (e.g. {checks.example}); remove the duplicates from the dataset "
                               f"({checks.check_command} lists every pair), or run without --strict "
                               "(the count is then stored in each result)")
        for warning in checks.warnings:
            log(f"{task}: {warning}")
    if missing:
        log(f"{len(missing)} task(s) not found under {data_root}, not run: {', '.join(missing)} "
            f"(`dermbench data check --data-root {data_root}` says what each needs)")
    return Preflight([j for j in jobs if j.task not in missing and j.task not in unusable], refused, missing, unusable)


def run_benchmark(settings: RunSettings, log: Callable[[str], None] = print, executor=None) -> RunOutcomes:
    """Plan the run of ``settings``, check it (:func:`preflight`) and execute it: in this process (``executor``
    None, the default), on a shard of the plan, or on Slurm (:mod:`dermbench.run.executors`). Returns one
    outcome per protocol job (for Slurm without waiting: none), with what the checks left out. Raises
    RunStopped when a job found that the run must not go on (its outcome is ``fatal``)."""
    from dermbench.run.executors import LocalExecutor

    jobs = plan(settings, log)  # bad models, tasks, protocols, settings fail here, before any work
    resolved = resolve_run(settings, log, check_device=not getattr(executor, "devices_on_nodes", False))
    checked = preflight(resolved, jobs, log)  # missing weights and data, --strict: before any work
    jobs = checked.jobs
    save_plan(resolved.output, settings_record(resolved), jobs)
    outcomes = (executor or LocalExecutor()).execute(resolved, jobs, run_jobs, log) if jobs else []
    protocol_outcomes = RunOutcomes([o for o in outcomes if o.protocol != "features"], checked.refused_models,
                                    checked.missing_tasks, checked.unusable_tasks,
                                    planned=sum(j.stage == "protocol" for j in jobs))
    if outcomes or not jobs or not getattr(executor, "returns_at_once", False):
        _summarise(protocol_outcomes, log)
    fatal = [o for o in outcomes if o.fatal]
    if fatal:
        raise RunStopped(fatal[0].message)
    return protocol_outcomes


def settings_record(settings: RunSettings) -> dict[str, Any]:
    from dataclasses import asdict

    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()}


def run_jobs(settings: RunSettings, jobs: list[Job], log: Callable[[str], None] = print,
             keep: Optional[dict] = None) -> list[Outcome]:
    """Execute ``jobs`` in this process, in order: the worker of every executor. ``settings`` must be
    resolved (:func:`resolve_run`). A job already done is skipped (unless ``overwrite``), one that a live
    worker has claimed is left to it, a stale claim is taken over; each job's log goes to its log file.

    ``keep``: a dict the caller holds across calls (a ``--jobs`` worker process running one model × task
    group per call): the JobRunner, with its built backbones and loaded tasks, is kept in it and reused."""
    runner = keep.get("runner") if keep is not None else None
    if runner is None:
        runner = JobRunner(settings, log)
        if keep is not None:
            keep["runner"] = runner
    outcomes: list[Outcome] = []
    for i, job in enumerate(jobs):
        outcomes.append(runner.run(job, readers=[j for j in jobs if job.id in j.after]))
        if outcomes[-1].fatal:  # e.g. NaN features: every later job would store wrong numbers or fail alike
            why = f"not run: the run stopped at {job.id}"
            outcomes += [Outcome(j.model, j.task, j.protocol or "features", "skipped", why, job=j.id)
                         for j in jobs[i + 1:]]
            break
    return outcomes


class JobRunner:
    """Executes jobs, keeping what jobs share (task data and splits, the feature cache, built backbones)."""

    def __init__(self, settings: RunSettings, log: Callable[[str], None] = print):
        self.settings = settings
        self.results_dir = Path(settings.output)
        self.console = log
        self.log = log
        self.tasks = TaskCache(Path(settings.data_root), self.results_dir, settings.split_seed, settings.split_mode)
        self.features = _feature_cache(settings)
        self._backbones: dict[str, Any] = {}
        self._last_traceback = ""
        self._outcomes: dict[str, Outcome] = {}  # this process's outcomes, by job id (a protocol reads its features job's)
        claims.sweep_leftovers(claims_dir(self.results_dir))  # temporaries of claimers killed mid-claim

    def get_backbone(self, key: str):
        if key not in self._backbones:
            self.log(f"Building backbone {key} (weights: {self.settings.weights or 'default'})")
            self._backbones[key] = registry.get(key).build(weights=self.settings.weights)
        return self._backbones[key]

    def run(self, job: Job, readers: Optional[list[Job]] = None) -> Outcome:
        """Claim, execute, record and release one job. A features job is skipped when every protocol job
        reading it (``readers``, those of this batch) finished earlier; a protocol job decides by the key
        of its result."""
        settings, results = self.settings, self.results_dir
        where = f"{job.model} · {job.task} · {job.protocol or 'features'}"
        if job.stage == "protocol" and len(settings.head_seeds) > 1:
            where += f" · seed {job.head_seed}"
        if job.stage == "features" and not settings.overwrite and readers and all(is_done(results, r) for r in readers):
            return self._keep(Outcome(job.model, job.task, "features", "skipped", "its results are done", job=job.id))
        claim = claims.try_claim(claims_dir(results), job.id)
        if claim is None:
            holder = claims.read_claim(claims.claim_path(claims_dir(results), job.id))
            who = holder[0].describe() if holder else "another worker"
            self.console(f"{where}: being computed by {who}, left to it")
            return self._keep(Outcome(job.model, job.task, job.protocol or "features", "skipped",
                                      f"claimed by {who}", job=job.id))
        job_log = log_path(results, job.id)
        job_log.parent.mkdir(parents=True, exist_ok=True)
        try:
            with claims.Heartbeat(claim), open(job_log, "a") as log_file:
                def tee(line: str, _file=log_file) -> None:
                    self.console(line)
                    _file.write(f"{now()} {line}\n")
                    _file.flush()

                self.log = tee
                try:
                    outcome = self._execute(job, where)
                except Exception:
                    log_file.write(traceback.format_exc())
                    raise
                finally:
                    self.log = self.console
                if outcome.status == "failed":
                    log_file.write(self._last_traceback)
            # recorded while the claim is held, so a worker that finds the job unclaimed also finds its record
            if outcome.status == "failed":
                write_failure(results, job, outcome.message, _slurm_paths())
            elif outcome.status == "done" or outcome.result_key:  # computed, or found finished under its key
                clear_failure(results, job)
                record = {"job": job.id, "finished": now()}
                record.update({"result_key": outcome.result_key} if job.stage == "protocol" else
                              {"cache": str(self.features.root)})
                atomic_write_json(done_marker(results, job.id), record)
        finally:
            claims.release(claim)
        return self._keep(outcome)

    def _keep(self, outcome: Outcome) -> Outcome:
        self._outcomes[outcome.job] = outcome
        return outcome

    def _execute(self, job: Job, where: str) -> Outcome:
        if job.stage == "features":
            return self._extract(job, where)
        return self._protocol(job, where)

    def _task(self, job: Job):
        """(card, data, split) of the job's task; DatasetError propagates for a task named on the command line."""
        card = get_card(job.task)
        return card, self.tasks.data(card), self.tasks.split(card)

    def _extract(self, job: Job, where: str) -> Outcome:
        """Features for the train and test images, in the order and batches the protocols read them."""
        try:
            card, data, split = self._task(job)
        except DatasetError as exc:
            if job.explicit:
                raise
            self.log(f"{where}: skipped, {exc}")
            return Outcome(job.model, job.task, "features", "skipped", str(exc), job=job.id)
        try:
            backbone = self.get_backbone(job.model_key)
            counts = dict(self.features.stats)
            samples = split.select(data, "train") + split.select(data, "test")
            # one pass per batch size (features are batched as the protocols read them); each pass decodes
            # every image once for all the (kind, view) pairs it serves
            by_batch: dict[int, list[tuple[str, str]]] = {}
            for need in job.features:
                by_batch.setdefault(int(need.batch_size), []).append((need.kind, need.view))
            for batch_size, requests in by_batch.items():
                self.features.extract(backbone, samples, requests, batch_size=batch_size, device=self.settings.device,
                                      progress=self.settings.progress, desc=card.name)
            computed = self.features.stats["computed"] - counts["computed"]
            hits = self.features.stats["hits"] - counts["hits"]
        except NonFiniteFeatures as exc:
            ids = [s.id for s in samples if exc.path is not None and Path(s.image) == Path(exc.path)]
            weights = f" (weights {self.settings.weights})" if self.settings.weights else ""
            named = f"sample {', '.join(ids[:3])} of task {card.name}" if ids else f"an image of task {card.name}"
            return self._failed(job, where, NonFiniteFeatures(f"{exc.backbone_name}{weights}", exc.kind, exc.path,
                                                              exc.cause, sample=named))
        except Exception as exc:
            return self._failed(job, where, exc)
        self.log(f"{where}: {', '.join(n.describe() for n in job.features)}: {computed} image(s) computed, "
                 f"{hits} cached")
        return Outcome(job.model, job.task, "features", "done", job=job.id)

    def _failed(self, job: Job, where: str, exc: Exception) -> Outcome:
        self.log(f"{where}: FAILED: {type(exc).__name__}: {exc}")
        if os.environ.get("DERMBENCH_DEBUG"):
            traceback.print_exc()
        self._last_traceback = traceback.format_exc()
        if isinstance(exc, NonFiniteFeatures):  # the backbone is broken: stop the run, store nothing more
            return Outcome(job.model, job.task, job.protocol or "features", "failed", str(exc), job=job.id, fatal=True)
        return Outcome(job.model, job.task, job.protocol or "features", "failed", f"{type(exc).__name__}: {exc}",
                       job=job.id)

    def _upstream_failure(self, job: Job) -> Optional[str]:
        """Why the features this protocol reads were not extracted, if their job failed."""
        for up in job.after:
            seen = self._outcomes.get(up)
            if seen is not None:
                if seen.status == "failed":
                    return f"features job {up} failed ({seen.message}); log: {log_path(self.results_dir, up)}"
                continue
            record = failure_record(self.results_dir, up)
            if record.exists() and not done_marker(self.results_dir, up).exists():
                rec = json.loads(record.read_text())
                return f"features job {up} failed ({rec.get('message')}); log: {rec.get('slurm_stderr') or rec.get('log')}"
        return None

    def _protocol(self, job: Job, where: str) -> Outcome:
        settings, results_dir = self.settings, self.results_dir
        label, protocol_name = job.model, job.protocol
        why_not = runnable(protocol_name)
        if why_not:
            self.log(f"{where}: skipped, {why_not}")
            return Outcome(label, job.task, protocol_name, "skipped", why_not, job=job.id)
        try:
            protocol = get_protocol(protocol_name)
            card, data, split = self._task(job)
        except DatasetError as exc:
            if job.explicit:
                raise
            self.log(f"{where}: skipped, {exc}")
            return Outcome(label, job.task, protocol_name, "skipped", str(exc), job=job.id)
        upstream = self._upstream_failure(job)
        if upstream:
            self.log(f"{where}: FAILED: {upstream}")
            return Outcome(label, job.task, protocol_name, "failed", upstream, job=job.id)

        entry = registry.get(job.model_key)
        get_backbone = lambda: self.get_backbone(job.model_key)  # noqa: E731
        head_seed = job.head_seed
        started = now()
        overrides = settings.overrides.get(protocol_name) or {}
        config = protocol.resolve_config({**protocol.data_defaults(data), **overrides})
        try:
            data_hash = self.tasks.data_sha256(card)
            checks = self.tasks.checks(card)  # said once per task before the run; stored in every result
            backbone = get_backbone()  # the weights' sha256 is part of the key
        except Exception as exc:
            return self._failed(job, where, exc)
        identity = result_identity(
            backbone=entry.meta.key, weights_sha256=backbone.weights_sha256, task=card.name, task_card_sha256=card.sha256,
            data_sha256=data_hash, split_rule=split.rule, split_seed=split.seed, split_sha256=split.sha256,
            protocol=protocol_name, protocol_version=protocol.VERSION, settings=config, head_seed=head_seed,
            n_boot=settings.n_boot, bootstrap_seed=bootstrap_seed(card.name, split.sha256, split.seed),
            overrides=overrides, split_mode=settings.split_mode,
            features=_features_identity(self.features, settings.device))
        key = result_key(identity)
        if not settings.overwrite and is_finished(results_dir, label, card.name, protocol_name, key):
            self.log(f"{where}: finished earlier with these settings (result {key[:12]}), skipped "
                     f"(use --overwrite to recompute)")
            return Outcome(label, card.name, protocol_name, "skipped", "finished earlier", job=job.id, result_key=key)
        paths = result_paths(results_dir, label, card.name, protocol_name, key)
        tasks = self.tasks
        ctx = RunContext(card=card, data=data, split=split, get_backbone=get_backbone, features=self.features,
                         seed=head_seed, device=settings.device, config=config, artifacts_dir=paths["artifacts"],
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
                "data": {"root": str(self.tasks.data_root), "dataset_root": str(data.root), "n_samples": len(data.samples),
                         "sha256": data_hash},
                "contaminated": contamination(card, entry, settings.weights),
                "skipped": [list(s) for s in data.skipped],
                "info": _with_checks(out.info, checks, settings.split_mode),
                "artifacts": out.artifacts,
                "provenance": provenance({"protocol": config, "overrides": overrides, "weights": settings.weights,
                                          "split_mode": settings.split_mode, "n_boot": settings.n_boot,
                                          "head_seed": head_seed, "split_seed": split.seed,
                                          "features": self.features.settings(settings.device)},
                                         settings.device, started),
            }
            tables = {name: as_stored(_with_groups(t, data)) for name, t in out.tables.items()}
            write_result(results_dir, record, predictions, tables)
        except Exception as exc:  # reported, the run goes on; the exit code says something failed
            return self._failed(job, where, exc)
        main = card.main_metric if card.main_metric in metrics else next(iter(metrics))
        m = metrics[main]
        self.log(f"{where}: {main} {100 * m['value']:.2f} [{100 * m['ci_low']:.2f}, {100 * m['ci_high']:.2f}] "
                 f"(n_train {out.n_train}, n_test {out.n_test})")
        return Outcome(label, card.name, protocol_name, "done", metrics=metrics, main_metric=main, job=job.id,
                       result_key=key)


def _with_checks(info: dict[str, Any], checks: TaskChecks, split_mode: str) -> dict[str, Any]:
    """The protocol's info with the task's data warnings (beside any of its own) and their counts."""
    out = {**info, **checks.info(split_mode)}
    warnings = list(info.get("warnings") or []) + checks.warnings
    if warnings:
        out["warnings"] = warnings
    return out


def _slurm_paths() -> dict[str, str]:
    """The Slurm stdout/stderr of the running array task, when running under submitit on Slurm."""
    if not os.environ.get("SLURM_JOB_ID"):
        return {}
    try:
        import submitit

        paths = submitit.JobEnvironment().paths
        return {"slurm_stdout": str(paths.stdout), "slurm_stderr": str(paths.stderr),
                "slurm_job": submitit.JobEnvironment().job_id}
    except Exception:  # not a submitit job (plain sbatch/srun): the job's own log is still recorded
        return {}


def _feature_cache(settings: RunSettings):
    from dermbench.features import FeatureCache

    return FeatureCache(cache_dir(), workers=settings.workers, precision=settings.precision, draft=settings.draft_decode)


def _features_identity(features, device: str) -> Optional[dict[str, Any]]:
    """The extraction settings that change numbers, for the result key; None for fp32 with full decoding."""
    s = features.settings(device)
    changed = {"precision": s["precision"], "draft_decode": s["draft_decode"]}
    return changed if (changed["precision"] != "fp32" or changed["draft_decode"]) else None


def _summarise(outcomes: RunOutcomes, log) -> None:
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    stored = f" ({outcomes.stored} of them stored earlier)" if outcomes.stored else ""
    log(f"{counts['done']} result(s) computed, {counts['skipped']} skipped{stored}, {counts['failed']} failed")
    for o in outcomes:
        if o.status == "failed":
            log(f"  failed: {o.model} · {o.task} · {o.protocol}: {o.message}")
    if outcomes.refused_models:
        log(f"  not run, weights missing: {', '.join(outcomes.refused_models)}")
    if outcomes.missing_tasks:
        log(f"  not run, not found under the data root: {', '.join(outcomes.missing_tasks)}")
    if outcomes.unusable_tasks:
        log(f"  not run, data unusable (see its line above): {', '.join(outcomes.unusable_tasks)}")
