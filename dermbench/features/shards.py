"""Feature shards: a folder of per-(backbone fingerprint, kind, view) shards with a content-hash index.

A shard holds the features of up to a few thousand images: one ``.npy`` per array (``levels`` has
one per level) and ``<key>.index.json``, the shard's content-hash index (the sha256 of each row's
image, in row order, plus the arrays' names, shapes and dtypes). Every file is written as a
temporary file in the same folder, fsync'd and renamed; the index is renamed last, after the arrays
are complete, so a shard without its index does not exist for readers and a shard with one is
whole: a killed writer leaves no torn shard, only temporary files that the next writer sweeps.
Readers memory-map the arrays (``np.load(mmap_mode="r")``) and copy out only the rows they need.

Concurrent writers (several processes on one machine, or on several machines over NFS/Lustre)
coordinate by claim files (:mod:`dermbench.claims`, the same as the run's jobs: no ``flock``, only
``link`` and ``rename``, atomic on NFS): a writer claims a shard before computing it and refreshes the
claim while it works; a claim whose holder died or stopped refreshing it is taken over. Shard keys are derived from the images a
shard holds, so two writers that plan the same work choose the same keys and one computes it while
the other waits; if both compute it anyway (a claim judged stale too early), both commit the same
rows under the same names, which is harmless.
"""
from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from dermbench import claims

INDEX_SUFFIX = ".index.json"
CLAIMS = "claims"
HOST = socket.gethostname()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems do not fsync directories; the renames are still atomic
    finally:
        os.close(fd)


def _tmp_name(folder: Path, name: str) -> Path:
    return folder / f".tmp-{name}.{HOST}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


def _commit(tmp: Path, final: Path) -> None:
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, final)


@dataclass
class ShardWriter:
    """The arrays of one shard being written: memory-mapped ``.npy`` temporaries, filled row by row."""

    folder: Path
    key: str
    shas: list[str]
    arrays: Optional[list[np.ndarray]] = None
    tmp_paths: Optional[list[Path]] = None

    def write(self, rows: slice, outputs: Sequence[np.ndarray]) -> None:
        if self.arrays is None:  # shapes and dtypes are known from the first batch
            self.tmp_paths = [_tmp_name(self.folder, f"{self.key}.{i}.npy") for i in range(len(outputs))]
            self.arrays = [np.lib.format.open_memmap(p, mode="w+", dtype=o.dtype, shape=(len(self.shas), *o.shape[1:]))
                           for p, o in zip(self.tmp_paths, outputs)]
        for array, out in zip(self.arrays, outputs):
            array[rows] = out

    def commit(self) -> None:
        """Arrays first (fsync, rename), then the index: the index's presence means the shard is whole."""
        if self.arrays is None:
            raise RuntimeError(f"shard {self.key} in {self.folder}: commit before any rows were written")
        meta = {"version": 1, "n": len(self.shas), "shas": self.shas,
                "arrays": [{"file": f"{self.key}.{i}.npy", "dtype": str(a.dtype), "shape": list(a.shape)}
                           for i, a in enumerate(self.arrays)],
                "written_by": {"host": HOST, "pid": os.getpid(), "time": time.time()}}
        for array in self.arrays:
            array.flush()
        self.arrays = None  # close the maps before the renames
        for i, tmp in enumerate(self.tmp_paths):
            _commit(tmp, self.folder / f"{self.key}.{i}.npy")
        index_tmp = _tmp_name(self.folder, self.key + INDEX_SUFFIX)
        index_tmp.write_text(json.dumps(meta))
        _commit(index_tmp, self.folder / f"{self.key}{INDEX_SUFFIX}")
        _fsync_dir(self.folder)

    def discard(self) -> None:
        self.arrays = None
        for p in self.tmp_paths or []:
            try:
                p.unlink()
            except FileNotFoundError:
                pass


class ShardFolder:
    """One (backbone fingerprint, kind, view) folder of shards, its index and its claims."""

    def __init__(self, folder: Path, stale_after: float = 600.0):
        self.folder = Path(folder)
        self.stale_after = float(stale_after)
        self._index: dict[str, tuple[str, int]] = {}  # image sha -> (shard key, row)
        self._seen: set[str] = set()  # index files already read
        self._meta: dict[str, dict] = {}

    # -- reading ---------------------------------------------------------------------------
    def refresh(self) -> dict[str, tuple[str, int]]:
        """Read the indexes of shards committed since the last call (by this or any writer)."""
        try:
            names = [n for n in os.listdir(self.folder) if n.endswith(INDEX_SUFFIX) and not n.startswith(".")]
        except FileNotFoundError:
            return self._index
        for name in sorted(set(names) - self._seen):
            try:
                meta = json.loads((self.folder / name).read_text())
            except (OSError, ValueError):
                continue  # unreadable: treated as absent, its images are computed again
            key = name[: -len(INDEX_SUFFIX)]
            self._meta[key] = meta
            for row, sha in enumerate(meta["shas"]):
                self._index.setdefault(sha, (key, row))  # the first shard (by name) holding an image wins
            self._seen.add(name)
        return self._index

    def has(self, sha: str) -> bool:
        return sha in self._index

    def read(self, shas: Sequence[str]) -> list[np.ndarray]:
        """Rows for ``shas`` (all present), one array per stored array, in the order asked."""
        by_shard: dict[str, list[tuple[int, int]]] = {}
        for pos, sha in enumerate(shas):
            key, row = self._index[sha]
            by_shard.setdefault(key, []).append((pos, row))
        out: Optional[list[np.ndarray]] = None
        for key, pairs in by_shard.items():
            arrays = [np.load(self.folder / a["file"], mmap_mode="r") for a in self._meta[key]["arrays"]]
            if out is None:
                out = [np.empty((len(shas), *a.shape[1:]), dtype=a.dtype) for a in arrays]
            positions = np.array([p for p, _ in pairs])
            rows = np.array([r for _, r in pairs])
            order = np.argsort(rows)  # read the mapped rows in file order
            for dst, src in zip(out, arrays):
                dst[positions[order]] = src[rows[order]]
        return out or []

    # -- claims (dermbench.claims: the same NFS-safe claim files as the run's jobs) ----------
    def claim(self, key: str) -> Optional[claims.Claim]:
        """Claim shard ``key``: the claim, or None when a live writer holds it or it is committed."""
        claim = claims.try_claim(self.folder / CLAIMS, key, stale_after=self.stale_after)
        if claim is not None and (self.folder / f"{key}{INDEX_SUFFIX}").exists():  # committed meanwhile
            claims.release(claim)
            return None
        return claim

    @staticmethod
    def heartbeat(claim: claims.Claim) -> None:
        try:
            os.utime(claim.path)
        except FileNotFoundError:  # taken over as stale: the other writer commits the same rows
            pass

    @staticmethod
    def release(claim: claims.Claim) -> None:
        claims.release(claim)

    def live_claims(self) -> list[str]:
        """Keys of shards that live writers are computing now."""
        return sorted(claims.live_claims(self.folder / CLAIMS, stale_after=self.stale_after))

    def sweep(self, other_hosts_after: float = 86400.0) -> None:
        """Remove what killed writers left behind: temporaries of this host's processes that are gone
        and of other hosts untouched for a day (a live writer refreshes its files), the claim temporaries
        of killed claimers (:func:`dermbench.claims.sweep_leftovers`), and stale claims of
        shards that were committed (a writer killed between its commit and its release: no one claims
        a committed shard again, so no takeover would ever clear them)."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return
        if CLAIMS in names:
            claims.sweep_leftovers(self.folder / CLAIMS, other_hosts_after)
        for claim_file in sorted((self.folder / CLAIMS).glob("*.claim")) if CLAIMS in names else []:
            key = claim_file.name[: -len(".claim")]
            current = claims.read_claim(claim_file)
            if (f"{key}{INDEX_SUFFIX}" in names and current is not None
                    and claims.is_stale(*current, stale_after=self.stale_after)):
                claims.release(claims.Claim(claim_file, current[0]))
        now = time.time()
        for n in names:
            if not n.startswith(".tmp-"):
                continue
            head, pid, _ = (n.rsplit(".", 2) + ["", ""])[:3]
            p = self.folder / n
            try:
                if head.endswith("." + HOST) and pid.isdigit():
                    if claims.pid_alive(int(pid)):
                        continue
                elif now - p.stat().st_mtime < other_hosts_after:
                    continue
                p.unlink()
            except FileNotFoundError:
                pass

