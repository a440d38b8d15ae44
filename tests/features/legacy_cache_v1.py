"""Feature cache: frozen features computed once per (backbone fingerprint, kind, view, image).

Content-keyed: an image is identified by the sha256 of its bytes, so a renamed or
moved file is still a hit and an edited file is a miss. One ``.npy`` per image and
feature kind, written atomically, so an interrupted extraction resumes where it stopped.

Layout: ``<cache>/features/<backbone fingerprint>/<kind>-<view>/<sha[:2]>/<sha>.npy``
(``levels`` stores one ``.npz`` holding every level). Global features are float32;
token grids and levels float16 (they are large and feed trained heads).
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from dermbench.data.sample import DatasetError, Sample
from dermbench.io import atomic_write_bytes, sha256_file

KINDS = ("global", "tokens", "levels")


class ImageHashes:
    """sha256 of image files, memoised on (path, size, mtime) for the life of the process."""

    def __init__(self) -> None:
        self._memo: dict[tuple[str, int, int], str] = {}

    def __call__(self, path: Path) -> str:
        st = Path(path).stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in self._memo:
            self._memo[key] = sha256_file(path)
        return self._memo[key]


_HASHES = ImageHashes()


def load_image(path: Path):
    """Open an image as RGB; a clear error names the file if it cannot be decoded."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except FileNotFoundError as exc:
        raise DatasetError(f"image {path} does not exist; re-download the dataset or fix its metadata file") from exc
    except Exception as exc:
        raise DatasetError(f"image {path} cannot be read ({type(exc).__name__}: {exc}); replace the file or remove it from the dataset") from exc


class FeatureCache:
    def __init__(self, root: Path):
        self.root = Path(root) / "features"
        self.stats = {"hits": 0, "computed": 0}

    def _path(self, fingerprint: str, kind: str, view: str, sha: str) -> Path:
        ext = "npz" if kind == "levels" else "npy"
        return self.root / fingerprint / f"{kind}-{view}" / sha[:2] / f"{sha}.{ext}"

    def get(
        self,
        backbone,
        samples: Sequence[Sample],
        kind: str = "global",
        view: str = "eval",
        level_indices: Optional[Sequence[int]] = None,
        batch_size: int = 32,
        device: str = "cpu",
        num_workers: int = 0,
        progress: bool = False,
        desc: str = "features",
    ):
        """Features for ``samples`` in order.

        kind: 'global' -> array [N, D]; 'tokens' -> array [N, C, h, w]; 'levels' -> list of [N, C_i, h_i, w_i].
        view: 'eval' uses the release's preprocessing; 'seg' resizes (squash) to 224x224 as the
        segmentation protocol prescribes (or the backbone's own input size if it is fixed).
        """
        if kind not in KINDS:
            raise ValueError(f"feature kind must be one of {KINDS}, got {kind!r}")
        view_tag = view if kind != "levels" else f"{view}-" + "_".join(map(str, level_indices or backbone.level_indices))
        fp = backbone.fingerprint()
        shas = [_HASHES(s.image) for s in samples]
        paths = [self._path(fp, kind, view_tag, sha) for sha in shas]
        todo = [i for i, p in enumerate(paths) if not p.exists()]
        self.stats["hits"] += len(samples) - len(todo)
        if todo:
            self._compute(backbone, [samples[i] for i in todo], [paths[i] for i in todo], kind, view,
                          level_indices, batch_size, device, num_workers, progress, desc)
        return self._load(paths, kind)

    def _compute(self, backbone, samples, paths, kind, view, level_indices, batch_size, device, num_workers, progress, desc):
        import torch
        from tqdm.auto import tqdm

        transform = backbone.transform(resize_mode="squash", input_size=seg_input_size(backbone)) if view == "seg" else backbone.transform()
        dataset = _ImageDataset([s.image for s in samples], transform)
        # A backbone may cap the batch: SAM's global-attention blocks hold a [B, 12, 4096, 4096] matrix at
        # 1024 px (0.8 GB per image), so batch 32 asks for 25 GB. Features do not depend on the batch size.
        cap = getattr(backbone, "max_batch_size", None)
        batch_size = min(batch_size, cap) if cap else batch_size
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False)
        backbone = backbone.to(device)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if str(device).startswith("cuda") else contextlib.nullcontext()
        offset = 0
        with torch.inference_mode(), autocast:
            for batch in tqdm(loader, desc=f"{desc} [{backbone.name}]", disable=not progress, leave=False):
                batch = batch.to(device)
                if kind == "global":
                    outs = [backbone.forward_global(batch).float().cpu().numpy().astype(np.float32)]
                elif kind == "tokens":
                    outs = [backbone.forward_tokens(batch).float().cpu().numpy().astype(np.float16)]
                else:
                    outs = [o.float().cpu().numpy().astype(np.float16) for o in backbone.forward_levels(batch, level_indices)]
                for j in range(batch.shape[0]):
                    buf = io.BytesIO()
                    if kind == "levels":
                        np.savez(buf, *[o[j] for o in outs])
                    else:
                        np.save(buf, outs[0][j])
                    atomic_write_bytes(paths[offset + j], buf.getvalue())
                offset += batch.shape[0]
        self.stats["computed"] += len(samples)

    @staticmethod
    def _load(paths: list[Path], kind: str):
        if kind == "levels":
            per_image = []
            for p in paths:
                with np.load(p) as z:
                    per_image.append([z[f"arr_{i}"] for i in range(len(z.files))])
            return [np.stack([img[l] for img in per_image]) for l in range(len(per_image[0]))] if per_image else []
        return np.stack([np.load(p) for p in paths]) if paths else np.zeros((0,))


def seg_input_size(backbone) -> int:
    """Segmentation runs at 224x224 (PROTOCOL.md); a backbone may declare ``seg_input_size``
    when it cannot take 224 (tiny test models use their native size)."""
    return int(getattr(backbone, "seg_input_size", None) or 224)


class _ImageDataset:
    def __init__(self, paths, transform):
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        return self.transform(load_image(self.paths[i]))
