"""DermSynth's simulated reader study: readings of 23 simulated dermatologists, without and with AI.

The paper's reader study (PROTOCOL.md: 23 dermatologists, 119 images from MPL5 and SID2, 73.66%
unaided, +17.21% with AI) cannot ship; this writes a study of the same shape on DermSynth images so
that ``dermbench reader-study`` and ``dermbench paper`` produce every table and figure in the demo.
It is additive: it reads the cases it is given and writes one CSV; DermSynth's images and counts
are untouched.

The simulation (a generative model with reader and case effects, so the multi-reader multi-case
analysis has something to find):

- readers: ``n_readers`` split over three experience groups (resident, attending, senior) with
  unaided log-odds of a correct answer ``BASE[group] + u_r``, ``u_r ~ N(0, 0.4)``;
- cases: difficulty ``v_i ~ N(0, 0.7)`` subtracted from every reader's log-odds;
- a wrong answer is one of the other classes of the image's dataset, uniformly;
- with AI (when the model's answers are given): the reader adopts the model's answer with
  probability ``TRUST[group]`` (juniors trust more), and otherwise keeps their unaided answer, or
  re-reads it with a small learning gain when the unaided answer disagreed with the model.

Every random draw comes from a generator seeded by ``sha256((seed, *key))``, so the same cases,
answers and seed give the same bytes, whatever the order of the calls.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from dermbench.io import atomic_write_bytes

EXPERIENCE = ("resident", "attending", "senior")
BASE_LOGIT = {"resident": 0.55, "attending": 1.0, "senior": 1.45}
TRUST = {"resident": 0.75, "attending": 0.6, "senior": 0.45}
READER_SD, CASE_SD = 0.4, 0.7
RECONSIDER_GAIN = 0.6  # added to the log-odds when a reader re-reads an image on which they disagreed with the AI
COLUMNS = ("reader", "experience", "image", "dataset", "round", "answer")
N_READERS, N_IMAGES = 23, 119


def _rng(seed: int, *key) -> np.random.Generator:
    digest = hashlib.sha256(repr((seed, *key)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _expit(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def choose_cases(cases: Sequence[tuple[str, str, str]], n_images: int, seed: int) -> list[tuple[str, str, str]]:
    """At most ``n_images`` of ``(dataset, image, truth)``: sorted, then a seeded random subset (so the
    datasets keep their shares on average); the choice depends only on the cases and the seed."""
    ordered = sorted(set(cases))
    if len(ordered) <= n_images:
        return ordered
    order = _rng(seed, "choose").permutation(len(ordered))
    return sorted(ordered[i] for i in order[:n_images])


def simulate_readings(cases: Sequence[tuple[str, str, str]], classes: Mapping[str, Sequence[str]],
                      ai_answers: Optional[Mapping[tuple[str, str], str]] = None, n_readers: int = N_READERS,
                      n_images: int = N_IMAGES, seed: int = 0) -> pd.DataFrame:
    """Readings for ``cases`` (``(dataset, image id, true class name)``); ``classes`` maps each dataset
    to its class names. Without ``ai_answers`` only the unaided round is simulated."""
    if n_readers < 1:
        raise ValueError(f"n_readers must be at least 1, got {n_readers}")
    chosen = choose_cases(cases, n_images, seed)
    if not chosen:
        raise ValueError("the simulated reader study needs at least one case")
    for dataset, image, truth in chosen:
        if truth not in classes.get(dataset, ()):
            raise ValueError(f"case {dataset}/{image}: class {truth!r} is not one of {list(classes.get(dataset, ()))}")
        if ai_answers is not None and (dataset, image) not in ai_answers:
            raise ValueError(f"case {dataset}/{image}: no AI answer given; the with-AI round needs one for every case")
    difficulty = {(d, i): float(_rng(seed, "case", d, i).normal(0.0, CASE_SD)) for d, i, _ in chosen}
    rows = []
    for r in range(n_readers):
        reader = f"R{r + 1:02d}"
        group = EXPERIENCE[min(r * len(EXPERIENCE) // n_readers, len(EXPERIENCE) - 1)]
        skill = BASE_LOGIT[group] + float(_rng(seed, "reader", reader).normal(0.0, READER_SD))
        for dataset, image, truth in chosen:
            rng = _rng(seed, "reading", reader, dataset, image)
            others = [c for c in classes[dataset] if c != truth]

            def read(logit: float) -> str:
                if not others or rng.random() < _expit(logit):
                    return truth
                return others[int(rng.integers(len(others)))]

            logit = skill - difficulty[(dataset, image)]
            unaided = read(logit)
            rows.append((reader, group, image, dataset, "without-ai", unaided))
            if ai_answers is None:
                continue
            ai = ai_answers[(dataset, image)]
            if rng.random() < TRUST[group]:
                aided = ai
            elif unaided != ai:
                aided = read(logit + RECONSIDER_GAIN)
            else:
                aided = unaided
            rows.append((reader, group, image, dataset, "with-ai", aided))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def write_reader_study(path: Path, readings: pd.DataFrame) -> Path:
    """The readings as ``reader_study.csv`` (the columns ``dermbench reader-study --readings`` reads), atomically."""
    data = readings.loc[:, list(COLUMNS)].to_csv(index=False, lineterminator="\n").encode("utf-8")
    atomic_write_bytes(Path(path), data)
    return Path(path)


__all__ = ["COLUMNS", "EXPERIENCE", "N_IMAGES", "N_READERS", "choose_cases", "simulate_readings", "write_reader_study"]
