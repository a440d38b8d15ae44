"""Contour figure of segmentation results (the paper's Fig. 5c): test images with the
ground-truth (green) and predicted (red) lesion borders."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from dermbench.data.sample import Sample

GT_COLOUR = "lime"
PRED_COLOUR = "red"
MAX_SIDE = 512  # figure panels are downsized beyond this (masks scored at the original size can be huge)


def contour_figure(items: Sequence[tuple[Sample, np.ndarray, np.ndarray]], path: Path, dpi: int = 100) -> Path:
    """Write a one-row figure; ``items`` are (sample, ground-truth mask, predicted mask), masks bool [H, W]
    at the scoring resolution. Each panel is titled with the sample id and its Dice."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from dermbench.features import load_image
    from dermbench.io import atomic_write_bytes
    from dermbench.stats.metrics import mask_scores

    if not items:
        raise ValueError("contour_figure needs at least one (sample, truth, prediction) item")
    fig, axes = plt.subplots(1, len(items), figsize=(2.6 * len(items), 3.0), squeeze=False)
    for ax, (sample, truth, pred) in zip(axes[0], items):
        h, w = truth.shape
        scale = min(1.0, MAX_SIDE / max(h, w))
        size = (max(1, round(w * scale)), max(1, round(h * scale)))  # PIL: (width, height)
        image = load_image(sample.image).resize(size, Image.BICUBIC)
        truth_small = _resize_mask(truth, size)
        pred_small = _resize_mask(pred, size)
        ax.imshow(image)
        # contour() needs both levels present; an empty mask has no border to draw
        if truth_small.any() and not truth_small.all():
            ax.contour(truth_small.astype(float), levels=[0.5], colors=GT_COLOUR, linewidths=1.2)
        if pred_small.any() and not pred_small.all():
            ax.contour(pred_small.astype(float), levels=[0.5], colors=PRED_COLOUR, linewidths=1.2)
        ax.set_title(f"{sample.id}\nDice {mask_scores(pred, truth)['dice']:.3f}", fontsize=7)
        ax.axis("off")
    fig.suptitle(f"ground truth ({GT_COLOUR}), prediction ({PRED_COLOUR})", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.9))  # leave room for the legend line above the panel titles
    buf = io.BytesIO()
    # no timestamp in the PNG metadata: the same run writes the same bytes
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if (mask.shape[1], mask.shape[0]) == size:
        return mask.astype(bool)
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 0
