"""Wall time of `dermbench leaderboard --format all --out ...`, part by part, on a results store.

Builds the leaderboard once in this process exactly as the command does (``build_leaderboard``) and
prints the seconds spent importing, loading the records, in the main tables (metrics' paired tests and
the Avg columns' CIs), the fairness tables, each section builder of ``dermbench.report.sections.BUILDERS``,
the figures of the main tables, and the rest (formatting and writing the files). Each part is timed
where the real build runs it, so a part that reuses what an earlier one computed shows that saving.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_leaderboard.py [--results results/dermsynth] [--out DIR]
"""
from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path

START = time.perf_counter()


class PartTimer:
    """Seconds per named part; a timed call made inside another timed call counts for the outer one only."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._depth = 0

    def wrap(self, name, func):
        @functools.wraps(func)
        def timed(*args, **kwargs):
            self._depth += 1
            t0 = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
        return timed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", type=Path, default=Path("results/dermsynth"))
    ap.add_argument("--out", type=Path, default=None, help="default: a temporary folder, removed afterwards")
    args = ap.parse_args()

    from dermbench.report import fairness, leaderboard, sections
    imported = time.perf_counter() - START

    timer = PartTimer()
    leaderboard.load_records = timer.wrap("load records", leaderboard.load_records)
    leaderboard.build_tables = timer.wrap("main tables", leaderboard.build_tables)
    leaderboard.build_figures = timer.wrap("main figures", leaderboard.build_figures)
    fairness.fairness_table = timer.wrap("fairness tables", fairness.fairness_table)
    original_builders = sections.builders

    def timed_builders():
        return [timer.wrap(f"section {spec.split(':')[0].rsplit('.', 1)[-1]}:{spec.split(':')[1]}", build)
                for spec, build in zip(sections.BUILDERS, original_builders())]

    sections.builders = timed_builders
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "leaderboard"
        t0 = time.perf_counter()
        built = leaderboard.build_leaderboard(args.results, out, formats=("md", "csv", "latex", "html"))
        total = time.perf_counter() - t0
    print(f"results: {args.results} ({len(built['tables'])} tables, {len(built['paths'])} files written)")
    print(f"{'import dermbench.report':36s} {imported:7.2f} s")
    for name, seconds in timer.seconds.items():
        print(f"{name:36s} {seconds:7.2f} s")
    rest = total - sum(timer.seconds.values())
    print(f"{'formatting and writing':36s} {rest:7.2f} s")
    print(f"{'build_leaderboard total':36s} {total:7.2f} s")
    print(f"{'process so far':36s} {time.perf_counter() - START:7.2f} s")


if __name__ == "__main__":
    main()
