"""Claim files: a worker claims a piece of work (a run job, a feature shard) before computing it, so two
workers never compute the same piece. The run plan (:mod:`dermbench.run`) claims jobs and the feature
cache (:mod:`dermbench.features.shards`) claims shards, both through this one module.

A claim is a small JSON file ``<claims>/<name>.claim`` naming its holder (host, pid, Slurm job,
time). It must be safe on NFS, where ``flock``/``fcntl`` locks are unreliable or missing, so only
operations that are atomic on NFS are used:

- **taking** a claim: the holder's record is written in full to a unique temporary file in the same
  folder, then ``os.link``-ed to the claim's name. ``link`` fails when the name exists, atomically,
  on local file systems and NFS alike (the classic NFS lock-file recipe); a reader therefore never
  sees a half-written claim. Where the server lost the reply of a successful ``link``, the link
  count of the temporary file (2) tells that it did succeed.
- **recovering** a stale claim (its holder died): the claim is renamed to a unique name in the same
  folder. ``rename`` is atomic, so of several workers that found the same stale claim exactly one
  moves it; the winner checks that what it moved is the claim it judged stale (not a fresh claim
  made in between, which it then puts back) and takes the job over.
- **releasing**: the same rename-then-check, then ``unlink``, so a worker never removes a claim it
  does not hold.
- **leftovers**: a worker killed between writing its temporary file and removing it leaves a
  ``.<name>.claim.<host>.<pid>.<token>.tmp`` (or ``….aside``) behind; :func:`sweep_leftovers` removes
  those of this host's dead processes, and of other hosts once untouched for a day.

A claim is stale when its holder on this host is no longer alive, or when its heartbeat (the file's
mtime, refreshed by :class:`Heartbeat` while the job runs) is older than ``stale_after`` seconds:
a worker on another host, or one killed with its node, stops refreshing it.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

# A claim whose heartbeat stopped this long ago is taken over. Heartbeats come every
# HEARTBEAT_S seconds, so a live holder is always far inside this window; a worker killed
# with its node is taken over after at most STALE_AFTER_S.
HEARTBEAT_S = 30.0
STALE_AFTER_S = float(os.environ.get("DERMBENCH_CLAIM_STALE_S", "300"))


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    time: float  # seconds since the epoch when the claim was taken
    token: str  # unique per claim: tells two claims of the same holder apart
    slurm_job: Optional[str] = None

    @staticmethod
    def me() -> "Holder":
        slurm = os.environ.get("SLURM_JOB_ID")
        if slurm and os.environ.get("SLURM_ARRAY_TASK_ID"):
            slurm = f"{os.environ.get('SLURM_ARRAY_JOB_ID', slurm)}_{os.environ['SLURM_ARRAY_TASK_ID']}"
        return Holder(host=socket.gethostname(), pid=os.getpid(), time=time.time(), token=uuid.uuid4().hex,
                      slurm_job=slurm)

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.time))
        slurm = f", slurm job {self.slurm_job}" if self.slurm_job else ""
        return f"{self.host} pid {self.pid}{slurm}, since {when} UTC"


@dataclass
class Claim:
    path: Path
    holder: Holder
    released: bool = field(default=False)


def claim_path(claims_dir: Path, job_id: str) -> Path:
    return Path(claims_dir) / f"{job_id}.claim"


def read_claim(path: Path) -> Optional[tuple[Holder, float]]:
    """(holder, heartbeat mtime) of a claim file, or None when there is none (or it is unreadable)."""
    try:
        heartbeat = os.stat(path).st_mtime
        return Holder(**json.loads(Path(path).read_text())), heartbeat
    except (FileNotFoundError, ValueError, TypeError):
        return None


def is_stale(holder: Holder, heartbeat: float, stale_after: float = STALE_AFTER_S) -> bool:
    if holder.host == socket.gethostname() and not pid_alive(holder.pid):
        return True
    return time.time() - heartbeat > stale_after


def try_claim(claims_dir: Path, job_id: str, stale_after: float = STALE_AFTER_S) -> Optional[Claim]:
    """Claim ``job_id``; None when a live worker holds it. A stale claim is taken over."""
    path = claim_path(claims_dir, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(5):  # a few rounds: each lost race means someone else changed the claim
        me = Holder.me()
        if _link_new(path, me):
            return Claim(path, me)
        current = read_claim(path)
        if current is None:
            continue  # released between our link and our read, or not yet readable: try again
        holder, heartbeat = current
        if not is_stale(holder, heartbeat, stale_after):
            return None
        _move_aside_if(path, holder.token)
    return None


def release(claim: Claim) -> None:
    """Remove the claim if it is still ours (a worker that took it over as stale keeps theirs)."""
    if not claim.released:
        _move_aside_if(claim.path, claim.holder.token)
        claim.released = True


def holds(claim: Claim) -> bool:
    current = read_claim(claim.path)
    return current is not None and current[0].token == claim.holder.token


def live_claims(claims_dir: Path, stale_after: float = STALE_AFTER_S) -> dict[str, Holder]:
    """job id -> holder, for every claim in the folder that is not stale (what is running now)."""
    out = {}
    for path in sorted(Path(claims_dir).glob("*.claim")):
        current = read_claim(path)
        if current is not None and not is_stale(*current, stale_after=stale_after):
            out[path.name[: -len(".claim")]] = current[0]
    return out


class Heartbeat:
    """Refreshes a claim's mtime every ``interval`` seconds while a job runs (``with Heartbeat(claim):``)."""

    def __init__(self, claim: Claim, interval: float = HEARTBEAT_S):
        self.claim, self.interval = claim, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"claim-heartbeat-{claim.path.name}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                os.utime(self.claim.path)
            except FileNotFoundError:  # taken over as stale (we were too slow) or released: nothing to refresh
                return


def _link_new(path: Path, holder: Holder) -> bool:
    tmp = path.with_name(f".{path.name}.{holder.host}.{holder.pid}.{holder.token}.tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(asdict(holder), sort_keys=True))
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:
        # NFS may report an error for a link that was made (lost reply); the link count says the truth
        return os.stat(tmp).st_nlink == 2
    finally:
        os.unlink(tmp)


def _move_aside_if(path: Path, token: str) -> bool:
    """Atomically take the claim at ``path`` out of the way if it carries ``token``; True if it did."""
    aside = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex}.aside")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    moved = read_claim(aside)
    if moved is not None and moved[0].token != token:
        # a fresh claim was made after we read the old one: put it back (link fails if yet another exists)
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
        os.unlink(aside)
        return False
    os.unlink(aside)
    return True


def sweep_leftovers(claims_dir: Path, other_hosts_after: float = 86400.0) -> int:
    """Remove the temporary files of killed claimers in ``claims_dir``: those named with this host and
    a pid that is gone, and those of other hosts untouched for ``other_hosts_after`` seconds (a live
    claimer removes its own within milliseconds). Returns how many were removed."""
    try:
        names = os.listdir(claims_dir)
    except FileNotFoundError:
        return 0
    host, now, removed = socket.gethostname(), time.time(), 0
    for name in names:
        if not (name.startswith(".") and (name.endswith(".tmp") or name.endswith(".aside"))):
            continue
        # .<job>.claim.<host>.<pid>.<token>.<tmp|aside>; the job id and host may themselves hold dots
        before, _, rest = name.rpartition(".claim.")
        parts = rest.split(".")
        if not before or len(parts) < 4:
            continue
        leftover_host, pid = ".".join(parts[:-3]), parts[-3]
        path = Path(claims_dir) / name
        try:
            if leftover_host == host and pid.isdigit():
                if pid_alive(int(pid)):
                    continue
            elif now - path.stat().st_mtime < other_hosts_after:
                continue
            path.unlink()
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process of this host with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True
