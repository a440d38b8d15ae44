"""The estimated skin tone (ITA, :mod:`dermbench.stats.skin_tone`) of every test image of the stored results.

``estimate_store`` writes ``<results>/_skin_tone/<task>.csv`` (sample_id, ita_estimated_degrees,
group_ita_estimated, region, n_pixels) and ``<task>.json`` (the rule, the data root, the file's sha256)
atomically, for the tasks of the store whose samples carry no dermatologist-assigned ``skin_type`` (or every
task with ``include_labelled``). The operating-point report merges the column by sample id; the stored
predictions are never changed, so the estimate cannot be mistaken for, or mixed into, ``group_skin_type``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional, Sequence

import pandas as pd

from dermbench.io import atomic_write_bytes, atomic_write_json, sha256_bytes, sha256_file

FOLDER = "_skin_tone"


def store_paths(results_dir: Path, task: str) -> tuple[Path, Path]:
    folder = Path(results_dir) / FOLDER
    return folder / f"{task}.csv", folder / f"{task}.json"


def read_skin_tone(results_dir: Path, task: str) -> Optional[pd.DataFrame]:
    """The stored estimate of a task (checked against its recorded sha256), or None."""
    csv_path, json_path = store_paths(results_dir, task)
    if not json_path.exists():
        return None
    meta = json.loads(json_path.read_text())
    if not csv_path.exists() or sha256_file(csv_path) != meta["sha256"]:
        raise ValueError(f"{csv_path} is missing or does not match {json_path}; rerun `dermbench skin-tone --overwrite`")
    return pd.read_csv(csv_path, keep_default_na=False, na_values=[""], dtype={"sample_id": str})


def estimate_store(results_dir: Path, tasks: Optional[Sequence[str]] = None, include_labelled: bool = False,
                   overwrite: bool = False, log: Callable[[str], None] = print) -> list[Path]:
    """Estimate ITA for the test images of each task under ``results_dir``; returns the CSVs written."""
    from dermbench.data.locate import load_task
    from dermbench.data.tasks import get_card
    from dermbench.run.results import iter_results
    from dermbench.stats import skin_tone as ST

    results_dir = Path(results_dir)
    records: dict[str, dict] = {}
    for r in iter_results(results_dir):
        if r.get("kind") == "classification" and (tasks is None or r["task"] in tasks):
            records.setdefault(r["task"], r)
    if tasks is not None:
        missing = sorted(set(tasks) - set(records))
        if missing:
            raise KeyError(f"no classification results for task(s) {', '.join(missing)} under {results_dir}")
    if not records:
        raise FileNotFoundError(f"no classification results under {results_dir}: skin tone is estimated for the test "
                                "images of stored results; run `dermbench run ...` first or pass --results")
    written = []
    for task, record in sorted(records.items()):
        csv_path, json_path = store_paths(results_dir, task)
        if json_path.exists() and not overwrite:
            log(f"{task}: estimate exists ({csv_path}), skipped (use --overwrite)")
            continue
        card = get_card(task)
        data = load_task(Path(record["data"]["root"]), card)
        if not include_labelled and any(s.groups.get("skin_type", "unknown") not in ("unknown", "", "-1") for s in data.samples):
            log(f"{task}: has dermatologist-assigned skin types, skipped (use --include-labelled to estimate anyway)")
            continue
        split = json.loads((results_dir / record["split"]["path"]).read_text())
        by_id = data.by_id()
        test_ids = split["test"]
        gone = [i for i in test_ids if i not in by_id]
        if gone:  # never estimate on part of the test set: the data changed since the run
            raise ValueError(f"{task}: {len(gone)} of the {len(test_ids)} test images of the stored split "
                             f"({record['split']['path']}) are not in the data at {record['data']['root']} "
                             f"(e.g. {gone[0]!r}); the data changed since the run: rerun `dermbench run` on this data")
        samples = [by_id[i] for i in test_ids]
        table = ST.estimate_samples(samples)
        data_bytes = table.to_csv(index=False, float_format="%.4f", lineterminator="\n").encode("utf-8")
        atomic_write_bytes(csv_path, data_bytes)
        atomic_write_json(json_path, {"task": task, "attribute": ST.ATTRIBUTE, "estimated": True,
                                      "rule": "ITA = arctan((L*-50)/b*), median over skin pixels; see dermbench.stats.skin_tone",
                                      "regions": sorted(set(table["region"])), "n_images": int(len(table)),
                                      "data_root": record["data"]["root"], "split_sha256": record["split_sha256"],
                                      "sha256": sha256_bytes(data_bytes)})
        counts = table[ST.COLUMN].value_counts().to_dict()
        log(f"{task}: ITA estimated for {len(table)} test images: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        written.append(csv_path)
    return written
