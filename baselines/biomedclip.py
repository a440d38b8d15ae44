"""BiomedCLIP image tower: timm ViT-B/16 trunk (CLS) + Linear(768 -> 512, no bias), as open_clip builds it.

The release is an open_clip checkpoint: ``visual.trunk.*`` (timm keys) and ``visual.head.proj.weight``;
its text tower (``text.*``) and ``logit_scale`` are not part of the image encoder and are set aside.
"""
from dermbench.models.registry import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, BackboneMeta, register_backbone

META = BackboneMeta(
    key="biomedclip", architecture="BiomedCLIP ViT-B/16 image tower + linear projection", embed_dim=512,
    input_size=224, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD, resize_mode="shortest_crop", crop_pct=1.0,
    interpolation="bicubic", patch_size=16, grid=(14, 14), token_dim=768, level_indices=(2, 5, 8, 11),
    level_channels=(768,) * 4, licence="MIT",
    weights_source="hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224 (open_clip)",
    hub_id="microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224", weights_filename="open_clip_pytorch_model.bin",
    pretraining_datasets=("PMC-15M",),
    global_feature="CLS token of the timm trunk @ Linear(768->512, no bias) (open_clip TimmModel, pool '', proj 'linear'); "
                   "projection=False gives the 768-d CLS",
    preprocessing_source="open_clip_config.json of the hub repo: image_size 224, shortest-side resize + centre crop, bicubic, OpenAI mean/std",
    citation="Zhang et al., BiomedCLIP: a multimodal biomedical foundation model pretrained from fifteen million scientific image-text pairs, 2023",
)


def open_clip_visual_to_tower(state: dict) -> dict:
    """open_clip checkpoint -> keys of :class:`BiomedCLIPTower` (trunk.* + proj.weight)."""
    from dermbench.models.weights import unwrap

    state = unwrap(state)
    out = {}
    for k, v in state.items():
        if k.startswith("visual.trunk."):
            out["trunk." + k[len("visual.trunk."):]] = v
        elif k == "visual.head.proj.weight":
            out["proj.weight"] = v
        elif k.startswith("visual."):
            out[k[len("visual."):]] = v  # anything else of the image tower must match (strict load reports it)
    if not out:
        raise KeyError("no 'visual.*' keys: not an open_clip checkpoint")
    return out


@register_backbone(META)
def build(weights=None, meta=META, projection: bool = True):
    import dataclasses

    import timm
    import torch
    from torch import nn

    from dermbench.models.backbone import TimmViTBackbone, seeded
    from dermbench.models.weights import load_weights_into

    class BiomedCLIPTower(nn.Module):
        """timm ViT trunk + projection, exposing the timm methods TimmViTBackbone uses."""

        def __init__(self):
            super().__init__()
            self.trunk = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
            self.proj = nn.Linear(768, 512, bias=False)
            self.num_prefix_tokens = self.trunk.num_prefix_tokens

        @property
        def patch_embed(self):  # a property, not an attribute: no duplicate keys in the state dict
            return self.trunk.patch_embed

        def forward_features(self, x: torch.Tensor) -> torch.Tensor:
            return self.trunk.forward_features(x)

        def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
            pooled = self.trunk.forward_head(x, pre_logits=True)
            return pooled if pre_logits else self.proj(pooled)

        def forward_intermediates(self, x, **kwargs):
            return self.trunk.forward_intermediates(x, **kwargs)

    with seeded(0):
        tower = BiomedCLIPTower()
    sha = load_weights_into(tower, meta, weights, open_clip_visual_to_tower)
    if not projection:
        meta = dataclasses.replace(meta, embed_dim=768)
    backbone = TimmViTBackbone(tower, meta, weights_sha256=sha, variant={"projection": projection})
    backbone.use_head = projection
    return backbone
