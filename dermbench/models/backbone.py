"""The frozen-backbone interface every model implements, and the timm-based wrappers.

A backbone is an eval-mode ``nn.Module`` whose parameters never train. It exposes
- ``forward_global(x) -> [B, embed_dim]``: the release's canonical embedding (not L2-normalised);
- ``forward_tokens(x) -> [B, C, h, w]``: last layer, final norm applied, prefix tokens removed;
- ``forward_levels(x, indices=None) -> list[[B, C_i, h_i, w_i]]``: multi-level maps for UperNet;
and the preprocessing of its release through :meth:`FrozenBackbone.transform`.
"""
from __future__ import annotations

import abc
import contextlib
import hashlib
import json
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from dermbench.models.registry import BackboneMeta

INTERPOLATIONS = {"bicubic", "bilinear", "nearest"}


def build_transform(
    input_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    resize_mode: str = "shortest_crop",
    crop_pct: float = 0.875,
    interpolation: str = "bicubic",
) -> Callable:
    """PIL image -> normalised float tensor [3, input_size, input_size], per the release."""
    from torchvision import transforms as T

    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {interpolation!r}")
    interp = getattr(T.InterpolationMode, interpolation.upper())
    if resize_mode == "shortest_crop":
        # timm's convention: scale_size = floor(input_size / crop_pct)
        resize = [T.Resize(int(input_size / crop_pct), interpolation=interp), T.CenterCrop(input_size)]
    elif resize_mode == "squash":
        resize = [T.Resize((input_size, input_size), interpolation=interp)]
    else:
        raise ValueError(f"resize_mode must be 'shortest_crop' or 'squash', got {resize_mode!r}")
    return T.Compose([_to_rgb, *resize, T.ToTensor(), T.Normalize(mean=list(mean), std=list(std))])


def _to_rgb(img):
    return img.convert("RGB") if img.mode != "RGB" else img


class FrozenBackbone(nn.Module, metaclass=abc.ABCMeta):
    """Base class: holds the metadata, freezes parameters, builds the release's transform."""

    def __init__(self, meta: BackboneMeta, weights_sha256: str = "random", variant: Optional[dict] = None):
        super().__init__()
        self.meta = meta
        self.weights_sha256 = weights_sha256
        # Options that change what the features are (e.g. CLIP pre/post projection):
        # part of the feature-cache fingerprint.
        self.variant = dict(variant or {})

    # Largest batch the feature extractor sends through this backbone (None: the caller's batch size).
    max_batch_size: Optional[int] = None

    # --- the interface -------------------------------------------------
    @abc.abstractmethod
    def forward_global(self, x: torch.Tensor) -> torch.Tensor:
        """See the module docstring."""

    @abc.abstractmethod
    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """See the module docstring."""

    @abc.abstractmethod
    def forward_levels(self, x: torch.Tensor, indices: Optional[Sequence[int]] = None) -> list[torch.Tensor]:
        """See the module docstring."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_global(x)

    # --- shared behaviour ----------------------------------------------
    @property
    def name(self) -> str:
        return self.meta.key

    @property
    def embed_dim(self) -> int:
        return self.meta.embed_dim

    @property
    def token_dim(self) -> int:
        return self.meta.token_dim or self.meta.embed_dim

    @property
    def level_indices(self) -> tuple[int, ...]:
        return tuple(self.meta.level_indices)

    def freeze(self) -> "FrozenBackbone":
        for p in self.parameters():
            p.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> "FrozenBackbone":
        # Frozen means frozen: BatchNorm statistics and dropout never switch to training.
        return super().train(False)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def preprocessing(self) -> dict:
        m = self.meta
        return {
            "input_size": m.input_size,
            "mean": list(m.mean),
            "std": list(m.std),
            "resize_mode": m.resize_mode,
            "crop_pct": m.crop_pct,
            "interpolation": m.interpolation,
        }

    def transform(self, resize_mode: Optional[str] = None, input_size: Optional[int] = None) -> Callable:
        """The release's preprocessing; segmentation overrides resize_mode='squash' (224x224)."""
        p = self.preprocessing()
        return build_transform(
            input_size=input_size or p["input_size"],
            mean=p["mean"],
            std=p["std"],
            resize_mode=resize_mode or p["resize_mode"],
            crop_pct=p["crop_pct"],
            interpolation=p["interpolation"],
        )

    def fingerprint(self) -> str:
        """Identifies what the features are: model, weights, preprocessing, variant."""
        ident = {
            "key": self.meta.key,
            "weights_sha256": self.weights_sha256,
            "preprocessing": self.preprocessing(),
            "variant": self.variant,
        }
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


class TimmViTBackbone(FrozenBackbone):
    """Any timm VisionTransformer: CLS/MAP pooled global, normed patch tokens, intermediates."""

    def __init__(self, model: nn.Module, meta: BackboneMeta, weights_sha256: str = "random", variant=None):
        super().__init__(meta, weights_sha256, variant)
        self.model = model
        # True for models whose canonical embedding is the head's output (CLIP's projection)
        self.use_head = False
        self.freeze()

    def forward_global(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=not self.use_head)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.model.forward_features(x)[:, self.model.num_prefix_tokens :]
        return _tokens_to_map(tokens, self.model.patch_embed.dynamic_feat_size(x.shape[-2:]))

    def forward_levels(self, x: torch.Tensor, indices: Optional[Sequence[int]] = None) -> list[torch.Tensor]:
        idx = list(indices if indices is not None else self.level_indices)
        return list(self.model.forward_intermediates(x, indices=idx, norm=True, output_fmt="NCHW", intermediates_only=True))


def _tokens_to_map(tokens: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    b, n, c = tokens.shape
    h, w = grid
    if h * w != n:
        raise ValueError(f"{n} patch tokens do not fill a {h}x{w} grid")
    return tokens.transpose(1, 2).reshape(b, c, h, w)


@contextlib.contextmanager
def seeded(seed: int = 0):
    """Build models inside this block so that a random initialisation is the same on every machine.

    In a build whose weights come from a file (``registry.BUILD_WITHOUT_INIT``) the block builds on
    the meta device instead: no initialisation; the load gives the module its memory."""
    from dermbench.models.registry import BUILD_WITHOUT_INIT

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.device("meta") if BUILD_WITHOUT_INIT.get() else contextlib.nullcontext():
            yield


def sha256_state_dict(state_dict: dict) -> str:
    """Hash of tensor names, shapes and bytes (order-independent): for weights built in memory."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        t = state_dict[k].detach().cpu().contiguous().reshape(-1)
        h.update(k.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class TimmCNNBackbone(FrozenBackbone):
    """timm CNN-like models (ResNet, DaViT): pooled global, last-stage map, stage maps as levels."""

    def __init__(self, model: nn.Module, meta: BackboneMeta, weights_sha256: str = "random", variant=None,
                 projection: Optional[nn.Module] = None):
        super().__init__(meta, weights_sha256, variant)
        self.model = model
        # e.g. MedImageInsight's image projection after the pooled feature
        self.projection = projection
        self.freeze()

    def forward_global(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        return self.projection(pooled) if self.projection is not None else pooled

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)

    def forward_levels(self, x: torch.Tensor, indices: Optional[Sequence[int]] = None) -> list[torch.Tensor]:
        idx = list(indices if indices is not None else self.level_indices)
        return list(self.model.forward_intermediates(x, indices=idx, intermediates_only=True))
