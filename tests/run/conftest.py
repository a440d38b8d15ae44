"""The 2 models × 3 DermSynth tasks grid run locally once per test session: the reference the shard
and Slurm executors' results must equal."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

GRID = ["--model", "random-vit,dermino-tiny", "--task", "ddi,acne04,mednode", "--protocol", "retrieval,linear",
        "--synth-scale", "0.25", "--n-boot", "100", "--quiet"]
REPO = Path(__file__).resolve().parents[2]


def dermbench_cmd(*args: str) -> list[str]:
    """The dermbench CLI as a separate process (the worktree first on the path)."""
    return [sys.executable, "-c", "from dermbench.cli import main; main()", *args]


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def stored(results_dir: Path) -> dict[tuple[str, str, str], dict]:
    from dermbench.run.results import iter_results

    return {(r["model"], r["task"], r["protocol"]): r for r in iter_results(results_dir)}


def assert_same_numbers(got: Path, reference: Path) -> None:
    """Same results, with the same metrics and byte-identical predictions."""
    a, b = stored(got), stored(reference)
    assert set(a) == set(b) and len(b) == 12
    for key in b:
        assert a[key]["metrics"] == b[key]["metrics"], key
        assert a[key]["predictions"]["sha256"] == b[key]["predictions"]["sha256"], key
        assert a[key]["split_sha256"] == b[key]["split_sha256"], key


@pytest.fixture(scope="session")
def grid_reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("grid-local")
    res = subprocess.run(dermbench_cmd("run", *GRID, "--output", str(out)), env=subprocess_env(), capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    return out
