"""Executors: who runs the jobs of a plan. All of them hand the same :class:`~dermbench.run.plan.Job`
records to the same worker (:func:`dermbench.run.runner.run_jobs`), so they resume and write the same
results store; claims (:mod:`dermbench.claims`) keep two workers off the same job.

- :class:`LocalExecutor`: every job, in order, in this process (``dermbench run``'s default).
- :class:`ParallelExecutor`: the plan's model × task groups handed out to N worker processes on this
  machine as each becomes free (``--jobs N``): for a CPU machine, where many jobs are bound by one core
  (linear heads, bootstrap, Flower's Ray start) and the cores would otherwise idle.
- :class:`ShardExecutor`: the K-th of N slices of the plan (``--shard K/N``, or ``--shard auto`` from
  ``SLURM_PROCID``/``SLURM_NTASKS`` or ``RANK``/``WORLD_SIZE``), for ``srun``/``torchrun`` launching N
  processes. The plan is cut by (model, task), so a task's features are extracted and read by the same
  process; each process uses the GPU of its ``LOCAL_RANK``.
- :class:`SlurmExecutor`: through submitit, a GPU job array for the features jobs and a CPU job array
  for the protocol jobs (heads, bootstrap, result files), submitted with ``--dependency=afterany`` on
  the first array (one array task per model × task, or per model); then waits (printing progress) or
  returns at once. A protocol job whose features job failed fails at once, naming that job's log.

The worker is passed in (``worker(settings, jobs, log) -> outcomes``) rather than imported: it lives
in :mod:`dermbench.run.runner`, which sits above this module.
"""
from __future__ import annotations

import functools
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from dermbench.run.plan import Job, Outcome, is_done, jobs_dir, pending

Worker = Callable[..., list[Outcome]]


class LocalExecutor:
    """Every job in this process, in plan order."""

    returns_at_once = False

    def execute(self, settings, jobs: list[Job], worker: Worker, log: Callable[[str], None]) -> list[Outcome]:
        return worker(settings, jobs, log)


# --- worker processes on this machine ------------------------------------------------------------

def auto_jobs(device: str, cores: Optional[int] = None) -> int:
    """``--jobs auto``: one process per core up to 4 on a CPU run (each process keeps torch's own
    thread count, so the numbers are those of a one-process run); 1 with a GPU, which one process keeps busy."""
    if device != "cpu":
        return 1
    return max(1, min(cores or os.cpu_count() or 1, 4))


# The worker and settings of this worker process (set by the pool's initializer; spawn starts it fresh).
_POOL: dict[str, Any] = {}


def _pool_start(worker: Worker, settings) -> None:
    _POOL.update(worker=worker, settings=settings, keep={})


def _pool_run_group(group: list[Job]) -> list[Outcome]:
    log = functools.partial(print, flush=True)  # lines of the processes interleave whole, each naming its job
    return _POOL["worker"](_POOL["settings"], group, log, keep=_POOL["keep"])


class ParallelExecutor:
    """The plan's model × task groups run in ``processes`` worker processes of this machine.

    A group (a features job and the protocol jobs reading its features) goes whole to the next free
    process, in plan order, so features are extracted and read in one process and each process keeps its
    built backbones. Results are the same as a one-process run: the same jobs, seeds and thread counts,
    and the claims keep two processes off one job. Progress bars are off (several processes would draw
    over each other); each finished job prints its line. A fatal outcome (NaN features) stops handing out
    groups, and the rest are reported as not run, as in one process."""

    returns_at_once = False

    def __init__(self, processes: int):
        if processes < 1:
            raise ValueError(f"--jobs {processes}: expected a number of processes >= 1, or 'auto'")
        self.processes = processes

    def execute(self, settings, jobs: list[Job], worker: Worker, log: Callable[[str], None]) -> list[Outcome]:
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
        from concurrent.futures.process import BrokenProcessPool
        from dataclasses import replace

        todo = groups(jobs)
        n = min(self.processes, len(todo))
        if n <= 1:
            return worker(settings, jobs, log)
        log(f"--jobs {self.processes}: {len(todo)} model × task group(s) in {n} worker processes")
        settings = replace(settings, progress=False)
        done: dict[int, list[Outcome]] = {}
        stop_why = ""
        # spawn, not fork: a forked child would inherit this process's torch/OpenMP thread pools and locks
        pool = ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_pool_start, initargs=(worker, settings))
        queue = list(enumerate(todo))
        try:
            running: dict[Any, int] = {}
            while queue or running:
                while queue and len(running) < n and not stop_why:
                    i, group = queue.pop(0)
                    running[pool.submit(_pool_run_group, group)] = i
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    i = running.pop(future)
                    try:
                        done[i] = future.result()
                    except BrokenProcessPool:
                        stop_why = ("a --jobs worker process died (killed, or out of memory?); finished results "
                                    "are kept: run again to resume, with fewer --jobs if memory ran out")
                        done[i] = [Outcome(j.model, j.task, j.protocol or "features", "failed", stop_why, job=j.id)
                                   for j in todo[i]]
                    if any(o.fatal for o in done[i]) and not stop_why:
                        stop_why = next(f"not run: the run stopped at {o.job}" for o in done[i] if o.fatal)
        except BaseException:
            # Ctrl-C or a kill of this process: stop the workers now rather than wait for their groups (what
            # they finished is stored; their claims turn stale with them, and a rerun takes those jobs over).
            # ProcessPoolExecutor has no public way to stop running workers before Python 3.14.
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        for i, group in queue:  # never handed out: the run stopped
            done[i] = [Outcome(j.model, j.task, j.protocol or "features", "skipped", stop_why, job=j.id)
                       for j in group]
        return [o for i in sorted(done) for o in done[i]]


# --- shards --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Shard:
    index: int
    count: int
    source: str = "--shard"  # where the numbers came from
    local_rank: Optional[int] = None

    def describe(self) -> str:
        return f"shard {self.index}/{self.count} (from {self.source})"


def parse_shard(text: str, env: Optional[dict[str, str]] = None) -> Shard:
    """``K/N`` (0 <= K < N) or ``auto``; ValueError with the fix otherwise."""
    env = os.environ if env is None else env
    if text == "auto":
        return shard_from_env(env)
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected K/N (e.g. 0/4, for shard K of N) or 'auto'") from None
    if not 0 <= k < n:
        raise ValueError(f"--shard {text!r}: K must lie in 0..N-1 (shards are numbered from 0)")
    return Shard(k, n, "--shard", _local_rank(env))


def shard_from_env(env: dict[str, str]) -> Shard:
    """This process's shard from Slurm (srun: SLURM_PROCID/SLURM_NTASKS) or torchrun (RANK/WORLD_SIZE)."""
    for rank, size in (("SLURM_PROCID", "SLURM_NTASKS"), ("RANK", "WORLD_SIZE")):
        if env.get(rank) is not None and env.get(size) is not None:
            shard = Shard(int(env[rank]), int(env[size]), f"{rank}/{size}", _local_rank(env))
            if not 0 <= shard.index < shard.count:
                raise ValueError(f"--shard auto: {rank}={env[rank]} does not lie in 0..{size}-1={shard.count - 1}")
            return shard
    raise ValueError("--shard auto: neither SLURM_PROCID/SLURM_NTASKS (srun) nor RANK/WORLD_SIZE (torchrun) is set; "
                     "launch through srun or torchrun, or give --shard K/N")


def _local_rank(env: dict[str, str]) -> Optional[int]:
    for name in ("LOCAL_RANK", "SLURM_LOCALID"):
        if env.get(name) is not None:
            return int(env[name])
    return None


def groups(jobs: list[Job]) -> list[list[Job]]:
    """Jobs by (model, task), in plan order: a features job and the protocol jobs reading its features."""
    by_group: dict[tuple[str, str], list[Job]] = {}
    for job in jobs:
        by_group.setdefault(job.group, []).append(job)
    return list(by_group.values())


def model_groups(jobs: list[Job]) -> list[list[Job]]:
    """Jobs by model, in plan order."""
    by_model: dict[str, list[Job]] = {}
    for job in jobs:
        by_model.setdefault(job.model, []).append(job)
    return list(by_model.values())


def select_shard(jobs: list[Job], shard: Shard) -> list[Job]:
    """Group i of the plan goes to shard i mod N; the shards' union is the plan, and they do not overlap."""
    return [job for i, group in enumerate(groups(jobs)) if i % shard.count == shard.index for job in group]


def shard_device(device: str, shard: Shard) -> str:
    """One GPU per process: cuda:LOCAL_RANK when running on CUDA with a local rank."""
    if shard.local_rank is not None and device == "cuda":
        return f"cuda:{shard.local_rank}"
    return device


class ShardExecutor:
    returns_at_once = False

    def __init__(self, shard: Shard):
        self.shard = shard

    def execute(self, settings, jobs: list[Job], worker: Worker, log: Callable[[str], None]) -> list[Outcome]:
        from dataclasses import replace

        mine = select_shard(jobs, self.shard)
        settings = replace(settings, device=shard_device(settings.device, self.shard))
        log(f"{self.shard.describe()}: {len(mine)} of {len(jobs)} job(s), "
            f"{len(groups(mine))} of {len(groups(jobs))} model × task group(s), device {settings.device}")
        return worker(settings, mine, log)


# --- Slurm through submitit ----------------------------------------------------------------------

@dataclass
class SlurmOptions:
    partition: Optional[str] = None
    gpus: int = 1  # per features array task; the protocol array asks for none
    time_min: int = 240
    mem: Optional[str] = None  # e.g. '32G'
    array_parallelism: int = 64
    settings: dict[str, str] = field(default_factory=dict)  # any other sbatch option, e.g. {'account': 'derm'}
    # One array task per backbone × task ('task': most parallel) or per backbone ('model': each backbone's
    # weights loaded once per array, fewer and longer tasks; worth it for many small tasks)
    group_by: str = "task"
    wait: bool = True
    poll_s: float = 5.0


def parse_slurm_settings(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items or []:
        if "=" not in item or not item.split("=", 1)[0]:
            raise ValueError(f"--slurm-setting {item!r}: expected KEY=VALUE, an sbatch option without its dashes, "
                             "e.g. --slurm-setting account=derm or --slurm-setting cpus-per-task=8")
        key, value = item.split("=", 1)
        out[key.strip().lstrip("-")] = value.strip()
    return out


def parse_slurm_time(text: str) -> int:
    """Minutes, or [D-]HH:MM[:SS] as sbatch takes it; ValueError otherwise."""
    try:
        if ":" not in text:
            return int(text)
        days, _, clock = text.rpartition("-")
        parts = [int(p) for p in clock.split(":")]
        hours, minutes, seconds = (parts + [0])[:3] if len(parts) == 2 else parts
        total = (int(days) if days else 0) * 1440 + hours * 60 + minutes + (1 if seconds else 0)
    except ValueError:
        raise ValueError(f"--slurm-time {text!r}: expected minutes (e.g. 240) or HH:MM:SS (e.g. 04:00:00)") from None
    if total <= 0:
        raise ValueError(f"--slurm-time {text!r}: the time limit must be positive")
    return total


def _slurm_task(worker: Worker, settings, jobs: list[Job]) -> list[dict[str, Any]]:
    """What one array task runs (on the node, through submitit): the worker on its jobs."""
    outcomes = worker(settings, jobs, functools.partial(print, flush=True))
    return [vars(o) for o in outcomes]


class SlurmExecutor:
    devices_on_nodes = True  # --device is checked on the nodes, not on the submitting machine

    def __init__(self, options: SlurmOptions):
        self.options = options
        self.returns_at_once = not options.wait

    def _executor(self, folder: Path, name: str, gpus: int, dependency: Optional[str]):
        import submitit

        o = self.options
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=0)
        params: dict[str, Any] = {"job_name": name, "time": o.time_min, "array_parallelism": o.array_parallelism}
        if o.partition:
            params["partition"] = o.partition
        if o.mem:
            params["mem"] = o.mem
        if gpus:
            params["gpus_per_node"] = gpus
        if dependency:
            params["dependency"] = dependency
        if o.settings:
            params["additional_parameters"] = dict(o.settings)
        executor.update_parameters(**params)
        return executor

    def execute(self, settings, jobs: list[Job], worker: Worker, log: Callable[[str], None]) -> list[Outcome]:
        from dataclasses import replace

        results_dir = Path(settings.output)
        todo = pending(results_dir, jobs, settings.overwrite)
        if not todo:
            log(f"slurm: all {len(jobs)} job(s) of the plan are done; nothing to submit")
            return []
        folder = jobs_dir(results_dir) / "slurm"
        # a features job runs on a GPU node; its protocols on CPU nodes, with the features from the shared cache
        gpu_settings = replace(settings, progress=False, device="cuda" if self.options.gpus else settings.device)
        cpu_settings = replace(settings, progress=False, device="cpu")
        chunks = groups(todo) if self.options.group_by == "task" else model_groups(todo)
        feature_groups = [g for g in ([j for j in chunk if j.stage == "features"] for chunk in chunks) if g]
        protocol_groups = [g for g in ([j for j in chunk if j.stage == "protocol"] for chunk in chunks) if g]
        submitted: list[tuple[str, list[Job], Any]] = []
        dependency = None
        if feature_groups:
            ex = self._executor(folder, "dermbench-features", self.options.gpus, None)
            array = _submit(ex, functools.partial(_slurm_task, worker, gpu_settings), feature_groups, "features")
            submitted += [("features", g, j) for g, j in zip(feature_groups, array)]
            array_id = array[0].job_id.split("_")[0]
            dependency = f"afterany:{array_id}"
            log(f"slurm: submitted features array {array_id} ({len(array)} task(s), {self.options.gpus} GPU(s) each)")
        if protocol_groups:
            ex = self._executor(folder, "dermbench-heads", 0, dependency)
            array = _submit(ex, functools.partial(_slurm_task, worker, cpu_settings), protocol_groups, "protocols")
            submitted += [("protocol", g, j) for g, j in zip(protocol_groups, array)]
            array_id = array[0].job_id.split("_")[0]
            log(f"slurm: submitted protocols array {array_id} ({len(array)} task(s), CPU"
                f"{', after ' + dependency.split(':')[1] if dependency else ''})")
        log(f"slurm: logs in {folder}; `dermbench status --results {results_dir}` shows each job")
        if not self.options.wait:
            return []
        return self._wait(submitted, results_dir, log)

    def _wait(self, submitted, results_dir: Path, log) -> list[Outcome]:
        """Poll until every array task has ended, printing progress; then the outcomes of every job.

        Without Slurm accounting (sacct) submitit cannot tell a task's state, so a task counts as ended
        when its result file exists, or when it left the queue (squeue) and no result came within a grace
        period: killed (time limit, memory, node failure) before it could write one."""
        left = {j.job_id: (stage, group, j) for stage, group, j in submitted}
        outcomes: list[Outcome] = []
        gone_since: dict[str, float] = {}
        last = ""
        while left:
            queued = _queued(sorted({i.split("_")[0] for i in left}))
            for job_id, (stage, group, sub) in list(left.items()):
                if sub.paths.result_pickle.exists():
                    outcomes += _collect(sub, group, results_dir)
                    del left[job_id]
                elif queued is not None and job_id not in queued:
                    if time.time() - gone_since.setdefault(job_id, time.time()) > 30:
                        outcomes += _lost(sub, group, results_dir)
                        del left[job_id]
            ended = {s: sum(1 for st, _, _ in submitted if st == s) - sum(1 for st, _, _ in left.values() if st == s)
                     for s in ("features", "protocol")}
            total = {s: sum(1 for st, _, _ in submitted if st == s) for s in ("features", "protocol")}
            running = sum(1 for i in left if queued and queued.get(i) == "RUNNING")
            line = (f"slurm: features {ended['features']}/{total['features']} · protocols "
                    f"{ended['protocol']}/{total['protocol']} array task(s) ended, {running} running")
            if line != last:
                log(line)
                last = line
            if left:
                time.sleep(self.options.poll_s)
        # a task writes its result just before its process exits: wait (a little) until Slurm has let them go,
        # so that when `--wait` returns, nothing of the run is left in the queue
        arrays = sorted({j.job_id.split("_")[0] for _, _, j in submitted})
        deadline = time.time() + 120
        while time.time() < deadline and (_queued(arrays) or {}):
            time.sleep(1)
        for o in outcomes:
            if o.status == "failed":
                log(f"slurm: {o.job} FAILED: {o.message}")
        return outcomes


def _submit(executor, fn, groups_: list[list[Job]], what: str):
    """map_array, with sbatch's refusal (bad partition, account, time limit...) as a one-line error."""
    import submitit

    try:
        return executor.map_array(fn, groups_)
    except (submitit.core.utils.FailedSubmissionError, subprocess.CalledProcessError, OSError) as exc:
        detail = " ".join(str(exc).split())[-400:]
        raise ValueError(f"Slurm refused the {what} array ({detail}); check --slurm-partition, --slurm-time, "
                         "--slurm-mem and --slurm-setting against `sinfo` and your site's limits") from None


def _queued(array_ids: list[str]) -> Optional[dict[str, str]]:
    """task id ('<array>_<index>') -> state of the array tasks still in the queue; None if squeue failed."""
    if not array_ids:
        return {}
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(array_ids)], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        # squeue exits non-zero for job ids the controller already purged: then none of them is queued
        return {} if "Invalid job id" in out.stderr else None
    return dict(line.split(None, 1) for line in out.stdout.splitlines() if line.strip())


def _collect(sub, group: list[Job], results_dir: Path) -> list[Outcome]:
    try:
        return [Outcome(**d) for d in sub.result()]
    except Exception as exc:  # the task raised outside the worker's own handling (e.g. an import error)
        return [Outcome(j.model, j.task, j.protocol or "features", "failed",
                        f"slurm task {sub.job_id} raised {type(exc).__name__}: {str(exc).strip().splitlines()[-1:]}; "
                        f"log: {sub.paths.stderr}", job=j.id) for j in group]


def _lost(sub, group: list[Job], results_dir: Path) -> list[Outcome]:
    from dermbench.run.plan import write_failure

    out = []
    for j in group:
        if is_done(results_dir, j):
            out.append(Outcome(j.model, j.task, j.protocol or "features", "done", job=j.id))
            continue
        message = f"slurm task {sub.job_id} ended without a result (killed: time limit, memory or node failure?)"
        write_failure(results_dir, j, message, {"slurm_stderr": str(sub.paths.stderr), "slurm_job": sub.job_id})
        out.append(Outcome(j.model, j.task, j.protocol or "features", "failed", f"{message}; log: {sub.paths.stderr}",
                           job=j.id))
    return out
