"""``dermbench pretrain`` / ``python -m dermino.pretrain`` / ``torchrun ... -m dermino.pretrain``.

Import cost: only typer and the (torch-free) configuration module load at import time.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from dermino.pretrain.config import PRESETS, apply_overrides, preset_config


def _parse_sets(values: List[str]) -> dict[str, str]:
    out = {}
    for item in values:
        if "=" not in item:
            raise typer.BadParameter(f"--set {item!r}: expected KEY=VALUE, e.g. optim.base_lr=1e-3")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def build_config(preset: str = "tiny", **options):
    """Preset + command-line options + ``--set`` overrides -> a PretrainConfig (shared with tests)."""
    cfg = preset_config(preset)
    mapping = {
        "data_root": "data.data_root", "synth": "data.synth", "images": "data.images",
        "labelled_tasks": "data.labelled_tasks", "unlabelled_tasks": "data.unlabelled_tasks",
        "exclude_eval_test": "data.exclude_eval_test", "workers": "data.num_workers",
        "epochs": "schedule.epochs", "epoch_length": "schedule.epoch_length", "batch_size": "schedule.batch_size",
        "stop_at": "run.stop_at", "device": "run.device", "seed": "run.seed", "precision": "run.precision",
        "checkpoint_every": "run.checkpoint_every", "log_every": "run.log_every",
        "merge_threshold": "prototypes.merge_threshold", "text_encoder": "prototypes.text_encoder",
        "synonyms": "prototypes.synonyms",
    }
    overrides = {mapping[k]: v for k, v in options.items() if k in mapping and v is not None}
    if options.get("data_root"):
        overrides["data.synth"] = False
    if options.get("fsdp"):
        overrides["run.parallel"] = "fsdp"
    if options.get("prototypes") is not None:
        if options["prototypes"] not in ("learnable", "frozen"):
            raise typer.BadParameter("--prototypes must be 'learnable' or 'frozen'")
        overrides["prototypes.learnable"] = options["prototypes"] == "learnable"
    init = options.get("init_weights")
    if init:
        overrides.update({"model.init": "scratch", "model.init_weights": ""} if init == "scratch"
                         else {"model.init": "dinov2", "model.init_weights": init})
    for loss in ("dino", "ibot", "koleo", "proto"):
        if options.get(f"no_{loss}"):
            overrides[f"loss.{loss}"] = False
    apply_overrides(cfg, overrides)
    apply_overrides(cfg, _parse_sets(options.get("set_") or []))
    return cfg


def _pretrain_device(choice: str, check_hardware: bool = True) -> str:
    """``--device`` checked on this machine (only its name for ``--print-config``, which imports no torch); the
    choice itself (``auto`` included) goes to the config, since each torchrun process picks its own GPU from
    LOCAL_RANK (:func:`dermino.pretrain.train.init_distributed`)."""
    from dermbench.cli.common import device_option, fail

    resolved = device_option(choice, on_this_machine=check_hardware)
    if resolved == "auto":
        return "auto"
    if resolved not in ("cpu", "cuda"):
        fail(f"--device {choice}: pretraining runs on CUDA (one GPU per torchrun process, chosen by LOCAL_RANK; "
             f"pick GPUs with CUDA_VISIBLE_DEVICES) or on the CPU: use --device auto, cuda or cpu")
    return "auto" if choice.strip().lower() == "auto" else resolved


def pretrain(
    preset: str = typer.Option("tiny", "--preset", help=f"Recipe: {' | '.join(PRESETS)} (paper = the official run's values)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder: checkpoints, logs, config (default: pretrain-runs/<preset>)."),
    old_out: Optional[Path] = typer.Option(None, "--output", "-o", hidden=True, help="Old name of --out (still accepted; hidden)."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="dermbench data root for task sources."),
    synth: Optional[bool] = typer.Option(None, "--synth/--no-synth", help="Use DermSynth as the data root (tiny default)."),
    images: List[str] = typer.Option([], "--images", help="Unlabelled image folder (repeatable, searched recursively)."),
    labelled_tasks: Optional[str] = typer.Option(None, "--labelled-tasks",
                                                 help="Tasks whose TRAIN split is labelled data ('classification', "
                                                      "groups, names; '' for none)."),
    unlabelled_tasks: Optional[str] = typer.Option(None, "--unlabelled-tasks",
                                                   help="Tasks whose TRAIN images are used without labels."),
    keep_eval_test: bool = typer.Option(False, "--keep-eval-test",
                                        help="Do NOT remove images of evaluation test splits (contaminates results)."),
    init_weights: Optional[str] = typer.Option(None, "--init-weights",
                                               help="DINOv2 ViT-B/14 weights file to start from, or 'scratch'."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs (default: the preset's)."),
    epoch_length: Optional[int] = typer.Option(None, "--epoch-length", help="Iterations per epoch."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Global batch (all processes)."),
    stop_at: Optional[int] = typer.Option(None, "--stop-at", help="Stop (and checkpoint) after this iteration."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Checkpoint to resume, or 'auto' (the run folder's latest)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present, else the CPU) | cpu | cuda; under "
                               "torchrun each process takes the GPU of its LOCAL_RANK."),
    fsdp: bool = typer.Option(False, "--fsdp", help="Shard student and teacher with FSDP2 instead of DDP."),
    precision: Optional[str] = typer.Option(None, "--precision", help="auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp32"),
    workers: Optional[int] = typer.Option(None, "--workers", help="Data-loading processes per training process."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of initialisation, augmentations and sampling (default: the preset's)."),
    no_dino: bool = typer.Option(False, "--no-dino", help="Ablation: drop the DINO image-level loss."),
    no_ibot: bool = typer.Option(False, "--no-ibot", help="Ablation: drop the iBOT masked-patch loss."),
    no_koleo: bool = typer.Option(False, "--no-koleo", help="Ablation: drop the KoLeo regulariser."),
    no_proto: bool = typer.Option(False, "--no-proto", help="Ablation: drop the supervised prototype loss."),
    prototypes: Optional[str] = typer.Option(None, "--prototypes", help="learnable | frozen (official code: frozen)."),
    merge_threshold: Optional[float] = typer.Option(None, "--merge-threshold", help="Text cosine to merge labels."),
    text_encoder: Optional[str] = typer.Option(None, "--text-encoder", help="auto | coder | minilm | local folder."),
    synonyms: Optional[str] = typer.Option(None, "--synonyms", help="Reviewed label map (CSV raw_label,name or JSON)."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="Iterations between checkpoints."),
    log_every: Optional[int] = typer.Option(None, "--log-every", help="Iterations between log lines."),
    set_: List[str] = typer.Option([], "--set", help="Any config value, KEY=VALUE (e.g. optim.base_lr=1e-3)."),
    export_timm: Optional[Path] = typer.Option(None, "--export-timm",
                                               help="Also write <DIR>/<name>.safetensors + .json (timm keys)."),
    export_name: str = typer.Option("dermino-tiny", "--export-name", help="File stem for --export-timm."),
    export_from: Optional[Path] = typer.Option(None, "--export-from",
                                               help="Do not train: export this checkpoint (with --export-timm / --release)."),
    release: Optional[Path] = typer.Option(None, "--release", help="With --export-from: release-format output file."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved configuration and exit."),
) -> None:
    """DermINO hybrid pretraining: DINO + iBOT + KoLeo + knowledge-guided prototypes."""
    # the conventions of every dermbench command (one alias resolver, one device resolver); imported here,
    # not at module level, since dermbench.cli itself mounts this command
    from dermbench.cli.common import merge_alias

    out = merge_alias(out, old_out, "--out", old_name="--output/-o")
    if export_from is not None:
        from dermino.pretrain.train import export_checkpoint

        written = export_checkpoint(export_from, release=release, timm_dir=export_timm, name=export_name)
        for kind, path in written.items():
            typer.echo(f"{kind}: {path}")
        return
    device = _pretrain_device(device, check_hardware=not print_config)
    try:
        cfg = build_config(
            preset, data_root=data_root, synth=synth, images=list(images) or None, labelled_tasks=labelled_tasks,
            unlabelled_tasks=unlabelled_tasks, exclude_eval_test=False if keep_eval_test else None,
            init_weights=init_weights, epochs=epochs, epoch_length=epoch_length, batch_size=batch_size,
            stop_at=stop_at, device=device, fsdp=fsdp, precision=precision, workers=workers, seed=seed,
            no_dino=no_dino, no_ibot=no_ibot, no_koleo=no_koleo, no_proto=no_proto, prototypes=prototypes,
            merge_threshold=merge_threshold, text_encoder=text_encoder, synonyms=synonyms,
            checkpoint_every=checkpoint_every, log_every=log_every, set_=list(set_))
        if print_config:
            typer.echo(cfg.to_json())
            return
        if resume is None:
            cfg.validate()
    except (KeyError, ValueError) as exc:  # a KeyError's str() quotes its message: print the message itself
        typer.secho(f"error: {exc.args[0] if exc.args else exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    from dermino.pretrain.train import export_checkpoint, train

    run_dir = out or Path("pretrain-runs") / cfg.preset
    summary = train(cfg, run_dir, resume=resume, log=typer.echo)
    if export_timm is not None and summary["finished"] and summary.get("rank", 0) == 0:
        written = export_checkpoint(Path(summary["checkpoint"]), timm_dir=export_timm, name=export_name)
        typer.echo(f"exported {written['weights']} and {written['config']}")
