"""LVM-Med: ResNet-50 (default, key ``lvmmed``) and the SAM ViT-B image encoder (``lvmmed-vit``).

ResNet-50: a torchvision-format state dict (``lvmmed_resnet.torch``); timm's resnet50 uses the same
names, so it loads strictly once the classifier ``fc.*`` is set aside.
ViT: SAM's ViT-B image encoder (segment-anything's ImageEncoderViT, 1024 px, windowed attention
with global attention at blocks 2, 5, 8, 11, neck to 256 channels); the global feature is the
average-pooled neck output.
"""
from dermbench.models.registry import IMAGENET_MEAN, IMAGENET_STD, BackboneMeta, register_backbone

CITATION = "Nguyen et al., LVM-Med: Learning Large-Scale Self-Supervised Vision Models for Medical Imaging via Second-order Graph Matching, NeurIPS 2023"
DATASETS = ("1.3M medical images from 55 public datasets (LVM-Med collection)",)

META = BackboneMeta(
    key="lvmmed", architecture="LVM-Med ResNet-50", embed_dim=2048, input_size=224, mean=IMAGENET_MEAN,
    std=IMAGENET_STD, resize_mode="squash", crop_pct=1.0, interpolation="bilinear", token_dim=2048,
    level_indices=(1, 2, 3, 4), level_channels=(256, 512, 1024, 2048), licence="CC BY-NC-ND 4.0",
    weights_source="Google Drive lvmmed_resnet.torch (LVM-Med README); HF mirror ngctnnnn/lvmmed_rn50",
    weights_filename="lvmmed_resnet.torch", pretraining_datasets=DATASETS, citation=CITATION,
)

META_VIT = BackboneMeta(
    key="lvmmed-vit", architecture="LVM-Med SAM ViT-B image encoder (1024 px)", embed_dim=256, input_size=1024,
    mean=IMAGENET_MEAN, std=IMAGENET_STD, resize_mode="squash", crop_pct=1.0, interpolation="bilinear",
    patch_size=16, grid=(64, 64), token_dim=256, level_indices=(2, 5, 8, 11), level_channels=(768,) * 4,
    licence="CC BY-NC-ND 4.0", weights_source="Google Drive lvmmed_vit.pth (LVM-Med README); HF mirror ngctnnnn/lvmmed_vit",
    weights_filename="lvmmed_vit.pth", pretraining_datasets=DATASETS, citation=CITATION,
)


@register_backbone(META)
def build(weights=None, meta=META):
    from baselines._timm import build_timm_backbone, drop_keys

    return build_timm_backbone(meta, "resnet50", weights, kind="cnn", convert=drop_keys(("fc.",)))


def sam_encoder_keys(state: dict) -> dict:
    """LVM-Med ViT checkpoint -> ImageEncoderViT keys: strip 'image_encoder.' / 'module.'; SAM's
    prompt encoder and mask decoder are not part of the image encoder."""
    from dermbench.models.weights import unwrap

    state = unwrap(state)
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "image_encoder."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        if k.startswith(("prompt_encoder.", "mask_decoder.")):
            continue
        out[k] = v
    return out


@register_backbone(META_VIT)
def build_vit(weights=None, meta=META_VIT, depth: int = 12, img_size: int = 1024):
    """``depth``/``img_size`` exist for tests (a reduced encoder through the same code path)."""
    import torch
    from segment_anything.modeling import ImageEncoderViT

    from dermbench.models.backbone import FrozenBackbone, seeded
    from dermbench.models.weights import load_weights_into

    global_blocks = tuple(i for i in (2, 5, 8, 11) if i < depth)
    with seeded(0):
        encoder = ImageEncoderViT(img_size=img_size, patch_size=16, embed_dim=768, depth=depth, num_heads=12,
                                  mlp_ratio=4, out_chans=256, qkv_bias=True, use_rel_pos=True, window_size=14,
                                  global_attn_indexes=global_blocks,
                                  norm_layer=lambda d: torch.nn.LayerNorm(d, eps=1e-6))
    sha = load_weights_into(encoder, meta, weights, sam_encoder_keys)

    class SamBackbone(FrozenBackbone):
        # segment-anything's attention materialises [B, heads, 4096, 4096] (plus relative-position
        # terms) in the global blocks at 1024 px: ~0.8 GB per image each, so batches stay small
        max_batch_size = 2

        def __init__(self):
            super().__init__(meta, sha, variant={"depth": depth, "img_size": img_size})
            self.encoder = encoder
            self.levels = tuple(i for i in meta.level_indices if i < depth)
            self.freeze()

        def forward_tokens(self, x):
            return self.encoder(x)  # neck output [B, 256, H/16, W/16]

        def forward_global(self, x):
            return self.forward_tokens(x).mean(dim=(2, 3))

        def forward_levels(self, x, indices=None):
            wanted = list(indices if indices is not None else self.levels)
            enc = self.encoder
            h = enc.patch_embed(x)
            if enc.pos_embed is not None:
                h = h + enc.pos_embed
            out = []
            for i, blk in enumerate(enc.blocks):
                h = blk(h)
                if i in wanted:
                    out.append(h.permute(0, 3, 1, 2))
            return out

    backbone = SamBackbone()
    backbone.seg_input_size = img_size
    return backbone
