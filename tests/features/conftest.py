"""Small JPEGs and the random-vit backbone shared by the feature-cache tests."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest


def write_jpegs(folder: Path, n: int, seed: int = 0) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"{i:03d}.jpg"
        Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


@pytest.fixture
def samples(tmp_path):
    from dermbench.data.sample import Sample

    return [Sample(id=str(i), image=p, label=0) for i, p in enumerate(write_jpegs(tmp_path / "images", 12))]


@pytest.fixture(scope="session")
def backbone():
    from dermbench.models import registry

    return registry.build("random-vit", weights="random")


@pytest.fixture(scope="session")
def legacy_cache_module():
    """The feature cache of dermbench before shards (commit 0316970), which wrote one file per image."""
    spec = importlib.util.spec_from_file_location("legacy_cache_v1", Path(__file__).with_name("legacy_cache_v1.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
