"""Lesion segmentation on frozen features: a linear head and an UperNet head (PROTOCOL.md).

- ``seg-linear``: last-layer normed patch tokens -> BatchNorm -> Dropout2d(0.1) -> 1x1 conv to
  2 classes -> bilinear upsampling to the mask size.
- ``seg-upernet``: four levels (blocks [2, 5, 8, 11] of a 12-block ViT, stages 1-4 of a CNN) ->
  transformers' ``UperNetHead`` (pyramid pooling 1/2/3/6, FPN fusion, BatchNorm, 1x1 classifier).
  ViT levels all share one grid, so a trainable neck first rescales them to strides 4/8/16/32
  (deconv x4, deconv x2, identity, max-pool), as mmseg's ViT-UperNet does; CNN and DaViT
  levels already form a pyramid and go in unchanged.

Training: images squashed to 224x224 (``dermbench.features.seg_input_size``; the features come
from the cache, the backbone never runs during training), masks resized with nearest to the
same size; Adam lr 1e-3, cosine over 20 epochs (stepped per iteration), batch 64, cross-entropy.

Scoring, per test image, of the lesion class: Dice, Jaccard and the pixel counts tp/fp/fn/tn,
at the protocol's input resolution (``score_at='224'``, the official code) or at each mask's
own size (``score_at='original'``: the head's logits are upsampled straight to that size).
When both prediction and ground truth are empty, Dice = Jaccard = 1 (a correct "no lesion").
Any nonzero mask value is lesion.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from dermbench.data.sample import DatasetError, Sample
from dermbench.stats.metrics import EMPTY_RULE, mask_scores  # noqa: F401  (re-exported)
from dermbench.features import seg_input_size
from dermbench.io import atomic_write_bytes, atomic_write_text
from dermbench.progress import progress_bar
from dermbench.protocols.base import Protocol, ProtocolOutput, RunContext

SCORE_AT = ("224", "original")

SEG_DEFAULTS: dict[str, Any] = {
    "lr": 1e-3,
    "epochs": 20,
    "batch_size": 64,  # also the evaluation batch
    "score_at": "224",  # '224': the protocol's input resolution (official); 'original': each mask's size
    "save_masks": False,  # predicted masks as PNG (0/255) under <artifacts>/masks/, with index.csv
    "num_figure_images": 4,  # test images in contours.png (0: no figure)
    "batch_size_features": 16,  # feature extraction (frozen backbone), not training
    # Boundary metrics (dermbench.stats.boundary), at each mask's original resolution whatever score_at says:
    # hd95, normalised surface Dice at this tolerance in original pixels, ISIC 2018's thresholded Jaccard.
    "boundary_metrics": True,
    "surface_dice_tolerance": 5.0,
}
LINEAR_SEG_DEFAULTS: dict[str, Any] = {**SEG_DEFAULTS, "dropout": 0.1}
# DermSynth (the CPU-scale demo benchmark) trains the UperNet head smaller and shorter; see data_defaults.
DERMSYNTH_UPERNET = {"upernet_channels": 64, "epochs": 10}
UPERNET_DEFAULTS: dict[str, Any] = {**SEG_DEFAULTS, "upernet_channels": 768, "pool_scales": [1, 2, 3, 6]}



# --- masks and scores --------------------------------------------------------------------

def load_mask(sample: Sample, size: Optional[int] = None, audit: Optional[dict] = None) -> np.ndarray:
    """The lesion mask of ``sample`` as a bool array, optionally resized (nearest neighbour) to
    ``size`` x ``size``. Encodings and thresholds: :func:`dermbench.data.images.load_mask_array`.
    ``audit``: a dict that collects, per encoding, how many masks had it and a few sample ids."""
    from dermbench.data.images import load_mask_array

    if sample.mask is None:
        raise DatasetError(
            f"sample {sample.id!r} ({sample.image}) has no lesion mask; the segmentation protocols need one "
            "for every image: check that the dataset's ground-truth folder is complete"
        )
    mask, info = load_mask_array(sample.mask, size, owner=f"sample {sample.id!r}")
    if audit is not None:
        entry = audit.setdefault(info.encoding, {"count": 0, "examples": []})
        entry["count"] += 1
        if len(entry["examples"]) < 3:
            entry["examples"].append(f"{sample.id} (values {list(info.values)})")
    return mask


def mask_warnings(audit: dict) -> list[str]:
    """Warnings for masks that were empty or not in a documented binary encoding."""
    out = []
    if "odd" in audit:
        a = audit["odd"]
        out.append(f"{a['count']} mask(s) are not binary 0/255 or 0/1, e.g. {', '.join(a['examples'])}: "
                   "thresholded at 128 (value >= 128 = lesion); check the export of these masks")
    if "empty" in audit:
        a = audit["empty"]
        out.append(f"{a['count']} mask(s) have no lesion pixel, e.g. {', '.join(a['examples'])}: "
                   f"scored by the rule '{EMPTY_RULE}'")
    return out


def check_masks_present(task: str, samples: Sequence[Sample]) -> None:
    """Every sample has a mask file on disk; one error lists all that do not."""
    missing = [s for s in samples if s.mask is None or not Path(s.mask).is_file()]
    if missing:
        examples = "; ".join(f"{s.id!r} (image {s.image}, mask {s.mask})" for s in missing[:3])
        raise DatasetError(
            f"task {task!r}: {len(missing)} of {len(samples)} image(s) have no lesion mask file, e.g. {examples}; "
            "the segmentation protocols need a mask for every image: restore the dataset's ground-truth folder"
        )


def train_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch of shuffled index batches covering every sample exactly once.

    A trailing batch of a single sample is merged into the previous batch: BatchNorm on
    UperNet's 1x1 pooled map cannot train on one sample, and dropping it would drop data.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = rng.permutation(n)
    chunks = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if len(chunks) > 1 and len(chunks[-1]) == 1:
        last = chunks.pop()
        chunks[-1] = np.concatenate([chunks[-1], last])
    return chunks


# --- heads ---------------------------------------------------------------------------------

def build_linear_head(in_channels: int, dropout: float):
    """BatchNorm -> Dropout2d -> 1x1 conv to 2 classes (upsampling is done by the caller)."""
    from torch import nn

    return nn.Sequential(nn.BatchNorm2d(in_channels), nn.Dropout2d(dropout), nn.Conv2d(in_channels, 2, kernel_size=1))


def is_same_grid(level_shapes: Sequence[Sequence[int]]) -> bool:
    """True for ViT-style levels (one grid for all), False for a pyramid (CNN, DaViT)."""
    return len({tuple(s[-2:]) for s in level_shapes}) == 1


def build_upernet(level_shapes: Sequence[Sequence[int]], channels: int, pool_scales: Sequence[int]):
    """Neck + transformers' ``UperNetHead`` for levels of shapes [C_i, h_i, w_i] (batch dim excluded).

    Same-grid (ViT) levels go through a trainable neck to strides 4/8/16/32 relative to the
    input (grid at stride p: deconv x4, deconv x2, identity, max-pool /2); pyramid levels go
    through unchanged.
    """
    import torch
    from torch import nn
    from transformers import UperNetConfig
    from transformers.models.upernet.modeling_upernet import UperNetHead

    in_channels = [int(s[0]) for s in level_shapes]
    if is_same_grid(level_shapes):
        if len(level_shapes) != 4 or len(set(in_channels)) != 1:
            raise ValueError(
                f"same-grid (ViT) levels must be 4 maps of equal width for the 4/8/16/32 neck; got shapes "
                f"{[tuple(s) for s in level_shapes]}: set the backbone's level_indices to 4 blocks"
            )
        c = in_channels[0]
        neck = nn.ModuleList([
            nn.Sequential(nn.ConvTranspose2d(c, c, 2, stride=2), nn.BatchNorm2d(c), nn.GELU(),
                          nn.ConvTranspose2d(c, c, 2, stride=2)),
            nn.ConvTranspose2d(c, c, 2, stride=2),
            nn.Identity(),
            nn.MaxPool2d(2, stride=2, ceil_mode=True),  # ceil: odd grids (e.g. 7x7) keep their border
        ])
    else:
        neck = nn.ModuleList([nn.Identity() for _ in level_shapes])
    config = UperNetConfig(hidden_size=int(channels), pool_scales=[int(p) for p in pool_scales], num_labels=2,
                           use_auxiliary_head=False)

    class UperNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.neck = neck
            self.decode_head = UperNetHead(config, in_channels=in_channels)

        def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
            return self.decode_head([f(x) for f, x in zip(self.neck, levels)])

    return UperNet()


# --- the protocols -------------------------------------------------------------------------

class _SegmentationProtocol(Protocol):
    kind = "segmentation"
    feature_kind = "tokens"  # 'tokens' (one map) or 'levels' (a list of maps)

    @property
    def feature_requests(self) -> tuple[tuple[str, str], ...]:
        return ((self.feature_kind, "seg"),)

    def build_head(self, cfg: dict[str, Any], feature_shapes: list[tuple[int, ...]]):
        """The trainable head for features of these shapes (batch dim excluded)."""
        raise TypeError(f"{type(self).__name__} does not define its head")

    def describe(self, feature_shapes: list[tuple[int, ...]]) -> str:
        raise TypeError(f"{type(self).__name__} does not describe its head")

    def feature_needs(self) -> tuple[tuple[str, str], ...]:
        return ((self.feature_kind, "seg"),)

    def features(self, ctx: RunContext, samples: list[Sample], part: str) -> list[np.ndarray]:
        backbone = ctx.get_backbone()
        feats = ctx.features.get(backbone, samples, kind=self.feature_kind, view="seg",
                                 batch_size=int(ctx.config["batch_size_features"]), device=ctx.device,
                                 progress=ctx.progress, desc=f"{ctx.card.name} {part}")
        maps = [feats] if self.feature_kind == "tokens" else list(feats)
        for m in maps:
            if m.ndim != 4 or m.shape[0] != len(samples):
                raise ValueError(f"backbone {backbone.name!r}: {self.feature_kind} features must be maps "
                                 f"[N, C, h, w] for {len(samples)} images, got shape {m.shape}")
        return maps

    def run(self, ctx: RunContext) -> ProtocolOutput:
        import torch
        import torch.nn.functional as F

        cfg = ctx.config
        score_at = str(cfg["score_at"])
        if score_at not in SCORE_AT:
            raise ValueError(f"{self.name}: score_at must be one of {SCORE_AT}, got {cfg['score_at']!r}")
        epochs, bs, lr = int(cfg["epochs"]), int(cfg["batch_size"]), float(cfg["lr"])
        size = seg_input_size(ctx.get_backbone())
        train, test = ctx.train, ctx.test
        if self.feature_kind == "levels" and len(train) < 2:
            raise DatasetError(f"task {ctx.card.name!r}: {self.name} needs at least 2 training images "
                               f"(BatchNorm on pooled maps), the split has {len(train)}")

        # Masks first: a missing or broken mask fails before any feature is computed or head trained.
        check_masks_present(ctx.card.name, train + test)
        audit: dict = {}
        train_masks = torch.as_tensor(np.stack([load_mask(s, size, audit) for s in train]), dtype=torch.long)
        train_feats = self.features(ctx, train, "train")
        shapes = [tuple(int(d) for d in f.shape[1:]) for f in train_feats]

        torch.manual_seed(ctx.seed)  # head initialisation and dropout
        rng = np.random.default_rng(ctx.seed)  # batch order
        head = self.build_head(cfg, shapes).to(ctx.device)
        steps = epochs * len(train_batches(len(train), bs, np.random.default_rng(0)))
        opt = torch.optim.Adam(head.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1), eta_min=0.0)
        losses: list[float] = []
        head.train()
        # one bar over every step of every epoch (its time left is the whole training's); it only counts
        with progress_bar(total=steps, step=(ctx.card.name, self.name, "train"), unit="step", enabled=ctx.progress) as bar:
            for epoch in range(epochs):
                total = 0.0
                bar.set_postfix_str(f"epoch {epoch + 1}/{epochs}" + (f", loss {losses[-1]:.4f}" if losses else ""),
                                    refresh=False)
                for idx in train_batches(len(train), bs, rng):
                    logits = F.interpolate(head(self._inputs(train_feats, idx, ctx.device)), size=(size, size),
                                           mode="bilinear", align_corners=False)
                    loss = F.cross_entropy(logits, train_masks[idx].to(ctx.device))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    total += float(loss.detach()) * len(idx)
                    bar.update()
                losses.append(round(total / len(train), 5))

        head.eval()
        test_feats = self.features(ctx, test, "test")
        writer = _MaskWriter(ctx.artifacts_dir / "masks") if cfg["save_masks"] else None
        n_figure = int(cfg["num_figure_images"])
        rows, figure_items = [], []
        bar = progress_bar(total=len(test), step=(ctx.card.name, self.name, "predict"), unit="img", enabled=ctx.progress)
        with torch.no_grad(), bar:
            for start in range(0, len(test), bs):
                idx = np.arange(start, min(start + bs, len(test)))
                raw = head(self._inputs(test_feats, idx, ctx.device)).float()
                for j, sample in enumerate(test[start : start + len(idx)]):
                    truth = load_mask(sample, size if score_at == "224" else None, audit)
                    logit = F.interpolate(raw[j : j + 1], size=truth.shape, mode="bilinear", align_corners=False)[0]
                    pred = (logit[1] > logit[0]).cpu().numpy()
                    rows.append({"sample_id": sample.id, **mask_scores(pred, truth)})
                    if cfg["boundary_metrics"]:
                        rows[-1].update(_boundary_row(raw[j : j + 1], sample, truth, pred, score_at,
                                                      float(cfg["surface_dice_tolerance"])))
                    if writer is not None:
                        writer.add(sample.id, pred)
                    if len(figure_items) < n_figure:
                        figure_items.append((sample, truth, pred))
                bar.update(len(idx))

        artifacts = []
        if figure_items:
            from dermbench.protocols.segmentation_contours import contour_figure

            contour_figure(figure_items, ctx.artifacts_dir / "contours.png")
            artifacts.append(f"{ctx.artifacts_dir.name}/contours.png")
        if writer is not None:
            artifacts.append(f"{ctx.artifacts_dir.name}/masks/index.csv")
            writer.close()
        columns = ["sample_id", "dice", "jaccard", "tp", "fp", "fn", "tn"]
        columns += list(BOUNDARY_COLUMNS) if cfg["boundary_metrics"] else []
        predictions = pd.DataFrame(rows, columns=columns)
        return ProtocolOutput(
            predictions=predictions, kind=self.kind, n_train=len(train), n_test=len(test),
            info={
                "settings": dict(cfg),
                "score_at": score_at,
                "score_resolution": f"{size}x{size}" if score_at == "224" else "each mask's original size",
                "input_size": size,
                "head": self.describe(shapes),
                "feature_shapes": [list(s) for s in shapes],
                "trainable_parameters": int(sum(p.numel() for p in head.parameters())),
                "train_loss": losses,
                "empty_masks": EMPTY_RULE,
                "n_test_empty_truth": int(sum(r["tp"] + r["fn"] == 0 for r in rows)),
                "mask_encodings": {k: v["count"] for k, v in sorted(audit.items())},
                "warnings": mask_warnings(audit),
                "augmentation": "none (cached frozen features, as the official code)",
                **(_boundary_info(rows, float(cfg["surface_dice_tolerance"])) if cfg["boundary_metrics"] else {}),
            },
            artifacts=artifacts,
        )

    @staticmethod
    def _inputs(feats: list[np.ndarray], idx: np.ndarray, device: str):
        import torch

        maps = [torch.as_tensor(f[idx], dtype=torch.float32).to(device) for f in feats]
        return maps[0] if len(maps) == 1 else maps


BOUNDARY_COLUMNS = ("hd95", "surface_dice", "threshold_jaccard")


def _boundary_row(raw_logits, sample: Sample, truth: np.ndarray, pred: np.ndarray, score_at: str,
                  tolerance: float) -> dict[str, float]:
    """hd95, surface Dice and ISIC 2018's thresholded Jaccard of one image at its mask's original size
    (the logits are upsampled there unless the image was already scored there)."""
    import torch.nn.functional as F

    from dermbench.stats.boundary import boundary_scores, jaccard_of, threshold_jaccard

    if score_at != "original":
        truth = load_mask(sample, None)
        logit = F.interpolate(raw_logits, size=truth.shape, mode="bilinear", align_corners=False)[0]
        pred = (logit[1] > logit[0]).cpu().numpy()
    return {**boundary_scores(pred, truth, tolerance), "threshold_jaccard": threshold_jaccard(jaccard_of(pred, truth))}


def _boundary_info(rows: list[dict], tolerance: float) -> dict[str, Any]:
    from dermbench.stats.boundary import EMPTY_RULE_BOUNDARY, ISIC2018_JACCARD_THRESHOLD

    return {"boundary_metrics": {
        "resolution": "each mask's original size", "surface_dice_tolerance_px": tolerance,
        "threshold_jaccard_threshold": ISIC2018_JACCARD_THRESHOLD, "empty_masks": EMPTY_RULE_BOUNDARY,
        "n_test_hd95_undefined": int(sum(not np.isfinite(r["hd95"]) for r in rows)),
        "implementation": "MONAI compute_hausdorff_distance(percentile=95), compute_surface_dice"}}


class LinearSegmentation(_SegmentationProtocol):
    name = "seg-linear"
    feature_kind = "tokens"
    defaults = dict(LINEAR_SEG_DEFAULTS)

    def build_head(self, cfg, feature_shapes):
        return build_linear_head(feature_shapes[0][0], float(cfg["dropout"]))

    def describe(self, feature_shapes):
        c, h, w = feature_shapes[0]
        return f"linear: BatchNorm2d({c}) -> Dropout2d -> 1x1 conv -> bilinear upsampling; tokens {h}x{w}"


class UperNetSegmentation(_SegmentationProtocol):
    name = "seg-upernet"
    feature_kind = "levels"
    defaults = dict(UPERNET_DEFAULTS)

    def data_defaults(self, data) -> dict[str, Any]:
        # DermSynth is the CPU-scale benchmark: there the decoder has 64 channels instead of the
        # official 768 (the 768-channel head takes 10-20 minutes per task on two CPU cores; 64 channels
        # make its 3x3 fusion convs about 140x cheaper) and trains 10 epochs instead of 20, which keeps
        # `make demo` within minutes on two cores (the UperNet runs were 284 of its 411 protocol-seconds
        # at 128 channels and 20 epochs). Real data keeps 768 and 20. The values used are stored in every
        # result's settings.
        from dermbench.data.synth import is_dermsynth

        return dict(DERMSYNTH_UPERNET) if is_dermsynth(data.root) else {}

    def build_head(self, cfg, feature_shapes):
        return build_upernet(feature_shapes, int(cfg["upernet_channels"]), _int_list(cfg["pool_scales"], "pool_scales"))

    def describe(self, feature_shapes):
        neck = ("ViT neck to strides 4/8/16/32 (deconv x4, deconv x2, identity, max-pool)" if is_same_grid(feature_shapes)
                else "pyramid levels used directly")
        return f"UperNet (transformers UperNetHead); {neck}; levels {[list(s) for s in feature_shapes]}"


def _int_list(value: Any, name: str) -> list[int]:
    """A list of ints from a list or a comma-separated string (as given on the command line)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        out = [int(v) for v in items]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"setting {name!r} must be a list of integers such as 1,2,3,6; got {value!r}") from exc
    if not out or min(out) < 1:
        raise ValueError(f"setting {name!r} must be a non-empty list of positive integers; got {value!r}")
    return out


class _MaskWriter:
    """Predicted masks as PNG (0 background, 255 lesion) with ``index.csv`` mapping sample ids to files.

    File names are the sample ids made filesystem-safe; ids that clash after that get a suffix,
    so every test image has its own file.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.rows: list[tuple[str, str]] = []
        self.used: set[str] = set()

    def add(self, sample_id: str, pred: np.ndarray) -> None:
        import io

        from PIL import Image

        stem = re.sub(r"[^A-Za-z0-9._-]", "_", sample_id) or "mask"
        name, k = f"{stem}.png", 1
        while name.lower() in self.used:  # case-insensitive filesystems too
            k += 1
            name = f"{stem}-{k}.png"
        self.used.add(name.lower())
        buf = io.BytesIO()
        Image.fromarray(np.where(pred, 255, 0).astype(np.uint8), mode="L").save(buf, format="PNG")
        atomic_write_bytes(self.folder / name, buf.getvalue())
        self.rows.append((sample_id, name))

    def close(self) -> None:
        table = pd.DataFrame(self.rows, columns=["sample_id", "file"])
        atomic_write_text(self.folder / "index.csv", table.to_csv(index=False))
