"""The checks `run` makes before any work: train/test duplicates, untagged official rows, weights once per
model, and what counts as a run that produced nothing."""
from __future__ import annotations

import json
from pathlib import Path

from dermbench.data.sample import Sample, TaskData
from dermbench.data.splits import Split, make_split, train_test_duplicates, write_split
from dermbench.run.plan import Outcome, weights_problem
from dermbench.run.runner import RunOutcomes


def test_train_test_duplicates_pairs_every_train_image_with_its_test_copies():
    split = Split("t", "stratified", 0, train=["a", "b", "c"], test=["d", "e", "f"])
    digest = {"a": "h1", "b": "h2", "c": "h1", "d": "h1", "e": "h3", "f": "h2"}
    pairs = train_test_duplicates(split, digest)
    assert sorted(pairs) == [("a", "d"), ("b", "f"), ("c", "d")]
    # copies on one side only are no leak
    assert train_test_duplicates(Split("t", "r", 0, ["a", "c"], ["e"]), digest) == []


def _data(tags: list) -> TaskData:
    samples = [Sample(id=f"s{i}", image=Path(f"/x/s{i}.png"), label=i % 2, official_split=tag)
               for i, tag in enumerate(tags)]
    return TaskData(task="t", root=Path("/x"), samples=samples, classes=["a", "b"])


def test_an_official_split_lists_the_untagged_samples_in_its_file(tmp_path):
    split = write_split(make_split(_data(["train", "train", "test", "test", None, "val", ""]), "official", 0), tmp_path)
    assert split.untagged == ["s4", "s6"]
    body = json.loads(split.path.read_text())
    assert body["untagged"] == ["s4", "s6"] and "s4" not in body["train"] + body["test"]


def test_a_fully_tagged_split_file_is_unchanged_by_the_untagged_list(tmp_path):
    # no 'untagged' key when there are none, so split hashes (and result keys) of clean data stay as they were
    split = write_split(make_split(_data(["train", "train", "test", "test"]), "official", 0), tmp_path)
    assert "untagged" not in json.loads(split.path.read_text())
    stratified = make_split(_data([None] * 6), "stratified", 0)
    assert stratified.untagged == [] and "untagged" not in stratified.to_json()


def test_weights_are_checked_once_per_model_without_building_it():
    assert weights_problem("random-vit", None) is None  # no release file
    assert weights_problem("dermino-tiny", None) is None  # shipped weights
    assert weights_problem("dermino", "random") is None
    problem = weights_problem("dermino", None)  # local-only release, not in the test cache
    assert problem and "teacher_checkpoint.pth" in problem and "--weights" in problem


def _outcome(status: str, key: str = "") -> Outcome:
    return Outcome("m", "t", "p", status, result_key=key)


def test_a_run_that_produced_nothing_is_told_apart_from_a_resumed_one():
    assert RunOutcomes([_outcome("skipped")], planned=1).nothing_done  # skipped without a stored result
    assert RunOutcomes([], planned=0).nothing_done  # every task missing or model refused
    assert not RunOutcomes([_outcome("skipped", "abc")], planned=1).nothing_done  # resumed: all stored
    assert not RunOutcomes([_outcome("done"), _outcome("failed")], planned=2).nothing_done
    assert not RunOutcomes([], planned=3).nothing_done  # a shard with no jobs, a Slurm run submitted
