"""Qualitative comparisons (the paper's Supplementary Fig. 1 and Tables 3–4), from stored results only.

- :func:`segmentation_grid`: the same test images, one row each: the image, its ground-truth mask,
  then each model's predicted mask (outline over the image, with that image's Dice). Predicted masks
  come from segmentation results run with ``--set seg-upernet.save_masks=true`` (or
  ``seg-linear.save_masks=true``): ``<protocol>.artifacts/masks/index.csv`` and the PNGs beside it.
  The images are the first ``n_images`` test ids (sorted) that every model with masks has.
- :func:`caption_table`: the same test images with the reference caption and each model's generated
  caption, from the caption predictions (``reference``, ``generated`` columns).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

N_IMAGES = 4
SEG_PROTOCOLS = ("seg-upernet", "seg-linear")


def _masks_index(record: dict) -> Optional[pd.DataFrame]:
    folder = Path(record["_path"]).with_suffix(".artifacts") / "masks"  # <protocol>@<key>.artifacts
    index = folder / "index.csv"
    if not index.is_file():
        return None
    df = pd.read_csv(index, dtype=str)
    df["path"] = [str(folder / f) for f in df["file"]]
    return df.set_index("sample_id")


def segmentation_grid(records: Sequence[dict], protocol: str, task: str, n_images: int = N_IMAGES) -> Optional[bytes]:
    """PNG of the grid for one (task, protocol), or None when no model of it saved masks."""
    from PIL import Image

    from dermbench.data.locate import load_task
    from dermbench.data.tasks import get_card
    from dermbench.run.results import read_predictions

    rows = sorted((r for r in records if r["protocol"] == protocol and r["task"] == task), key=lambda r: r["model"])
    with_masks = [(r, idx) for r in rows if (idx := _masks_index(r)) is not None]
    if not with_masks:
        return None
    common = sorted(set.intersection(*[set(idx.index) for _, idx in with_masks]))[:n_images]
    if not common:
        return None
    data = load_task(Path(with_masks[0][0]["data"]["root"]), get_card(task)).by_id()
    dice = {r["model"]: read_predictions(Path(r["_path"])).set_index("sample_id")["dice"] for r, _ in with_masks}

    def draw():
        from matplotlib.figure import Figure

        n_cols = 2 + len(with_masks)
        fig = Figure(figsize=(1.6 * n_cols, 1.7 * len(common) + 0.5), dpi=100)
        for i, sid in enumerate(common):
            sample = data[sid]
            with Image.open(sample.image) as im:
                image = np.asarray(im.convert("RGB"))
            with Image.open(sample.mask) as im:
                truth = np.asarray(im.convert("L").resize((image.shape[1], image.shape[0]), Image.NEAREST)) > 0
            panels = [("image", None), ("ground truth", truth)]
            for r, idx in with_masks:
                with Image.open(idx.loc[sid, "path"]) as im:
                    pred = np.asarray(im.convert("L").resize((image.shape[1], image.shape[0]), Image.NEAREST)) > 0
                panels.append((f"{r['model']}\nDice {100 * float(dice[r['model']].get(sid, np.nan)):.1f}", pred))
            for j, (label, mask) in enumerate(panels):
                ax = fig.add_subplot(len(common), n_cols, i * n_cols + j + 1)
                ax.imshow(image)
                if mask is not None:
                    ax.contour(mask.astype(float), levels=[0.5], colors=["#00e5ff" if j == 1 else "#ff1744"], linewidths=1.0)
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0 or j >= 2:
                    ax.set_title(label, fontsize=6.5)
                if j == 0:
                    ax.set_ylabel(sid, fontsize=6)
        fig.suptitle(f"{task} · {protocol}: ground truth (cyan) and predicted masks (red)", x=0.02, ha="left", fontsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
        return buf.getvalue()

    import matplotlib

    matplotlib.use("Agg", force=False)
    with matplotlib.rc_context({"font.family": "DejaVu Sans"}):
        return draw()


def segmentation_grids(records: Sequence[dict], n_images: int = N_IMAGES) -> tuple[list[tuple[str, bytes]], list[str]]:
    out, notes = [], []
    for protocol in SEG_PROTOCOLS:
        for task in sorted({r["task"] for r in records if r["protocol"] == protocol}):
            png = segmentation_grid(records, protocol, task, n_images)
            if png is None:
                notes.append(f"{task} · {protocol}: no saved masks (run with --set {protocol}.save_masks=true)")
                continue
            out.append((f"fig_qualitative_{task}_{protocol}.png", png))
    return out, notes


def caption_table(records: Sequence[dict], n_images: int = N_IMAGES) -> pd.DataFrame:
    """Long table: task, sample_id, source ('reference' or a model), caption — the same images for every model."""
    from dermbench.run.results import read_predictions

    rows = []
    for task in sorted({r["task"] for r in records if r["kind"] == "caption"}):
        runs = sorted((r for r in records if r["kind"] == "caption" and r["task"] == task), key=lambda r: r["model"])
        preds = {r["model"]: read_predictions(Path(r["_path"])).set_index("sample_id") for r in runs}
        common = sorted(set.intersection(*[set(p.index) for p in preds.values()]), key=str)[:n_images]
        for sid in common:
            first = next(iter(preds.values()))
            rows.append({"task": task, "sample_id": sid, "source": "reference", "caption": first.loc[sid, "reference"]})
            for model, p in preds.items():
                rows.append({"task": task, "sample_id": sid, "source": model, "caption": p.loc[sid, "generated"]})
    return pd.DataFrame(rows, columns=["task", "sample_id", "source", "caption"])


def captions_markdown(df: pd.DataFrame) -> str:
    if df.empty:
        return "## Captions\n\n(no caption results)\n"
    out = ["## Captions: reference and each model's (Supplementary Tables 3–4)", ""]
    for (task, sid), part in df.groupby(["task", "sample_id"], sort=False):
        out += [f"### {task} · {sid}", "", "| source | caption |", "|---|---|"]
        out += [f"| {r.source} | {str(r.caption).replace('|', '/')} |" for r in part.itertuples()]
        out.append("")
    return "\n".join(out)


__all__ = ["caption_table", "captions_markdown", "segmentation_grid", "segmentation_grids"]
