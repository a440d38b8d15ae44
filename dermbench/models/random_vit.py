"""`random-vit`: a random-init tiny ViT, the floor row of every leaderboard and the test model."""
from __future__ import annotations

from dermbench.models.registry import IMAGENET_MEAN, IMAGENET_STD, BackboneMeta, register_backbone

RANDOM_VIT = BackboneMeta(
    key="random-vit",
    architecture="ViT-Tiny/8 (4 blocks, width 96) at 64 px, random init",
    embed_dim=96,
    input_size=64,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    resize_mode="shortest_crop",
    crop_pct=0.875,
    interpolation="bicubic",
    patch_size=8,
    grid=(8, 8),
    level_indices=(0, 1, 2, 3),
    level_channels=(96, 96, 96, 96),
    licence="Apache-2.0",
    weights_source="none: random initialisation (seed 0)",
    pretraining_datasets=(),
    citation="",
    description="Untrained floor: what features any architecture gives before pretraining.",
)


@register_backbone(RANDOM_VIT)
def build_random_vit(weights=None, meta=RANDOM_VIT, seed: int = 0):
    import timm

    from dermbench.models.backbone import TimmViTBackbone, seeded, sha256_state_dict

    if weights not in (None, "random"):
        raise ValueError(f"random-vit has no released weights; got --weights {weights!r} (use 'random' or leave it out)")
    with seeded(seed):  # the same network on every machine and run
        model = timm.create_model(
            "vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=meta.input_size,
            patch_size=meta.patch_size, embed_dim=meta.embed_dim, depth=4, num_heads=3,
        )
    # Weights are not a release, but their hash still identifies the features.
    backbone = TimmViTBackbone(model, meta, weights_sha256="random:" + sha256_state_dict(model.state_dict())[:16])
    backbone.seg_input_size = meta.input_size  # a 64-px test model: segment at its native size
    return backbone
