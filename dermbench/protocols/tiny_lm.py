"""`dermbench/tiny-lm`: a small causal LM built from a task's training captions, for CPU runs.

The captioning protocol needs a causal LM whose weights stay frozen while LoRA adapters and
an image projection train. BioMistral-7B (the paper's LM) needs a GPU and a 15 GB download;
on DermSynth and in the tests the same protocol runs on this model instead:

- a byte-level BPE tokenizer trained with the ``tokenizers`` library on the TRAINING captions
  only: text, never images, never test captions (the prompt's words, which it never saw, are
  still encodable: the byte alphabet is complete);
- a 2-layer Mistral-architecture LM (the same module names as BioMistral: ``q_proj``,
  ``v_proj``, ...), hidden size 96, pre-trained here as a causal LM on the same captions.

Pre-training sequence (loss on the caption and its end token only)::

    <s> [INST] <8 slot tokens> Please describe this dermatology image: [/INST] {caption} </s>

The 8 slot positions are where the captioning protocol puts its image tokens. In pre-training
they hold a few tokens drawn at random from the caption itself (in 1 of 4 sequences they hold
padding, so the unconditional caption distribution is learnt too). Why: a 7B LM brings the
ability to read whatever its context holds; a 2-layer LM trained on captions after a constant
prompt learns to ignore everything before the caption, and then no projection can teach it to
look at image tokens within the protocol's two epochs. Reading the slot is the one in-context
skill the captioning protocol relies on, and this gives it to the small model from text alone.

It is built deterministically on first use and cached under
``<cache_dir>/tiny-lm/<sha256 of (sorted training captions, prompt, configuration)>[:16]/``
in the Hugging Face ``save_pretrained`` format, so ``AutoModelForCausalLM.from_pretrained``
loads it like any other LM. ``tiny_lm.json`` beside it records the pre-training loss curve.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Optional, Sequence

from dermbench.io import atomic_write_json, build_folder_once, sha256_bytes

TINY_LM_ID = "dermbench/tiny-lm"
BIOMISTRAL_ID = "BioMistral/BioMistral-7B"
TINY_LM_VERSION = 1

# "[INST]" / "[/INST]" are single tokens here, as in the Mistral v0.3 tokenizers.
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "[INST]", "[/INST]")

# (prefix, instruction, suffix) of the captioning prompt; the protocol passes its own settings.
DEFAULT_PROMPT = ("[INST]", "Please describe this dermatology image:", "[/INST]")

TINY_LM_CONFIG: dict[str, Any] = {
    "vocab_size": 512,  # upper bound for the BPE trainer; the model uses the trained size
    "hidden_size": 96,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 1024,
}

TINY_LM_PRETRAIN: dict[str, Any] = {
    "steps": 150,
    "batch_size": 16,
    "lr": 3e-3,
    "warmup_steps": 15,
    "weight_decay": 0.0,
    "slot_tokens": 8,  # the protocol's default number of image tokens
    "hint_tokens": 4,  # caption tokens placed in the slot (the rest of the slot is padding)
    "empty_slot_fraction": 0.25,
    "max_tokens": 256,  # a caption longer than this is cut for pre-training (counted in tiny_lm.json)
    "seed": 0,
}


def default_llm_for(data_root_is_dermsynth: bool) -> str:
    """The LM a captioning run uses when the user names none: tiny-lm on DermSynth, BioMistral-7B otherwise."""
    return TINY_LM_ID if data_root_is_dermsynth else BIOMISTRAL_ID


def tiny_lm_key(train_captions: Sequence[str], prompt: Sequence[str] = DEFAULT_PROMPT) -> str:
    """sha256 of what determines the model: the training captions (order-free), the prompt and the configuration."""
    body = {"version": TINY_LM_VERSION, "captions": sorted(str(c) for c in train_captions),
            "prompt": [str(p) for p in prompt], "config": TINY_LM_CONFIG, "pretrain": TINY_LM_PRETRAIN,
            "special_tokens": SPECIAL_TOKENS}
    return sha256_bytes(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8"))


def ensure_tiny_lm(train_captions: Sequence[str], prompt: Sequence[str] = DEFAULT_PROMPT,
                   cache_root: Optional[Path] = None, progress: bool = False) -> Path:
    """The cached tiny LM for these training captions and prompt, built on first use. Returns its folder."""
    from dermbench.config import cache_dir

    captions = [str(c) for c in train_captions]
    if not any(c.strip() for c in captions):
        raise ValueError("the tiny LM is trained on the task's training captions, and none were given")
    base = Path(cache_root) if cache_root else cache_dir() / "tiny-lm"
    target = base / tiny_lm_key(captions, prompt)[:16]
    # Built in a temporary folder, then renamed (see build_folder_once).
    return build_folder_once(target, "tiny_lm.json",
                             lambda tmp: build_tiny_lm(captions, tmp, prompt=prompt, progress=progress))


def prompt_text(prompt: Sequence[str]) -> str:
    """The captioning instruction as plain text, without its image tokens."""
    return " ".join(str(t) for t in prompt if str(t))


def prompt_ids(tokenizer, prompt: Sequence[str]) -> tuple[list[int], list[int]]:
    """Token ids before and after the image tokens: (<bos> prefix, instruction suffix).

    The captioning protocol and the tiny LM's pre-training both build prompts here, so the
    tokens around the image slot are the same in both.
    """
    prefix, instruction, suffix = (str(t) for t in prompt)

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return bos + encode(prefix), encode(" ".join(t for t in (instruction, suffix) if t))


def train_tokenizer(texts: Sequence[str], vocab_size: int):
    """Byte-level BPE on ``texts``, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # The full byte alphabet: any text (a user's prompt, an LM's output) stays encodable.
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   additional_special_tokens=["[INST]", "[/INST]"])


def build_tiny_lm(train_captions: Sequence[str], out_dir: Path, prompt: Sequence[str] = DEFAULT_PROMPT,
                  progress: bool = False) -> dict[str, Any]:
    """Train the tokenizer and pre-train the LM on ``train_captions``; save both into ``out_dir``."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    from dermbench.models.backbone import seeded

    captions = sorted(str(c) for c in train_captions)
    tokenizer = train_tokenizer(captions, int(TINY_LM_CONFIG["vocab_size"]))
    cfg = {k: v for k, v in TINY_LM_CONFIG.items() if k != "vocab_size"}
    config = MistralConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           tie_word_embeddings=True, sliding_window=None, **cfg)
    p = TINY_LM_PRETRAIN
    with seeded(int(p["seed"])):
        model = MistralForCausalLM(config)
    max_tokens = int(p["max_tokens"])
    encoded = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in captions]
    truncated = sum(len(ids) + 1 > max_tokens for ids in encoded)
    targets = [(ids + [tokenizer.eos_token_id])[:max_tokens] for ids in encoded]
    prefix, suffix = prompt_ids(tokenizer, prompt)
    threads = torch.get_num_threads()
    # Matrices of this size gain nothing from threads, and on a shared CPU OpenMP threads that
    # wait for each other make pre-training many times slower (measured: 17 s on 1 thread vs
    # 200 s on 2 threads on a loaded 2-core machine, with the same final loss).
    torch.set_num_threads(1)
    try:
        losses = pretrain(model, prefix, suffix, targets, tokenizer.pad_token_id, p, progress=progress)
    finally:
        torch.set_num_threads(threads)

    out_dir = Path(out_dir)
    with hf_progress_bars(progress):
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    record = {"id": TINY_LM_ID, "version": TINY_LM_VERSION, "key": tiny_lm_key(train_captions, prompt),
              "prompt": prompt_text(prompt), "n_captions": len(captions), "n_truncated": truncated,
              "vocab_size": len(tokenizer), "num_params": int(sum(t.numel() for t in model.parameters())),
              "config": TINY_LM_CONFIG, "pretrain": p, "loss_first": losses[0], "loss_last": losses[-1],
              "loss_curve": losses[:: max(1, len(losses) // 30)], "torch": torch.__version__}
    atomic_write_json(out_dir / "tiny_lm.json", record)
    return record


def pretrain(model, prefix: list[int], suffix: list[int], targets: list[list[int]], pad_id: int, p: dict[str, Any],
             progress: bool = False) -> list[float]:
    """Pre-train on ``prefix + slot + suffix + target`` with the loss on the target; returns every step's loss."""
    import torch

    from dermbench.progress import progress_bar

    g = torch.Generator().manual_seed(int(p["seed"]))
    opt = torch.optim.AdamW(model.parameters(), lr=float(p["lr"]), weight_decay=float(p["weight_decay"]))
    steps, warmup = int(p["steps"]), int(p["warmup_steps"])
    # linear warm-up, then linear decay to zero
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, 1.0 - max(0, s - warmup) / max(1, steps - warmup)))
    bs = min(int(p["batch_size"]), len(targets))
    slot, hints, empty = int(p["slot_tokens"]), int(p["hint_tokens"]), float(p["empty_slot_fraction"])
    context_len = len(prefix) + slot + len(suffix)
    model.train()
    losses: list[float] = []
    order = torch.randperm(len(targets), generator=g).tolist()
    pos = 0
    for _ in progress_bar(range(steps), step=("tiny-lm", "pre-train"), unit="step", enabled=progress):
        if pos + bs > len(order):
            order, pos = torch.randperm(len(targets), generator=g).tolist(), 0
        sequences = []
        for i in order[pos : pos + bs]:
            target = targets[i]
            fill = [pad_id] * slot
            if float(torch.rand((), generator=g)) >= empty:
                words = target[:-1]  # not the end token
                chosen = sorted(torch.randperm(len(words), generator=g)[: min(hints, len(words))].tolist())
                fill[: len(chosen)] = [words[j] for j in chosen]
            sequences.append(prefix + fill + suffix + target)
        pos += bs
        ids, mask, labels = pad_right(sequences, pad_id)
        labels[:, :context_len] = -100  # the slot's <pad> tokens stay visible: they are the "no hint" signal
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


@contextlib.contextmanager
def hf_progress_bars(enabled: bool):
    """transformers draws its own bars when it loads or saves weights; keep them off wherever dermbench's
    own bars are off (quiet runs, logs: :func:`dermbench.progress.progress_enabled`)."""
    from transformers.utils import logging as hf_logging

    from dermbench.progress import progress_enabled

    was_enabled = hf_logging.is_progress_bar_enabled()
    if not progress_enabled(enabled):
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def pad_right(batch: list[list[int]], pad_id: int):
    """(input_ids, attention_mask, labels) with padding on the right; padded positions get label -100."""
    import torch

    width = max(len(s) for s in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, s in enumerate(batch):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels
