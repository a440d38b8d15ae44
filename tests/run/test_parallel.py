"""`dermbench run --jobs N`: model × task groups in N local worker processes (dermbench.run.executors.ParallelExecutor)."""
from __future__ import annotations

import dataclasses
import os
import signal
import time

import pytest

from dermbench.run.executors import ParallelExecutor, auto_jobs, groups
from dermbench.run.plan import Job, Outcome


def _jobs(n_groups: int) -> list[Job]:
    jobs = []
    for g in range(n_groups):
        feats = Job(id=f"m.t{g}.features", stage="features", model="m", model_key="m", task=f"t{g}")
        jobs += [feats, Job(id=f"m.t{g}.linear", stage="protocol", model="m", model_key="m", task=f"t{g}",
                            protocol="linear", after=(feats.id,))]
    return jobs


def fake_worker(settings, jobs, log, keep=None):
    """Stands in for run_jobs in the worker processes: task t1's features are 'NaN', task t2's process dies."""
    keep.setdefault("pid", os.getpid())
    out = []
    for job in jobs:
        if settings["sleeps_on"] and job.task.startswith(settings["sleeps_on"]):
            time.sleep(120)
        if job.task == settings["dies_on"]:
            os._exit(9)
        fatal = job.task == settings["fatal_on"] and job.stage == "features"
        out.append(Outcome(job.model, job.task, job.protocol or "features", "failed" if fatal else "done",
                           f"pid {keep['pid']}", fatal=fatal, job=job.id))
    return out




@dataclasses.dataclass(frozen=True)
class _S:
    fatal_on: str = ""
    dies_on: str = ""
    sleeps_on: str = ""
    progress: bool = True

    def __getitem__(self, key):
        return getattr(self, key)


def test_every_group_runs_once_in_plan_order_across_processes():
    outcomes = ParallelExecutor(2).execute(_S(), _jobs(6), fake_worker, lambda m: None)
    assert [o.job for o in outcomes] == [j.id for j in _jobs(6)]  # every job, once, in plan order
    assert all(o.status == "done" for o in outcomes)
    for group in groups(_jobs(6)):  # a group's jobs ran in one process (its features are read where extracted)
        assert len({o.message for o in outcomes if o.task == group[0].task}) == 1


def test_a_fatal_outcome_stops_handing_out_groups():
    outcomes = ParallelExecutor(2).execute(_S(fatal_on="t1"), _jobs(8), fake_worker, lambda m: None)
    by_job = {o.job: o for o in outcomes}
    assert len(by_job) == 16 and by_job["m.t1.features"].fatal
    skipped = [o for o in outcomes if o.status == "skipped"]
    assert skipped and all(o.message == "not run: the run stopped at m.t1.features" for o in skipped)
    assert by_job["m.t7.linear"].status == "skipped"  # the last group was never started


def test_a_worker_process_that_dies_fails_its_groups_with_the_reason():
    outcomes = ParallelExecutor(2).execute(_S(dies_on="t2"), _jobs(5), fake_worker, lambda m: None)
    by_job = {o.job: o for o in outcomes}
    assert len(by_job) == 10
    assert by_job["m.t2.features"].status == "failed"
    assert "worker process died" in by_job["m.t2.features"].message and "run again to resume" in by_job["m.t2.features"].message
    # the pool goes down with the process: groups in flight fail the same way, those never handed out are skipped
    assert all(o.status == "done" or "worker process died" in o.message for o in outcomes)


def test_an_interrupt_stops_the_worker_processes_at_once():
    """Ctrl-C (SIGINT to this process) while both workers are busy: raised here within seconds, workers gone."""
    import multiprocessing

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGALRM, interrupt)
    signal.alarm(8)  # the workers are started (spawn) and asleep in their groups by then
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            ParallelExecutor(2).execute(_S(sleeps_on="t"), _jobs(3), fake_worker, lambda m: None)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)
    assert time.monotonic() - started < 30  # not the 120 s the sleeping group would take
    deadline = time.monotonic() + 10
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not multiprocessing.active_children()


def test_auto_is_one_process_per_core_up_to_4_on_cpu_and_1_with_a_gpu():
    assert auto_jobs("cpu", cores=2) == 2 and auto_jobs("cpu", cores=64) == 4 and auto_jobs("cpu", cores=1) == 1
    assert auto_jobs("cuda", cores=64) == 1 and auto_jobs("cuda:1", cores=8) == 1 and auto_jobs("mps", cores=8) == 1
