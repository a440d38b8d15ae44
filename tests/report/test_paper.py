"""`dermbench paper` and `dermbench reader-study` on a small DermSynth store.

One module-scoped run (random-vit: MPL5 and SID2 with the linear probe and label efficiency, the
paper's reader-study tasks; ISIC2016 with the linear segmentation head saving its masks) serves
every test; DermSynth and the feature cache are the session's.
"""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from dermbench.cli import app

runner = CliRunner()
FAST = ["--set", "linear.epochs=5", "--set", "label-efficiency.epochs=5", "--set", "label-efficiency.fractions=0.5,1.0",
        "--set", "label-efficiency.repeats=1", "--set", "seg-linear.epochs=2", "--set", "seg-linear.save_masks=true",
        "--n-boot", "100", "--quiet"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("paper-results")
    res = runner.invoke(app, ["run", "--model", "random-vit", "--task", "mpl5,sid2", "--protocol", "linear,label-efficiency",
                              "--results", str(out), *FAST])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["run", "--model", "random-vit", "--task", "isic2016", "--protocol", "seg-linear",
                              "--results", str(out), *FAST])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def simulated(store, tmp_path_factory):
    folder = tmp_path_factory.mktemp("reader-study")
    csv = folder / "reader_study.csv"
    res = runner.invoke(app, ["reader-study", "--readings", str(csv), "--simulate", "--results", str(store),
                              "--out", str(folder / "out")])
    assert res.exit_code == 0, res.output
    return csv, folder / "out", res.output


def _truth(store: Path) -> dict[tuple[str, str], str]:
    """Ground truth straight from the stored predictions (label index -> the record's class names)."""
    truth = {}
    for task in ("mpl5", "sid2"):
        record = json.loads(next((store / "random-vit" / task).glob("linear@*.json")).read_text())
        pred = pd.read_csv(next((store / "random-vit" / task).glob("linear@*.predictions.csv")), dtype={"sample_id": str})
        truth.update({(task, s): record["classes"][int(y)] for s, y in zip(pred["sample_id"], pred["label"])})
    return truth


def test_simulated_study_is_deterministic_and_shaped_like_the_paper(store, simulated, tmp_path):
    from dermbench.report.reader_study import simulate_for_results

    csv, _, _ = simulated
    again = simulate_for_results(store, tmp_path / "again.csv")
    assert again.read_bytes() == csv.read_bytes()
    df = pd.read_csv(csv, dtype=str)
    assert list(df.columns) == ["reader", "experience", "image", "dataset", "round", "answer"]
    assert df["reader"].nunique() == 23 and set(df["round"]) == {"without-ai", "with-ai"}
    assert set(df["dataset"]) == {"mpl5", "sid2"}
    assert df.groupby(["reader", "round"]).size().nunique() == 1  # every reader reads every image in both rounds


def test_reader_study_numbers_match_a_recount_of_the_csv(store, simulated):
    """The CLI's written tables against an independent recount of the CSV (no second model fit)."""
    from dermbench.report.reader_study import model_answers

    csv, out, printed = simulated
    df = pd.read_csv(csv, dtype=str)
    truth = _truth(store)
    df["correct"] = [a == truth[(d, i)] for a, d, i in zip(df["answer"], df["dataset"], df["image"])]
    recount = df.groupby(["reader", "round"])["correct"].mean()
    got = pd.read_csv(out / "reader_study_per_reader.csv").set_index(["reader", "round"])["accuracy"]
    assert np.allclose(got.loc[recount.index].to_numpy(), recount.to_numpy(), atol=1e-6)
    summary = json.loads((out / "reader_study.json").read_text())
    change = recount.xs("with-ai", level="round") - recount.xs("without-ai", level="round")
    assert summary["ai_assistance"]["mean_change"] == pytest.approx(change.mean())
    assert summary["mixed_effects"]["readers"] == 23 and summary["mixed_effects"]["reader_sd"] >= 0
    assert set(summary["label_efficiency_accuracy"]["random-vit"]) == {"0.5", "1.0"}
    # the model's answers are its linear predictions on the same images
    classes = json.loads(next((store / "random-vit" / "mpl5").glob("linear@*.json")).read_text())["classes"]
    pred = pd.read_csv(next((store / "random-vit" / "mpl5").glob("linear@*.predictions.csv")), dtype={"sample_id": str})
    answers = model_answers(store, "random-vit", ["mpl5"])
    assert [answers.loc[("mpl5", sid)] for sid in pred["sample_id"]] == [classes[int(p)] for p in pred["pred"]]
    assert "## Multi-reader multi-case analysis" in printed and "Clopper–Pearson" in printed
    for name in ("reader_study.md", "fig_reader_study_accuracy.svg", "fig_reader_study_paired.svg",
                 "reader_study_followed_when_wrong.csv", "reader_study_model_vs_readers.csv"):
        assert (out / name).is_file(), name


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("body, expected", [
    ("reader,experience,image,dataset,answer\nR1,x,a,mpl5,melanoma\n", r"missing column\(s\) \['round'\]"),
    ("reader,experience,image,dataset,round,answer\nR1,x,{img},mpl5,without-ai,melanoma\nR1,x,{img},mpl5,before,melanoma\n",
     r"row 3, column 'round': 'before' is not one of without-ai, with-ai"),
    ("reader,experience,image,dataset,round,answer\nR1,x,nope,mpl5,without-ai,melanoma\n",
     r"row 2, column 'image': 'nope' is not an image of task 'mpl5'"),
    ("reader,experience,image,dataset,round,answer\nR1,x,{img},mpl5,without-ai,eczema\n",
     r"row 2, column 'answer': 'eczema' is not a class of 'mpl5'; valid: melanoma"),
    ("reader,experience,image,dataset,round,answer\nR1,x,{img},mpl7,without-ai,melanoma\n",
     r"row 2, column 'dataset': 'mpl7' is not a task"),
    ("reader,experience,image,dataset,round,answer\nR1,x,{img},mpl5,without-ai,melanoma\nR1,x,{img},mpl5,without-ai,melanoma\n",
     r"row 3: reader 'R1' read image mpl5/.* twice"),
    ("reader,experience,image,dataset,round,answer\nR1,x,{img},mpl5,without-ai,\n", r"row 2, column 'answer': empty value"),
])
def test_bad_readings_files_are_named_with_row_and_column(store, tmp_path, body, expected):
    image = pd.read_csv(next((store / "random-vit" / "mpl5").glob("linear@*.predictions.csv")), dtype={"sample_id": str})["sample_id"][0]
    path = _write(tmp_path / "bad.csv", body.format(img=image))
    res = runner.invoke(app, ["reader-study", "--readings", str(path), "--results", str(store)])
    assert res.exit_code == 2
    message = " ".join(res.output.split())
    assert str(path) in message.replace(" ", "") or "bad.csv" in message
    assert re.search(expected, message), message


def test_missing_readings_file_is_a_clear_error(store, tmp_path):
    res = runner.invoke(app, ["reader-study", "--readings", str(tmp_path / "none.csv"), "--results", str(store)])
    assert res.exit_code == 2 and "does not exist" in res.output


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("href", "src") and value and not value.startswith(("#", "data:")):
                self.links.append(value)


def test_paper_folder_has_every_part_and_its_links_resolve(store, tmp_path):
    out = tmp_path / "paper"
    res = runner.invoke(app, ["paper", "--results", str(store), "--out", str(out)])
    assert res.exit_code == 0, res.output
    index = (out / "index.html").read_text(encoding="utf-8")
    parser = _Links()
    parser.feed(index)
    assert parser.links and all((out / link).is_file() for link in parser.links), parser.links
    assert '<meta name="viewport"' in index
    for rel in ("leaderboard/leaderboard.html", "leaderboard/fig_heatmap_linear.svg", "reader_study/reader_study.csv",
                "reader_study/fig_reader_study_paired.svg", "embeddings/fig_tsne_random-vit.svg",
                "qualitative/fig_qualitative_isic2016_seg-linear.png", "tables/backbones.csv", "tables/datasets.csv",
                "tables/skin_types.csv", "tables/sexes.csv"):
        assert (out / rel).is_file(), rel
    backbones = pd.read_csv(out / "tables" / "backbones.csv")
    assert backbones.loc[0, "model"] == "random-vit" and backbones.loc[0, "type"] == "ViT (patch 8)"
    datasets = pd.read_csv(out / "tables" / "datasets.csv").set_index("task")
    split = json.loads(next((store / "_splits").glob("mpl5.*.json")).read_text())
    assert datasets.loc["mpl5", "test"] == split["n_test"] and datasets.loc["isic2016", "modality"] == "dermoscopic"
    skin = pd.read_csv(out / "tables" / "skin_types.csv").set_index("task")
    assert skin.loc["mpl5"].sum() == datasets.loc["mpl5", "images"]  # every image counted once
    assert "simulated study" in res.output


def test_paper_links_a_leaderboard_built_from_the_same_results_and_rebuilds_a_stale_one(store, tmp_path):
    import shutil

    results = tmp_path / "results"
    shutil.copytree(store, results)
    board = tmp_path / "board"
    res = runner.invoke(app, ["leaderboard", "--results", str(results), "--format", "all", "--out", str(board)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "site" / "paper"
    res = runner.invoke(app, ["paper", "--results", str(results), "--out", str(out), "--leaderboard", str(board),
                              "--no-embeddings"])
    assert res.exit_code == 0, res.output
    assert not (out / "leaderboard").exists()  # no second copy
    index = (out / "index.html").read_text(encoding="utf-8")
    parser = _Links()
    parser.feed(index)
    linked = [link for link in parser.links if "leaderboard.html" in link or "fig_heatmap_" in link]
    assert linked and all((out / link).resolve().is_file() for link in linked), linked
    assert all(link.startswith("../../board/") for link in linked) and "is the one in" in res.output
    # the results change (a result rewritten): the linked leaderboard no longer shows them, so it is built again
    result = next(results.rglob("linear@*.json"))
    result.write_text(result.read_text())
    res = runner.invoke(app, ["paper", "--results", str(results), "--out", str(tmp_path / "again"),
                              "--leaderboard", str(board), "--no-embeddings"])
    assert res.exit_code == 0, res.output
    assert "the results changed since it was built" in res.output
    assert (tmp_path / "again" / "leaderboard" / "leaderboard.html").is_file()


def test_caption_table_shows_the_same_images_for_every_model(tmp_path):
    from dermbench.report.qualitative import caption_table
    from dermbench.run.results import write_result

    preds = pd.DataFrame({"sample_id": ["3", "1", "2"], "reference": ["r3", "r1", "r2"]})
    records = []
    for model, generated in (("a", ["a3", "a1", "a2"]), ("b", ["b3", "b1", "b2"])):
        record = {"model": model, "task": "skincap", "protocol": "caption", "kind": "caption"}
        path = write_result(tmp_path, record, preds.assign(generated=generated))
        records.append({**record, "_path": str(path)})
    table = caption_table(records, n_images=2)
    assert list(table["sample_id"].unique()) == ["1", "2"]
    one = table[table["sample_id"] == "1"].set_index("source")["caption"].to_dict()
    assert one == {"reference": "r1", "a": "a1", "b": "b1"}
