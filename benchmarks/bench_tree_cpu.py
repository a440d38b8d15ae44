"""CPU seconds of a command and of every process it starts, daemons included: prints one line.

    python benchmarks/bench_tree_cpu.py .venv/bin/python -m pytest -q            # the whole suite
    python benchmarks/bench_tree_cpu.py .venv/bin/python -m pytest -q -n 0 tests/federated/test_federated.py

`/usr/bin/time` counts a command and the children it waits for; Ray's daemons (raylet, GCS, dashboard,
workers) and Flower's SuperExec / ClientApp processes are re-parented when their parent exits and
their CPU time is lost to it (tests/federated: 33 CPU-s by /usr/bin/time, 90 by this). This script
makes itself a child subreaper (Linux prctl PR_SET_CHILD_SUBREAPER), so every orphan of the tree is
re-parented to it and reaped here, and RUSAGE_CHILDREN covers the whole tree.
"""
from __future__ import annotations

import ctypes
import os
import resource
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("bench_tree_cpu: prctl(PR_SET_CHILD_SUBREAPER) failed (Linux only)", file=sys.stderr)
        return 2
    started = time.time()
    proc = subprocess.Popen(argv)
    rc, ended = None, None
    while True:  # reap the command and every orphan re-parented to us until none is left
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        if pid == proc.pid:
            rc, ended = os.waitstatus_to_exitcode(status), time.time()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"tree CPU {usage.ru_utime + usage.ru_stime:.1f} s (user {usage.ru_utime:.1f}, sys {usage.ru_stime:.1f}), "
          f"wall {ended - started:.1f} s, exit {rc}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
          file=sys.stderr)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
