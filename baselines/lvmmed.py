"""LVM-Med: ResNet-50 (default, key ``lvmmed``) and the SAM ViT-B image encoder (``lvmmed-vit``).

ResNet-50: a torchvision-format state dict (``lvmmed_resnet.torch``); timm's resnet50 uses the same
names, so it loads strictly once the classifier ``fc.*`` is set aside.
ViT: SAM's ViT-B image encoder (segment-anything's ImageEncoderViT, windowed attention with global
attention at blocks 2, 5, 8, 11, relative positions, neck to 256 channels) built as upstream builds
it, with ``use_abs_pos=False`` (``segment_anything/our_vit.py`` in LVM-Med): the release has no
``pos_embed`` and upstream loads it strictly.

Two feature definitions, as upstream uses the encoder two ways:
- classification (``forward_global``; upstream ``classification_VIT/train_SAMVIT_classification.py``):
  the image squashed to 224 x 224, the last block's 14 x 14 tokens average-pooled, 768-d, no neck.
  SAM's relative-position tables are sized for 64 x 64 tokens; segment-anything's ``get_rel_pos``
  resamples them to the 14 x 14 grid, as it does upstream.
- segmentation (``forward_tokens`` = neck output, 256 ch; ``forward_levels`` = block outputs, 768 ch)
  at 1024 px (``seg_input_size``), the resolution SAM's encoder and LVM-Med's segmentation use.
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
    global_feature="global average pool of layer4 (2048), torchvision ResNet-50 with fc removed, as "
                   "classification_R50/train_R50_classification.py",
    preprocessing_source="classification_R50/train_R50_classification.py: Resize((224, 224)) (bilinear), ImageNet mean/std",
)

SEG_INPUT_SIZE = 1024  # SAM's encoder resolution; LVM-Med's segmentation runs the encoder there

META_VIT = BackboneMeta(
    key="lvmmed-vit", architecture="LVM-Med SAM ViT-B image encoder (no absolute pos-embed; 224 px global, 1024 px segmentation)",
    embed_dim=768, input_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, resize_mode="squash", crop_pct=1.0,
    interpolation="bilinear", patch_size=16, grid=(14, 14), token_dim=256, level_indices=(2, 5, 8, 11),
    level_channels=(768,) * 4, licence="CC BY-NC-ND 4.0",
    weights_source="Google Drive lvmmed_vit.pth (LVM-Med README); HF mirror ngctnnnn/lvmmed_vit",
    weights_filename="lvmmed_vit.pth", pretraining_datasets=DATASETS, citation=CITATION,
    global_feature="upstream classification feature: 224 px input, no neck, last-block tokens average-pooled (768) "
                   "(classification_VIT/train_SAMVIT_classification.py); segmentation uses the 256-ch neck output "
                   "and block outputs [2, 5, 8, 11] at 1024 px",
    preprocessing_source="classification_VIT/train_SAMVIT_classification.py: Resize((224, 224)) (bilinear), ImageNet mean/std",
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
def build_vit(weights=None, meta=META_VIT, depth: int = 12, img_size: int = SEG_INPUT_SIZE):
    """``depth``/``img_size`` exist for tests (a reduced encoder through the same code path);
    ``img_size`` is the encoder's native (segmentation) resolution."""
    import torch
    from segment_anything.modeling import ImageEncoderViT

    from dermbench.models.backbone import FrozenBackbone, seeded
    from dermbench.models.weights import load_weights_into

    global_blocks = tuple(i for i in (2, 5, 8, 11) if i < depth)
    with seeded(0):
        encoder = ImageEncoderViT(img_size=img_size, patch_size=16, embed_dim=768, depth=depth, num_heads=12,
                                  mlp_ratio=4, out_chans=256, qkv_bias=True, use_rel_pos=True, window_size=14,
                                  use_abs_pos=False,  # as LVM-Med builds it: the release has no pos_embed
                                  global_attn_indexes=global_blocks,
                                  norm_layer=lambda d: torch.nn.LayerNorm(d, eps=1e-6))
    sha = load_weights_into(encoder, meta, weights, sam_encoder_keys)

    class SamBackbone(FrozenBackbone):
        # segment-anything's attention materialises [B, heads, 4096, 4096] (plus relative-position
        # terms) in the global blocks at 1024 px: ~0.8 GB per image each, so batches stay small
        max_batch_size = 2

        def __init__(self):
            super().__init__(meta, sha, variant={"depth": depth, "img_size": img_size, "global": "blocks-avgpool-768"})
            self.encoder = encoder
            self.levels = tuple(i for i in meta.level_indices if i < depth)
            self.freeze()

        def _blocks(self, x, wanted=()):
            """Last block's output [B, H/16, W/16, 768] and the outputs of the blocks in ``wanted``."""
            enc = self.encoder
            h = enc.patch_embed(x)
            if enc.pos_embed is not None:  # None: built as upstream, without absolute positions
                h = h + enc.pos_embed
            out = []
            for i, blk in enumerate(enc.blocks):
                h = blk(h)
                if i in wanted:
                    out.append(h.permute(0, 3, 1, 2))
            return h, out

        def forward_tokens(self, x):
            return self.encoder(x)  # neck output [B, 256, H/16, W/16]

        def forward_global(self, x):
            # upstream classification: the blocks' 768-d tokens average-pooled, no neck
            return self._blocks(x)[0].mean(dim=(1, 2))

        def forward_levels(self, x, indices=None):
            return self._blocks(x, list(indices if indices is not None else self.levels))[1]

    backbone = SamBackbone()
    backbone.seg_input_size = img_size
    return backbone
