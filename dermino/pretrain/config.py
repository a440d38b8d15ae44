"""Pretraining configuration: typed sections, the ``paper`` and ``tiny`` presets, dotted overrides.

The ``paper`` preset holds the effective values of the official DermINO code (PROTOCOL.md,
"DermINO pretraining"); ``tiny`` is the same recipe shrunk to run in CPU minutes. Every value
can be overridden (``--set optim.base_lr=1e-3``), and the resolved configuration is written
next to every checkpoint. No torch import here: the CLI's ``--help`` must stay instant.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from dermbench.names import did_you_mean

PRESETS = ("paper", "tiny")
LOSSES = ("dino", "ibot", "koleo", "proto")


@dataclass
class ModelConfig:
    """The student/teacher ViT (timm VisionTransformer, DINOv2 style)."""

    img_size: int = 224
    patch_size: int = 14
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    layerscale: float = 1e-5
    drop_path: float = 0.4
    # DINOv2 ViT-B uses the same drop-path rate in every block; timm's default is a linear ramp.
    drop_path_uniform: bool = True
    # 'dinov2': start from the file in init_weights (pos-embed resized); 'scratch': random init.
    init: str = "dinov2"
    init_weights: str = ""


@dataclass
class CropConfig:
    global_size: int = 224
    global_scale: tuple[float, float] = (0.32, 1.0)
    local_number: int = 8
    local_size: int = 98
    local_scale: tuple[float, float] = (0.05, 0.32)


@dataclass
class MaskConfig:
    """iBOT block masking of the global crops (DINOv2's collate + MaskingGenerator)."""

    sample_probability: float = 0.5
    ratio_min: float = 0.1
    ratio_max: float = 0.5
    # Largest single block, as a fraction of the patch grid (DINOv2: 0.5 -> 128 of 256 patches).
    max_block_fraction: float = 0.5
    min_block_patches: int = 4


@dataclass
class HeadConfig:
    prototypes: int = 65536
    bottleneck: int = 256
    hidden: int = 2048
    layers: int = 3


@dataclass
class LossConfig:
    """Loss switches (the paper's Table 1 ablations) and weights."""

    dino: bool = True
    ibot: bool = True
    koleo: bool = True
    proto: bool = True
    dino_weight: float = 1.0
    ibot_weight: float = 1.0
    koleo_weight: float = 0.1
    proto_weight: float = 1.0
    student_temp: float = 0.1
    sinkhorn_iterations: int = 3
    # 'rank': nearest neighbours within each process's batch (DINOv2's behaviour);
    # 'global': within the global batch (same result for any number of processes).
    koleo_scope: str = "rank"


@dataclass
class PrototypeConfig:
    """Knowledge-guided prototypes (supervised loss)."""

    # 'auto' (CODER when its weights are in the local HF cache, else MiniLM), 'coder', 'minilm',
    # or a local folder holding a transformers text model.
    text_encoder: str = "auto"
    merge_threshold: float = 0.85  # cosine; depends on the text model: review label_merges.csv
    # Learnable (the paper's description) or frozen at the text embeddings (the official code).
    learnable: bool = True
    # Optional CSV (raw_label,name) or JSON {raw_label: name} applied before normalisation,
    # for mappings a dermatologist has reviewed.
    synonyms: str = ""
    expand_abbreviations: bool = True


@dataclass
class OptimConfig:
    base_lr: float = 2e-3  # for a global batch of 1024, scaled by sqrt(batch / 1024)
    min_lr: float = 1e-6
    warmup_epochs: float = 10.0
    weight_decay: float = 0.04
    weight_decay_end: float = 0.2
    patch_embed_lr_mult: float = 0.2
    layerwise_decay: float = 1.0
    # DINOv2 decays position embedding, class/mask tokens (and DermINO's prototypes); True exempts them
    no_decay_tokens_and_prototypes: bool = False
    clip_grad: float = 3.0
    freeze_last_layer_epochs: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.999


@dataclass
class TeacherConfig:
    momentum: float = 0.992
    momentum_end: float = 1.0
    temp: float = 0.07
    warmup_temp: float = 0.04
    temp_warmup_epochs: float = 30.0


@dataclass
class ScheduleConfig:
    epochs: int = 100
    epoch_length: int = 400  # iterations per epoch (DINOv2's OFFICIAL_EPOCH_LENGTH)
    batch_size: int = 2048  # global batch (all processes together)


@dataclass
class DataConfig:
    data_root: str = ""  # dermbench data root (the official dataset folders)
    synth: bool = False  # use DermSynth as the data root
    images: list[str] = field(default_factory=list)  # unlabelled image folders
    # Tasks whose TRAIN split feeds the supervised prototype loss ('classification', names, groups).
    labelled_tasks: str = "classification"
    # Tasks whose TRAIN images are used without labels (e.g. 'segmentation,caption').
    unlabelled_tasks: str = ""
    # Drop any image that lies in the test split of an evaluation task under data_root.
    exclude_eval_test: bool = True
    num_workers: int = 8


@dataclass
class RunConfig:
    seed: int = 0
    device: str = "auto"  # 'auto' | 'cpu' | 'cuda'
    # 'ddp' or 'fsdp' (torch FSDP2, fully_shard); a single process runs the same code
    parallel: str = "ddp"
    precision: str = "auto"  # 'auto' (bf16 autocast on CUDA, fp32 on CPU) | 'bf16' | 'fp32'
    checkpoint_every: int = 1000  # iterations; 0 = only at the end
    log_every: int = 10
    stop_at: int = 0  # stop (and checkpoint) after this iteration without ending the schedule; 0 = run to the end


@dataclass
class PretrainConfig:
    preset: str = "paper"
    model: ModelConfig = field(default_factory=ModelConfig)
    crops: CropConfig = field(default_factory=CropConfig)
    masking: MaskConfig = field(default_factory=MaskConfig)
    dino_head: HeadConfig = field(default_factory=HeadConfig)
    ibot_head: HeadConfig = field(default_factory=HeadConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    prototypes: PrototypeConfig = field(default_factory=PrototypeConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    data: DataConfig = field(default_factory=DataConfig)
    run: RunConfig = field(default_factory=RunConfig)

    @property
    def total_iterations(self) -> int:
        return self.schedule.epochs * self.schedule.epoch_length

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def validate(self) -> "PretrainConfig":
        """Check values that would otherwise fail deep inside training."""
        m, c = self.model, self.crops
        problems = []
        if self.preset not in PRESETS:
            problems.append(f"preset {self.preset!r} is not one of {PRESETS}")
        if m.embed_dim % m.num_heads:
            problems.append(f"model.embed_dim {m.embed_dim} is not divisible by model.num_heads {m.num_heads}")
        for name, size in (("crops.global_size", c.global_size), ("crops.local_size", c.local_size)):
            if size % m.patch_size:
                problems.append(f"{name} {size} is not a multiple of model.patch_size {m.patch_size}")
        if m.init not in ("dinov2", "scratch"):
            problems.append(f"model.init must be 'dinov2' or 'scratch', got {m.init!r}")
        if m.init == "dinov2" and not m.init_weights:
            problems.append("model.init = 'dinov2' needs the DINOv2 ViT-B/14 weights file: pass --init-weights PATH "
                            "(timm 'vit_base_patch14_dinov2.lvd142m' or DINOv2's dinov2_vitb14_pretrain.pth), "
                            "or --init-weights scratch for a random start")
        if not 0 <= self.masking.ratio_min <= self.masking.ratio_max <= 1:
            problems.append("masking ratios must satisfy 0 <= ratio_min <= ratio_max <= 1")
        if self.loss.koleo_scope not in ("rank", "global"):
            problems.append(f"loss.koleo_scope must be 'rank' or 'global', got {self.loss.koleo_scope!r}")
        if not any(getattr(self.loss, k) for k in LOSSES):
            problems.append("every loss is switched off: enable at least one of dino, ibot, koleo, proto")
        if self.run.parallel not in ("ddp", "fsdp"):
            problems.append(f"run.parallel must be 'ddp' or 'fsdp', got {self.run.parallel!r}")
        if self.run.precision not in ("auto", "bf16", "fp32"):
            problems.append(f"run.precision must be 'auto', 'bf16' or 'fp32', got {self.run.precision!r}")
        if self.schedule.batch_size < 2 or self.schedule.epochs < 1 or self.schedule.epoch_length < 1:
            problems.append("schedule.batch_size must be >= 2 and epochs, epoch_length >= 1")
        if problems:
            raise ValueError("invalid pretraining configuration: " + "; ".join(problems))
        return self


def paper_config() -> PretrainConfig:
    """The official run's effective values (PROTOCOL.md)."""
    return PretrainConfig(preset="paper")


def tiny_config() -> PretrainConfig:
    """The same recipe at CPU scale: a 4-block, 128-wide ViT/14 at 70 px (5x5 patches), small
    heads, 4 local crops at 28 px; about 0.9 M backbone parameters, trained from scratch for
    1,000 iterations of 32 images (about 8 minutes on 2 CPU cores, 15 when they are busy).
    This is the recipe of the shipped ``dermino-tiny`` weights.

    Departures for a run of a few hundred iterations: LayerScale starts at 0.1 (at 1e-5 the blocks
    would barely act within the run), a higher base lr and a faster teacher (momentum 0.98)."""
    return PretrainConfig(
        preset="tiny",
        model=ModelConfig(img_size=70, patch_size=14, embed_dim=128, depth=4, num_heads=4, layerscale=0.1,
                          drop_path=0.1, init="scratch"),
        crops=CropConfig(global_size=70, global_scale=(0.32, 1.0), local_number=4, local_size=28,
                         local_scale=(0.05, 0.32)),
        dino_head=HeadConfig(prototypes=1024, bottleneck=64, hidden=256, layers=3),
        ibot_head=HeadConfig(prototypes=1024, bottleneck=64, hidden=256, layers=3),
        optim=OptimConfig(base_lr=4e-3, warmup_epochs=1.0, freeze_last_layer_epochs=0.5),
        teacher=TeacherConfig(momentum=0.98, temp_warmup_epochs=2.0),
        schedule=ScheduleConfig(epochs=10, epoch_length=100, batch_size=32),
        data=DataConfig(synth=True, unlabelled_tasks="segmentation,caption", num_workers=1),
        run=RunConfig(checkpoint_every=100, log_every=25),
    )


def preset_config(name: str) -> PretrainConfig:
    if name == "paper":
        return paper_config()
    if name == "tiny":
        return tiny_config()
    raise ValueError(f"unknown preset {name!r}; choose one of {PRESETS}")


def _coerce(kind: str, text: str, key: str) -> Any:
    """Parse ``text`` to a field's declared type (annotations are strings here)."""
    try:
        if kind == "bool":
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true/false")
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind.startswith("tuple"):
            return tuple(float(v) for v in text.strip("()[] ").split(","))
        if kind.startswith("list"):
            return [v for v in text.split(",") if v]
        return text
    except ValueError as exc:
        raise ValueError(f"--set {key}={text}: cannot read {text!r} as {kind} ({exc})") from exc


def apply_overrides(cfg: PretrainConfig, overrides: dict[str, Any]) -> PretrainConfig:
    """Set dotted keys (``optim.base_lr``); string values are parsed to the field's type."""
    for key, value in overrides.items():
        parts = key.split(".")
        target: Any = cfg
        for part in parts[:-1]:
            if not dataclasses.is_dataclass(target) or not hasattr(target, part):
                raise KeyError(f"unknown configuration key {key!r}; sections: {[f.name for f in dataclasses.fields(cfg)]}")
            target = getattr(target, part)
        leaf = parts[-1]
        if not dataclasses.is_dataclass(target) or leaf not in {f.name for f in dataclasses.fields(target)}:
            names = [f.name for f in dataclasses.fields(target)] if dataclasses.is_dataclass(target) else []
            hint = did_you_mean(key, [".".join([*parts[:-1], n]) for n in names])
            raise KeyError(f"unknown configuration key {key!r}{hint}; valid keys here: {', '.join(names)}")
        kind = {f.name: str(f.type) for f in dataclasses.fields(target)}[leaf]
        if isinstance(value, str):
            value = _coerce(kind, value, key)
        elif kind == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        setattr(target, leaf, value)
    return cfg


def config_from_dict(d: dict[str, Any]) -> PretrainConfig:
    """Inverse of :meth:`PretrainConfig.to_dict` (used when resuming from a checkpoint)."""
    cfg = PretrainConfig()
    for f in dataclasses.fields(cfg):
        if f.name not in d:
            continue
        value = d[f.name]
        current = getattr(cfg, f.name)
        if dataclasses.is_dataclass(current):
            kwargs = {}
            for sub in dataclasses.fields(current):
                if sub.name in value:
                    v = value[sub.name]
                    kwargs[sub.name] = tuple(v) if isinstance(getattr(current, sub.name), tuple) else v
            setattr(cfg, f.name, type(current)(**kwargs))
        else:
            setattr(cfg, f.name, value)
    return cfg
