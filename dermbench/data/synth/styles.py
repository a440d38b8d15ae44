"""Which lesion each class shows in DermSynth: a style per clinical entity, then per task class."""
from __future__ import annotations

from dermbench.data.synth.render import LesionStyle as S

# One style per clinical entity. Similar entities get similar styles on purpose (nevus vs
# atypical nevus vs melanoma; psoriasis vs seborrhoeic dermatitis): the tasks must not be trivial.
ENTITIES: dict[str, S] = {
    "nevus": S(color=(120, 75, 45), color2=(95, 60, 40), variegation=0.15, irregularity=0.05, asymmetry=0.05, radius=(0.14, 0.24)),
    "atypical nevus": S(color=(105, 65, 42), color2=(60, 40, 30), variegation=0.4, irregularity=0.15, asymmetry=0.3, radius=(0.16, 0.27)),
    "melanoma": S(color=(70, 45, 35), color2=(40, 45, 75), variegation=0.7, irregularity=0.28, asymmetry=0.6, radius=(0.17, 0.3)),
    "bcc": S(color=(215, 150, 150), color2=(190, 80, 90), variegation=0.35, irregularity=0.12, asymmetry=0.2, radius=(0.12, 0.22), texture=0.08),
    "scc": S(color=(190, 100, 90), color2=(225, 205, 185), variegation=0.45, irregularity=0.2, asymmetry=0.3, radius=(0.14, 0.25), texture=0.2, scale=0.2),
    "bowen": S(color=(200, 95, 85), color2=(215, 170, 150), variegation=0.3, irregularity=0.15, asymmetry=0.25, radius=(0.18, 0.3), texture=0.12, scale=0.35),
    "ak": S(color=(205, 130, 115), color2=(225, 195, 170), variegation=0.3, irregularity=0.15, asymmetry=0.2, radius=(0.06, 0.12), count=(1, 4), texture=0.18),
    "sk": S(color=(130, 95, 60), color2=(80, 60, 40), variegation=0.45, irregularity=0.1, asymmetry=0.2, radius=(0.14, 0.24), texture=0.35),
    "lentigo": S(color=(160, 115, 75), color2=(140, 100, 65), variegation=0.15, irregularity=0.2, asymmetry=0.35, radius=(0.15, 0.28), opacity=0.6),
    "hemangioma": S(color=(185, 40, 55), color2=(120, 20, 45), variegation=0.3, irregularity=0.08, asymmetry=0.1, radius=(0.1, 0.2)),
    "psoriasis": S(color=(200, 80, 80), color2=(230, 215, 205), variegation=0.2, irregularity=0.22, asymmetry=0.3, radius=(0.1, 0.2), count=(1, 4), texture=0.1, scale=0.8),
    "seb derm": S(color=(215, 130, 105), color2=(220, 195, 140), variegation=0.4, irregularity=0.25, asymmetry=0.35, radius=(0.12, 0.24), count=(1, 3), texture=0.06, scale=0.35, edge_softness=4.0, opacity=0.7),
    "common wart": S(color=(190, 170, 150), color2=(120, 100, 90), variegation=0.5, irregularity=0.3, asymmetry=0.2, radius=(0.08, 0.16), count=(1, 3), texture=0.5),
    "condyloma": S(color=(215, 150, 150), color2=(180, 110, 115), variegation=0.3, irregularity=0.35, asymmetry=0.3, radius=(0.04, 0.09), count=(3, 9), texture=0.3),
    "verruca plana": S(color=(200, 165, 135), color2=(180, 140, 110), variegation=0.15, irregularity=0.1, asymmetry=0.1, radius=(0.025, 0.05), count=(6, 18), texture=0.08, opacity=0.7),
    "verruca plantaris": S(color=(215, 195, 150), color2=(90, 60, 50), variegation=0.3, irregularity=0.15, asymmetry=0.15, radius=(0.1, 0.18), count=(1, 2), texture=0.45),
    "melasma stable": S(color=(150, 105, 70), color2=(135, 95, 65), variegation=0.15, irregularity=0.3, asymmetry=0.5, radius=(0.25, 0.38), edge_softness=6.0, opacity=0.45),
    "melasma active": S(color=(140, 85, 65), color2=(175, 90, 80), variegation=0.45, irregularity=0.3, asymmetry=0.5, radius=(0.25, 0.38), edge_softness=3.0, opacity=0.6),
    "melasma pigmentary": S(color=(135, 90, 60), color2=(125, 85, 55), variegation=0.1, irregularity=0.3, asymmetry=0.5, radius=(0.25, 0.38), edge_softness=4.0, opacity=0.55),
    "melasma mixed": S(color=(125, 90, 75), color2=(90, 85, 105), variegation=0.55, irregularity=0.3, asymmetry=0.5, radius=(0.25, 0.38), edge_softness=4.0, opacity=0.55),
    "lymphoma": S(color=(165, 70, 95), color2=(120, 50, 85), variegation=0.3, irregularity=0.2, asymmetry=0.35, radius=(0.15, 0.3), count=(1, 2), texture=0.08, opacity=0.75),
    "dermal malignancy": S(color=(130, 60, 100), color2=(80, 40, 70), variegation=0.35, irregularity=0.15, asymmetry=0.3, radius=(0.12, 0.22)),
    "benign dermal": S(color=(200, 150, 130), color2=(170, 120, 100), variegation=0.2, irregularity=0.06, asymmetry=0.1, radius=(0.1, 0.18), opacity=0.7),
    "inflammatory": S(color=(205, 95, 90), color2=(220, 150, 130), variegation=0.35, irregularity=0.3, asymmetry=0.4, radius=(0.05, 0.14), count=(2, 8), edge_softness=3.0, opacity=0.65),
    "genodermatosis": S(color=(150, 105, 70), color2=(120, 80, 55), variegation=0.1, irregularity=0.08, asymmetry=0.1, radius=(0.02, 0.05), count=(8, 25), opacity=0.8),
    "vascular": S(color=(170, 50, 70), color2=(110, 40, 90), variegation=0.35, irregularity=0.1, asymmetry=0.15, radius=(0.1, 0.2)),
    "dermatofibroma": S(color=(165, 110, 90), color2=(200, 160, 140), variegation=0.4, irregularity=0.06, asymmetry=0.1, radius=(0.08, 0.15)),
    "acne papule": S(color=(200, 70, 70), color2=(235, 225, 200), variegation=0.2, irregularity=0.1, asymmetry=0.1, radius=(0.012, 0.028), edge_softness=1.5),
}

# Acne: the grade comes from the lesion count (Hayashi): mild <= 5, moderate 6-20, severe 21-50, very severe > 50.
ACNE_COUNTS = {0: (2, 5), 1: (6, 20), 2: (21, 50), 3: (51, 70)}

# task class name -> entity (per task family; classes as in tasks/*.toml)
CLASS_ENTITY: dict[str, str] = {
    # Fitzpatrick17k nine-partition labels
    "benign dermal": "benign dermal", "benign epidermal": "sk", "benign melanocyte": "nevus",
    "malignant epidermal": "scc", "malignant melanoma": "melanoma", "malignant cutaneous lymphoma": "lymphoma",
    "malignant dermal": "dermal malignancy", "inflammatory": "inflammatory", "genodermatoses": "genodermatosis",
    # MPL5
    "melanoma": "melanoma", "bowen disease": "bowen", "squamous cell carcinoma": "scc",
    "basal cell carcinoma": "bcc", "actinic keratosis": "ak",
    # MSD2 / MTD2
    "stable": "melasma stable", "active": "melasma active", "pigmentary": "melasma pigmentary", "mixed": "melasma mixed",
    # GLD6
    "solar lentigo": "lentigo", "seborrheic keratosis": "sk", "pigmented nevus": "nevus", "hemangioma": "hemangioma",
    "psoriasis": "psoriasis", "others": "dermatofibroma",
    # SID2
    "scalp psoriasis": "psoriasis", "scalp seborrheic dermatitis": "seb derm",
    # VWCD4
    "common wart": "common wart", "condyloma acuminatum": "condyloma", "verruca plana": "verruca plana",
    "verruca plantaris": "verruca plantaris",
}
