"""`dermbench data check`: what each task's adapter finds under a data root.

Per task: found or not (and which folders were looked for), counts per class and per
official split against the release's expected counts, files that could not be used, and
images duplicated by content (within the task, and across the default train/test split), images
that do not decode and masks that are not binary (decoded in parallel threads: PIL releases the GIL
while decoding). ``dermbench data check`` exits non-zero when a task is missing or any problem
(:attr:`TaskReport.problems`) is found.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from dermbench.data.locate import load_task
from dermbench.data.sample import DatasetError, TaskData
from dermbench.io import sha256_file
from dermbench.progress import progress_bar
from dermbench.data.splits import Split, make_split, train_test_duplicates
from dermbench.data.tasks import TaskCard, get_card


@dataclass
class TaskReport:
    task: str
    found: bool
    message: str = ""
    root: Optional[Path] = None
    n_samples: int = 0
    class_counts: dict[str, int] = field(default_factory=dict)
    expected: dict = field(default_factory=dict)
    official_splits: dict[str, int] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[list[str]] = field(default_factory=list)  # groups of sample ids with identical bytes
    leaks: list[tuple[str, str]] = field(default_factory=list)  # (train id, test id) with identical bytes
    undecodable: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    odd_masks: list[tuple[str, str]] = field(default_factory=list)  # (mask file, encoding found)
    split_error: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """What makes the task unusable or its numbers untrustworthy (the command then exits 1)."""
        out = []
        if not self.found:
            out.append("not found")
        if self.undecodable:
            out.append(f"{len(self.undecodable)} file(s) do not decode")
        if self.odd_masks:
            out.append(f"{len(self.odd_masks)} mask(s) are not binary 0/255 or 0/1")
        if self.leaks:
            out.append(f"{len(self.leaks)} image(s) are in both train and test")
        if self.split_error:
            out.append("no valid split")
        expected_total = self.expected.get("total")
        if self.found and expected_total is not None and expected_total != self.n_samples:
            out.append(f"{self.n_samples} samples, the release has {expected_total}")
        for c, n in self.class_counts.items():
            exp = self.expected.get(c)
            if exp is not None and exp != n:
                out.append(f"class {c!r}: {n} images, the release has {exp}")
        return out


def _split_for(card: TaskCard, data: TaskData, data_root: Path, cache: dict) -> Split:
    if card.name in cache:
        return cache[card.name]
    if card.split == "derived":
        parent_card = get_card(card.split_from)
        parent = _split_for(parent_card, load_task(data_root, parent_card), data_root, cache)
        split = make_split(data, "derived", 0, parent=parent)
    elif card.split == "sites":
        train, test = [], []
        for site in card.sites:
            site_card = get_card(site)
            s = _split_for(site_card, load_task(data_root, site_card), data_root, cache)
            train += [f"{site}/{i}" for i in s.train]
            test += [f"{site}/{i}" for i in s.test]
        split = Split(card.name, "sites", 0, sorted(train), sorted(test))
    else:
        split = make_split(data, card.split, 0, card.train_fraction)
    cache[card.name] = split
    return split


def check_task(data_root: Path, card: TaskCard, split_cache: dict, progress: bool = False) -> TaskReport:
    """The report of one task (``progress``: a bar over the images decoded, ``data check · <task> · decode``)."""
    try:
        data = load_task(data_root, card)
    except DatasetError as exc:
        return TaskReport(task=card.name, found=False, message=str(exc))
    from dermbench.data.synth import expected_counts

    synth_expected = expected_counts(data_root, card)
    report = TaskReport(task=card.name, found=True, root=data.root, n_samples=len(data.samples),
                        expected=synth_expected if synth_expected is not None else dict(card.expected),
                        skipped=list(data.skipped), notes=list(data.notes))
    if synth_expected is not None:
        report.notes.append("DermSynth: compared with the counts DermSynth wrote, not the real release's")
    if data.classes:
        counts = Counter(data.classes[s.label] for s in data.samples)
        report.class_counts = {c: counts.get(c, 0) for c in data.classes}
    report.official_splits = dict(Counter(s.official_split for s in data.samples if s.official_split))
    by_hash: dict[str, list[str]] = defaultdict(list)
    decoded = progress_bar(_decode_all(data.samples), total=len(data.samples), step=("data check", card.name, "decode"),
                           unit="img", enabled=progress)
    for s, digest, error, mask_encoding in decoded:
        by_hash[digest].append(s.id)
        if error:
            report.undecodable.append(error)
        if mask_encoding == "odd":
            report.odd_masks.append((str(s.mask), mask_encoding))
    report.duplicates = [ids for ids in by_hash.values() if len(ids) > 1]
    try:
        split = _split_for(card, data, data_root, split_cache)
    except (DatasetError, ValueError, KeyError) as exc:
        report.split_error = str(exc.args[0]) if exc.args else str(exc)
        return report
    if report.duplicates:
        report.leaks = train_test_duplicates(split, {i: digest for digest, ids in by_hash.items() for i in ids})
    return report


def _decode_one(sample):
    """(sample, image sha256, (file, reason) if a file does not decode, the mask's encoding)."""
    from dermbench.data.images import load_mask_array, load_rgb

    digest = sha256_file(sample.image)
    try:
        load_rgb(sample.image)
    except DatasetError as exc:
        return sample, digest, (str(sample.image), str(exc)), None
    encoding = None
    if sample.mask is not None:
        try:
            encoding = load_mask_array(sample.mask)[1].encoding
        except DatasetError as exc:
            return sample, digest, (str(sample.mask), str(exc)), None
    return sample, digest, None, encoding


def _decode_all(samples):
    import os
    from concurrent.futures import ThreadPoolExecutor

    workers = max(1, min(len(os.sched_getaffinity(0)), 16))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_decode_one, samples)


def check_data(data_root: Path, cards: Sequence[TaskCard], progress: bool = True) -> list[TaskReport]:
    """One report per card, in order; ``progress``: a bar over the tasks and one over each task's images
    (on a terminal, or forced by DERMBENCH_PROGRESS=1; see dermbench.progress)."""
    cache: dict = {}
    reports = []
    with progress_bar(total=len(cards), step="data check", unit="task", enabled=progress) as bar:
        for card in cards:
            bar.set_postfix_str(card.name)
            reports.append(check_task(Path(data_root), card, cache, progress=progress))
            bar.update()
    return reports


def format_report(reports: Sequence[TaskReport]) -> str:
    lines = []
    for r in reports:
        if not r.found:
            lines.append(f"✗ {r.task}: not found — {r.message}")
            continue
        head = f"✓ {r.task}: {r.n_samples} samples in {r.root}"
        expected_total = r.expected.get("total")
        if expected_total is not None and expected_total != r.n_samples:
            head += f" (expected {expected_total})"
        lines.append(head)
        if r.class_counts:
            parts = []
            for c, n in r.class_counts.items():
                exp = r.expected.get(c)
                parts.append(f"{c} {n}" + (f"/{exp}" if exp is not None and exp != n else ""))
            lines.append("    classes: " + ", ".join(parts) + ("  (found/expected where they differ)" if any("/" in p for p in parts) else ""))
        if r.official_splits:
            lines.append("    official split: " + ", ".join(f"{k} {v}" for k, v in sorted(r.official_splits.items())))
        for path, reason in r.skipped:
            lines.append(f"    unusable file: {path} ({reason})")
        for ids in r.duplicates:
            lines.append(f"    identical images: {', '.join(ids)}")
        for a, b in r.leaks:
            lines.append(f"    LEAK: train {a} and test {b} are the same image")
        for path, reason in r.undecodable:
            lines.append(f"    UNREADABLE: {reason}")
        for path, encoding in r.odd_masks[:10]:
            lines.append(f"    ODD MASK: {path} is not binary 0/255 or 0/1 (thresholded at 128 by the segmentation protocols)")
        if len(r.odd_masks) > 10:
            lines.append(f"    ... and {len(r.odd_masks) - 10} more odd masks")
        if r.split_error:
            lines.append(f"    SPLIT: {r.split_error}")
        for note in r.notes:
            lines.append(f"    note: {note}")
    found = sum(r.found for r in reports)
    with_problems = [r.task for r in reports if r.found and r.problems]
    lines.append(f"{found} of {len(reports)} task(s) found" +
                 (f"; problems in {len(with_problems)}: {', '.join(with_problems)}" if with_problems else ""))
    return "\n".join(lines)
