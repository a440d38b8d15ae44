"""A result is what produced it: every setting that changes a number changes the result's key.

One small DermSynth (scale 0.25), one task (ACNE04: it has an official split), the linear probe with
a 2-epoch head and 100 resamples: each rerun takes seconds once the features are cached.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from dermbench.cli import app
from dermbench.run.identity import (ResultSelectionError, Selection, check_same_test_set, differing_settings,
                                    result_identity, result_key, select_results)
from dermbench.run.results import is_finished, iter_results, migrate_results, read_predictions, result_paths, write_result

runner = CliRunner()
TASK = "acne04"
FAST = ["--task", TASK, "--protocol", "linear", "--set", "linear.epochs=2", "--n-boot", "100", "--synth-scale", "0.25",
        "--quiet"]
ROOT = Path(__file__).resolve().parents[2]


def _run(out: Path, *extra: str, model: str = "random-vit"):
    res = runner.invoke(app, ["run", "--model", model, "--output", str(out), *FAST, *extra])
    assert res.exit_code == 0, res.output
    return res.output


def _results(out: Path) -> dict[str, dict]:
    return {r["result_key"]: r for r in iter_results(out)}


@pytest.fixture(scope="module")
def synth_root():
    from dermbench.data.synth import ensure_dermsynth

    return ensure_dermsynth(scale=0.25)


def test_each_setting_that_changes_a_number_makes_a_new_result_and_keeps_the_old(tmp_path, synth_root):
    out = tmp_path / "results"
    _run(out)
    seen = _results(out)
    assert len(seen) == 1
    first = next(iter(seen.values()))
    first_predictions = Path(first["_path"]).with_suffix("").with_suffix(".predictions.csv").read_bytes()

    # the same settings: skipped, nothing rewritten
    log = _run(out)
    assert "finished earlier with these settings" in log and "0 result(s) computed" in log
    assert _results(out).keys() == seen.keys()

    # an edited data root (one image changed): another data hash, another result
    data_root = tmp_path / "data"
    shutil.copytree(synth_root / "ACNE04", data_root / "ACNE04")
    from PIL import Image

    image = sorted((data_root / "ACNE04").rglob("*.jpg"))[0]
    with Image.open(image) as im:
        pixels = np.array(im.convert("RGB"))
    pixels[0, 0] = 255 - pixels[0, 0]
    Image.fromarray(pixels).save(image, quality=100)

    changes = [("--seed", "1"), ("--set", "linear.lr=0.01"), ("--n-boot", "120"), ("--split", "official"),
               ("--data-root", str(data_root))]
    for option, value in changes:
        log = _run(out, option, value)
        assert "1 result(s) computed" in log, (option, log)
        now = _results(out)
        assert len(now) == len(seen) + 1 and set(seen) <= set(now), option
        new = (set(now) - set(seen)).pop()
        assert differing_settings([first, now[new]]), option  # the identity says what differs
        seen = now
    by_option = {k: r["identity"] for k, r in seen.items()}
    assert {i["head_seed"] for i in by_option.values()} == {0, 1}
    assert {i["n_boot"] for i in by_option.values()} == {100, 120}
    assert {i["split_rule"] for i in by_option.values()} == {"stratified", "official"}
    assert len({i["data_sha256"] for i in by_option.values()}) == 2
    assert any(i["settings"]["lr"] == 0.01 for i in by_option.values())
    # the first result is untouched
    assert Path(first["_path"]).with_suffix("").with_suffix(".predictions.csv").read_bytes() == first_predictions
    assert json.loads(Path(first["_path"]).read_text())["result_key"] == first["result_key"]



def _markdown_rows(output: str) -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for line in output.splitlines():
        if line.startswith("| ") and not line.startswith("| model"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows.setdefault(cells[0], []).extend(cells[1:])
    return rows


@pytest.mark.skipif(not (ROOT / "dermino" / "weights" / "dermino-tiny.safetensors").exists(), reason="dermino-tiny not shipped")
def test_weights_are_part_of_the_result_and_untrained_weights_carry_no_contamination_mark(tmp_path, synth_root):
    out = tmp_path / "results"
    copy = tmp_path / "tiny-copy.safetensors"
    shutil.copy(ROOT / "dermino" / "weights" / "dermino-tiny.safetensors", copy)
    for weights in (None, "random", str(copy)):
        _run(out, *(["--weights", weights] if weights else []), model="dermino-tiny")
    _run(out, "--weights", "random")  # random-vit: always untrained
    records = {r["model"]: r for r in iter_results(out)}
    assert len(records) == 4 and len({r["identity"]["weights_sha256"] for r in records.values()}) == 3
    # ‡ only for weights that saw the task's training images; 'unknown' for a file of unknown origin
    assert records["dermino-tiny"]["contaminated"] is True
    assert records["dermino-tiny@random"]["contaminated"] is False and records["random-vit"]["contaminated"] is False
    (file_label,) = [m for m in records if m not in ("dermino-tiny", "dermino-tiny@random", "random-vit")]
    assert records[file_label]["contaminated"] == "unknown"
    res = runner.invoke(app, ["leaderboard", "--results", str(out), "--format", "md"])
    assert res.exit_code == 0, res.output
    rows = _markdown_rows(res.output)
    assert not any("‡" in c for c in rows["dermino-tiny@random"] + rows["random-vit"])
    assert all(c.rstrip("*").endswith("‡") for c in rows["dermino-tiny"])
    assert all(c.rstrip("*").endswith("‡?") for c in rows[file_label])
    # an identical copy of the default weights file has the same sha256 as the default: the same weights
    assert records[file_label]["identity"]["weights_sha256"] == records["dermino-tiny"]["identity"]["weights_sha256"]


def test_a_copied_data_root_with_the_same_content_is_the_same_result(tmp_path, synth_root):
    out = tmp_path / "results"
    _run(out)
    shutil.copytree(synth_root / "ACNE04", tmp_path / "data" / "ACNE04")
    log = _run(out, "--data-root", str(tmp_path / "data"))
    assert "finished earlier with these settings" in log  # content, not the path, identifies the data


def test_several_head_seeds_share_the_split_and_the_leaderboard_shows_their_spread(tmp_path, synth_root):
    out = tmp_path / "results"
    _run(out, "--seed", "0-2")
    records = list(iter_results(out))
    assert sorted(r["seed"] for r in records) == [0, 1, 2]
    assert len({r["split_sha256"] for r in records}) == 1 and len({r["bootstrap"]["sha256"] for r in records}) == 1
    res = runner.invoke(app, ["leaderboard", "--results", str(out), "--format", "md"])
    assert res.exit_code == 0 and "3 seeds)" in res.output, res.output
    res = runner.invoke(app, ["leaderboard", "--results", str(out), "--seed", "1", "--format", "md"])
    assert res.exit_code == 0 and "seeds)" not in res.output.split("## ")[1]
    res = runner.invoke(app, ["results", "list", "--results", str(out)])
    assert res.exit_code == 0 and res.output.count(f"random-vit · {TASK} · linear") == 3 and "head_seed=2" in res.output
    res = runner.invoke(app, ["run", "--model", "random-vit", "--seed", "2-1", "--output", str(out), *FAST])
    assert res.exit_code != 0 and "--seed" in res.output


def test_two_concurrent_runs_with_different_seeds_both_survive(tmp_path, synth_root):
    out = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = "import sys; from dermbench.cli import main; sys.argv[0] = 'dermbench'; main()"
    procs = [subprocess.Popen([sys.executable, "-c", code, "run", "--model", "random-vit", "--output", str(out),
                               "--seed", str(seed), *FAST], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for seed in (0, 1)]
    logs = [p.communicate(timeout=600)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    records = list(iter_results(out))
    assert sorted(r["seed"] for r in records) == [0, 1]
    for r in records:  # intact: each predictions file matches the sha256 its JSON records
        assert is_finished(out, r["model"], r["task"], r["protocol"], r["result_key"])
        assert len(read_predictions(r["_path"])) == r["n_test"]


def test_reports_refuse_results_on_different_splits_and_name_them(tmp_path, synth_root):
    out = tmp_path / "results"
    _run(out)
    _run(out, "--split-seed", "1", model="dermino-tiny")
    res = runner.invoke(app, ["leaderboard", "--results", str(out)])
    compact = "".join(ch for ch in res.output if not ch.isspace() and ch not in "│╭╮╰╯─")
    assert res.exit_code != 0 and "differentsplitsha256" in compact, res.output
    for r in iter_results(out):
        assert "".join(r["_path"].split()) in compact
    res = runner.invoke(app, ["compare", "--model", "random-vit,dermino-tiny", "--results", str(out)])
    compact = "".join(ch for ch in res.output if not ch.isspace() and ch not in "│╭╮╰╯─")
    assert res.exit_code != 0 and "differentsplits" in compact and "random-vit" in compact and "dermino-tiny" in compact
    res = runner.invoke(app, ["fairness", "--results", str(out)])
    assert res.exit_code != 0 and "split sha256" in res.output
    # filtering to one split makes the table again
    res = runner.invoke(app, ["leaderboard", "--results", str(out), "--split-seed", "1"])
    assert res.exit_code == 0 and "dermino-tiny" in res.output and "random-vit" not in res.output


# --- the store: legacy layout, migration, selection ------------------------------------------------
def _predictions():
    return pd.DataFrame({"sample_id": ["a", "b"], "label": [0, 1], "pred": [0, 1], "score_0": [0.9, 0.2], "score_1": [0.1, 0.8]})


def _legacy_record(model="m", weights=None, contaminated=True):
    return {"model": model, "task": "ddi", "protocol": "linear", "kind": "classification", "seed": 3,
            "split": {"rule": "stratified", "seed": 3, "sha256": "s" * 64}, "split_sha256": "s" * 64,
            "bootstrap": {"n_boot": 1000, "path": "_bootstrap/x.npy", "sha256": "b" * 64},
            "metrics": {"auroc": {"value": 0.5}}, "contaminated": contaminated,
            "provenance": {"config": {"protocol": {"epochs": 5}, "weights": weights, "n_boot": 1000}}}


def test_the_layout_before_keys_is_read_and_migrated_without_recomputing(tmp_path):
    write_result(tmp_path, _legacy_record(), _predictions())
    write_result(tmp_path, _legacy_record("m@random", "random"), _predictions())
    (tmp_path / "m" / "ddi" / "linear.artifacts").mkdir()
    (tmp_path / "m" / "ddi" / "linear.artifacts" / "curve.svg").write_text("<svg/>")
    before = {r["model"]: r for r in iter_results(tmp_path)}
    assert before["m"]["identity"]["head_seed"] == 3 and before["m"]["identity"]["data_sha256"] is None
    assert before["m@random"]["contaminated"] is False  # untrained weights never carry ‡
    res = runner.invoke(app, ["results", "migrate", "--results", str(tmp_path), "--dry-run"])
    assert res.exit_code == 0 and "would move m/ddi/linear.json" in res.output
    assert (tmp_path / "m" / "ddi" / "linear.json").exists()
    moved = migrate_results(tmp_path)
    assert len(moved) == 2 and not (tmp_path / "m" / "ddi" / "linear.json").exists()
    after = {r["model"]: r for r in iter_results(tmp_path)}
    for model, record in after.items():
        assert record["result_key"] == before[model]["result_key"] and record["metrics"] == before[model]["metrics"]
        assert "@" in Path(record["_path"]).stem and record["migrated_from"] == "linear.json"
        pd.testing.assert_frame_equal(read_predictions(record["_path"]), _predictions())
    artifacts = result_paths(tmp_path, "m", "ddi", "linear", after["m"]["result_key"])["artifacts"]
    assert (artifacts / "curve.svg").read_text() == "<svg/>"
    assert migrate_results(tmp_path) == []  # nothing left to move


def _keyed(model, head_seed=0, n_boot=1000, split_sha="s" * 64, settings=None, overrides=None, data="d"):
    identity = result_identity(backbone=model, weights_sha256="w", task="ddi", task_card_sha256="c", data_sha256=data,
                               split_rule="stratified", split_seed=0, split_sha256=split_sha, protocol="linear",
                               protocol_version=1, settings=settings or {"epochs": 100}, head_seed=head_seed,
                               n_boot=n_boot, bootstrap_seed=7, overrides=overrides)
    key = result_key(identity)
    return {"model": model, "task": "ddi", "protocol": "linear", "result_key": key, "identity": identity,
            "split_sha256": split_sha, "bootstrap": {"sha256": f"boot{n_boot}"}, "seed": head_seed,
            "_path": f"{model}/ddi/linear@{key[:12]}.json", "metrics": {"auroc": {"value": 0.5 + head_seed / 10}}}


def test_selection_prefers_the_paper_defaults_and_refuses_ties_naming_both():
    records = [_keyed("m"), _keyed("m", head_seed=1), _keyed("m", n_boot=200), _keyed("m", settings={"epochs": 5},
                                                                                       overrides={"epochs": "5"})]
    picked = select_results(records)[("m", "ddi", "linear")]
    assert picked.record is records[0] and [r["seed"] for r in picked.seed_records] == [0, 1]
    assert select_results(records, Selection(seeds=[1]))[("m", "ddi", "linear")].record is records[1]
    assert select_results(records, Selection(n_boot=200))[("m", "ddi", "linear")].record is records[2]
    chosen = select_results(records, Selection(settings={"linear": {"epochs": "5"}}))[("m", "ddi", "linear")].record
    assert chosen is records[3]
    # two results that differ in the data only: no rule prefers one; the error names both and the difference
    tie = [_keyed("m", data="d1"), _keyed("m", data="d2")]
    with pytest.raises(ResultSelectionError) as err:
        select_results(tie)
    assert tie[0]["_path"] in str(err.value) and tie[1]["_path"] in str(err.value) and "data_sha256" in str(err.value)
    with pytest.raises(ResultSelectionError, match="split sha256"):
        check_same_test_set([_keyed("a"), _keyed("b", split_sha="t" * 64)], "table")
    with pytest.raises(ResultSelectionError, match="bootstrap resamples"):
        check_same_test_set([_keyed("a"), _keyed("b", n_boot=200)], "table")


def test_key_covers_every_field_and_a_keyed_result_is_found_only_under_its_key(tmp_path):
    base = _keyed("m")["identity"]
    for field, value in [("weights_sha256", "x"), ("task_card_sha256", "x"), ("data_sha256", "x"), ("split_rule", "x"),
                         ("split_seed", 5), ("split_sha256", "x"), ("protocol_version", 2), ("settings", {"epochs": 1}),
                         ("head_seed", 4), ("n_boot", 10), ("bootstrap_seed", 8)]:
        assert result_key({**base, field: value}) != result_key(base), field
    assert result_key({**base, "overrides": {"x": 1}}) == result_key(base)  # already in settings
    record = _keyed("m")
    write_result(tmp_path, record, _predictions())
    assert is_finished(tmp_path, "m", "ddi", "linear", record["result_key"])
    assert not is_finished(tmp_path, "m", "ddi", "linear", _keyed("m", head_seed=1)["result_key"])
