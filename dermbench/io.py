"""Small file helpers shared by every writer: atomic writes and content hashes."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable


class WriteError(OSError):
    """A file or folder could not be written; the message names the path, the cause and the fix."""


def _write_error(path: Path, exc: OSError) -> WriteError:
    reason = exc.strerror or type(exc).__name__
    if exc.errno == errno.ENOSPC:
        fix = "free disk space there or choose another folder"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "choose a folder you can write to"
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST):
        fix = "a parent of it is a regular file: choose another folder"
    else:
        fix = "check the folder"
    error = WriteError(f"cannot write {path}: {reason}; {fix}")
    error.errno = exc.errno  # kept for callers that branch on it; str() stays the one-line message
    return error


def ensure_folder(path: Path) -> Path:
    """``mkdir -p path`` with an error that names the folder (unwritable, under a file, ...)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over the target.

    A reader (or a resumed run) sees either the old file or the complete new one, never a torn one.
    Failures (unwritable folder, a path under a regular file, a full disk) raise :class:`WriteError`
    naming ``path``.
    """
    path = Path(path)
    ensure_folder(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _write_error(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared and read
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise _write_error(path, exc) from exc
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_folder_once(target: Path, marker: str, build: Callable[[Path], Any], poll_s: float = 0.2) -> Path:
    """Return ``target``, first building it with ``build(tmp_folder)`` unless ``target/marker`` exists.

    The folder is built in a temporary sibling and renamed into place, so a concurrent or
    interrupted build never leaves a half-written folder where a reader would take it for a
    finished one; when another process finishes first, its copy is used.

    Processes that want the same folder at the same time (the workers of a test session, shard
    processes or Slurm tasks starting together on one cache) build it once: the builder holds a claim
    (:mod:`dermbench.claims`, NFS-safe link/rename, no ``flock``) on ``<parent>/.claims/<name>``, and the
    others wait for its folder (DermSynth: ~25 CPU-s saved per extra process). A builder that dies
    leaves a stale claim, which a waiting process takes over, building the folder itself.
    """
    from dermbench import claims

    target = Path(target)
    if (target / marker).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    claims_dir = target.parent / ".claims"
    while (claim := claims.try_claim(claims_dir, target.name)) is None:
        if (target / marker).is_file():  # built by the process that holds the claim
            return target
        time.sleep(poll_s)
    try:
        with claims.Heartbeat(claim):
            if (target / marker).is_file():  # built by a process that held the claim before us
                return target
            return _build_and_rename(target, marker, build)
    finally:
        claims.release(claim)


def _build_and_rename(target: Path, marker: str, build: Callable[[Path], Any]) -> Path:
    import shutil

    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        build(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first: use its copy
            if not (target / marker).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
