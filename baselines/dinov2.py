"""DINOv2 ViT-B/14 (LVD-142M), run at 224 px: the released 37x37 position embeddings are resampled to 16x16."""
from dermbench.models.registry import IMAGENET_MEAN, IMAGENET_STD, BackboneMeta, register_backbone

META = BackboneMeta(
    key="dinov2", architecture="DINOv2 ViT-B/14 (LayerScale, no registers) at 224 px", embed_dim=768, input_size=224,
    mean=IMAGENET_MEAN, std=IMAGENET_STD, resize_mode="shortest_crop", crop_pct=1.0, interpolation="bicubic",
    patch_size=14, grid=(16, 16), level_indices=(2, 5, 8, 11), level_channels=(768,) * 4, licence="Apache-2.0",
    weights_source="timm vit_base_patch14_dinov2.lvd142m (HF facebook/dinov2-base; torch.hub dinov2_vitb14)",
    hub_id="timm/vit_base_patch14_dinov2.lvd142m", weights_filename="model.safetensors",
    pretraining_datasets=("LVD-142M",),
    citation="Oquab et al., DINOv2: Learning Robust Visual Features without Supervision, TMLR 2024",
)


def resample_pos_embed_to_224(state: dict) -> dict:
    """The release's pos_embed is for 518 px (1 + 37x37 tokens); timm's model here is built at 224 (1 + 16x16)."""
    from timm.layers import resample_abs_pos_embed

    from dermbench.models.weights import unwrap

    state = dict(unwrap(state))
    pos = state.get("pos_embed")
    if pos is not None and pos.shape[1] != 1 + 16 * 16:
        state["pos_embed"] = resample_abs_pos_embed(pos, new_size=(16, 16), num_prefix_tokens=1)
    return state


@register_backbone(META)
def build(weights=None, meta=META):
    from baselines._timm import build_timm_backbone

    return build_timm_backbone(meta, "vit_base_patch14_dinov2", weights, convert=resample_pos_embed_to_224, img_size=224)
