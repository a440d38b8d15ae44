"""`dermbench weights check|where`, and every backbone's release file (file name and container as
released) through `weights check`; a few through `dermbench run --weights FILE --task ddi` end to end."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from dermbench.cli import app
from tests.models.release_files import RELEASE_NAMES, random_like_target, write_release_file, zeros_like_meta


def _invoke(*args):
    return CliRunner().invoke(app, list(args))


def test_weights_check_reports_format_keys_settings_and_hash(tmp_path):
    from dermbench.io import sha256_file
    from dermbench.models.weights_check import architecture_module

    module, _, _ = architecture_module("lvmmed")
    path = write_release_file("lvmmed", zeros_like_meta(module.state_dict()), tmp_path)  # a legacy pickle
    res = _invoke("weights", "check", "--model", "lvmmed", str(path))
    assert res.exit_code == 0, res.output
    assert "torch-legacy-pickle" in res.output and sha256_file(path) in res.output
    assert "320 in the file -> 318 after conversion; 318/318 model tensors provided" in res.output
    assert "result      OK: loads strictly into lvmmed" in res.output
    wrong = _invoke("weights", "check", "--model", "dinov2", str(path))  # a ResNet file for a ViT
    assert wrong.exit_code == 1
    assert "DOES NOT LOAD into dinov2" in wrong.output and "missing     174:" in wrong.output
    assert "position embedding: file none; model 16x16 grid + 1 prefix" in wrong.output


def test_weights_check_bad_input_is_one_clear_line(tmp_path):
    res = _invoke("weights", "check", "--model", "nope", str(tmp_path / "x.pth"))
    assert res.exit_code == 2 and "unknown model" in res.output
    res = _invoke("weights", "check", "--model", "dinov2", str(tmp_path / "missing.pth"))
    assert res.exit_code == 2 and "no such file" in res.output
    page = tmp_path / "model.safetensors"
    page.write_text("<html>Google Drive - virus scan warning</html>")
    res = _invoke("weights", "check", "--model", "dinov2", str(page))
    assert res.exit_code == 2 and "not a weights file" in res.output


def test_weights_where_lists_names_sources_and_what_is_found(tmp_path, monkeypatch):
    monkeypatch.setenv("DERMBENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    folder = tmp_path / "weights" / "dinov2"
    folder.mkdir(parents=True)
    (folder / "dinov2_vitb14_pretrain.pth").write_bytes(b"PK\x03\x04")  # the torch.hub name is accepted
    res = _invoke("weights", "where")
    assert res.exit_code == 0, res.output
    for key in ("dermino", "resnet50", "vit_base", "clip", "siglip", "biomedclip", "medimageinsight", "dinov2",
                "lvmmed", "panderm"):
        assert f"\n{key}\n" in "\n" + res.output
    assert "teacher_checkpoint.pth" in res.output and "medimageinsigt-v1.0.0.pt" in res.output
    assert f"FOUND {folder / 'dinov2_vitb14_pretrain.pth'} (dermbench weights folder)" in res.output
    assert "timm/vit_base_patch16_clip_224.openai:open_clip_pytorch_model.bin" in res.output


# Every backbone, full size, in its release's own file name and container; zeros (no init) keep it cheap.
RELEASES = ["dermino", "resnet50", "vit_base", "clip", "siglip", "biomedclip", "medimageinsight", "dinov2",
            "dinov2-hf", "lvmmed", "lvmmed-vit", "panderm", "panderm-base"]


@pytest.mark.slow
@pytest.mark.parametrize("release", RELEASES)
def test_every_release_file_passes_weights_check(release, tmp_path):
    from dermbench.models.weights_check import architecture_module

    key = "dinov2" if release == "dinov2-hf" else release
    module, _, _ = architecture_module(key)
    clip_state = None
    if key == "clip":  # open_clip's file holds the whole CLIP model
        import open_clip

        clip_state = zeros_like_meta(open_clip.create_model("ViT-B-16-quickgelu", pretrained=None, device="meta").state_dict())
    path = write_release_file(release, zeros_like_meta(module.state_dict()), tmp_path, clip_state)
    assert path.name == RELEASE_NAMES[release]
    res = _invoke("weights", "check", "--model", key, str(path))
    path.unlink()  # up to 1.4 GB
    assert res.exit_code == 0, res.output
    assert f"OK: loads strictly into {key}" in res.output
    expected_format = {"medimageinsight": "safetensors", "lvmmed": "torch-legacy-pickle", "resnet50": "safetensors",
                       "vit_base": "safetensors", "siglip": "safetensors", "dinov2-hf": "safetensors"}
    assert f"format      {expected_format.get(release, 'torch-zip')} (read from the content" in res.output
    if key == "dinov2":
        assert "37x37 grid + 1 prefix (converted to 16x16 grid + 1 prefix)" in res.output


@pytest.mark.slow
@pytest.mark.parametrize("release", ["dermino", "lvmmed", "lvmmed-vit"])
def test_run_on_ddi_with_a_release_file(release, tmp_path):
    """`dermbench run --model KEY --weights FILE --task ddi` on a release-format file of random weights:
    DermINO's teacher checkpoint, LVM-Med's R50 as a legacy pickle, LVM-Med's ViT (its 224 px
    classification feature). DINOv2's hub .pth runs the same path (checked above and in test_release_fixes)."""
    overrides = {"pos_embed": (1, 1 + 37 * 37, 768)} if release == "dinov2" else None
    state = random_like_target(release, seed=0, overrides=overrides)
    path = write_release_file(release, state, tmp_path / "weights")
    res = _invoke("run", "--model", release, "--weights", str(path), "--task", "ddi", "--protocol", "retrieval",
                  "--synth-scale", "0.25", "--n-boot", "50", "--output", str(tmp_path / "results"), "--quiet")
    assert res.exit_code == 0, res.output
    from dermbench.io import sha256_file

    stored = list((tmp_path / "results").glob("*/ddi/retrieval@*.json"))
    assert len(stored) == 1
    assert sha256_file(path) in stored[0].read_text()  # the weights' hash travels with the result


def test_a_failed_hub_download_is_the_clear_missing_weights_error(monkeypatch, tmp_path):
    """Online but unreachable (no network, gated repo): the same one-line error as offline, naming the
    download that failed, never the hub's traceback. Nothing is fetched: the download is replaced."""
    import huggingface_hub

    from dermbench.models import registry
    from dermbench.models.weights import WeightsError, resolve_weights

    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    meta = registry.get("dinov2").meta
    with pytest.raises(WeightsError, match=r"no weights for dinov2 \(downloading .* failed: OSError\).*--weights random"):
        resolve_weights(meta, None)
