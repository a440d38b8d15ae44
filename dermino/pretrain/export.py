"""Export the teacher: DermINO release format, and timm safetensors + JSON for small models.

- Release format (``export_release``): ``{'teacher': {'backbone.…', 'dino_head.…', 'ibot_head.…'}}``
  in DINOv2 key names, the file ``dermbench run --model dermino --weights FILE`` reads (for the
  ViT-B/14-at-224 architecture of the paper).
- timm format (``export_timm``): the teacher backbone's ``VisionTransformer`` state dict as
  safetensors, and a JSON with the constructor kwargs, preprocessing and training record; this is
  how ``dermino/weights/dermino-tiny.*`` is made.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch

from dermbench.io import atomic_write_json
from dermbench.models.registry import IMAGENET_MEAN, IMAGENET_STD

BACKBONE_PREFIX = "backbone.vit."
# torch's weight-norm parametrisation names -> the names DINOv2 checkpoints use
WEIGHT_NORM_NAMES = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}


def teacher_backbone_state(teacher_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ``VisionTransformer`` keys from the teacher's state dict."""
    out = {k[len(BACKBONE_PREFIX):]: v for k, v in teacher_state.items() if k.startswith(BACKBONE_PREFIX)}
    if not out:
        raise ValueError("the state dict has no 'backbone.vit.*' keys: is it a dermino pretraining teacher?")
    return out


def _head_keys(teacher_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    heads = {}
    for key, value in teacher_state.items():
        if key.startswith(("dino_head.", "ibot_head.")):
            for ours, theirs in WEIGHT_NORM_NAMES.items():
                key = key.replace(ours, theirs)
            heads[key] = value
    if "backbone.mask_token" in teacher_state:
        heads["backbone.mask_token"] = teacher_state["backbone.mask_token"]
    return heads


def release_checkpoint(teacher_state: dict[str, torch.Tensor]) -> dict[str, Any]:
    from dermino.release import to_release_checkpoint

    timm_state = {k: v.detach().float().cpu().contiguous() for k, v in teacher_backbone_state(teacher_state).items()}
    heads = {k: v.detach().float().cpu().contiguous() for k, v in _head_keys(teacher_state).items()}
    return to_release_checkpoint(timm_state, heads=heads)


def export_release(teacher_state: dict[str, torch.Tensor], path: Path) -> Path:
    """Write the teacher in the DermINO release format (a DINOv2 checkpoint with key ``teacher``)."""
    from dermino.pretrain.checkpoint import atomic_torch_save

    return atomic_torch_save(release_checkpoint(teacher_state), Path(path))


def export_timm(teacher_state: dict[str, torch.Tensor], timm_kwargs: dict[str, Any], weights_path: Path,
                config_path: Path, training: dict[str, Any], dtype: str = "float16",
                mean: Optional[tuple] = None, std: Optional[tuple] = None) -> tuple[Path, Path]:
    """Teacher backbone as safetensors (timm keys) + its JSON description."""
    from safetensors.torch import save_file

    if dtype not in ("float16", "float32"):
        raise ValueError(f"export dtype must be 'float16' or 'float32', got {dtype!r}")
    torch_dtype = torch.float16 if dtype == "float16" else torch.float32
    state = {k: v.detach().cpu().to(torch_dtype).contiguous() for k, v in teacher_backbone_state(teacher_state).items()}
    weights_path, config_path = Path(weights_path), Path(config_path)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = weights_path.with_name(weights_path.name + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt", "producer": "dermino.pretrain"})
    tmp.replace(weights_path)
    atomic_write_json(config_path, {
        "timm_kwargs": timm_kwargs,
        "input_size": timm_kwargs["img_size"],
        "mean": list(mean or IMAGENET_MEAN),
        "std": list(std or IMAGENET_STD),
        "dtype": dtype,
        "training": training,
    })
    return weights_path, config_path


def load_exported(weights_path: Path, config_path: Path):
    """Rebuild the exported backbone (strict load) — what a consumer of the two files does."""
    from safetensors.torch import load_file
    from timm.models.vision_transformer import VisionTransformer

    cfg = json.loads(Path(config_path).read_text())
    model = VisionTransformer(**{**cfg["timm_kwargs"], "num_classes": 0})
    state = {k: v.float() for k, v in load_file(str(weights_path)).items()}
    model.load_state_dict(state, strict=True)
    return model.eval(), cfg
