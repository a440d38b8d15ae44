"""Time of `dermbench weights check` on full-size release-format files, against a full strict load.

For each model: writes a zero-filled file in the release's own format (tests/models/release_files.py),
then prints its size, the time of check_weights (meta-device architecture, format by content,
converter, key/shape comparison, sha256) and the time of building the backbone from it (seeded
random init + strict load), which is what a run pays.

    PYTHONPATH=. python benchmarks/bench_weights_check.py [--models panderm,dinov2,medimageinsight]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="panderm,dinov2,medimageinsight")
    ap.add_argument("--no-build", action="store_true", help="skip the full build for comparison")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from dermbench.models import registry
    from dermbench.models.weights_check import architecture_module, check_weights
    from tests.models.release_files import write_release_file, zeros_like_meta

    print(f"{'model':<16} {'file MB':>8} {'check s':>8} {'build+load s':>13}")
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.models.split(","):
            module, _, _ = architecture_module(key)
            path = write_release_file(key, zeros_like_meta(module.state_dict()), Path(tmp) / key)
            t0 = time.perf_counter()
            report = check_weights(key, path)
            t_check = time.perf_counter() - t0
            assert report.ok, report.to_text()
            t_build = float("nan")
            if not args.no_build:
                t0 = time.perf_counter()
                registry.build(key, weights=str(path))
                t_build = time.perf_counter() - t0
            print(f"{key:<16} {path.stat().st_size / 1e6:>8.0f} {t_check:>8.2f} {t_build:>13.2f}")
            path.unlink()


if __name__ == "__main__":
    main()
