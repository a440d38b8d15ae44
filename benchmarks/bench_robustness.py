"""Cost of the robustness protocol: milliseconds per image of each corruption, and seconds per task.

Part 1 (always): each corruption at severities 1-5 on a 224x224 image (the size the protocol corrupts at),
ms per image, median over repeats.
Part 2 (``--task``): the ``robustness`` protocol end to end on DermSynth for one backbone and task, cold
(corrupted features computed) and warm (all from the cache), in a private cache folder.

    python benchmarks/bench_robustness.py [--repeats 5] [--task ph2-cls --model random-vit --synth-scale 0.25]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time


def corruption_costs(repeats: int) -> None:
    import numpy as np
    from PIL import Image

    from dermbench.data.corruptions import CORRUPTIONS, corrupt

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8))
    for name in CORRUPTIONS:  # first call imports medmnistc / OpenCV: not timed
        corrupt(image, name, 1, seed=0)
    print(f"{'corruption':<18} {'source':<10} ms/image (median over severities 1-5 x {repeats} seeds)")
    for name, c in CORRUPTIONS.items():
        times = []
        for severity in range(1, 6):
            for seed in range(repeats):
                t = time.perf_counter()
                corrupt(image, name, severity, seed=seed)
                times.append(time.perf_counter() - t)
        print(f"{name:<18} {c.source:<10} {1000 * float(np.median(times)):8.2f}")


def protocol_cost(model: str, task: str, scale: float, corruptions: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DERMBENCH_CACHE"] = tmp
        from dermbench.run.runner import RunSettings, run_benchmark

        settings = dict(models=[model], tasks=task, output=os.path.join(tmp, "results"), synth_scale=scale,
                        n_boot=200, progress=False)
        overrides = {"robustness": {"corruptions": corruptions}} if corruptions else {}
        run_benchmark(RunSettings(protocols=["linear"], **settings), log=lambda *_: None)  # clean features, DermSynth
        for label, overwrite in (("cold", False), ("warm", True)):
            t = time.perf_counter()
            [outcome] = run_benchmark(RunSettings(protocols=["robustness"], overwrite=overwrite, overrides=overrides,
                                                  **settings), log=lambda *_: None)
            print(f"robustness {model} {task} (DermSynth x{scale}) {label}: {time.perf_counter() - t:.1f} s "
                  f"[{outcome.status}]")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--task", default="", help="also time the protocol on this DermSynth task")
    ap.add_argument("--model", default="random-vit")
    ap.add_argument("--synth-scale", type=float, default=0.25)
    ap.add_argument("--corruptions", default="", help="default: DermSynth's default subset")
    args = ap.parse_args()
    corruption_costs(args.repeats)
    if args.task:
        protocol_cost(args.model, args.task, args.synth_scale, args.corruptions)


if __name__ == "__main__":
    main()
