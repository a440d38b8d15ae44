"""ITA on synthetic patches of known CIELAB colour."""
import math

import numpy as np
import pytest

skimage_color = pytest.importorskip("skimage.color")
from dermbench.stats import skin_tone as ST  # noqa: E402


def _patch(L, a, b, size=64):
    lab = np.zeros((size, size, 3))
    lab[...] = (L, a, b)
    return (np.clip(skimage_color.lab2rgb(lab), 0, 1) * 255).round().astype(np.uint8)


def test_rgb_to_lab_known_values():
    # sRGB red (255, 0, 0) under D65: L* 53.24, a* 80.09, b* 67.20 (Lindbloom's calculator); white: L* 100
    red = ST.rgb_to_lab(np.array([[[255, 0, 0]]], np.uint8))[0, 0]
    assert red == pytest.approx([53.24, 80.09, 67.20], abs=0.02)
    assert ST.rgb_to_lab(np.array([[[255, 255, 255]]], np.uint8))[0, 0, 0] == pytest.approx(100.0, abs=1e-3)


@pytest.mark.parametrize("L,b,category", [(75, 12, "very light"), (65, 15, "light"), (58, 12, "intermediate"),
                                          (55, 17, "tan"), (45, 20, "brown"), (30, 18, "dark")])
def test_ita_of_uniform_patches(L, b, category):
    expected = math.degrees(math.atan((L - 50) / b))
    got = ST.image_ita(_patch(L, 8, b))
    assert got["ita"] == pytest.approx(expected, abs=1.0)  # uint8 quantisation
    assert got["category"] == category and got["region"] == ST.REGION_BORDER


def test_lesion_pixels_are_excluded_with_a_mask_and_border_without():
    img = _patch(65, 8, 15, size=100)  # ITA 45°
    lesion = np.zeros((100, 100), bool)
    lesion[30:70, 30:70] = True
    img[lesion] = _patch(30, 20, 25, size=40).reshape(-1, 3)  # dark lesion
    with_mask = ST.image_ita(img, lesion)
    assert with_mask["ita"] == pytest.approx(45.0, abs=1.0) and with_mask["region"] == ST.REGION_MASK
    assert ST.image_ita(img)["ita"] == pytest.approx(45.0, abs=1.0)  # the border frame misses the centred lesion
    everything = np.zeros((100, 100), bool)
    everything[:] = True
    assert math.isnan(ST.image_ita(img, everything)["ita"])  # no skin left: unknown, not a guess
    assert ST.image_ita(img, everything)["category"] == "unknown"


def test_bins_and_bad_input():
    assert [ST.ita_category(x) for x in (56, 55, 41, 28, 10, -30, -31)] == [
        "very light", "light", "intermediate", "tan", "brown", "dark", "dark"]
    with pytest.raises(ValueError, match="RGB image"):
        ST.image_ita(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="differ in size"):
        ST.image_ita(np.zeros((4, 4, 3), np.uint8), np.zeros((5, 5), bool))
