"""Per-iteration schedules (DINOv2's CosineScheduler) and AdamW parameter groups."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dermino.pretrain.config import PretrainConfig


class CosineSchedule:
    """``freeze`` iterations at 0, linear warm-up from ``start_warmup`` to ``base``, cosine to
    ``final`` at ``total``; ``final`` from then on."""

    def __init__(self, base: float, final: float, total: int, warmup: int = 0, start_warmup: float = 0.0,
                 freeze: int = 0):
        warmup, freeze = int(warmup), int(freeze)
        if warmup + freeze > total:
            raise ValueError(f"schedule: warm-up ({warmup}) + freeze ({freeze}) iterations exceed the total ({total})")
        self.final = final
        steps = np.arange(total - warmup - freeze)
        cosine = final + 0.5 * (base - final) * (1 + np.cos(np.pi * steps / max(len(steps), 1)))
        self.values = np.concatenate([np.zeros(freeze), np.linspace(start_warmup, base, warmup), cosine])

    def __getitem__(self, it: int) -> float:
        return float(self.values[it]) if it < len(self.values) else float(self.final)


@dataclass
class Schedules:
    lr: CosineSchedule
    last_layer_lr: CosineSchedule
    weight_decay: CosineSchedule
    momentum: CosineSchedule
    teacher_temp: CosineSchedule

    def at(self, it: int) -> dict[str, float]:
        return {"lr": self.lr[it], "last_layer_lr": self.last_layer_lr[it], "weight_decay": self.weight_decay[it],
                "momentum": self.momentum[it], "teacher_temp": self.teacher_temp[it]}


def peak_lr(cfg: PretrainConfig) -> float:
    """DINOv2's square-root scaling of the base lr with the global batch (reference 1024)."""
    return cfg.optim.base_lr * math.sqrt(cfg.schedule.batch_size / 1024.0)


def build_schedules(cfg: PretrainConfig) -> Schedules:
    o, t, ep = cfg.optim, cfg.teacher, cfg.schedule.epoch_length
    total = cfg.total_iterations
    lr = CosineSchedule(peak_lr(cfg), o.min_lr, total, warmup=round(o.warmup_epochs * ep))
    last = CosineSchedule(peak_lr(cfg), o.min_lr, total, warmup=round(o.warmup_epochs * ep))
    last.values[: round(o.freeze_last_layer_epochs * ep)] = 0.0  # last head layer frozen at first
    temp_warmup = min(round(t.temp_warmup_epochs * ep), total)
    return Schedules(
        lr=lr,
        last_layer_lr=last,
        weight_decay=CosineSchedule(o.weight_decay, o.weight_decay_end, total),
        momentum=CosineSchedule(t.momentum, t.momentum_end, total),
        teacher_temp=CosineSchedule(t.temp, t.temp, temp_warmup, warmup=temp_warmup, start_warmup=t.warmup_temp),
    )


def _layer_id(name: str, depth: int) -> int:
    """DINOv2's layer index for layer-wise lr decay: embeddings 0, block i -> i + 1, rest depth + 1."""
    if name.startswith("backbone.") and any(k in name for k in ("pos_embed", "patch_embed", "mask_token", "cls_token")):
        return 0
    if name.startswith("backbone.vit.blocks."):
        return int(name.split(".")[3]) + 1
    return depth + 1


def no_weight_decay(name: str, exempt_tokens: bool = False) -> bool:
    """DINOv2's rule (``dinov2/utils/param_groups.py::get_params_groups_with_decay``): biases, norms and
    LayerScale gammas are not decayed; position embedding, class/mask tokens and the prototypes are.
    ``exempt_tokens`` (setting ``optim.no_decay_tokens_and_prototypes``) also exempts those, a
    dermbench option: decay pulls the text-initialised prototypes away from the text embeddings."""
    leaf = name.split(".")[-1]
    if name.endswith(".bias") or "norm" in name or "gamma" in name:
        return True
    return exempt_tokens and (leaf in ("pos_embed", "cls_token", "mask_token") or name.startswith("prototypes."))


def param_groups(model, cfg: PretrainConfig) -> list[dict]:
    """AdamW groups, one per (lr multiplier, weight-decay multiplier, last layer?) combination."""
    o, depth = cfg.optim, cfg.model.depth
    groups: dict[tuple, dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr_mult = o.layerwise_decay ** (depth + 1 - _layer_id(name, depth))
        if "patch_embed" in name:
            lr_mult *= o.patch_embed_lr_mult
        wd_mult = 0.0 if no_weight_decay(name, o.no_decay_tokens_and_prototypes) else 1.0
        last = "last_layer" in name
        key = (lr_mult, wd_mult, last)
        group = groups.setdefault(key, {"params": [], "names": [], "lr_mult": lr_mult, "wd_mult": wd_mult,
                                        "is_last_layer": last})
        group["params"].append(param)
        group["names"].append(name)
    return list(groups.values())


def apply_schedules(optimizer, values: dict[str, float]) -> None:
    for group in optimizer.param_groups:
        base = values["last_layer_lr"] if group["is_last_layer"] else values["lr"]
        group["lr"] = base * group["lr_mult"]
        group["weight_decay"] = values["weight_decay"] * group["wd_mult"]
