"""DermINO pretraining end to end on a tiny DermSynth subset: exact resume, 2 processes == 1 process
(DDP and FSDP, gloo), test-split exclusion, exports, DINOv2 initialisation."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dermbench.data.sample import DatasetError
from dermino.pretrain.cli import build_config
from dermino.pretrain.train import export_checkpoint, log_lines, train

# 42 px global crops (3x3 patches of 14), 28 px local crops, a 2-block 32-wide ViT, small heads.
TINY_SETS = [
    "model.img_size=42", "crops.global_size=42", "crops.local_size=28", "crops.local_number=2",
    "model.embed_dim=32", "model.num_heads=2", "model.depth=2", "dino_head.prototypes=64", "dino_head.hidden=32",
    "dino_head.bottleneck=16", "ibot_head.prototypes=64", "ibot_head.hidden=32", "ibot_head.bottleneck=16",
    "masking.min_block_patches=1", "optim.warmup_epochs=0.5", "optim.freeze_last_layer_epochs=0",
]
# Equivalence runs: no drop-path (its draws are per process) and LayerScale 0.1 rather than 1e-5, so the
# CLS tokens are not collapsed at step 0 (near collapse KoLeo's 1/distance amplifies float rounding).
EQUIVALENCE_SETS = ["model.drop_path=0", "model.layerscale=0.1", "loss.koleo_scope=global"]
TOLERANCE = 1e-5  # max |weight difference| after 4 iterations, 1 vs 2 processes


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    from dermbench.data.synth.layouts import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, scale=0.25, datasets=["mednode", "ddi", "isic2016"], image_size=48)
    return root


def options(data_root: Path, extra_sets=(), **kw) -> dict:
    base = dict(data_root=str(data_root), labelled_tasks="mednode,ddi", unlabelled_tasks="isic2016", epochs=2,
                epoch_length=2, batch_size=8, workers=0, log_every=1, checkpoint_every=0,
                set_=TINY_SETS + list(extra_sets))
    base.update(kw)
    return base


def cli_args(opts: dict) -> list[str]:
    args = ["--preset", "tiny", "--data-root", opts["data_root"], "--labelled-tasks", opts["labelled_tasks"],
            "--unlabelled-tasks", opts["unlabelled_tasks"], "--epochs", str(opts["epochs"]), "--epoch-length",
            str(opts["epoch_length"]), "--batch-size", str(opts["batch_size"]), "--workers", "0", "--log-every", "1",
            "--checkpoint-every", "0"]
    for s in opts["set_"]:
        args += ["--set", s]
    return args


def quiet(_msg: str) -> None:
    pass


def load(path: Path) -> dict:
    return torch.load(str(path), map_location="cpu", weights_only=True)


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.fixture(scope="module")
def reference_run(data_root, tmp_path_factory) -> Path:
    """One process, 4 iterations, the equivalence settings."""
    out = tmp_path_factory.mktemp("one-process")
    cfg = build_config("tiny", **options(data_root, EQUIVALENCE_SETS))
    summary = train(cfg, out, log=quiet)
    assert summary["finished"] and summary["iteration"] == 4
    return out


def test_resume_is_exact_and_test_images_are_excluded(data_root, tmp_path):
    mednode = data_root / "complete_mednode_dataset"
    # drop-path on: the resumed run must also continue the RNG streams
    opts = options(data_root, ["model.drop_path=0.2"], images=[str(mednode)])
    straight = train(build_config("tiny", **opts), tmp_path / "straight", log=quiet)
    stopped = train(build_config("tiny", **{**opts, "stop_at": 2}), tmp_path / "resumed", log=quiet)
    assert not stopped["finished"] and stopped["iteration"] == 2
    resumed = train(build_config("tiny", **opts), tmp_path / "resumed", resume="auto", log=quiet)
    assert resumed["finished"] and resumed["iteration"] == 4
    a, b = load(tmp_path / "straight" / "checkpoint.pt"), load(tmp_path / "resumed" / "checkpoint.pt")
    for part in ("student", "teacher"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    assert all(torch.equal(x, y) for k in a["optimizer"]["state"] for x, y in
               zip(a["optimizer"]["state"][k].values(), b["optimizer"]["state"][k].values()))
    assert straight["history"][2:] == [{**h, "seconds_per_iteration": s["seconds_per_iteration"]}
                                       for h, s in zip(resumed["history"], straight["history"][2:])]
    assert len(log_lines(tmp_path / "resumed" / "log.jsonl")) == 4

    report = json.loads((tmp_path / "straight" / "run.json").read_text())["data"]
    # the folder holds every MED-Node image; its test half must have been removed
    n_test = len(json.loads(next((tmp_path / "straight" / "splits" / "_splits").glob("mednode.*.json")).read_text())["test"])
    assert report["excluded_eval_test"] == {f"folder:{mednode}": {"mednode": n_test}}
    assert set(report["labelled_tasks"]) == {"mednode", "ddi"} and set(report["seen_tasks"]) == {"mednode", "ddi", "isic2016", "fl-malignancy"}
    assert (tmp_path / "straight" / "label_merges.csv").is_file()
    assert (tmp_path / "straight" / "dermino_release.pth").is_file()


def _torchrun(args: list[str], out: Path, nproc: int = 2) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    cmd = [torchrun, "--standalone", f"--nproc_per_node={nproc}", "-m", "dermino.pretrain", *args, "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_match_one_process(parallel, data_root, reference_run, tmp_path):
    args = cli_args(options(data_root, EQUIVALENCE_SETS)) + (["--fsdp"] if parallel == "fsdp" else [])
    _torchrun(args, tmp_path)
    one, two = load(reference_run / "checkpoint.pt"), load(tmp_path / "checkpoint.pt")
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert max_difference(one["student"], two["student"]) < TOLERANCE
    assert max_difference(one["teacher"], two["teacher"]) < TOLERANCE
    for h1, h2 in zip(log_lines(reference_run / "log.jsonl"), log_lines(tmp_path / "log.jsonl")):
        for key in ("dino", "ibot", "koleo", "proto"):
            assert h1[key] == pytest.approx(h2[key], rel=1e-3), (key, h1, h2)


def test_exports_load_strictly_and_match_the_teacher(reference_run, tmp_path):
    from timm.models.vision_transformer import VisionTransformer

    from dermbench.models.weights import load_state_dict_file
    from dermino.pretrain.export import load_exported, teacher_backbone_state
    from dermino.release import convert_release_checkpoint

    written = export_checkpoint(reference_run / "checkpoint.pt", release=tmp_path / "release.pth",
                                timm_dir=tmp_path, name="tiny", dtype="float32")
    ckpt = load(reference_run / "checkpoint.pt")
    config = json.loads(Path(written["config"]).read_text())
    assert config["input_size"] == 42 and config["timm_kwargs"]["patch_size"] == 14
    assert config["training"]["iterations"] == 4 and set(config["training"]["labelled_tasks"]) == {"mednode", "ddi"}

    exported, _ = load_exported(Path(written["weights"]), Path(written["config"]))
    release = load_state_dict_file(Path(written["release"]))  # what dermbench's loader reads (weights_only)
    assert any(k.startswith("dino_head.") for k in release["teacher"]) and "backbone.mask_token" in release["teacher"]
    from_release = VisionTransformer(**{**config["timm_kwargs"], "num_classes": 0})
    from_release.load_state_dict(convert_release_checkpoint(release), strict=True)
    reference = VisionTransformer(**{**config["timm_kwargs"], "num_classes": 0})
    reference.load_state_dict(teacher_backbone_state(ckpt["teacher"]), strict=True)
    x = torch.randn(2, 3, 42, 42)
    with torch.no_grad():
        expected = reference.eval().forward_features(x)
        assert torch.equal(exported.forward_features(x), expected)
        assert torch.equal(from_release.eval().forward_features(x), expected)


def test_init_from_dinov2_weights_resizes_position_embeddings(tmp_path):
    from timm.models.vision_transformer import VisionTransformer

    from dermbench.models.weights import WeightsError
    from dermino.pretrain.model import SSLModel, load_init_weights

    cfg = build_config("tiny", set_=TINY_SETS)
    # a "DINOv2" file: the original key layout (bare backbone + mask_token), trained at a larger size
    source = VisionTransformer(img_size=70, patch_size=14, embed_dim=32, depth=2, num_heads=2, init_values=1e-5,
                               num_classes=0)
    state = {**source.state_dict(), "mask_token": torch.full((1, 32), 0.5)}
    torch.save(state, tmp_path / "dinov2.pth")
    model = SSLModel(cfg, None)
    record = load_init_weights(model, tmp_path / "dinov2.pth")
    assert record["pos_embed_resized_to"] == [3, 3] and record["mask_token_loaded"]
    assert model.backbone.vit.pos_embed.shape == (1, 10, 32)
    assert torch.equal(model.backbone.vit.blocks[1].mlp.fc2.weight, source.blocks[1].mlp.fc2.weight)
    assert torch.equal(model.backbone.mask_token, torch.full((1, 32), 0.5))
    del state["norm.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(WeightsError, match="norm.weight"):
        load_init_weights(SSLModel(cfg, None), tmp_path / "broken.pth")


def test_bad_sources_fail_clearly(data_root, tmp_path):
    from dermino.pretrain.data import collect_data

    cfg = build_config("tiny", **options(data_root, labelled_tasks="isic2016"))
    with pytest.raises(DatasetError, match="unlabelled-tasks"):
        collect_data(cfg.data, tmp_path)
    cfg = build_config("tiny", **options(data_root, images=[str(tmp_path / "missing")]))
    with pytest.raises(DatasetError, match="not a folder"):
        collect_data(cfg.data, tmp_path)
