"""DermSynth in the official layouts, read back through the real adapters; bad-input errors."""
from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from dermbench.data.locate import load_task
from dermbench.data.sample import DatasetError
from dermbench.data.synth import ensure_dermsynth, generate
from dermbench.data.tasks import get_card, load_cards


@pytest.fixture(scope="module")
def synth() -> Path:
    return ensure_dermsynth()


def _tree_hash(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generation_is_deterministic(tmp_path):
    a = generate(tmp_path / "a", scale=0.2, datasets=["ddi", "ph2", "isic2017", "skincap"], workers=2)
    b = generate(tmp_path / "b", scale=0.2, datasets=["ddi", "ph2", "isic2017", "skincap"], workers=1)
    assert _tree_hash(a) == _tree_hash(b)  # the same bytes whether datasets are written side by side or not
    c = generate(tmp_path / "c", scale=0.2, seed=1, datasets=["ddi"])
    assert _tree_hash(c)["ddi/000001.png"] != _tree_hash(a)["ddi/000001.png"]


def test_every_task_reads_back_with_the_written_counts(synth):
    written = json.loads((synth / "DERMSYNTH.json").read_text())["counts"]
    adapter_of = {"ph2-cls": "ph2", "ph2-seg": "ph2", "skincancer": "waterloo"}
    for card in load_cards().values():
        data = load_task(synth, card)
        if card.classes:
            got = Counter(data.classes[s.label] for s in data.samples)
            if card.adapter == "federated":
                assert sum(got.values()) == sum(len(load_task(synth, get_card(s)).samples) for s in card.sites)
                continue
            counts = written[adapter_of.get(card.name, card.adapter if card.adapter != "manifest" else card.folders[0].lower())]
            for cls in card.classes:
                assert got[cls] == counts[cls], (card.name, cls)
        elif card.group == "segmentation":
            assert all(s.mask is not None for s in data.samples)
            if card.name.startswith("isic"):
                pool = card.options["official_splits"]
                assert {s.official_split for s in data.samples} == set(pool)
                assert len(data.samples) == sum(written[card.name][p] for p in pool)
        else:  # captions
            assert len(data.samples) == written["skincap"]["captions"]
            assert all(s.caption and "not_include" not in str(s.image) for s in data.samples)


def test_layout_traps_are_present_and_handled(synth):
    ddi = pd.read_csv(synth / "ddi" / "ddi_metadata.csv")
    assert ddi.columns[0].startswith("Unnamed") and set(ddi["malignant"].astype(str).str.upper()) == {"TRUE", "FALSE"}
    assert (synth / "PH2Dataset" / "PH2 Dataset images").is_dir()
    assert any((synth / "ISIC2017" / "ISIC-2017_Validation_Data").glob("*_superpixels.png"))
    assert list((synth / "ACNE04" / "Classification" / "JPEGImages").glob("levle*"))
    f17 = load_task(synth, get_card("fitzpatrick17k-3"))
    assert "unknown" in {s.groups["skin_type"] for s in f17.samples}  # the -1 rows
    d7 = load_task(synth, get_card("derm7pt"))
    assert {s.groups["sex"] for s in d7.samples} == {"female", "male"}
    assert any(str(s.image).endswith(".JPG") for s in d7.samples)
    # F17k-2 ids are a subset of F17k-3 ids (derived split); PH2 cls and seg share ids
    f2 = {s.id for s in load_task(synth, get_card("fitzpatrick17k-2")).samples}
    assert f2 <= {s.id for s in f17.samples}
    assert {s.id for s in load_task(synth, get_card("ph2-cls")).samples} == {s.id for s in load_task(synth, get_card("ph2-seg")).samples}


def test_xlsx_and_txt_metadata_agree(synth, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synth / "PH2Dataset", root / "PH2Dataset")
    from_xlsx = {s.id: s.label for s in load_task(root, get_card("ph2-cls")).samples}
    (root / "PH2Dataset" / "PH2_dataset.xlsx").unlink()
    from_txt = {s.id: s.label for s in load_task(root, get_card("ph2-cls")).samples}
    assert from_xlsx == from_txt


def _copy(synth: Path, tmp_path: Path, folder: str) -> Path:
    root = tmp_path / "data"
    shutil.copytree(synth / folder, root / folder)
    return root


def test_missing_folder_names_what_was_looked_for(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    with pytest.raises(DatasetError, match=r"none of the folders \['ddi'"):
        load_task(tmp_path, get_card("ddi"))


def test_renamed_column_is_named(synth, tmp_path):
    root = _copy(synth, tmp_path, "fitzpatrick17k")
    csv = root / "fitzpatrick17k" / "fitzpatrick17k.csv"
    pd.read_csv(csv).rename(columns={"three_partition_label": "partition3"}).to_csv(csv, index=False)
    with pytest.raises(DatasetError, match="three_partition_label"):
        load_task(root, get_card("fitzpatrick17k-3"))


def test_older_column_names_are_accepted(synth, tmp_path):
    root = _copy(synth, tmp_path, "ddi")
    csv = root / "ddi" / "ddi_metadata.csv"
    t = pd.read_csv(csv, index_col=0)
    t["malignant"] = t["malignant"].astype(str).str.upper().eq("TRUE").astype(int)
    t.rename(columns={"malignant": "malignancy(malig=1)"}).to_csv(csv)
    data = load_task(root, get_card("ddi"))
    assert Counter(s.label for s in data.samples) == Counter({0: 40, 1: 40})


def test_unknown_label_names_file_and_valid_values(synth, tmp_path):
    root = _copy(synth, tmp_path, "MPL5")
    csv = root / "MPL5" / "manifest.csv"
    t = pd.read_csv(csv)
    t.loc[3, "label"] = "melanomma"
    t.to_csv(csv, index=False)
    with pytest.raises(DatasetError, match=r"manifest.csv.*'melanomma'.*expected one of"):
        load_task(root, get_card("mpl5"))


def test_mask_of_wrong_size_is_an_error(synth, tmp_path):
    root = _copy(synth, tmp_path, "ISIC2018")
    mask = next((root / "ISIC2018" / "ISIC2018_Task1_Test_GroundTruth").glob("*.png"))
    Image.new("L", (7, 9)).save(mask)
    with pytest.raises(DatasetError, match=f"mask .*{mask.name}.* is \\(7, 9\\)"):
        load_task(root, get_card("isic2018"))


def test_empty_class_is_an_error(synth, tmp_path):
    root = _copy(synth, tmp_path, "complete_mednode_dataset")
    for p in (root / "complete_mednode_dataset" / "melanoma").iterdir():
        p.unlink()
    with pytest.raises(DatasetError, match="class 'melanoma' has no images"):
        load_task(root, get_card("mednode"))


def test_extra_top_level_folder_is_tolerated(synth, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synth / "complete_mednode_dataset", root / "mednode" / "complete_mednode_dataset")
    assert len(load_task(root, get_card("mednode")).samples) == 72


def test_empty_image_is_reported_not_dropped_silently(synth, tmp_path):
    root = _copy(synth, tmp_path, "ddi")
    (root / "ddi" / "000002.png").write_bytes(b"")
    data = load_task(root, get_card("ddi"))
    assert len(data.samples) == 79 and data.skipped[0][1] == "empty file"


def test_data_check_reports_every_task_with_its_expected_counts(synth):
    from typer.testing import CliRunner

    from dermbench.cli import app

    res = CliRunner().invoke(app, ["data", "check", "--data-root", str(synth)])
    assert res.exit_code == 0, res.output
    assert "21 of 21 task(s) found" in res.output
    assert "(expected" not in res.output and "/" not in "".join(l for l in res.output.splitlines() if "classes:" in l)
    assert "LEAK" not in res.output


def test_data_check_names_the_folders_it_looked_for(synth, tmp_path):
    from dermbench.data.check import check_data, format_report

    root = _copy(synth, tmp_path, "ddi")
    shutil.copy(root / "ddi" / "000001.png", root / "ddi" / "000002.png")  # a duplicate image
    text = format_report(check_data(root, [get_card("ddi"), get_card("mednode")]))
    assert "✗ mednode: not found" in text and "complete_mednode_dataset" in text
    assert "identical images: 000001, 000002" in text
    assert "1 of 2 task(s) found" in text
