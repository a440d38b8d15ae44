"""Wall time of one benchmark grid through each executor: local, --shard over N processes, Slurm.

The grid defaults to the 2 models × 3 DermSynth tasks of the tests (random-vit and dermino-tiny on
ddi, acne04, mednode; retrieval and linear; --synth-scale 0.25 --n-boot 100). Every mode starts cold:
a results folder and a feature cache of its own (the DermSynth copy is generated once, beforehand, and
shared). Slurm runs on a one-node cluster started in a temporary folder (needs root and slurm-wlm +
munge; skipped, saying why, otherwise) with the arrays grouped per model. Prints one line per mode and
checks that every mode's numbers equal the local run's.

    python benchmarks/bench_cluster.py [--shards 2] [--slurm-group-by model|task]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GRID = ["--model", "random-vit,dermino-tiny", "--task", "ddi,acne04,mednode", "--protocol", "retrieval,linear",
        "--n-boot", "100", "--quiet"]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from dermbench.cli import main; main()", *args]


def env(cache: Path, **extra: str) -> dict[str, str]:
    e = dict(os.environ, DERMBENCH_CACHE=str(cache), PYTHONPATH=str(REPO))
    e.update(extra)
    return e


def numbers(results: Path) -> dict:
    from dermbench.run.results import iter_results

    return {(r["model"], r["task"], r["protocol"]): (r["metrics"], r["predictions"]["sha256"]) for r in iter_results(results)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--slurm-group-by", default="model", choices=("model", "task"))
    ap.add_argument("--synth-scale", default="0.25")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    os.environ["DERMBENCH_CACHE"] = str(work / "data-cache")
    from dermbench.data.synth import ensure_dermsynth

    data_root = ensure_dermsynth(scale=float(args.synth_scale))
    grid = [*GRID, "--data-root", str(data_root)]
    times: dict[str, float] = {}

    t = time.perf_counter()
    subprocess.run(cli("run", *grid, "--results", str(work / "local")), env=env(work / "cache-local"), check=True,
                   capture_output=True)
    times["local (1 process)"] = time.perf_counter() - t
    reference = numbers(work / "local")

    t = time.perf_counter()
    procs = [subprocess.Popen(cli("run", *grid, "--results", str(work / "shards"), "--shard", f"{k}/{args.shards}"),
                              env=env(work / "cache-shards"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for k in range(args.shards)]
    if any(p.wait() for p in procs):
        raise SystemExit("a shard failed")
    times[f"--shard over {args.shards} processes"] = time.perf_counter() - t
    assert numbers(work / "shards") == reference, "shards differ from the local run"

    from tests.run.slurm_cluster import SlurmCluster, SlurmUnavailable

    try:
        with SlurmCluster(work / "slurm") as cluster:
            t = time.perf_counter()
            subprocess.run(cli("run", *grid, "--results", str(work / "slurm-results"), "--executor", "slurm",
                               "--slurm-gpus", "0", "--slurm-group-by", args.slurm_group_by),
                           env=env(work / "cache-slurm", **cluster.env({})), check=True, capture_output=True)
            times[f"slurm (arrays per {args.slurm_group_by}, 2 CPUs)"] = time.perf_counter() - t
        assert numbers(work / "slurm-results") == reference, "Slurm differs from the local run"
    except SlurmUnavailable as exc:
        print(f"slurm: skipped, {exc}")
    print(f"grid: 2 models x 3 tasks x 2 protocols, DermSynth x{args.synth_scale}, {os.cpu_count()} CPU(s), "
          f"load average {os.getloadavg()[0]:.1f}")
    for mode, seconds in times.items():
        print(f"{mode:<40} {seconds:7.1f} s")
    print("every mode's 12 results equal the local run's (metrics and predictions)")


if __name__ == "__main__":
    main()
