"""Corruptions: severity 0 is the identity, determinism per (corruption, severity, seed, image), known answers."""
from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image

from dermbench.data.corruptions import (CORRUPTIONS, Corrupt, corrupt, names, parse_corruptions, parse_severities,
                                        view_name)


@pytest.fixture(scope="module")
def image() -> Image.Image:
    """A skin-like image with a dark lesion and mild texture (so every corruption has something to change)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64]
    lesion = ((yy - 30) / 14.0) ** 2 + ((xx - 34) / 18.0) ** 2 <= 1
    arr = np.where(lesion[..., None], [90, 50, 35], [210, 165, 140]) + rng.normal(0, 8, (64, 64, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def px(img) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


@pytest.mark.parametrize("name", names())
def test_severity_zero_is_the_identity_and_every_severity_changes_the_image(image, name):
    assert corrupt(image, name, 0, seed=0) is image
    assert Corrupt(name, 0, seed=3)(image) is image
    for severity in range(1, 6):
        out = corrupt(image, name, severity, seed=0)
        assert out.size == image.size and out.mode == "RGB"
        assert np.abs(px(out) - px(image)).sum() > 0, f"{name}@{severity} left the image unchanged"


@pytest.mark.parametrize("name", names())
def test_deterministic_per_corruption_severity_seed_and_image(image, name):
    a = px(corrupt(image, name, 4, seed=1))
    np.random.seed(123), random.seed(123)  # the caller's global random state must not matter ...
    b = px(corrupt(image, name, 4, seed=1))
    np.testing.assert_array_equal(a, b)


def test_random_draws_depend_on_seed_and_image_and_the_caller_state_is_restored(image):
    for name in ("gaussian_noise", "hair", "characters", "gel_bubbles", "ink_marks"):
        assert (px(corrupt(image, name, 3, seed=0)) != px(corrupt(image, name, 3, seed=1))).any(), name
    np.random.seed(7), random.seed(7)
    expected_np, expected_py = np.random.random(), random.random()
    np.random.seed(7), random.seed(7)
    corrupt(image, "gaussian_noise", 3, seed=0)  # medmnistc draws from the global generators
    corrupt(image, "characters", 3, seed=0)
    assert np.random.random() == expected_np and random.random() == expected_py


def test_medmnistc_implementations_are_used(image):
    from medmnistc.corruptions.microscopy import BlackCorner

    for severity, multiplier in zip(range(1, 6), [1.10, 1.05, 1.00, 0.95, 0.90]):
        expected = BlackCorner(severity_params=[multiplier]).apply(image.copy(), severity=0)
        np.testing.assert_array_equal(px(corrupt(image, "black_corner", severity)), expected)
    assert CORRUPTIONS["jpeg_compression"].source == "medmnistc"
    assert {c.source for c in CORRUPTIONS.values()} == {"medmnistc", "dermbench"}


def test_black_corner_known_answer(image):
    # severity 3: radius multiplier 1.0, the circle inscribed in the image: black outside, untouched inside
    out = px(corrupt(image, "black_corner", 3))
    yy, xx = np.mgrid[0:64, 0:64]
    r = np.hypot(yy - 32, xx - 32)
    assert (out[r > 33] == 0).all()
    np.testing.assert_array_equal(out[r < 31], px(image)[r < 31])


@pytest.mark.parametrize("name", ["gaussian_noise", "defocus_blur", "brightness_down", "contrast_down", "vignetting",
                                  "colour_cast", "black_corner", "pixelate"])
def test_stronger_severity_changes_the_image_more(image, name):
    change = [np.abs(px(corrupt(image, name, s)) - px(image)).mean() for s in range(1, 6)]
    assert all(b >= a for a, b in zip(change, change[1:])), (name, change)
    assert change[-1] > change[0]


def test_parsing_and_view_names():
    assert parse_corruptions("dermatology") == [n for n in names() if CORRUPTIONS[n].family == "dermatology"]
    assert parse_corruptions("hair, gaussian_noise") == ["gaussian_noise", "hair"]  # registry order
    assert parse_severities("5,1,3") == [1, 3, 5]
    with pytest.raises(ValueError, match="unknown corruption 'fog'"):
        parse_corruptions("hair,fog")
    with pytest.raises(ValueError, match="1..5"):
        parse_severities("0,6")
    with pytest.raises(ValueError, match="0..5"):
        corrupt(Image.new("RGB", (8, 8)), "hair", 7)
    assert view_name("eval", "hair", 3, 0) == "eval~hair~s3~seed0~v1"
