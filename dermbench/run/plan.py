"""The run plan: the jobs of a benchmark run, as small serialisable records.

Per backbone × dataset the plan holds one **features job** (the frozen features to extract: each
(kind, view) its protocols read, e.g. ``global@eval`` for retrieval/linear, ``tokens@seg`` for the
linear segmentation head) and then one **protocol job** per protocol, which trains the head on the
cached features, bootstraps and writes the result. Extraction needs the GPU, the heads do not, so a
cluster runs the first kind on GPU nodes and the second on CPU nodes; the local loop, the shards
(``--shard K/N``) and Slurm (``--executor slurm``) all execute the same records
(:func:`dermbench.run.runner.run_jobs`).

Job bookkeeping lives beside the results, in ``<results>/_jobs/``::

    plans/<sha12>.json       every plan run on this folder (what `dermbench status` reports on)
    claims/<job>.claim       who computes a job right now (dermbench.claims)
    done/<job>.json          a features job finished (protocol jobs are done when their result is)
    failed/<job>.json        the last failure of a job: message, host, time, log paths
    logs/<job>.log           every line a job logged, one file per job, appended per attempt
    slurm/                   submitit's pickles and the Slurm stdout/stderr of each array task
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from dermbench.io import atomic_write_json, sha256_file
from dermbench import claims as claims_mod
from dermbench.run.results import is_finished

STAGES = ("features", "protocol")
STATES = ("done", "running", "failed", "missing")


@dataclass(frozen=True)
class FeatureNeed:
    kind: str  # 'global' | 'tokens' | 'levels' (dermbench.features.cache.KINDS)
    view: str  # 'eval' (the release's preprocessing) | 'seg' (224 px squash)
    batch_size: int = 32  # the reading protocol's batch_size_features, so extraction batches exactly as it would

    def describe(self) -> str:
        return f"{self.kind}@{self.view}"


@dataclass(frozen=True)
class Job:
    """One unit of work. ``stage`` 'features': extract ``features`` for the task's train and test images;
    'protocol': run ``protocol`` on them (its ``features`` are what it reads) and write its result."""

    id: str
    stage: str
    model: str  # results label: the key, key@random or key@<sha8> of a weights file
    model_key: str  # registry key
    task: str
    protocol: Optional[str] = None
    features: tuple[FeatureNeed, ...] = ()
    after: tuple[str, ...] = ()  # ids of the jobs whose output this one reads
    explicit: bool = False  # the task was named on the command line: a missing dataset is an error, not a skip
    head_seed: int = 0  # protocol jobs: the seed of the trained head (one job per --seed)

    @property
    def group(self) -> tuple[str, str]:
        """(model, task): the features job and the protocol jobs reading its features."""
        return self.model, self.task

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "Job":
        d = dict(d)
        d["features"] = tuple(FeatureNeed(**f) for f in d.get("features", ()))
        d["after"] = tuple(d.get("after", ()))
        return Job(**d)


@dataclass
class Outcome:
    model: str
    task: str
    protocol: str  # 'features' for a features job
    status: str  # 'done' | 'skipped' | 'failed'
    message: str = ""
    fatal: bool = False  # the run cannot go on (e.g. a backbone gave NaN features): the jobs after it are not run
    metrics: dict[str, Any] = field(default_factory=dict)
    main_metric: str = ""
    job: str = ""  # the job id
    result_key: str = ""  # protocol jobs: the key of the result computed or found (dermbench.run.identity)


def settings_digest(settings, protocol: Optional[str] = None, head_seed: int = 0) -> str:
    """8 hex digits over the settings that make a job different from the same job of another run into the
    same results folder (data, weights; for a protocol also split, replicates, its --set, the head seed), so
    that runs with different settings never share a claim. The result itself is identified by its key
    (:mod:`dermbench.run.identity`), computed by the job."""
    parts: dict[str, Any] = {"data_root": str(settings.data_root) if settings.data_root else None,
                             "weights": settings.weights}
    if settings.data_root is None:
        parts["synth_scale"] = settings.synth_scale
    if protocol is not None:
        parts.update(split_mode=settings.split_mode, split_seed=settings.split_seed,
                     n_boot=settings.n_boot, overrides=settings.overrides.get(protocol) or {}, head_seed=head_seed)
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:8]


def features_job_id(model: str, task: str, digest: str) -> str:
    return f"{model}.{task}.features.{digest}"


def protocol_job_id(model: str, task: str, protocol: str, head_seed: int, digest: str) -> str:
    return f"{model}.{task}.{protocol}.seed{head_seed}.{digest}"


def default_results_dir(data_root: Optional[Path]) -> Path:
    """results/ for real data, results/dermsynth when running on the embedded DermSynth."""
    return Path("results") if data_root is not None else Path("results") / "dermsynth"


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


def results_dir_of(settings) -> Path:
    """Where the results of ``settings`` (a RunSettings) go, without generating any data."""
    from dermbench.config import resolve_data_root

    if settings.output:
        return Path(settings.output)
    data_root, source = resolve_data_root(settings.data_root)
    return default_results_dir(None if source.startswith("default") else data_root)


def plan(settings, log: Optional[Callable[[str], None]] = None) -> list[Job]:
    """The jobs of a run of ``settings`` (a :class:`dermbench.run.runner.RunSettings`), in execution order.

    Raises KeyError / ValueError / FileNotFoundError for an unknown model, task, protocol, protocol
    setting or weights file, before any work starts."""
    from dermbench.data.tasks import select_tasks
    from dermbench.models import registry
    from dermbench.protocols import get_protocol

    cards = select_tasks(settings.tasks)
    explicit = set(settings.tasks.split(",")) & {c.name for c in cards}
    for p in settings.protocols or []:
        get_protocol(p)  # unknown names fail early with the list of valid ones
    jobs: list[Job] = []
    for key in settings.models:
        registry.get(key)
        label = model_label(key, settings.weights)
        for card in cards:
            names = [p for p in card.protocols if settings.protocols is None or p in settings.protocols]
            names += [p for p in settings.protocols or [] if p not in card.protocols and get_protocol(p).accepts(card)]
            if not names:
                if card.name in explicit and log:  # asked for by name: say why nothing runs
                    log(f"{label} · {card.name}: none of the requested protocols ({', '.join(settings.protocols)}) "
                        f"runs on this task; its card lists: {', '.join(card.protocols)}")
                continue
            needs: dict[tuple[str, str], FeatureNeed] = {}
            protocol_needs: dict[str, tuple[FeatureNeed, ...]] = {}
            for name in names:
                # a protocol this installation cannot run (its job says why) needs no features extracted
                protocol_needs[name] = (_feature_needs(name, settings.overrides.get(name) or {})
                                        if runnable(name) is None else ())
                for need in protocol_needs[name]:
                    needs.setdefault((need.kind, need.view), need)
            features_id = features_job_id(label, card.name, settings_digest(settings))
            if needs:
                jobs.append(Job(id=features_id, stage="features", model=label, model_key=key, task=card.name,
                                features=tuple(needs.values()), explicit=card.name in explicit))
            for name in names:
                for seed in settings.head_seeds:
                    jobs.append(Job(id=protocol_job_id(label, card.name, name, seed, settings_digest(settings, name, seed)),
                                    stage="protocol", model=label, model_key=key, task=card.name, protocol=name,
                                    features=protocol_needs[name], after=(features_id,) if needs else (),
                                    explicit=card.name in explicit, head_seed=seed))
    return jobs


def weights_problem(model_key: str, weights: Optional[str]) -> Optional[str]:
    """Why ``model_key`` cannot get its weights, or None when it can: checked once per model when the run is
    planned, so a missing release file is one line per model before any work, not one failure per job.

    ``--weights random`` and a ``--weights`` file (checked by :func:`model_label`) need nothing more; a model
    without a release file (random-vit, dermino-tiny's shipped weights) builds as it is. Otherwise the release
    must be on this machine, or downloadable (the download then happens here, once, as the build would do it)."""
    from dermbench.models import registry
    from dermbench.models.weights import WeightsError, find_local_weights, resolve_weights

    meta = registry.get(model_key).meta
    if weights is not None or not (meta.weights_filename or meta.hub_id):
        return None
    try:
        found, _ = find_local_weights(meta)
        if found is None:
            resolve_weights(meta, None)  # the hub download, when allowed; else the error saying where to put the file
    except WeightsError as exc:
        return str(exc)
    return None


def _feature_needs(protocol_name: str, overrides: dict[str, Any]) -> tuple[FeatureNeed, ...]:
    from dermbench.protocols import get_protocol

    protocol = get_protocol(protocol_name)
    config = protocol.resolve_config(overrides)  # an unknown setting fails here, before any work
    batch = int(config.get("batch_size_features", 32))
    return tuple(FeatureNeed(kind, view, batch) for kind, view in protocol.feature_needs())


def runnable(protocol_name: str) -> Optional[str]:
    """None when the protocol can run in this installation, else why not (a missing module or extra)."""
    import importlib.util

    from dermbench.protocols import get_protocol, is_available

    if not is_available(protocol_name):
        return f"protocol {protocol_name!r} is not available in this version of dermbench"
    protocol = get_protocol(protocol_name)
    missing = [m for m in protocol.requires if importlib.util.find_spec(m) is None]
    if missing:
        return f"needs {', '.join(missing)}: pip install 'dermbench[{protocol.extra}]'"
    return None


# --- job bookkeeping in <results>/_jobs --------------------------------------------------------

def jobs_dir(results_dir: Path) -> Path:
    return Path(results_dir) / "_jobs"


def claims_dir(results_dir: Path) -> Path:
    return jobs_dir(results_dir) / "claims"


def log_path(results_dir: Path, job_id: str) -> Path:
    return jobs_dir(results_dir) / "logs" / f"{job_id}.log"


def done_marker(results_dir: Path, job_id: str) -> Path:
    return jobs_dir(results_dir) / "done" / f"{job_id}.json"


def failure_record(results_dir: Path, job_id: str) -> Path:
    return jobs_dir(results_dir) / "failed" / f"{job_id}.json"


def save_plan(results_dir: Path, settings_dict: dict[str, Any], jobs: list[Job]) -> Path:
    """Record the plan in the results folder, so `dermbench status` knows which jobs to report on."""
    body = {"settings": settings_dict, "jobs": [j.to_dict() for j in jobs]}
    text = json.dumps(body, sort_keys=True, default=str)
    path = jobs_dir(results_dir) / "plans" / f"{hashlib.sha256(text.encode()).hexdigest()[:12]}.json"
    if not path.exists():
        atomic_write_json(path, body)
    return path


def saved_jobs(results_dir: Path) -> list[Job]:
    """Every job of every plan recorded in the results folder (first occurrence of each id, plan by plan)."""
    seen: dict[str, Job] = {}
    plans = sorted((jobs_dir(results_dir) / "plans").glob("*.json"), key=lambda p: (p.stat().st_mtime, p.name))
    for path in plans:
        for d in json.loads(path.read_text())["jobs"]:
            job = Job.from_dict(d)
            seen.setdefault(job.id, job)
    return list(seen.values())


def is_done(results_dir: Path, job: Job) -> bool:
    """Whether the job finished in an earlier run, from its done record: a protocol job when the result it
    recorded (by key) is still finished, a features job when it finished into the feature cache in use now.

    This is what `plan`, `status` and the Slurm submission go by; the jobs themselves decide by the result's
    key (which needs the data hashed and the backbone built), so a dataset edited in place under the same
    path is recomputed by `run`, though `status` still shows the old result as done."""
    try:
        record = json.loads(done_marker(results_dir, job.id).read_text())
    except (FileNotFoundError, ValueError):
        return False
    if job.stage == "protocol":
        key = record.get("result_key")
        return bool(key) and is_finished(results_dir, job.model, job.task, job.protocol, key)
    from dermbench.config import cache_dir

    return record.get("cache") == str(cache_dir() / "features")


@dataclass
class JobState:
    job: Job
    state: str  # one of STATES
    detail: str = ""  # who runs it, or the failure message
    log: str = ""  # log path of a failure (the job's own log; Slurm's stderr where there is one)


def job_states(results_dir: Path, jobs: list[Job]) -> list[JobState]:
    """done / running / failed / missing for each job, from the results and the bookkeeping files."""
    running = claims_mod.live_claims(claims_dir(results_dir))
    return _states(results_dir, jobs, running)


def _states(results_dir: Path, jobs: list[Job], running: dict) -> list[JobState]:
    # a features job is also done when every protocol reading its features is (nothing needs them any more)
    readers: dict[str, list[Job]] = {}
    for j in jobs:
        for up in j.after:
            readers.setdefault(up, []).append(j)
    done = {j.id for j in jobs if j.stage == "protocol" and is_done(results_dir, j)}
    out = []
    for j in jobs:
        if j.id in done or (j.stage == "features" and (is_done(results_dir, j) or
                                                       (readers.get(j.id) and all(r.id in done for r in readers[j.id])))):
            out.append(JobState(j, "done"))
        elif j.id in running:
            out.append(JobState(j, "running", running[j.id].describe()))
        elif failure_record(results_dir, j.id).exists():
            rec = json.loads(failure_record(results_dir, j.id).read_text())
            logs = [rec.get("slurm_stderr"), rec.get("log")]
            out.append(JobState(j, "failed", rec.get("message", ""), " · ".join(p for p in logs if p)))
        else:
            out.append(JobState(j, "missing"))
    return out


def pending(results_dir: Path, jobs: list[Job], overwrite: bool = False) -> list[Job]:
    """The jobs still to run: not done (every job with ``overwrite``, except features whose results are all
    being recomputed anyway; those run too, they are cheap when the features are cached)."""
    if overwrite:
        return list(jobs)
    states = {s.job.id: s.state for s in job_states(results_dir, jobs)}
    return [j for j in jobs if states[j.id] != "done"]


def write_failure(results_dir: Path, job: Job, message: str, extra: Optional[dict[str, Any]] = None) -> None:
    import socket
    import time

    atomic_write_json(failure_record(results_dir, job.id), {
        "job": job.id, "message": message, "host": socket.gethostname(), "pid": os.getpid(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "log": str(log_path(results_dir, job.id)),
        **(extra or {})})


def clear_failure(results_dir: Path, job: Job) -> None:
    try:
        os.unlink(failure_record(results_dir, job.id))
    except FileNotFoundError:
        pass
