"""Cost of a progress bar per loop step: a bare loop, a disabled bar (--quiet, a log) and a drawn bar.

The bars wrap loops whose steps take milliseconds to seconds (a head's training step, an image
decoded, a federated round); this prints what one bar update adds to a step, in microseconds, so
that "bars are free" is a measured number. The drawn bar writes to /dev/null (forced with
DERMBENCH_PROGRESS=1), which costs what a terminal costs minus the terminal's own drawing.

    python benchmarks/bench_progress.py [--steps 200000]
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def per_step_us(loop, steps: int) -> float:
    start = time.perf_counter()
    loop(steps)
    return (time.perf_counter() - start) / steps * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200_000)
    args = ap.parse_args()

    from dermbench.progress import ENV_VAR, progress_bar

    def bare(n: int) -> None:
        total = 0
        for i in range(n):
            total += i

    def with_bar(n: int, enabled: bool) -> None:
        total = 0
        with progress_bar(total=n, step=("bench", "progress"), unit="step", enabled=enabled) as bar:
            for i in range(n):
                total += i
                bar.update()

    saved_stderr, saved_env = sys.stderr, os.environ.get(ENV_VAR)
    devnull = open(os.devnull, "w")
    try:
        sys.stderr = devnull
        os.environ[ENV_VAR] = "1"
        results = {
            "bare loop": per_step_us(bare, args.steps),
            "disabled bar (--quiet, logs)": per_step_us(lambda n: with_bar(n, False), args.steps),
            "drawn bar (to /dev/null)": per_step_us(lambda n: with_bar(n, True), args.steps),
        }
    finally:
        sys.stderr = saved_stderr
        devnull.close()
        if saved_env is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = saved_env
    print(f"{args.steps} steps")
    for name, us in results.items():
        print(f"  {name:<30} {us:7.3f} us/step")
    print(f"  a drawn bar adds {results['drawn bar (to /dev/null)'] - results['bare loop']:.3f} us per step")


if __name__ == "__main__":
    main()
