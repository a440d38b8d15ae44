"""DermSynth writers: every dataset in its official download layout (../shared/DATASETS.md).

The same adapters read DermSynth, the test fixtures and the real downloads, so one code
path runs in the demo, in the tests and on real data. Each writer returns the per-class
counts it wrote (checked by the tests and recorded in DERMSYNTH.json).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
from PIL import Image

from dermbench.io import build_folder_once
from dermbench.progress import progress_bar
from dermbench.data.synth.render import LesionStyle, jitter_style, render
from dermbench.data.synth.styles import ACNE_COUNTS, CLASS_ENTITY, ENTITIES

VERSION = 2  # 2: ACNE04 folds hold every grade in their test part
SEXES = ("female", "male")
SITES = ("face", "trunk", "upper extremity", "lower extremity", "scalp", "back")


class Writer:
    """Shared state of one generation: seeded per-image RNGs, image sizes, counts."""

    def __init__(self, out: Path, seed: int, scale: float, image_size: "int | tuple[int, int]"):
        self.out = Path(out)
        self.seed = seed
        self.scale = scale
        self.image_size = image_size
        self.images_written = 0  # shown by the progress bar; nothing reads it to decide what to write

    def n(self, base: int, minimum: int = 2) -> int:
        return max(minimum, int(round(base * self.scale)))

    def rng(self, *key) -> np.random.Generator:
        digest = hashlib.sha256(repr((self.seed, *key)).encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little"))

    def image(self, key: tuple, style: LesionStyle, skin_type: int, path: Path, mask_path: Optional[Path] = None,
              fmt: Optional[str] = None, mask_fmt: Optional[str] = None):
        rng = self.rng(*key)
        jitter = rng.uniform(0.875, 1.25)
        if isinstance(self.image_size, tuple):
            # A fixed camera size (ISIC-like 1024x768, 3000x2000): render the square scene at the long
            # side and crop its centre, where the lesion sits; every image has exactly this size.
            width, height = self.image_size
            img, mask = render(rng, max(width, height), jitter_style(style, rng, 0.3), skin_type)
            left, top = (img.width - width) // 2, (img.height - height) // 2
            img = img.crop((left, top, left + width, top + height))
            mask = mask[top : top + height, left : left + width]
        else:
            img, mask = render(rng, int(self.image_size * jitter), jitter_style(style, rng, 0.3), skin_type)
        path.parent.mkdir(parents=True, exist_ok=True)
        _save(img, path, fmt)
        if mask_path is not None:
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            _save(Image.fromarray((mask * 255).astype(np.uint8), mode="L"), mask_path, mask_fmt)
        self.images_written += 1
        return img


def _save(img: Image.Image, path: Path, fmt: Optional[str] = None) -> None:
    fmt = fmt or {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP"}[path.suffix.lower()]
    kwargs = {"quality": 92} if fmt == "JPEG" else {}
    img.save(path, format=fmt, **kwargs)


def make_reproducible_xlsx(path: Path) -> None:
    """Rewrite an .xlsx so that its bytes do not depend on the time of writing.

    openpyxl stamps the zip entries and docProps/core.xml with the current time; DermSynth
    must be byte-identical for the same seed.
    """
    import re
    import zipfile

    with zipfile.ZipFile(path) as zin:
        entries = [(info.filename, zin.read(info.filename)) for info in zin.infolist()]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zout:
        for name, data in entries:
            if name == "docProps/core.xml":
                data = re.sub(rb"(<dcterms:(created|modified)[^>]*>)[^<]*", rb"\g<1>2024-01-01T00:00:00Z", data)
            zout.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data, compress_type=zipfile.ZIP_DEFLATED)


def style_for(name: str) -> LesionStyle:
    return ENTITIES[CLASS_ENTITY.get(name, name)]


def skin_type_of(rng: np.random.Generator) -> int:
    return int(rng.integers(1, 7))


# --------------------------------------------------------------------------------------------
def write_ddi(w: Writer) -> dict:
    root = w.out / "ddi"
    diseases = {0: ["melanocytic-nevi", "seborrheic-keratosis", "dermatofibroma", "verruca-vulgaris"],
                1: ["melanoma-in-situ", "basal-cell-carcinoma", "squamous-cell-carcinoma-in-situ", "nodular-melanoma-(nm)"]}
    entity = {"melanocytic-nevi": "nevus", "seborrheic-keratosis": "sk", "dermatofibroma": "dermatofibroma",
              "verruca-vulgaris": "common wart", "melanoma-in-situ": "melanoma", "basal-cell-carcinoma": "bcc",
              "squamous-cell-carcinoma-in-situ": "scc", "nodular-melanoma-(nm)": "melanoma"}
    rows, i = [], 0
    for malignant in (0, 1):
        for k in range(w.n(40)):
            i += 1
            rng = w.rng("ddi-meta", i)
            disease = diseases[malignant][k % 4]
            tone = (12, 34, 56)[k % 3]
            skin_type = {12: 1, 34: 3, 56: 5}[tone] + int(rng.integers(0, 2))
            name = f"{i:06d}.png"
            w.image(("ddi", i), ENTITIES[entity[disease]], skin_type, root / name)
            # the copies in circulation write booleans as TRUE/FALSE
            rows.append({"DDI_ID": i, "DDI_file": name, "skin_tone": tone, "malignant": "TRUE" if malignant else "FALSE",
                         "disease": disease})
    # the unnamed pandas index column of the public copies
    pd.DataFrame(rows).to_csv(root / "ddi_metadata.csv", index=True)
    return {"benign": w.n(40), "malignant": w.n(40)}


NINE_TO_THREE = {
    "benign dermal": "benign", "benign epidermal": "benign", "benign melanocyte": "benign",
    "malignant epidermal": "malignant", "malignant melanoma": "malignant", "malignant cutaneous lymphoma": "malignant",
    "malignant dermal": "malignant", "inflammatory": "non-neoplastic", "genodermatoses": "non-neoplastic",
}


def write_fitzpatrick17k(w: Writer) -> dict:
    root = w.out / "fitzpatrick17k"
    rows, i = [], 0
    for nine, three in NINE_TO_THREE.items():
        for k in range(w.n(14)):
            i += 1
            rng = w.rng("f17k-meta", i)
            md5 = hashlib.md5(f"dermsynth-f17k-{w.seed}-{i}".encode()).hexdigest()
            scale = int(rng.integers(1, 7)) if rng.random() > 0.06 else -1
            w.image(("f17k", i), style_for(nine), scale if scale > 0 else skin_type_of(rng),
                    root / "data" / "finalfitz17k" / f"{md5}.jpg")
            rows.append({"md5hash": md5, "fitzpatrick_scale": scale, "fitzpatrick_centaur": scale,
                         "label": CLASS_ENTITY[nine], "nine_partition_label": nine, "three_partition_label": three,
                         "qc": "", "url": f"https://example.invalid/dermsynth/{md5}.jpg",
                         "url_alphanum": f"httpsexampleinvaliddermsynth{md5}jpg.jpg"})
    pd.DataFrame(rows).to_csv(root / "fitzpatrick17k.csv", index=False)
    counts = {nine: w.n(14) for nine in NINE_TO_THREE}
    for three in ("benign", "malignant", "non-neoplastic"):
        counts[three] = sum(v for k, v in counts.items() if NINE_TO_THREE.get(k) == three)
    return counts


def write_mednode(w: Writer) -> dict:
    root = w.out / "complete_mednode_dataset"
    counts = {"melanoma": w.n(32), "naevus": w.n(40)}
    for folder, entity, base in (("melanoma", "melanoma", 100000), ("naevus", "nevus", 200000)):
        for k in range(counts[folder]):
            rng = w.rng("mednode-meta", folder, k)
            w.image(("mednode", folder, k), ENTITIES[entity], int(rng.integers(1, 4)), root / folder / f"{base + 37 * k}.jpg")
    return counts


def write_ph2(w: Writer) -> dict:
    root = w.out / "PH2Dataset"
    images = root / "PH2 Dataset images"
    classes = [("common nevus", "nevus", w.n(30)), ("atypical nevus", "atypical nevus", w.n(30)), ("melanoma", "melanoma", w.n(20))]
    rows, i = [], 0
    for diag_index, (diag, entity, count) in enumerate(classes):
        for _ in range(count):
            i += 1
            case = f"IMD{2 + 3 * i:03d}"
            rng = w.rng("ph2-meta", case)
            w.image(("ph2", case), ENTITIES[entity], int(rng.integers(1, 4)),
                    images / case / f"{case}_Dermoscopic_Image" / f"{case}.bmp",
                    mask_path=images / case / f"{case}_lesion" / f"{case}_lesion.bmp")
            histology = "Melanoma" if diag == "melanoma" and rng.random() < 0.5 else ""  # mostly blank, as in the release
            rows.append((case, histology, diag_index, rng))
    _write_ph2_xlsx(root / "PH2_dataset.xlsx", rows)
    _write_ph2_txt(root / "PH2_dataset.txt", rows)
    (root / "Readme.txt").write_text("DermSynth: synthetic images in the PH2 layout.\n")
    return {"common nevus": classes[0][2], "atypical nevus": classes[1][2], "melanoma": classes[2][2],
            "nevus": classes[0][2] + classes[1][2]}


PH2_HEADER = ["Image Name", "Histological Diagnosis", "Common Nevus", "Atypical Nevus", "Melanoma",
              "Asymmetry\n(0/1/2)", "Pigment Network\n(AT/T)", "Dots/Globules\n(A/AT/T)", "Streaks\n(A/P)",
              "Regression Areas\n(A/P)", "Blue-Whitish Veil\n(A/P)", "White", "Red", "Light-Brown", "Dark-Brown",
              "Blue-Gray", "Black"]


def _write_ph2_xlsx(path: Path, rows) -> None:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.cell(row=1, column=1, value="PH2 Database")
    ws.cell(row=12, column=3, value="Clinical Diagnosis")  # merged group labels on Excel row 12
    ws.cell(row=12, column=12, value="Colors")
    for col, name in enumerate(PH2_HEADER, start=1):  # header on Excel row 13
        ws.cell(row=13, column=col, value=name)
    for r, (case, histology, diag_index, rng) in enumerate(rows, start=14):
        values = [case, histology or None, None, None, None, int(rng.integers(0, 3)), "T", "A", "A", "A", "A"]
        values[2 + diag_index] = "X"
        for col, v in enumerate(values, start=1):
            ws.cell(row=r, column=col, value=v)
        ws.cell(row=r, column=12 + int(rng.integers(2, 6)), value="X")
    wb.save(path)
    make_reproducible_xlsx(path)


def _write_ph2_txt(path: Path, rows) -> None:
    lines = ["||   Name || Histological Diagnosis || Clinical Diagnosis || Asymmetry | Pigment Network | "
             "Dots/Globules | Streaks | Regression Areas | Blue-Whitish Veil ||   Colors ||"]
    for case, histology, diag_index, _ in rows:
        lines.append(f"|| {case} || {histology} || {diag_index} || 0 | T | A | A | A | A || 4 ||")
    path.write_text("\n".join(lines) + "\n")


def write_acne04(w: Writer) -> dict:
    root = w.out / "ACNE04" / "Classification"
    files = []
    for grade, (lo, hi) in ACNE_COUNTS.items():
        for k in range(w.n(24)):
            rng = w.rng("acne-meta", grade, k)
            style = LesionStyle(**{**ENTITIES["acne papule"].__dict__, "count": (lo, hi)})
            name = f"levle{grade}_{k + 1}.jpg"  # the 'levle' typo is in the release
            w.image(("acne", grade, k), style, int(rng.integers(1, 5)), root / "JPEGImages" / name)
            files.append((name, grade, int(rng.integers(lo, hi + 1))))
    rng = w.rng("acne-folds")
    for fold in range(5):
        # each fold's test part holds a fifth of every grade (at least one), so an official-split run has
        # every class on both sides at any DermSynth scale
        test = []
        for grade in sorted({g for _, g, _ in files}):
            members = [j for j, (_, g, _) in enumerate(files) if g == grade]
            order = rng.permutation(len(members))
            test += [members[i] for i in order[: max(1, len(members) // 5)]]
        test = sorted(test)
        trainval = sorted(set(range(len(files))) - set(test))
        (root / f"NNEW_test_{fold}.txt").write_text("".join(f"{files[j][0]}  {files[j][1]}  {files[j][2]}\n" for j in test))
        (root / f"NNEW_trainval_{fold}.txt").write_text("".join(f"{files[j][0]}  {files[j][1]}  {files[j][2]}\n" for j in trainval))
    names = ["mild", "moderate", "severe", "very severe"]
    return {names[g]: w.n(24) for g in range(4)}


DERM7PT_DIAGNOSES = {
    "BCC": [("basal cell carcinoma", "bcc")],
    "NEV": [("clark nevus", "nevus"), ("reed or spitz nevus", "atypical nevus"), ("blue nevus", "nevus"), ("dermal nevus", "nevus")],
    "MEL": [("melanoma (less than 0.76 mm)", "melanoma"), ("melanoma (in situ)", "melanoma"), ("melanoma (0.76 to 1.5 mm)", "melanoma")],
    "MISC": [("lentigo", "lentigo"), ("vascular lesion", "vascular"), ("dermatofibroma", "dermatofibroma")],
    "SK": [("seborrheic keratosis", "sk")],
}


def write_derm7pt(w: Writer) -> dict:
    root = w.out / "release_v0"
    dirs = ["NEL", "FBL", "Gzl", "A1l"]
    rows, case = [], 0
    for cls, options in DERM7PT_DIAGNOSES.items():
        for k in range(w.n(20)):
            case += 1
            diagnosis, entity = options[k % len(options)]
            rng = w.rng("d7-meta", case)
            d = dirs[case % len(dirs)]
            ext = ".JPG" if case % 3 == 0 else ".jpg"  # mixed-case extensions, as in the release
            clinic, derm = f"{d}/{d}{case:03d}{ext}", f"{d}/{d.lower()}{case:03d}d{ext}"
            skin_type = int(rng.integers(1, 4))
            w.image(("d7", case, "derm"), ENTITIES[entity], skin_type, root / "images" / derm)
            w.image(("d7", case, "clinic"), ENTITIES[entity], skin_type, root / "images" / clinic)
            rows.append({"case_num": case, "diagnosis": diagnosis, "seven_point_score": int(rng.integers(0, 7)),
                         "pigment_network": "absent", "streaks": "absent", "pigmentation": "absent",
                         "regression_structures": "absent", "dots_and_globules": "absent", "blue_whitish_veil": "absent",
                         "vascular_structures": "absent", "level_of_diagnostic_difficulty": "medium",
                         "elevation": "flat", "location": SITES[case % len(SITES)], "sex": SEXES[int(rng.integers(0, 2))],
                         "management": "excision", "clinic": clinic, "derm": derm, "case_id": "", "notes": ""})
    meta = root / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(meta / "meta.csv", index=False)
    order = w.rng("d7-split").permutation(len(rows))
    n_train, n_valid = int(0.41 * len(rows)), int(0.2 * len(rows))
    parts = {"train": order[:n_train], "valid": order[n_train:n_train + n_valid], "test": order[n_train + n_valid:]}
    for part, idx in parts.items():
        pd.DataFrame({"indexes": sorted(int(i) for i in idx)}).to_csv(meta / f"{part}_indexes.csv", index=False)
    return {cls: w.n(20) for cls in DERM7PT_DIAGNOSES}


CAPTION_SITES = ("face", "cheek", "forearm", "back", "chest", "scalp", "leg", "hand")


def write_skincap(w: Writer) -> dict:
    root = w.out / "SkinCAP"
    entities = [("melanoma", "a dark, irregularly bordered, multicoloured plaque"),
                ("nevus", "a small, round, uniformly brown macule"),
                ("psoriasis", "several erythematous plaques covered with silvery scale"),
                ("sk", "a waxy, stuck-on, brown papule with a rough surface"),
                ("hemangioma", "a bright red, well-demarcated vascular papule"),
                ("bcc", "a pearly pink nodule with fine vessels")]
    diseases = {"melanoma": "melanoma", "nevus": "melanocytic-nevi", "psoriasis": "psoriasis",
                "sk": "seborrheic keratosis", "hemangioma": "hemangioma", "bcc": "basal cell carcinoma"}
    rows = []
    n = w.n(34)
    k = 0
    for entity, morphology in entities:
        for j in range(n):
            k += 1
            rng = w.rng("skincap-meta", k)
            site = CAPTION_SITES[int(rng.integers(0, len(CAPTION_SITES)))]
            name = f"{k}.png"
            w.image(("skincap", k), ENTITIES[entity], int(rng.integers(1, 7)), root / "skincap" / name)
            caption = (f"The image shows {morphology} on the {site}. "
                       f"The findings are consistent with {diseases[entity]}.")
            rows.append({"id": k, "skincap_file_path": name, "ori_file_path": f"dermsynth/{name}",
                         "disease": diseases[entity], "caption_zh_polish_en": caption, "remark": "", "source": "dermsynth"})
    for j in range(3):  # images the release excludes
        w.image(("skincap-excluded", j), ENTITIES["nevus"], 2, root / "skincap" / "not_include" / f"x{j}.png")
    frame = pd.DataFrame(rows)
    frame.to_csv(root / "skincap_v240623.csv", index=False)
    xlsx = frame.rename(columns={"caption_zh_polish_en": "caption_en"})
    xlsx.insert(xlsx.columns.get_loc("caption_en") + 1, "caption_zh", "")
    xlsx.to_excel(root / "skincap_v240715.xlsx", index=False)
    make_reproducible_xlsx(root / "skincap_v240715.xlsx")
    return {"captions": len(rows)}


def write_waterloo(w: Writer) -> dict:
    root = w.out / "skincancer"
    plan = [("Skin Image Data Set-1", "melanoma", ("dermIS", "dermquest"), "melanoma"),
            ("Skin Image Data Set-2", "notmelanoma", ("dermis", "dermquest"), "nevus")]
    total = 0
    for set_name, cls, sources, entity in plan:
        for src in sources:
            for k in range(w.n(16)):
                name = f"{src[:5].lower()}_{cls}_{k}" + ("_x" if k % 4 == 0 else "")  # names may hold underscores
                folder = root / set_name / "skin_data" / cls / src
                w.image(("waterloo", cls, src, k), ENTITIES[entity], 2, folder / f"{name}_orig.jpg",
                        mask_path=folder / f"{name}_contour.png")
                total += 1
    return {"images": total}


def write_isic(w: Writer, year: int) -> dict:
    root = w.out / f"ISIC{year}"
    if year == 2016:
        parts = {"train": ("ISBI2016_ISIC_Part1_Training_Data", "ISBI2016_ISIC_Part1_Training_GroundTruth", 8),
                 "test": ("ISBI2016_ISIC_Part1_Test_Data", "ISBI2016_ISIC_Part1_Test_GroundTruth", 60)}
        suffix = "_Segmentation.png"
    elif year == 2017:
        parts = {"train": ("ISIC-2017_Training_Data", "ISIC-2017_Training_Part1_GroundTruth", 8),
                 "val": ("ISIC-2017_Validation_Data", "ISIC-2017_Validation_Part1_GroundTruth", 20),
                 "test": ("ISIC-2017_Test_v2_Data", "ISIC-2017_Test_v2_Part1_GroundTruth", 40)}
        suffix = "_segmentation.png"
    else:
        parts = {"train": ("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth", 8),
                 "val": ("ISIC2018_Task1-2_Validation_Input", "ISIC2018_Task1_Validation_GroundTruth", 20),
                 "test": ("ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth", 40)}
        suffix = "_segmentation.png"
    counts, number = {}, year * 10
    entities = ["nevus", "melanoma", "sk", "atypical nevus"]
    for part, (data_dir, gt_dir, base) in parts.items():
        n = w.n(base)
        counts[part] = n
        for k in range(n):
            number += 1
            image_id = f"ISIC_{number:07d}"
            w.image(("isic", year, image_id), ENTITIES[entities[k % 4]], int(w.rng("isic-skin", image_id).integers(1, 4)),
                    root / data_dir / f"{image_id}.jpg", mask_path=root / gt_dir / f"{image_id}{suffix}")
            if year == 2017 and k % 3 == 0:  # the Task 2 superpixel maps that sit beside the images
                sp = w.rng("sp", image_id).integers(0, 255, (16, 16, 3), dtype=np.uint8)
                Image.fromarray(sp).save(root / data_dir / f"{image_id}_superpixels.png")
        if year == 2018:
            (root / data_dir / "LICENSE.txt").write_text("CC BY-NC 4.0 (DermSynth placeholder of the release's licence file)\n")
    return counts


PRIVATE = {
    "MPL5": ["melanoma", "bowen disease", "squamous cell carcinoma", "basal cell carcinoma", "actinic keratosis"],
    "MSD2": ["stable", "active"],
    "MTD2": ["pigmentary", "mixed"],
    "GLD6": ["solar lentigo", "seborrheic keratosis", "pigmented nevus", "hemangioma", "psoriasis", "others"],
    "SID2": ["scalp psoriasis", "scalp seborrheic dermatitis"],
    "VWCD4": ["common wart", "condyloma acuminatum", "verruca plana", "verruca plantaris"],
}


def write_private(w: Writer, folder: str) -> dict:
    """The private sets come in through the generic manifest (docs/datasets.md)."""
    root = w.out / folder
    rows = []
    per_class = w.n(max(16, 80 // len(PRIVATE[folder])))
    for cls in PRIVATE[folder]:
        for k in range(per_class):
            rng = w.rng(folder, cls, k)
            skin_type = int(rng.integers(2, 5))
            rel = f"images/{cls.replace(' ', '_')}_{k:03d}.jpg"
            w.image((folder, cls, k), style_for(cls), skin_type, root / rel)
            rows.append({"image": rel, "label": cls, "skin_type": skin_type, "sex": SEXES[int(rng.integers(0, 2))],
                         "age": int(rng.integers(18, 80)), "site": "scalp" if folder == "SID2" else SITES[int(rng.integers(0, len(SITES)))]})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return {cls: per_class for cls in PRIVATE[folder]}


WRITERS: dict[str, Callable[[Writer], dict]] = {
    "ddi": write_ddi,
    "fitzpatrick17k": write_fitzpatrick17k,
    "mednode": write_mednode,
    "ph2": write_ph2,
    "acne04": write_acne04,
    "derm7pt": write_derm7pt,
    "skincap": write_skincap,
    "waterloo": write_waterloo,
    "isic2016": lambda w: write_isic(w, 2016),
    "isic2017": lambda w: write_isic(w, 2017),
    "isic2018": lambda w: write_isic(w, 2018),
    **{name.lower(): (lambda w, name=name: write_private(w, name)) for name in PRIVATE},
}


def _write_dataset(out_dir: Path, seed: int, scale: float, image_size, name: str) -> tuple[dict, int]:
    """One dataset of DermSynth (in a worker process): its counts and how many images it wrote."""
    w = Writer(out_dir, seed, scale, image_size)
    return WRITERS[name](w), w.images_written


def generate(out_dir: Path, scale: float = 1.0, seed: int = 0, datasets: Optional[list[str]] = None,
             image_size: "int | tuple[int, int]" = 128, progress: bool = True,
             workers: Optional[int] = None) -> Path:
    """Write DermSynth into ``out_dir`` (official layouts). Same arguments, same bytes.

    image_size: an int is the mean side of square images (each jittered by 0.875-1.25x); a
    (width, height) pair makes every image exactly that size, as a camera does (ISIC-like JPEGs
    of 1024x768 or 3000x2000 for decode benchmarks).
    progress: a bar over the datasets (``DermSynth · generate``, on a terminal; see dermbench.progress).
    workers: processes writing datasets side by side (default: one per core, at most 8). Every image
    draws from its own RNG seeded by its key and every dataset writes its own folder, so the bytes do
    not depend on the number of workers or on which finishes first."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(datasets or WRITERS)
    workers = min(workers or min(os.cpu_count() or 1, 8), len(names))
    counts, written = {}, 0
    with progress_bar(total=len(names), step=("DermSynth", "generate"), unit="dataset", enabled=progress) as bar:
        def done(name: str, result: tuple[dict, int]) -> None:
            nonlocal written
            counts[name], n = result
            written += n
            bar.set_postfix_str(f"{name}, {written} images so far", refresh=False)
            bar.update()

        if workers <= 1:
            for name in names:
                done(name, _write_dataset(out_dir, seed, scale, image_size, name))
        else:
            # spawn, not fork: the caller may hold torch's OpenMP threads, which a forked child inherits broken
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = {pool.submit(_write_dataset, out_dir, seed, scale, image_size, n): n for n in names}
                for future in as_completed(futures):
                    done(futures[future], future.result())
        bar.set_postfix_str(f"{written} images", refresh=True)
    counts = {name: counts[name] for name in names}  # the manifest in the datasets' order, not finishing order
    manifest = {"generator": "dermbench DermSynth", "version": VERSION, "seed": seed, "scale": scale,
                "image_size": list(image_size) if isinstance(image_size, tuple) else image_size, "counts": counts}
    (out_dir / "DERMSYNTH.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return out_dir


def expected_counts(root: Path, card) -> Optional[dict]:
    """What DermSynth at ``root`` wrote for ``card`` ({class: n} or {official split: n}), or None if not DermSynth."""
    meta = Path(root) / "DERMSYNTH.json"
    if not meta.exists():
        return None
    counts = json.loads(meta.read_text())["counts"]
    if card.adapter == "federated":
        return None
    key = card.folders[0].lower() if card.adapter == "manifest" else card.adapter
    written = counts.get(key, {})
    if card.classes:
        out = {c: written[c] for c in card.classes if c in written}
        out["total"] = sum(out.values())
        return out
    if card.name.startswith("isic"):
        pool = card.options.get("official_splits", list(written))
        return {"total": sum(written[p] for p in pool)}
    if card.adapter == "ph2":
        return {"total": written["nevus"] + written["melanoma"]}
    return {"total": next(iter(written.values()))}


def is_dermsynth(path: Path) -> bool:
    """True when ``path`` lies inside a DermSynth copy (its root holds DERMSYNTH.json)."""
    path = Path(path).resolve()
    return any((p / "DERMSYNTH.json").is_file() for p in (path, *path.parents))


def ensure_dermsynth(cache_root: Optional[Path] = None, scale: float = 1.0, seed: int = 0,
                     progress: bool = True) -> Path:
    """The cached DermSynth copy, generated on first use (into a temporary folder, then renamed;
    ``progress``: the generation's bar, see :func:`generate`)."""
    from dermbench.config import cache_dir

    base = Path(cache_root) if cache_root else cache_dir() / "dermsynth"
    target = base / f"v{VERSION}-s{seed}-x{scale:g}"
    return build_folder_once(target, "DERMSYNTH.json",
                             lambda tmp: generate(tmp, scale=scale, seed=seed, progress=progress))
