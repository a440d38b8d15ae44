"""SigLIP ViT-B/16 (WebLI) image tower: no CLS token, MAP-pooled global feature."""
from dermbench.models.registry import HALF_MEAN_STD, BackboneMeta, register_backbone

META = BackboneMeta(
    key="siglip", architecture="SigLIP ViT-B/16 image tower (MAP pooling)", embed_dim=768, input_size=224,
    mean=HALF_MEAN_STD, std=HALF_MEAN_STD, resize_mode="squash", crop_pct=1.0, interpolation="bicubic",
    patch_size=16, grid=(14, 14), level_indices=(2, 5, 8, 11), level_channels=(768,) * 4, licence="Apache-2.0",
    weights_source="timm vit_base_patch16_siglip_224.webli (open_clip ViT-B-16-SigLIP webli)",
    hub_id="timm/vit_base_patch16_siglip_224.webli", weights_filename="model.safetensors",
    pretraining_datasets=("WebLI",),
    global_feature="attention-pool (MAP) head output (768), open_clip/timm SigLIP image embedding before normalisation",
    preprocessing_source="open_clip pretrained cfg ViT-B-16-SigLIP webli: resize_mode 'squash' to 224, bicubic, mean/std 0.5",
    citation="Zhai et al., Sigmoid Loss for Language Image Pre-Training, ICCV 2023",
)


@register_backbone(META)
def build(weights=None, meta=META):
    from baselines._timm import build_timm_backbone

    return build_timm_backbone(meta, "vit_base_patch16_siglip_224", weights)
