"""Where a backbone's weights come from, and loading them strictly.

Resolution order (first hit wins):
1. ``--weights PATH`` (or ``'random'`` for the untrained architecture);
2. a per-model path: ``$DERMBENCH_WEIGHTS_<KEY>`` or ``[weights] <key> = ...`` in the config file;
3. the local Hugging Face cache (``meta.hub_id`` / ``meta.weights_filename``), never contacting the hub;
4. the dermbench weights folder: ``<cache>/weights/<key>/<weights_filename>``;
5. a hub download, only when ``HF_HUB_OFFLINE`` is not set and the release is on the hub.
Otherwise: an error that says where the release lives, which file is expected and where to put it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Union

from dermbench.config import cache_dir, weights_from_config
from dermbench.models.registry import BackboneMeta


class WeightsError(FileNotFoundError):
    """Weights could not be found or do not fit the architecture."""


def weights_folder(meta: BackboneMeta) -> Path:
    return cache_dir() / "weights" / meta.key


def resolve_weights(meta: BackboneMeta, weights: Optional[str]) -> Union[Path, str]:
    """A path to the weights file, or the string 'random'."""
    if weights == "random":
        return "random"
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"--weights {weights}: no such file")
        return path
    configured = weights_from_config(meta.key)
    if configured is not None:
        if not configured.is_file():
            raise WeightsError(f"weights for {meta.key} configured as {configured} (environment or config file), but no such file")
        return configured
    if meta.hub_id and meta.weights_filename:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(meta.hub_id, meta.weights_filename)
        if isinstance(cached, str) and os.path.isfile(cached):
            return Path(cached)
    local = weights_folder(meta) / (meta.weights_filename or "weights.pth")
    if local.is_file():
        return local
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}
    if meta.hub_id and meta.weights_filename and not offline:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(meta.hub_id, meta.weights_filename))
    where = f"the Hugging Face hub ({meta.hub_id}, file {meta.weights_filename}) or " if meta.hub_id else ""
    raise WeightsError(
        f"no weights for {meta.key}. The release lives at: {meta.weights_source}. Put the file "
        f"{meta.weights_filename or '(the released checkpoint)'} at {local}, or pass --weights PATH, or set "
        f"DERMBENCH_WEIGHTS_{meta.key.upper().replace('-', '_')}=PATH"
        + (f"; or fetch it from {where}unset HF_HUB_OFFLINE to let dermbench download it" if meta.hub_id else "")
        + ". Use --weights random for the untrained architecture."
    )


def load_state_dict_file(path: Path) -> dict:
    """A state dict (or checkpoint dict) from .safetensors, .pth/.pt/.bin/.torch (weights_only)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: cannot be read as a PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc


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
    module.load_state_dict(state_dict, strict=True)


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

    path = resolve_weights(meta, weights)
    if path == "random":
        return "random:" + sha256_state_dict(module.state_dict())[:16]
    state = load_state_dict_file(path)
    if convert is not None:
        state = convert(state)
    load_strict(module, state, path, getattr(convert, "__name__", ""))
    return sha256_file(path)
