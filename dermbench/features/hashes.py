"""Image content hashes, computed once and remembered on disk by (path, size, mtime).

The feature cache is keyed by the sha256 of an image's bytes, so a renamed or moved file is still a
hit. Hashing reads every byte, which for a 10 GB dataset is minutes on every run; this memo keeps
the hash of each file beside its (size, mtime_ns), so a later run re-reads only files that changed.

Layout: ``<cache>/image-hashes/<h[:2]>/<h>.json`` where ``h`` is the sha1 of the image's folder,
holding ``{file name: [size, mtime_ns, sha256]}`` for the files of that folder. Each memo file is
replaced atomically (temporary file in the same folder, fsync, rename), merged with what is on disk
just before, so concurrent runs lose at most an entry, which the next run hashes again; a stale or
damaged memo file is only a miss, never a wrong hash (size and mtime must both match).
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Sequence

from dermbench.io import atomic_write_text, sha256_file


class ImageHashes:
    """sha256 of image files, memoised on (path, size, mtime_ns) in memory and, given a folder, on disk."""

    def __init__(self, memo_dir: Optional[Path] = None) -> None:
        self.memo_dir = Path(memo_dir) if memo_dir is not None else None
        self._memo: dict[tuple[str, int, int], str] = {}
        self._folders: dict[str, dict[str, list]] = {}  # image folder -> its on-disk memo, as loaded
        self.stats = {"hashed": 0, "remembered": 0}

    def __call__(self, path: Path) -> str:
        return self.many([path])[0]

    def many(self, paths: Sequence[Path], threads: int = 1) -> list[str]:
        """Hashes of ``paths`` in order; the unknown ones are read in ``threads`` threads (hashlib
        releases the GIL, so threads overlap file reads and hashing) and remembered."""
        keys = [self._key(Path(p)) for p in paths]
        todo = [i for i, k in enumerate(keys) if k not in self._memo and not self._from_disk(k)]
        if todo:
            with ThreadPoolExecutor(max(1, threads)) as pool:
                for i, digest in zip(todo, pool.map(lambda i: sha256_file(paths[i]), todo)):
                    self._memo[keys[i]] = digest
            self.stats["hashed"] += len(todo)
            self._save({keys[i] for i in todo})
        return [self._memo[k] for k in keys]

    @staticmethod
    def _key(path: Path) -> tuple[str, int, int]:
        try:
            st = path.stat()
        except FileNotFoundError as exc:
            from dermbench.data.sample import DatasetError

            raise DatasetError(f"image {path} does not exist; re-download the dataset or fix its metadata file") from exc
        return (str(path.resolve()), st.st_size, st.st_mtime_ns)

    def _memo_file(self, folder: str) -> Path:
        h = hashlib.sha1(folder.encode()).hexdigest()
        return self.memo_dir / h[:2] / f"{h}.json"

    def _load_folder(self, folder: str) -> dict[str, list]:
        if folder not in self._folders:
            entries: dict[str, list] = {}
            try:
                raw = json.loads(self._memo_file(folder).read_text())
                if isinstance(raw, dict) and raw.get("folder") == folder and isinstance(raw.get("files"), dict):
                    entries = raw["files"]
            except (OSError, ValueError):
                pass  # no memo yet, or a damaged one: the files are hashed again
            self._folders[folder] = entries
        return self._folders[folder]

    def _from_disk(self, key: tuple[str, int, int]) -> bool:
        if self.memo_dir is None:
            return False
        folder, name = os.path.split(key[0])
        entry = self._load_folder(folder).get(name)
        if isinstance(entry, list) and len(entry) == 3 and entry[0] == key[1] and entry[1] == key[2]:
            self._memo[key] = str(entry[2])
            self.stats["remembered"] += 1
            return True
        return False

    def _save(self, keys: set[tuple[str, int, int]]) -> None:
        if self.memo_dir is None:
            return
        by_folder: dict[str, list[tuple[str, int, int]]] = {}
        for k in keys:
            by_folder.setdefault(os.path.split(k[0])[0], []).append(k)
        for folder, ks in by_folder.items():
            self._folders.pop(folder, None)  # merge with what concurrent runs wrote meanwhile
            entries = dict(self._load_folder(folder))
            for path, size, mtime in ks:
                entries[os.path.basename(path)] = [size, mtime, self._memo[(path, size, mtime)]]
            try:
                atomic_write_text(self._memo_file(folder), json.dumps({"folder": folder, "files": entries}))
            except OSError:
                pass  # a read-only cache still works; the hashes are only not remembered
            self._folders[folder] = entries
