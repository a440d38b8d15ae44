"""Where a backbone's weights come from, and loading them strictly.

Resolution order (first hit wins):
1. ``--weights PATH`` (or ``'random'`` for the untrained architecture);
2. a per-model path: ``$DERMBENCH_WEIGHTS_<KEY>`` or ``[weights] <key> = ...`` in the config file;
3. the local Hugging Face cache (``meta.hub_id`` / ``meta.weights_filename``, then ``meta.alternative_hub``),
   never contacting the hub;
4. the dermbench weights folder: ``<cache>/weights/<key>/<weights_filename>`` or one of ``meta.alternative_files``
   (e.g. DINOv2's torch.hub ``dinov2_vitb14_pretrain.pth``);
5. a hub download, only when ``HF_HUB_OFFLINE`` is not set and the release is on the hub.
Otherwise: an error that says where the release lives, which file is expected and where to put it.

Files are read by content, not by name (:func:`detect_format`).
"""
from __future__ import annotations

import contextlib
import contextvars
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

from dermbench.config import cache_dir, weights_from_config
from dermbench.models.registry import BackboneMeta


class WeightsError(FileNotFoundError):
    """Weights could not be found or do not fit the architecture."""


def weights_folder(meta: BackboneMeta) -> Path:
    return cache_dir() / "weights" / meta.key


def expected_files(meta: BackboneMeta) -> list[str]:
    """File names the release ships under (the first is the one dermbench asks for)."""
    names = [meta.weights_filename or "weights.pth", *meta.alternative_files]
    return list(dict.fromkeys(Path(n).name for n in names))  # hub paths: the weights folder holds the bare name


def hub_files(meta: BackboneMeta) -> list[tuple[str, str]]:
    """(hub repo, file) pairs the release is published as, the canonical one first."""
    pairs = [(meta.hub_id, meta.weights_filename)] if meta.hub_id and meta.weights_filename else []
    return pairs + [tuple(p) for p in meta.alternative_hub]


def env_variable(meta: BackboneMeta) -> str:
    return "DERMBENCH_WEIGHTS_" + meta.key.upper().replace("-", "_")


def find_local_weights(meta: BackboneMeta) -> tuple[Optional[Path], str]:
    """The release file if it is on this machine (never contacting the hub): (path, where found),
    or (None, '') . Order: environment/config, the local Hugging Face cache, the weights folder."""
    configured = weights_from_config(meta.key)
    if configured is not None:
        if not configured.is_file():
            raise WeightsError(f"weights for {meta.key} configured as {configured} ({env_variable(meta)} or the "
                               "config file's [weights] table), but no such file")
        return configured, "configured"
    for repo, filename in hub_files(meta):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo, filename)
        if isinstance(cached, str) and os.path.isfile(cached):
            return Path(cached), f"Hugging Face cache ({repo})"
    folder = weights_folder(meta)
    for name in expected_files(meta):
        if (folder / Path(name).name).is_file():
            return folder / Path(name).name, "dermbench weights folder"
    return None, ""


def resolve_weights(meta: BackboneMeta, weights: Optional[str]) -> Union[Path, str]:
    """A path to the weights file, or the string 'random'."""
    if weights == "random":
        return "random"
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"--weights {weights}: no such file")
        return path
    found, _ = find_local_weights(meta)
    if found is not None:
        return found
    local = weights_folder(meta) / Path(meta.weights_filename or "weights.pth").name
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}
    failed = ""
    if meta.hub_id and meta.weights_filename and not offline:
        from huggingface_hub import hf_hub_download

        try:
            return Path(hf_hub_download(meta.hub_id, meta.weights_filename))
        except Exception as exc:  # no network, no such repo, gated: say what to do instead of a hub traceback
            failed = f" (downloading {meta.hub_id}/{meta.weights_filename} failed: {type(exc).__name__})"
    where = f"the Hugging Face hub ({meta.hub_id}, file {meta.weights_filename}) or " if meta.hub_id else ""
    others = [n for n in expected_files(meta)[1:]]
    raise WeightsError(
        f"no weights for {meta.key}{failed}. The release lives at: {meta.weights_source}. Put the file "
        f"{meta.weights_filename or '(the released checkpoint)'}"
        + (f" (or {', '.join(others)})" if others else "")
        + f" at {local.parent}/, or pass --weights PATH, or set {env_variable(meta)}=PATH"
        + (f"; or fetch it from {where}unset HF_HUB_OFFLINE to let dermbench download it" if meta.hub_id else "")
        + ". Use --weights random for the untrained architecture."
    )


# --- the container format, found from the file's first bytes (never from its name) --------------
SAFETENSORS, TORCH_ZIP, TORCH_LEGACY = "safetensors", "torch-zip", "torch-legacy-pickle"


def detect_format(path: Path) -> str:
    """'safetensors' | 'torch-zip' | 'torch-legacy-pickle', read from the file's content.

    Release files do not always say what they are in their name: MedImageInsight's
    ``medimageinsigt-v1.0.0.pt`` is a safetensors file (its own loader reads it with
    ``safetensors.torch.load_file``). safetensors starts with an 8-byte little-endian header
    length followed by a JSON header (``{``); ``torch.save`` since PyTorch 1.6 writes a zip
    archive (``PK\\x03\\x04``); older ``torch.save`` files are a pickle stream (``\\x80`` + protocol).
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(9)
    size = path.stat().st_size
    if len(head) == 9 and head[8:9] == b"{":
        header_len = int.from_bytes(head[:8], "little")
        if 0 < header_len <= size - 8:
            return SAFETENSORS
    if head[:4] == b"PK\x03\x04":
        return TORCH_ZIP
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return TORCH_LEGACY
    raise WeightsError(
        f"{path}: not a weights file dermbench can read (first bytes {head[:8]!r}): expected safetensors, "
        "a torch.save zip archive or a legacy torch pickle. Is the download complete (not an HTML page or a "
        "Git LFS pointer)?"
    )


def load_state_dict_file(path: Path, mmap: bool = False) -> dict:
    """A state dict (or checkpoint dict) from a weights file, whatever its suffix; the format is
    detected by content (:func:`detect_format`). Pickles load with ``weights_only=True``.
    ``mmap``: map a zip checkpoint instead of reading it (inspection of large files)."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt == SAFETENSORS:
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise WeightsError(f"{path}: a safetensors header, but the file cannot be read ({type(exc).__name__}: {exc})") from exc
    import torch

    try:
        if path.name.endswith(".safetensors"):
            # torch.load itself picks safetensors by this suffix; a file object makes it read the content
            with open(path, "rb") as f:
                return torch.load(f, map_location="cpu", weights_only=True)
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap and fmt == TORCH_ZIP)
    except Exception as exc:
        raise WeightsError(f"{path}: cannot be read as a PyTorch checkpoint ({fmt}; {type(exc).__name__}: {exc})") from exc


def load_strict(module, state_dict: dict, source: Path, converter_name: str = "") -> None:
    """Load with strict=True; on mismatch, an error listing the missing and unexpected keys."""
    own = set(module.state_dict())
    given = set(state_dict)
    missing, unexpected = sorted(own - given), sorted(given - own)
    if missing or unexpected:
        via = f" after conversion by {converter_name}" if converter_name else ""
        raise WeightsError(
            f"{source}: the weights do not fit the architecture{via}: "
            f"{len(missing)} missing key(s) {missing[:8]}{' ...' if len(missing) > 8 else ''}, "
            f"{len(unexpected)} unexpected key(s) {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}. "
            "Is this the right file for this model?"
        )
    _materialize_if_meta(module)
    module.load_state_dict(state_dict, strict=True)


def _materialize_if_meta(module) -> None:
    """Real (uninitialised) CPU memory for a module built on the meta device, before the strict load
    fills every tensor of it; InitNeeded if some parameter or buffer is not in its state dict."""
    import torch

    if not any(t.is_meta for t in (*module.parameters(), *module.buffers())):
        return
    in_state = {id(t) for t in module.state_dict(keep_vars=True).values()}
    if any(id(t) not in in_state for t in (*module.parameters(), *module.buffers())):
        from dermbench.models.registry import InitNeeded

        raise InitNeeded(type(module).__name__)
    module.to_empty(device=torch.device("cpu"))


def unwrap(obj: dict, keys: tuple[str, ...] = ("state_dict", "model", "module")) -> dict:
    """Checkpoints often nest the weights under one of ``keys``."""
    for k in keys:
        if isinstance(obj, dict) and k in obj and isinstance(obj[k], dict):
            return obj[k]
    return obj


def load_weights_into(module, meta: BackboneMeta, weights: Optional[str],
                      convert: Optional[Callable[[dict], dict]] = None) -> str:
    """Resolve, convert, strictly load; returns the weights' sha256, or 'random:<hash>' when the
    module keeps its (seeded, see :func:`dermbench.models.backbone.seeded`) random initialisation."""
    from dermbench.models.backbone import sha256_state_dict
    from dermbench.io import sha256_file

    log = _LOAD_TARGETS.get()
    if log is not None:
        log.append(LoadTarget(module=module, meta=meta, convert=convert))
        if log.dry:  # only the architecture is wanted (it may live on the meta device): no file, no hash
            return "architecture-only"
    path = resolve_weights(meta, weights)
    if path == "random":
        return "random:" + sha256_state_dict(module.state_dict())[:16]
    state = load_state_dict_file(path)
    if convert is not None:
        state = convert(state)
    load_strict(module, state, path, getattr(convert, "__name__", ""))
    return sha256_file(path)


@dataclass
class LoadTarget:
    """What a builder loads a release file into, and through which converter (for `weights check`)."""

    module: object
    meta: BackboneMeta
    convert: Optional[Callable[[dict], dict]]


_LOAD_TARGETS: contextvars.ContextVar[Optional[list]] = contextvars.ContextVar("dermbench_load_targets", default=None)


class _LoadLog(list):
    dry = False


@contextlib.contextmanager
def recording_load_targets(dry: bool = False):
    """Inside this block every :func:`load_weights_into` call is recorded: building a backbone with
    ``weights='random'`` then tells which module and converter a release file would go through.
    ``dry``: load nothing and hash nothing, so that the backbone can be built on ``torch.device('meta')``
    (its parameters' names and shapes without allocating or initialising them)."""
    log = _LoadLog()
    log.dry = dry
    token = _LOAD_TARGETS.set(log)
    try:
        yield log
    finally:
        _LOAD_TARGETS.reset(token)
