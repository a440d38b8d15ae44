"""The DermINO release format (a DINOv2 training checkpoint) <-> timm VisionTransformer keys.

The released file is DINOv2's checkpoint: the backbone weights sit under ``teacher`` with
``backbone.`` (and, from DDP/FSDP, ``module.``) prefixes, beside ``dino_head.*`` / ``ibot_head.*``
which the frozen backbone does not use. DINOv2 may store blocks in chunks
(``blocks.<chunk>.<index>.``, the index counting globally). Apart from that, DINOv2 and timm
share parameter names, except DINOv2's ``mask_token`` (iBOT masking only).
"""
from __future__ import annotations

import re

HEAD_PREFIXES = ("dino_head.", "ibot_head.")
TRAINING_ONLY = ("mask_token",)


def convert_release_checkpoint(obj: dict, grid: tuple[int, int] | None = None) -> dict:
    """Release checkpoint (or a bare DINOv2 backbone state dict) -> timm state dict.

    ``grid``: the patch grid of the model it goes into (16 x 16 for DermINO at 224 px); a file trained at
    another crop size has its position embeddings resampled as DINOv2 does at run time. None keeps the
    file's own grid (exports of smaller models, pretraining's own resizing)."""
    state = obj["teacher"] if isinstance(obj, dict) and "teacher" in obj else obj
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    out = {}
    for key, value in state.items():
        k = key
        for prefix in ("module.", "_orig_mod.", "backbone."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        if k.startswith(HEAD_PREFIXES) or k in TRAINING_ONLY:
            continue
        k = re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", k)  # chunked blocks -> flat
        out[k] = value
    if grid is not None and "pos_embed" in out and out["pos_embed"].shape[1] != 1 + grid[0] * grid[1]:
        # trained at another crop size: resample as DINOv2 does at run time (not timm's resample)
        from baselines.dinov2 import interpolate_pos_embed_like_dinov2

        out["pos_embed"] = interpolate_pos_embed_like_dinov2(out["pos_embed"], tuple(grid))
    return out


def to_release_checkpoint(timm_state: dict, chunks: int = 0, heads: dict | None = None) -> dict:
    """timm state dict -> {'teacher': {'backbone.…': …}} as DINOv2 writes it (``chunks`` > 0 chunks the blocks)."""
    import torch

    depth = 1 + max((int(m.group(1)) for k in timm_state if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1)
    per_chunk = -(-depth // chunks) if chunks else 0
    teacher = {}
    for key, value in timm_state.items():
        k = key
        m = re.match(r"blocks\.(\d+)\.", k)
        if m and chunks:
            i = int(m.group(1))
            k = f"blocks.{i // per_chunk}.{i}." + k[m.end():]
        teacher[f"backbone.{k}"] = value
    embed = timm_state["cls_token"].shape[-1]
    teacher["backbone.mask_token"] = torch.zeros(1, embed)
    for name, value in (heads or {}).items():
        teacher[name] = value
    return {"teacher": teacher}
