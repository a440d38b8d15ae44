"""DermINO (ViT-B/14 at 224, the released teacher checkpoint) and dermino-tiny (shipped, pretrained on DermSynth).

``dermino-tiny`` is registered only when its files are present in ``dermino/weights/``
(``dermino-tiny.safetensors`` + ``dermino-tiny.json``, written by ``dermbench pretrain --export``).
"""
from __future__ import annotations

import json
from pathlib import Path

from dermbench.models.registry import IMAGENET_MEAN, IMAGENET_STD, BackboneMeta, register_backbone

# DermINO's pretraining saw the *training* splits of these evaluation tasks (the paper), which
# makes its results on them optimistic; they are flagged in every result.
DERMINO_SEEN = ("acne04", "ddi", "derm7pt", "ph2-cls", "ph2-seg", "fitzpatrick17k-2", "fitzpatrick17k-3",
                "fitzpatrick17k-9", "mednode")

META = BackboneMeta(
    key="dermino", architecture="DermINO ViT-B/14 (DINOv2 architecture, LayerScale, no registers) at 224 px",
    embed_dim=768, input_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, resize_mode="shortest_crop",
    crop_pct=0.875, interpolation="bicubic", patch_size=14, grid=(16, 16), level_indices=(2, 5, 8, 11),
    level_channels=(768,) * 4, licence="weights: none stated; code Apache-2.0 (DINOv2)",
    weights_source="Google Drive link 'DermINO_Base' in the official DermINO README (github zxq-kd/DermINO); the file "
                   "is the DINOv2 trainer's teacher checkpoint",
    # dinov2/train/train.py::do_test saves the EMA teacher as eval/<iteration>/teacher_checkpoint.pth
    weights_filename="teacher_checkpoint.pth",
    global_feature="final-norm CLS token (768), as DINOv2's linear evaluation (dinov2/eval/linear.py, n_last_blocks=1)",
    preprocessing_source="dinov2/data/transforms.py::make_classification_eval_transform "
                         "(Resize(256, bicubic) -> CenterCrop(224), ImageNet mean/std), which DermINO's fork keeps",
    pretraining_datasets=("232,215 private clinical images", "LESION-130k web images", "PAD-UFES-20", "DermNet",
                          "training splits of ACNE04, DDI, Derm7pt, PH2, Fitzpatrick17k, MED-Node"),
    seen_tasks=DERMINO_SEEN,
    citation="DermINO: Hybrid Pretraining for a Versatile Dermatology Foundation Model, arXiv 2508.12190",
)


@register_backbone(META)
def build(weights=None, meta=META):
    from baselines._timm import build_timm_backbone
    from dermino.release import convert_release_checkpoint

    def convert(obj):  # DermINO at 224 px: a 16 x 16 patch grid
        return convert_release_checkpoint(obj, grid=(16, 16))

    return build_timm_backbone(meta, "vit_base_patch14_dinov2", weights, convert=convert, img_size=224, init_values=1e-5)


# --- dermino-tiny ---------------------------------------------------------------------------
TINY_DIR = Path(__file__).resolve().parent / "weights"
TINY_WEIGHTS, TINY_CONFIG = TINY_DIR / "dermino-tiny.safetensors", TINY_DIR / "dermino-tiny.json"


def _tiny_meta(cfg: dict) -> BackboneMeta:
    kw = cfg["timm_kwargs"]
    grid = kw["img_size"] // kw["patch_size"]
    depth = kw["depth"]
    levels = tuple(sorted({max(0, round(depth * f) - 1) for f in (0.25, 0.5, 0.75, 1.0)}))
    return BackboneMeta(
        key="dermino-tiny", architecture=f"ViT patch {kw['patch_size']}, width {kw['embed_dim']}, {depth} blocks, "
        f"{kw['img_size']} px; DermINO hybrid pretraining (tiny preset) on DermSynth",
        embed_dim=kw["embed_dim"], input_size=kw["img_size"], mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
        resize_mode="shortest_crop", crop_pct=0.875, interpolation="bicubic", patch_size=kw["patch_size"],
        grid=(grid, grid), level_indices=levels, level_channels=(kw["embed_dim"],) * len(levels), licence="Apache-2.0",
        weights_source=f"shipped with dermbench: {TINY_WEIGHTS.name}", pretraining_datasets=("DermSynth",),
        # every task whose training images it saw, labelled or not (the tables flag those results)
        seen_tasks=tuple(cfg.get("training", {}).get("seen_tasks", cfg.get("training", {}).get("labelled_tasks", ()))),
        description="A demonstration model: DermINO's pretraining recipe at CPU scale on the synthetic DermSynth.",
    )


def build_tiny(weights=None, meta=None):
    from timm.models.vision_transformer import VisionTransformer

    from dermbench.models.backbone import TimmViTBackbone, seeded
    from dermbench.models.weights import load_weights_into

    cfg = json.loads(TINY_CONFIG.read_text())
    with seeded(0):
        model = VisionTransformer(**{**cfg["timm_kwargs"], "num_classes": 0})
    sha = load_weights_into(model, meta, str(TINY_WEIGHTS) if weights is None else weights)
    backbone = TimmViTBackbone(model, meta, weights_sha256=sha)
    backbone.seg_input_size = meta.input_size  # a small model trained at its own size
    return backbone


if TINY_WEIGHTS.exists() and TINY_CONFIG.exists():
    _TINY_META = _tiny_meta(json.loads(TINY_CONFIG.read_text()))
    register_backbone(_TINY_META)(build_tiny)
