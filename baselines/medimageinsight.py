"""MedImageInsight image encoder: DaViT (UniCL/Florence family) at 480 px + image projection to 1024-d.

Architecture: the widths/depths/heads of timm's ``davit_huge_fl`` (256/512/1024/2048, 1/1/9/1,
window 12). The release's ``vision_model/medimageinsigt-v1.0.0.pt`` holds ``image_encoder.*`` in
the Florence DaViT naming (``convs.N``, ``blocks.N.M.spatial_block.window_attn.fn...``), which
timm's Florence-2 converter maps to timm's DaVit; ``image_projection`` (2048 x 1024, used as
``x @ W``) becomes a bias-free Linear. The text tower (``lang_encoder.*``, ``lang_projection``)
and ``logit_scale`` are set aside. The key format is taken from timm's Florence converter and
the UniCL code; it has not been checked against the real 2.46 GB file (not downloadable here) —
a strict load reports any key the conversion misses.

The release file is safetensors despite its ``.pt`` suffix (upstream ``UniCLModel.from_pretrained``
reads it with ``safetensors.torch.load_file``); dermbench detects the format by content.
Older checkpoints name things differently, and upstream renames them before loading
(``UniCLModel._convert_old_weights``: ``visual.`` -> ``image_encoder.``, ``vision_projection`` ->
``image_projection``; ``davit_v1.py::DaViT._try_remap_keys``: ``conv_embeds`` -> ``convs``,
``main_blocks`` -> ``blocks``, and inside a block ``0.*`` / ``1.*`` -> ``spatial_block.*`` /
``channel_block.*`` with ``cpe.0.proj`` / ``cpe.1.proj`` -> ``conv1.fn.dw`` / ``conv2.fn.dw``,
``attn`` -> ``window_attn.fn`` / ``channel_attn.fn``, ``mlp`` -> ``ffn.fn.net``, ``norm1`` / ``norm2``
-> the attention's / ffn's ``norm``): :func:`remap_old_unicl_keys` accepts those names too.
"""
import re

from dermbench.models.registry import IMAGENET_MEAN, IMAGENET_STD, BackboneMeta, register_backbone

META = BackboneMeta(
    key="medimageinsight", architecture="MedImageInsight DaViT image encoder (480 px) + projection",
    embed_dim=1024, input_size=480, mean=IMAGENET_MEAN, std=IMAGENET_STD, resize_mode="squash", crop_pct=1.0,
    interpolation="bicubic", token_dim=2048, level_indices=(0, 1, 2, 3), level_channels=(256, 512, 1024, 2048),
    licence="MIT (lion-ai/MedImageInsights re-host)",
    weights_source="Azure AI Foundry (official); HF re-host lion-ai/MedImageInsights: 2024.09.27/vision_model/medimageinsigt-v1.0.0.pt",
    hub_id="lion-ai/MedImageInsights", weights_filename="2024.09.27/vision_model/medimageinsigt-v1.0.0.pt",
    global_feature="UniCLModel.encode_image without normalisation: DaViT forward_features (token average pool + "
                   "LayerNorm, 2048) @ image_projection (1024)",
    preprocessing_source="2024.09.27/config.yaml IMAGE_ENCODER (IMAGE_SIZE 480x480, ImageNet mean/std), TEST.CENTER_CROP "
                         "false: squash resize to 480, bicubic",
    pretraining_datasets=("3.7M+ medical images with text or labels across 14 domains",),
    citation="Codella et al., MedImageInsight: An Open-Source Embedding Model for General Domain Medical Imaging, 2024",
)
ARCH = dict(depths=(1, 1, 9, 1), embed_dims=(256, 512, 1024, 2048), num_heads=(8, 16, 32, 64), window_size=12,
            down_kernel_size=3, channel_attn_v2=True, named_blocks=True)


# Older DaViT block naming: main_blocks.<stage>.<block>.<0 = spatial | 1 = channel>.<part>
_OLD_BLOCK = re.compile(r"^(?P<pre>(?:image_encoder\.)?blocks\.\d+\.\d+)\.(?P<kind>[01])\.(?P<part>cpe\.[01]\.proj|attn|mlp|norm1|norm2)\.")
_OLD_PART = {
    ("0", "cpe.0.proj"): "spatial_block.conv1.fn.dw", ("0", "cpe.1.proj"): "spatial_block.conv2.fn.dw",
    ("0", "attn"): "spatial_block.window_attn.fn", ("0", "mlp"): "spatial_block.ffn.fn.net",
    ("0", "norm1"): "spatial_block.window_attn.norm", ("0", "norm2"): "spatial_block.ffn.norm",
    ("1", "cpe.0.proj"): "channel_block.conv1.fn.dw", ("1", "cpe.1.proj"): "channel_block.conv2.fn.dw",
    ("1", "attn"): "channel_block.channel_attn.fn", ("1", "mlp"): "channel_block.ffn.fn.net",
    ("1", "norm1"): "channel_block.channel_attn.norm", ("1", "norm2"): "channel_block.ffn.norm",
}


def remap_old_unicl_keys(state: dict) -> dict:
    """Older UniCL / DaViT key names -> the current ones (see the module docstring for the upstream source)."""
    out = {}
    for key, value in state.items():
        k = key
        if k.startswith("visual."):
            k = "image_encoder." + k[len("visual."):]
        elif k == "vision_projection":
            k = "image_projection"
        k = re.sub(r"^(image_encoder\.)?conv_embeds\.", r"\1convs.", k)
        k = re.sub(r"^(image_encoder\.)?main_blocks\.", r"\1blocks.", k)
        m = _OLD_BLOCK.match(k)
        if m:
            k = f"{m.group('pre')}.{_OLD_PART[(m.group('kind'), m.group('part'))]}." + k[m.end():]
        out[k] = value
    return out


def unicl_to_timm(state: dict) -> dict:
    """Release keys -> {'model.<timm DaVit key>', 'projection.weight'}."""
    from timm.models.davit import _convert_florence2

    from dermbench.models.weights import unwrap

    state = remap_old_unicl_keys(unwrap(state))
    encoder = {"vision_tower." + k[len("image_encoder."):]: v for k, v in state.items() if k.startswith("image_encoder.")}
    if not encoder or "image_projection" not in state:
        raise KeyError("expected 'image_encoder.*' and 'image_projection' keys (MedImageInsight vision_model file)")
    converted = _convert_florence2(encoder, None)
    out = {}
    for k, v in converted.items():
        out["model." + k.replace("norms.", "head.norm.")] = v
    out["projection.weight"] = state["image_projection"].t().contiguous()
    return out


def timm_to_unicl(state: dict) -> dict:
    """The inverse (for tests): the release's key format from this module's state dict."""
    import re

    out = {}
    for k, v in state.items():
        if k == "projection.weight":
            out["image_projection"] = v.t().contiguous()
            continue
        k = k[len("model."):]
        k = k.replace("head.norm.", "norms.")
        k = k.replace("stem.", "convs.0.").replace("downsample.conv", "downsample.proj")
        k = re.sub(r"stages\.(\d+)\.downsample", r"convs.\1", k)
        k = re.sub(r"stages\.(\d+)\.blocks", r"blocks.\1", k)
        if ".spatial_block." in k:
            k = k.replace(".norm1.", ".window_attn.norm.").replace(".attn.", ".window_attn.fn.")
        if ".channel_block." in k:
            k = k.replace(".norm1.", ".channel_attn.norm.").replace(".attn.", ".channel_attn.fn.")
        k = k.replace(".norm2.", ".ffn.norm.").replace(".mlp.", ".ffn.fn.net.")
        k = k.replace(".cpe1.proj.", ".conv1.fn.dw.").replace(".cpe2.proj.", ".conv2.fn.dw.")
        out["image_encoder." + k] = v
    return out


@register_backbone(META)
def build(weights=None, meta=META, arch=None):
    """``arch`` overrides the DaViT configuration (tests use a narrow one through the same code path)."""
    from timm.models.davit import DaVit
    from torch import nn

    from dermbench.models.backbone import TimmCNNBackbone, seeded
    from dermbench.models.weights import load_weights_into

    config = {**ARCH, **(arch or {})}

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = DaVit(num_classes=0, **config)
            self.projection = nn.Linear(config["embed_dims"][-1], meta.embed_dim if not arch else config["embed_dims"][-1] // 2, bias=False)

    with seeded(0):
        enc = Encoder()
    sha = load_weights_into(enc, meta, weights, unicl_to_timm)
    backbone = TimmCNNBackbone(enc.model, meta, weights_sha256=sha, variant={"arch": config}, projection=enc.projection)
    backbone.seg_input_size = 224  # DaViT is resolution-agnostic; the segmentation protocol runs at 224
    return backbone
