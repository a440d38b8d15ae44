"""Feature-extraction overhead of the harness against a bare forward loop.

Prints, for the same images and backbone: the bare loop (PIL load + transform + forward),
the harness cold (FeatureCache: hashing + extraction + atomic per-image writes), the harness
warm (all cache hits), and the cold/bare ratio.

    python benchmarks/bench_features.py [--model random-vit] [--n 256] [--batch 32] [--device cpu]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="random-vit")
    ap.add_argument("--weights", default="random")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=160, help="side of the synthetic test images")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import torch
    from PIL import Image

    from dermbench.models import registry
    from dermbench.data.sample import Sample
    from dermbench.features import FeatureCache, load_image

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        samples = []
        for i in range(args.n):
            path = tmp / "img" / f"{i:05d}.png"
            path.parent.mkdir(exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8)).save(path)
            samples.append(Sample(id=str(i), image=path))
        backbone = registry.build(args.model, weights=args.weights).to(args.device)
        transform = backbone.transform()

        # bare loop: what a user would write by hand
        t0 = time.perf_counter()
        with torch.inference_mode():
            for start in range(0, args.n, args.batch):
                batch = torch.stack([transform(load_image(s.image)) for s in samples[start : start + args.batch]])
                backbone.forward_global(batch.to(args.device)).cpu()
        bare = time.perf_counter() - t0

        cache = FeatureCache(tmp / "cache")
        t0 = time.perf_counter()
        cache.get(backbone, samples, kind="global", batch_size=args.batch, device=args.device)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        cache.get(backbone, samples, kind="global", batch_size=args.batch, device=args.device)
        warm = time.perf_counter() - t0

    print(f"model {args.model}, {args.n} images of {args.size}px, batch {args.batch}, device {args.device}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"bare forward loop      : {bare:8.3f} s  ({args.n / bare:8.1f} img/s)")
    print(f"harness, cold cache    : {cold:8.3f} s  ({args.n / cold:8.1f} img/s)")
    print(f"harness, warm cache    : {warm:8.3f} s  ({args.n / warm:8.1f} img/s)")
    print(f"ratio cold / bare      : {cold / bare:8.3f}")
    print(f"ratio warm / bare      : {warm / bare:8.3f}")


if __name__ == "__main__":
    main()
