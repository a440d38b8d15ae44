"""The sharded feature cache: same features as the per-image cache, old caches read, one decode per image."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from dermbench.features import FeatureCache, ImageHashes

REQUESTS = [("global", "eval"), ("tokens", "seg"), ("levels", "seg")]


def _old_features(legacy_cache_module, root, backbone, samples):
    old = legacy_cache_module.FeatureCache(root)
    return {(k, v): old.get(backbone, samples, kind=k, view=v) for k, v in REQUESTS}


def _assert_same(a, b):
    if isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert x.dtype == y.dtype and np.array_equal(x, y)
    else:
        assert a.dtype == b.dtype and np.array_equal(a, b)


@pytest.mark.parametrize("workers", [0, 2])
def test_features_bit_identical_to_per_image_cache(tmp_path, samples, backbone, legacy_cache_module, workers):
    """On the CPU the sharded cache stores exactly the bytes the per-image cache of earlier versions
    computed, whatever the number of decode workers and however the images fall into shards."""
    old = _old_features(legacy_cache_module, tmp_path / "old", backbone, samples)
    cache = FeatureCache(tmp_path / "new", workers=workers, shard_size=5)
    new = cache.extract(backbone, samples, REQUESTS, batch_size=4)
    for req in REQUESTS:
        _assert_same(new[req], old[req])
    # every image decoded once for the three requests; 3 shards (5 + 5 + 2 images) per request
    assert cache.stats["decoded"] == len(samples) and cache.stats["computed"] == 3 * len(samples)
    folder = next((tmp_path / "new" / "features").iterdir()) / "global-eval"
    assert len(list(folder.glob("*.index.json"))) == 3
    # warm: read back through the memory-mapped shards, in any order and with repeats
    order = [samples[i] for i in (11, 0, 3, 3, 7)]
    _assert_same(cache.get(backbone, order, kind="tokens", view="seg"), old[("tokens", "seg")][[11, 0, 3, 3, 7]])
    assert cache.stats["computed"] == 3 * len(samples)


def test_reads_per_image_cache_of_earlier_versions(tmp_path, samples, backbone, legacy_cache_module):
    old = _old_features(legacy_cache_module, tmp_path / "cache", backbone, samples)
    cache = FeatureCache(tmp_path / "cache", workers=0)
    got = cache.extract(backbone, samples, REQUESTS)
    assert cache.stats["computed"] == 0 and cache.stats["legacy_hits"] == 3 * len(samples)
    for req in REQUESTS:
        _assert_same(got[req], old[req])
    assert not list((tmp_path / "cache" / "features").rglob("*.index.json"))  # nothing rewritten
    # half old files, half new shards: a request mixes both sources in sample order
    extra = samples[:4]
    partial = FeatureCache(tmp_path / "mixed", workers=0)
    _old_features(legacy_cache_module, tmp_path / "mixed", backbone, extra)
    both = partial.get(backbone, samples, kind="global")
    assert partial.stats["computed"] == len(samples) - 4
    _assert_same(both, old[("global", "eval")])
    # other precisions never read the fp32 per-image files
    bf16 = FeatureCache(tmp_path / "cache", workers=0, precision="bf16")
    assert bf16.settings("cpu")["precision"] == "bf16"
    bf16_feats = bf16.get(backbone, samples[:2], kind="global")
    assert bf16.stats["legacy_hits"] == 0 and bf16.stats["computed"] == 2
    cos = (bf16_feats * old[("global", "eval")][:2]).sum(1) / (
        np.linalg.norm(bf16_feats, axis=1) * np.linalg.norm(old[("global", "eval")][:2], axis=1))
    assert cos.min() > 0.98 and not np.array_equal(bf16_feats, old[("global", "eval")][:2])


def test_draft_decoding_is_opt_in_and_kept_apart(tmp_path, backbone):
    from PIL import Image

    from dermbench.data.sample import Sample

    rng = np.random.default_rng(1)
    path = tmp_path / "big.jpg"  # 4x the smallest side random-vit needs, so draft decodes at 1/4 scale
    base = rng.integers(0, 255, (8, 12, 3), dtype=np.uint8)
    Image.fromarray(base).resize((384, 288), Image.BICUBIC).save(path, quality=92)
    sample = [Sample(id="a", image=path)]
    full = FeatureCache(tmp_path / "c", workers=0).get(backbone, sample)
    drafted = FeatureCache(tmp_path / "c", workers=0, draft=True)
    feats = drafted.get(backbone, sample)
    assert drafted.stats["computed"] == 1  # not served from the full-decode folder
    folders = sorted(p.name for p in next((tmp_path / "c" / "features").iterdir()).iterdir())
    assert folders == ["global-eval", "global-eval+draft"]
    assert not np.array_equal(full, feats)
    assert float((full * feats).sum() / (np.linalg.norm(full) * np.linalg.norm(feats))) > 0.95


def test_image_hashes_remembered_on_disk(tmp_path):
    from tests.features.conftest import write_jpegs

    paths = write_jpegs(tmp_path / "imgs", 3)
    first = ImageHashes(tmp_path / "memo")
    digests = first.many(paths, threads=2)
    assert first.stats == {"hashed": 3, "remembered": 0}
    second = ImageHashes(tmp_path / "memo")
    assert second.many(paths) == digests and second.stats == {"hashed": 0, "remembered": 3}
    paths[1].write_bytes(paths[1].read_bytes() + b"\0")  # edited: size and mtime change
    third = ImageHashes(tmp_path / "memo")
    changed = third.many(paths)
    assert third.stats == {"hashed": 1, "remembered": 2} and changed[1] != digests[1] and changed[0] == digests[0]
    memo = next((tmp_path / "memo").rglob("*.json"))
    memo.write_text("{not json")  # a damaged memo is a miss, never a wrong hash
    assert ImageHashes(tmp_path / "memo").many(paths) == changed


def test_bad_requests_fail_before_work(tmp_path, samples, backbone):
    cache = FeatureCache(tmp_path, workers=0)
    with pytest.raises(ValueError, match="feature kind must be one of"):
        cache.extract(backbone, samples, [("pooled", "eval")])
    with pytest.raises(ValueError, match="feature view must be one of"):
        cache.extract(backbone, samples, [("global", "test")])
    with pytest.raises(ValueError, match="precision must be one of"):
        FeatureCache(tmp_path, precision="int8")
    assert json.dumps(cache.stats) and cache.stats["computed"] == 0
    assert not os.path.exists(tmp_path / "features")
