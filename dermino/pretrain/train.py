"""The DermINO hybrid pretraining loop (single process, DDP or FSDP2 under torchrun).

One iteration: schedules -> teacher forward (no grad) -> Sinkhorn-Knopp targets -> student
forward (through DDP/FSDP) -> DINO + iBOT + KoLeo + prototype losses -> backward -> per-module
gradient clipping -> AdamW -> EMA teacher update. Every process holds the same teacher (EMA of
identical student weights); rank 0 writes checkpoints, logs and exports.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.distributed as dist

from dermbench.models.registry import IMAGENET_MEAN, IMAGENET_STD
from dermbench.progress import beside_bars, progress_bar
from dermino.pretrain import checkpoint as ckpt_io
from dermino.pretrain.augment import MultiCropAugmentation
from dermino.pretrain.config import LOSSES, PretrainConfig, config_from_dict
from dermino.pretrain.data import (PretrainDataset, StreamBatchSampler, collect_data, label_vectors, make_loader)
from dermino.pretrain.heads import project_text_embeddings
from dermino.pretrain.losses import dino_loss, ibot_loss, koleo_loss, prototype_loss, sinkhorn_knopp
from dermino.pretrain.masking import derive_seed
from dermino.pretrain.model import SSLModel, load_init_weights, submodules, timm_kwargs
from dermino.pretrain.schedules import apply_schedules, build_schedules, param_groups, peak_lr

# Settings that may change when a run is resumed (they do not change what is computed).
RUNTIME_KEYS = (("run", "stop_at"), ("run", "checkpoint_every"), ("run", "log_every"), ("run", "device"),
                ("data", "num_workers"))
RELEASE_NAME = "dermino_release.pth"


@dataclass
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    owns_group: bool

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_choice: str) -> DistInfo:
    """torchrun's environment -> a process group (nccl on GPU, gloo on CPU); a plain process gets
    a one-member group, so the same collectives run either way."""
    if device_choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda, but torch sees no CUDA device")
    use_cuda = device_choice == "cuda" or (device_choice == "auto" and torch.cuda.is_available())
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    local_rank = int(os.environ.get("LOCAL_RANK", 0)) if launched else 0
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        if launched:
            dist.init_process_group(backend, device_id=device if use_cuda else None)
        else:
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        owns = True
    return DistInfo(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank, device=device,
                    owns_group=owns)


def _seed_process(seed: int, rank: int) -> None:
    """Per-process RNGs (drop-path draws differ across ranks, as in DINOv2)."""
    s = derive_seed("process", seed, rank)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)


def _autocast(cfg: PretrainConfig, device: torch.device):
    bf16 = cfg.run.precision == "bf16" or (cfg.run.precision == "auto" and device.type == "cuda")
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else nullcontext, \
        ("bf16 autocast" if bf16 else "fp32")


def _shard(model: SSLModel, world: int, device: torch.device, root: bool) -> None:
    """FSDP2: each transformer block, the rest of the backbone and each head are sharding units."""
    import warnings

    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    # The backbone returns CLS/patch views of one token tensor; nothing modifies them in place,
    # which is the case FSDP2 warns about.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    mesh = init_device_mesh(device.type, (world,))
    for block in model.backbone.vit.blocks:
        fully_shard(block, mesh=mesh)
    for name, module in submodules(model).items():
        if name != "prototypes":
            fully_shard(module, mesh=mesh)
    if root:
        fully_shard(model, mesh=mesh)


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def _full_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Unsharded CPU state dict (a collective under FSDP: every rank calls it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _check_ranks_agree(teacher: torch.nn.Module, info: DistInfo, parallel: str) -> None:
    """Under DDP every rank holds the whole EMA teacher, and it must be the same everywhere; a cheap
    fingerprint proves it at each checkpoint (under FSDP each rank holds a different shard)."""
    if info.world == 1 or parallel != "ddp":
        return
    with torch.no_grad():
        local = torch.stack([p.double().sum() for p in teacher.parameters()]).sum().reshape(1)
    gathered = [torch.zeros_like(local) for _ in range(info.world)]
    dist.all_gather(gathered, local)
    values = [float(g) for g in gathered]
    if max(values) != min(values):
        raise RuntimeError(f"teacher weights differ across ranks (sums {values}): data-parallel sync is broken")


def train(cfg: PretrainConfig, out_dir: Path, resume: Optional[str] = None,
          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) pretraining; returns a summary (also written to ``out_dir/summary.json``)."""
    out_dir = Path(out_dir)
    resume_path = ckpt_io.resolve_resume(resume, out_dir)
    state = ckpt_io.load_checkpoint(resume_path) if resume_path else None
    if state is not None:
        resumed = config_from_dict(state["config"])
        for section, key in RUNTIME_KEYS:
            setattr(getattr(resumed, section), key, getattr(getattr(cfg, section), key))
        cfg = resumed
    cfg.validate()
    info = init_distributed(cfg.run.device)
    say = log if info.main else (lambda _msg: None)
    try:
        return _train(cfg, out_dir, state, resume_path, info, say)
    finally:
        if info.owns_group:
            dist.destroy_process_group()


def _train(cfg: PretrainConfig, out_dir: Path, state: Optional[dict], resume_path: Optional[Path], info: DistInfo,
           say: Callable[[str], None]) -> dict[str, Any]:
    from dermbench.models.backbone import seeded
    from dermbench.io import atomic_write_json
    from dermbench.run.results import git_state, package_versions

    from dermino.pretrain.prototypes import build_label_space, read_synonyms, write_review_files

    device = info.device
    if info.main:
        out_dir.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    _seed_process(cfg.run.seed, info.rank)
    autocast, precision = _autocast(cfg, device)

    # --- data and label space ------------------------------------------------------------------
    data = collect_data(cfg.data, out_dir / "splits", say)
    space = None
    if cfg.loss.proto and data.sources:
        p = cfg.prototypes
        space = build_label_space(data.sources, p.text_encoder, p.merge_threshold,
                                  read_synonyms(p.synonyms) if p.synonyms else None, p.expand_abbreviations)
        if info.main:
            write_review_files(space, out_dir)
    elif cfg.loss.proto:
        say("note: no labelled source, so the supervised prototype loss is off for this run")
    positives, known = label_vectors(data.images, space)
    image_list_hash = hashlib.sha256("\n".join(str(i.path) for i in data.images).encode()).hexdigest()
    if state is not None:
        if state["data"]["image_list_hash"] != image_list_hash:
            raise RuntimeError(f"{resume_path}: the pretraining images differ from those of the checkpointed run "
                               "(the data stream would not continue where it stopped); resume with the same data")
        if state["prototypes"]["names"] != (space.names if space else []):
            raise RuntimeError(f"{resume_path}: the merged label space differs from the checkpointed run's")

    # --- models ------------------------------------------------------------------------------
    init_record: dict[str, Any] = {"init": cfg.model.init}
    proto_init, projection = None, None
    if space is not None:
        proto_init, projection = project_text_embeddings(torch.from_numpy(space.embeddings), cfg.model.embed_dim,
                                                         seed=cfg.run.seed)
    with seeded(cfg.run.seed):
        student = SSLModel(cfg, proto_init)
        teacher = SSLModel(cfg, None)
    if cfg.model.init == "dinov2" and state is None:
        init_record.update(load_init_weights(student, cfg.model.init_weights))
    teacher.load_state_dict({k: v for k, v in student.state_dict().items() if not k.startswith("prototypes.")})
    teacher.requires_grad_(False)
    student.to(device).train()
    teacher.to(device).eval()  # DINOv2: no drop-path in the teacher

    if cfg.run.parallel == "fsdp":
        _shard(student, info.world, device, root=True)
        _shard(teacher, info.world, device, root=False)
        student_module, model = student, student
    else:
        student_module = student
        model = student
        if info.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            model = DistributedDataParallel(student, device_ids=[device.index] if device.type == "cuda" else None)
    student_params = dict(student_module.named_parameters())
    ema_pairs = [(p, student_params[n]) for n, p in teacher.named_parameters()]
    groups = param_groups(student_module, cfg)
    optimizer = torch.optim.AdamW(groups, lr=0.0, betas=(cfg.optim.beta1, cfg.optim.beta2), foreach=True)
    schedules = build_schedules(cfg)

    start = 0
    if state is not None:
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                             set_optimizer_state_dict)

        opts = StateDictOptions(full_state_dict=True)
        set_model_state_dict(student_module, state["student"], options=opts)
        set_model_state_dict(teacher, state["teacher"], options=opts)
        set_optimizer_state_dict(student_module, optimizer, state["optimizer"], options=opts)
        start = int(state["iteration"])
        rngs = state["rng"]
        if len(rngs) == info.world:
            ckpt_io.restore_rng(rngs[info.rank])
        else:
            say(f"note: the checkpoint was written by {len(rngs)} processes and this run has {info.world}: "
                "per-process RNG states (drop-path draws) restart from the seed; data order is unaffected")
        say(f"resumed from {resume_path} at iteration {start}")

    total = cfg.total_iterations
    stop = min(cfg.run.stop_at, total) if cfg.run.stop_at else total
    n_global, n_local = 2, cfg.crops.local_number
    grid = (cfg.crops.global_size // cfg.model.patch_size,) * 2
    dataset = PretrainDataset([i.path for i in data.images], positives, known, space.size if space else 0,
                              MultiCropAugmentation(cfg.crops.global_size, cfg.crops.global_scale, n_local,
                                                    cfg.crops.local_size, cfg.crops.local_scale, IMAGENET_MEAN,
                                                    IMAGENET_STD),
                              cfg.masking, grid, cfg.schedule.batch_size, cfg.run.seed)
    sampler = StreamBatchSampler(len(dataset), cfg.schedule.batch_size, info.rank, info.world, cfg.run.seed, start, stop)
    loader = make_loader(dataset, sampler, cfg.data.num_workers, pin_memory=device.type == "cuda")
    active = [k for k in LOSSES if getattr(cfg.loss, k) and (k != "proto" or space is not None)]
    weights = {k: getattr(cfg.loss, f"{k}_weight") for k in LOSSES}

    record = {
        "preset": cfg.preset, "config": cfg.to_dict(), "world_size": info.world, "parallel": cfg.run.parallel,
        "precision": precision, "device": str(device), "peak_lr": peak_lr(cfg), "losses": active,
        "data": data.report, "init": init_record, **git_state(), "packages": package_versions(),
        "prototypes": {"count": space.size if space else 0, "learnable": cfg.prototypes.learnable,
                       "initialisation": projection, "text_encoder": vars(space.encoder) if space else None,
                       "merge_threshold": cfg.prototypes.merge_threshold},
    }
    if info.main:
        atomic_write_json(out_dir / "run.json", record)
        say(f"pretraining {cfg.preset}: {len(dataset)} images ({data.report['labelled_images']} labelled, "
            f"{space.size if space else 0} prototypes), global batch {cfg.schedule.batch_size} on {info.world} "
            f"process(es) [{cfg.run.parallel}, {precision}], iterations {start} -> {stop} of {total}; "
            f"losses: {', '.join(active)}")

    def save(iteration: int) -> tuple[Path, dict[str, torch.Tensor]]:
        student_state, teacher_state = _full_state(student_module), _full_state(teacher)
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        optim_state = get_optimizer_state_dict(student_module, optimizer,
                                               options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        _check_ranks_agree(teacher, info, cfg.run.parallel)
        rngs: list = [None] * info.world
        dist.all_gather_object(rngs, ckpt_io.capture_rng())
        path = out_dir / ckpt_io.LATEST
        if info.main:
            ckpt_io.save_checkpoint(path, {
                "config": cfg.to_dict(), "iteration": iteration, "student": student_state, "teacher": teacher_state,
                "optimizer": optim_state, "rng": rngs, "world_size": info.world,
                "data": {"image_list_hash": image_list_hash, "position": iteration * cfg.schedule.batch_size},
                "prototypes": {"names": space.names if space else [], "learnable": cfg.prototypes.learnable},
                "record": {k: v for k, v in record.items() if k != "config"},
            })
        dist.barrier()
        return path, teacher_state

    history: list[dict[str, float]] = []
    log_path = out_dir / "log.jsonl"
    # Iterations done / to do, with the time left to `stop`; on rank 0 only (one bar, not one per process).
    # The log lines are written beside it so that they do not tear it apart.
    bar = progress_bar(total=stop, initial=start, step=("pretrain", cfg.preset, "iteration"), unit="it",
                       enabled=info.main)
    say = beside_bars(say) if not bar.disable else say
    tic = time.perf_counter()
    it = start
    for batch in loader:
        values = schedules.at(it)
        apply_schedules(optimizer, values)
        global_crops = batch["global"].to(device, non_blocking=True)
        local_crops = batch["local"].to(device, non_blocking=True) if n_local else None
        masks = batch["masks"].to(device, non_blocking=True)
        b = global_crops.shape[0] // n_global
        with autocast():
            t_out = teacher.teacher_forward(global_crops, masks, n_global)
            s_out = model(global_crops, local_crops, masks if cfg.loss.ibot else None)
            losses: dict[str, torch.Tensor] = {}
            if cfg.loss.dino:
                t_probs = sinkhorn_knopp(t_out["global_dino"].flatten(0, 1), values["teacher_temp"],
                                         cfg.loss.sinkhorn_iterations).reshape(n_global, b, -1)
                s_local = s_out["local_dino"].reshape(n_local, b, -1) if "local_dino" in s_out else None
                losses["dino"] = dino_loss(s_out["global_dino"].reshape(n_global, b, -1), s_local, t_probs,
                                           cfg.loss.student_temp)
            if cfg.loss.ibot:
                t_ibot = sinkhorn_knopp(t_out["masked_ibot"], values["teacher_temp"], cfg.loss.sinkhorn_iterations)
                losses["ibot"] = ibot_loss(s_out["masked_ibot"], t_ibot, masks, cfg.loss.student_temp)
            if cfg.loss.koleo:
                # summed over the global crops, never between two crops of one image (DINOv2)
                losses["koleo"] = sum(koleo_loss(c, gather=cfg.loss.koleo_scope == "global")
                                      for c in s_out["global_cls"].chunk(n_global))
            if "proto_logits" in s_out:
                losses["proto"], _ = prototype_loss(s_out["proto_logits"], batch["target"].to(device),
                                                    batch["known"].to(device))
            total_loss = sum(weights[k] * v for k, v in losses.items())
        if not torch.isfinite(total_loss):
            raise FloatingPointError(f"iteration {it}: the loss is not finite ({ {k: float(v) for k, v in losses.items()} }); "
                                     "lower optim.base_lr or check the data")
        optimizer.zero_grad(set_to_none=True)
        total_loss.backward()
        if cfg.optim.clip_grad > 0:
            for module in submodules(student_module).values():
                params = [p for p in module.parameters() if p.grad is not None]
                if params:
                    torch.nn.utils.clip_grad_norm_(params, cfg.optim.clip_grad)
        optimizer.step()
        with torch.no_grad():
            teacher_params = [_local(t) for t, _ in ema_pairs]
            torch._foreach_mul_(teacher_params, values["momentum"])
            torch._foreach_add_(teacher_params, [_local(s).detach() for _, s in ema_pairs],
                                alpha=1 - values["momentum"])
        it += 1
        bar.update()
        if it % cfg.run.log_every == 0 or it == stop:
            shown = torch.stack([v.detach().float() for v in losses.values()] + [total_loss.detach().float()])
            dist.all_reduce(shown)
            shown = (shown / info.world).tolist()
            entry = {"iteration": it, "epoch": round(it / cfg.schedule.epoch_length, 3),
                     **{k: round(v, 6) for k, v in zip([*losses, "total"], shown)},
                     **{k: float(f"{v:.6g}") for k, v in values.items()},
                     "seconds_per_iteration": round((time.perf_counter() - tic) / max(it - start, 1), 4)}
            history.append(entry)
            if info.main:
                with open(log_path, "a") as f:
                    f.write(json.dumps(entry) + "\n")
                say(" ".join(f"{k} {v}" for k, v in entry.items()))
            bar.set_postfix_str(f"loss {entry['total']:.4f}", refresh=False)
        if cfg.run.checkpoint_every and it % cfg.run.checkpoint_every == 0 and it < stop:
            save(it)
    bar.close()
    path, teacher_state = save(it)
    finished = it >= total
    summary = {"iteration": it, "total_iterations": total, "finished": finished, "checkpoint": str(path),
               "rank": info.rank, "history": history, "world_size": info.world, "losses": active,
               "seconds": round(time.perf_counter() - tic, 2)}
    if finished:
        summary["release"] = str(out_dir / RELEASE_NAME)
        if info.main:
            from dermino.pretrain.export import export_release

            export_release(teacher_state, out_dir / RELEASE_NAME)
        dist.barrier()
    if info.main:
        atomic_write_json(out_dir / "summary.json", {k: v for k, v in summary.items() if k != "history"})
        say(f"{'finished' if finished else 'stopped'} at iteration {it}; checkpoint {path}"
            + (f"; release-format teacher {out_dir / RELEASE_NAME}" if finished else ""))
    return summary


def training_record(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """What the exported JSON says about how the weights were made."""
    rec = checkpoint.get("record", {})
    data = rec.get("data", {})
    return {
        "preset": checkpoint["config"]["preset"], "iterations": int(checkpoint["iteration"]),
        "seed": checkpoint["config"]["run"]["seed"], "dermbench_commit": rec.get("git_commit"),
        "dermbench_dirty": rec.get("git_dirty"), "world_size": checkpoint.get("world_size"),
        "losses": rec.get("losses"), "precision": rec.get("precision"),
        "data": {"root": data.get("data_root"), "images": data.get("images"),
                 "labelled_images": data.get("labelled_images"), "image_folders": data.get("image_folders"),
                 "excluded_eval_test": data.get("excluded_eval_test")},
        "labelled_tasks": sorted(data.get("labelled_tasks", {})),
        "unlabelled_tasks": sorted(data.get("unlabelled_tasks", {})),
        "seen_tasks": data.get("seen_tasks", []),
        "prototypes": rec.get("prototypes"), "batch_size": checkpoint["config"]["schedule"]["batch_size"],
    }


def export_checkpoint(checkpoint_path: Path, release: Optional[Path] = None, timm_dir: Optional[Path] = None,
                      name: str = "dermino-tiny", dtype: str = "float16") -> dict[str, str]:
    """Export a checkpoint's teacher: release format and/or ``<timm_dir>/<name>.safetensors`` + ``.json``."""
    from dermino.pretrain.export import export_release, export_timm

    state = ckpt_io.load_checkpoint(checkpoint_path)
    cfg = config_from_dict(state["config"])
    written = {}
    if release is not None:
        written["release"] = str(export_release(state["teacher"], release))
    if timm_dir is not None:
        w, c = export_timm(state["teacher"], timm_kwargs(cfg), Path(timm_dir) / f"{name}.safetensors",
                           Path(timm_dir) / f"{name}.json", training_record(state), dtype=dtype,
                           mean=IMAGENET_MEAN, std=IMAGENET_STD)
        written.update({"weights": str(w), "config": str(c)})
    if not written:
        raise ValueError("nothing to export: give a release path and/or a timm folder")
    return written


def log_lines(path: Path) -> list[dict]:
    """The JSON lines of a run's log (for reports and tests)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
