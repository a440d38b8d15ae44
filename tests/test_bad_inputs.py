"""Bad inputs and awkward files: each gets a clear error (exit code, the file or option named, no
result written) or a correct result with the oddity reported — never a traceback or a silent wrong
number. Cases of issue #16 (the ones this suite covers so far; the issue lists the rest)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from dermbench.cli import app
from dermbench.data.images import load_mask_array, load_rgb
from dermbench.data.locate import find_task_root, load_task
from dermbench.data.sample import DatasetError
from dermbench.data.synth import ensure_dermsynth
from dermbench.data.tasks import get_card

runner = CliRunner()


@pytest.fixture(scope="module")
def synth() -> Path:
    return ensure_dermsynth()


def _copy(synth: Path, tmp_path: Path, *folders: str) -> Path:
    root = tmp_path / "data"
    for folder in folders:
        shutil.copytree(synth / folder, root / folder)
    return root


def _results(path: Path) -> list[Path]:
    """Result JSONs (not the run's bookkeeping under _jobs/, _splits/, _bootstrap/)."""
    if not path.exists():
        return []
    return sorted(p for p in path.rglob("*.json") if not any(part.startswith("_") for part in p.relative_to(path).parts))


def _run(args: list[str]):
    return runner.invoke(app, ["run", "--model", "random-vit", "--protocol", "retrieval", "--n-boot", "20", "--quiet", *args])


# --------------------------------------------------------------------------------------------
# Image modes: every mode decodes to the picture it holds (a 16-bit PNG used to become all white)
# --------------------------------------------------------------------------------------------
def _gradient(h=8, w=16) -> np.ndarray:
    return np.tile(np.linspace(0, 1, w), (h, 1))


IMAGE_MODES = {
    "16-bit grayscale PNG": lambda: Image.fromarray((_gradient() * 65535).astype(np.uint16)),
    "8-bit grayscale": lambda: Image.fromarray((_gradient() * 255).astype(np.uint8), mode="L"),
    "palette": lambda: Image.fromarray((_gradient() * 255).astype(np.uint8), mode="L").convert("P"),
    "RGBA": lambda: Image.fromarray(np.dstack([(_gradient() * 255).astype(np.uint8)] * 3 + [np.full((8, 16), 255, np.uint8)]), mode="RGBA"),
    "grayscale + alpha": lambda: Image.fromarray((_gradient() * 255).astype(np.uint8), mode="L").convert("LA"),
    "32-bit integer": lambda: Image.fromarray((_gradient() * 65535).astype(np.int32), mode="I"),
    "float in [0, 1]": lambda: Image.fromarray(_gradient().astype(np.float32), mode="F"),
}


@pytest.mark.parametrize("mode", sorted(IMAGE_MODES))
def test_every_image_mode_decodes_to_its_gradient(mode, tmp_path):
    im = IMAGE_MODES[mode]()
    path = tmp_path / ("x.tiff" if im.mode in ("F", "I") else "x.png")
    im.save(path)
    rgb = np.asarray(load_rgb(path)).astype(int)
    assert rgb.shape == (8, 16, 3)
    row = rgb[0, :, 0]
    # a left-to-right ramp from black to white, not a constant image
    assert row[0] <= 2 and row[-1] >= 253 and np.all(np.diff(row) >= 0), row


def test_cmyk_jpeg_decodes_to_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(path)  # pure red in CMYK
    r, g, b = np.asarray(load_rgb(path))[4, 4].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_transparent_pixels_are_composited_over_black(tmp_path):
    path = tmp_path / "a.png"
    arr = np.zeros((4, 4, 4), np.uint8)
    arr[..., :3] = 200  # colour that a plain convert("RGB") would show
    Image.fromarray(arr, mode="RGBA").save(path)  # alpha 0 everywhere
    assert np.asarray(load_rgb(path)).max() == 0


def test_an_undecodable_image_names_the_file(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DatasetError, match="broken.jpg.*cannot be read"):
        load_rgb(path)


# --------------------------------------------------------------------------------------------
# Masks: documented encodings exactly; odd ones thresholded at 128 and reported
# --------------------------------------------------------------------------------------------
MASKS = {
    "0/255": ([0, 255], "0/255", 1),
    "0/1": ([0, 1], "0/1", 1),
    "0/128/255": ([0, 128, 255], "odd", 2),
    "lossy background 1-3": ([1, 2, 3, 255], "odd", 1),
    "all empty": ([0, 0], "empty", 0),
}


@pytest.mark.parametrize("case", sorted(MASKS))
def test_mask_encodings(case, tmp_path):
    values, encoding, n_lesion_columns = MASKS[case]
    arr = np.zeros((4, len(values)), np.uint8)
    arr[:] = values
    path = tmp_path / "m.png"
    Image.fromarray(arr, mode="L").save(path)
    mask, info = load_mask_array(path)
    assert info.encoding == encoding
    assert int(mask[0].sum()) == n_lesion_columns


def test_odd_and_empty_masks_are_reported_in_the_segmentation_result(synth, tmp_path):
    root = _copy(synth, tmp_path, "PH2Dataset")
    masks = sorted((root / "PH2Dataset").rglob("*_lesion.bmp"))
    m = np.asarray(Image.open(masks[0]).convert("L")).copy()
    m[m == 0] = 2  # background 2 from a lossy export
    Image.fromarray(m).save(masks[0])
    Image.fromarray(np.zeros_like(np.asarray(Image.open(masks[1]).convert("L")))).save(masks[1])
    out = tmp_path / "results"
    res = runner.invoke(app, ["run", "--model", "random-vit", "--task", "ph2-seg", "--protocol", "seg-linear",
                              "--data-root", str(root), "--output", str(out), "--n-boot", "20", "--quiet",
                              "--set", "seg-linear.epochs=1"])
    assert res.exit_code == 0, res.output
    (record,) = [json.loads(p.read_text()) for p in _results(out) if "seg-linear" in p.name]
    warnings = " ".join(record["info"]["warnings"])
    assert "1 mask(s) are not binary" in warnings and "1 mask(s) have no lesion pixel" in warnings
    assert record["info"]["mask_encodings"]["odd"] == 1


# --------------------------------------------------------------------------------------------
# Manifests
# --------------------------------------------------------------------------------------------
def test_absolute_image_paths_give_ids_relative_to_the_manifest(synth, tmp_path):
    root = _copy(synth, tmp_path, "MPL5")
    csv = root / "MPL5" / "manifest.csv"
    relative = load_task(root, get_card("mpl5"))
    t = pd.read_csv(csv)
    t["image"] = [str((csv.parent / p).resolve()) for p in t["image"]]
    t.to_csv(csv, index=False)
    absolute = load_task(root, get_card("mpl5"))
    assert [s.id for s in absolute.samples] == [s.id for s in relative.samples]
    assert not any(s.id.startswith("/") for s in absolute.samples)


def test_absolute_image_paths_outside_the_manifest_folder_need_an_id_column(synth, tmp_path):
    root = _copy(synth, tmp_path, "MPL5")
    csv = root / "MPL5" / "manifest.csv"
    elsewhere = tmp_path / "elsewhere"
    shutil.move(str(csv.parent / "images"), elsewhere)
    t = pd.read_csv(csv)
    t["image"] = [str(elsewhere / Path(p).name) for p in t["image"]]
    t.to_csv(csv, index=False)
    with pytest.raises(DatasetError, match=r"manifest.csv:2: .*outside the manifest's folder.*'id' column"):
        load_task(root, get_card("mpl5"))


@pytest.mark.parametrize("export", ["semicolons", "tabs", "header case and spaces", "utf-8 bom", "label case and spaces"])
def test_a_manifest_as_a_spreadsheet_exports_it_reads_the_same(synth, tmp_path, export):
    """Excel writes ';' (many locales) or tabs, a BOM, and headers such as 'Image' or ' Label'."""
    root = _copy(synth, tmp_path, "MPL5")
    csv = root / "MPL5" / "manifest.csv"
    plain = load_task(root, get_card("mpl5"))
    t = pd.read_csv(csv, dtype=str, keep_default_na=False)
    if export == "semicolons":
        t.to_csv(csv, index=False, sep=";")
    elif export == "tabs":
        t.to_csv(csv, index=False, sep="\t")
    elif export == "header case and spaces":
        t.rename(columns={"image": "Image", "label": " Label "}).to_csv(csv, index=False)
    elif export == "label case and spaces":
        assert not t["label"].str.isdigit().any()  # class names, so the names are what is read
        t.assign(label=[f" {v.upper()} " for v in t["label"]]).to_csv(csv, index=False)
    else:
        t.to_csv(csv, index=False, encoding="utf-8-sig")
    exported = load_task(root, get_card("mpl5"))
    assert [(s.id, s.label, s.groups) for s in exported.samples] == [(s.id, s.label, s.groups) for s in plain.samples]


def test_an_unknown_manifest_label_names_the_line(synth, tmp_path):
    root = _copy(synth, tmp_path, "MPL5")
    csv = root / "MPL5" / "manifest.csv"
    t = pd.read_csv(csv, dtype=str, keep_default_na=False)
    t.loc[2, "label"] = "melanocytic naevus?"
    t.to_csv(csv, index=False)
    with pytest.raises(DatasetError, match=r"manifest.csv:4: column 'label' has the label 'melanocytic naevus\?'"):
        load_task(root, get_card("mpl5"))


@pytest.mark.parametrize("line", [2, 4])
def test_a_manifest_row_with_more_fields_than_the_header_names_its_line(synth, tmp_path, line):
    """An unquoted comma in a value. On the first data row pandas took the row's first fields as its index
    and shifted the rest (the label column held another column's value, without a word)."""
    root = _copy(synth, tmp_path, "MPL5")
    csv = root / "MPL5" / "manifest.csv"
    lines = csv.read_text().splitlines()
    lines[line - 1] += ",an unquoted, caption"
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=rf"manifest.csv:{line}: more fields than the header; put values that contain ','"):
        load_task(root, get_card("mpl5"))


def test_a_semicolon_manifest_may_hold_commas_in_its_values(synth, tmp_path):
    root = _copy(synth, tmp_path, "MPL5")
    csv = root / "MPL5" / "manifest.csv"
    t = pd.read_csv(csv, dtype=str, keep_default_na=False)
    t.assign(site=[f"{v}, left" for v in t["site"]]).to_csv(csv, index=False, sep=";")
    data = load_task(root, get_card("mpl5"))
    assert all(s.groups["site"].endswith(", left") for s in data.samples) and len(data.samples) == len(t)


def test_a_manifest_header_naming_a_column_twice_is_refused(synth, tmp_path):
    root = _copy(synth, tmp_path, "MPL5")
    csv = root / "MPL5" / "manifest.csv"
    t = pd.read_csv(csv, dtype=str, keep_default_na=False)
    t["Label"] = t["label"]
    t.to_csv(csv, index=False)
    with pytest.raises(DatasetError, match=r"manifest.csv: column\(s\) \['label'\] appear more than once"):
        load_task(root, get_card("mpl5"))


def test_a_zero_byte_manifest_is_a_one_line_error(synth, tmp_path):
    root = _copy(synth, tmp_path, "MPL5")
    (root / "MPL5" / "manifest.csv").write_bytes(b"")
    out = tmp_path / "results"
    res = _run(["--task", "mpl5", "--data-root", str(root), "--output", str(out)])
    assert res.exit_code != 0
    assert "manifest.csv" in res.output and "empty" in res.output and "Traceback" not in res.output
    assert _results(out) == []
    check = runner.invoke(app, ["data", "check", "--data-root", str(root), "--task", "mpl5"])
    assert check.exit_code == 1 and "manifest is empty" in check.output


def test_a_class_with_a_single_image_is_refused_by_name(synth, tmp_path):
    root = _copy(synth, tmp_path, "MPL5")
    csv = root / "MPL5" / "manifest.csv"
    t = pd.read_csv(csv)
    first = t["label"].iloc[0]
    keep = t[t["label"] == first].index[1:]
    t.drop(index=keep).to_csv(csv, index=False)
    out = tmp_path / "results"
    res = _run(["--task", "mpl5", "--data-root", str(root), "--output", str(out)])
    assert res.exit_code != 0
    assert f"class {first!r}: 1 train, 0 test" in res.output, res.output
    assert _results(out) == []


# --------------------------------------------------------------------------------------------
# Folders that cannot be written
# --------------------------------------------------------------------------------------------
def test_a_results_folder_under_a_regular_file_names_the_path(synth, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    res = _run(["--task", "ddi", "--output", str(blocker / "results")])
    assert res.exit_code == 2, res.output
    assert str(blocker) in res.output and "cannot write" in res.output and "Traceback" not in res.output


def test_a_write_error_names_the_file_and_the_fix(tmp_path):
    from dermbench.io import WriteError, atomic_write_text

    (tmp_path / "f").write_text("x")
    with pytest.raises(WriteError, match=r"^cannot write .*/f/g: .*regular file"):
        atomic_write_text(tmp_path / "f" / "g" / "out.json", "{}")


# --------------------------------------------------------------------------------------------
# data check
# --------------------------------------------------------------------------------------------
def test_data_check_decodes_images_and_exits_1_on_an_undecodable_one(synth, tmp_path):
    root = _copy(synth, tmp_path, "ddi")
    victim = sorted((root / "ddi").glob("*.png"))[3]
    victim.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    res = runner.invoke(app, ["data", "check", "--data-root", str(root), "--task", "ddi"])
    assert res.exit_code == 1
    assert "UNREADABLE" in res.output and victim.name in res.output


def test_data_check_exits_1_when_a_task_is_missing(tmp_path):
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["data", "check", "--data-root", str(tmp_path / "empty"), "--task", "ddi"])
    assert res.exit_code == 1 and "not found" in res.output


def test_data_check_exits_1_on_a_train_test_leak(synth, tmp_path):
    root = _copy(synth, tmp_path, "ddi")
    images = sorted((root / "ddi").glob("*.png"))
    for p in images[1:]:
        shutil.copy(images[0], p)  # every image the same: some pair must straddle the split
    res = runner.invoke(app, ["data", "check", "--data-root", str(root), "--task", "ddi"])
    assert res.exit_code == 1 and "LEAK" in res.output


def test_data_check_with_an_unknown_task_is_a_one_line_error(synth):
    res = runner.invoke(app, ["data", "check", "--task", "foo"])
    assert res.exit_code == 2 and "unknown task 'foo'" in res.output and "Traceback" not in res.output


# --------------------------------------------------------------------------------------------
# Archives as they unzip: straight into the data root, without a folder named after the task
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task,folder", [("isic2016", "ISIC2016"), ("isic2017", "ISIC2017"), ("isic2018", "ISIC2018"),
                                         ("skincancer", "skincancer")])
def test_official_archives_extracted_straight_into_the_data_root_are_found(synth, tmp_path, task, folder):
    root = tmp_path / "data"
    shutil.copytree(synth / folder, root)  # the archives' own folders now sit directly in the data root
    (root / "unrelated_dataset").mkdir()
    card = get_card(task)
    assert find_task_root(root, card) == root
    wrapped = load_task(synth, card)
    unwrapped = load_task(root, card)
    assert [s.id for s in unwrapped.samples] == [s.id for s in wrapped.samples]


# --------------------------------------------------------------------------------------------
# The CLI's own options
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_short_and_long_help(flag):
    res = runner.invoke(app, [flag])
    assert res.exit_code == 0 and "Usage" in res.output


def test_version():
    from dermbench import __version__

    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"dermbench {__version__}"


# --------------------------------------------------------------------------------------------
# Federation across sites that spell a class differently (MED-Node 'naevus', PH2 'nevus')
# --------------------------------------------------------------------------------------------
def test_sites_match_classes_by_their_canonical_names(tmp_path):
    from dermbench.run.federated_sites import check_sites

    assert get_card("mednode").canonical_classes == get_card("ph2-cls").canonical_classes == ("nevus", "melanoma")
    sidecars = []
    for task in ("mednode", "ph2-cls"):
        card = get_card(task)
        info = {"fingerprint": "f", "weights_sha256": "w", "feature_dim": 8, "classes": list(card.canonical_classes),
                "source_classes": list(card.classes)}
        path = tmp_path / f"{task}.json"
        path.write_text(json.dumps(info))
        sidecars.append(path)
    assert check_sites(sidecars)["classes"] == ["nevus", "melanoma"]


# --------------------------------------------------------------------------------------------
# Options and settings refused before any work (nothing is built, nothing is written)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args,message", [
    (["--set", "lineer.epochs=1"], "--set lineer.epochs: unknown protocol 'lineer' (did you mean 'linear'?)"),
    (["--set", "linear.epochs=0"], "linear.epochs=0: must be at least 1"),
    (["--set", "linear.epochs=-5"], "linear.epochs=-5: must be at least 1"),
    (["--set", "linear.epoch=5"], "has no setting 'epoch' (did you mean 'epochs'?)"),
    (["--set", "linear.lr=0"], "a learning rate must be greater than 0"),
    (["--set", "linear.epochs=abc"], "--set linear.epochs=abc: expected an integer, got 'abc'"),
    (["--set", "seg-upernet.save_masks=maybe"], "--set seg-upernet.save_masks=maybe: expected true or false"),
    (["--n-boot", "0"], "--n-boot 0"),
    (["--synth-scale", "0"], "--synth-scale 0"),
])
def test_bad_options_are_refused_before_any_work(tmp_path, args, message):
    out = tmp_path / "results"
    res = runner.invoke(app, ["run", "--model", "random-vit", "--task", "ddi", "--output", str(out), *args])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert not out.exists()


@pytest.mark.parametrize("args,says", [
    (["--model", "DINOv2", "--task", "ddi"], "unknown model 'DINOv2' (did you mean 'dinov2'?)"),
    (["--model", "random-vit", "--task", "malignacy"], "unknown task 'malignacy' (did you mean 'malignancy'?)"),
    (["--model", "random-vit", "--task", "DDI"], "unknown task 'DDI' (did you mean 'ddi'?)"),
    (["--model", "random-vit", "--task", "ddi", "--protocol", "lienar"], "unknown protocol 'lienar' (did you mean 'linear'?)"),
])
def test_a_misspelt_name_gets_the_close_one(tmp_path, args, says):
    out = tmp_path / "results"
    res = runner.invoke(app, ["run", *args, "--results", str(out)])
    assert res.exit_code == 2 and says in res.output, res.output
    assert not out.exists()


def test_a_misspelt_pretraining_setting_names_the_close_one(tmp_path):
    res = runner.invoke(app, ["pretrain", "--preset", "tiny", "--set", "optim.base_lrr=1e-3", "--print-config",
                              "--out", str(tmp_path / "run")])
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: unknown configuration key 'optim.base_lrr' (did you mean 'optim.base_lr'?)")
    assert not (tmp_path / "run").exists()


def test_an_unknown_leaderboard_format_is_a_one_line_error(tmp_path):
    (tmp_path / "r").mkdir()
    res = runner.invoke(app, ["leaderboard", "--results", str(tmp_path / "r"), "--format", "xlsx", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "'xlsx'" in res.output and "Traceback" not in res.output, res.output


# --------------------------------------------------------------------------------------------
# One language across commands: a bad --device, or a results folder given twice, before any work
# --------------------------------------------------------------------------------------------
def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.parametrize("command,device,message", [
    (["run", "--model", "random-vit", "--task", "ddi"], "gpu", "--device 'gpu': expected auto | cpu | cuda | cuda:N | mps"),
    (["run", "--model", "random-vit", "--task", "ddi"], "cuda:99", "--device cuda:99"),
    (["federated", "export-client", "--model", "random-vit", "--task", "mednode"], "tpu", "--device 'tpu': expected"),
    (["pretrain", "--preset", "tiny"], "cuda:1", "--device cuda:1"),
])
def test_a_bad_device_is_refused_before_any_work(tmp_path, command, device, message):
    out = tmp_path / "written"
    target = ["--results", str(out)] if command[0] == "run" else ["--out", str(out)]
    res = runner.invoke(app, [*command, *target, "--device", device])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert not out.exists()


@pytest.mark.skipif("_cuda()", reason="this machine has CUDA: --device cuda is valid here")
def test_cuda_without_cuda_names_device_and_the_fix(tmp_path):
    res = runner.invoke(app, ["run", "--model", "random-vit", "--task", "ddi", "--results", str(tmp_path / "r"),
                              "--device", "cuda"])
    assert res.exit_code == 2 and "--device cuda: torch sees no CUDA device" in res.output
    assert "use --device cpu or --device auto" in res.output and not (tmp_path / "r").exists()


def test_a_results_folder_given_under_both_names_is_refused(tmp_path):
    res = runner.invoke(app, ["run", "--model", "random-vit", "--task", "ddi", "--results", str(tmp_path / "a"),
                              "-o", str(tmp_path / "b")])
    assert res.exit_code == 2 and "--results and --output were both given" in res.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# Bad files in the results folder (issue #16): an unreadable or stray JSON is named and skipped; a
# missing bootstrap/predictions file a paired test needs stops the command with the `dermbench run`
# line that makes it again (exit 1); --allow-missing-bootstrap shows those cells with ° and a note
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_model_store(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bad-files-store")
    res = runner.invoke(app, ["run", "--model", "random-vit,dermino-tiny", "--task", "ddi", "--protocol", "retrieval",
                              "--synth-scale", "0.25", "--n-boot", "20", "--quiet", "--output", str(out)])
    assert res.exit_code == 0, res.output
    return out


def _truncate_random_vit(store: Path) -> str:
    path = next(store.glob("random-vit/ddi/retrieval@*.json"))
    path.write_text(path.read_text()[:120])
    return path.name


def _stray_json(store: Path) -> str:
    (store / "random-vit" / "ddi" / "notes.json").write_text('{"todo": "rerun with more epochs"}')
    return "notes.json"


def _delete_bootstrap(store: Path) -> str:
    path = next((store / "_bootstrap").glob("ddi.*.npy"))
    path.unlink()
    return path.name


def _delete_predictions(store: Path) -> str:
    path = next(store.glob("random-vit/ddi/retrieval@*.predictions.csv"))
    path.unlink()
    return path.name


def _edit_predictions(store: Path) -> str:
    path = next(store.glob("random-vit/ddi/retrieval@*.predictions.csv"))
    path.write_text(path.read_text().replace("0.", "0.9", 1))  # one score changed by hand
    return path.name


COMPARE = ["compare", "-m", "random-vit", "-m", "dermino-tiny"]
BAD_STORE_CASES = {
    # name: (change to the store, command, exit code, what stdout must say beside the file's name)
    "truncated result: leaderboard warns and notes it": (_truncate_random_vit, ["leaderboard"], 0, ["Notes:", "unreadable JSON"]),
    "stray JSON: markdown leaderboard notes it": (_stray_json, ["leaderboard", "--format", "md"], 0, ["## Notes", "not a dermbench result"]),
    "stray JSON: results list warns and goes on": (_stray_json, ["results", "list"], 0, ["dermino-tiny · ddi · retrieval"]),
    "truncated result: compare names it": (_truncate_random_vit, COMPARE, 2, []),
    "missing bootstrap: leaderboard stops": (_delete_bootstrap, ["leaderboard"], 1, []),
    "missing bootstrap: leaderboard --rebuild stops": (_delete_bootstrap, ["leaderboard", "--rebuild"], 1, []),
    "missing bootstrap: --allow-missing-bootstrap shows °": (_delete_bootstrap, ["leaderboard", "--allow-missing-bootstrap"], 0, ["°", "Notes:"]),
    "missing bootstrap: compare stops": (_delete_bootstrap, COMPARE, 1, []),
    "missing bootstrap: fairness stops": (_delete_bootstrap, ["fairness"], 1, []),
    "missing bootstrap: calibration stops": (_delete_bootstrap, ["calibration"], 1, []),
    "missing predictions: leaderboard stops": (_delete_predictions, ["leaderboard"], 1, []),
    "edited predictions: leaderboard stops": (_edit_predictions, ["leaderboard"], 1, []),
}


@pytest.mark.parametrize("case", list(BAD_STORE_CASES))
def test_bad_files_in_the_results_folder_are_named_never_silent(two_model_store, tmp_path, case):
    change, command, code, says = BAD_STORE_CASES[case]
    store = tmp_path / "results"
    shutil.copytree(two_model_store, store)
    name = change(store)
    out = tmp_path / "tables"
    extra = ["--out", str(out)] if command[0] == "leaderboard" and code != 0 else []
    res = runner.invoke(app, [*command, "--results", str(store), *extra], env={"COLUMNS": "100"})
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output and name in res.output, res.output
    assert all(s in res.stdout for s in says), res.stdout
    if code == 0:  # skipped or allowed: said on stderr, one line per file
        assert any(line.startswith("warning: ") and name in line for line in res.stderr.splitlines()), res.stderr
    if code == 1:  # the store is incomplete: the fix is the exact line that makes the file again
        assert "dermbench run --model " in res.stderr and f"--results {store}" in res.stderr, res.stderr
        assert ("--allow-missing-bootstrap" in res.stderr) == (command == ["leaderboard"]), res.stderr
        assert not out.exists()  # nothing written


@pytest.mark.parametrize("option,value", [("--task", "ddi,isic2020"), ("--protocol", "lienar"), ("--metric", "dice")])
def test_leaderboard_filters_name_what_the_results_folder_holds(two_model_store, tmp_path, option, value):
    out = tmp_path / "tables"
    res = runner.invoke(app, ["leaderboard", "--results", str(two_model_store), option, value, "--out", str(out)])
    assert res.exit_code == 2 and f"{option} " in res.output and "Traceback" not in res.output, res.output
    assert ("ddi" if option == "--task" else "retrieval" if option == "--protocol" else "auroc") in res.output
    assert not out.exists()


@pytest.mark.parametrize("args,says", [
    (["fairness", "--attribute", "foo"], "--attribute foo: none of the matching results has it; attributes there: "
                                         "skin_type (ddi)"),
    (["fairness", "--metric", "dice"], "--metric dice applies to none of the 2 matching results (kinds: classification)"),
    (["fairness", "--model", "resnet50"], "no stored result matches --model/--task/--protocol; the results folder holds "
                                          "tasks ddi; models dermino-tiny, random-vit; protocols retrieval"),
    (["fairness", "--threshold", "youden", "--attribute", "foo"], "and subgroup columns for foo (--attribute)"),
    (["calibration", "--model", "resnet50"], "calibration: no stored result matches --model/--task/--protocol"),
    (["calibration", "--protocol", "linear"], "calibration: no stored result matches"),
])
def test_a_report_with_nothing_in_it_is_an_error_that_says_why(two_model_store, args, says):
    """An empty fairness or calibration table used to exit 0 with a note; it names what the store holds instead."""
    res = runner.invoke(app, [*args, "--results", str(two_model_store), "--task", "ddi"])
    assert res.exit_code == 2, res.output
    assert says in res.output and "Traceback" not in res.output, res.output
    ok = runner.invoke(app, [args[0], "--results", str(two_model_store), "--task", "ddi"]
                       + (["--attribute", "skin_type"] if args[0] == "fairness" else []))
    assert ok.exit_code == 0 and "ddi · retrieval" in ok.output, ok.output


def test_skin_tone_on_an_empty_store_is_an_error(tmp_path):
    (tmp_path / "r").mkdir()
    res = runner.invoke(app, ["skin-tone", "--results", str(tmp_path / "r")])
    assert res.exit_code == 2 and "no classification results under" in res.output, res.output


def test_skin_tone_estimates_the_whole_test_set_or_refuses(two_model_store, tmp_path):
    """Labelled tasks are skipped unless asked; the estimate joins the operating-point tables; a stored split
    naming test images the data no longer has is refused (it used to estimate on the rest)."""
    store = tmp_path / "results"
    shutil.copytree(two_model_store, store)
    res = runner.invoke(app, ["skin-tone", "--results", str(store), "--task", "ddi"])
    assert res.exit_code == 0 and "has dermatologist-assigned skin types, skipped" in res.output, res.output
    assert not (store / "_skin_tone").exists()
    res = runner.invoke(app, ["skin-tone", "--results", str(store), "--task", "ddi", "--include-labelled"])
    assert res.exit_code == 0, res.output
    record = json.loads(next(store.glob("random-vit/ddi/retrieval@*.json")).read_text())
    split = json.loads((store / record["split"]["path"]).read_text())
    estimates = pd.read_csv(store / "_skin_tone" / "ddi.csv")
    assert len(estimates) == len(split["test"]) and f"ITA estimated for {len(split['test'])} test images" in res.output
    res = runner.invoke(app, ["fairness", "--results", str(store), "--task", "ddi", "--threshold", "youden",
                              "--attribute", "ita_estimated"])
    assert res.exit_code == 0 and "ddi · retrieval · ita_estimated" in res.output, res.output
    res = runner.invoke(app, ["fairness", "--results", str(store), "--task", "ddi", "--attribute", "ita_estimated"])
    assert res.exit_code == 2 and "add --threshold youden" in res.output, res.output

    split["test"].append("not-in-the-data")
    (store / record["split"]["path"]).write_text(json.dumps(split))
    res = runner.invoke(app, ["skin-tone", "--results", str(store), "--task", "ddi", "--include-labelled", "--overwrite"])
    assert res.exit_code == 2 and "'not-in-the-data'" in res.output and "the data changed since the run" in res.output


def test_run_recomputes_a_truncated_result_of_the_cell_it_would_skip(two_model_store, tmp_path):
    store = tmp_path / "results"
    shutil.copytree(two_model_store, store)
    path = next(store.glob("random-vit/ddi/retrieval@*.json"))
    intact = json.loads(path.read_text())
    path.write_text(path.read_text()[:120])
    res = runner.invoke(app, ["run", "--model", "random-vit", "--task", "ddi", "--protocol", "retrieval", "--synth-scale",
                              "0.25", "--n-boot", "20", "--quiet", "--output", str(store)])
    assert res.exit_code == 0 and "1 result(s) computed, 0 skipped" in res.output, res.output
    assert json.loads(path.read_text())["metrics"] == intact["metrics"]  # not counted as done; the same numbers again


# DERMBENCH_PROGRESS: a value it does not understand is named in a warning; the work goes on without it
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["maybe", "2"])
def test_an_unknown_progress_setting_is_named_and_ignored(synth, monkeypatch, value):
    import dermbench.progress

    monkeypatch.setattr(dermbench.progress, "_warned_values", set())
    monkeypatch.setenv("DERMBENCH_PROGRESS", value)
    res = runner.invoke(app, ["data", "check", "--data-root", str(synth), "--task", "mednode"])
    assert res.exit_code == 0, res.output
    assert f"DERMBENCH_PROGRESS={value!r}: expected 1" in res.stderr and "Traceback" not in res.output
    assert "data check · mednode" not in res.stderr  # ignored: no terminal here, so no bar
    assert "1 of 1 task(s) found" in res.stdout


# Run-time silences (issue #16): said before any work, refused or stored in every result
# --------------------------------------------------------------------------------------------
def _result_files(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in _results(out) if "@" in p.name]


def _leaky_ddi(synth: Path, tmp_path: Path, copies: int = 12) -> Path:
    """ddi with its first image copied over the next ``copies`` (some pairs straddle the seeded split)."""
    root = _copy(synth, tmp_path, "ddi")
    images = sorted((root / "ddi").glob("*.png"))
    for p in images[1 : 1 + copies]:
        shutil.copy(images[0], p)
    return root


def _leaks_found_by_data_check(root: Path) -> int:
    res = runner.invoke(app, ["data", "check", "--data-root", str(root), "--task", "ddi"])
    return res.output.count("LEAK:")


def test_train_test_duplicates_are_said_once_and_counted_in_every_result(synth, tmp_path):
    root, out = _leaky_ddi(synth, tmp_path), tmp_path / "results"
    res = _run(["--seed", "0,1", "--task", "ddi", "--data-root", str(root), "--output", str(out)])  # two results
    assert res.exit_code == 0, res.output
    leaks = _leaks_found_by_data_check(root)
    assert leaks > 0
    assert res.output.count("train/test pair(s) are the same image") == 1  # once per task, not per job
    assert f"ddi: {leaks} train/test pair(s)" in res.output and str(root / "ddi") in res.output
    results = _result_files(out)
    assert len(results) == 2
    for r in results:  # the count is where the numbers are
        assert r["info"]["n_train_test_duplicates"] == leaks
        assert any("same image" in w for w in r["info"]["warnings"])


def test_strict_refuses_train_test_duplicates_before_any_work(synth, tmp_path):
    root, out = _leaky_ddi(synth, tmp_path), tmp_path / "results"
    res = _run(["--task", "ddi", "--data-root", str(root), "--output", str(out), "--strict"])
    assert res.exit_code == 2, res.output
    assert "--strict: task ddi" in res.output and "same image" in res.output and "data check" in res.output
    assert str(root / "ddi") in res.output and "Traceback" not in res.output  # the example pair's files
    assert _result_files(out) == [] and not (out / "_jobs").exists()


def test_untagged_rows_of_an_official_split_are_said_and_counted(synth, tmp_path):
    root, out = _copy(synth, tmp_path, "MPL5"), tmp_path / "results"
    manifest = root / "MPL5" / "manifest.csv"
    df = pd.read_csv(manifest)
    df["split"] = ""
    for _, rows in df.groupby("label"):  # per class: train, test, train, then one without a tag
        df.loc[rows.index[:3], "split"] = ["train", "test", "train"]
    df.to_csv(manifest, index=False)
    untagged = int((df["split"] == "").sum())
    res = _run(["--task", "mpl5", "--split", "official", "--data-root", str(root), "--output", str(out)])
    assert res.exit_code == 0, res.output
    line = f"mpl5: --split official left out {untagged} of {len(df)} images that have no split tag"
    assert res.output.count(line) == 1, res.output
    [result] = _result_files(out)
    assert result["info"]["n_untagged_left_out"] == untagged
    split_file = out / result["split"]["path"]
    assert str(split_file) in res.output and len(json.loads(split_file.read_text())["untagged"]) == untagged


def test_nan_weights_stop_the_run_naming_the_backbone_and_the_image(synth, tmp_path):
    import torch

    from dermbench.models.weights import load_state_dict_file
    from dermino.backbone import TINY_WEIGHTS

    nan_weights = tmp_path / "nan.pth"
    torch.save({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                for k, v in load_state_dict_file(TINY_WEIGHTS).items()}, nan_weights)
    out = tmp_path / "results"
    res = runner.invoke(app, ["run", "--model", "dermino-tiny", "--weights", str(nan_weights), "--task", "ddi,mpl5",
                              "--protocol", "retrieval,linear", "--n-boot", "20", "--quiet", "--data-root", str(synth),
                              "--output", str(out)])
    assert res.exit_code == 1, res.output
    error = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "dermino-tiny" in error[0] and str(nan_weights) in error[0]
    assert "non-finite (NaN or inf) global features for sample" in error[0] and "task ddi" in error[0]
    assert str(synth / "ddi") in error[0] and "Traceback" not in res.output  # the image file
    assert _result_files(out) == []  # no AUROC of NaN features stored, for this task or the next


def test_a_named_task_that_is_not_found_is_refused_before_any_work(synth, tmp_path):
    root, out = _copy(synth, tmp_path, "ddi"), tmp_path / "results"
    res = _run(["--task", "ddi,ph2-cls", "--data-root", str(root), "--output", str(out)])
    assert res.exit_code == 2, res.output
    assert "--task ph2-cls" in res.output and str(root) in res.output and "PH2Dataset" in res.output
    assert "--data-root" in res.output and "dermbench data synth" in res.output and "Traceback" not in res.output
    assert _result_files(out) == [] and not (out / "_jobs").exists()


def test_a_data_root_that_is_the_dataset_folder_itself_names_its_parent(synth, tmp_path):
    root, out = _copy(synth, tmp_path, "ddi"), tmp_path / "results"
    res = _run(["--task", "ddi", "--data-root", str(root / "ddi"), "--output", str(out)])
    assert res.exit_code == 2, res.output
    assert "looks like the DDI folder itself" in res.output and f"pass --data-root {root}" in res.output
    assert _result_files(out) == []


def test_a_data_root_that_does_not_exist_is_refused_before_any_work(tmp_path):
    out = tmp_path / "results"
    res = _run(["--task", "all", "--data-root", str(tmp_path / "nowhere"), "--output", str(out)])
    assert res.exit_code == 2, res.output
    assert f"--data-root {tmp_path / 'nowhere'}: no such folder" in res.output and "Traceback" not in res.output
    assert _result_files(out) == []


def test_task_all_on_a_data_root_without_datasets_exits_1(tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "results"
    res = _run(["--task", "all", "--data-root", str(tmp_path / "empty"), "--output", str(out)])
    assert res.exit_code == 1, res.output
    assert "not found under" in res.output and "ddi" in res.output and "nothing was computed" in res.output
    assert _result_files(out) == []


def test_task_all_runs_what_is_there_and_names_what_is_missing(synth, tmp_path):
    root, out = _copy(synth, tmp_path, "ddi"), tmp_path / "results"
    res = _run(["--task", "all", "--data-root", str(root), "--output", str(out)])
    assert res.exit_code == 0, res.output
    assert "not run, not found under the data root:" in res.output and "mpl5" in res.output
    assert [r["task"] for r in _result_files(out)] == ["ddi"]
    again = _run(["--task", "all", "--data-root", str(root), "--output", str(out)])  # resumed: all stored
    assert again.exit_code == 0 and "1 of them stored earlier" in again.output, again.output


def test_missing_weights_are_one_line_per_model_and_its_jobs_are_not_attempted(synth, tmp_path):
    root, out = _copy(synth, tmp_path, "ddi", "MPL5"), tmp_path / "results"
    args = ["--task", "ddi,mpl5", "--protocol", "retrieval", "--seed", "0,1", "--n-boot", "20", "--quiet",
            "--data-root", str(root), "--output", str(out)]
    res = runner.invoke(app, ["run", "--model", "dermino,random-vit", *args])
    assert res.exit_code == 1, res.output  # the other model ran; the refused one makes the run incomplete
    assert res.output.count("no weights for dermino") == 1  # not once per task × seed
    assert "teacher_checkpoint.pth" in res.output and "--weights" in res.output and "Traceback" not in res.output
    assert {r["model"] for r in _result_files(out)} == {"random-vit"} and not (out / "dermino").exists()
    alone = runner.invoke(app, ["run", "--model", "dermino", *args[:-1], str(tmp_path / "r2")])
    assert alone.exit_code == 2 and "no model of this run has its weights" in alone.output, alone.output
    assert alone.output.count("no weights for dermino") == 1  # said once, in the error itself
    assert _result_files(tmp_path / "r2") == []


@pytest.mark.parametrize("extra, message", [
    (["--jobs", "0"], "--jobs '0': expected a number of worker processes >= 1"),
    (["--jobs", "many"], "--jobs 'many': expected a number of worker processes >= 1"),
    (["--jobs", "2", "--shard", "0/2"], "--jobs 2 runs worker processes on this machine; with --shard"),
    (["--jobs", "2", "--executor", "slurm"], "--jobs 2 runs worker processes on this machine; with --executor slurm"),
])
def test_bad_jobs_values_are_refused_before_any_work(extra, message, tmp_path):
    res = _run(["--task", "ddi", "--output", str(tmp_path / "r"), *extra])
    assert res.exit_code == 2 and message in res.output, res.output
    assert not (tmp_path / "r").exists()
