"""The reader study from a readings CSV and the results store (the paper's Fig. 6c–d, Supplementary Table 2).

The readings file has one row per (reader, image, round)::

    reader,experience,image,dataset,round,answer
    R01,resident,images/melanoma_003,mpl5,without-ai,melanoma

``dataset`` is a task name (``dermbench list tasks``), ``image`` the sample id of that task (the ids
of the predictions files), ``round`` ``without-ai`` or ``with-ai``, ``answer`` one of the task's
class names. ``reader_id`` / ``image_id`` are accepted for ``reader`` / ``image``. The ground truth
comes from the task itself (its adapter reads the data root the results were computed on), the
model's answers from its ``linear`` predictions, its accuracy against training fraction from its
``label-efficiency`` predictions, all on the study's images. Every check of the file happens before
any statistic, and an error names the file, the row (as numbered by a spreadsheet: header = 1) and
the column.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from dermbench.data.sample import DatasetError
from dermbench.io import atomic_write_bytes
from dermbench.run.results import iter_results, read_predictions
from dermbench.stats import reader_study as RS

REQUIRED = ("reader", "experience", "image", "dataset", "round", "answer")
ALIASES = {"reader_id": "reader", "image_id": "image"}
MODEL_PROTOCOL = "linear"


class ReadingsError(ValueError):
    """A readings file that cannot be analysed; the message names the file, row and column, and the fix."""


@dataclass
class ReaderStudy:
    readings_path: Path
    model: str
    scored: pd.DataFrame                      # the readings with truth and correct
    model_answers: pd.Series                  # (dataset, image) -> the model's class name
    per_reader: pd.DataFrame
    by_experience: pd.DataFrame
    model_vs_readers: pd.DataFrame
    model_vs_mean: dict[str, Any]
    ai_per_reader: Optional[pd.DataFrame]
    ai_summary: Optional[dict[str, Any]]
    mixed_effects: Optional[dict[str, Any]]
    agreement: pd.DataFrame
    followed: Optional[pd.DataFrame]
    followed_summary: Optional[dict[str, Any]]
    label_efficiency: dict[str, dict[float, float]] = field(default_factory=dict)  # model -> fraction -> accuracy
    notes: list[str] = field(default_factory=list)

    @property
    def model_accuracy(self) -> float:
        images = self.scored[["dataset", "image", "truth"]].drop_duplicates()
        keys = list(zip(images["dataset"], images["image"]))
        return float(np.mean(self.model_answers.loc[keys].to_numpy() == images["truth"].to_numpy()))


# ---------------------------------------------------------------------------------------------
# Reading and checking the file
# ---------------------------------------------------------------------------------------------
def read_readings(path: Path) -> pd.DataFrame:
    """The readings CSV, checked: columns, rounds, empty cells, duplicates, one experience per reader."""
    path = Path(path)
    if not path.is_file():
        raise ReadingsError(f"readings file {path} does not exist; give the CSV of the reader study "
                            f"(columns {', '.join(REQUIRED)})")
    from dermbench.data.sample import DatasetError
    from dermbench.data.user_csv import read_user_csv

    try:
        df = read_user_csv(path, "readings file", ",".join(REQUIRED))
    except DatasetError as exc:
        raise ReadingsError(str(exc.args[0])) from None
    df = df.rename(columns={c: c.strip() for c in df.columns}).rename(columns=ALIASES)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ReadingsError(f"readings file {path}: missing column(s) {missing}; found {list(df.columns)}; "
                            f"expected {', '.join(REQUIRED)} (reader_id / image_id are accepted)")
    if df.empty:
        raise ReadingsError(f"readings file {path} has a header but no readings")
    for column in REQUIRED:
        df[column] = df[column].str.strip()
        empty = df.index[df[column] == ""]
        if len(empty):
            raise ReadingsError(f"readings file {path}, row {empty[0] + 2}, column {column!r}: empty value "
                                f"({len(empty)} such row(s)); every reading needs all of {', '.join(REQUIRED)}")
    bad = df.index[~df["round"].isin(RS.ROUNDS)]
    if len(bad):
        raise ReadingsError(f"readings file {path}, row {bad[0] + 2}, column 'round': {df.at[bad[0], 'round']!r} "
                            f"is not one of {', '.join(RS.ROUNDS)}")
    dup = df.duplicated(["reader", "dataset", "image", "round"], keep="first")
    if dup.any():
        i = df.index[dup][0]
        raise ReadingsError(f"readings file {path}, row {i + 2}: reader {df.at[i, 'reader']!r} read image "
                            f"{df.at[i, 'dataset']}/{df.at[i, 'image']} twice in round {df.at[i, 'round']!r}; "
                            "keep one answer per reader, image and round")
    groups = df.groupby("reader")["experience"].nunique()
    if (groups > 1).any():
        reader = groups.index[groups > 1][0]
        rows = df.index[df["reader"] == reader]
        raise ReadingsError(f"readings file {path}: reader {reader!r} has more than one experience group "
                            f"({sorted(set(df.loc[rows, 'experience']))}, rows {rows[0] + 2}...); give each reader one")
    return df


def study_cards(readings: pd.DataFrame, path: Path) -> dict:
    """The task card of every dataset the readings name; each must be a classification task."""
    from dermbench.data.tasks import get_card, load_cards

    cards = {}
    for dataset in sorted(set(readings["dataset"])):
        row = readings.index[readings["dataset"] == dataset][0] + 2
        try:
            card = get_card(dataset)
        except KeyError:
            raise ReadingsError(f"readings file {path}, row {row}, column 'dataset': {dataset!r} is not a task; "
                                f"valid: {', '.join(load_cards())}") from None
        if not card.is_classification:
            raise ReadingsError(f"readings file {path}, row {row}, column 'dataset': task {dataset!r} is not a "
                                "classification task; a reader study needs class answers")
        cards[dataset] = card
    return cards


def score_readings(readings: pd.DataFrame, path: Path, data_root: Path) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Add ``truth`` and ``correct`` from each dataset's task (read through its adapter under ``data_root``).
    Returns the scored readings and each dataset's class names."""
    from dermbench.data.locate import load_task

    truth: dict[tuple[str, str], str] = {}
    classes: dict[str, list[str]] = {}
    for dataset, card in study_cards(readings, path).items():
        try:
            data = load_task(data_root, card)
        except DatasetError as exc:
            raise ReadingsError(f"readings file {path}: the ground truth of {dataset!r} cannot be read: {exc}") from exc
        classes[dataset] = list(data.classes)
        for s in data.samples:
            truth[(dataset, s.id)] = data.classes[s.label]
    keys = list(zip(readings["dataset"], readings["image"]))
    unknown = [i for i, k in enumerate(keys) if k not in truth]
    if unknown:
        i = unknown[0]
        raise ReadingsError(f"readings file {path}, row {readings.index[i] + 2}, column 'image': "
                            f"{readings['image'].iloc[i]!r} is not an image of task {readings['dataset'].iloc[i]!r} "
                            f"({len(unknown)} such row(s)); use the sample ids of the task's predictions files")
    bad = [i for i in range(len(readings)) if readings["answer"].iloc[i] not in classes[readings["dataset"].iloc[i]]]
    if bad:
        i = bad[0]
        raise ReadingsError(f"readings file {path}, row {readings.index[i] + 2}, column 'answer': "
                            f"{readings['answer'].iloc[i]!r} is not a class of {readings['dataset'].iloc[i]!r}; "
                            f"valid: {', '.join(classes[readings['dataset'].iloc[i]])}")
    out = readings.copy()
    out["truth"] = [truth[k] for k in keys]
    out["correct"] = out["answer"] == out["truth"]
    return out, classes


# ---------------------------------------------------------------------------------------------
# The model's answers from the results store
# ---------------------------------------------------------------------------------------------
def _record(results_dir: Path, model: str, task: str, protocol: str) -> Optional[dict]:
    """The result the leaderboard shows for this cell (the paper's defaults, by the selection rule of
    :func:`dermbench.run.identity.select_results`); None when the store has none."""
    from dermbench.run.identity import select_results

    records = [r for r in iter_results(results_dir)
               if r.get("model") == model and r.get("task") == task and r.get("protocol") == protocol]
    picked = select_results(records).get((model, task, protocol))
    return picked.record if picked is not None else None


def model_answers(results_dir: Path, model: str, datasets: Sequence[str]) -> pd.Series:
    """(dataset, sample id) -> the model's predicted class name, from its linear-probe predictions."""
    parts = []
    for dataset in datasets:
        record = _record(results_dir, model, dataset, MODEL_PROTOCOL)
        if record is None:
            raise ReadingsError(f"no {MODEL_PROTOCOL} result of model {model!r} on task {dataset!r} under {results_dir}; "
                                f"run `dermbench run --model {model} --task {dataset} --protocol {MODEL_PROTOCOL}` first")
        pred = read_predictions(Path(record["_path"]))
        names = np.asarray(record["classes"], dtype=object)[pred["pred"].to_numpy(int)]
        parts.append(pd.Series(names, index=pd.MultiIndex.from_arrays([[dataset] * len(pred), pred["sample_id"]])))
    return pd.concat(parts)


def label_efficiency_accuracy(results_dir: Path, model: str, images: pd.DataFrame) -> dict[float, float]:
    """The model's accuracy on the study images at each training fraction (mean over repeats), from its
    label-efficiency predictions; {} when it has none for every dataset of the study."""
    per_dataset = []
    for dataset, part in images.groupby("dataset"):
        record = _record(results_dir, model, dataset, "label-efficiency")
        if record is None:
            return {}
        pred = read_predictions(Path(record["_path"]))
        pred = pred[pred["sample_id"].isin(set(part["image"]))]
        truth = dict(zip(part["image"], part["truth"]))
        names = np.asarray(record["classes"], dtype=object)[pred["pred"].to_numpy(int)]
        pred = pred.assign(correct=names == pred["sample_id"].map(truth).to_numpy())
        per_dataset.append(pred[["fraction", "repeat", "correct"]])
    if not per_dataset:
        return {}
    pooled = pd.concat(per_dataset)
    # accuracy over all study images per (fraction, repeat), then the mean over repeats
    by_repeat = pooled.groupby(["fraction", "repeat"])["correct"].mean()
    return {float(f): float(v) for f, v in by_repeat.groupby(level="fraction").mean().items()}


def _models_with(results_dir: Path, datasets: Sequence[str], protocol: str) -> list[str]:
    have: dict[str, set[str]] = {}
    for r in iter_results(results_dir):
        if r["protocol"] == protocol:
            have.setdefault(r["model"], set()).add(r["task"])
    return sorted(m for m, tasks in have.items() if set(datasets) <= tasks)


def default_model(results_dir: Path, datasets: Sequence[str]) -> str:
    """The model whose answers the study compares with when none is named: the best mean AUROC of the
    linear probe over the study's datasets (the leaderboard's best), ties by name."""
    models = _models_with(results_dir, datasets, MODEL_PROTOCOL)
    if not models:
        raise ReadingsError(f"no model has {MODEL_PROTOCOL} results on all of {', '.join(datasets)} under {results_dir}; "
                            f"run `dermbench run --task {','.join(datasets)}` first")

    def score(model: str) -> float:
        values = [(_record(results_dir, model, d, MODEL_PROTOCOL) or {}).get("metrics", {}).get("auroc", {}).get("value")
                  for d in datasets]
        return float(np.mean([v for v in values if v is not None])) if any(v is not None for v in values) else -1.0

    return sorted(models, key=lambda m: (-score(m), m))[0]


def study_data_root(results_dir: Path, model: str, datasets: Sequence[str]) -> Path:
    """The data root the model's results were computed on (recorded in every result)."""
    for d in datasets:
        record = _record(results_dir, model, d, MODEL_PROTOCOL)
        if record is not None and record.get("data", {}).get("root"):
            return Path(record["data"]["root"])
    raise ReadingsError(f"the results of {model!r} under {results_dir} do not record their data root; pass --data-root")


# ---------------------------------------------------------------------------------------------
# The analysis
# ---------------------------------------------------------------------------------------------
def analyse(readings_path: Path, results_dir: Path, model: Optional[str] = None,
            data_root: Optional[Path] = None) -> ReaderStudy:
    """Every statistic of the reader study (see :mod:`dermbench.stats.reader_study`)."""
    readings_path, results_dir = Path(readings_path), Path(results_dir)
    raw = read_readings(readings_path)
    datasets = list(study_cards(raw, readings_path))  # unknown tasks fail here, naming the row
    model = model or default_model(results_dir, datasets)
    root = Path(data_root) if data_root else study_data_root(results_dir, model, datasets)
    scored, _ = score_readings(raw, readings_path, root)
    answers = model_answers(results_dir, model, datasets)
    missing = sorted({k for k in zip(scored["dataset"], scored["image"]) if k not in answers.index})
    if missing:
        raise ReadingsError(f"readings file {readings_path}: {len(missing)} image(s) have no {MODEL_PROTOCOL} prediction "
                            f"of {model!r} (e.g. {missing[:3]}); the study images must be in the task's test split")
    notes = [f"model: {model} ({MODEL_PROTOCOL} probe predictions); data root: {root}"]
    per_reader = RS.reader_accuracy(scored)
    order = [g for g in ("resident", "attending", "senior") if g in set(scored["experience"])]
    order += sorted(set(scored["experience"]) - set(order))
    by_experience = RS.experience_accuracy(scored, order)
    baseline_round = RS.WITHOUT_AI if RS.WITHOUT_AI in set(scored["round"]) else RS.WITH_AI
    vs = RS.model_vs_readers(scored, answers, baseline_round)
    vs_mean = RS.model_vs_reader_mean(vs)
    both = set(RS.ROUNDS) <= set(scored["round"])
    ai_per_reader = ai_summary = mixed = followed = followed_summary = None
    if both:
        ai_per_reader, ai_summary = RS.ai_assistance(scored)
        mixed = RS.mixed_effects_round_effect(scored)
        followed, followed_summary = RS.followed_when_wrong(scored, answers)
    else:
        notes.append(f"only the {baseline_round!r} round is present: no AI-assistance analysis")
    images = scored[["dataset", "image", "truth"]].drop_duplicates()
    curves = {m: c for m in _models_with(results_dir, datasets, "label-efficiency")
              if (c := label_efficiency_accuracy(results_dir, m, images))}
    return ReaderStudy(readings_path, model, scored, answers, per_reader, by_experience, vs, vs_mean, ai_per_reader,
                       ai_summary, mixed, RS.agreement_with_model(scored, answers), followed, followed_summary,
                       curves, notes)


# ---------------------------------------------------------------------------------------------
# Writing: markdown, CSV, figures
# ---------------------------------------------------------------------------------------------
def _pct(v: Optional[float]) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def _p(v: Optional[float]) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.2g}" if v >= 1e-4 else "<0.0001"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def to_markdown(study: ReaderStudy) -> str:
    s = study
    n_images = s.scored[["dataset", "image"]].drop_duplicates().shape[0]
    out = [f"# Reader study ({s.readings_path.name})", "",
           f"{s.scored['reader'].nunique()} readers, {n_images} images "
           f"({', '.join(f'{d}: {n}' for d, n in s.scored.drop_duplicates(['dataset', 'image'])['dataset'].value_counts().sort_index().items())}), "
           f"{len(s.scored)} readings. Model: **{s.model}**, accuracy {_pct(s.model_accuracy)}% on the study images.",
           "", *[f"- {n}" for n in s.notes], "",
           "## Accuracy by experience (mean over readers, 95% t interval across readers)", "",
           _md_table(["experience", "round", "readers", "mean accuracy (%)", "95% CI", "min–max"],
                     [[r.experience, r.round, r.readers, _pct(r.mean_accuracy), f"[{_pct(r.ci_low)}, {_pct(r.ci_high)}]",
                       f"{_pct(r.min)}–{_pct(r.max)}"] for r in s.by_experience.itertuples()]), "",
           "## The model against the readers' mean", "",
           f"Model − reader accuracy, each on that reader's images, mean over {s.model_vs_mean['readers']} readers: "
           f"{_pct(s.model_vs_mean['mean_difference'])} points [{_pct(s.model_vs_mean['ci_low'])}, "
           f"{_pct(s.model_vs_mean['ci_high'])}] (t-test p {_p(s.model_vs_mean['p_ttest'])}, Wilcoxon p "
           f"{_p(s.model_vs_mean['p_wilcoxon'])}); readers' mean {_pct(s.model_vs_mean['reader_mean_accuracy'])}%.", "",
           "## Per reader (accuracy with exact Clopper–Pearson 95% CI; the model by exact McNemar, Holm across readers)", ""]
    acc = s.per_reader.set_index(["reader", "round"])
    ai = s.ai_per_reader.set_index("reader") if s.ai_per_reader is not None else None
    kappa = s.agreement.set_index(["reader", "round"])["kappa"]
    rows = []
    for r in s.model_vs_readers.itertuples():
        def cell(rnd: str) -> str:
            if (r.reader, rnd) not in acc.index:
                return "—"
            a = acc.loc[(r.reader, rnd)]
            return f"{_pct(a.accuracy)} [{_pct(a.ci_low)}, {_pct(a.ci_high)}]"
        rows.append([r.reader, r.experience, r.n, cell(RS.WITHOUT_AI), cell(RS.WITH_AI),
                     _pct(ai.loc[r.reader, "change"]) if ai is not None and r.reader in ai.index else "—",
                     _pct(r.model_accuracy), f"{r.n10}/{r.n01}", _p(r.p_mcnemar), _p(r.p_holm),
                     f"{kappa.get((r.reader, RS.WITHOUT_AI), math.nan):.2f}", f"{kappa.get((r.reader, RS.WITH_AI), math.nan):.2f}"])
    out += [_md_table(["reader", "experience", "images", "without AI (%)", "with AI (%)", "change", "model (%)",
                       "model right only / reader right only", "McNemar p", "Holm p", "κ without", "κ with"], rows), ""]
    if s.ai_summary is not None:
        a = s.ai_summary
        out += ["## AI assistance", "",
                f"Mean accuracy {_pct(a['mean_without'])}% without AI, {_pct(a['mean_with'])}% with AI: change "
                f"{_pct(a['mean_change'])} points [{_pct(a['ci_low'])}, {_pct(a['ci_high'])}] over {a['readers']} readers "
                f"(paired t-test p {_p(a['p_ttest'])}, Wilcoxon signed-rank p {_p(a['p_wilcoxon'])}; "
                f"{a['paired_readings']} paired readings, {a['unpaired']} in one round only).", ""]
    if s.mixed_effects is not None:
        m = s.mixed_effects
        out += ["## Multi-reader multi-case analysis", "",
                f"{m['method']}: `{m['formula']}` on {m['readings']} readings ({m['readers']} readers, {m['cases']} cases). "
                f"Odds ratio of a correct answer with AI {m['odds_ratio']:.2f} [{m['or_ci_low']:.2f}, {m['or_ci_high']:.2f}] "
                f"(z {m['z']:.2f}, p {_p(m['p'])}); sd of reader effects {m['reader_sd']:.2f}, of case effects "
                f"{m['case_sd']:.2f} (log-odds); a typical reader on a typical case: {_pct(m['typical_accuracy_without'])}% "
                f"→ {_pct(m['typical_accuracy_with'])}%.", ""]
    if s.followed_summary is not None and s.followed_summary.get("model_wrong_readings"):
        f = s.followed_summary
        out += ["## Following the model when it was wrong", "",
                f"The model was wrong on {f['model_wrong_images']} image(s) ({f['model_wrong_readings']} paired readings). "
                f"With AI the reader gave the model's wrong answer in {_pct(f['followed_rate'])}% "
                f"[{_pct(f['followed_ci_low'])}, {_pct(f['followed_ci_high'])}] of them; unaided, the same wrong answer in "
                f"{_pct(f['same_without_rate'])}%; switched to it from another answer: {_pct(f['switched_rate'])}% "
                "(pooled over readers, exact binomial CIs).", ""]
    if s.label_efficiency:
        out += ["## Accuracy on the study images against training fraction (label efficiency, mean over repeats)", "",
                _md_table(["model", *[f"{100 * f:g}%" for f in sorted({f for c in s.label_efficiency.values() for f in c})]],
                          [[m, *[_pct(c.get(f)) for f in sorted({f for c in s.label_efficiency.values() for f in c})]]
                           for m, c in sorted(s.label_efficiency.items())]), ""]
    return "\n".join(out)


def _csv(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False, float_format="%.6f", lineterminator="\n").encode("utf-8")


def figures(study: ReaderStudy) -> list[tuple[str, bytes]]:
    from dermbench.report.figures import reader_accuracy_svg, reader_paired_svg

    acc = study.per_reader
    violins = {rnd: acc[acc["round"] == rnd]["accuracy"].to_numpy() for rnd in RS.ROUNDS if rnd in set(acc["round"])}
    out = [("fig_reader_study_accuracy.svg",
            reader_accuracy_svg("Reader study · model accuracy by training fraction vs readers", study.label_efficiency,
                                violins, {study.model: study.model_accuracy}))]
    if study.ai_per_reader is not None:
        p = study.ai_per_reader
        out.append(("fig_reader_study_paired.svg",
                    reader_paired_svg("Reader study · accuracy without and with AI, per reader",
                                      list(p["reader"]), list(p["experience"]), p["accuracy_without"].to_numpy(),
                                      p["accuracy_with"].to_numpy())))
    return out


def files(study: ReaderStudy) -> list[tuple[str, bytes]]:
    """Every output of the study: reader_study.md, the CSV tables, reader_study.json, the two figures."""
    summary = {"readings": str(study.readings_path), "model": study.model, "model_accuracy": study.model_accuracy,
               "model_vs_reader_mean": study.model_vs_mean, "ai_assistance": study.ai_summary,
               "mixed_effects": study.mixed_effects, "followed_when_wrong": study.followed_summary,
               "label_efficiency_accuracy": {m: {str(f): v for f, v in c.items()} for m, c in study.label_efficiency.items()},
               "notes": study.notes}
    out = [("reader_study.md", to_markdown(study).encode("utf-8")),
           ("reader_study.json", (json.dumps(summary, indent=1, sort_keys=True, default=float) + "\n").encode("utf-8")),
           ("reader_study_per_reader.csv", _csv(study.per_reader)),
           ("reader_study_by_experience.csv", _csv(study.by_experience)),
           ("reader_study_model_vs_readers.csv", _csv(study.model_vs_readers)),
           ("reader_study_agreement.csv", _csv(study.agreement))]
    if study.ai_per_reader is not None:
        out.append(("reader_study_ai_assistance.csv", _csv(study.ai_per_reader)))
    if study.followed is not None:
        out.append(("reader_study_followed_when_wrong.csv", _csv(study.followed)))
    return out + figures(study)


def write(study: ReaderStudy, out_dir: Path) -> list[Path]:
    paths = []
    for name, data in files(study):
        atomic_write_bytes(Path(out_dir) / name, data)
        paths.append(Path(out_dir) / name)
    return paths


# ---------------------------------------------------------------------------------------------
# DermSynth's simulated study
# ---------------------------------------------------------------------------------------------
STUDY_TASKS = ("mpl5", "sid2")  # the paper's reader study: 119 images from MPL5 and SID2


def simulate_for_results(results_dir: Path, out_csv: Path, model: Optional[str] = None,
                         tasks: Sequence[str] = STUDY_TASKS, seed: int = 0) -> Path:
    """Write DermSynth's simulated reader study for a results store: the cases are the test images of
    ``tasks`` (from the stored predictions), the AI answers the model's linear-probe predictions."""
    from dermbench.data.synth import is_dermsynth
    from dermbench.data.synth.reader_study import simulate_readings, write_reader_study

    results_dir = Path(results_dir)
    model = model or default_model(results_dir, tasks)
    root = study_data_root(results_dir, model, tasks)
    if not is_dermsynth(root):
        raise ReadingsError(f"the results under {results_dir} were computed on {root}, not DermSynth; the simulated "
                            "reader study exists for DermSynth only: give the real study with --readings")
    answers = model_answers(results_dir, model, tasks)
    cases, classes = [], {}
    for task in tasks:
        record = _record(results_dir, model, task, MODEL_PROTOCOL)
        pred = read_predictions(Path(record["_path"]))
        classes[task] = list(record["classes"])
        cases += [(task, sid, record["classes"][int(label)]) for sid, label in zip(pred["sample_id"], pred["label"])]
    readings = simulate_readings(cases, classes, dict(answers.items()), seed=seed)
    return write_reader_study(out_csv, readings)


__all__ = ["ReaderStudy", "ReadingsError", "analyse", "files", "read_readings", "score_readings",
           "simulate_for_results", "to_markdown", "write"]
