"""Test-wide settings: offline, a private cache, few threads, a headless plot backend."""
from __future__ import annotations

import os
import tempfile

# Set before anything imports huggingface_hub / torch / matplotlib.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_NUM_THREADS", "2")
if "DERMBENCH_CACHE" not in os.environ:
    # One cache per test session: DermSynth and features are built once and shared by the tests,
    # and never touch the user's ~/.cache.
    os.environ["DERMBENCH_CACHE"] = tempfile.mkdtemp(prefix="dermbench-test-cache-")
os.environ.pop("DERMBENCH_DATA_ROOT", None)
os.environ.pop("DERMBENCH_PROGRESS", None)  # bars only where a test forces them (tests/test_progress.py)
os.environ["DERMBENCH_CONFIG"] = os.path.join(os.environ["DERMBENCH_CACHE"], "no-config.toml")
