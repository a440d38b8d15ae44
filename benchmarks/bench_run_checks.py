"""Cost of the checks `dermbench run` makes before and during the work (issue #16).

1. The checks before any work (:func:`dermbench.run.runner.preflight`): weights once per model, then
   every task loaded, split and its images hashed (through the on-disk image-hash memo) for the
   untagged-row and train/test-duplicate counts. Timed twice on DermSynth (or ``--data-root``): the
   first pass with an empty hash memo (every image read), the second with the memo warm (what every
   later run pays).
2. The non-finite check of the extraction pass, per batch, beside the host copy and cast every batch
   pays anyway: global features [B, 768] and a ViT-B token map [B, 768, 14, 14].

    python benchmarks/bench_run_checks.py [--data-root DIR] [--batch 32] [--device cpu]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def time_preflight(data_root: Path, results: Path) -> None:
    from dermbench.run.plan import plan
    from dermbench.run.runner import RunSettings, preflight

    settings = RunSettings(models=["random-vit", "dermino-tiny"], tasks="all", data_root=data_root, output=results)
    jobs = plan(settings)
    for label in ("cold hash memo", "warm hash memo"):
        started = time.perf_counter()
        checked = preflight(settings, jobs, log=lambda line: None)
        seconds = time.perf_counter() - started
        n_tasks = len({j.task for j in jobs})
        print(f"preflight ({label}): {seconds:.2f} s for {len(jobs)} jobs over {n_tasks} task(s) "
              f"({len(checked.jobs)} kept)")


def time_finite_check(batch: int, device: str, repeats: int = 50) -> None:
    import torch

    from dermbench.features.extract import FLOAT16_MAX, _check_finite

    class _Named:
        name = "bench"

    for kind, shape, limit in (("global", (batch, 768), None), ("tokens", (batch, 768, 14, 14), FLOAT16_MAX)):
        out = torch.randn(*shape, device=device)
        dtype = "float32" if limit is None else "float16"
        for fn, what in ((lambda: _check_finite(_Named, kind, [out], None, limit), "non-finite check"),
                         (lambda: out.float().cpu().numpy().astype(dtype), "host copy + cast")):
            fn()
            started = time.perf_counter()
            for _ in range(repeats):
                fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            print(f"{kind} {list(shape)} on {device}: {what} {1e3 * (time.perf_counter() - started) / repeats:.2f} ms/batch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=None, help="default: DermSynth (generated if needed)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-run-checks-") as tmp:
        if args.data_root is None:
            from dermbench.data.synth import ensure_dermsynth

            args.data_root = ensure_dermsynth()
        os.environ["DERMBENCH_CACHE"] = str(Path(tmp) / "cache")  # an empty image-hash memo for the cold pass
        time_preflight(Path(args.data_root), Path(tmp) / "results")
    time_finite_check(args.batch, args.device)


if __name__ == "__main__":
    main()
