"""Image corruptions for the robustness protocol: generic ones and dermatology acquisition artefacts.

Every corruption has 5 severities (1 mildest ... 5 strongest); severity 0 is the identity (the image
is returned unchanged, same object). A corruption is deterministic per (corruption, severity, seed,
image): its random draws come from a generator seeded by the sha256 of those four, the image
identified by its pixels, so a rerun -- and the feature cache keyed by (corruption, severity, seed)
-- sees exactly the same corrupted image.

Corruptions are applied to the image *as the model sees it*: after the backbone's resize and crop,
before tensor conversion and normalisation (the robustness protocol splits the transform there).
That is the convention of ImageNet-C and MedMNIST-C (224x224 images), so pixel-sized parameters
(blur radii, text size, hair width) mean the same thing for every dataset whatever its resolution.
Those parameters are for a 224-pixel image: for another input size the blur radii and stroke widths
scale with the short side, and medmnistc's text and bubbles (drawn in absolute pixels) are drawn on a
224x224 copy whose change is resized onto the image.

Sources (``Corruption.source``):

- ``medmnistc``: the implementation of the MedMNIST-C package (Di Salvo et al. 2024, Apache-2.0) with
  its ``dermamnist`` severity table: gaussian_noise, jpeg_compression, pixelate, brightness_up/down,
  contrast_up/down, black_corner, characters; gel_bubbles uses its ``Bubble`` (defined for pathmnist).
  Only the modules of medmnistc that import without ImageMagick are used. Their random draws use the
  global ``random``/``numpy.random`` state, so they run inside :func:`_seeded_globals`, which seeds
  both and restores the caller's state afterwards.
- ``dermbench``: written here because medmnistc lacks them or cannot import them -- defocus_blur and
  motion_blur (medmnistc's ``filter`` module needs the ImageMagick shared library at import time; these
  use medmnistc's dermamnist parameters with OpenCV kernels), vignetting, text_overlay (device
  annotations, larger than medmnistc's ``characters``, which stays for comparability with MedMNIST-C),
  ruler, hair, ink_marks, colour_cast.

``black_corner``: medmnistc's dermamnist table lists radius multipliers 1.10, 1.05, 1.00, 0.90, 0.95
(severity 5 milder than 4); we use the same values in increasing order (..., 0.95, 0.90).
"""
from __future__ import annotations

import contextlib
import hashlib
import random
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

SEVERITIES = (1, 2, 3, 4, 5)
# Bumped whenever an implementation or parameter table changes, so cached corrupted features of the
# old version are never reused (it is part of the feature-cache view name).
CORRUPTIONS_VERSION = 1


@dataclass(frozen=True)
class Corruption:
    name: str
    family: str  # 'generic' | 'dermatology'
    source: str  # 'medmnistc' | 'dermbench'
    params: tuple  # one parameter per severity 1..5
    description: str
    apply: Callable[[Any, Any, np.random.Generator], np.ndarray]  # (PIL image, parameter, rng) -> uint8 HxWx3
    # True: the random draws do not depend on the severity (the same dermoscope cast, blur angle, ruler edge
    # at growing strength), so the severities of one image form a monotone series.
    same_draws_across_severities: bool = False


# --- helpers ---------------------------------------------------------------------------------

def image_key(image) -> str:
    """sha256 of the image's pixels and size: the image part of the determinism key."""
    arr = np.asarray(image.convert("RGB"), dtype=np.uint8)
    h = hashlib.sha256(f"{arr.shape}".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def corruption_seed(name: str, severity: int, seed: int, key: str) -> int:
    digest = hashlib.sha256(f"{name}|{int(severity)}|{int(seed)}|{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


@contextlib.contextmanager
def _seeded_globals(seed: int):
    """Seed the global ``random`` and ``numpy.random`` (medmnistc draws from them); restore after."""
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def _medmnistc(class_name: str, module: str):
    """apply(img, param, rng) through medmnistc's class, its severity table replaced by our one parameter."""

    def apply(img, param, rng):
        import importlib

        cls = getattr(importlib.import_module(f"medmnistc.corruptions.{module}"), class_name)
        corruption = cls(severity_params=[param])
        with _seeded_globals(int(rng.integers(0, 2**63 - 1))):
            return np.asarray(corruption.apply(img.copy(), severity=0), dtype=np.uint8)

    return apply


REFERENCE_SIZE = 224


def _scale(img) -> float:
    """Short side relative to the 224-pixel reference of the pixel-sized parameters."""
    return min(img.size) / REFERENCE_SIZE


def _at_reference_size(apply):
    """Run an overlay drawn in absolute pixels (medmnistc's text, bubbles) at 224x224 and add its change
    to the image at the image's own size (bilinear), so it covers the same fraction of any image."""

    def wrapped(img, param, rng):
        from PIL import Image

        if img.size == (REFERENCE_SIZE, REFERENCE_SIZE):
            return apply(img, param, rng)
        small = img.resize((REFERENCE_SIZE, REFERENCE_SIZE), Image.BILINEAR)
        delta = np.asarray(apply(small, param, rng), dtype=np.float32) - np.asarray(small, dtype=np.float32)
        channels = [np.asarray(Image.fromarray(delta[..., c], mode="F").resize(img.size, Image.BILINEAR)) for c in range(3)]
        out = np.asarray(img, dtype=np.float32) + np.stack(channels, axis=-1)
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)

    return wrapped


def _float(img) -> np.ndarray:
    return np.asarray(img, dtype=np.float32) / 255.0


def _uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """Antialiased disk (ImageNet-C's defocus kernel): a normalised disk, lightly Gaussian-blurred."""
    import cv2

    r = max(int(np.ceil(radius)), 1)
    coords = np.arange(-r, r + 1)
    xx, yy = np.meshgrid(coords, coords)
    kernel = (xx**2 + yy**2 <= radius**2).astype(np.float32)
    kernel /= kernel.sum()
    return cv2.GaussianBlur(kernel, ksize=(3, 3), sigmaX=alias_blur)


def _defocus_blur(img, param, rng):
    import cv2

    radius, alias = param
    radius = radius * _scale(img)
    return _uint8(cv2.filter2D(_float(img), -1, _disk_kernel(radius, alias), borderType=cv2.BORDER_REFLECT))


def _motion_blur(img, param, rng):
    """ImageMagick's motion blur (what medmnistc calls): a one-sided Gaussian along a line of the given
    radius, at a random angle in [-45, 45] degrees."""
    import cv2

    radius, sigma = max(round(param[0] * _scale(img)), 1), max(param[1] * _scale(img), 0.5)
    size = 2 * int(radius) + 1
    kernel = np.zeros((size, size), np.float32)
    angle = np.deg2rad(rng.uniform(-45.0, 45.0))
    c = int(radius)
    for t in range(int(radius) + 1):
        x, y = c + t * np.cos(angle), c + t * np.sin(angle)
        kernel[int(round(y)), int(round(x))] += np.exp(-(t**2) / (2.0 * sigma**2))
    kernel /= kernel.sum()
    return _uint8(cv2.filter2D(_float(img), -1, kernel, borderType=cv2.BORDER_REFLECT))


def _vignetting(img, strength, rng):
    """Radial fall-off of a dermoscope's illumination: brightness x (1 - strength * r^2), r = 1 at the corners."""
    x = _float(img)
    h, w = x.shape[:2]
    cy, cx = (h - 1) / 2 + rng.uniform(-0.05, 0.05) * h, (w - 1) / 2 + rng.uniform(-0.05, 0.05) * w
    yy, xx = np.mgrid[0:h, 0:w]
    r2 = ((yy - cy) / (h / 2)) ** 2 / 2 + ((xx - cx) / (w / 2)) ** 2 / 2
    return _uint8(x * np.clip(1.0 - strength * r2, 0.0, 1.0)[..., None])


def _ruler(img, param, rng):
    """A measurement ruler along one image edge: a light strip with dark mm ticks (long every 5th, 10th)."""
    import cv2

    width_frac, opacity = param
    x = np.asarray(img, dtype=np.uint8).copy()
    h, w = x.shape[:2]
    overlay = x.copy()
    band = max(int(width_frac * min(h, w)), 3)
    edge = int(rng.integers(0, 4))  # 0 top, 1 bottom, 2 left, 3 right
    strip_colour = tuple(int(v) for v in rng.integers(200, 250, size=3))
    horizontal = edge in (0, 1)
    length = w if horizontal else h
    start = 0 if edge in (0, 2) else (h if horizontal else w) - band
    if horizontal:
        cv2.rectangle(overlay, (0, start), (w - 1, start + band - 1), strip_colour, -1)
    else:
        cv2.rectangle(overlay, (start, 0), (start + band - 1, h - 1), strip_colour, -1)
    step = max(min(h, w) / 40.0, 2.0)  # one "mm" tick per 1/40 of the image
    offset = rng.uniform(0, step)
    for i, pos in enumerate(np.arange(offset, length, step)):
        tick = band * (0.9 if i % 10 == 0 else 0.6 if i % 5 == 0 else 0.35)
        p = int(pos)
        base = start if edge in (0, 2) else start + band - 1
        tip = int(base + tick) if edge in (0, 2) else int(base - tick)
        if horizontal:
            cv2.line(overlay, (p, base), (p, tip), (20, 20, 20), 1)
        else:
            cv2.line(overlay, (base, p), (tip, p), (20, 20, 20), 1)
    return cv2.addWeighted(overlay, opacity, x, 1.0 - opacity, 0.0)


def _text_overlay(img, param, rng):
    """Device annotations burnt into the image: patient-ID / date / magnification lines in a corner or across
    the lesion, white or yellow with a dark outline (font size relative to the image)."""
    import cv2

    lines, font_scale = param
    x = np.asarray(img, dtype=np.uint8).copy()
    h, w = x.shape[:2]
    scale = font_scale * _scale(img)
    thickness = max(round(1.2 * _scale(img)), 1)
    colour = [(255, 255, 255), (255, 230, 40)][int(rng.integers(0, 2))]
    for _ in range(int(lines)):
        kind = int(rng.integers(0, 3))
        text = (f"ID {int(rng.integers(1000, 99999))}" if kind == 0 else
                f"20{int(rng.integers(10, 25))}-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}" if kind == 1
                else f"x{int(rng.choice([10, 20, 30, 40]))}")
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        org = (int(rng.uniform(2, max(w - tw - 2, 3))), int(rng.uniform(th + 2, h - 2)))
        cv2.putText(x, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (20, 20, 20), thickness + 2, cv2.LINE_AA)
        cv2.putText(x, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)
    return x


def _curve(rng, h: int, w: int, length: float, points: int = 12) -> np.ndarray:
    """A smooth random curve (a random walk with a slowly turning direction) as int32 points."""
    start = np.array([rng.uniform(0, w), rng.uniform(0, h)])
    heading = rng.uniform(0, 2 * np.pi)
    step = length / points
    pts = [start]
    for _ in range(points):
        heading += rng.normal(0, 0.35)
        pts.append(pts[-1] + step * np.array([np.cos(heading), np.sin(heading)]))
    return np.round(np.array(pts)).astype(np.int32)


def _hair(img, param, rng):
    """Dark, thin, curved hairs (the artefact hair-removal methods such as DullRazor target)."""
    import cv2

    count, max_width = param
    x = np.asarray(img, dtype=np.uint8).copy()
    h, w = x.shape[:2]
    for _ in range(int(count)):
        colour = tuple(int(v) for v in rng.integers(10, 60) * np.array([1.0, 0.85, 0.7]))
        thickness = max(round(int(rng.integers(1, int(max_width) + 1)) * _scale(img)), 1)
        pts = _curve(rng, h, w, length=rng.uniform(0.3, 0.9) * max(h, w))
        cv2.polylines(x, [pts], isClosed=False, color=colour, thickness=thickness, lineType=cv2.LINE_AA)
    return x


def _ink_marks(img, param, rng):
    """Surgical-marker strokes (gentian violet / blue ink) drawn around or across the lesion, translucent."""
    import cv2

    strokes, thickness, opacity = param
    thickness = max(round(thickness * _scale(img)), 1)
    x = np.asarray(img, dtype=np.uint8)
    h, w = x.shape[:2]
    overlay = x.copy()
    inks = [(110, 40, 150), (40, 60, 160), (25, 25, 30)]  # violet, blue, black (RGB)
    colour = inks[int(rng.integers(0, len(inks)))]
    for _ in range(int(strokes)):
        if rng.uniform() < 0.5:  # an arc of a circle around the centre (lesion marking)
            centre = (int(w / 2 + rng.normal(0, w / 10)), int(h / 2 + rng.normal(0, h / 10)))
            axes = (int(rng.uniform(0.25, 0.45) * w), int(rng.uniform(0.25, 0.45) * h))
            a0 = rng.uniform(0, 360)
            cv2.ellipse(overlay, centre, axes, 0, a0, a0 + rng.uniform(40, 160), colour, int(thickness), cv2.LINE_AA)
        else:  # a short dash or dot
            pts = _curve(rng, h, w, length=rng.uniform(0.05, 0.2) * max(h, w), points=4)
            cv2.polylines(overlay, [pts], isClosed=False, color=colour, thickness=int(thickness), lineType=cv2.LINE_AA)
    return cv2.addWeighted(overlay, opacity, x, 1.0 - opacity, 0.0)


# Colour casts of dermoscopes and cameras (RGB gains): warm halogen, cool LED, green-ish, magenta.
_CASTS = np.array([[1.0, 0.88, 0.70], [0.82, 0.92, 1.0], [0.88, 1.0, 0.85], [1.0, 0.85, 0.98]], dtype=np.float32)


def _colour_cast(img, strength, rng):
    """A white-balance shift towards one of the casts, blended by ``strength`` (0 none, 1 the full cast)."""
    gains = 1.0 + strength * (_CASTS[int(rng.integers(0, len(_CASTS)))] - 1.0)
    return _uint8(_float(img) * gains / gains.max() * (1.0 + 0.15 * strength))


# --- the registry ----------------------------------------------------------------------------

def _c(name, family, source, params, description, apply, same_draws=False) -> Corruption:
    return Corruption(name, family, source, tuple(params), description, apply, same_draws)


CORRUPTIONS: dict[str, Corruption] = {c.name: c for c in [
    # generic (medmnistc, dermamnist table)
    _c("gaussian_noise", "generic", "medmnistc", [0.04, 0.08, 0.12, 0.18, 0.26],
       "additive Gaussian noise, std in [0, 1] units", _medmnistc("GaussianNoise", "noise")),
    _c("defocus_blur", "generic", "dermbench", [(4, 0.1), (5, 0.2), (6, 0.3), (7, 0.4), (8, 0.5)],
       "disk kernel (radius px, alias blur); medmnistc's parameters", _defocus_blur),
    _c("motion_blur", "generic", "dermbench", [(10, 5), (15, 5), (15, 8), (15, 12), (20, 15)],
       "one-sided Gaussian line kernel (radius px, sigma), random angle; medmnistc's parameters", _motion_blur,
       True),
    _c("jpeg_compression", "generic", "medmnistc", [30, 20, 15, 10, 7],
       "JPEG re-encoding at this quality", _medmnistc("JPEGCompression", "compression")),
    _c("pixelate", "generic", "medmnistc", [0.7, 0.5, 0.4, 0.3, 0.25],
       "box down- and up-sampling by this factor", _medmnistc("Pixelate", "compression")),
    _c("brightness_up", "generic", "medmnistc", [1.1, 1.2, 1.3, 1.4, 1.5],
       "PIL brightness factor", _medmnistc("Brightness", "enhance")),
    _c("brightness_down", "generic", "medmnistc", [0.9, 0.8, 0.7, 0.6, 0.5],
       "PIL brightness factor", _medmnistc("Brightness", "enhance")),
    _c("contrast_up", "generic", "medmnistc", [1.1, 1.2, 1.3, 1.4, 1.6],
       "PIL contrast factor", _medmnistc("Contrast", "enhance")),
    _c("contrast_down", "generic", "medmnistc", [0.8, 0.7, 0.6, 0.5, 0.4],
       "PIL contrast factor", _medmnistc("Contrast", "enhance")),
    # dermatology
    _c("black_corner", "dermatology", "medmnistc", [1.10, 1.05, 1.00, 0.95, 0.90],
       "dermoscope field stop: black outside a centred circle of radius x (half the short side)",
       _medmnistc("BlackCorner", "microscopy")),
    _c("vignetting", "dermatology", "dermbench", [0.15, 0.3, 0.45, 0.6, 0.75],
       "radial illumination fall-off, brightness x (1 - s r^2)", _vignetting, True),
    _c("characters", "dermatology", "medmnistc", [(1, 6, 0.14), (2, 7, 0.15), (3, 8, 0.16), (4, 9, 0.17), (6, 10, 0.18)],
       "overlaid random text (max words, max letters, max font scale)",
       _at_reference_size(_medmnistc("Characters", "microscopy"))),
    _c("text_overlay", "dermatology", "dermbench", [(1, 0.35), (2, 0.45), (3, 0.55), (4, 0.65), (6, 0.8)],
       "device annotations (ID, date, magnification): lines, font scale at 224 px", _text_overlay),
    _c("ruler", "dermatology", "dermbench", [(0.06, 0.5), (0.08, 0.65), (0.10, 0.8), (0.12, 0.9), (0.15, 1.0)],
       "measurement ruler along an edge (band width / short side, opacity)", _ruler, True),
    _c("hair", "dermatology", "dermbench", [(2, 1), (5, 1), (9, 2), (14, 2), (20, 3)],
       "dark curved hairs (count, max width px)", _hair),
    _c("ink_marks", "dermatology", "dermbench", [(1, 2, 0.5), (2, 2, 0.6), (3, 3, 0.7), (4, 3, 0.8), (6, 4, 0.9)],
       "surgical-marker strokes (strokes, width px, opacity)", _ink_marks),
    _c("gel_bubbles", "dermatology", "medmnistc", [(7, 15), (10, 15), (12, 15), (15, 20), (17, 25)],
       "air bubbles in the immersion gel: translucent white discs (max radius px, max count); medmnistc Bubble",
       _at_reference_size(_medmnistc("Bubble", "microscopy"))),
    _c("colour_cast", "dermatology", "dermbench", [0.2, 0.4, 0.6, 0.8, 1.0],
       "white-balance shift towards a dermoscope's cast (warm, cool, green, magenta)", _colour_cast, True),
]}


def names() -> list[str]:
    return list(CORRUPTIONS)


def parse_corruptions(value: Any) -> list[str]:
    """'all' | 'generic' | 'dermatology' | comma-separated names (or a list) -> names in registry order."""
    parts = [p.strip() for p in value.split(",")] if isinstance(value, str) else [str(p).strip() for p in value]
    chosen: set[str] = set()
    for p in filter(None, parts):
        if p == "all":
            chosen |= set(CORRUPTIONS)
        elif p in ("generic", "dermatology"):
            chosen |= {n for n, c in CORRUPTIONS.items() if c.family == p}
        elif p in CORRUPTIONS:
            chosen.add(p)
        else:
            raise ValueError(f"unknown corruption {p!r}; valid: all, generic, dermatology, {', '.join(CORRUPTIONS)}")
    if not chosen:
        raise ValueError(f"no corruption selected by {value!r}; valid: all, generic, dermatology, {', '.join(CORRUPTIONS)}")
    return [n for n in CORRUPTIONS if n in chosen]


def parse_severities(value: Any) -> list[int]:
    parts = [p.strip() for p in value.split(",")] if isinstance(value, str) else list(value)
    try:
        out = sorted({int(p) for p in parts if str(p).strip()})
    except ValueError as exc:
        raise ValueError(f"severities expects comma-separated integers in 1..5, e.g. 1,3,5; got {value!r}") from exc
    if not out or any(s not in SEVERITIES for s in out):
        raise ValueError(f"severities expects integers in 1..5, e.g. 1,3,5; got {value!r}")
    return out


def corrupt(image, name: str, severity: int, seed: int = 0):
    """The corrupted copy of a PIL image (RGB); severity 0 returns ``image`` itself."""
    from PIL import Image

    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; valid: {', '.join(CORRUPTIONS)}")
    severity = int(severity)
    if severity == 0:
        return image
    if severity not in SEVERITIES:
        raise ValueError(f"corruption severity must be 0..5, got {severity}")
    c = CORRUPTIONS[name]
    rgb = image.convert("RGB") if image.mode != "RGB" else image
    draw_severity = 0 if c.same_draws_across_severities else severity
    rng = np.random.default_rng(corruption_seed(name, draw_severity, seed, image_key(rgb)))
    out = np.asarray(c.apply(rgb, c.params[severity - 1], rng), dtype=np.uint8)
    if out.ndim == 2:
        out = np.stack([out] * 3, axis=-1)
    if out.shape[:2] != (rgb.height, rgb.width):
        raise RuntimeError(f"corruption {name!r} changed the image size {rgb.size} -> {out.shape[1::-1]}")
    return Image.fromarray(out[..., :3], mode="RGB")


class Corrupt:
    """A picklable image transform: ``Corrupt(name, severity, seed)(pil) -> pil``."""

    def __init__(self, name: str, severity: int, seed: int = 0):
        if name not in CORRUPTIONS:
            raise ValueError(f"unknown corruption {name!r}; valid: {', '.join(CORRUPTIONS)}")
        self.name, self.severity, self.seed = name, int(severity), int(seed)

    def __call__(self, image):
        return corrupt(image, self.name, self.severity, self.seed)

    def __repr__(self) -> str:
        return f"Corrupt({self.name!r}, severity={self.severity}, seed={self.seed})"


def view_name(base_view: str, name: str, severity: int, seed: int) -> str:
    """The feature-cache view of corrupted images: the corruption identity is part of the cache key."""
    return f"{base_view}~{name}~s{int(severity)}~seed{int(seed)}~v{CORRUPTIONS_VERSION}"


def describe(selected: Sequence[str]) -> dict[str, dict]:
    """Per corruption: family, source, parameters per severity (recorded in results)."""
    return {n: {"family": CORRUPTIONS[n].family, "source": CORRUPTIONS[n].source,
                "params": [list(p) if isinstance(p, tuple) else p for p in CORRUPTIONS[n].params],
                "description": CORRUPTIONS[n].description} for n in selected}
