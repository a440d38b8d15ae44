"""ViT-B/16, ImageNet-21k pretrained and 1k fine-tuned (AugReg2, timm)."""
from dermbench.models.registry import HALF_MEAN_STD, BackboneMeta, register_backbone

META = BackboneMeta(
    key="vit_base", architecture="ViT-B/16 (AugReg2, in21k -> in1k)", embed_dim=768, input_size=224,
    mean=HALF_MEAN_STD, std=HALF_MEAN_STD, resize_mode="shortest_crop", crop_pct=0.9, interpolation="bicubic",
    patch_size=16, grid=(14, 14), level_indices=(2, 5, 8, 11), level_channels=(768,) * 4, licence="Apache-2.0",
    weights_source="timm vit_base_patch16_224.augreg2_in21k_ft_in1k", hub_id="timm/vit_base_patch16_224.augreg2_in21k_ft_in1k",
    weights_filename="model.safetensors", pretraining_datasets=("ImageNet-21k", "ImageNet-1k"),
    global_feature="final-norm CLS token (768), timm forward_head(pre_logits=True)",
    preprocessing_source="timm pretrained_cfg of vit_base_patch16_224.augreg2_in21k_ft_in1k (crop_pct 0.9, bicubic, mean/std 0.5)",
    citation="Steiner et al., How to train your ViT? Data, Augmentation, and Regularization in Vision Transformers, TMLR 2022",
)


@register_backbone(META)
def build(weights=None, meta=META):
    from baselines._timm import build_timm_backbone, drop_keys

    return build_timm_backbone(meta, "vit_base_patch16_224", weights, convert=drop_keys(("head.",)))
