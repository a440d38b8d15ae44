"""User configuration: data root, weights paths, cache and output folders.

Resolution order for every setting: command-line flag > environment variable >
config file (``$DERMBENCH_CONFIG`` or ``~/.config/dermbench/config.toml``) > default.

Example config.toml::

    data_root = "/data/derm"          # each task's official folder lies below it
    cache_dir = "/scratch/dermbench"  # feature cache, DermSynth copy, bootstrap indices
    [weights]
    dermino = "/models/teacher_checkpoint.pth"
"""
from __future__ import annotations

import os
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

ENV_DATA_ROOT = "DERMBENCH_DATA_ROOT"
ENV_CACHE_DIR = "DERMBENCH_CACHE"
ENV_CONFIG = "DERMBENCH_CONFIG"


def config_path() -> Path:
    return Path(os.environ.get(ENV_CONFIG, Path.home() / ".config" / "dermbench" / "config.toml"))


@lru_cache(maxsize=None)
def _load(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        return {}
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {p}: not valid TOML ({exc}); fix it or point {ENV_CONFIG} elsewhere") from exc


def load_config() -> dict[str, Any]:
    return _load(str(config_path()))


def resolve_data_root(flag: Optional[str | Path]) -> tuple[Optional[Path], str]:
    """(data root or None, where it came from). None means: use the cached DermSynth copy."""
    if flag:
        return Path(flag).expanduser(), "--data-root"
    if os.environ.get(ENV_DATA_ROOT):
        return Path(os.environ[ENV_DATA_ROOT]).expanduser(), f"${ENV_DATA_ROOT}"
    cfg = load_config()
    if cfg.get("data_root"):
        return Path(cfg["data_root"]).expanduser(), f"data_root in {config_path()}"
    return None, "default (DermSynth)"


def cache_dir() -> Path:
    if os.environ.get(ENV_CACHE_DIR):
        return Path(os.environ[ENV_CACHE_DIR]).expanduser()
    cfg = load_config()
    if cfg.get("cache_dir"):
        return Path(cfg["cache_dir"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dermbench"


def weights_from_config(model_key: str) -> Optional[Path]:
    """Per-model weights path: $DERMBENCH_WEIGHTS_<KEY> (upper-case, '-' -> '_') or [weights] in the config."""
    env = "DERMBENCH_WEIGHTS_" + model_key.upper().replace("-", "_")
    if os.environ.get(env):
        return Path(os.environ[env]).expanduser()
    cfg = load_config().get("weights", {})
    if model_key in cfg:
        return Path(cfg[model_key]).expanduser()
    return None
