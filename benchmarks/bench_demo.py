"""`make demo`, cold, step by step: wall time and CPU time of each command of the Makefile's demo recipe.

Cold means an empty DermSynth/feature cache (a fresh DERMBENCH_CACHE) and an empty results folder,
as on a fresh clone after the install. The commands are the Makefile's own (``make -n demo`` with
DEMO_RESULTS/DEMO_OUT pointed at a temporary folder and BIN at this interpreter's folder), so the
benchmark times what a user runs and follows the Makefile when it changes. The install step is not
timed (the stamp is faked up to date).

    python benchmarks/bench_demo.py [--keep DIR] [--warm]

--keep DIR  write into DIR (kept) instead of a temporary folder; DIR must be empty or absent
--warm      after the cold pass, run the recipe again on the same cache and results (what a second
            `make demo` costs: finished results are skipped, the reports rebuilt)

CPU time is user + system of the step's processes (children included); on a shared machine the
wall time grows with the load while the CPU time does not, so both are printed with the load average.
"""
from __future__ import annotations

import argparse
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def demo_commands(bin_dir: Path, results: Path, out: Path, stamp: Path) -> list[str]:
    """The demo recipe's commands as make would run them, with the output folders substituted."""
    res = subprocess.run(["make", "-n", "-s", "--no-print-directory", "demo", f"BIN={bin_dir}", f"STAMP={stamp}",
                          f"DEMO_RESULTS={results}", f"DEMO_OUT={out}"],
                         cwd=REPO, capture_output=True, text=True, check=True)
    lines = [line.strip() for line in res.stdout.splitlines() if line.strip()]
    if not lines or not all(line.startswith(str(bin_dir)) for line in lines):
        raise SystemExit(f"error: Makefile: `make -n demo` printed commands other than the demo's dermbench lines "
                         f"(is the install stamp faked up to date?):\n{res.stdout}")
    return lines


def exported_variable(name: str) -> str:
    """A variable the Makefile exports to the demo's commands (``make -n`` prints the commands only)."""
    res = subprocess.run(["make", "-s", "--no-print-directory", "--eval", f"print-var: ; @echo $({name})", "print-var"],
                         cwd=REPO, capture_output=True, text=True, check=True)
    return res.stdout.strip()


def step_name(command: str) -> str:
    words = shlex.split(command)
    name = Path(words[0]).name + " " + words[1]
    if "--protocol" in words:
        name += " " + words[words.index("--protocol") + 1]
    return name


def run_steps(commands: list[str], env: dict[str, str]) -> list[tuple[str, float, float]]:
    rows = []
    for command in commands:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        res = subprocess.run(shlex.split(command), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if res.returncode != 0:
            raise SystemExit(f"error: demo step failed ({res.returncode}): {command}\n{res.stderr[-4000:]}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        rows.append((step_name(command), wall, cpu))
        print(f"  {rows[-1][0]:32s} {wall:7.1f} s wall {cpu:7.1f} s CPU   load {os.getloadavg()[0]:.1f}", flush=True)
    return rows


def print_table(title: str, rows: list[tuple[str, float, float]]) -> None:
    print(f"\n{title}")
    print(f"| step | wall (s) | CPU (s) |\n|---|---:|---:|")
    for name, wall, cpu in rows:
        print(f"| {name} | {wall:.1f} | {cpu:.1f} |")
    print(f"| **total** | **{sum(r[1] for r in rows):.1f}** | **{sum(r[2] for r in rows):.1f}** |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", type=Path, help="folder to write into and keep (empty or absent)")
    ap.add_argument("--warm", action="store_true", help="also time a second, warm pass")
    args = ap.parse_args()

    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        raise SystemExit(f"error: --keep {args.keep}: folder is not empty; a cold demo needs an empty one")
    root = args.keep or Path(tempfile.mkdtemp(prefix="dermbench-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    stamp = root / "install-stamp"
    stamp.touch()  # newer than pyproject.toml: make skips the install
    bin_dir = Path(sys.executable).parent
    commands = demo_commands(bin_dir, root / "results", root / "leaderboard", stamp)
    env = dict(os.environ, DERMBENCH_CACHE=str(root / "cache"))
    env.pop("DERMBENCH_DATA_ROOT", None)
    if "OMP_WAIT_POLICY" not in os.environ:  # as `make demo` exports it
        env["OMP_WAIT_POLICY"] = exported_variable("OMP_WAIT_POLICY")
    # the checkout being measured, even when the interpreter's dermbench is installed from another one
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    print(f"cold demo into {root} ({os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, "
          f"OMP_WAIT_POLICY={env.get('OMP_WAIT_POLICY', '')})", flush=True)
    cold = run_steps(commands, env)
    print_table("make demo, cold (empty cache and results)", cold)
    if args.warm:
        print("\nsecond pass", flush=True)
        print_table("make demo, warm (second run)", run_steps(commands, env))


if __name__ == "__main__":
    main()
