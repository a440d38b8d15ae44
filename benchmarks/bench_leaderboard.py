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
    """Wall and CPU seconds per named part; a timed call made inside another timed call counts for the
    outer one only. CPU seconds (this process, all threads) say more than wall seconds on a busy machine."""

    def __init__(self):
        self.seconds: dict[str, list[float]] = {}
        self._depth = 0

    def wrap(self, name, func):
        @functools.wraps(func)
        def timed(*args, **kwargs):
            self._depth += 1
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                return func(*args, **kwargs)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    total = self.seconds.setdefault(name, [0.0, 0.0])
                    total[0] += time.perf_counter() - t0
                    total[1] += time.process_time() - c0
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
        t0, c0 = time.perf_counter(), time.process_time()
        built = leaderboard.build_leaderboard(args.results, out, formats=("md", "csv", "latex", "html"))
        total = [time.perf_counter() - t0, time.process_time() - c0]
    print(f"results: {args.results} ({len(built['tables'])} tables, {len(built['paths'])} files written)")
    print(f"{'part':36s} {'wall s':>7s} {'cpu s':>7s}")
    print(f"{'import dermbench.report':36s} {imported:7.2f}")
    for name, (wall, cpu) in timer.seconds.items():
        print(f"{name:36s} {wall:7.2f} {cpu:7.2f}")
    rest = [total[i] - sum(v[i] for v in timer.seconds.values()) for i in (0, 1)]
    print(f"{'formatting and writing':36s} {rest[0]:7.2f} {rest[1]:7.2f}")
    print(f"{'build_leaderboard total':36s} {total[0]:7.2f} {total[1]:7.2f}")
    print(f"{'process so far':36s} {time.perf_counter() - START:7.2f} {time.process_time():7.2f}")


if __name__ == "__main__":
    main()
