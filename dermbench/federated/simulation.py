"""Simulation engine: ``flwr.simulation.run_simulation`` with the Ray backend, on this machine.

One virtual SuperNode per client; each ClientApp call runs in a Ray actor with 1 CPU
(``client_resources``), and the Ray cluster gets ``min(clients, CPUs)`` CPUs unless told otherwise.
Actors receive only the ClientApp (a few file paths); each reads its own client file.
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence



@contextmanager
def quiet_flower(verbose: bool) -> Iterator[None]:
    """Flower logs every round at INFO to the console; keep the benchmark's output readable."""
    logger = logging.getLogger("flwr")
    before = logger.level
    if not verbose:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(before)


@contextmanager
def _restore_env(*keys: str) -> Iterator[None]:
    # Flower's Ray backend rewrites PYTHONPATH in os.environ (to ship sys.path to the actors);
    # later subprocesses of this process should not inherit that.
    saved = {k: os.environ.get(k) for k in keys}
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run(client_paths: Sequence[Path], run_config: dict[str, Any], num_cpus: int = 0,
        verbose: bool = False, progress: Optional[str] = None) -> dict[str, Any]:
    """Run the federated training in simulation; returns :func:`server_app.read_result` of its result file.

    ``progress``: the step name of a bar over the rounds (the ServerApp runs in a thread of this process,
    so the bar is on this process's stderr), or None for none."""
    from flwr.simulation import run_simulation

    from dermbench.federated.client_app import build_client_app
    from dermbench.federated.server_app import build_server_app, read_result

    n = len(client_paths)
    cpus = int(num_cpus) if int(num_cpus) > 0 else max(1, min(n, os.cpu_count() or 1))
    backend_config = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"num_cpus": cpus, "num_gpus": 0, "include_dashboard": False,
                      "logging_level": "info" if verbose else "error", "log_to_driver": verbose},
    }
    result_path = Path(run_config["result-path"])
    result_path.unlink(missing_ok=True)
    with _restore_env("PYTHONPATH"), quiet_flower(verbose):
        run_simulation(server_app=build_server_app(run_config, progress=progress),
                       client_app=build_client_app([str(p) for p in client_paths]),
                       num_supernodes=n, backend_name="ray", backend_config=backend_config,
                       verbose_logging=verbose)
    if not result_path.is_file():
        raise RuntimeError(f"the Flower simulation ended without writing {result_path}; rerun with "
                           f"--set federated.verbose=true to see Flower's log")
    return read_result(result_path)
