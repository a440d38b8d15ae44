"""Feature extraction against its two limits: the CPU's decode rate and the device's forward rate.

On the same images, backbone, batch size and worker count it prints img/s for:
  (a) decode + transform only, in ``--workers`` processes          -- the CPU limit
  (b) forward only, on tensors decoded beforehand                  -- the device limit
  (c) a well-written reference: torch DataLoader with the same workers (pinned memory and
      non-blocking copies on CUDA) feeding the forward, no cache
  (d) dermbench cold: FeatureCache on an empty cache folder (hashing, decode, forward, shard writes)
  (e) dermbench warm: the same call again (every feature read from the cache)
and the ratios d / min(a, b) (how close extraction comes to the hardware), d / h and d / c, where
h = ab / (a + b) is the harmonic bound: when decode and forward share the same cores (a CPU run),
each image costs 1/a + 1/b core-seconds-worth of time, so no pipeline beats h; min(a, b) is only
reachable when the forward runs on a separate device (a GPU) while the CPU decodes.

Several feature requests (``--requests global:eval,tokens:seg``) are one decode feeding every
transform and forward in (a)-(d), as the harness does for a task whose protocols need them.
Works with the committed FeatureCache of earlier versions too (``get`` per request, its
``num_workers`` as the runner passed it: 0), which is how the "before" numbers were taken.

    python benchmarks/bench_extraction.py --images /tmp/synth1024 [--model random-vit] [--n 128]
        [--workers 2] [--batch 32] [--device cpu] [--precision fp32] [--requests global:eval]

Images: every .jpg/.jpeg/.png under --images whose name does not end in a mask suffix, sorted; make
ISIC-like ones with ``dermbench data synth --out DIR --image-size 1024x768 --dataset isic2018``.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

import numpy as np

MASK_HINTS = ("segmentation", "superpixels", "contour", "mask")


def find_images(root: Path, n: int) -> list[Path]:
    paths = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")
                   and not any(h in p.stem.lower() for h in MASK_HINTS))
    if len(paths) < n:
        raise SystemExit(f"error: --images {root}: found {len(paths)} images, --n asks for {n}; "
                         f"write more with `dermbench data synth --scale` or lower --n")
    return paths[:n]


def parse_requests(text: str) -> list[tuple[str, str]]:
    out = []
    for item in text.split(","):
        kind, _, view = item.strip().partition(":")
        out.append((kind, view or "eval"))
    return out


def transforms_for(backbone, requests):
    from dermbench.features import seg_input_size

    views = sorted({v for _, v in requests})
    return {v: (backbone.transform(resize_mode="squash", input_size=seg_input_size(backbone)) if v == "seg"
                else backbone.transform()) for v in views}


class DecodeAll:
    """One decode of each image, every view's transform applied to it (what (a) and (c) load)."""

    def __init__(self, paths, transforms, draft_size=None):
        self.paths, self.transforms, self.draft_size = list(paths), transforms, draft_size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from dermbench.features import load_image

        image = load_image(self.paths[i], self.draft_size) if self.draft_size else load_image(self.paths[i])
        return {v: t(image) for v, t in self.transforms.items()}


def _decode_only(args):
    dataset, i = args
    return tuple(dataset[i][v].shape for v in dataset.transforms)


def forward(backbone, kind: str, batch):
    if kind == "global":
        return backbone.forward_global(batch)
    if kind == "tokens":
        return backbone.forward_tokens(batch)
    return backbone.forward_levels(batch)


def autocast_for(device: str, precision: str):
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(torch.device(device).type, dtype=dtype)


def sync(device: str) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--model", default="random-vit")
    ap.add_argument("--weights", default="random")
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 16))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    ap.add_argument("--requests", default="global:eval", help="kind:view,... e.g. global:eval,tokens:seg")
    ap.add_argument("--draft", action="store_true", help="PIL draft-mode JPEG decoding in (a)-(e) (FeatureCache draft=True)")
    ap.add_argument("--skip", default="", help="letters of measurements to skip, e.g. 'c'")
    args = ap.parse_args()

    import torch

    from dermbench.data.sample import Sample
    from dermbench.features import FeatureCache
    from dermbench.models import registry

    paths = find_images(args.images, args.n)
    requests = parse_requests(args.requests)
    backbone = registry.build(args.model, weights=args.weights).to(args.device)
    transforms = transforms_for(backbone, requests)
    draft_size = None
    if args.draft:
        from dermbench.features.extract import draft_size_for

        draft_size = draft_size_for(backbone, list(transforms))
    dataset = DecodeAll(paths, transforms, draft_size)
    rates: dict[str, float] = {}
    pin = str(args.device).startswith("cuda")

    def timed(label, fn):
        sync(args.device)
        t0 = time.perf_counter()
        fn()
        sync(args.device)
        rates[label] = args.n / (time.perf_counter() - t0)

    # (a) decode + transform only, in the same number of processes the harness uses
    def decode_only():
        if args.workers <= 0:
            for i in range(len(dataset)):
                _decode_only((dataset, i))
            return
        import multiprocessing as mp

        with mp.get_context("fork").Pool(args.workers) as pool:
            list(pool.imap(_decode_only, [(dataset, i) for i in range(len(dataset))], chunksize=4))

    timed("a", decode_only)

    # (b) forward only: tensors decoded beforehand, on the device already
    preloaded = {v: torch.stack([dataset[i][v] for i in range(len(dataset))]).to(args.device) for v in transforms}

    def forward_only():
        with torch.inference_mode(), autocast_for(args.device, args.precision):
            for start in range(0, args.n, args.batch):
                for kind, view in requests:
                    out = forward(backbone, kind, preloaded[view][start : start + args.batch])
                    (out[0] if isinstance(out, list) else out).float().cpu()

    with torch.inference_mode(), autocast_for(args.device, args.precision):  # warm-up: kernels, allocator
        forward(backbone, requests[0][0], preloaded[requests[0][1]][: args.batch])
    timed("b", forward_only)
    del preloaded

    # (c) reference loop: DataLoader, same workers, pinned memory, non-blocking copies, no cache
    def reference():
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch, num_workers=args.workers,
                                             pin_memory=pin, persistent_workers=False)
        with torch.inference_mode(), autocast_for(args.device, args.precision):
            for batch in loader:
                for kind, view in requests:
                    out = forward(backbone, kind, batch[view].to(args.device, non_blocking=pin))
                    (out[0] if isinstance(out, list) else out).float().cpu()

    if "c" not in args.skip:
        timed("c", reference)

    samples = [Sample(id=str(i), image=p) for i, p in enumerate(paths)]
    new_api = hasattr(FeatureCache, "extract")
    with tempfile.TemporaryDirectory() as tmp:
        if new_api:
            cache = FeatureCache(Path(tmp), workers=args.workers, precision=args.precision, draft=args.draft)

            def harness():
                cache.extract(backbone, samples, requests=requests, batch_size=args.batch, device=args.device)
        else:  # the committed code: one pass per request, the loader's num_workers as the runner passed it (0)
            cache = FeatureCache(Path(tmp))

            def harness():
                for kind, view in requests:
                    cache.get(backbone, samples, kind=kind, view=view, batch_size=args.batch, device=args.device)

        timed("d", harness)
        timed("e", harness)

    print(f"model {args.model} ({args.weights}), {args.n} images {describe_images(paths)}, requests {args.requests}, "
          f"batch {args.batch}, workers {args.workers}, device {args.device}, precision {args.precision}, "
          f"torch threads {torch.get_num_threads()}, cores {os.cpu_count()}, draft {args.draft}, "
          f"load average {os.getloadavg()[0]:.1f}, "
          f"FeatureCache API {'extract (sharded)' if new_api else 'get (per-image files)'}")
    names = {"a": "decode + transform only", "b": "forward only (preloaded)", "c": "reference DataLoader loop",
             "d": "dermbench cold", "e": "dermbench warm"}
    for k, name in names.items():
        if k in rates:
            print(f"({k}) {name:28s}: {rates[k]:9.1f} img/s")
    limit = min(rates["a"], rates["b"])
    # Decode and forward on the same cores take turns: an image costs 1/a + 1/b seconds at best.
    harmonic = rates["a"] * rates["b"] / (rates["a"] + rates["b"])
    print(f"h = ab / (a + b)                : {harmonic:9.1f} img/s  (the bound when decode and forward share the cores)")
    print(f"d / min(a, b)                   : {rates['d'] / limit:9.3f}  (reachable only with a separate forward device)")
    print(f"d / h                           : {rates['d'] / harmonic:9.3f}  (the CPU-only bound: decode and forward take turns)")
    if "c" in rates:
        print(f"d / c                           : {rates['d'] / rates['c']:9.3f}")


def describe_images(paths) -> str:
    from PIL import Image

    with Image.open(paths[0]) as im:
        return f"{im.width}x{im.height} {im.format}"


if __name__ == "__main__":
    main()
