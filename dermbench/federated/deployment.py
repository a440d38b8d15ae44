"""Deployment engine: a real Flower federation on this machine, one process per party.

:class:`LocalFederation` starts a SuperLink and one SuperNode per client as separate processes on
localhost (insecure mode, free ports, runtime dependency installation off: nothing is downloaded),
submits the Flower App with ``flwr run``, waits for the ServerApp to write its result file, and tears
every process down (their own children included: SuperExec, flwr-serverapp, flwr-clientapp) however
the run ended. Each SuperNode gets only the path of its own client file in its node config, as a
hospital's SuperNode reads its own data:

1. ``flower-superlink --insecure --host 127.0.0.1 --port P --isolation subprocess
   --disable-runtime-dependency-installation`` (Fleet, Control and Runtime APIs all on port P);
2. per client ``flower-supernode --insecure --superlink 127.0.0.1:P --host 127.0.0.1 --port Q_k
   --isolation subprocess --node-config 'data-path="<client k>.npz"'``;
3. ``flwr run <app> dermbench-local --format json`` (the Flower App of :func:`write_flower_app`,
   components ``dermbench.federated.server_app:app`` and ``dermbench.federated.client_app:app``).

Every party gets its own ``FLWR_HOME`` under the work folder (nothing touches ``~/.flwr``), this
environment's ``bin`` first on ``PATH`` (SuperExec starts ``flwr-serverapp`` / ``flwr-clientapp``
by name, also when the environment is not activated) and this dermbench on ``PYTHONPATH``.
The same commands with TLS and one SuperNode per hospital run a real multi-site federation:
docs/federated.md.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence


APP_NAME = "dermbench-fl"
CONNECTION = "dermbench-local"
FINAL_STATUSES = ("finished:completed", "finished:failed", "finished:stopped")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))  # a JSON string is a valid TOML basic string


def flower_app_pyproject(run_config: dict[str, Any]) -> str:
    """The pyproject.toml of the Flower App; ``run_config`` becomes ``[tool.flwr.app.config]``."""
    from dermbench.federated.server_app import RUN_CONFIG_DEFAULTS

    cfg = {**RUN_CONFIG_DEFAULTS, **run_config}
    lines = [
        "[project]", f'name = "{APP_NAME}"', 'version = "1.0.0"',
        'description = "dermbench: a linear head on frozen features, FedAvg over sites"', 'license = "Apache-2.0"', "",
        "[tool.flwr.app]", 'publisher = "dermbench"', "",
        "[tool.flwr.app.components]",
        'serverapp = "dermbench.federated.server_app:app"',
        'clientapp = "dermbench.federated.client_app:app"', "",
        "[tool.flwr.app.config]",
    ]
    lines += [f"{k} = {_toml_value(v)}" for k, v in cfg.items()]
    return "\n".join(lines) + "\n"


def write_flower_app(app_dir: Path, run_config: dict[str, Any]) -> Path:
    """Write the Flower App folder that ``flwr run`` bundles (its code is the installed dermbench)."""
    app_dir = Path(app_dir)
    app_dir.mkdir(parents=True, exist_ok=True)
    (app_dir / "pyproject.toml").write_text(flower_app_pyproject(run_config))
    (app_dir / "README.md").write_text(
        "# dermbench-fl\n\nFlower App of dermbench's `federated` protocol. Every SuperNode needs dermbench "
        "installed and `--node-config 'data-path=\"/path/to/client.npz\"'`; see dermbench docs/federated.md.\n")
    return app_dir


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _executable(name: str) -> str:
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found next to {sys.executable} nor on PATH: pip install 'dermbench[federated]'")
    return found


def _tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


class LocalFederation:
    """A SuperLink and one SuperNode per client file, as processes on localhost; a context manager."""

    def __init__(self, workdir: Path, client_paths: Sequence[Path], host: str = "127.0.0.1",
                 start_timeout: float = 120.0):
        self.workdir = Path(workdir)
        self.client_paths = [Path(p).resolve() for p in client_paths]
        self.host = host
        self.start_timeout = start_timeout
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        self.port: Optional[int] = None

    # -- processes ---------------------------------------------------------------------------
    def env(self, home: str) -> dict[str, str]:
        """The environment of one party (``home``: its private Flower home under the work folder)."""
        import dermbench

        env = dict(os.environ)
        env["FLWR_HOME"] = str(self.workdir / "flwr-home" / home)
        env.setdefault("FLWR_TELEMETRY_ENABLED", "0")
        env.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
        env.setdefault("OMP_NUM_THREADS", "1")
        env["PYTHONUNBUFFERED"] = "1"
        # SuperExec starts flwr-serverapp / flwr-clientapp by name: this environment's must come first
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        # ... and they must import this dermbench, even from an uninstalled checkout
        src = str(Path(dermbench.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join([src] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        return env

    def _spawn(self, name: str, cmd: list[str], home: str) -> subprocess.Popen:
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        self.logs[name] = log
        with open(log, "wb") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=self.env(home), cwd=self.workdir, start_new_session=True)
        self.procs[name] = proc
        return proc

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}; its log ({self.logs[name]}):\n"
                                   f"{_tail(self.logs[name])}")

    def start(self) -> "LocalFederation":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port(self.host)
        self._spawn("superlink", [_executable("flower-superlink"), "--insecure", "--host", self.host,
                                  "--port", str(self.port), "--isolation", "subprocess",
                                  "--disable-runtime-dependency-installation"], "superlink")
        deadline = time.monotonic() + self.start_timeout
        while True:  # the SuperLink serves Fleet, Control and Runtime APIs on one HTTP port
            self.check_alive()
            try:
                with socket.create_connection((self.host, self.port), timeout=1.0):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the SuperLink did not open port {self.port} within {self.start_timeout:.0f} s")
                time.sleep(0.2)
        for i, path in enumerate(self.client_paths):
            self._spawn(f"supernode-{i}", [
                _executable("flower-supernode"), "--insecure", "--superlink", f"{self.host}:{self.port}",
                "--host", self.host, "--port", str(free_port(self.host)), "--isolation", "subprocess",
                "--node-config", f"data-path={json.dumps(str(path))}"], f"supernode-{i}")
        cli_home = self.workdir / "flwr-home" / "cli"
        cli_home.mkdir(parents=True, exist_ok=True)
        (cli_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "{self.host}:{self.port}"\ninsecure = true\n')
        return self

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM every process, its process group and every descendant, then SIGKILL what is left
        after ``grace`` seconds. Descendants are found with psutil when it is installed: SuperExec runs
        in its own session, out of reach of the SuperLink's process group (without psutil it exits by
        itself once its parent is gone)."""
        try:
            import psutil
        except ImportError:  # pragma: no cover - psutil comes with most installs (ray, accelerate)
            psutil = None
        family = []
        if psutil is not None:
            for proc in self.procs.values():
                try:
                    family += psutil.Process(proc.pid).children(recursive=True)
                except psutil.NoSuchProcess:
                    pass
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for proc in self.procs.values():
                for send in (lambda: os.killpg(proc.pid, sig), lambda: proc.send_signal(sig)):
                    try:
                        send()
                    except (ProcessLookupError, PermissionError):
                        pass
            for p in family:
                try:
                    p.send_signal(sig)
                except psutil.NoSuchProcess:
                    pass
            deadline = time.monotonic() + grace
            for proc in self.procs.values():
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
            if psutil is not None:
                _, family = psutil.wait_procs(family, timeout=max(0.1, deadline - time.monotonic()))
            if all(proc.poll() is not None for proc in self.procs.values()) and not family:
                break
        self.procs.clear()

    def __enter__(self) -> "LocalFederation":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- runs --------------------------------------------------------------------------------
    def flwr(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        """The ``flwr`` CLI, configured with the connection ``dermbench-local`` to this SuperLink."""
        return subprocess.run([_executable("flwr"), *args], env=self.env("cli"), cwd=self.workdir,
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def run_status(self, run_id: str) -> str:
        res = self.flwr("ls", CONNECTION, "--run-id", str(run_id), "--format", "json")
        try:
            runs = json.loads(res.stdout)["runs"]
            return str(runs[0]["status"]) if runs else "unknown"
        except (ValueError, KeyError, IndexError):
            return "unknown"

    def submit(self, run_config: dict[str, Any]) -> str:
        """``flwr run`` the Flower App with this run config; returns the run id."""
        app = write_flower_app(self.workdir / APP_NAME, run_config)
        res = self.flwr("run", str(app), CONNECTION, "--format", "json")
        try:
            out = json.loads(res.stdout[res.stdout.index("{"):])
            if not out.get("success"):
                raise ValueError(out)
            return str(out["run-id"])
        except (ValueError, KeyError):
            raise RuntimeError(f"flwr run failed (exit {res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}") from None

    def wait(self, run_id: str, result_path: Path, timeout: float, poll: float = 0.5) -> None:
        """Until the ServerApp has written ``result_path``; errors if a process died, the run failed or time ran out."""
        deadline = time.monotonic() + timeout
        last_status = time.monotonic()
        while not Path(result_path).is_file():
            self.check_alive()
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(f"Flower run {run_id} wrote no result within {timeout:.0f} s; "
                                   f"the SuperLink's log:\n{_tail(self.logs['superlink'])}")
            if now - last_status > 10.0:  # a failed ServerApp never writes the file: ask the SuperLink (a Python start)
                last_status = now
                status = self.run_status(run_id)
                if status in FINAL_STATUSES and not Path(result_path).is_file():
                    log = self.flwr("log", run_id, CONNECTION, "--show", timeout=60).stdout
                    raise RuntimeError(f"Flower run {run_id} ended ({status}) without a result:\n{log[-4000:]}")
            time.sleep(poll)


def run(client_paths: Sequence[Path], run_config: dict[str, Any], workdir: Path, timeout: float = 1800.0,
        verbose: bool = False) -> dict[str, Any]:
    """Run the federated training on a local SuperLink + SuperNodes; returns the ServerApp's result
    (:func:`server_app.read_result`) plus ``run_id`` and ``timings`` (seconds since start)."""
    from dermbench.federated.server_app import read_result

    result_path = Path(run_config["result-path"]).resolve()
    result_path.unlink(missing_ok=True)
    cfg = {**run_config, "result-path": str(result_path)}
    started = time.monotonic()
    timings: dict[str, float] = {}
    with LocalFederation(workdir, client_paths) as fed:
        timings["started_s"] = round(time.monotonic() - started, 2)
        run_id = fed.submit(cfg)
        fed.wait(run_id, result_path, timeout)
        timings["result_s"] = round(time.monotonic() - started, 2)
        if verbose:
            print(fed.flwr("log", run_id, CONNECTION, "--show", timeout=60).stdout)
    timings["stopped_s"] = round(time.monotonic() - started, 2)
    return {**read_result(result_path), "run_id": run_id, "timings": timings}
