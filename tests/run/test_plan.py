"""The run plan, claims, shards and `dermbench plan` / `dermbench status`."""
from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import time

import pytest
from typer.testing import CliRunner

from dermbench.cli import app
from dermbench import claims
from dermbench.run.executors import Shard, parse_shard, select_shard, shard_device
from dermbench.run.plan import Job, job_states, plan, save_plan
from dermbench.run.runner import RunSettings
from tests.run.conftest import GRID, assert_same_numbers, dermbench_cmd, stored, subprocess_env

runner = CliRunner()


def _grid_settings(**kw) -> RunSettings:
    return RunSettings(models=["random-vit", "dermino-tiny"], tasks="ddi,acne04,mednode",
                       protocols=["retrieval", "linear"], **kw)


def test_plan_holds_features_then_protocols_per_model_and_task():
    jobs = plan(_grid_settings())
    assert len(jobs) == 2 * 3 * 3
    features = [j for j in jobs if j.stage == "features"]
    assert [(j.model, j.task) for j in features] == [(m, t) for m in ("random-vit", "dermino-tiny")
                                                     for t in ("ddi", "acne04", "mednode")]
    position = {j.id: i for i, j in enumerate(jobs)}
    for j in jobs:
        if j.stage == "protocol":
            assert j.after[0].startswith(f"{j.model}.{j.task}.features.") and position[j.after[0]] < position[j.id]
            assert [n.describe() for n in j.features] == ["global@eval"]
    assert len({j.id for j in jobs}) == len(jobs)


def test_plan_lists_the_features_each_protocol_reads():
    jobs = plan(RunSettings(models=["random-vit"], tasks="isic2018", protocols=["seg-linear", "seg-upernet"],
                            overrides={"seg-linear": {"batch_size_features": "8"}}))
    feats = next(j for j in jobs if j.stage == "features")
    assert [(n.kind, n.view, n.batch_size) for n in feats.features] == [("tokens", "seg", 8), ("levels", "seg", 16)]


def test_jobs_round_trip_through_json():
    jobs = plan(_grid_settings())
    again = [Job.from_dict(d) for d in json.loads(json.dumps([j.to_dict() for j in jobs]))]
    assert again == jobs


def test_job_ids_differ_by_the_settings_of_their_results():
    base = {j.id for j in plan(_grid_settings())}
    assert base == {j.id for j in plan(_grid_settings())}
    for changed in (_grid_settings(seeds=[1]), _grid_settings(n_boot=200), _grid_settings(split_seed=1),
                    _grid_settings(split_mode="official")):
        ids = {j.id for j in plan(changed) if j.stage == "protocol"}
        assert ids.isdisjoint(base)  # concurrent runs with other settings never share a claim
    with_set = plan(_grid_settings(overrides={"linear": {"epochs": "5"}}))
    assert {j.id for j in with_set if j.protocol == "linear"}.isdisjoint(base)
    assert {j.id for j in with_set if j.protocol != "linear"} <= base  # --set linear.* leaves the other jobs as they are
    seeds = plan(_grid_settings(seeds=[0, 1, 2]))
    assert sum(j.stage == "protocol" for j in seeds) == 2 * 3 * 2 * 3
    assert {j.head_seed for j in seeds if j.stage == "protocol"} == {0, 1, 2}


def test_plan_fails_early_on_an_unknown_protocol_setting():
    with pytest.raises(KeyError, match="has no setting 'epoch'"):
        plan(_grid_settings(overrides={"linear": {"epoch": "5"}}))


def test_shards_partition_the_plan_by_model_and_task():
    jobs = plan(_grid_settings())
    parts = [select_shard(jobs, Shard(k, 4)) for k in range(4)]
    ids = [j.id for part in parts for j in part]
    assert sorted(ids) == sorted(j.id for j in jobs) and len(ids) == len(set(ids))
    for part in parts:  # a task's features and the protocols reading them stay in one process
        groups = {j.group for j in part}
        assert all(sum(j.group == g for j in part) == 3 for g in groups)


def test_shard_from_the_launchers_environment():
    assert parse_shard("1/3") == Shard(1, 3, "--shard", None)
    srun = parse_shard("auto", {"SLURM_PROCID": "2", "SLURM_NTASKS": "4", "SLURM_LOCALID": "0"})
    assert (srun.index, srun.count, srun.local_rank) == (2, 4, 0)
    torchrun = parse_shard("auto", {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"})
    assert (torchrun.index, torchrun.count) == (3, 8) and shard_device("cuda", torchrun) == "cuda:1"
    assert shard_device("cpu", torchrun) == "cpu"
    for bad, message in (("2/2", "0..N-1"), ("x", "expected K/N"), ("auto", "neither SLURM_PROCID")):
        with pytest.raises(ValueError, match=message):
            parse_shard(bad, {})


def test_claims_exclude_a_second_worker_and_release_only_their_own(tmp_path):
    first = claims.try_claim(tmp_path, "job-a")
    assert first is not None and claims.try_claim(tmp_path, "job-a") is None
    claims.release(first)
    second = claims.try_claim(tmp_path, "job-a")
    assert second is not None
    claims.release(first)  # released already: must not remove the second worker's claim
    assert claims.holds(second)
    assert list(claims.live_claims(tmp_path)) == ["job-a"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def _write_claim(path, host, pid, age_s):
    holder = claims.Holder(host=host, pid=pid, time=time.time() - age_s, token="old")
    path.write_text(json.dumps(vars(holder)))
    os.utime(path, (time.time() - age_s, time.time() - age_s))


def test_stale_claims_are_taken_over(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    _write_claim(tmp_path / "dead.claim", socket.gethostname(), dead.pid, 0)  # this host, holder gone
    _write_claim(tmp_path / "silent.claim", "other-node", 1, 3600)  # other host, no heartbeat for an hour
    _write_claim(tmp_path / "alive.claim", "other-node", 1, 10)  # other host, recent heartbeat
    assert claims.try_claim(tmp_path, "dead") is not None
    assert claims.try_claim(tmp_path, "silent", stale_after=300) is not None
    assert claims.try_claim(tmp_path, "alive", stale_after=300) is None


def test_leftovers_of_killed_claimers_are_swept_and_live_ones_kept(tmp_path):
    """A claimer SIGKILLed between writing its temporary file and removing it leaves the file behind
    (seen in CI: test_resume_after_sigkill_mid_shard); the sweep removes it, and only it."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    names = {
        "dead_tmp": f".job.a.claim.{host}.{dead.pid}.{'0' * 32}.tmp",
        "dead_aside": f".job.b.claim.{host}.{dead.pid}.{'1' * 32}.aside",
        "live_tmp": f".job.c.claim.{host}.{os.getpid()}.{'2' * 32}.tmp",
        "other_fresh": f".job.d.claim.node-7.cluster.12.{'3' * 32}.tmp",
        "other_old": f".job.e.claim.node-7.cluster.12.{'4' * 32}.tmp",
    }
    for name in names.values():
        (tmp_path / name).write_text("{}")
    day_ago = time.time() - 2 * 86400
    os.utime(tmp_path / names["other_old"], (day_ago, day_ago))
    held = claims.try_claim(tmp_path, "job.f")
    assert claims.sweep_leftovers(tmp_path) == 3
    assert sorted(os.listdir(tmp_path)) == sorted([names["live_tmp"], names["other_fresh"], "job.f.claim"])
    assert claims.holds(held)


def test_heartbeat_keeps_a_claim_fresh(tmp_path):
    claim = claims.try_claim(tmp_path, "long")
    os.utime(claim.path, (time.time() - 1000, time.time() - 1000))
    with claims.Heartbeat(claim, interval=0.05):
        time.sleep(0.3)
    assert time.time() - claim.path.stat().st_mtime < 5


def _race(folder, ids, queue, all_reported):
    won = []
    for job_id in ids:
        c = claims.try_claim(folder, job_id)
        if c is not None:
            won.append(job_id)
    queue.put(won)
    # Stay alive until every worker has raced: a claim whose process is gone is stale and rightly
    # taken over, so a worker that finished first and exited would hand its jobs to a slow one.
    all_reported.wait(60)


def test_concurrent_workers_never_claim_the_same_job(tmp_path):
    ids = [f"job-{i}" for i in range(40)]
    ctx = multiprocessing.get_context("fork")
    queue, all_reported = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_race, args=(tmp_path, ids if k % 2 else ids[::-1], queue, all_reported))
             for k in range(4)]
    for p in procs:
        p.start()
    won = [job for _ in procs for job in queue.get(timeout=60)]
    all_reported.set()
    for p in procs:
        p.join()
    assert sorted(won) == sorted(ids)  # each job claimed exactly once


def test_status_reports_done_running_failed_and_missing(tmp_path, monkeypatch):
    from dermbench.protocols.linear_probe import LinearProbe
    from dermbench.run.runner import run_benchmark

    def broken(self, ctx):
        raise RuntimeError("head diverged")

    monkeypatch.setattr(LinearProbe, "run", broken)
    settings = RunSettings(models=["random-vit"], tasks="ddi", protocols=["retrieval", "linear"],
                           output=tmp_path, n_boot=100, synth_scale=0.25, progress=False)
    outcomes = run_benchmark(settings, log=lambda line: None)
    assert {(o.task, o.protocol): o.status for o in outcomes} == {("ddi", "retrieval"): "done", ("ddi", "linear"): "failed"}
    log = next((tmp_path / "_jobs" / "logs").glob("random-vit.ddi.linear.seed0.*.log"))
    assert "RuntimeError: head diverged" in log.read_text() and "Traceback" in log.read_text()
    # a plan covering more: one more task, never run; a live claim of another worker on one of its jobs
    bigger = plan(RunSettings(models=["random-vit"], tasks="ddi,acne04", protocols=["retrieval", "linear"],
                              n_boot=100, synth_scale=0.25))
    save_plan(tmp_path, {}, bigger)
    acne_features = next(j.id for j in bigger if j.task == "acne04" and j.stage == "features")
    claim = claims.try_claim(tmp_path / "_jobs" / "claims", acne_features)
    res = runner.invoke(app, ["status", "--results", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    states = {(r["task"], r["protocol"] or "features"): r for r in json.loads(res.output)["items"]}
    assert states[("ddi", "retrieval")]["state"] == "done"
    assert states[("ddi", "features")]["state"] == "done"
    assert states[("ddi", "linear")]["state"] == "failed"
    assert states[("ddi", "linear")]["log"].endswith(log.name)
    assert "head diverged" in states[("ddi", "linear")]["detail"]
    assert states[("acne04", "features")]["state"] == "running"
    assert states[("acne04", "linear")]["state"] == "missing"
    text = runner.invoke(app, ["status", "--results", str(tmp_path)]).output
    assert "2 done, 1 running, 1 failed, 2 missing" in text and "log: " in text
    claims.release(claim)


def test_plan_command_lists_jobs_and_their_state(tmp_path):
    res = runner.invoke(app, ["plan", *GRID[:6], "--output", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)["items"]
    assert len(rows) == 18 and {r["state"] for r in rows} == {"missing"}
    assert rows[0]["stage"] == "features" and rows[0]["features"] == [{"kind": "global", "view": "eval", "batch_size": 32}]
    res = runner.invoke(app, ["plan", *GRID[:6], "--output", str(tmp_path), "--shard", "1/2"])
    assert res.exit_code == 0 and "9 job(s)" in res.output
    res = runner.invoke(app, ["plan", "--model", "random-vit", "--task", "ddi", "--set", "linear.epoch=3"])
    assert res.exit_code == 2 and "has no setting 'epoch'" in res.output


@pytest.mark.slow
def test_two_shard_processes_together_equal_the_local_run(grid_reference, tmp_path):
    out = tmp_path / "sharded"
    procs = [subprocess.Popen(dermbench_cmd("run", *GRID, "--output", str(out), "--shard", f"{k}/2"),
                              env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for k in range(2)]
    logs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    assert "shard 0/2 (from --shard): 9 of 18 job(s), 3 of 6" in logs[0]
    assert all("6 result(s) computed, 0 skipped, 0 failed" in log for log in logs), logs
    assert_same_numbers(out, grid_reference)
    res = runner.invoke(app, ["status", "--results", str(out)])
    assert "18 done, 0 running, 0 failed, 0 missing" in res.output


@pytest.mark.slow
def test_two_worker_processes_give_the_local_numbers(grid_reference, tmp_path):
    """`--jobs 2` (dermbench.run.executors.ParallelExecutor; unit tests in test_parallel.py), here beside the
    shard test so that both share the grid reference in one xdist worker (--dist loadscope). Two of the grid's three tasks (4 model × task groups) in two processes: the one-process numbers."""
    out = tmp_path / "jobs2"
    grid = list(GRID)
    grid[grid.index("--task") + 1] = "ddi,mednode"
    res = subprocess.run(dermbench_cmd("run", *grid, "--output", str(out), "--jobs", "2"), env=subprocess_env(),
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "--jobs 2: 4 model × task group(s) in 2 worker processes" in res.stdout
    assert "8 result(s) computed, 0 skipped, 0 failed" in res.stdout
    got, reference = stored(out), stored(grid_reference)
    assert len(got) == 8 and set(got) <= set(reference)
    for key, record in got.items():
        assert record["metrics"] == reference[key]["metrics"], key
        assert record["predictions"]["sha256"] == reference[key]["predictions"]["sha256"], key


def test_executor_options_fail_before_any_work_with_one_line_errors():
    from dermbench.run.executors import parse_slurm_settings, parse_slurm_time

    assert parse_slurm_time("90") == 90 and parse_slurm_time("04:00:00") == 240 and parse_slurm_time("1-00:30") == 1470
    assert parse_slurm_settings(["account=derm", "--qos=high"]) == {"account": "derm", "qos": "high"}
    base = ["run", "--model", "random-vit", "--task", "ddi"]
    for extra, message in ((["--executor", "pbs"], "expected 'local' or 'slurm'"),
                           (["--executor", "slurm", "--shard", "0/2"], "give one or the other"),
                           (["--shard", "2/2"], "K must lie in 0..N-1"),
                           (["--executor", "slurm", "--slurm-time", "4h"], "expected minutes"),
                           (["--executor", "slurm", "--slurm-setting", "account"], "expected KEY=VALUE"),
                           (["--executor", "slurm", "--slurm-group-by", "node"], "expected 'task'")):
        res = runner.invoke(app, base + extra)
        assert res.exit_code == 2 and message in res.output, (extra, res.output)
        assert "Results:" not in res.output  # nothing started
