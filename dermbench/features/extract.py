"""The extraction pass: decode each image once, in worker processes, and feed every requested
feature kind and view through the backbone.

A task's protocols may need global features of the release's preprocessing ('eval' view) and token
maps or levels of the segmentation input ('seg' view). Decoding a 1024x768 JPEG costs about 10 ms
of a core, a ViT-B forward on a GPU well under a millisecond, so the decode is what limits: here
each image is read and decoded once, every view's transform is applied to the same decoded image
in the worker, and the forwards for every kind share the batch.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from dermbench.data.sample import DatasetError

KINDS = ("global", "tokens", "levels")
VIEWS = ("eval", "seg")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def default_workers() -> int:
    """Decode processes by default: one per core, at most 16 (beyond that the forward limits)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 16))


def resolve_precision(precision: str, device: str) -> str:
    """'auto': bf16 autocast on CUDA (what the harness always did there), fp32 elsewhere."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if str(device).startswith("cuda") else "fp32"
    return precision


def autocast(device: str, precision: str):
    """The autocast context of a resolved precision (fp32: none)."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(torch.device(device).type, dtype=dtype)


def load_image(path: Path, draft_size: Optional[int] = None):
    """Open an image as 8-bit RGB whatever its mode (:func:`dermbench.data.images.load_rgb`, which names
    the file when it cannot be decoded); ``draft_size``: PIL's draft-mode JPEG decoding (opt-in)."""
    from dermbench.data.images import load_rgb

    return load_rgb(path, draft_size)


def seg_input_size(backbone) -> int:
    """Segmentation runs at 224x224 (PROTOCOL.md); a backbone may declare ``seg_input_size``
    when it cannot take 224 (tiny test models use their native size)."""
    return int(getattr(backbone, "seg_input_size", None) or 224)


def view_transform(backbone, view: str):
    """'eval': the release's preprocessing; 'seg': squashed to the segmentation input size."""
    if view == "seg":
        return backbone.transform(resize_mode="squash", input_size=seg_input_size(backbone))
    return backbone.transform()


def draft_size_for(backbone, views: Sequence[str]) -> int:
    """The smallest side a decode may have so that no view's resize upsamples: the eval view resizes
    the short side to input_size / crop_pct (or squashes to input_size), the seg view squashes."""
    p = backbone.preprocessing()
    sides = []
    for v in views:
        if v == "seg":
            sides.append(seg_input_size(backbone))
        elif p["resize_mode"] == "shortest_crop":
            sides.append(int(p["input_size"] / p["crop_pct"]))
        else:
            sides.append(int(p["input_size"]))
    return max(sides)


class DecodedViews:
    """Dataset: item i is (i, (tensor of view 1, tensor of view 2, ...)) from one decode of image i."""

    def __init__(self, paths: Sequence[Path], transforms: Sequence, draft_size: Optional[int] = None):
        self.paths = list(paths)
        self.transforms = list(transforms)
        self.draft_size = draft_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        image = load_image(self.paths[i], self.draft_size)
        return i, tuple(t(image) for t in self.transforms)


class NonFiniteFeatures(RuntimeError):
    """A backbone gave NaN or infinite features for an image (e.g. weights whose tensors hold NaN): the
    features must not reach a head, whose metrics would then be silently meaningless (AUROC 0 was stored)."""

    def __init__(self, backbone_name: str, kind: str, path: Optional[Path], cause: str, sample: str = ""):
        self.backbone_name, self.kind, self.path, self.cause = backbone_name, kind, path, cause
        image = f"image {path}" if path is not None else "an image of the batch"
        if sample:  # the run knows which sample(s) of which task the file is
            image = f"{sample} ({image})"
        super().__init__(
            f"backbone {backbone_name} gave {cause} for {image}; the weights hold NaN/inf values or "
            "the forward overflows: check the weights file (`dermbench weights check`), try --precision fp32, or "
            "leave --weights out for the released weights")


FLOAT16_MAX = 65504.0  # token and level maps are stored as float16: a value beyond this becomes inf there


def _check_finite(backbone, kind: str, outputs, paths: Optional[Sequence[Path]], limit: Optional[float]) -> None:
    """Raise :class:`NonFiniteFeatures` naming the first image of the batch whose features are NaN or infinite,
    or (``limit``) beyond what the stored dtype holds.

    Cheap beside the forward: one min/max pass per output on the device (``torch.aminmax``: a NaN anywhere
    makes both NaN, an inf shows as the max or min); only when that fails is ``torch.isfinite`` asked
    which image it was."""
    import torch

    for out in outputs:
        lo, hi = (float(v) for v in torch.aminmax(out))
        if np.isfinite(lo) and np.isfinite(hi) and (limit is None or max(-lo, hi) <= limit):
            continue
        bad = ~torch.isfinite(out).flatten(1).all(dim=1)
        cause = f"non-finite (NaN or inf) {kind} features"
        if not bool(bad.any()):  # finite, but out of the stored dtype's range
            bad = (out.abs() > limit).flatten(1).any(dim=1)
            cause = f"{kind} features beyond the float16 range (inf once stored)"
        row = int(torch.nonzero(bad)[0, 0])
        raise NonFiniteFeatures(backbone.name, kind, paths[row] if paths else None, cause)


def forward(backbone, kind: str, batch, level_indices, paths: Optional[Sequence[Path]] = None) -> list[np.ndarray]:
    """One kind's outputs for a batch, on the host, in the dtype the cache stores (global float32,
    tokens and levels float16: they are large and feed trained heads). Non-finite outputs raise
    :class:`NonFiniteFeatures` naming the image (``paths``: the batch's files, in order)."""
    if kind == "global":
        outputs = [backbone.forward_global(batch)]
    elif kind == "tokens":
        outputs = [backbone.forward_tokens(batch)]
    else:
        outputs = list(backbone.forward_levels(batch, level_indices))
    dtype = np.float32 if kind == "global" else np.float16
    _check_finite(backbone, kind, outputs, paths, None if dtype == np.float32 else FLOAT16_MAX)
    return [o.float().cpu().numpy().astype(dtype) for o in outputs]


@dataclass
class Plan:
    """What one batch of decoded images is for: the shard (chunk) it fills and, per request, which of
    its images that request computes and at which rows of the request's shard they go."""

    chunk: int
    positions: list[int]  # dataset indices of the batch, in order
    rows: dict[int, tuple[list[int], slice]] = field(default_factory=dict)  # request -> (batch members, shard rows)
    last: bool = False  # the chunk's last batch: its shards are complete after it


def make_loader(dataset: DecodedViews, batch_sampler, workers: int, pin_memory: bool):
    import multiprocessing as mp

    import torch

    kwargs = {}
    if workers > 0:
        # fork: workers start in milliseconds and share the parent's imports (spawn/forkserver would
        # import torch again in each); prefetch enough to keep the forward fed.
        if "fork" in mp.get_all_start_methods():
            kwargs["multiprocessing_context"] = "fork"
        kwargs["prefetch_factor"] = 4
    return torch.utils.data.DataLoader(dataset, batch_sampler=batch_sampler, num_workers=workers,
                                       pin_memory=pin_memory, **kwargs)
