"""Feature cache: frozen features computed once per (backbone fingerprint, kind, view, image).

Content-keyed: an image is identified by the sha256 of its bytes (remembered on disk by path,
size and mtime, :mod:`dermbench.features.hashes`), so a renamed or moved file is still a hit and an
edited file is a miss. Features are stored in shards of a few thousand images per (backbone
fingerprint, kind, view), each with its content-hash index, committed atomically and read by memory
mapping (:mod:`dermbench.features.shards`); an interrupted extraction resumes at the last committed
shard, and concurrent runs share the work through claim files.

Layout: ``<cache>/features/<backbone fingerprint>/<kind>-<view>[+<precision>][+draft]/``
holding ``<shard key>.index.json`` and ``<shard key>.<i>.npy`` (``levels``: one array per level).
fp32 features have no suffix; bf16/fp16 autocast and draft-mode JPEG decoding change the features,
so they are kept apart. Global features are float32; token grids and levels float16.

Earlier versions wrote one file per image, ``<kind>-<view>/<sha[:2]>/<sha>.npy`` (``.npz`` for
levels), in the same folder; those files are still read where their precision matches what those
versions used on this device (fp32 on the CPU, bf16 autocast on CUDA), and never written.
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections import deque
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from dermbench.data.sample import Sample
from dermbench.features.extract import (KINDS, VIEWS, DecodedViews, Plan, autocast, default_workers, draft_size_for,
                                        forward, load_image, make_loader, resolve_precision, seg_input_size,
                                        view_transform)
from dermbench.features.hashes import ImageHashes
from dermbench.features.shards import ShardFolder, ShardWriter

log = logging.getLogger(__name__)

DEFAULT_SHARD_SIZE = 2048
HEARTBEAT_S = 20.0
WAIT_POLL_S = 1.0

__all__ = ["KINDS", "FeatureCache", "ImageHashes", "load_image", "seg_input_size"]


class FeatureCache:
    """Cached frozen features; ``extract`` computes every missing (kind, view) of a sample list in one pass.

    workers: decode processes (default one per core, at most 16; 0 decodes in this process).
    precision: 'auto' (bf16 autocast on CUDA, fp32 elsewhere), 'fp32', 'bf16' or 'fp16'.
    draft: decode JPEGs in PIL's draft mode at the smallest scale the transforms allow (opt-in).
    """

    def __init__(self, root: Path, workers: Optional[int] = None, precision: str = "auto", draft: bool = False,
                 shard_size: int = DEFAULT_SHARD_SIZE, stale_after: float = 600.0):
        resolve_precision(precision, "cpu")  # validates the name
        if workers is not None and int(workers) < 0:
            raise ValueError(f"workers must be 0 or more, got {workers}")
        if int(shard_size) < 1:
            raise ValueError(f"shard_size must be at least 1, got {shard_size}")
        self.base = Path(root)
        self.root = self.base / "features"
        self.workers = default_workers() if workers is None else int(workers)
        self.precision = precision
        self.draft = bool(draft)
        self.shard_size = int(shard_size)
        self.stale_after = float(stale_after)
        self.hashes = ImageHashes(self.base / "image-hashes")
        self.stats = {"hits": 0, "computed": 0, "legacy_hits": 0, "decoded": 0, "waited_for_others": 0}
        self._folders: dict[Path, ShardFolder] = {}

    def settings(self, device: str) -> dict:
        """What to record beside results: the settings that change features (precision, draft) and
        those that do not (workers, shard size: extraction speed only)."""
        return {"precision": resolve_precision(self.precision, device), "draft_decode": self.draft,
                "workers": self.workers, "shard_size": self.shard_size}

    # -- public API ------------------------------------------------------------------------
    def get(self, backbone, samples: Sequence[Sample], kind: str = "global", view: str = "eval",
            level_indices: Optional[Sequence[int]] = None, batch_size: int = 32, device: str = "cpu",
            num_workers: Optional[int] = None, progress: bool = False, desc: str = "features", transform=None):
        """Features for ``samples`` in order.

        kind: 'global' -> array [N, D]; 'tokens' -> array [N, C, h, w]; 'levels' -> list of [N, C_i, h_i, w_i].
        view: 'eval' uses the release's preprocessing; 'seg' resizes (squash) to 224x224 as the
        segmentation protocol prescribes (or the backbone's own input size if it is fixed).
        transform: an image transform (PIL -> tensor) to use instead of the view's, e.g. a corrupting one
        (robustness protocol); ``view`` must then name it (``<base view>~...``), since the view is the cache key.
        """
        return self.extract(backbone, samples, [(kind, view)], level_indices=level_indices, batch_size=batch_size,
                            device=device, workers=num_workers, progress=progress, desc=desc,
                            transforms={view: transform} if transform is not None else None)[(kind, view)]

    def extract(self, backbone, samples: Sequence[Sample], requests: Sequence[tuple[str, str]],
                level_indices: Optional[Sequence[int]] = None, batch_size: int = 32, device: str = "cpu",
                workers: Optional[int] = None, progress: bool = False, desc: str = "features",
                transforms: Optional[dict] = None) -> dict:
        """{(kind, view): features} for every request, each as ``get`` returns it; what is missing is
        computed in one pass that decodes each image once for all requests."""
        requests = list(dict.fromkeys((str(k), str(v)) for k, v in requests))
        transforms = dict(transforms or {})
        for view in transforms:
            if view in VIEWS or view.split("~")[0] not in VIEWS:
                raise ValueError(f"a view with its own transform needs its own name '<{'|'.join(VIEWS)}>~...', "
                                 f"got {view!r}")
        for kind, view in requests:
            if kind not in KINDS:
                raise ValueError(f"feature kind must be one of {KINDS}, got {kind!r}")
            if view not in VIEWS and view not in transforms:
                raise ValueError(f"feature view must be one of {VIEWS} (or a named view with its own transform), "
                                 f"got {view!r}")
        precision = resolve_precision(self.precision, device)
        workers = self.workers if workers is None else int(workers)
        levels = list(level_indices if level_indices is not None else backbone.level_indices)
        fp = backbone.fingerprint()
        stores = [self._store(fp, kind, view, levels, precision, device) for kind, view in requests]

        shas = self.hashes.many([s.image for s in samples], threads=max(1, workers))
        unique = list(dict.fromkeys(shas))  # first-occurrence order: cold batches are today's batches
        path_of: dict[str, Path] = {}
        for s, sha in zip(samples, shas):
            path_of.setdefault(sha, Path(s.image))

        first = True
        waiting_logged = False
        while True:
            missing = [store.missing(unique) for store in stores]
            if first:
                for r, miss in enumerate(missing):
                    self.stats["hits"] += sum(sha not in miss for sha in shas)
                first = False
            if not any(missing):
                break
            done = self._compute(backbone, requests, stores, unique, path_of, missing, levels, batch_size, device,
                                 precision, workers, progress, desc, transforms)
            if done == 0:  # the rest is being computed by other live writers: wait for their shards
                if not waiting_logged:
                    log.info("%s: waiting for %d shard(s) other processes are computing", desc,
                             sum(len(s.folder.live_claims()) for s in stores))
                    waiting_logged = True
                self.stats["waited_for_others"] += 1
                time.sleep(WAIT_POLL_S)
        return {req: store.load(shas) for req, store in zip(requests, stores)}

    # -- internals -------------------------------------------------------------------------
    def _store(self, fp, kind, view, levels, precision, device) -> "_Store":
        tag = f"{kind}-{view}" if kind != "levels" else f"{kind}-{view}-" + "_".join(map(str, levels))
        suffix = ("" if precision == "fp32" else f"+{precision}") + ("+draft" if self.draft else "")
        path = self.root / fp / f"{tag}{suffix}"
        if path not in self._folders:
            self._folders[path] = ShardFolder(path, stale_after=self.stale_after)
            self._folders[path].sweep()
        # What earlier versions wrote, one file per image: fp32 on the CPU, bf16 autocast on CUDA.
        legacy_precision = "bf16" if str(device).startswith("cuda") else "fp32"
        legacy = self.root / fp / tag if (precision == legacy_precision and not self.draft) else None
        return _Store(kind, view, self._folders[path], legacy, self.stats)

    def _compute(self, backbone, requests, stores, unique, path_of, missing, levels, batch_size, device, precision,
                 workers, progress, desc, transforms) -> int:
        """One pass over the shards this process can claim; returns how many it committed."""
        import torch

        from dermbench.progress import progress_bar

        def base(view: str) -> str:  # a named view with its own transform: "<eval|seg>~..."
            return view.split("~")[0]

        views = sorted({v for _, v in requests}, key=lambda v: (VIEWS.index(base(v)), v))
        view_of = [views.index(v) for _, v in requests]
        cap = getattr(backbone, "max_batch_size", None)  # e.g. SAM at 1024 px: features do not depend on it
        batch_size = min(batch_size, cap) if cap else batch_size
        position = {sha: i for i, sha in enumerate(unique)}
        dataset = DecodedViews([path_of[sha] for sha in unique],
                               [transforms.get(v) or view_transform(backbone, v) for v in views],
                               draft_size_for(backbone, [base(v) for v in views]) if self.draft else None)

        # The work, shard by shard: chunks of the sample list, and per request the images it lacks there.
        chunks = [unique[i : i + self.shard_size] for i in range(0, len(unique), self.shard_size)]
        work = []
        for chunk in chunks:
            items = []
            for r, miss in enumerate(missing):
                todo = [sha for sha in chunk if sha in miss]
                if todo:
                    items.append((r, hashlib.sha256("\n".join(todo).encode()).hexdigest()[:32], todo))
            if items:
                work.append(items)
        n_batches = sum(-(-len(set().union(*(t for _, _, t in items))) // batch_size) for items in work)
        plans: deque[Plan] = deque()
        held: dict[tuple[int, int], tuple[Path, ShardWriter]] = {}  # (chunk, request) -> (claim, writer)

        def batches():
            """Claims each shard when the loader first reaches it (the loader runs ahead by its prefetch),
            so concurrent writers split the work shard by shard."""
            for c, items in enumerate(work):
                claimed = []
                for r, key, todo in items:
                    claim = stores[r].folder.claim(key)
                    if claim is not None:
                        held[(c, r)] = (claim, ShardWriter(stores[r].folder.folder, key, todo))
                        claimed.append((r, {sha: row for row, sha in enumerate(todo)}))
                if not claimed:
                    continue
                need = sorted(set().union(*[rows_of for _, rows_of in claimed]), key=position.__getitem__)
                for start in range(0, len(need), batch_size):
                    batch = need[start : start + batch_size]
                    plan = Plan(chunk=c, positions=[position[sha] for sha in batch])
                    for r, rows_of in claimed:
                        members = [j for j, sha in enumerate(batch) if sha in rows_of]
                        if members:
                            first = rows_of[batch[members[0]]]
                            plan.rows[r] = (members, slice(first, first + len(members)))
                    plan.last = start + batch_size >= len(need)
                    plans.append(plan)
                    yield plan.positions

        class _Sampler:
            def __iter__(self):
                return batches()

        pin = str(device).startswith("cuda")
        loader = make_loader(dataset, _Sampler(), min(workers, max(0, n_batches - 1)), pin_memory=pin)
        backbone = backbone.to(device)
        committed = 0
        beat = time.monotonic()
        bar = progress_bar(total=sum(len(t) for items in work for _, _, t in items), unit="img", enabled=progress,
                           step=(desc, backbone.name, f"features ({', '.join(sorted({k for k, _ in requests}))})"))
        try:
            with torch.inference_mode(), autocast(device, precision):
                for idx, tensors in loader:
                    plan = plans.popleft()
                    if idx.tolist() != plan.positions:  # the loader keeps order; anything else is a bug here
                        raise RuntimeError("feature extraction: a batch arrived out of order")
                    on_device = {}
                    for r, (members, rows) in plan.rows.items():
                        v = view_of[r]
                        if v not in on_device:
                            on_device[v] = tensors[v].to(device, non_blocking=pin)
                        x = on_device[v] if len(members) == len(plan.positions) else on_device[v][members]
                        batch_paths = [dataset.paths[plan.positions[j]] for j in members]  # named if its features are NaN
                        held[(plan.chunk, r)][1].write(rows, forward(backbone, requests[r][0], x, levels, batch_paths))
                        bar.update(len(members))
                    self.stats["decoded"] += len(plan.positions)
                    if plan.last:  # every request of this shard is complete: commit, then release the claims
                        for (c, r) in [k for k in held if k[0] == plan.chunk]:
                            claim, writer = held.pop((c, r))
                            writer.commit()
                            ShardFolder.release(claim)
                            self.stats["computed"] += len(writer.shas)
                            committed += 1
                    if time.monotonic() - beat > HEARTBEAT_S:
                        for claim, _ in held.values():
                            ShardFolder.heartbeat(claim)
                        beat = time.monotonic()
        finally:
            bar.close()
            for (c, r), (claim, writer) in held.items():  # interrupted: nothing half-written stays claimed
                writer.discard()
                ShardFolder.release(claim)
        return committed


class _Store:
    """One request's features: its shard folder and, where readable, the per-image files of earlier versions."""

    def __init__(self, kind: str, view: str, folder: ShardFolder, legacy: Optional[Path], stats: dict):
        self.kind, self.view, self.folder, self.legacy, self.stats = kind, view, folder, legacy, stats
        self._legacy_found: set[str] = set()

    def _legacy_path(self, sha: str) -> Path:
        return self.legacy / sha[:2] / f"{sha}.{'npz' if self.kind == 'levels' else 'npy'}"

    def missing(self, unique: Sequence[str]) -> set[str]:
        self.folder.refresh()
        out = set()
        for sha in unique:
            if self.folder.has(sha) or sha in self._legacy_found:
                continue
            if self.legacy is not None and self._legacy_path(sha).exists():
                self._legacy_found.add(sha)
                continue
            out.add(sha)
        return out

    def load(self, shas: Sequence[str]):
        """Features of ``shas`` in order (repeats allowed), as ``FeatureCache.get`` returns them."""
        if not shas:
            return [] if self.kind == "levels" else np.zeros((0,))
        unique = list(dict.fromkeys(shas))
        in_shards = [s for s in unique if self.folder.has(s)]
        legacy = [s for s in unique if not self.folder.has(s)]
        self.stats["legacy_hits"] += len(legacy)
        parts = []  # per stored array: the shard rows, then the legacy rows
        if in_shards:
            parts.append(self.folder.read(in_shards))
        if legacy:
            per_image = [self._read_legacy(sha) for sha in legacy]
            parts.append([np.stack([img[a] for img in per_image]) for a in range(len(per_image[0]))])
        arrays = parts[0] if len(parts) == 1 else [np.concatenate(pair) for pair in zip(*parts)]
        where = {sha: i for i, sha in enumerate(in_shards + legacy)}
        order = np.array([where[sha] for sha in shas])
        identity = len(order) == len(where) and bool((order == np.arange(len(order))).all())
        out = arrays if identity else [a[order] for a in arrays]
        return out if self.kind == "levels" else out[0]

    def _read_legacy(self, sha: str) -> list[np.ndarray]:
        path = self._legacy_path(sha)
        if self.kind == "levels":
            with np.load(path) as z:
                return [z[f"arr_{i}"] for i in range(len(z.files))]
        return [np.load(path)]
