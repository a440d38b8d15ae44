"""`dermbench run --executor slurm` on a real one-node Slurm cluster started in a temporary folder.

Skips (printing why) only where Slurm cannot start: not root, or slurm-wlm/munge not installed
(.ci/run installs them). The cluster's daemons are stopped by their pids when the module ends.
"""
from __future__ import annotations

import subprocess

import pytest
from typer.testing import CliRunner

from dermbench.cli import app
from tests.run.conftest import GRID, assert_same_numbers, dermbench_cmd, subprocess_env
from tests.run.slurm_cluster import SlurmCluster, SlurmUnavailable

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    try:
        c = SlurmCluster(tmp_path_factory.mktemp("slurm")).__enter__()
    except SlurmUnavailable as exc:
        print(f"Slurm cannot start here: {exc}")
        pytest.skip(f"Slurm cannot start here: {exc}")
    yield c
    c.stop()


def _slurm_run(cluster, out, cache, *extra):
    from dermbench.data.synth import ensure_dermsynth

    # the DermSynth copy of the session, and a cache of its own: the GPU array must really extract features
    data_root = ensure_dermsynth(scale=0.25)
    return subprocess.run(
        dermbench_cmd("run", *GRID, "--data-root", str(data_root), "--output", str(out), "--executor", "slurm",
                      "--slurm-gpus", "0", "--slurm-time", "20", "--slurm-group-by", "model", *extra),
        env=subprocess_env(**cluster.env({}), DERMBENCH_CACHE=str(cache)), capture_output=True, text=True, timeout=900)


def test_slurm_arrays_give_the_local_numbers(cluster, grid_reference, tmp_path):
    out = tmp_path / "slurm-results"
    res = _slurm_run(cluster, out, tmp_path / "cache")
    log = res.stdout + res.stderr
    assert res.returncode == 0, log
    assert "submitted features array" in log and "submitted protocols array" in log and ", after " in log
    assert "12 result(s) computed, 0 skipped, 0 failed" in log
    assert_same_numbers(out, grid_reference)
    # the features were extracted by the first array, in the nodes' cache, not by the protocol jobs
    extract_logs = sorted((out / "_jobs" / "logs").glob("*.features.*.log"))
    assert len(extract_logs) == 6 and all("image(s) computed, 0 cached" in p.read_text() for p in extract_logs)
    heads = next((out / "_jobs" / "logs").glob("dermino-tiny.ddi.linear.seed0.*.log")).read_text()
    assert "auroc" in heads
    assert list((out / "_jobs" / "slurm").glob("*_log.out"))  # submitit's per-task Slurm logs
    status = runner.invoke(app, ["status", "--results", str(out)])
    assert "18 done, 0 running, 0 failed, 0 missing" in status.output

    again = _slurm_run(cluster, out, tmp_path / "cache")  # resumes: everything is done, nothing submitted
    assert again.returncode == 0 and "nothing to submit" in again.stdout, again.stdout + again.stderr
    queue = subprocess.run(["squeue", "-h"], env=cluster.env(), capture_output=True, text=True)
    assert queue.stdout.strip() == ""
