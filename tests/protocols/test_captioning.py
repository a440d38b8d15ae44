"""Captioning: metrics equal the libraries' own, only LoRA + projection train, and on DermSynth
captions an informative image feature beats the constant most-frequent-caption baseline."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from dermbench.stats import caption_metrics as CM
from dermbench.data.sample import DatasetError, Sample, TaskData
from dermbench.protocols import get_protocol
from dermbench.protocols.base import RunContext
from dermbench.protocols.captioning import (CAPTION_DEFAULTS, LLMNotAvailable, build_caption_model, generate_captions,
                                            load_llm, most_frequent_caption, train_caption_model)
from dermbench.data.splits import make_split
from dermbench.data.tasks import get_card
from dermbench.data.synth import is_dermsynth
from dermbench.protocols.tiny_lm import (BIOMISTRAL_ID, TINY_LM_ID, default_llm_for, ensure_tiny_lm, tiny_lm_key,
                               train_tokenizer)

requires_java = pytest.mark.skipif(not CM.java_available(), reason="pycocoevalcap's tokeniser and METEOR need java")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # Tiny models: threads only add synchronisation, which on a shared CPU costs a lot.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- metrics ------------------------------------------------------------------------------------------
REFS = ["The image shows a dark, irregular plaque on the back.",
        "A small round brown macule on the cheek.",
        "Several erythematous plaques covered with silvery scale on the scalp.",
        "A pearly pink nodule with fine vessels.\nThe findings are consistent with BCC.",
        "A bright red papule on the leg.",
        "Waxy stuck-on papule with a rough surface."]
GENS = ["The image shows a dark irregular plaque on the chest.",
        "A small brown macule on the cheek.",
        "",  # a model may generate nothing: it scores zero, it is not dropped
        "A pearly nodule with vessels. The findings are consistent with BCC.",
        "...",
        "Waxy stuck-on papule with a rough surface."]


def _direct_pycoco(refs, gens):
    """pycocoevalcap called as coco-caption calls it: tokenise each side, then every scorer."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    gts = tok.tokenize({i: [{"caption": r}] for i, r in enumerate(refs)})
    res = tok.tokenize({i: [{"caption": g}] for i, g in enumerate(gens)})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return gts, res, {"bleu1": bleu[0], "bleu2": bleu[1], "bleu4": bleu[3],
                      "meteor": CM.meteor_scorer().compute_score(gts, res)[0],
                      "cider": Cider().compute_score(gts, res)[0], "rougeL": Rouge().compute_score(gts, res)[0]}


@pytest.mark.slow
@requires_java
def test_metrics_equal_pycocoevalcap_and_rouge_score():
    from pycocoevalcap.bleu.bleu import Bleu
    from rouge_score import rouge_scorer

    n = len(REFS)
    rng = np.random.default_rng(0)
    idx = np.vstack([np.arange(n), rng.integers(0, n, (19, n))])
    preds = pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "reference": REFS, "generated": GENS})
    out = CM.evaluate_captions(preds, idx)
    assert list(out) == list(CM.METRICS)

    gts, res, direct = _direct_pycoco(REFS, GENS)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2"], use_stemmer=True)
    per_image = [scorer.score(r, g) for r, g in zip(REFS, GENS)]
    direct["rouge1"] = np.mean([s["rouge1"].fmeasure for s in per_image])
    direct["rouge2"] = np.mean([s["rouge2"].fmeasure for s in per_image])
    for name in CM.METRICS:
        assert out[name]["value"] == pytest.approx(direct[name], abs=1e-12), name
        assert out[name]["replicates"].shape == (20,)
        # row 0 of idx is the full test set: its replicate is the point value
        assert out[name]["replicates"][0] == pytest.approx(direct[name], abs=1e-9), name
    assert 0 < out["bleu4"]["value"] < out["bleu1"]["value"] < 1
    assert out["cider"]["value"] > 0

    # BLEU and METEOR replicates are the libraries' corpus scores on the resampled captions
    for row in idx[1:4]:
        g2 = {j: gts[i] for j, i in enumerate(row)}
        r2 = {j: res[i] for j, i in enumerate(row)}
        k = int(np.where((idx == row).all(axis=1))[0][0])
        bleu, _ = Bleu(4).compute_score(g2, r2, verbose=0)
        assert out["bleu1"]["replicates"][k] == pytest.approx(bleu[0], abs=1e-12)
        assert out["bleu4"]["replicates"][k] == pytest.approx(bleu[3], abs=1e-12)
        assert out["meteor"]["replicates"][k] == pytest.approx(CM.meteor_scorer().compute_score(g2, r2)[0], abs=1e-12)


def test_without_java_the_pycoco_metrics_are_skipped_and_named(monkeypatch):
    monkeypatch.setattr(CM, "java_available", lambda: False)
    preds = pd.DataFrame({"sample_id": ["a", "b"], "reference": REFS[:2], "generated": GENS[:2]})
    with pytest.warns(RuntimeWarning, match="java is not on the PATH"):
        out = CM.evaluate_captions(preds, np.array([[0, 1], [1, 1]]))
    assert set(out) == {"rouge1", "rouge2"}
    assert CM.skipped_metrics() == list(CM.PYCOCO_METRICS)
    # identical captions score 1, disjoint ones 0: the replicate of [b, b] is ROUGE of b alone
    same = pd.DataFrame({"reference": ["red papule", "brown macule"], "generated": ["red papule", "white cyst"]})
    with pytest.warns(RuntimeWarning):
        out = CM.evaluate_captions(same, np.array([[0, 0], [1, 1], [0, 1]]))
    np.testing.assert_allclose(out["rouge1"]["replicates"], [1.0, 0.0, 0.5])
    assert out["rouge1"]["value"] == pytest.approx(0.5)


def test_caption_metric_inputs_are_checked():
    preds = pd.DataFrame({"sample_id": ["a", "b"], "reference": REFS[:2], "generated": GENS[:2]})
    with pytest.raises(ValueError, match=r"expected \(B, 2\)"):
        CM.evaluate_captions(preds, np.zeros((5, 3), dtype=int))
    with pytest.raises(ValueError, match="'generated'"):
        CM.evaluate_captions(preds.drop(columns="generated"), np.zeros((5, 2), dtype=int))
    with pytest.raises(ValueError, match="no reference text"):
        CM.evaluate_captions(preds.assign(reference=["x", " "]), np.zeros((5, 2), dtype=int))


def test_corpus_bleu_from_summed_statistics_matches_the_formula():
    # one image: 4 words, 3 correct unigrams, 2 bigrams, 1 trigram, 0 four-grams; reference 5 words
    stats = np.array([4, 5, 4, 3, 2, 1, 3, 2, 1, 0], dtype=np.float64)
    bleu = CM.corpus_bleu_from_stats(stats)
    bp = np.exp(1 - 5 / 4)
    assert bleu[0] == pytest.approx(bp * 3 / 4)
    assert bleu[1] == pytest.approx(bp * np.sqrt(3 / 4 * 2 / 3))
    assert bleu[3] == pytest.approx(0.0, abs=1e-3)  # no 4-gram match: pycocoevalcap's tiny constant only


# --- the model: only LoRA and the projection train ----------------------------------------------------------
CAPTIONS = ["a dark plaque on the back", "a brown macule on the face", "a red papule on the leg",
            "a pearly nodule on the nose"] * 2


def _random_tiny_lm(vocab: int = 200):
    from transformers import MistralConfig, MistralForCausalLM

    from dermbench.models.backbone import seeded

    tokenizer = train_tokenizer(CAPTIONS, vocab)
    config = MistralConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=2, sliding_window=None,
                           pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id)
    with seeded(0):
        model = MistralForCausalLM(config)
    model.requires_grad_(False)
    return model.eval(), tokenizer


def test_only_lora_and_projection_change_during_training():
    llm, tokenizer = _random_tiny_lm()
    cfg = dict(CAPTION_DEFAULTS, epochs=2, lr_projection=1e-2, lr_lora=1e-2)
    model = build_caption_model(llm, tokenizer, feature_dim=5, config=cfg, seed=0)
    trainable = set(model.trainable_parameters())
    assert trainable == {"projection.weight", "projection.bias"} | {
        f"llm.{n}" for n, _ in model.llm.named_parameters() if "lora_" in n}
    assert any("q_proj.lora_A" in n for n in trainable) and any("v_proj.lora_B" in n for n in trainable)
    assert not any("k_proj.lora" in n or "o_proj.lora" in n for n in trainable)

    def snapshot():
        named = {f"llm.{n}": p for n, p in model.llm.named_parameters()}
        named.update({f"projection.{n}": p for n, p in model.projection.named_parameters()})
        return {n: p.detach().clone() for n, p in named.items()}

    before = snapshot()
    features = np.random.default_rng(0).normal(size=(len(CAPTIONS), 5)).astype(np.float32)
    caption_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in CAPTIONS]
    losses = train_caption_model(model, features, caption_ids, cfg, seed=0)
    after = snapshot()
    assert len(losses) == 2 * 2 and all(np.isfinite(losses))
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed == trainable  # every LoRA and projection tensor moved, nothing else did

    texts, unfinished = generate_captions(model, features[:3], max_new_tokens=4, batch_size=2)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts) and 0 <= unfinished <= 3


def test_loss_covers_caption_tokens_only():
    llm, tokenizer = _random_tiny_lm()
    model = build_caption_model(llm, tokenizer, feature_dim=3, config=dict(CAPTION_DEFAULTS), seed=1)
    model.llm.eval()
    x = torch.randn(2, 3)
    caps = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in CAPTIONS[:2]]
    with torch.no_grad():
        loss = model.loss(x, caps)
        prompt = model.prompt_embeddings(x)
        p = prompt.shape[1]
        assert p == model.prompt_length == len(model.prefix_ids) + 8 + len(model.suffix_ids)
        total, count = 0.0, 0
        for row, ids in enumerate(caps):
            target = torch.tensor(ids + [tokenizer.eos_token_id])
            embeds = torch.cat([prompt[row : row + 1], model.llm.get_input_embeddings()(target[None])], dim=1)
            logits = model.llm(inputs_embeds=embeds).logits[0]
            # position p-1 (after [/INST]) predicts the first caption token, ... the last predicts nothing
            total += torch.nn.functional.cross_entropy(logits[p - 1 : -1], target, reduction="sum")
            count += len(target)
    assert float(loss) == pytest.approx(float(total / count), rel=1e-5)


def test_prompt_puts_image_tokens_between_inst_and_the_instruction():
    llm, tokenizer = _random_tiny_lm()
    model = build_caption_model(llm, tokenizer, feature_dim=3, config=dict(CAPTION_DEFAULTS), seed=0)
    assert tokenizer.decode(model.prefix_ids) == "<s>[INST]"
    assert tokenizer.decode(model.suffix_ids) == "Please describe this dermatology image: [/INST]"


def test_lora_target_modules_that_do_not_exist_are_named():
    llm, tokenizer = _random_tiny_lm()
    with pytest.raises(ValueError, match=r"no module named \['query_key_value'\].*q_proj"):
        build_caption_model(llm, tokenizer, 3, dict(CAPTION_DEFAULTS, lora_target_modules="query_key_value"), 0)


# --- the LM choice --------------------------------------------------------------------------------------------------
def test_missing_llm_says_what_to_download_and_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LLMNotAvailable, match=r"hf download no-such-org/no-such-model.*dermbench/tiny-lm"):
        load_llm("no-such-org/no-such-model", ["a caption"])
    with pytest.raises(LLMNotAvailable, match="no config.json"):
        load_llm(str(tmp_path), ["a caption"])
    assert CAPTION_DEFAULTS["llm"] == BIOMISTRAL_ID
    assert default_llm_for(True) == TINY_LM_ID and default_llm_for(False) == BIOMISTRAL_ID


def test_tiny_lm_build_is_deterministic(tmp_path, monkeypatch):
    from dermbench.protocols import tiny_lm
    from dermbench.models.backbone import sha256_state_dict

    monkeypatch.setitem(tiny_lm.TINY_LM_PRETRAIN, "steps", 3)
    a = ensure_tiny_lm(CAPTIONS, cache_root=tmp_path / "a")
    b = ensure_tiny_lm(list(reversed(CAPTIONS)), cache_root=tmp_path / "b")  # order does not matter
    assert a.name == b.name == tiny_lm_key(CAPTIONS)[:16]
    from safetensors.torch import load_file

    assert sha256_state_dict(load_file(a / "model.safetensors")) == sha256_state_dict(load_file(b / "model.safetensors"))
    stamp = (a / "tiny_lm.json").stat().st_mtime_ns
    assert ensure_tiny_lm(CAPTIONS, cache_root=tmp_path / "a") == a and (a / "tiny_lm.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="training captions"):
        ensure_tiny_lm(["  "], cache_root=tmp_path / "c")


# --- the protocol on DermSynth ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def skincap(tmp_path_factory):
    """DermSynth's SkinCAP (written in the release layout, read by the real adapter) and its split."""
    from dermbench.data.locate import load_task
    from dermbench.data.synth import generate

    root = generate(tmp_path_factory.mktemp("dermsynth"), datasets=["skincap"])
    card = get_card("skincap")
    data = load_task(root, card)
    return card, data, make_split(data, card.split, 0, card.train_fraction)


class DiseaseFeatures:
    """Feature-cache stand-in for an informative backbone: a fixed direction per disease plus noise.

    DermSynth draws each SkinCAP image from its disease's lesion style, so a good image encoder
    separates the diseases; this stands in for one without a pretrained download.
    """

    def __init__(self, dim: int = 64, noise: float = 0.5):
        self.dim, self.noise = dim, noise

    def get(self, backbone, samples, **kw):
        rows = []
        for s in samples:
            direction = np.random.default_rng(list(s.source_label.encode())).normal(size=self.dim)
            noise = np.random.default_rng(list(s.id.encode())).normal(size=self.dim)
            rows.append(direction + self.noise * noise)
        return np.stack(rows).astype(np.float32)


def _ctx(card, data, split, features, tmp_path, **overrides):
    protocol = get_protocol("caption")
    config = protocol.resolve_config({"llm": TINY_LM_ID, **overrides})
    return protocol, RunContext(card=card, data=data, split=split, get_backbone=lambda: None, features=features, seed=0,
                                device="cpu", config=config, artifacts_dir=tmp_path / "artifacts", progress=False)


@pytest.mark.slow
def test_informative_features_beat_the_most_frequent_caption(skincap, tmp_path):
    card, data, split = skincap
    assert is_dermsynth(data.root)
    protocol, ctx = _ctx(card, data, split, DiseaseFeatures(), tmp_path)
    out = protocol.run(ctx)

    preds = out.predictions
    assert out.kind == "caption" and list(preds.columns) == ["sample_id", "reference", "generated"]
    assert list(preds["sample_id"]) == split.test and (out.n_train, out.n_test) == (len(split.train), len(split.test))
    by_id = data.by_id()
    assert list(preds["reference"]) == [by_id[i].caption for i in split.test]
    info = out.info
    train_captions = [by_id[i].caption for i in split.train]
    # the tiny LM was built from the training captions alone
    assert info["llm_revision"] == f"tiny-lm:{tiny_lm_key(train_captions)[:16]}"
    steps = 2 * -(-len(split.train) // 4)
    assert len(info["train_loss_curve"]) == steps
    assert info["trainable_params_projection"] == (64 + 1) * 8 * 96
    assert info["trainable_params"] == info["trainable_params_projection"] + info["trainable_params_lora"]
    assert info["settings"]["lr_projection"] == 4e-4 and info["decoding"]["max_new_tokens"] == 256
    assert info["n_generated_hit_max_new_tokens"] == 0

    baseline = preds.assign(generated=most_frequent_caption(train_captions))
    idx = np.random.default_rng(0).integers(0, len(preds), (50, len(preds)))
    model_scores = CM.evaluate_captions(preds, idx)
    base_scores = CM.evaluate_captions(baseline, idx)
    print({m: (round(model_scores[m]["value"], 3), round(base_scores[m]["value"], 3)) for m in model_scores})
    assert model_scores["rouge2"]["value"] > base_scores["rouge2"]["value"] + 0.1
    if CM.java_available():
        assert model_scores["cider"]["value"] > 2 * base_scores["cider"]["value"]
        assert model_scores["cider"]["value"] > base_scores["cider"]["value"] + 1.5


def test_protocol_requires_a_caption_for_every_image(skincap, tmp_path):
    card, data, split = skincap
    broken = TaskData(task=data.task, root=data.root, classes=[],
                      samples=[Sample(id=s.id, image=s.image, caption=None if s.id == split.train[0] else s.caption,
                                      source_label=s.source_label) for s in data.samples])
    protocol, ctx = _ctx(card, broken, split, DiseaseFeatures(), tmp_path)
    with pytest.raises(DatasetError, match=f"no caption.*{split.train[0]}"):
        protocol.run(ctx)
