"""A one-node Slurm cluster in a temporary folder, for the Slurm executor's test and benchmark.

Needs root and Debian's ``slurm-wlm`` and ``munge`` (``.ci/run`` installs them). Everything the
daemons write (state, spool, logs, pid files, the munge socket) lives in the folder; the ports are
free ones picked at start, so several such clusters on one machine do not meet. ``munged`` runs as
the munge user with the key in /etc/munge (created when missing), on a socket of its own (in a
folder of its own under the temporary directory, which the munge user can reach); every
daemon is started in the foreground as a child of this process and stopped by its pid.

    with SlurmCluster(tmp) as cluster:      # raises SlurmUnavailable(reason) where it cannot start
        subprocess.run([...], env=cluster.env())   # sbatch/squeue/submitit find it through SLURM_CONF
"""
from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo")


class SlurmUnavailable(RuntimeError):
    """Why a Slurm cluster cannot be started here (the test skips with this reason)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class SlurmCluster:
    def __init__(self, folder: Path, cpus: int = 2):
        self.folder = Path(folder)
        self.cpus = cpus
        self.node = socket.gethostname()
        self.procs: dict[str, subprocess.Popen] = {}
        self.conf = self.folder / "slurm.conf"
        self._munge_dir: Optional[Path] = None

    # -- environment for clients (sbatch, squeue, submitit) --
    def env(self, base: Optional[dict[str, str]] = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf)
        return env

    def __enter__(self) -> "SlurmCluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: float = 60) -> None:
        missing = [d for d in DAEMONS if shutil.which(d) is None]
        if missing:
            raise SlurmUnavailable(f"{', '.join(missing)} not installed (apt-get install slurm-wlm munge; .ci/run does)")
        if os.geteuid() != 0:
            raise SlurmUnavailable("starting munged and slurmd needs root")
        try:
            munge_user = pwd.getpwnam("munge")
        except KeyError:
            raise SlurmUnavailable("no 'munge' user (the munge package creates it)") from None
        self.folder.mkdir(parents=True, exist_ok=True)
        self._start_munge(munge_user)
        self._write_conf()
        for name, cmd in (("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)]),
                          ("slurmd", ["slurmd", "-D", "-f", str(self.conf), "-N", self.node])):
            log = open(self.folder / f"{name}.out", "wb")
            self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env(),
                                                start_new_session=True)
        self._wait_idle(timeout)

    def _start_munge(self, user) -> None:
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            key.parent.mkdir(parents=True, exist_ok=True)
            key.write_bytes(os.urandom(1024))
            os.chown(key, user.pw_uid, user.pw_gid)
            os.chmod(key, 0o400)
        # munged (the munge user) must reach its folder through every parent, and insists that others may
        # reach its socket: a folder of its own directly in the temporary directory (pytest's are 0700)
        munge_dir = self._munge_dir = Path(tempfile.mkdtemp(prefix="dermbench-munge-"))
        os.chmod(munge_dir, 0o755)
        os.chown(munge_dir, user.pw_uid, user.pw_gid)
        # munged refuses a socket folder others may write to, or whose parents are group/world-writable
        # without the sticky bit (/tmp is 1777, which it accepts)
        self.socket = munge_dir / "munge.socket"
        cmd = ["munged", "-F", f"--socket={self.socket}", f"--key-file={key}", f"--pid-file={munge_dir / 'munged.pid'}",
               f"--log-file={munge_dir / 'munged.log'}", f"--seed-file={munge_dir / 'munged.seed'}"]
        log = open(self.folder / "munged.out", "wb")
        self.procs["munged"] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, user=user.pw_uid,
                                                group=user.pw_gid, start_new_session=True)
        deadline = time.time() + 15
        while not self.socket.exists():
            if self.procs["munged"].poll() is not None or time.time() > deadline:
                raise SlurmUnavailable(f"munged did not start: {self._tail('munged.out')} {self._tail(munge_dir / 'munged.log')}")
            time.sleep(0.1)

    def _write_conf(self) -> None:
        for sub in ("state", "spool"):
            (self.folder / sub).mkdir(exist_ok=True)
        f = self.folder
        self.conf.write_text(f"""\
ClusterName=dermbench-test
SlurmctldHost={self.node}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.socket}
CredType=cred/munge
StateSaveLocation={f / 'state'}
SlurmdSpoolDir={f / 'spool'}
SlurmctldPidFile={f / 'slurmctld.pid'}
SlurmdPidFile={f / 'slurmd.pid'}
SlurmctldLogFile={f / 'slurmctld.log'}
SlurmdLogFile={f / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerParameters=defer_batch=0
MinJobAge=300
NodeName={self.node} CPUs={self.cpus} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")

    def _wait_idle(self, timeout: float) -> None:
        deadline = time.time() + timeout
        state = ""
        while time.time() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise SlurmUnavailable(f"{name} exited ({proc.returncode}): {self._tail(name + '.out')} "
                                           f"{self._tail(name + '.log')}")
            out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, env=self.env())
            state = out.stdout.strip() or out.stderr.strip()
            if out.returncode == 0 and state.startswith("idle"):
                return
            time.sleep(0.5)
        raise SlurmUnavailable(f"the node did not become idle in {timeout:.0f} s (sinfo: {state!r}); "
                               f"{self._tail('slurmctld.log')} {self._tail('slurmd.log')}")

    def _tail(self, name, n: int = 600) -> str:
        path = self.folder / name  # an absolute name stays as it is
        return path.read_text(errors="replace")[-n:].strip() if path.exists() else ""

    def drain(self, timeout: float = 60) -> None:
        """Cancel what is left in this cluster's queue and wait until its steps have ended."""
        if "slurmctld" not in self.procs:
            return
        subprocess.run(["scancel", "--user", "root"], capture_output=True, env=self.env(), timeout=30)
        deadline = time.time() + timeout
        while time.time() < deadline:
            out = subprocess.run(["squeue", "-h"], capture_output=True, text=True, env=self.env(), timeout=30)
            if out.returncode != 0 or not out.stdout.strip():
                return
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop the daemons this object started, by their pids (slurmd first, munged last), after the queue
        drained; then any job step (slurmstepd) of this cluster that outlived slurmd, found by its open files."""
        try:
            self.drain()
        except (OSError, subprocess.SubprocessError):
            pass
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for pid in self._leftover_steps():
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        if self._munge_dir is not None:
            shutil.rmtree(self._munge_dir, ignore_errors=True)
            self._munge_dir = None

    def _leftover_steps(self) -> list[int]:
        """pids of the processes this cluster's jobs left behind (slurmstepd, the batch script, srun): every
        process but this one whose environment points at this cluster's slurm.conf."""
        marker = f"SLURM_CONF={self.conf}".encode()
        out = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                if marker in (proc / "environ").read_bytes().split(b"\0"):
                    out.append(int(proc.name))
            except OSError:
                continue
        return out
