"""The paper's summary tables from the results store, the registry metadata, the task cards and the data.

- :func:`backbones_table` (Supplementary Table 1): every model with results: architecture, parameters,
  pretraining data, type (ViT or CNN: a patch size or none), licence, weights sha256 — from the
  ``backbone`` block each result records (the registry's :class:`~dermbench.models.registry.BackboneMeta`
  plus the built model's parameter count), so the table describes what actually ran.
- :func:`datasets_table` (Extended Data Table 4): every task with results: dataset, group, modality,
  classes, images per class as read by the adapter, train/test sizes of the split used, split rule.
- :func:`demographics_table` (Extended Data Table 5): the Fitzpatrick skin-type and sex distribution of
  each task whose samples carry them.

Modality is not part of a task card; it comes from the card's ``options.modality`` when present,
else from :data:`MODALITY` (the official releases, per ``../shared/DATASETS.md``), else "unknown".
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Sequence

import pandas as pd

MODALITY = {"ddi": "clinical", "fitzpatrick17k": "clinical", "mednode": "clinical", "ph2": "dermoscopic",
            "acne04": "clinical (face)", "skincap": "clinical", "isic2016": "dermoscopic", "isic2017": "dermoscopic",
            "isic2018": "dermoscopic", "waterloo": "clinical"}
DERM7PT_IMAGE = {"derm": "dermoscopic", "clinic": "clinical"}  # derm7pt's card option ``image``
DEMOGRAPHICS = ("skin_type", "sex")


def _first_by(records: Sequence[dict], key) -> dict:
    out: dict = {}
    for r in records:
        out.setdefault(key(r), r)
    return out


def backbones_table(records: Sequence[dict]) -> pd.DataFrame:
    rows = []
    for model, r in sorted(_first_by(records, lambda r: r["model"]).items()):
        b = r.get("backbone", {})
        params = b.get("num_params") or b.get("num_params_meta")
        rows.append({"model": model, "architecture": b.get("architecture", ""),
                     "parameters_M": round(params / 1e6, 2) if params else None,
                     "pretraining_data": "; ".join(b.get("pretraining_datasets") or ()) or "none (random initialisation)",
                     "type": "CNN" if b.get("patch_size") is None else f"ViT (patch {b['patch_size']})",
                     "embed_dim": b.get("embed_dim"), "input_size": b.get("input_size"), "licence": b.get("licence", ""),
                     "weights_sha256": (b.get("weights_sha256") or "")[:12]})
    return pd.DataFrame(rows)


def _task_data(record: dict):
    from dermbench.data.locate import load_task
    from dermbench.data.tasks import get_card

    card = get_card(record["task"])
    return card, load_task(Path(record["data"]["root"]), card)


def datasets_table(results_dir: Path, records: Sequence[dict]) -> tuple[pd.DataFrame, dict]:
    """One row per task with results; also returns each task's loaded data (reused by the demographics)."""
    rows, loaded = [], {}
    for task, r in _first_by(records, lambda r: r["task"]).items():
        from dermbench.data.tasks import get_card

        card = get_card(task)
        if card.adapter == "federated":
            data = None
        else:
            card, data = _task_data(r)
            loaded[task] = data
        split_file = Path(results_dir) / r["split"]["path"]
        split = json.loads(split_file.read_text()) if split_file.is_file() else {}
        counts = Counter(data.classes[s.label] for s in data.samples) if data is not None and data.classes else None
        rows.append({"task": task, "dataset": r.get("task_title", task), "group": card.group,
                     "modality": _modality(card),
                     "classes": len(card.classes) if card.classes else "—",
                     "images": len(data.samples) if data is not None else r.get("data", {}).get("n_samples"),
                     "per_class": ", ".join(f"{c}: {counts.get(c, 0)}" for c in data.classes) if counts else "—",
                     "train": split.get("n_train", r.get("n_train")), "test": split.get("n_test", r.get("n_test")),
                     "split": r["split"]["rule"] + (f" ({card.train_fraction:g} train)" if r["split"]["rule"] in
                                                     ("stratified", "random") else ""),
                     "source": card.source})
    order = {t: i for i, t in enumerate(_paper_order())}
    df = pd.DataFrame(rows)
    if not df.empty:
        df = df.sort_values("task", key=lambda s: s.map(lambda t: order.get(t, 999))).reset_index(drop=True)
    return df, loaded


def _modality(card) -> str:
    if card.options.get("modality"):
        return str(card.options["modality"])
    if card.adapter == "derm7pt":
        return DERM7PT_IMAGE.get(str(card.options.get("image", "derm")), "unknown")
    return MODALITY.get(card.adapter, "not recorded (add options.modality to the task card)")


def _paper_order() -> list[str]:
    from dermbench.data.tasks import PAPER_ORDER

    return PAPER_ORDER


def demographics_table(loaded: dict) -> pd.DataFrame:
    """Long format: task, attribute, value, n, share — for every task whose samples record the attribute."""
    rows = []
    for task, data in loaded.items():
        for attribute in DEMOGRAPHICS:
            values = [s.groups.get(attribute) for s in data.samples if attribute in s.groups]
            if not values:
                continue
            counts = Counter(values)
            key = (lambda v: (0, int(v)) if v.isdigit() else (1, v)) if attribute == "skin_type" else (lambda v: (0, v))
            for value in sorted(counts, key=key):
                rows.append({"task": task, "attribute": attribute, "value": value, "n": counts[value],
                             "share": counts[value] / len(data.samples)})
    return pd.DataFrame(rows, columns=["task", "attribute", "value", "n", "share"])


def demographics_wide(long: pd.DataFrame, attribute: str) -> pd.DataFrame:
    part = long[long["attribute"] == attribute]
    if part.empty:
        return part
    wide = part.pivot(index="task", columns="value", values="n").fillna(0).astype(int)
    wide.columns = [f"{attribute.replace('_', ' ')} {c}" for c in wide.columns]
    return wide.reset_index()


def to_markdown(df: pd.DataFrame, title: str) -> str:
    if df.empty:
        return f"## {title}\n\n(no data)\n"
    header = "| " + " | ".join(map(str, df.columns)) + " |"
    lines = [f"## {title}", "", header, "|" + "---|" * len(df.columns)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join("—" if v is None or (isinstance(v, float) and v != v) else str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def build(results_dir: Path, records: Sequence[dict]) -> dict[str, pd.DataFrame]:
    """Every summary table: backbones, datasets, demographics (long), skin types and sexes (wide)."""
    datasets, loaded = datasets_table(results_dir, records)
    demo = demographics_table(loaded)
    return {"backbones": backbones_table(records), "datasets": datasets, "demographics": demo,
            "skin_types": demographics_wide(demo, "skin_type"), "sexes": demographics_wide(demo, "sex")}


TITLES = {"backbones": "Backbones (Supplementary Table 1)", "datasets": "Datasets (Extended Data Table 4)",
          "skin_types": "Fitzpatrick skin types per task (Extended Data Table 5)", "sexes": "Sex per task (Extended Data Table 5)"}


__all__ = ["MODALITY", "TITLES", "backbones_table", "build", "datasets_table", "demographics_table", "to_markdown"]
