"""Transfer protocol on fixed features: the in-domain source equals the linear result, unmapped classes are left
out of every metric with consistent resamples, drops are paired; [transfer] card parsing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from dermbench.data.sample import Sample, TaskData
from dermbench.data.splits import make_split
from dermbench.data.tasks import _check_transfer_families, _parse_card, get_card, transfer_members
from dermbench.protocols import get_protocol
from dermbench.protocols.base import RunContext
from dermbench.protocols.transfer import EXCLUDED, mapped_resamples
from dermbench.stats.bootstrap import bootstrap_indices


class FixedFeatures:
    def __init__(self, table):
        self.table = table

    def get(self, backbone, samples, **kw):
        return np.stack([self.table[s.id] for s in samples])


def family_tasks():
    """mednode (naevus, melanoma), ph2-cls (nevus, melanoma), derm7pt (5 classes, NEV=1, MEL=2): melanoma is
    feature direction 0, naevus direction 1, other classes direction 2; each task shifted a little (its domain)."""
    rng = np.random.default_rng(0)
    table, tasks = {}, {}
    melanoma_of = {"mednode": 1, "ph2-cls": 1, "derm7pt": 2}
    naevus_of = {"mednode": 0, "ph2-cls": 0, "derm7pt": 1}
    for t, shift in (("mednode", 0.3), ("ph2-cls", -0.2), ("derm7pt", 0.1)):
        card = get_card(t)
        samples = []
        for i in range(40 if t != "derm7pt" else 60):
            label = i % card.num_classes
            direction = 0 if label == melanoma_of[t] else 1 if label == naevus_of[t] else 2
            sid = f"{t}-{i:02d}"
            table[sid] = rng.normal(0, 0.5, 4) + 2.0 * np.eye(4)[direction] + shift
            samples.append(Sample(id=sid, image=Path(f"/nonexistent/{sid}.jpg"), label=label))
        data = TaskData(task=t, root=Path("/nonexistent"), samples=samples, classes=list(card.classes))
        tasks[t] = (data, make_split(data, "stratified", seed=0))
    return tasks, FixedFeatures(table)


def make_ctx(name, protocol, tasks, features, **overrides):
    data, split = tasks[name]
    return RunContext(card=get_card(name), data=data, split=split, get_backbone=lambda: None, features=features, seed=0,
                      device="cpu", config=protocol.resolve_config(overrides), artifacts_dir=Path("/nonexistent"),
                      progress=False, load_task=lambda n: tasks[n])


def test_family_members_come_from_the_cards():
    assert [c.name for c in transfer_members("melanoma-naevus")] == ["mednode", "ph2-cls", "derm7pt"]
    assert [c.name for c in transfer_members("benign-malignant")] == ["ddi", "fitzpatrick17k-2"]
    assert get_card("derm7pt").transfer.map == {"NEV": "naevus", "MEL": "melanoma"}


def test_transfer_to_itself_is_the_linear_result():
    tasks, features = family_tasks()
    transfer, linear = get_protocol("transfer"), get_protocol("linear")
    out = transfer.run(make_ctx("ph2-cls", transfer, tasks, features, epochs=30))
    lin = linear.run(make_ctx("ph2-cls", linear, tasks, features, epochs=30)).predictions
    pred = out.predictions
    assert list(dict.fromkeys(pred["source"])) == ["ph2-cls", "mednode", "derm7pt"]  # in-domain first
    own = pred[pred["source"] == "ph2-cls"].drop(columns=["source", "task_label"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(own, lin)
    assert out.info["n_train_per_source"] == {"ph2-cls": 20, "mednode": 20, "derm7pt": 12}  # derm7pt: NEV+MEL only

    boot = bootstrap_indices(20, 200, seed=3, strata=transfer.bootstrap_strata(pred))
    m = transfer.evaluate(pred, boot)
    from dermbench.stats.evaluation import evaluate

    lm = evaluate("classification", lin, boot)
    assert m["auroc@ph2-cls"] == lm["auroc"] and m["auroc_in_domain"] == lm["auroc"]
    for source in ("mednode", "derm7pt"):
        assert m[f"auroc_drop@{source}"]["value"] == pytest.approx(m["auroc@ph2-cls"]["value"] - m[f"auroc@{source}"]["value"])
    assert m["auroc"]["value"] == pytest.approx(np.mean([m["auroc@mednode"]["value"], m["auroc@derm7pt"]["value"]]))
    assert m["auroc@mednode"]["value"] > 0.9  # the shared feature directions transfer


def test_unmapped_target_classes_are_left_out_with_consistent_resamples():
    tasks, features = family_tasks()
    transfer = get_protocol("transfer")
    out = transfer.run(make_ctx("derm7pt", transfer, tasks, features, epochs=30))
    pred = out.predictions
    block = pred[pred["source"] == "mednode"].reset_index(drop=True)
    excluded = block["task_label"].isin([0, 3, 4])  # BCC, MISC, SK
    assert (block.loc[excluded, "label"] == EXCLUDED).all() and block.loc[excluded, "score_1"].isna().all()
    assert (out.info["n_test_mapped"], out.info["n_test_excluded"]) == (12, 18)
    # family labels: NEV -> naevus (0), MEL -> melanoma (1)
    assert (block.loc[block["task_label"] == 2, "label"] == 1).all() and (block.loc[block["task_label"] == 1, "label"] == 0).all()

    boot = bootstrap_indices(30, 100, seed=0, strata=transfer.bootstrap_strata(pred))
    rows, idx = mapped_resamples(block["label"].to_numpy(), boot)
    assert idx.shape == (100, 12) and idx.max() < 12
    m = transfer.evaluate(pred, boot)
    kept = block.iloc[rows]
    assert m["auroc@mednode"]["value"] == pytest.approx(roc_auc_score(kept["label"], kept["score_1"]))
    # resamples not stratified by the task's classes cannot be restricted consistently: a clear error
    with pytest.raises(ValueError, match="not stratified"):
        transfer.evaluate(pred, bootstrap_indices(30, 100, seed=0))


def test_transfer_needs_another_member_with_data():
    from dermbench.data.sample import DatasetError

    tasks, features = family_tasks()
    transfer = get_protocol("transfer")

    def missing(name):
        raise DatasetError(f"{name}: no data")

    ctx = make_ctx("mednode", transfer, tasks, features, epochs=5)
    ctx.load_task = missing
    with pytest.raises(DatasetError, match="at least one other member"):
        transfer.run(ctx)
    with pytest.raises(ValueError, match="not members"):
        transfer.run(make_ctx("mednode", transfer, tasks, features, sources="ddi"))


def write_card(tmp_path: Path, name: str, transfer: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\ntitle = "{name}"\ngroup = "malignancy"\nadapter = "manifest"\nfolders = ["x"]\n'
                    f'classes = ["ben", "mal", "other"]\nprotocols = ["linear", "transfer"]\nmain_metric = "auroc"\n\n'
                    f'[transfer]\n{transfer}\n')
    return path


def test_card_transfer_table_is_parsed_and_checked(tmp_path):
    ok = _parse_card(write_card(tmp_path, "a", 'family = "bm"\nclasses = ["benign", "malignant"]\n'
                                               'map = { ben = "benign", mal = "malignant" }'))
    assert ok.transfer.family == "bm" and ok.transfer.classes == ("benign", "malignant")
    with pytest.raises(ValueError, match="unknown keys \\['bad'\\]"):
        _parse_card(write_card(tmp_path, "b", 'family = "bm"\nclasses = ["benign", "malignant"]\n'
                                              'map = { bad = "benign", mal = "malignant" }'))
    with pytest.raises(ValueError, match="receive no class"):
        _parse_card(write_card(tmp_path, "c", 'family = "bm"\nclasses = ["benign", "malignant"]\nmap = { ben = "benign" }'))
    with pytest.raises(ValueError, match="needs family"):
        _parse_card(write_card(tmp_path, "d", 'classes = ["benign", "malignant"]\nmap = { ben = "benign" }'))
    other = _parse_card(write_card(tmp_path, "e", 'family = "bm"\nclasses = ["malignant", "benign"]\n'
                                                  'map = { ben = "benign", mal = "malignant" }'))
    with pytest.raises(ValueError, match="same family classes in the same order"):
        _check_transfer_families({"a": ok, "e": other})
