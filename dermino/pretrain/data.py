"""Pretraining data: unlabelled image folders + labelled sources, as one deterministic stream.

Labelled sources are dermbench evaluation tasks read through their adapters; only their TRAIN
split (the benchmark's split: the card's rule, seed 0) is used, and any image in the TEST split
of an evaluation task found under the data root is removed from the pretraining set (counted in
the report), so a model pretrained here is never evaluated on images it has seen.

The stream: global position p -> dataset index via a seeded permutation per pass over the data;
iteration ``it`` takes positions [it*B, (it+1)*B) of which rank r takes the r-th contiguous
share. Crops and masks are seeded by position, so the stream depends only on (seed, iteration).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from dermbench.data.sample import DatasetError
from dermino.pretrain.augment import MultiCropAugmentation
from dermino.pretrain.config import DataConfig, MaskConfig
from dermino.pretrain.masking import BlockMaskGenerator, crop_mask, derive_seed
from dermino.pretrain.prototypes import LabelSource, LabelSpace

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
SPLIT_SEED = 0  # the benchmark's split seed


@dataclass
class PretrainImage:
    path: Path
    labels: dict[str, int] = field(default_factory=dict)  # source -> class index (empty: unlabelled)


@dataclass
class PretrainData:
    images: list[PretrainImage]
    sources: list[LabelSource]
    report: dict


def list_images(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"--images {folder}: not a folder; give a folder of images (searched recursively)")
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not found:
        raise DatasetError(f"--images {folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) found below it")
    return found


def resolve_data_root(cfg: DataConfig) -> Optional[Path]:
    if cfg.synth:
        from dermbench.data.synth import ensure_dermsynth

        return ensure_dermsynth()
    return Path(cfg.data_root).expanduser() if cfg.data_root else None


def collect_data(cfg: DataConfig, work_dir: Path, log: Callable[[str], None] = print) -> PretrainData:
    """Read every source named in ``cfg``; the report records what was used and what was removed."""
    from dermbench.run.runner import TaskCache
    from dermbench.data.tasks import load_cards, select_tasks

    root = resolve_data_root(cfg)
    report: dict = {"data_root": str(root) if root else None, "split_seed": SPLIT_SEED, "labelled_tasks": {},
                    "unlabelled_tasks": {}, "image_folders": {}, "excluded_eval_test": {}, "eval_test_unavailable": {}}
    if root is None and (cfg.labelled_tasks or cfg.unlabelled_tasks) and not cfg.images:
        raise DatasetError("no pretraining data: give --data-root DIR (or --synth) for the task sources, "
                           "or --images DIR for unlabelled folders")
    images: dict[Path, PretrainImage] = {}
    sources: list[LabelSource] = []
    origin: dict[Path, set[str]] = {}

    def add(path: Path, where: str, source: Optional[str] = None, label: Optional[int] = None) -> None:
        key = Path(path).resolve()
        item = images.setdefault(key, PretrainImage(key))
        origin.setdefault(key, set()).add(where)
        if source is not None:
            item.labels[source] = int(label)  # type: ignore[arg-type]

    tasks = TaskCache(root, Path(work_dir), SPLIT_SEED, "default") if root else None
    if root is not None and cfg.labelled_tasks:
        for card in select_tasks(cfg.labelled_tasks):
            if not card.is_classification:
                raise DatasetError(f"--labelled-tasks: {card.name} is a {card.group} task without class labels; "
                                   "list it under --unlabelled-tasks to use its training images without labels")
            data, split = tasks.data(card), tasks.split(card)  # type: ignore[union-attr]
            train = split.select(data, "train")
            sources.append(LabelSource(card.name, list(data.classes)))
            for s in train:
                add(s.image, f"task:{card.name}", card.name, s.label)
            report["labelled_tasks"][card.name] = {"train_images": len(train), "classes": list(data.classes),
                                                   "split_sha256": split.sha256, "skipped_by_adapter": len(data.skipped)}
    if root is not None and cfg.unlabelled_tasks:
        for card in select_tasks(cfg.unlabelled_tasks):
            if card.split == "sites":
                continue  # a federated card only regroups other tasks' images
            data, split = tasks.data(card), tasks.split(card)  # type: ignore[union-attr]
            train = split.select(data, "train")
            for s in train:
                add(s.image, f"task:{card.name}")
            report["unlabelled_tasks"][card.name] = {"train_images": len(train), "split_sha256": split.sha256}
    for folder in cfg.images:
        found = list_images(Path(folder))
        for p in found:
            add(p, f"folder:{folder}")
        report["image_folders"][str(folder)] = len(found)

    train_paths: dict[str, set[Path]] = {}
    if root is not None:
        # Every evaluation task under the root: its test images leave the pretraining set, and the
        # tasks whose training images remain are recorded as seen (flagged in benchmark results).
        test_paths: dict[Path, str] = {}
        for card in load_cards().values():
            if card.split == "sites":
                continue
            try:
                data, split = tasks.data(card), tasks.split(card)  # type: ignore[union-attr]
            except DatasetError as exc:
                report["eval_test_unavailable"][card.name] = str(exc)
                continue
            for s in split.select(data, "test"):
                test_paths.setdefault(Path(s.image).resolve(), card.name)
            train_paths[card.name] = {Path(s.image).resolve() for s in split.select(data, "train")}
        if cfg.exclude_eval_test:
            for key in [k for k in images if k in test_paths]:
                for where in sorted(origin[key]):
                    bucket = report["excluded_eval_test"].setdefault(where, {})
                    bucket[test_paths[key]] = bucket.get(test_paths[key], 0) + 1
                del images[key]
        if report["eval_test_unavailable"]:
            log(f"note: {len(report['eval_test_unavailable'])} evaluation task(s) could not be read under {root} "
                f"(not downloaded?), so their test images could not be excluded: "
                f"{', '.join(sorted(report['eval_test_unavailable']))} (details in the data report)")
    seen = sorted(name for name, paths in train_paths.items() if any(p in images for p in paths))
    sites_cards = [c for c in load_cards().values() if c.split == "sites"] if root is not None else []
    seen += sorted(c.name for c in sites_cards if set(c.sites) & set(seen))
    report["seen_tasks"] = seen
    ordered = [images[k] for k in sorted(images, key=str)]
    if not ordered:
        raise DatasetError("no pretraining images left after reading the sources"
                           + (" and removing evaluation test images" if report["excluded_eval_test"] else ""))
    report["images"] = len(ordered)
    report["labelled_images"] = sum(1 for i in ordered if i.labels)
    report["unlabelled_images"] = len(ordered) - report["labelled_images"]
    return PretrainData(images=ordered, sources=sources, report=report)


def label_vectors(images: Sequence[PretrainImage], space: Optional[LabelSpace]) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """Per image: (positive prototypes, known prototypes); both empty for unlabelled images."""
    positives, known = [], []
    for img in images:
        if space is None or not img.labels:
            positives.append(())
            known.append(())
            continue
        pos = sorted({space.index[src][cls] for src, cls in img.labels.items()})
        kn = sorted({k for src in img.labels for k in space.known(src)})
        positives.append(tuple(pos))
        known.append(tuple(kn))
    return positives, known


class PretrainDataset(torch.utils.data.Dataset):
    """Items are keyed by (index, position, iteration, slot in the global batch)."""

    def __init__(self, paths: Sequence[Path], positives, known, n_prototypes: int, augment: MultiCropAugmentation,
                 masking: MaskConfig, grid: tuple[int, int], global_batch: int, seed: int):
        self.paths = list(paths)
        self.positives, self.known = positives, known
        self.n_prototypes = n_prototypes
        self.augment = augment
        self.masking = masking
        self.mask_generator = BlockMaskGenerator(grid, masking.max_block_fraction * grid[0] * grid[1],
                                                 masking.min_block_patches)
        self.global_batch = global_batch
        self.seed = seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: tuple[int, int, int, int]) -> dict[str, torch.Tensor]:
        index, position, iteration, slot = key
        path = self.paths[index]
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{path}: cannot be read as an image ({exc}); remove or replace the file") from exc
        global_crops, local_crops = self.augment(image, derive_seed("crops", self.seed, position))
        m = self.masking
        n_crops = global_crops.shape[0] * self.global_batch
        masks = np.stack([crop_mask(self.mask_generator, self.seed, iteration, g * self.global_batch + slot, n_crops,
                                    m.sample_probability, m.ratio_min, m.ratio_max)
                          for g in range(global_crops.shape[0])])
        target = torch.zeros(self.n_prototypes)
        known = torch.zeros(self.n_prototypes)
        target[list(self.positives[index])] = 1.0
        known[list(self.known[index])] = 1.0
        return {"global": global_crops, "local": local_crops, "masks": torch.from_numpy(masks), "target": target,
                "known": known, "index": torch.tensor(index)}


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Crop-major batches (all samples' crop 0, then crop 1, ...), as DINOv2 collates them."""
    def crop_major(key: str) -> torch.Tensor:
        x = torch.stack([it[key] for it in items])  # [B, N, ...]
        return x.transpose(0, 1).reshape(-1, *x.shape[2:])

    n_global = items[0]["global"].shape[0]
    return {
        "global": crop_major("global"),
        "local": crop_major("local"),
        "masks": crop_major("masks"),
        "target": torch.stack([it["target"] for it in items]).repeat(n_global, 1),
        "known": torch.stack([it["known"] for it in items]).repeat(n_global, 1),
        "index": torch.stack([it["index"] for it in items]),
    }


class StreamBatchSampler(torch.utils.data.Sampler):
    """This rank's keys for iterations [start, stop) of the global data stream."""

    def __init__(self, n_items: int, global_batch: int, rank: int, world: int, seed: int, start: int, stop: int):
        if global_batch % world:
            raise ValueError(f"the global batch {global_batch} is not divisible by the {world} processes")
        self.n, self.global_batch, self.local_batch = n_items, global_batch, global_batch // world
        self.rank, self.seed, self.start, self.stop = rank, seed, start, stop
        self._perms: dict[int, np.ndarray] = {}

    def index(self, position: int) -> int:
        epoch_pass = position // self.n
        if epoch_pass not in self._perms:
            if len(self._perms) > 2:
                self._perms.pop(min(self._perms))
            rng = np.random.default_rng(derive_seed("order", self.seed, epoch_pass))
            self._perms[epoch_pass] = rng.permutation(self.n)
        return int(self._perms[epoch_pass][position % self.n])

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)

    def __iter__(self):
        for it in range(self.start, self.stop):
            first = it * self.global_batch + self.rank * self.local_batch
            yield [(self.index(p), p, it, p - it * self.global_batch) for p in range(first, first + self.local_batch)]


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # each loader process decodes and augments on one core


def make_loader(dataset: PretrainDataset, sampler: StreamBatchSampler, num_workers: int, pin_memory: bool):
    # A private generator: DataLoader draws its worker base seed when iteration starts, and taking it
    # from the global RNG would shift the drop-path stream of a resumed run. (Crops and masks are
    # seeded by position, so this seed influences nothing.)
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=collate,
                                       pin_memory=pin_memory, worker_init_fn=_worker_init if num_workers else None,
                                       persistent_workers=False, generator=torch.Generator().manual_seed(0))
