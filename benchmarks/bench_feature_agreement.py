"""How much the opt-in extraction settings change the features: fp32 vs bf16 (or fp16) autocast,
and full JPEG decoding vs PIL's draft mode. Prints, per comparison, the cosine between each
image's two feature vectors (min / mean) and the largest absolute difference relative to the
features' scale, plus the decode rate with and without draft mode (one process).

    python benchmarks/bench_feature_agreement.py --images DIR [--model dermino-tiny] [--n 64] [--device cpu]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_extraction import find_images


def agreement(a: np.ndarray, b: np.ndarray) -> str:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    rel = np.abs(a - b).max() / np.abs(a).max()
    return f"cosine min {cos.min():.6f} mean {cos.mean():.6f}; max |diff| / max |feature| {rel:.2e}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--model", default="dermino-tiny")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--half", default="bf16", choices=("bf16", "fp16"))
    args = ap.parse_args()

    from dermbench.data.sample import Sample
    from dermbench.features import FeatureCache
    from dermbench.features.extract import draft_size_for, load_image
    from dermbench.models import registry

    paths = find_images(args.images, args.n)
    samples = [Sample(id=str(i), image=p) for i, p in enumerate(paths)]
    backbone = registry.build(args.model, weights=args.weights)
    print(f"model {args.model}, {args.n} images from {args.images}, device {args.device}")
    with tempfile.TemporaryDirectory() as tmp:
        def feats(kind, view, **kw):
            return FeatureCache(Path(tmp), workers=0, **kw).get(backbone, samples, kind=kind, view=view,
                                                               device=args.device)
        for kind, view in (("global", "eval"), ("tokens", "seg")):
            full = feats(kind, view, precision="fp32")
            print(f"{kind:6s} fp32 vs {args.half}    : {agreement(full, feats(kind, view, precision=args.half))}")
            print(f"{kind:6s} full vs draft  : {agreement(full, feats(kind, view, precision='fp32', draft=True))}")
    size = draft_size_for(backbone, ["eval"])
    for label, draft in (("full decode", None), (f"draft decode (>= {size} px)", size)):
        t0 = time.perf_counter()
        for p in paths:
            load_image(p, draft)
        print(f"{label:28s}: {len(paths) / (time.perf_counter() - t0):8.1f} img/s (one process)")


if __name__ == "__main__":
    main()
