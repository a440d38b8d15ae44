"""Captioning: frozen image encoder -> trainable projection -> LoRA-tuned causal LM (PROTOCOL.md).

The backbone's global feature (from the feature cache) is mapped by one linear layer to
``n_image_tokens`` vectors in the LM's input-embedding space. The LM stays frozen except for
LoRA adapters (peft) on ``lora_target_modules``. Each training sequence is

    <bos> [INST] <image tokens> Please describe this dermatology image: [/INST] <caption> <eos>

and the loss covers the caption and its end-of-sequence token only (label -100 elsewhere).
AdamW with one learning rate for the projection and one for LoRA, constant over training
(the protocol names no schedule). Test captions come from greedy decoding in batches; every
prompt has the same length (same text, same number of image tokens), so the left-padded
batch holds no padding at all.

LM choice (setting ``llm``): a local folder, a Hugging Face hub id already in the local cache
(never downloaded during a run), or ``dermbench/tiny-lm`` (:mod:`dermbench.protocols.tiny_lm`), a small
LM built from the training captions for CPU runs on DermSynth. The default is the paper's
BioMistral-7B; :func:`dermbench.protocols.tiny_lm.default_llm_for` says which one a runner should pass.
"""
from __future__ import annotations

import contextlib
import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from dermbench.data.sample import DatasetError, Sample
from dermbench.io import sha256_file
from dermbench.progress import progress_bar, step_name
from dermbench.protocols.base import Protocol, ProtocolOutput, RunContext
from dermbench.data.synth import is_dermsynth
from dermbench.protocols.tiny_lm import (BIOMISTRAL_ID, DEFAULT_PROMPT, TINY_LM_ID, default_llm_for, ensure_tiny_lm,
                               hf_progress_bars, pad_right, prompt_ids)

CAPTION_DEFAULTS: dict[str, Any] = {
    "llm": BIOMISTRAL_ID,
    "n_image_tokens": 8,
    "lora_r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.05,
    "lora_target_modules": "q_proj,v_proj",  # comma-separated module names of the LM
    "lr_projection": 4e-4,
    "lr_lora": 8e-5,
    "weight_decay": 0.05,
    "epochs": 2,
    "batch_size": 4,
    "max_caption_tokens": 256,  # longer training captions are cut (counted in info)
    "max_new_tokens": 256,
    "decode_batch_size": 16,
    "prompt_prefix": DEFAULT_PROMPT[0],
    "instruction": DEFAULT_PROMPT[1],
    "prompt_suffix": DEFAULT_PROMPT[2],
    "batch_size_features": 32,
}

__all__ = ["CAPTION_DEFAULTS", "Captioning", "CaptionModel", "LLMNotAvailable", "build_caption_model", "default_llm_for",
           "generate_captions", "load_llm", "most_frequent_caption", "train_caption_model"]


class LLMNotAvailable(FileNotFoundError):
    """The configured LM is neither a local folder nor in the local Hugging Face cache."""


# --- the LM -----------------------------------------------------------------------------------------
def load_llm(llm: str, train_captions: Sequence[str], device: str = "cpu", progress: bool = False,
             data_is_dermsynth: bool = False, prompt: Sequence[str] = DEFAULT_PROMPT):
    """(model, tokenizer, info) for the ``llm`` setting; the model is frozen and in eval mode.

    ``dermbench/tiny-lm`` is built from ``train_captions`` on first use; any other value is a
    local folder or a hub id that must already be in the local Hugging Face cache.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    info: dict[str, Any] = {"llm": llm}
    if llm == TINY_LM_ID:
        path = ensure_tiny_lm(train_captions, prompt=prompt, progress=progress)
        record = json.loads((path / "tiny_lm.json").read_text())
        info.update(llm_source=str(path), llm_revision=f"tiny-lm:{record['key'][:16]}",
                    llm_weights_sha256=sha256_file(path / "model.safetensors"),
                    tiny_lm={k: record[k] for k in ("n_captions", "n_truncated", "vocab_size", "num_params", "pretrain",
                                                    "loss_first", "loss_last")})
    else:
        path, revision = _resolve_pretrained(llm, data_is_dermsynth)
        info.update(llm_source=str(path), llm_revision=revision)
    # bf16 weights on GPU (the paper's precision, half the memory of fp32); fp32 on CPU, where
    # bf16 matmuls are slow.
    on_gpu = str(device).startswith("cuda")
    dtype = torch.bfloat16 if on_gpu else torch.float32
    # On GPU the weights load straight onto the device, not first into CPU memory (15 GB for 7B).
    placement = {"device_map": str(device)} if on_gpu else {}
    with hf_progress_bars(progress):
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **placement)
    model.requires_grad_(False)
    model.eval()
    info["llm_params"] = int(sum(p.numel() for p in model.parameters()))
    info["llm_dtype"] = str(dtype).replace("torch.", "")
    return (model if on_gpu else model.to(device)), tokenizer, info


def _resolve_pretrained(llm: str, data_is_dermsynth: bool) -> tuple[Path, str]:
    """A local folder, or the cached snapshot of a hub id: (path, revision)."""
    local = Path(llm).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise LLMNotAvailable(f"caption.llm={llm}: the folder has no config.json; give a Hugging Face model folder "
                                  "(config.json, tokenizer files, weights)")
        # The config and the tokenizer identify a local model without hashing gigabytes of weights.
        ident = [f"{f.name}:{sha256_file(f)[:16]}" for f in sorted(local.iterdir())
                 if f.name in ("config.json", "tokenizer.json", "tokenizer.model", "model.safetensors.index.json")]
        return local, "local:" + ",".join(ident)
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        # local_files_only: a run never starts a multi-GB download behind the user's back.
        path = Path(snapshot_download(llm, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError) as exc:
        hint = (" This is DermSynth: its captioning runs use the CPU-sized LM, --set caption.llm=dermbench/tiny-lm."
                if data_is_dermsynth else f" On DermSynth use --set caption.llm={TINY_LM_ID} instead.")
        raise LLMNotAvailable(
            f"caption LM {llm!r} is neither a local folder nor in the local Hugging Face cache ({constants.HF_HUB_CACHE}); "
            f"dermbench never downloads it during a run. Download it once on a machine with internet access: "
            f"`hf download {llm}` (BioMistral-7B is about 15 GB; set HF_HOME to choose where it goes), "
            f"or pass a local folder with --set caption.llm=/path/to/model.{hint}") from exc
    return path, f"hf:{llm}@{path.name}"  # snapshot folders are named by commit


# --- the trainable model ---------------------------------------------------------------------------------
class CaptionModel:
    """The projection, the LoRA-wrapped LM and the fixed prompt pieces, with loss and greedy decoding."""

    def __init__(self, llm, tokenizer, projection, n_image_tokens: int, prefix_ids: list[int], suffix_ids: list[int]):
        self.llm = llm
        self.tokenizer = tokenizer
        self.projection = projection
        self.n_image_tokens = n_image_tokens
        self.prefix_ids = prefix_ids
        self.suffix_ids = suffix_ids
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @property
    def prompt_length(self) -> int:
        return len(self.prefix_ids) + self.n_image_tokens + len(self.suffix_ids)

    def trainable_parameters(self) -> dict[str, Any]:
        named = {f"projection.{n}": p for n, p in self.projection.named_parameters()}
        named.update({f"llm.{n}": p for n, p in self.llm.named_parameters() if p.requires_grad})
        return named

    def prompt_embeddings(self, features):
        """[B, prompt_length, hidden]: embedded prefix, projected image tokens, embedded instruction."""
        import torch

        embed = self.llm.get_input_embeddings()
        device = embed.weight.device
        b = features.shape[0]
        image = self.projection(features.to(device)).view(b, self.n_image_tokens, -1).to(embed.weight.dtype)
        prefix = embed(torch.tensor(self.prefix_ids, device=device)).expand(b, -1, -1)
        suffix = embed(torch.tensor(self.suffix_ids, device=device)).expand(b, -1, -1)
        return torch.cat([prefix, image, suffix], dim=1)

    def loss(self, features, caption_ids: list[list[int]]):
        """Mean next-token loss over the caption tokens (and their eos) of the batch."""
        import torch

        device = self.llm.get_input_embeddings().weight.device
        ids, mask, labels = pad_right([c + [self.eos_id] for c in caption_ids], self.pad_id)
        ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
        prompt = self.prompt_embeddings(features)
        b, p = prompt.shape[0], prompt.shape[1]
        embeds = torch.cat([prompt, self.llm.get_input_embeddings()(ids)], dim=1)
        attention = torch.cat([torch.ones((b, p), dtype=mask.dtype, device=device), mask], dim=1)
        full_labels = torch.cat([torch.full((b, p), -100, dtype=labels.dtype, device=device), labels], dim=1)
        return self.llm(inputs_embeds=embeds, attention_mask=attention, labels=full_labels).loss

    def generate(self, features, max_new_tokens: int) -> tuple[list[str], int]:
        """Greedy captions for a batch of features, and how many hit ``max_new_tokens`` without ending."""
        import torch
        from transformers import GenerationConfig

        embeds = self.prompt_embeddings(features)
        attention = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                  eos_token_id=self.eos_id, pad_token_id=self.pad_id)
        out = self.llm.generate(inputs_embeds=embeds, attention_mask=attention, generation_config=config)
        # Given only embeddings, generate() returns the new tokens alone.
        unfinished = int((~(out == self.eos_id).any(dim=1)).sum())
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        return [t.strip() for t in texts], unfinished


def build_caption_model(llm, tokenizer, feature_dim: int, config: dict[str, Any], seed: int) -> CaptionModel:
    """Wrap a frozen LM with LoRA and add a fresh projection (both seeded)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from dermbench.models.backbone import seeded

    targets = [t.strip() for t in str(config["lora_target_modules"]).split(",") if t.strip()]
    names = {n.rsplit(".", 1)[-1] for n, _ in llm.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in llm.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ValueError(f"caption.lora_target_modules: the LM has no module named {missing}; its linear layers are "
                         f"named {linear}. Set e.g. --set caption.lora_target_modules={','.join(linear[:2])}")
    lora = LoraConfig(r=int(config["lora_r"]), lora_alpha=int(config["lora_alpha"]),
                      lora_dropout=float(config["lora_dropout"]), target_modules=targets, bias="none",
                      task_type="CAUSAL_LM")
    embed = llm.get_input_embeddings()
    hidden = embed.weight.shape[1]
    k = int(config["n_image_tokens"])
    with seeded(seed), warnings.catch_warnings():
        # peft reads transformers' renamed `is_gradient_checkpointing`; the notice is for peft's authors.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = get_peft_model(llm, lora)
        projection = torch.nn.Linear(feature_dim, k * hidden).to(embed.weight.device)  # fp32: it trains

    prefix, suffix = prompt_ids(tokenizer, prompt_of(config))
    return CaptionModel(peft_model, tokenizer, projection, k, prefix, suffix)


def prompt_of(config: dict[str, Any]) -> tuple[str, str, str]:
    return str(config["prompt_prefix"]), str(config["instruction"]), str(config["prompt_suffix"])


def _autocast(device: str):
    import torch

    return torch.autocast("cuda", dtype=torch.bfloat16) if str(device).startswith("cuda") else contextlib.nullcontext()


def train_caption_model(model: CaptionModel, features: np.ndarray, caption_ids: list[list[int]], config: dict[str, Any],
                        seed: int, device: str = "cpu", progress: bool = False, step: str = "captioning") -> list[float]:
    """AdamW on projection (lr_projection) and LoRA (lr_lora); returns the loss of every step.

    ``step`` names the progress bar (``<task> · captioning``)."""
    import torch

    lora_params = [p for n, p in model.llm.named_parameters() if p.requires_grad]
    if not lora_params:
        raise RuntimeError("no LoRA parameter is trainable: peft found no target module")
    opt = torch.optim.AdamW([
        {"params": list(model.projection.parameters()), "lr": float(config["lr_projection"])},
        {"params": lora_params, "lr": float(config["lr_lora"])},
    ], weight_decay=float(config["weight_decay"]))
    x = torch.as_tensor(features, dtype=torch.float32)
    bs, epochs = int(config["batch_size"]), int(config["epochs"])
    g = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    model.llm.train()  # LoRA dropout on; the frozen base has no dropout of its own in use
    model.projection.train()
    # LoRA dropout draws from the global generator: fork it so that a run is reproducible and
    # leaves the caller's random state alone.
    steps_per_epoch = -(-len(x) // bs)
    # one bar over every step of every epoch, so its time left is the whole training's
    with torch.random.fork_rng(devices=[]), progress_bar(total=epochs * steps_per_epoch, step=(step, "train"),
                                                         unit="step", enabled=progress) as bar:
        torch.manual_seed(seed)
        for epoch in range(epochs):
            bar.set_postfix_str(f"epoch {epoch + 1}/{epochs}" + (f", loss {losses[-1]:.4f}" if losses else ""),
                                refresh=False)
            order = torch.randperm(len(x), generator=g).tolist()
            for start in range(0, len(order), bs):
                batch = order[start : start + bs]
                with _autocast(device):
                    loss = model.loss(x[batch], [caption_ids[i] for i in batch])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                bar.update()
    model.llm.eval()
    model.projection.eval()
    return losses


def generate_captions(model: CaptionModel, features: np.ndarray, max_new_tokens: int, batch_size: int,
                      device: str = "cpu", progress: bool = False, step: str = "captioning") -> tuple[list[str], int]:
    """Greedy captions for every row of ``features``, in order; and how many hit the token limit."""
    import torch

    x = torch.as_tensor(features, dtype=torch.float32)
    texts: list[str] = []
    unfinished = 0
    with torch.inference_mode(), _autocast(device), \
            progress_bar(total=len(x), step=(step, "decode"), unit="img", enabled=progress) as bar:
        for start in range(0, len(x), batch_size):
            batch_texts, batch_unfinished = model.generate(x[start : start + batch_size], max_new_tokens)
            texts += batch_texts
            unfinished += batch_unfinished
            bar.update(len(batch_texts))
    return texts, unfinished


def most_frequent_caption(captions: Sequence[str]) -> str:
    """The most frequent caption (ties: the alphabetically first), the constant-caption baseline."""
    counts = Counter(captions)
    best = max(counts.values())
    return min(c for c, n in counts.items() if n == best)


def _captions(samples: list[Sample], part: str) -> list[str]:
    missing = [s.id for s in samples if not (s.caption and s.caption.strip())]
    if missing:
        raise DatasetError(f"{len(missing)} {part} sample(s) have no caption (e.g. {missing[:3]}); the captioning "
                           "protocol needs a caption for every image: check the dataset's caption column")
    return [s.caption.strip() for s in samples]  # type: ignore[union-attr]


class Captioning(Protocol):
    name = "caption"
    kind = "caption"
    defaults = dict(CAPTION_DEFAULTS)
    requires = ("peft", "pycocoevalcap", "rouge_score")
    extra = "captioning"

    def data_defaults(self, data) -> dict[str, Any]:
        # DermSynth's captions are read by the CPU-sized LM built from its training captions;
        # real data keeps the paper's BioMistral-7B.
        return {"llm": default_llm_for(is_dermsynth(data.root))}

    def run(self, ctx: RunContext) -> ProtocolOutput:
        from dermbench.stats.caption_metrics import skipped_metrics

        cfg = ctx.config
        train, test = ctx.train, ctx.test
        train_captions, test_captions = _captions(train, "training"), _captions(test, "test")
        features = {part: np.asarray(ctx.features.get(
            ctx.get_backbone(), samples, kind="global", view="eval", batch_size=int(cfg["batch_size_features"]),
            device=ctx.device, progress=ctx.progress, desc=f"{ctx.card.name} {part}"), dtype=np.float32)
            for part, samples in (("train", train), ("test", test))}

        dermsynth = is_dermsynth(ctx.data.root)
        llm, tokenizer, llm_info = load_llm(str(cfg["llm"]), train_captions, ctx.device, ctx.progress, dermsynth,
                                            prompt_of(cfg))
        model = build_caption_model(llm, tokenizer, features["train"].shape[1], cfg, ctx.seed)
        max_tokens = int(cfg["max_caption_tokens"])
        encoded = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in train_captions]
        n_truncated = sum(len(ids) > max_tokens for ids in encoded)
        caption_ids = [ids[:max_tokens] for ids in encoded]

        step = step_name(ctx.card.name, self.name)
        losses = train_caption_model(model, features["train"], caption_ids, cfg, ctx.seed, ctx.device, ctx.progress,
                                     step=step)
        generated, unfinished = generate_captions(model, features["test"], int(cfg["max_new_tokens"]),
                                                  int(cfg["decode_batch_size"]), ctx.device, ctx.progress, step=step)
        predictions = pd.DataFrame({"sample_id": [s.id for s in test], "reference": test_captions,
                                    "generated": generated})

        trainable = model.trainable_parameters()
        n_projection = sum(p.numel() for n, p in trainable.items() if n.startswith("projection."))
        n_lora = sum(p.numel() for n, p in trainable.items() if n.startswith("llm."))
        steps_per_epoch = max(1, -(-len(train) // int(cfg["batch_size"])))
        baseline = most_frequent_caption(train_captions)
        info = {
            "settings": dict(cfg),
            **llm_info,
            "data_is_dermsynth": dermsynth,
            "prompt": f"{cfg['prompt_prefix']} <{model.n_image_tokens} image tokens> {cfg['instruction']} {cfg['prompt_suffix']}",
            "prompt_token_ids": {"prefix": model.prefix_ids, "suffix": model.suffix_ids},
            "image_feature_dim": int(features["train"].shape[1]),
            "llm_hidden_size": int(llm.get_input_embeddings().weight.shape[1]),
            "trainable_params": int(n_projection + n_lora),
            "trainable_params_projection": int(n_projection),
            "trainable_params_lora": int(n_lora),
            "precision": "bf16 autocast, bf16 LM weights" if str(ctx.device).startswith("cuda") else "fp32",
            "train_loss_curve": losses,
            "train_loss_epoch_mean": [float(np.mean(losses[e * steps_per_epoch : (e + 1) * steps_per_epoch]))
                                      for e in range(int(cfg["epochs"]))],
            "n_train_captions_truncated": int(n_truncated),
            "decoding": {"strategy": "greedy", "max_new_tokens": int(cfg["max_new_tokens"]),
                         "batch_size": int(cfg["decode_batch_size"]), "padding_side": "left",
                         "note": "every prompt has the same length, so batches hold no padding"},
            "n_generated_hit_max_new_tokens": int(unfinished),
            "n_generated_empty": int(sum(not g for g in generated)),
            "most_frequent_train_caption": baseline,
            "most_frequent_train_caption_share": train_captions.count(baseline) / len(train_captions),
            "skipped_metrics": skipped_metrics(),
        }
        return ProtocolOutput(predictions=predictions, kind=self.kind, n_train=len(train), n_test=len(test), info=info)
