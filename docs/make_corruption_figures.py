"""Draw docs/img/corruptions/<name>.png: one DermSynth image under each corruption at severities 0 (clean) to 5.

Run from the repository root (it builds DermSynth at scale 0.25 in the cache if needed):

    python docs/make_corruption_figures.py

The image is taken as the model sees it (224x224 after resize and centre crop, as the robustness protocol
corrupts it), seed 0. The PNGs are small (a 6-panel strip at 96 px per panel) and committed.
"""
from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "img" / "corruptions"
PANEL = 96


def dermsynth_image() -> Image.Image:
    from dermbench.data.locate import load_task
    from dermbench.data.synth import ensure_dermsynth
    from dermbench.data.tasks import get_card

    data = load_task(ensure_dermsynth(scale=0.25), get_card("ph2-cls"))
    sample = next(s for s in data.samples if s.label == 1)  # a melanoma
    with Image.open(sample.image) as im:
        im = im.convert("RGB")
    side = min(im.size)
    left, top = (im.width - side) // 2, (im.height - side) // 2
    return im.crop((left, top, left + side, top + side)).resize((224, 224), Image.BICUBIC)


def strip(image: Image.Image, name: str) -> Image.Image:
    from dermbench.data.corruptions import corrupt

    canvas = Image.new("RGB", (6 * PANEL, PANEL + 14), "white")
    draw = ImageDraw.Draw(canvas)
    for severity in range(6):
        panel = corrupt(image, name, severity, seed=0).resize((PANEL, PANEL), Image.BILINEAR)
        canvas.paste(panel, (severity * PANEL, 14))
        draw.text((severity * PANEL + 3, 1), "clean" if severity == 0 else f"severity {severity}", fill="black")
    return canvas


def main() -> int:
    from dermbench.data.corruptions import names

    OUT.mkdir(parents=True, exist_ok=True)
    image = dermsynth_image()
    for name in names():
        buf = io.BytesIO()
        strip(image, name).quantize(colors=128, method=Image.MEDIANCUT).save(buf, format="PNG", optimize=True)
        (OUT / f"{name}.png").write_bytes(buf.getvalue())
        print(f"{OUT / name}.png {len(buf.getvalue()) / 1024:.1f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
