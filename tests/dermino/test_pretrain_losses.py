"""DermINO pretraining pieces against hand-computed values: losses, masking, schedules, labels."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from dermino.pretrain.config import apply_overrides, paper_config, preset_config, tiny_config
from dermino.pretrain.losses import dino_loss, ibot_loss, koleo_loss, prototype_bce, prototype_loss, sinkhorn_knopp
from dermino.pretrain.masking import BlockMaskGenerator, crop_mask, mask_plan
from dermino.pretrain.schedules import CosineSchedule, build_schedules, param_groups


# --- Sinkhorn-Knopp -----------------------------------------------------------------------------
def test_sinkhorn_knopp_one_iteration_by_hand():
    # exp(logits) = [[1, 2], [3, 4]] (2 samples x 2 prototypes). Q = exp^T / 10 = [[.1, .3], [.2, .4]];
    # rows / row sums / K: [[1/8, 3/8], [1/6, 1/3]]; columns / column sums: [[3/7, 9/17], [4/7, 8/17]].
    logits = torch.log(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    out = sinkhorn_knopp(logits, temp=1.0, n_iterations=1)
    expected = torch.tensor([[3 / 7, 4 / 7], [9 / 17, 8 / 17]])
    assert torch.allclose(out, expected, atol=1e-6)


def test_sinkhorn_knopp_balances_rows_and_columns():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=gen)
    out = sinkhorn_knopp(logits, temp=0.5, n_iterations=60)
    assert torch.allclose(out.sum(dim=1), torch.ones(6), atol=1e-6)  # each sample's target is a distribution
    assert torch.allclose(out.sum(dim=0), torch.full((4,), 6 / 4), atol=1e-4)  # equal mass per prototype
    # a constant shift of the logits changes nothing (the implementation subtracts the maximum)
    assert torch.allclose(sinkhorn_knopp(logits + 100.0, 0.5, 60), out, atol=1e-6)


# --- DINO ----------------------------------------------------------------------------------------
def test_dino_loss_pairs_and_normalisation_by_hand():
    # student logits = log p with temperature 1 -> log-softmax = log p exactly
    p = {"g0": [0.7, 0.3], "g1": [0.4, 0.6], "l0": [0.5, 0.5]}
    t = [[1.0, 0.0], [0.2, 0.8]]  # teacher targets of global crops 0 and 1
    s_global = torch.log(torch.tensor([[p["g0"]], [p["g1"]]]))  # [N_g=2, B=1, K=2]
    s_local = torch.log(torch.tensor([[p["l0"]]]))  # [N_l=1, B=1, K=2]
    teacher = torch.tensor([[t[0]], [t[1]]])

    def ce(target, probs):
        return -sum(a * math.log(b) for a, b in zip(target, probs))

    # pairs: g0<-t1, g1<-t0 (never a crop with itself), l0<-t0, l0<-t1; N_g (1 + N_l) = 4 terms
    expected = (ce(t[1], p["g0"]) + ce(t[0], p["g1"]) + ce(t[0], p["l0"]) + ce(t[1], p["l0"])) / 4
    assert dino_loss(s_global, s_local, teacher, student_temp=1.0).item() == pytest.approx(expected, rel=1e-6)
    # without local crops DINOv2 divides by N_g (N_g - 1) + max(N_g N_l, 1) = 2 + 1 (ssl_meta_arch.py::
    # forward_backward, n_local_crops_loss_terms = max(n_local_crops * n_global_crops, 1)); was 2 before
    no_local = (ce(t[1], p["g0"]) + ce(t[0], p["g1"])) / 3
    assert dino_loss(s_global, None, teacher, student_temp=1.0).item() == pytest.approx(no_local, rel=1e-6)


def test_dino_loss_averages_over_the_batch():
    gen = torch.Generator().manual_seed(1)
    s, t = torch.randn(2, 3, 5, generator=gen), torch.softmax(torch.randn(2, 3, 5, generator=gen), -1)
    per_sample = [dino_loss(s[:, i:i + 1], None, t[:, i:i + 1], 0.1).item() for i in range(3)]
    assert dino_loss(s, None, t, 0.1).item() == pytest.approx(sum(per_sample) / 3, rel=1e-6)


# --- iBOT ----------------------------------------------------------------------------------------
def test_ibot_loss_normalised_by_each_images_masked_count():
    # image 0 masks 1 patch, image 1 masks 3 patches, image 2 none; student temp 1, one-hot targets
    masks = torch.tensor([[1, 0, 0, 0], [0, 1, 1, 1], [0, 0, 0, 0]], dtype=torch.bool)
    probs = [0.9, 0.5, 0.25, 0.2]  # student probability of the target prototype, per masked patch
    student = torch.log(torch.tensor([[q, 1 - q] for q in probs]))
    teacher = torch.tensor([[1.0, 0.0]] * 4)
    ce = [-math.log(q) for q in probs]
    expected = (ce[0] / 1 + (ce[1] + ce[2] + ce[3]) / 3) / 3  # per-image weights, then / number of images
    assert ibot_loss(student, teacher, masks, 1.0).item() == pytest.approx(expected, rel=1e-6)


def test_ibot_loss_image_weight_does_not_grow_with_its_masked_count():
    one = torch.tensor([[1, 0, 0, 0]], dtype=torch.bool)
    four = torch.tensor([[1, 1, 1, 1]], dtype=torch.bool)
    s1, t1 = torch.log(torch.tensor([[0.3, 0.7]])), torch.tensor([[0.0, 1.0]])
    assert ibot_loss(s1, t1, one, 1.0).item() == pytest.approx(ibot_loss(s1.repeat(4, 1), t1.repeat(4, 1), four, 1.0).item())


# --- KoLeo ----------------------------------------------------------------------------------------
def test_koleo_on_known_points():
    # unit vectors a=(1,0), b=(0,1), c=(0.6,0.8): nn(a)=c at sqrt(0.8), nn(b)=c at sqrt(0.4), nn(c)=b at sqrt(0.4)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    expected = -(math.log(math.sqrt(0.8)) + 2 * math.log(math.sqrt(0.4))) / 3
    assert koleo_loss(x).item() == pytest.approx(expected, abs=1e-5)
    assert koleo_loss(x * torch.tensor([[5.0], [0.5], [2.0]])).item() == pytest.approx(expected, abs=1e-5)  # scale-free
    spread = koleo_loss(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])).item()
    assert spread < expected  # more spread out points -> lower loss


# --- supervised prototype BCE -------------------------------------------------------------------
def test_prototype_bce_ignores_unknown_labels():
    # crop 0 knows prototypes {0, 1} (its source's label space); crop 1 is unlabelled
    logits = torch.tensor([[2.0, -1.0, 50.0, -50.0], [3.0, 3.0, 3.0, 3.0]])
    targets = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])  # unknown entries are garbage
    known = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    crop0 = (-math.log(sig(2.0)) - math.log(1 - sig(-1.0))) / 2
    per_crop, labelled = prototype_bce(logits, targets, known)
    assert per_crop[0].item() == pytest.approx(crop0, rel=1e-6)
    assert labelled.tolist() == [True, False] and per_crop[1].item() == 0.0
    loss, count = prototype_loss(logits, targets, known)
    assert count == 1 and loss.item() == pytest.approx(crop0, rel=1e-6)  # unlabelled crops contribute nothing


def test_prototype_loss_averages_over_labelled_crops():
    logits = torch.tensor([[0.0, 0.0], [1.0, -2.0], [5.0, 5.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    known = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    per_crop, _ = prototype_bce(logits, targets, known)
    loss, count = prototype_loss(logits, targets, known)
    assert count == 2 and loss.item() == pytest.approx((per_crop[0] + per_crop[1]).item() / 2, rel=1e-6)


# --- masking -------------------------------------------------------------------------------------
def test_mask_plan_follows_dinov2_rule():
    plan = mask_plan(seed=0, iteration=3, n_crops=40, probability=0.5, ratio_min=0.1, ratio_max=0.5)
    masked = sorted(r for r in plan if r > 0)
    assert len(plan) == 40 and len(masked) == 20  # int(B * p) crops masked
    bins = np.linspace(0.1, 0.5, 21)
    assert all(lo <= r <= hi for r, lo, hi in zip(masked, bins[:-1], bins[1:]))  # one draw per bin


def test_block_masks_respect_counts_and_are_reproducible():
    gen = BlockMaskGenerator((16, 16), max_block_patches=128)
    for slot in range(20):
        m = crop_mask(gen, 0, 5, slot, 20, 0.5, 0.1, 0.5)
        ratio = mask_plan(0, 5, 20, 0.5, 0.1, 0.5)[slot]
        assert m.shape == (256,) and m.sum() <= int(256 * ratio) <= 128
        assert np.array_equal(m, crop_mask(gen, 0, 5, slot, 20, 0.5, 0.1, 0.5))
    assert sum(crop_mask(gen, 0, 5, s, 20, 0.5, 0.1, 0.5).any() for s in range(20)) >= 9


# --- schedules and parameter groups ---------------------------------------------------------------
def test_cosine_schedule_values():
    s = CosineSchedule(base=1.0, final=0.0, total=6, warmup=2, start_warmup=0.0, freeze=1)
    assert [round(s[i], 6) for i in range(7)] == [0.0, 0.0, 1.0, 1.0, round(0.5 * (1 + math.cos(math.pi / 3)), 6),
                                                   round(0.5 * (1 + math.cos(2 * math.pi / 3)), 6), 0.0]


def test_schedules_of_the_paper_preset():
    cfg = paper_config()
    s = build_schedules(cfg)
    ep, total = cfg.schedule.epoch_length, cfg.total_iterations
    assert s.lr[10 * ep] == pytest.approx(2e-3 * math.sqrt(2048 / 1024))  # peak after 10 warm-up epochs
    assert s.lr[total - 1] == pytest.approx(1e-6, abs=1e-6) and s.lr[0] == 0.0
    assert s.last_layer_lr[ep - 1] == 0.0 and s.last_layer_lr[ep] > 0.0  # frozen during epoch 1
    assert s.teacher_temp[0] == pytest.approx(0.04) and s.teacher_temp[30 * ep] == pytest.approx(0.07)
    assert s.teacher_temp[15 * ep] == pytest.approx(0.055, abs=1e-4)
    assert s.momentum[0] == pytest.approx(0.992) and s.momentum[total] == 1.0
    assert s.weight_decay[0] == pytest.approx(0.04) and s.weight_decay[total - 1] == pytest.approx(0.2, abs=1e-6)


def test_param_groups_lr_and_weight_decay_rules():
    from dermino.pretrain.model import SSLModel

    cfg = tiny_config()
    apply_overrides(cfg, {"model.embed_dim": 32, "model.num_heads": 2, "model.depth": 2,
                          "dino_head.prototypes": 16, "ibot_head.prototypes": 16})
    model = SSLModel(cfg, torch.randn(3, 32))
    by_name = {n: g for g in param_groups(model, cfg) for n in g["names"]}
    assert by_name["backbone.vit.patch_embed.proj.weight"]["lr_mult"] == pytest.approx(0.2)
    assert by_name["backbone.vit.blocks.0.attn.qkv.weight"]["lr_mult"] == 1.0
    # DINOv2's rule (dinov2/utils/param_groups.py): only biases, norms, LayerScale gammas are exempt
    for no_decay in ("backbone.vit.blocks.0.norm1.weight", "backbone.vit.blocks.1.attn.qkv.bias",
                     "backbone.vit.blocks.0.ls1.gamma"):
        assert by_name[no_decay]["wd_mult"] == 0.0, no_decay
    for decayed in ("backbone.vit.pos_embed", "backbone.vit.cls_token", "backbone.mask_token",
                    "backbone.vit.blocks.0.mlp.fc1.weight"):
        assert by_name[decayed]["wd_mult"] == 1.0, decayed
    apply_overrides(cfg, {"optim.no_decay_tokens_and_prototypes": "true"})
    by_name = {n: g for g in param_groups(model, cfg) for n in g["names"]}
    for name in ("backbone.vit.pos_embed", "backbone.vit.cls_token", "backbone.mask_token"):
        assert by_name[name]["wd_mult"] == 0.0, name
    assert by_name["dino_head.last_layer.parametrizations.weight.original1"]["is_last_layer"]
    assert not by_name["dino_head.mlp.0.weight"]["is_last_layer"]


# --- configuration and CLI -----------------------------------------------------------------------
def test_presets_and_overrides():
    paper = paper_config()
    assert (paper.model.patch_size, paper.model.embed_dim, paper.crops.local_number, paper.crops.local_size) == (14, 768, 8, 98)
    assert paper.dino_head.prototypes == 65536 and paper.loss.koleo_weight == 0.1 and paper.prototypes.learnable
    with pytest.raises(ValueError, match="init-weights"):
        paper.validate()  # the paper starts from DINOv2 weights: a file must be given
    tiny = preset_config("tiny").validate()
    assert tiny.model.img_size % tiny.model.patch_size == 0
    apply_overrides(tiny, {"optim.warmup_epochs": "2", "loss.ibot": "false", "crops.global_scale": "0.4,1"})
    assert tiny.optim.warmup_epochs == 2.0 and tiny.loss.ibot is False and tiny.crops.global_scale == (0.4, 1.0)
    with pytest.raises(KeyError, match="unknown configuration key"):
        apply_overrides(tiny, {"optim.lr": "1"})
    with pytest.raises(ValueError, match="cannot read"):
        apply_overrides(tiny, {"schedule.epochs": "many"})


def test_cli_help_and_config_without_importing_torch():
    code = ("import sys; from dermino.pretrain.cli import pretrain, build_config; "
            "assert 'torch' not in sys.modules; "
            "cfg = build_config('tiny', no_proto=True, prototypes='frozen', init_weights='scratch', set_=['loss.koleo_weight=0.5']); "
            "assert not cfg.loss.proto and not cfg.prototypes.learnable and cfg.loss.koleo_weight == 0.5; "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
    out = subprocess.run([sys.executable, "-m", "dermino.pretrain", "--preset", "paper", "--init-weights", "scratch",
                          "--print-config"], check=True, capture_output=True, text=True).stdout
    cfg = json.loads(out)
    assert cfg["preset"] == "paper" and cfg["model"]["init"] == "scratch" and cfg["schedule"]["batch_size"] == 2048
    helptext = subprocess.run([sys.executable, "-m", "dermino.pretrain", "--help"], check=True, capture_output=True,
                              text=True).stdout
    assert "--no-ibot" in helptext and "--resume" in helptext and "--fsdp" in helptext


# --- knowledge-guided label space -----------------------------------------------------------------
def test_label_normalisation():
    from dermino.pretrain.prototypes import normalise_label

    assert normalise_label("  Basal_Cell-Carcinoma (BCC) ") == "basal cell carcinoma bcc"
    assert normalise_label("Naevus, congenital") == "nevus congenital"
    assert normalise_label("non-neoplastic") == "non neoplastic"


def test_label_space_merges_and_review_files(tmp_path):
    from dermino.pretrain.prototypes import LabelSource, build_label_space, write_review_files

    sources = [LabelSource("a", ["Melanoma", "Nevus"]), LabelSource("b", ["malignant_melanoma", "naevus"]),
               LabelSource("c", ["severe", "very severe"]), LabelSource("d", ["BCC", "SK"])]
    space = build_label_space(sources, encoder="minilm", threshold=0.8)
    idx = {n: i for i, n in enumerate(space.names)}
    assert space.index["a"] == [idx["melanoma"], idx["nevus"]]
    assert space.index["b"] == [idx["melanoma"], idx["nevus"]]  # text merge + spelling normalisation
    assert space.index["d"] == [idx["basal cell carcinoma"], idx["seborrheic keratosis"]]  # abbreviations expanded
    assert idx["severe"] != idx["very severe"]  # one source's classes are never merged
    assert space.known("c") == sorted([idx["severe"], idx["very severe"]])
    assert space.embeddings.shape == (space.size, 384)
    assert np.allclose(np.linalg.norm(space.embeddings, axis=1), 1.0, atol=1e-5)
    paths = write_review_files(space, tmp_path)
    merges = paths["merges"].read_text()
    assert "b,malignant_melanoma,malignant melanoma,normalised," in merges and "kept apart" in merges
    record = json.loads(paths["prototypes"].read_text())
    assert record["text_encoder"]["pooling"] == "mean" and record["merge_threshold"] == 0.8


def test_weight_decay_groups_follow_dinov2_unless_asked():
    """Failed before (pos_embed, cls/mask tokens and prototypes were exempt). DINOv2
    ``dinov2/utils/param_groups.py::get_params_groups_with_decay`` exempts only names ending in
    ``.bias`` or containing ``norm`` or ``gamma``; ``optim.no_decay_tokens_and_prototypes`` is the documented option."""
    from dermino.pretrain.schedules import no_weight_decay

    exempt = ["backbone.vit.blocks.0.attn.qkv.bias", "backbone.vit.blocks.3.norm1.weight", "backbone.vit.norm.weight",
              "backbone.vit.blocks.1.ls1.gamma"]
    decayed = ["backbone.vit.pos_embed", "backbone.vit.cls_token", "backbone.mask_token", "prototypes.weight",
               "backbone.vit.blocks.0.attn.qkv.weight", "dino_head.last_layer.weight"]
    assert all(no_weight_decay(n) for n in exempt)
    assert not any(no_weight_decay(n) for n in decayed)
    assert all(no_weight_decay(n, exempt_tokens=True) for n in decayed[:4])
