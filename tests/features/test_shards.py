"""Shards: atomic commits, resume after SIGKILL mid-shard, concurrent writers, stale claims."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import dermbench
from dermbench.features import FeatureCache
from dermbench.features.shards import INDEX_SUFFIX, ShardFolder, ShardWriter
from tests.features.conftest import write_jpegs

WRITER = Path(__file__).with_name("writer_process.py")


def _writer(cache: Path, images: Path, out: Path, shard_size: int, delay: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(dermbench.__file__).parents[1])}
    return subprocess.Popen([sys.executable, str(WRITER), str(cache), str(images), str(shard_size), str(delay), str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _global_folder(cache: Path) -> Path:
    return next((cache / "features").iterdir()) / "global-eval"


def test_shard_commit_is_atomic(tmp_path, monkeypatch):
    folder = ShardFolder(tmp_path / "f")
    folder.folder.mkdir()
    writer = ShardWriter(folder.folder, "k1", ["a", "b", "c"])
    writer.write(slice(0, 2), [np.ones((2, 4), np.float32)])
    assert folder.refresh() == {}  # rows written, not committed: the shard does not exist
    writer.write(slice(2, 3), [np.full((1, 4), 2, np.float32)])

    # the index is renamed last: a failure before it leaves complete arrays that no reader sees
    real_replace = os.replace

    def fail_on_index(src, dst):
        if str(dst).endswith(INDEX_SUFFIX):
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_on_index)
    with pytest.raises(OSError, match="disk full"):
        writer.commit()
    monkeypatch.setattr(os, "replace", real_replace)
    assert ShardFolder(folder.folder).refresh() == {}

    again = ShardWriter(folder.folder, "k1", ["a", "b", "c"])
    again.write(slice(0, 3), [np.arange(12, dtype=np.float32).reshape(3, 4)])
    again.commit()
    reader = ShardFolder(folder.folder)
    assert set(reader.refresh()) == {"a", "b", "c"}
    np.testing.assert_array_equal(reader.read(["c", "a"])[0], [[8, 9, 10, 11], [0, 1, 2, 3]])
    assert isinstance(np.load(folder.folder / "k1.0.npy", mmap_mode="r"), np.memmap)


def test_extraction_failure_mid_shard_keeps_committed_shards(tmp_path, samples, backbone, monkeypatch):
    cache = FeatureCache(tmp_path / "c", workers=0, shard_size=4)
    reference = FeatureCache(tmp_path / "ref", workers=0).get(backbone, samples, batch_size=2)
    calls = {"n": 0}
    real = type(backbone).forward_global

    def failing(self, x):
        calls["n"] += 1
        if calls["n"] == 4:  # the second batch of the second shard
            raise RuntimeError("out of memory")
        return real(self, x)

    monkeypatch.setattr(type(backbone), "forward_global", failing)
    with pytest.raises(RuntimeError, match="out of memory"):
        cache.get(backbone, samples, batch_size=2)
    monkeypatch.setattr(type(backbone), "forward_global", real)
    folder = _global_folder(tmp_path / "c")
    assert len(list(folder.glob("*" + INDEX_SUFFIX))) == 1  # the first shard, whole
    assert not list(folder.glob(".tmp-*")) and not os.listdir(folder / "claims")  # discarded, released
    resumed = FeatureCache(tmp_path / "c", workers=0, shard_size=4)
    np.testing.assert_array_equal(resumed.get(backbone, samples, batch_size=2), reference)
    assert resumed.stats["computed"] == len(samples) - 4


def test_resume_after_sigkill_mid_shard(tmp_path, backbone):
    images = tmp_path / "images"
    write_jpegs(images, 12)
    cache = tmp_path / "cache"
    proc = _writer(cache, images, tmp_path / "killed.npy", shard_size=4, delay=0.4)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:  # wait for the first committed shard
        if (cache / "features").exists() and list((cache / "features").rglob("*" + INDEX_SUFFIX)):
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()
    os.kill(proc.pid, signal.SIGKILL)  # mid-way through the second shard
    proc.wait()
    folder = _global_folder(cache)
    committed = list(folder.glob("*" + INDEX_SUFFIX))
    assert 1 <= len(committed) < 3
    for index in committed:  # every committed shard is whole
        meta = json.loads(index.read_text())
        assert np.load(folder / meta["arrays"][0]["file"]).shape == (meta["n"], 96)
    # the killed writer's claim is stale (its pid is gone): a new run takes it over and resumes
    from dermbench.data.sample import Sample

    samples = [Sample(id=p.stem, image=p) for p in sorted(images.glob("*.jpg"))]
    resumed = FeatureCache(cache, workers=0, shard_size=4)
    feats = resumed.get(backbone, samples, batch_size=2)
    assert resumed.stats["computed"] == 12 - 4 * len(committed)
    np.testing.assert_array_equal(feats, FeatureCache(tmp_path / "ref", workers=0).get(backbone, samples))
    assert not os.listdir(folder / "claims")
    assert not list(folder.glob(".tmp-*"))  # the killed writer's half-written arrays were swept


def test_two_concurrent_writers_share_the_work(tmp_path, backbone):
    images = tmp_path / "images"
    write_jpegs(images, 16)
    cache = tmp_path / "cache"
    procs = [_writer(cache, images, tmp_path / f"w{i}.npy", shard_size=4, delay=0.2) for i in range(2)]
    outputs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    stats = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert sum(s["computed"] for s in stats) == 16  # no image computed twice, none lost
    a, b = np.load(tmp_path / "w0.npy"), np.load(tmp_path / "w1.npy")
    np.testing.assert_array_equal(a, b)
    from dermbench.data.sample import Sample

    samples = [Sample(id=p.stem, image=p) for p in sorted(images.glob("*.jpg"))]
    np.testing.assert_array_equal(a, FeatureCache(tmp_path / "ref", workers=0).get(backbone, samples))
    folder = _global_folder(cache)
    assert len(list(folder.glob("*" + INDEX_SUFFIX))) == 4
    assert not list(folder.glob(".tmp-*")) and not os.listdir(folder / "claims")


def test_claims_and_stale_recovery(tmp_path):
    """Shards are claimed through dermbench.claims (the run's NFS-safe claim files)."""
    from dermbench import claims

    folder = ShardFolder(tmp_path / "f", stale_after=60)
    mine = folder.claim("k")
    assert mine is not None and mine.path.name == "k.claim"
    assert folder.claim("k") is None  # held by a live process (this one)
    assert folder.live_claims() == ["k"]

    def write_holder(host, pid):
        mine.path.write_text(json.dumps({"host": host, "pid": pid, "time": 0, "token": "old", "slurm_job": None}))

    # a claim from a process of this host that has exited is stale: taken over
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_holder(__import__("socket").gethostname(), dead.pid)
    taken = folder.claim("k")
    assert taken is not None and claims.holds(taken)
    # a claim from another host is judged by its heartbeat alone
    mine = taken
    write_holder("elsewhere", 1)
    assert folder.claim("k") is None
    old = time.time() - 120
    os.utime(taken.path, (old, old))
    again = folder.claim("k")
    assert again is not None and claims.holds(again)
    folder.release(taken)  # no longer ours: must not remove the new holder's claim
    assert folder.live_claims() == ["k"]
    folder.release(again)
    assert [n for n in os.listdir(tmp_path / "f" / "claims") if not n.startswith(".")] == []


def test_a_committed_shard_is_not_claimed(tmp_path):
    folder = ShardFolder(tmp_path / "f")
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / f"k{INDEX_SUFFIX}").write_text("{}")
    assert folder.claim("k") is None and folder.live_claims() == []

def test_sweep_clears_the_claim_of_a_writer_killed_after_its_commit(tmp_path):
    """Killed between committing a shard and releasing its claim: the claim would stay forever (no one
    claims a committed shard again), so the sweep removes it once its holder is gone; live ones stay."""
    folder = ShardFolder(tmp_path / "f", stale_after=60)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for key in ("done-dead", "done-alive", "open-dead"):
        claim = folder.claim(key)
        if key.endswith("dead"):
            claim.path.write_text(json.dumps({"host": __import__("socket").gethostname(), "pid": dead.pid,
                                              "time": 0, "token": "old", "slurm_job": None}))
        if key.startswith("done"):
            (tmp_path / "f" / f"{key}{INDEX_SUFFIX}").write_text("{}")
    folder.sweep()
    left = sorted(n for n in os.listdir(tmp_path / "f" / "claims") if not n.startswith("."))
    # open-dead stays for the takeover of the next writer, which then computes the shard
    assert left == ["done-alive.claim", "open-dead.claim"]
