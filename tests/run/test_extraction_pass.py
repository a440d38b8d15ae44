"""The runner extracts every feature a task's protocols read in one pass: one decode per image."""
from __future__ import annotations

import pytest

from dermbench.run import runner as runner_module
from dermbench.run.results import iter_results
from dermbench.run.runner import RunSettings, run_benchmark


@pytest.mark.slow
def test_one_decode_per_image_for_both_segmentation_heads(tmp_path, monkeypatch):
    from dermbench.features import FeatureCache

    caches = []

    def cold_cache(settings):  # the session's DermSynth, a feature cache of this test's own
        caches.append(FeatureCache(tmp_path / "cache", workers=settings.workers, precision=settings.precision,
                                   draft=settings.draft_decode))
        return caches[-1]

    monkeypatch.setattr(runner_module, "_feature_cache", cold_cache)
    settings = RunSettings(models=["random-vit"], tasks="ph2-seg", output=tmp_path / "results", n_boot=100,
                           progress=False, workers=0, precision="fp32",
                           overrides={"seg-linear": {"epochs": "1"}, "seg-upernet": {"epochs": "1", "upernet_channels": "8"}})
    outcomes = run_benchmark(settings, log=lambda _: None)
    assert [o.status for o in outcomes] == ["done", "done"]
    records = list(iter_results(tmp_path / "results"))
    n_images = records[0]["n_train"] + records[0]["n_test"]
    stats = caches[0].stats
    assert stats["decoded"] == n_images  # tokens (seg-linear) and levels (seg-upernet) from one decode
    assert stats["computed"] == 2 * n_images
    for record in records:
        assert record["provenance"]["config"]["features"] == {"precision": "fp32", "draft_decode": False,
                                                              "workers": 0, "shard_size": 2048}
