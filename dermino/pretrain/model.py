"""Student and teacher: a timm VisionTransformer with a mask token, plus the heads.

The backbone is a plain timm ``VisionTransformer`` (DINOv2 layout: LayerScale, MLP FFN, no
registers), so the exported teacher loads with timm and dermbench's DermINO loader unchanged.
The mask token sits beside it (iBOT replaces masked patch embeddings with it before the position
embeddings are added, as DINOv2 does).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from dermino.pretrain.config import PretrainConfig
from dermino.pretrain.heads import DINOHead, PrototypeClassifier


def timm_kwargs(cfg: PretrainConfig) -> dict[str, Any]:
    """Constructor arguments of the backbone (also written to the exported JSON)."""
    m = cfg.model
    return {
        "img_size": m.img_size, "patch_size": m.patch_size, "embed_dim": m.embed_dim, "depth": m.depth,
        "num_heads": m.num_heads, "mlp_ratio": m.mlp_ratio, "init_values": m.layerscale, "class_token": True,
        "global_pool": "token", "dynamic_img_size": True,
    }


def build_vit(cfg: PretrainConfig) -> nn.Module:
    from timm.layers import DropPath
    from timm.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(**timm_kwargs(cfg), num_classes=0, drop_path_rate=cfg.model.drop_path)
    if cfg.model.drop_path_uniform and cfg.model.drop_path > 0:
        for block in vit.blocks:
            block.drop_path1 = DropPath(cfg.model.drop_path)
            block.drop_path2 = DropPath(cfg.model.drop_path)
    return vit


class Backbone(nn.Module):
    """timm ViT + iBOT mask token; returns final-norm CLS and patch tokens."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.vit = vit
        self.mask_token = nn.Parameter(torch.zeros(1, vit.embed_dim))

    def forward(self, x: torch.Tensor, masks: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        vit = self.vit
        tokens = vit.patch_embed(x)  # [B, H, W, C] (dynamic_img_size) or [B, N, C]
        if masks is not None:
            token = self.mask_token.to(tokens.dtype).reshape((1,) * (tokens.dim() - 1) + (-1,))
            tokens = torch.where(masks.reshape(*tokens.shape[:-1], 1), token, tokens)
        tokens = vit._pos_embed(tokens)
        tokens = vit.patch_drop(tokens)
        tokens = vit.norm_pre(tokens)
        tokens = vit.blocks(tokens)
        tokens = vit.norm(tokens)
        return tokens[:, 0], tokens[:, vit.num_prefix_tokens:]


class SSLModel(nn.Module):
    """Backbone + DINO head + iBOT head + prototype classifier (those switched on).

    The student's forward returns everything the losses need, so that a single call goes through
    DDP / FSDP and every trainable parameter takes part in the graph.
    """

    def __init__(self, cfg: PretrainConfig, prototypes: Optional[torch.Tensor]):
        super().__init__()
        dim = cfg.model.embed_dim
        self.backbone = Backbone(build_vit(cfg))
        if cfg.loss.dino:
            h = cfg.dino_head
            self.dino_head = DINOHead(dim, h.prototypes, h.hidden, h.bottleneck, h.layers)
        if cfg.loss.ibot:
            h = cfg.ibot_head
            self.ibot_head = DINOHead(dim, h.prototypes, h.hidden, h.bottleneck, h.layers)
        if cfg.loss.proto and prototypes is not None:
            self.prototypes = PrototypeClassifier(prototypes, cfg.prototypes.learnable)

    def forward(self, global_crops: torch.Tensor, local_crops: Optional[torch.Tensor],
                masks: Optional[torch.Tensor]) -> dict[str, torch.Tensor]:
        """global_crops [N_g*B, 3, G, G] (crop-major), local_crops [N_l*B, 3, L, L] or None,
        masks [N_g*B, P] bool or None (student only)."""
        out: dict[str, torch.Tensor] = {}
        cls, patches = self.backbone(global_crops, masks)
        out["global_cls"] = cls
        if hasattr(self, "dino_head"):
            if local_crops is not None and local_crops.shape[0]:
                local_cls, _ = self.backbone(local_crops)
                out["local_dino"] = self.dino_head(local_cls)
            out["global_dino"] = self.dino_head(cls)
        if hasattr(self, "ibot_head") and masks is not None:
            out["masked_ibot"] = self.ibot_head(patches[masks])
        if hasattr(self, "prototypes"):
            out["proto_logits"] = self.prototypes(cls)
        return out

    @torch.no_grad()
    def teacher_forward(self, global_crops: torch.Tensor, masks: torch.Tensor, n_global: int) -> dict[str, torch.Tensor]:
        """Teacher outputs: DINO logits per global crop [N_g, B, K] (the loss pairs each student
        crop with the *other* global crops), iBOT logits of the patches the student sees masked."""
        out: dict[str, torch.Tensor] = {}
        cls, patches = self.backbone(global_crops)
        if hasattr(self, "dino_head"):
            out["global_dino"] = self.dino_head(cls).reshape(n_global, cls.shape[0] // n_global, -1)
        if hasattr(self, "ibot_head"):
            out["masked_ibot"] = self.ibot_head(patches[masks])
        return out


def submodules(model: SSLModel) -> dict[str, nn.Module]:
    """The parts clipped separately (DINOv2 clips each student sub-network on its own)."""
    return {name: module for name, module in model.named_children()}


def load_init_weights(model: SSLModel, path: str | Path) -> dict[str, Any]:
    """Student init from DINOv2 ViT-B/14 weights: the original DINOv2 file, a timm
    ``vit_base_patch14_dinov2`` file (.safetensors/.pth), or a DermINO release checkpoint.
    Position embeddings are resized to the model's grid; the load is strict."""
    from timm.layers import resample_abs_pos_embed

    from dermbench.models.weights import load_state_dict_file, load_strict
    from dermino.release import convert_release_checkpoint

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--init-weights {path}: no such file; give the DINOv2 ViT-B/14 weights "
                                "(dinov2_vitb14_pretrain.pth or timm vit_base_patch14_dinov2.lvd142m) or 'scratch'")
    raw = load_state_dict_file(path)
    source = raw["teacher"] if isinstance(raw, dict) and "teacher" in raw else raw
    mask_token = None
    for key, value in source.items():
        if key.split(".")[-1] == "mask_token" and not key.startswith(("dino_head", "ibot_head")):
            mask_token = value
    state = convert_release_checkpoint(raw)
    vit = model.backbone.vit
    grid = vit.patch_embed.grid_size
    if "pos_embed" in state and state["pos_embed"].shape != vit.pos_embed.shape:
        old = state["pos_embed"]
        n_old = old.shape[1] - vit.num_prefix_tokens
        side = int(round(n_old ** 0.5))
        state["pos_embed"] = resample_abs_pos_embed(old, new_size=list(grid), old_size=[side, side],
                                                    num_prefix_tokens=vit.num_prefix_tokens)
    load_strict(vit, state, path, "convert_release_checkpoint")
    if mask_token is not None:
        with torch.no_grad():
            model.backbone.mask_token.copy_(mask_token.reshape(1, -1))
    return {"init_weights": str(path), "pos_embed_resized_to": list(grid), "mask_token_loaded": mask_token is not None}
