"""Speed of the shared bootstrap: 10 models x 20 tasks x 1,000 replicates.

Simulates the classification predictions of ``--models`` models on ``--tasks`` tasks with the
paper's test-set sizes (a few hundred to a few thousand images, 2 to 9 classes), draws the
stratified resample indices once per task (as the runner does) and evaluates every (model, task):
AUROC, F1, accuracy and balanced accuracy with their percentile CIs. Prints the total and the
time per (model, task).

    python benchmarks/bench_bootstrap.py [--models 10] [--tasks 20] [--n-boot 1000]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd


def fake_predictions(rng: np.random.Generator, n: int, n_classes: int) -> pd.DataFrame:
    y = rng.integers(0, n_classes, n)
    logits = rng.normal(size=(n, n_classes)) + 1.5 * np.eye(n_classes)[y]
    scores = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    frame = pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "label": y, "pred": scores.argmax(axis=1)})
    for c in range(n_classes):
        frame[f"score_{c}"] = scores[:, c]
    return frame


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=10)
    ap.add_argument("--tasks", type=int, default=20)
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args()

    from dermbench.stats.evaluation import evaluate
    from dermbench.stats.bootstrap import bootstrap_indices

    rng = np.random.default_rng(0)
    # test-set sizes and class counts in the range of the paper's 20 tasks
    sizes = rng.choice([85, 200, 328, 395, 400, 728, 1000, 2250, 3315], args.tasks)
    classes = rng.choice([2, 3, 4, 5, 6, 9], args.tasks)
    tasks = [(int(n), int(c)) for n, c in zip(sizes, classes)]
    preds = {(m, t): fake_predictions(rng, n, c) for m in range(args.models) for t, (n, c) in enumerate(tasks)}

    t0 = time.perf_counter()
    indices = {t: bootstrap_indices(n, args.n_boot, seed=t, strata=preds[(0, t)]["label"].to_numpy())
               for t, (n, _) in enumerate(tasks)}
    t_idx = time.perf_counter() - t0

    t0 = time.perf_counter()
    for (m, t), frame in preds.items():
        evaluate("classification", frame, indices[t])
    t_eval = time.perf_counter() - t0

    pairs = args.models * args.tasks
    print(f"tasks: {args.tasks} (test sizes {min(sizes)}-{max(sizes)}, mean {np.mean(sizes):.0f}); "
          f"models: {args.models}; replicates: {args.n_boot}")
    print(f"drawing the shared indices, once per task: {t_idx:.2f} s")
    print(f"evaluating {pairs} (model, task) pairs, 4 metrics each: {t_eval:.2f} s "
          f"({1000 * t_eval / pairs:.1f} ms per pair)")


if __name__ == "__main__":
    main()
