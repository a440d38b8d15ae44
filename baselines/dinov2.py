"""DINOv2 ViT-B/14 (LVD-142M), run at 224 px as DINOv2's own linear evaluation does.

The release's position embeddings are for 518 px (1 + 37x37 tokens). At 224 px (16x16 tokens)
DINOv2 interpolates them in every forward pass
(``dinov2/models/vision_transformer.py::DinoVisionTransformer.interpolate_pos_encoding``): bicubic,
``antialias=False``, with a *scale factor* of ``(16 + 0.1) / 37`` (``interpolate_offset=0.1``) rather
than an exact output size. The input size is fixed here, so :func:`interpolate_pos_embed_like_dinov2`
does that once at load time, and timm's ViT built at 224 px uses the result unchanged — the
same numbers upstream adds at 224 px. (timm's ``resample_abs_pos_embed`` — antialiased, exact
size — and transformers' ``Dinov2Embeddings.interpolate_pos_encoding`` — exact size — both give
different embeddings; see docs/backbones.md.)

Accepted release formats (detected from the keys, not the file name):
- timm ``vit_base_patch14_dinov2.lvd142m`` (``model.safetensors``),
- torch.hub ``dinov2_vitb14_pretrain.pth`` (DINOv2's own keys, which timm shares, plus ``mask_token``),
- transformers ``facebook/dinov2-base`` (``embeddings.*``, ``encoder.layer.N.*``, ``layernorm.*``; the hub
  file's ``attention.attention.query`` naming and transformers 5's ``attention.q_proj`` alike).
"""
from dermbench.models.registry import IMAGENET_MEAN, IMAGENET_STD, BackboneMeta, register_backbone

META = BackboneMeta(
    key="dinov2", architecture="DINOv2 ViT-B/14 (LayerScale, no registers) at 224 px", embed_dim=768, input_size=224,
    mean=IMAGENET_MEAN, std=IMAGENET_STD, resize_mode="shortest_crop", crop_pct=0.875, interpolation="bicubic",
    patch_size=14, grid=(16, 16), level_indices=(2, 5, 8, 11), level_channels=(768,) * 4, licence="Apache-2.0",
    weights_source="timm vit_base_patch14_dinov2.lvd142m (HF facebook/dinov2-base; torch.hub dinov2_vitb14: "
                   "dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth)",
    hub_id="timm/vit_base_patch14_dinov2.lvd142m", weights_filename="model.safetensors",
    alternative_files=("dinov2_vitb14_pretrain.pth",),
    alternative_hub=(("facebook/dinov2-base", "model.safetensors"),),
    global_feature="final-norm CLS token (768), as DINOv2's linear evaluation (dinov2/eval/linear.py, "
                   "n_last_blocks=1, no avgpool); position embeddings interpolated 37x37 -> 16x16 as upstream",
    preprocessing_source="dinov2/data/transforms.py::make_classification_eval_transform "
                         "(Resize(256, bicubic) -> CenterCrop(224), ImageNet mean/std)",
    pretraining_datasets=("LVD-142M",),
    citation="Oquab et al., DINOv2: Learning Robust Visual Features without Supervision, TMLR 2024",
)

# DINOv2's defaults (DinoVisionTransformer.__init__): interpolate_antialias=False, interpolate_offset=0.1
INTERPOLATE_OFFSET = 0.1
INTERPOLATE_ANTIALIAS = False


def interpolate_pos_embed_like_dinov2(pos_embed, grid: tuple[int, int], num_prefix_tokens: int = 1,
                                      offset: float = INTERPOLATE_OFFSET, antialias: bool = INTERPOLATE_ANTIALIAS):
    """[1, prefix + M*M, D] -> [1, prefix + gh*gw, D] the way DINOv2 resamples at run time.

    The interpolation runs in float32 on a square source grid; with ``offset`` the output size comes
    from ``scale_factor = (g + offset) / M`` (which also sets the sampling positions), as upstream.
    """
    import math

    import torch
    import torch.nn.functional as F

    dtype = pos_embed.dtype
    prefix, patches = pos_embed[:, :num_prefix_tokens].float(), pos_embed[:, num_prefix_tokens:].float()
    n, dim = patches.shape[1], patches.shape[2]
    m = int(math.sqrt(n))
    if m * m != n:
        raise ValueError(f"position embedding with {n} patch positions is not a square grid")
    gh, gw = grid
    if (m, m) == (gh, gw):
        return pos_embed
    kwargs = ({"scale_factor": ((gh + offset) / m, (gw + offset) / m)} if offset else {"size": (gh, gw)})
    resized = F.interpolate(patches.reshape(1, m, m, dim).permute(0, 3, 1, 2), mode="bicubic",
                            antialias=antialias, **kwargs)
    if tuple(resized.shape[-2:]) != (gh, gw):
        raise ValueError(f"interpolated position grid {tuple(resized.shape[-2:])} != {(gh, gw)}")
    resized = resized.permute(0, 2, 3, 1).reshape(1, gh * gw, dim)
    return torch.cat([prefix, resized], dim=1).to(dtype)


def transformers_dinov2_to_timm(state: dict) -> dict:
    """transformers ``Dinov2Model`` keys (``facebook/dinov2-base``) -> timm/DINOv2 keys."""
    import re

    import torch

    out, qkv = {}, {}
    for key, value in state.items():
        k = key[len("dinov2."):] if key.startswith("dinov2.") else key
        m = re.match(r"encoder\.layer\.(\d+)\.(.+)$", k)
        if k == "embeddings.cls_token":
            out["cls_token"] = value
        elif k == "embeddings.position_embeddings":
            out["pos_embed"] = value
        elif k == "embeddings.register_tokens":
            out["reg_token"] = value
        elif k.startswith("embeddings.patch_embeddings.projection."):
            out["patch_embed.proj." + k.rsplit(".", 1)[1]] = value
        elif k == "embeddings.mask_token":
            continue  # iBOT masking only
        elif k.startswith("layernorm."):
            out["norm." + k.rsplit(".", 1)[1]] = value
        elif m:
            i, rest = m.group(1), m.group(2)
            # hub file (and transformers 4): attention.attention.query; transformers 5 saves attention.q_proj
            a = re.match(r"attention\.(?:attention\.(query|key|value)|(q|k|v)_proj)\.(weight|bias)$", rest)
            if a:
                part = a.group(1) or {"q": "query", "k": "key", "v": "value"}[a.group(2)]
                qkv.setdefault((i, a.group(3)), {})[part] = value
                continue
            rest = (rest.replace("attention.output.dense.", "attn.proj.").replace("attention.o_proj.", "attn.proj.")
                    .replace("layer_scale1.lambda1", "ls1.gamma").replace("layer_scale2.lambda1", "ls2.gamma"))
            out[f"blocks.{i}.{rest}"] = value
        elif k.startswith("pooler."):
            continue
        else:
            out[k] = value  # anything else must match the model (strict load reports it)
    for (i, kind), parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise KeyError(f"encoder.layer.{i}: incomplete query/key/value {kind} ({sorted(parts)})")
        out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return out


def dinov2_release_to_timm(state: dict, grid: tuple[int, int] = (16, 16)) -> dict:
    """Any of the three release formats -> the keys of timm's ``vit_base_patch14_dinov2`` at 224 px."""
    from dermbench.models.weights import unwrap

    state = dict(unwrap(state))
    if any(k.startswith(("embeddings.", "dinov2.embeddings.")) for k in state):
        state = transformers_dinov2_to_timm(state)
    state.pop("mask_token", None)  # torch.hub file: iBOT's mask token, unused by the frozen backbone
    if "register_tokens" in state:  # DINOv2's name for registers (ViT-*/14-reg); timm calls them reg_token
        state["reg_token"] = state.pop("register_tokens")
    if "pos_embed" in state:
        state["pos_embed"] = interpolate_pos_embed_like_dinov2(state["pos_embed"], grid)
    return state


@register_backbone(META)
def build(weights=None, meta=META):
    from baselines._timm import build_timm_backbone

    return build_timm_backbone(meta, "vit_base_patch14_dinov2", weights, convert=dinov2_release_to_timm, img_size=224)
