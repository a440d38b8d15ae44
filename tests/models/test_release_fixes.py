"""The six release-file defects of issue 17, each with a test that failed on the code before the fix,
and equivalence with the upstream implementations on the same random weights.

Where upstream is installable the reference *is* upstream (transformers' Dinov2Model,
segment-anything's ImageEncoderViT, torchvision's ResNet-50, open_clip). Where it is not (PanDerm,
MedImageInsight, the DermINO fork of DINOv2) the distinctive upstream parts are transcribed here
from the upstream repositories, and each test names the file and function it follows.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from dermbench.models import registry
from dermbench.models.weights import detect_format, load_state_dict_file, resolve_weights

MII_REDUCED = {"arch": {"depths": (1, 1, 1, 1), "embed_dims": (32, 64, 128, 256), "num_heads": (1, 2, 4, 8)}}


def _save_safetensors(tensors: dict, path: Path) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


# --- format by content -------------------------------------------------------------------------------
def test_format_is_read_from_the_content_not_the_suffix(tmp_path):
    """Failed before: a safetensors file named .pt went to torch.load. Containers: safetensors, the
    torch.save zip archive, the legacy (pre-1.6) torch pickle — each under a misleading suffix."""
    sd = {"w": torch.arange(6.0).reshape(2, 3)}
    files = {
        "safetensors": _save_safetensors(sd, tmp_path / "a.pt"),
        "torch-zip": tmp_path / "b.safetensors",
        "torch-legacy-pickle": tmp_path / "c.bin",
    }
    torch.save(sd, files["torch-zip"])
    torch.save(sd, files["torch-legacy-pickle"], _use_new_zipfile_serialization=False)
    for fmt, path in files.items():
        assert detect_format(path) == fmt
        torch.testing.assert_close(load_state_dict_file(path)["w"], sd["w"])
    html = tmp_path / "page.pth"
    html.write_text("<html>quota exceeded</html>")
    with pytest.raises(Exception, match="not a weights file.*Is the download complete"):
        detect_format(html)


# --- 1. MedImageInsight ------------------------------------------------------------------------------
def _mii_release(backbone) -> dict:
    from baselines.medimageinsight import timm_to_unicl

    state = {f"model.{k}": v for k, v in backbone.model.state_dict().items()}
    state["projection.weight"] = backbone.projection.weight
    sd = timm_to_unicl(state)
    sd["lang_projection"], sd["logit_scale"] = torch.randn(4, 4), torch.tensor(1.0)
    return sd


def test_medimageinsight_release_pt_that_is_safetensors_loads(tmp_path):
    """Failed before (torch.load on a safetensors file). Upstream MedImageInsight
    ``UniCLModel.from_pretrained`` reads ``vision_model/medimageinsigt-v1.0.0.pt`` with
    ``safetensors.torch.load_file``."""
    random_bb = registry.build("medimageinsight", weights="random", **MII_REDUCED)
    path = _save_safetensors(_mii_release(random_bb), tmp_path / "medimageinsigt-v1.0.0.pt")
    loaded = registry.build("medimageinsight", weights=str(path), **MII_REDUCED)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded.forward_global(x), random_bb.forward_global(x), rtol=0, atol=0)


# Transcribed from MedImageInsight ``ImageEncoder/davit_v1.py::DaViT._try_remap_keys`` (old -> new,
# applied as substring replacements in this order) and ``UniCLModel._convert_old_weights``.
UPSTREAM_DAVIT_REMAP = [
    ("conv_embeds", "convs"), ("main_blocks", "blocks"),
    ("0.cpe.0.proj", "spatial_block.conv1.fn.dw"), ("0.attn", "spatial_block.window_attn.fn"),
    ("0.cpe.1.proj", "spatial_block.conv2.fn.dw"), ("0.mlp", "spatial_block.ffn.fn.net"),
    ("1.cpe.0.proj", "channel_block.conv1.fn.dw"), ("1.attn", "channel_block.channel_attn.fn"),
    ("1.cpe.1.proj", "channel_block.conv2.fn.dw"), ("1.mlp", "channel_block.ffn.fn.net"),
    ("0.norm1", "spatial_block.window_attn.norm"), ("0.norm2", "spatial_block.ffn.norm"),
    ("1.norm1", "channel_block.channel_attn.norm"), ("1.norm2", "channel_block.ffn.norm"),
]


def _upstream_remap(key: str) -> str:
    for old, new in UPSTREAM_DAVIT_REMAP:
        if old in key:
            key = key.replace(old, new)
    return key


def _to_old_names(key: str) -> str:
    """Current release key -> the older naming (the inverse of the upstream table)."""
    if key == "image_projection":
        return "vision_projection"
    if not key.startswith("image_encoder."):
        return key
    k = key[len("image_encoder."):]
    k = k.replace("convs.", "conv_embeds.", 1) if k.startswith("convs.") else k
    if k.startswith("blocks."):
        k = "main_blocks." + k[len("blocks."):]
        for old, new in UPSTREAM_DAVIT_REMAP[2:]:
            k = k.replace("." + new + ".", "." + old + ".")
    return "visual." + k


def test_medimageinsight_accepts_the_older_key_names_upstream_remaps(tmp_path):
    """Failed before (unexpected main_blocks.* / *.cpe.0.proj keys). Follows MedImageInsight
    ``davit_v1.py::DaViT._try_remap_keys`` and ``UniCLModel._convert_old_weights``."""
    random_bb = registry.build("medimageinsight", weights="random", **MII_REDUCED)
    current = _mii_release(random_bb)
    old = {_to_old_names(k): v for k, v in current.items()}
    assert any(".0.cpe.0.proj." in k for k in old) and any(k.startswith("visual.main_blocks.") for k in old)
    # the transcribed upstream table maps every old image-encoder key back to the current one
    for k in old:
        if k.startswith("visual."):
            assert "image_encoder." + _upstream_remap(k[len("visual."):]) in current
    path = _save_safetensors(old, tmp_path / "old_unicl.pt")
    loaded = registry.build("medimageinsight", weights=str(path), **MII_REDUCED)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.forward_global(x), random_bb.forward_global(x), rtol=0, atol=0)


# --- 2. LVM-Med ViT ----------------------------------------------------------------------------------
def _sam_reference(img_size: int, depth: int = 3):
    from segment_anything.modeling import ImageEncoderViT

    return ImageEncoderViT(img_size=img_size, patch_size=16, embed_dim=768, depth=depth, num_heads=12, mlp_ratio=4,
                           out_chans=256, qkv_bias=True, use_rel_pos=True, window_size=14, global_attn_indexes=(2,),
                           use_abs_pos=False, norm_layer=lambda d: torch.nn.LayerNorm(d, eps=1e-6)).eval()


def test_lvmmed_vit_release_without_pos_embed_loads_and_equals_segment_anything(tmp_path):
    """Failed before (strict load: missing pos_embed). Upstream LVM-Med builds the SAM ViT-B encoder
    with ``use_abs_pos=False`` (``segment_anything/our_vit.py``) and loads the release strictly; the
    reference here is segment-anything's own ImageEncoderViT built the same way, on the same random
    weights, at the encoder's native 1024 px with a 224 px input (relative positions resampled by
    segment-anything's ``get_rel_pos``, as upstream's 224 px classification does)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        ref = _sam_reference(1024)
        for p in ref.parameters():  # rel-pos tables start at zero: make them matter
            p.data.normal_(0, 0.02)
    assert "pos_embed" not in ref.state_dict()
    path = tmp_path / "lvmmed_vit.pth"
    torch.save(ref.state_dict(), path)
    ours = registry.build("lvmmed-vit", weights=str(path), depth=3)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_tokens(x), ref(x))  # neck output, as SAM computes it
        h = ref.patch_embed(x)
        for blk in ref.blocks:
            h = blk(h)
        torch.testing.assert_close(ours.forward_global(x), h.mean(dim=(1, 2)))


def test_lvmmed_vit_global_feature_is_upstream_classification_feature():
    """Failed before (256-d neck output at 1024 px). Upstream LVM-Med classification
    (``classification_VIT/train_SAMVIT_classification.py``): ``Resize((224, 224))``, no neck,
    average-pooled 768-d tokens. Segmentation keeps the neck and the block levels at 1024 px."""
    entry = registry.get("lvmmed-vit")
    meta = entry.meta
    assert (meta.input_size, meta.embed_dim, meta.resize_mode, meta.interpolation) == (224, 768, "squash", "bilinear")
    assert "no neck" in meta.global_feature and "average-pooled" in meta.global_feature
    bb = registry.build("lvmmed-vit", weights="random", depth=3)
    assert bb.seg_input_size == 1024
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert bb.forward_global(x).shape == (1, 768)
        assert bb.forward_tokens(x).shape == (1, 256, 14, 14)


# --- 3. PanDerm --------------------------------------------------------------------------------------
def _upstream_panderm_sincos(embed_dim: int, h: int, w: int, temperature: float = 10000.0) -> torch.Tensor:
    """Transcribed from PanDerm ``classification/models/modeling_finetune.py``
    ``VisionTransformer.build_2d_sincos_position_embedding``."""
    grid_w = torch.arange(w, dtype=torch.float32)
    grid_h = torch.arange(h, dtype=torch.float32)
    grid_w, grid_h = torch.meshgrid(grid_w, grid_h, indexing="ij")  # torch's default indexing there
    pos_dim = embed_dim // 4
    omega = 1.0 / (temperature ** (torch.arange(pos_dim, dtype=torch.float32) / pos_dim))
    out_w = torch.einsum("m,d->md", grid_w.flatten(), omega)
    out_h = torch.einsum("m,d->md", grid_h.flatten(), omega)
    pos = torch.cat([torch.sin(out_w), torch.cos(out_w), torch.sin(out_h), torch.cos(out_h)], dim=1)[None]
    return torch.cat([torch.zeros(1, 1, embed_dim), pos], dim=1)


def test_panderm_fallback_pos_embed_has_the_upstream_layout():
    """Failed before (the first half of each vector encoded the column). Upstream PanDerm
    ``modeling_finetune.py::build_2d_sincos_position_embedding``: meshgrid(grid_w, grid_h), ij indexing."""
    from baselines.panderm import sincos_pos_embed

    for dim in (1024, 768):
        torch.testing.assert_close(sincos_pos_embed(dim, 14), _upstream_panderm_sincos(dim, 14, 14), rtol=0, atol=1e-6)
    pe = sincos_pos_embed(16, 3)[0, 1:]
    assert torch.allclose(pe[0, :4], pe[2, :4]) and not torch.allclose(pe[0, :4], pe[3, :4])  # token 3 = row 1


def test_panderm_loads_the_files_pos_embed_and_builds_the_upstream_one_only_without_it(tmp_path):
    """Upstream keeps pos_embed as an nn.Parameter (requires_grad=False), so release state dicts carry
    it: the file's tensor is loaded. Failed before for a file without it (the transposed fallback)."""
    from baselines.panderm import timm_to_panderm

    bb = registry.build("panderm-base", weights="random", depth=2)
    state = dict(bb.model.state_dict())
    state["pos_embed"] = torch.randn_like(state["pos_embed"])  # not the sin-cos table: must come through
    ckpt = timm_to_panderm(state, large=False)
    assert "pos_embed" in ckpt["model"]
    torch.save(ckpt, tmp_path / "with.pth")
    loaded = registry.build("panderm-base", weights=str(tmp_path / "with.pth"), depth=2)
    torch.testing.assert_close(loaded.model.pos_embed, state["pos_embed"], rtol=0, atol=0)
    del ckpt["model"]["pos_embed"]
    torch.save(ckpt, tmp_path / "without.pth")
    fallback = registry.build("panderm-base", weights=str(tmp_path / "without.pth"), depth=2)
    torch.testing.assert_close(fallback.model.pos_embed, _upstream_panderm_sincos(768, 14, 14), rtol=0, atol=1e-6)


def test_panderm_preprocessing_is_resize_256_bilinear_then_crop_224():
    """Failed before (bicubic). PanDerm evaluates with ``transforms.Resize(256)`` (torchvision's default
    interpolation: bilinear) then ``CenterCrop(224)``."""
    from torchvision import transforms as T

    for key in ("panderm", "panderm-base"):
        tf = registry.build(key, weights="random", depth=1).transform()
        resize = next(t for t in tf.transforms if isinstance(t, T.Resize))
        crop = next(t for t in tf.transforms if isinstance(t, T.CenterCrop))
        assert resize.size == 256 and resize.interpolation == T.InterpolationMode.BILINEAR
        assert tuple(crop.size) == (224, 224)


# --- 4. DINOv2 / DermINO -----------------------------------------------------------------------------
def _upstream_dinov2_interpolate(pos_embed: torch.Tensor, w: int, h: int, patch_size: int = 14,
                                 interpolate_offset: float = 0.1, interpolate_antialias: bool = False):
    """Transcribed from DINOv2 ``dinov2/models/vision_transformer.py``
    ``DinoVisionTransformer.interpolate_pos_encoding`` (the defaults of ``DinoVisionTransformer``)."""
    pos_embed = pos_embed.float()
    class_pos_embed, patch_pos_embed = pos_embed[:, 0], pos_embed[:, 1:]
    dim, n = pos_embed.shape[-1], pos_embed.shape[1] - 1
    w0, h0 = w // patch_size, h // patch_size
    m = int(math.sqrt(n))
    sx, sy = float(w0 + interpolate_offset) / m, float(h0 + interpolate_offset) / m
    patch_pos_embed = torch.nn.functional.interpolate(
        patch_pos_embed.reshape(1, m, m, dim).permute(0, 3, 1, 2), scale_factor=(sx, sy), mode="bicubic",
        antialias=interpolate_antialias)
    assert (w0, h0) == patch_pos_embed.shape[-2:]
    patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
    return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1)


def test_dinov2_pos_embed_is_interpolated_as_upstream_not_by_timm_resample():
    """Failed before (timm's resample_abs_pos_embed: antialiased, exact size). Upstream DINOv2
    ``vision_transformer.py::interpolate_pos_encoding``: bicubic, antialias off, offset 0.1, scale factor."""
    from timm.layers import resample_abs_pos_embed

    from baselines.dinov2 import dinov2_release_to_timm

    pos = torch.randn(1, 1 + 37 * 37, 768)
    ours = dinov2_release_to_timm({"pos_embed": pos})["pos_embed"]
    torch.testing.assert_close(ours, _upstream_dinov2_interpolate(pos, 224, 224), rtol=0, atol=0)
    timm_way = resample_abs_pos_embed(pos, new_size=(16, 16), num_prefix_tokens=1)
    assert (ours - timm_way).abs().max() > 1e-2  # the two really differ


def test_dinov2_and_dermino_preprocess_as_their_linear_evaluation():
    """Failed before for DINOv2 (crop_pct 1.0). DINOv2 ``dinov2/data/transforms.py::
    make_classification_eval_transform`` (used by its and DermINO's linear evaluations): Resize(256,
    bicubic) -> CenterCrop(224), ImageNet mean/std."""
    from torchvision import transforms as T

    from dermbench.models.backbone import build_transform

    for key in ("dinov2", "dermino"):
        m = registry.get(key).meta
        assert (m.crop_pct, m.interpolation, m.resize_mode, m.input_size) == (0.875, "bicubic", "shortest_crop", 224)
        tf = build_transform(m.input_size, m.mean, m.std, m.resize_mode, m.crop_pct, m.interpolation)
        resize = next(t for t in tf.transforms if isinstance(t, T.Resize))
        assert resize.size == 256 and resize.interpolation == T.InterpolationMode.BICUBIC


def _random_like_meta(key: str, seed: int, overrides: dict | None = None) -> dict:
    """Random tensors shaped like ``key``'s load target (built on the meta device: no slow init)."""
    from dermbench.models.weights_check import architecture_module

    module, _, _ = architecture_module(key)
    g = torch.Generator().manual_seed(seed)
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    shapes.update(overrides or {})
    out = {}
    for k, shape in shapes.items():
        if k.endswith("norm1.weight") or k.endswith("norm2.weight") or k == "norm.weight":
            out[k] = 1 + 0.1 * torch.randn(shape, generator=g)
        elif k.endswith(".gamma"):
            out[k] = torch.rand(shape, generator=g)  # LayerScale: make it matter
        else:
            out[k] = 0.02 * torch.randn(shape, generator=g)
    return out


def _transformers_from_release(sd_timm: dict, folder: Path, image_size: int):
    """transformers' own loader on a file in the facebook/dinov2-base format (its key conversion included)."""
    from transformers import Dinov2Config, Dinov2Model

    from tests.models.release_files import timm_dinov2_to_transformers

    folder.mkdir(parents=True, exist_ok=True)
    Dinov2Config(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, image_size=image_size,
                 patch_size=14, layerscale_value=1.0).save_pretrained(folder)
    _save_safetensors(timm_dinov2_to_transformers(sd_timm), folder / "model.safetensors")
    return Dinov2Model.from_pretrained(str(folder)).eval(), folder / "model.safetensors"


def test_dinov2_hub_pth_and_transformers_file_load_and_equal_transformers_dinov2model(tmp_path):
    """Failed before (the hub file's mask_token and the transformers keys were not accepted). Formats:
    torch.hub ``dinov2_vitb14_pretrain.pth`` (DINOv2 keys at 518 px + mask_token) and transformers
    ``facebook/dinov2-base`` (``embeddings.*``, ``encoder.layer.N.attention.attention.query`` ...).
    Reference: transformers ``Dinov2Model.from_pretrained`` on that file, run at 224 px. Its own
    ``interpolate_pos_encoding`` resizes to an exact size (no 0.1 offset), so the reference is given
    the 16 x 16 embeddings DINOv2's rule yields (the rule itself is checked above)."""
    from baselines.dinov2 import interpolate_pos_embed_like_dinov2

    sd = _random_like_meta("dinov2", seed=2, overrides={"pos_embed": (1, 1 + 37 * 37, 768)})
    torch.save(dict(sd, mask_token=torch.zeros(1, 768)), tmp_path / "dinov2_vitb14_pretrain.pth")
    ref, hf_file = _transformers_from_release(sd, tmp_path / "dinov2-base", 518)
    with torch.no_grad():
        ref.embeddings.position_embeddings.data = interpolate_pos_embed_like_dinov2(sd["pos_embed"], (16, 16))
    from_hub = registry.build("dinov2", weights=str(tmp_path / "dinov2_vitb14_pretrain.pth"))
    from_hf = registry.build("dinov2", weights=str(hf_file))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        out = ref(pixel_values=x)
        torch.testing.assert_close(from_hub.forward_global(x), from_hf.forward_global(x), rtol=0, atol=0)
        torch.testing.assert_close(from_hub.forward_global(x), out.pooler_output, rtol=1e-4, atol=1e-4)
        tokens = out.last_hidden_state[:, 1:].transpose(1, 2).reshape(2, 768, 16, 16)
        torch.testing.assert_close(from_hub.forward_tokens(x), tokens, rtol=1e-4, atol=1e-4)


def test_dermino_teacher_checkpoint_equals_transformers_dinov2model_at_224(tmp_path):
    """DermINO's release is the DINOv2 trainer's teacher checkpoint (``dinov2/train/train.py::do_test``
    saves ``{"teacher": ...}`` as ``teacher_checkpoint.pth``; backbone under ``backbone.``, blocks
    chunked (``block_chunks``), dino/ibot heads beside). Reference: transformers Dinov2Model at 224 px
    (trained at 224: a 16 x 16 grid, no interpolation) on the same weights."""
    from dermino.release import to_release_checkpoint

    sd = _random_like_meta("dermino", seed=3)
    heads = {"dino_head.mlp.0.weight": torch.zeros(4, 768), "ibot_head.mlp.0.weight": torch.zeros(4, 768)}
    torch.save(to_release_checkpoint(sd, chunks=4, heads=heads), tmp_path / "teacher_checkpoint.pth")
    ours = registry.build("dermino", weights=str(tmp_path / "teacher_checkpoint.pth"))
    ref, _ = _transformers_from_release(sd, tmp_path / "hf", 224)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_global(x), ref(pixel_values=x).pooler_output, rtol=1e-4, atol=1e-4)


# --- 5. CLIP -----------------------------------------------------------------------------------------
def _fake_hub_cache(cache: Path, repo: str, filename: str, payload_path: Path) -> Path:
    """The layout huggingface_hub writes: models--owner--name/{refs/main, snapshots/<rev>/<file>}."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snap = root / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    (snap / filename).parent.mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text("0123456789abcdef0123456789abcdef01234567")
    (snap / filename).write_bytes(payload_path.read_bytes())
    return snap / filename


def test_clip_hub_id_is_the_repository_timm_resolves_to(tmp_path, monkeypatch):
    """Failed before (timm/vit_base_patch16_clip_quickgelu_224.openai does not exist). timm's
    pretrained_cfg for ``vit_base_patch16_clip_quickgelu_224.openai`` and open_clip's ('ViT-B-16',
    'openai') both point at ``timm/vit_base_patch16_clip_224.openai``; the local hub cache is found."""
    import open_clip.pretrained
    import timm

    meta = registry.get("clip").meta
    assert meta.hub_id == timm.models.get_pretrained_cfg("vit_base_patch16_clip_quickgelu_224.openai").hf_hub_id
    assert meta.hub_id == open_clip.pretrained.get_pretrained_cfg("ViT-B-16", "openai")["hf_hub"].rstrip("/")
    payload = tmp_path / "payload.bin"
    torch.save({"x": torch.zeros(1)}, payload)
    cache = tmp_path / "hub"
    expected = _fake_hub_cache(cache, meta.hub_id, meta.weights_filename, payload)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("DERMBENCH_CACHE", str(tmp_path / "dermbench"))
    assert Path(resolve_weights(meta, None)) == expected


# --- 6. DermINO --------------------------------------------------------------------------------------
def test_dermino_release_file_name_is_teacher_checkpoint(tmp_path, monkeypatch):
    """Failed before (dermbench looked for DermINO_Base.pth, a name not from the release). DINOv2's
    trainer (``dinov2/train/train.py::do_test``), which DermINO's fork keeps, writes ``teacher_checkpoint.pth``."""
    from dermbench.models.weights import weights_folder

    monkeypatch.setenv("DERMBENCH_CACHE", str(tmp_path))
    meta = registry.get("dermino").meta
    assert meta.weights_filename == "teacher_checkpoint.pth"
    folder = weights_folder(meta)
    folder.mkdir(parents=True)
    (folder / "teacher_checkpoint.pth").write_bytes(b"PK\x03\x04")
    assert resolve_weights(meta, None) == folder / "teacher_checkpoint.pth"


# --- torchvision ResNet-50 and open_clip SigLIP ------------------------------------------------------
@pytest.mark.parametrize("key", ["lvmmed"])
def test_resnet_equals_torchvision_resnet50_on_its_state_dict(key, tmp_path):
    """Reference: torchvision's ResNet-50 (LVM-Med's R50 and the torchvision V1 release are its state
    dicts; ``resnet50`` goes through the same builder and converter, and is compared with timm in
    test_backbones.py); the global feature is its pooled output before ``fc``."""
    import torchvision

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4)
        tv = torchvision.models.resnet50().eval()
        for m in tv.modules():  # non-trivial BatchNorm statistics
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / ("lvmmed_resnet.torch" if key == "lvmmed" else "resnet50.pth")
    torch.save(tv.state_dict(), path)
    ours = registry.build(key, weights=str(path))
    tv.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_global(x), tv(x), rtol=1e-4, atol=1e-4)


def test_siglip_equals_open_clip_timm_tower(tmp_path):
    """Reference: open_clip's ViT-B-16-SigLIP image tower as its model config builds it
    (``open_clip/model_configs/ViT-B-16-SigLIP.json``: TimmModel, timm_model_name
    vit_base_patch16_siglip_224, pool 'map', proj 'none'); its trunk's state dict is the timm hub file
    of vit_base_patch16_siglip_224.webli."""
    from open_clip.timm_model import TimmModel

    tower = TimmModel("vit_base_patch16_siglip_224", embed_dim=768, image_size=224, pool="map", proj="none").eval()
    path = _save_safetensors(tower.trunk.state_dict(), tmp_path / "model.safetensors")
    ours = registry.build("siglip", weights=str(path))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_global(x), tower(x), rtol=1e-4, atol=1e-4)
