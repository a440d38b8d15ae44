"""PanDerm (CAEv2/BEiT-style ViT): Large (``panderm``, the paper's model) and Base (``panderm-base``).

The release's keys differ from timm's VisionTransformer; :func:`panderm_to_timm` converts:
``q_bias``/``v_bias`` -> ``qkv.bias = cat(q_bias, 0, v_bias)``, ``gamma_1``/``gamma_2`` -> LayerScale
``ls1``/``ls2``, the fixed 2-D sin-cos position embedding rebuilt when the file does not carry it,
the Large checkpoint's ``encoder.`` prefix stripped (its pretraining-only decoder/regressor set aside).
The converter follows the published model definition; it has not been checked against the real
files (not downloadable here) — a strict load reports any key it does not account for.
"""
from dermbench.models.registry import IMAGENET_MEAN, BackboneMeta, register_backbone

PANDERM_STD = (0.228, 0.224, 0.225)  # as in PanDerm's code
CITATION = "Yan et al., A Multimodal Vision Foundation Model for Clinical Dermatology (PanDerm), Nature Medicine 2025"
DATASETS = ("2M+ dermatology images from 11 institutions (PanDerm collection)",)
GLOBAL_FEATURE = ("final-norm CLS token, as upstream VisionTransformer.forward_features with lin_probe and "
                  "linear_type='standard' (classification/models/modeling_finetune.py)")
# transforms.Resize(256) without an interpolation argument = bilinear; then CenterCrop(224)
PREPROCESSING_SOURCE = ("PanDerm evaluation transform: Resize(256) (torchvision default, bilinear) -> CenterCrop(224), "
                        "mean ImageNet, std (0.228, 0.224, 0.225)")

META_LARGE = BackboneMeta(
    key="panderm", architecture="PanDerm ViT-L/16 (CAEv2)", embed_dim=1024, input_size=224, mean=IMAGENET_MEAN,
    std=PANDERM_STD, resize_mode="shortest_crop", crop_pct=0.875, interpolation="bilinear", patch_size=16,
    grid=(14, 14), level_indices=(7, 11, 15, 23), level_channels=(1024,) * 4, licence="CC BY-NC-ND 4.0",
    global_feature=GLOBAL_FEATURE, preprocessing_source=PREPROCESSING_SOURCE,
    weights_source="Google Drive panderm_ll_data6_checkpoint-499.pth (PanDerm README, github SiyuanYan1/PanDerm)",
    weights_filename="panderm_ll_data6_checkpoint-499.pth", pretraining_datasets=DATASETS, citation=CITATION,
)
META_BASE = BackboneMeta(
    key="panderm-base", architecture="PanDerm ViT-B/16 (CAEv2)", embed_dim=768, input_size=224, mean=IMAGENET_MEAN,
    std=PANDERM_STD, resize_mode="shortest_crop", crop_pct=0.875, interpolation="bilinear", patch_size=16,
    grid=(14, 14), level_indices=(3, 5, 7, 11), level_channels=(768,) * 4, licence="CC BY-NC-ND 4.0",
    global_feature=GLOBAL_FEATURE, preprocessing_source=PREPROCESSING_SOURCE,
    weights_source="Google Drive panderm_bb_data6_checkpoint-499.pth (PanDerm README, github SiyuanYan1/PanDerm)",
    weights_filename="panderm_bb_data6_checkpoint-499.pth", pretraining_datasets=DATASETS, citation=CITATION,
)
ARCH = {"panderm": dict(embed_dim=1024, depth=24, num_heads=16), "panderm-base": dict(embed_dim=768, depth=12, num_heads=12)}


def sincos_pos_embed(embed_dim: int, grid: int, temperature: float = 10000.0):
    """PanDerm's fixed 2-D sine-cosine position embedding, [1, 1 + grid², D], zero row for the class token.

    The layout of upstream ``VisionTransformer.build_2d_sincos_position_embedding``
    (PanDerm ``classification/models/modeling_finetune.py``): ``torch.meshgrid(grid_w, grid_h)`` with
    its default 'ij' indexing, so the coordinate upstream calls ``w`` is the token's *row*; each vector
    is ``[sin(row·ω), cos(row·ω), sin(col·ω), cos(col·ω)]`` with ω = 1 / T^(k / (D/4)), computed in
    float32. Only a fallback: release checkpoints carry ``pos_embed`` (upstream keeps it as a
    parameter, so it is in every state dict) and the file's own tensor is what gets loaded.
    """
    import torch

    if embed_dim % 4:
        raise ValueError(f"2-D sin-cos position embedding needs a width divisible by 4, got {embed_dim}")
    coords = torch.arange(grid, dtype=torch.float32)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")  # token t = row * grid + col
    quarter = embed_dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    by_row, by_col = rows.flatten()[:, None] * omega[None], cols.flatten()[:, None] * omega[None]
    patches = torch.cat([torch.sin(by_row), torch.cos(by_row), torch.sin(by_col), torch.cos(by_col)], dim=1)
    return torch.cat([torch.zeros(1, embed_dim), patches])[None]


def panderm_to_timm(state: dict) -> dict:
    import torch

    from dermbench.models.weights import unwrap

    state = unwrap(state)
    if any(k.startswith("encoder.") for k in state):  # Large: keep the encoder only
        state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    out = {}
    for k, v in state.items():
        if k in ("mask_token",) or k.startswith("head."):
            continue  # pretraining-only token and any classification head
        k = k.replace(".gamma_1", ".ls1.gamma").replace(".gamma_2", ".ls2.gamma")
        out[k] = v
    for k in [k for k in out if k.endswith(".attn.q_bias")]:
        prefix = k[: -len("q_bias")]
        q, v = out.pop(k), out.pop(prefix + "v_bias")
        out[prefix + "qkv.bias"] = torch.cat([q, torch.zeros_like(q), v])
    if "pos_embed" not in out:
        # Only for a file without it (upstream saves it): PanDerm asserts 224 px input, 14 x 14 tokens
        out["pos_embed"] = sincos_pos_embed(out["cls_token"].shape[-1], 14)
    return out


def timm_to_panderm(timm_state: dict, large: bool) -> dict:
    """The inverse (for tests): PanDerm's key format from a timm state dict (``pos_embed`` included:
    upstream's is an ``nn.Parameter`` with ``requires_grad=False``, so it is saved)."""
    out = {}
    for k, v in timm_state.items():
        if k.endswith(".attn.qkv.bias"):
            d = v.shape[0] // 3
            prefix = k[: -len("qkv.bias")]
            out[prefix + "q_bias"], out[prefix + "v_bias"] = v[:d].clone(), v[2 * d:].clone()
            continue
        out[k.replace(".ls1.gamma", ".gamma_1").replace(".ls2.gamma", ".gamma_2")] = v
    return {"model": {f"encoder.{k}": v for k, v in out.items()} if large else out}


def _build(weights, meta, depth=None):
    import torch
    from timm.models.vision_transformer import VisionTransformer

    from dermbench.models.backbone import TimmViTBackbone, seeded
    from dermbench.models.weights import load_weights_into

    import dataclasses

    arch = dict(ARCH[meta.key])
    if depth is not None:  # tests: a shallower encoder through the same code path
        arch["depth"] = depth
        levels = tuple(sorted({min(i, depth - 1) for i in meta.level_indices}))
        meta = dataclasses.replace(meta, level_indices=levels, level_channels=meta.level_channels[: len(levels)])
    with seeded(0):
        model = VisionTransformer(img_size=224, patch_size=16, num_classes=0, qkv_bias=True, init_values=0.1,
                                  mlp_ratio=4, **arch)
        with torch.no_grad():
            model.pos_embed.copy_(sincos_pos_embed(arch["embed_dim"], 14))
    sha = load_weights_into(model, meta, weights, panderm_to_timm)
    return TimmViTBackbone(model, meta, weights_sha256=sha, variant={"depth": arch["depth"]})


@register_backbone(META_LARGE)
def build_large(weights=None, meta=META_LARGE, depth=None):
    return _build(weights, meta, depth)


@register_backbone(META_BASE)
def build_base(weights=None, meta=META_BASE, depth=None):
    return _build(weights, meta, depth)
