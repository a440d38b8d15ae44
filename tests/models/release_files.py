"""Weights files in each release's own format (file name, container, keys) for the tests.

``write_release_file(key, state, folder)`` takes the state dict of the module a backbone loads into
(timm / segment-anything keys, e.g. from a random build or zeros shaped like the meta-device model)
and writes what the authors ship. Upstream sources of each format are named per model.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

# file name as released, per model (docs/backbones.md)
RELEASE_NAMES = {
    "dermino": "teacher_checkpoint.pth",
    "resnet50": "model.safetensors",
    "vit_base": "model.safetensors",
    "clip": "open_clip_pytorch_model.bin",
    "siglip": "model.safetensors",
    "biomedclip": "open_clip_pytorch_model.bin",
    "medimageinsight": "medimageinsigt-v1.0.0.pt",
    "dinov2": "dinov2_vitb14_pretrain.pth",
    "dinov2-hf": "model.safetensors",
    "lvmmed": "lvmmed_resnet.torch",
    "lvmmed-vit": "lvmmed_vit.pth",
    "panderm": "panderm_ll_data6_checkpoint-499.pth",
    "panderm-base": "panderm_bb_data6_checkpoint-499.pth",
}


def _safetensors(tensors: dict, path: Path) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def timm_dinov2_to_transformers(state: dict) -> dict:
    """timm/DINOv2 keys -> transformers Dinov2Model keys (the layout of facebook/dinov2-base)."""
    out = {}
    for k, v in state.items():
        if k == "cls_token":
            out["embeddings.cls_token"] = v
        elif k == "pos_embed":
            out["embeddings.position_embeddings"] = v
        elif k.startswith("patch_embed.proj."):
            out["embeddings.patch_embeddings.projection." + k.rsplit(".", 1)[1]] = v
        elif k.startswith("norm."):
            out["layernorm." + k.rsplit(".", 1)[1]] = v
        elif k.startswith("blocks."):
            _, i, rest = k.split(".", 2)
            pre = f"encoder.layer.{i}."
            if rest.startswith("attn.qkv."):
                kind = rest.rsplit(".", 1)[1]
                q, kk, vv = v.chunk(3)
                out[pre + f"attention.attention.query.{kind}"] = q
                out[pre + f"attention.attention.key.{kind}"] = kk
                out[pre + f"attention.attention.value.{kind}"] = vv
            else:
                rest = (rest.replace("attn.proj.", "attention.output.dense.")
                        .replace("ls1.gamma", "layer_scale1.lambda1").replace("ls2.gamma", "layer_scale2.lambda1"))
                out[pre + rest] = v
    out["embeddings.mask_token"] = torch.zeros(1, state["cls_token"].shape[-1])
    return out


def write_release_file(key: str, state: dict, folder: Path, clip_state: dict | None = None) -> Path:
    """``state``: the load target's own state dict (what the converter must produce from the file)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RELEASE_NAMES[key]
    if key == "dermino":  # dinov2/train/train.py::do_test: torch.save({"teacher": teacher.state_dict()})
        from dermino.release import to_release_checkpoint

        heads = {"dino_head.mlp.0.weight": torch.zeros(8, 768), "ibot_head.mlp.0.weight": torch.zeros(8, 768)}
        torch.save(to_release_checkpoint(state, chunks=4, heads=heads), path)
    elif key == "resnet50":  # timm hub file of resnet50.tv_in1k, with its 1000-class classifier
        _safetensors({**state, "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}, path)
    elif key == "vit_base":
        _safetensors({**state, "head.weight": torch.zeros(1000, 768), "head.bias": torch.zeros(1000)}, path)
    elif key == "siglip":  # timm hub file of vit_base_patch16_siglip_224.webli (no classifier)
        _safetensors(state, path)
    elif key == "clip":  # open_clip's file: the whole CLIP model (image and text towers, logit scale)
        torch.save(clip_state, path)
    elif key == "biomedclip":  # open_clip checkpoint: visual.trunk.* (timm), visual.head.proj, text.* (BERT)
        sd = {f"visual.trunk.{k[len('trunk.'):]}": v for k, v in state.items() if k.startswith("trunk.")}
        sd["visual.head.proj.weight"] = state["proj.weight"]
        sd["text.transformer.embeddings.word_embeddings.weight"] = torch.zeros(30522, 8)
        sd["text.proj.0.weight"] = torch.zeros(640, 768)
        sd["logit_scale"] = torch.tensor(4.6)
        torch.save(sd, path)
    elif key == "medimageinsight":  # a safetensors file behind a .pt suffix (UniCLModel.from_pretrained)
        from baselines.medimageinsight import timm_to_unicl

        sd = timm_to_unicl(state)
        sd["lang_projection"] = torch.zeros(1024, 1024)
        sd["lang_encoder.token_embedding.weight"] = torch.zeros(49408, 8)
        sd["logit_scale"] = torch.tensor(1.0)
        _safetensors(sd, path)
    elif key == "dinov2":  # torch.hub dinov2_vitb14_pretrain.pth: DINOv2's keys at 518 px + mask_token
        sd = dict(state)
        sd["pos_embed"] = torch.zeros(1, 1 + 37 * 37, 768) if state["pos_embed"].device.type == "meta" or \
            state["pos_embed"].shape[1] == 257 else state["pos_embed"]
        sd["mask_token"] = torch.zeros(1, 768)
        torch.save(sd, path)
    elif key == "dinov2-hf":  # transformers facebook/dinov2-base model.safetensors
        sd = dict(state)
        if sd["pos_embed"].shape[1] == 257:
            sd["pos_embed"] = torch.zeros(1, 1 + 37 * 37, 768)
        _safetensors(timm_dinov2_to_transformers(sd), path)
    elif key == "lvmmed":  # torchvision-format ResNet-50 state dict (fc included); a legacy (pre-zip) pickle
        sd = {**state, "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}
        torch.save(sd, path, _use_new_zipfile_serialization=False)
    elif key == "lvmmed-vit":  # SAM ViT-B image encoder state dict, no pos_embed (use_abs_pos=False)
        assert "pos_embed" not in state
        torch.save(dict(state), path)
    elif key in ("panderm", "panderm-base"):  # CAE training checkpoint: {'model': ..., 'epoch': ...}
        from baselines.panderm import timm_to_panderm

        ckpt = timm_to_panderm(state, large=key == "panderm")
        if key == "panderm":  # the pretraining decoder beside the encoder (set aside by the converter)
            ckpt["model"]["decoder.blocks.0.norm1.weight"] = torch.zeros(1024)
            ckpt["model"]["regressor.norm.weight"] = torch.zeros(1024)
        ckpt["epoch"] = 499
        torch.save(ckpt, path)
    else:
        raise KeyError(key)
    return path


def zeros_like_meta(state: dict) -> dict:
    """Real (zero) tensors with the shapes of a meta-device state dict: full-size files without an init."""
    return {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in state.items()}


def random_like_target(key: str, seed: int = 0, overrides: dict | None = None) -> dict:
    """Random tensors shaped like ``key``'s load target, built on the meta device (no slow init):
    norms near 1, LayerScale in (0, 1), everything else N(0, 0.02)."""
    from dermbench.models.weights_check import architecture_module

    module, _, _ = architecture_module(key)
    g = torch.Generator().manual_seed(seed)
    target = module.state_dict()  # once: a state dict per key would be ~2 x 200 walks of the module
    shapes = {k: tuple(v.shape) for k, v in target.items()}
    shapes.update(overrides or {})
    out = {}
    for k, shape in shapes.items():
        dtype = target[k].dtype if k in target else torch.float32
        if not dtype.is_floating_point:  # BatchNorm's num_batches_tracked
            out[k] = torch.zeros(shape, dtype=dtype)
        elif k.endswith("running_var"):
            out[k] = torch.ones(shape)
        elif re.search(r"(norm\d?|bn\d|downsample\.1)\.weight$|^norm\.weight$", k):
            out[k] = 1 + 0.1 * torch.randn(shape, generator=g)
        elif k.endswith(".gamma"):
            out[k] = torch.rand(shape, generator=g)
        else:
            out[k] = 0.02 * torch.randn(shape, generator=g)
    return out
