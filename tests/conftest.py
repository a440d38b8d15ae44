"""Test-wide settings: offline, a private cache, few threads, a headless plot backend."""
from __future__ import annotations

import os
import tempfile

# Set before anything imports huggingface_hub / torch / matplotlib.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_NUM_THREADS", "2")
# Idle OpenMP threads sleep instead of spinning (libgomp's default spins for a while after every
# parallel region). On a 2-core machine shared with other work the spinning threads steal the cores
# the tests need: a tiny linear head took 10x the CPU time with spinning threads (README, "Tests
# and benchmarks"). Results do not change: the thread count and the arithmetic are the same.
# Set before torch is imported (libgomp reads it once); inherited by the tests' subprocesses.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if "DERMBENCH_CACHE" not in os.environ:
    # One cache per test session: DermSynth and features are built once and shared by the tests,
    # and never touch the user's ~/.cache. Under pytest-xdist every worker of one run shares it
    # (named by the run's id): DermSynth is built once-only by rename and the feature cache is
    # safe with concurrent writers (claims), as for concurrent `dermbench run`s.
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run_id:
        shared = os.path.join(tempfile.gettempdir(), f"dermbench-test-cache-{run_id}")
        os.makedirs(shared, exist_ok=True)
        os.environ["DERMBENCH_CACHE"] = shared
    else:
        os.environ["DERMBENCH_CACHE"] = tempfile.mkdtemp(prefix="dermbench-test-cache-")
os.environ.pop("DERMBENCH_DATA_ROOT", None)
os.environ.pop("DERMBENCH_PROGRESS", None)  # bars only where a test forces them (tests/test_progress.py)
os.environ["DERMBENCH_CONFIG"] = os.path.join(os.environ["DERMBENCH_CACHE"], "no-config.toml")
