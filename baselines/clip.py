"""OpenAI CLIP ViT-B/16 image tower (timm's port of the OpenAI weights; quick-GELU).

Global feature: ln_post(CLS) @ proj, 512-d (the joint embedding) by default; ``projection=False``
gives the 768-d feature before the projection. Both are recorded in the feature-cache fingerprint.
"""
from dermbench.models.registry import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, BackboneMeta, register_backbone

META = BackboneMeta(
    key="clip", architecture="CLIP ViT-B/16 image tower (OpenAI)", embed_dim=512, input_size=224,
    mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD, resize_mode="shortest_crop", crop_pct=1.0, interpolation="bicubic",
    patch_size=16, grid=(14, 14), token_dim=768, level_indices=(2, 5, 8, 11), level_channels=(768,) * 4, licence="MIT",
    weights_source="HF timm/vit_base_patch16_clip_224.openai (open_clip ('ViT-B-16', 'openai') and timm's "
                   "vit_base_patch16_clip_quickgelu_224.openai both resolve to it); OpenAI's ViT-B-16.pt",
    # timm's pretrained_cfg maps the quickgelu configuration onto the plain model's hub repo:
    # there is no timm/vit_base_patch16_clip_quickgelu_224.openai repository
    hub_id="timm/vit_base_patch16_clip_224.openai", weights_filename="open_clip_pytorch_model.bin",
    alternative_hub=(("timm/vit_base_patch16_clip_224.openai", "model.safetensors"),),
    global_feature="ln_post(CLS) @ proj (512), open_clip's encode_image without normalisation; "
                   "projection=False gives the 768-d vector before the projection",
    preprocessing_source="open_clip/transform.py::image_transform (resize shortest side 224, bicubic, centre crop; "
                         "OpenAI mean/std)",
    pretraining_datasets=("OpenAI WIT-400M",),
    citation="Radford et al., Learning Transferable Visual Models From Natural Language Supervision, ICML 2021",
)


def openai_visual_to_timm(state: dict) -> dict:
    """OpenAI / open_clip checkpoint (visual.* keys, text tower beside) -> timm VisionTransformer keys."""
    from timm.models.vision_transformer import _convert_openai_clip

    from dermbench.models.weights import unwrap

    state = unwrap(state)
    if "cls_token" in state:  # already in timm format (timm's own hub file)
        return state
    if not any(k.startswith("visual.") for k in state):
        raise KeyError("no 'visual.*' keys: not an OpenAI/open_clip CLIP checkpoint")
    # only visual.* keys are converted: the text tower and logit scale are not part of the image encoder
    return _convert_openai_clip(state, None, prefix="visual.")


@register_backbone(META)
def build(weights=None, meta=META, projection: bool = True):
    import dataclasses

    from baselines._timm import build_timm_backbone

    if not projection:
        meta = dataclasses.replace(meta, embed_dim=768)
    backbone = build_timm_backbone(meta, "vit_base_patch16_clip_quickgelu_224", weights, convert=openai_visual_to_timm,
                                   variant={"projection": projection}, num_classes=512)
    backbone.use_head = projection  # ln_post(CLS) @ proj, or the 768-d vector before it
    return backbone
