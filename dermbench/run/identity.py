"""What identifies a result: everything that changes its numbers, hashed into one key.

A result's *identity* is a flat dict of the settings that produced it (:func:`result_identity`);
its *key* is the sha256 of that dict in canonical JSON (:func:`result_key`). Results with different
keys live side by side in one results folder (``<protocol>@<key12>.json``, see
:mod:`dermbench.run.results`); a rerun with the same key is skipped, ``--overwrite`` replaces it.

The identity holds:

- ``backbone``, ``weights_sha256``: the registry key and the sha256 of the weights actually loaded
  (``random:<hash of the seeded initialisation>`` for ``--weights random``);
- ``task``, ``task_card_sha256``: the task and the hash of its card;
- ``data_sha256``: a hash over the task's samples, in id order: id, image content sha256, label,
  mask content sha256, caption and subgroups (:func:`data_sha256`), so another or an edited data
  root is another result;
- ``split_rule``, ``split_seed``, ``split_sha256``: how the train/test split was made, and the hash
  of the split file;
- ``protocol``, ``protocol_version`` (``Protocol.VERSION``, bumped when a protocol's numbers would
  change), ``settings`` (the resolved protocol settings), ``head_seed`` (seed of the trained heads);
- ``n_boot``, ``bootstrap_seed``: the number of shared bootstrap resamples and the seed they were
  drawn with.

Split seed and head seed are separate: ``--split-seed`` (default 0) makes the split and the shared
bootstrap resamples, ``--seed`` (one or several) seeds the heads. Several head seeds therefore share
the test set and its resamples, so their spread measures head training alone and every result stays
paired with every other model's.

Selection (:func:`select_results`): reports show one result per (model, task, protocol), picked by
filters and, among what remains, the paper's defaults (see :data:`PAPER_DEFAULTS`).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence

from dermbench.stats.bootstrap import DEFAULT_N_BOOT

IDENTITY_VERSION = 1
KEY_LENGTH = 12  # hex characters of the key in file names
# The paper's protocol: default split rule, split seed 0, head seed 0, 1,000 bootstrap replicates,
# the protocol's own settings (no --set). Used to choose among several results of one cell.
PAPER_DEFAULTS = {"split_mode": "default", "split_seed": 0, "head_seed": 0, "n_boot": DEFAULT_N_BOOT}
# Identity fields shown by `results list` and in selection errors, in this order.
SHOWN_FIELDS = ("head_seed", "split_seed", "split_rule", "split_sha256", "n_boot", "bootstrap_seed", "settings",
                "protocol_version", "weights_sha256", "data_sha256", "task_card_sha256")


class ResultSelectionError(ValueError):
    """Results cannot be put together: ambiguous selection, or results on different test sets / resamples."""


# ---------------------------------------------------------------------------------------------
# Identity and key
# ---------------------------------------------------------------------------------------------
def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def result_identity(*, backbone: str, weights_sha256: str, task: str, task_card_sha256: str, data_sha256: Optional[str],
                    split_rule: str, split_seed: int, split_sha256: str, protocol: str, protocol_version: int,
                    settings: dict[str, Any], head_seed: int, n_boot: int, bootstrap_seed: Optional[int],
                    overrides: Optional[dict[str, Any]] = None, split_mode: str = "default",
                    features: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The identity dict of one result (see the module docstring). ``overrides`` (the user's ``--set``
    values) and ``split_mode`` are kept for selection; they are already reflected in ``settings`` and
    ``split_rule``/``split_sha256``, so they do not enter the key. ``features``: the extraction settings
    that change features (precision other than fp32, draft-mode decoding); None for the default fp32,
    full decode, which then leaves the key as it was before these settings existed."""
    identity = {
        "identity_version": IDENTITY_VERSION,
        "backbone": backbone, "weights_sha256": weights_sha256,
        "task": task, "task_card_sha256": task_card_sha256, "data_sha256": data_sha256,
        "split_rule": split_rule, "split_seed": int(split_seed), "split_sha256": split_sha256,
        "protocol": protocol, "protocol_version": int(protocol_version),
        "settings": json.loads(_canonical(settings)), "head_seed": int(head_seed),
        "n_boot": int(n_boot), "bootstrap_seed": None if bootstrap_seed is None else int(bootstrap_seed),
        "overrides": json.loads(_canonical(overrides or {})), "split_mode": split_mode,
    }
    if features:
        identity["features"] = json.loads(_canonical(features))
    return identity


KEY_FIELDS = ("identity_version", "backbone", "weights_sha256", "task", "task_card_sha256", "data_sha256", "split_rule",
              "split_seed", "split_sha256", "protocol", "protocol_version", "settings", "head_seed", "n_boot",
              "bootstrap_seed")


def result_key(identity: dict[str, Any]) -> str:
    """sha256 (hex) of the identity's key fields in canonical JSON. The one function that names a result."""
    missing = [f for f in KEY_FIELDS if f not in identity]
    if missing:
        raise ValueError(f"result identity lacks {', '.join(missing)}; build it with result_identity()")
    fields = {f: identity[f] for f in KEY_FIELDS}
    if identity.get("features"):  # non-default extraction (bf16/fp16, draft decoding): another result
        fields["features"] = identity["features"]
    return hashlib.sha256(_canonical(fields).encode()).hexdigest()


def data_sha256(samples: Iterable[Any], image_hash) -> str:
    """Hash of a task's data: per sample (sorted by id) its id, image content hash, label, mask content
    hash, caption and subgroups. ``image_hash(path) -> hex`` (the feature cache's memoised hasher, so
    each image is read once per process)."""
    h = hashlib.sha256()
    for s in sorted(samples, key=lambda s: s.id):
        entry = [s.id, image_hash(s.image), s.label, image_hash(s.mask) if s.mask is not None else None,
                 s.caption, sorted((s.groups or {}).items())]
        h.update(_canonical(entry).encode())
        h.update(b"\n")
    return h.hexdigest()


def legacy_identity(record: dict[str, Any]) -> dict[str, Any]:
    """The identity of a result written before results had keys (schema 1, ``<protocol>.json``),
    reconstructed from what it stored. The data hash was not recorded: ``data_sha256`` is None, so
    such a result never matches a new run's key (it is recomputed beside it, never overwritten)."""
    split = record.get("split") or {}
    boot = record.get("bootstrap") or {}
    config = (record.get("provenance") or {}).get("config") or {}
    seed = int(record.get("seed", split.get("seed", 0)) or 0)
    return result_identity(
        backbone=str((record.get("backbone") or {}).get("key", str(record.get("model", "")).split("@")[0])),
        weights_sha256=str((record.get("backbone") or {}).get("weights_sha256", "unknown")),
        task=str(record.get("task")), task_card_sha256=str(record.get("task_card_sha256", "unknown")),
        data_sha256=None, split_rule=str(split.get("rule", "unknown")), split_seed=int(split.get("seed", seed)),
        split_sha256=str(record.get("split_sha256", split.get("sha256", ""))),
        protocol=str(record.get("protocol")), protocol_version=0, settings=config.get("protocol") or {},
        head_seed=seed, n_boot=int(boot.get("n_boot", config.get("n_boot", 0)) or 0), bootstrap_seed=None,
        split_mode=str(config.get("split_mode", "default")))


def identity_of(record: dict[str, Any]) -> dict[str, Any]:
    return record.get("identity") or legacy_identity(record)


def key_of(record: dict[str, Any]) -> str:
    return record.get("result_key") or result_key(identity_of(record))


# ---------------------------------------------------------------------------------------------
# Differences between results
# ---------------------------------------------------------------------------------------------
def _flat(identity: dict[str, Any]) -> dict[str, Any]:
    """Identity with the settings dict spread out as ``settings.<name>``."""
    out = {k: v for k, v in identity.items() if k != "settings"}
    for k, v in sorted((identity.get("settings") or {}).items()):
        out[f"settings.{k}"] = v
    return out


def _shown(name: str, value: Any) -> str:
    if isinstance(value, str) and len(value) > 16 and name.endswith("sha256"):
        return value[:12]
    return _canonical(value) if isinstance(value, (list, dict)) else str(value)


def differing_settings(records: Sequence[dict[str, Any]]) -> list[str]:
    """Identity fields (``settings.x`` for protocol settings) whose values are not the same in all ``records``."""
    flats = [_flat(identity_of(r)) for r in records]
    names = sorted({k for f in flats for k in f} - {"overrides", "split_mode", "identity_version"},
                   key=lambda k: (SHOWN_FIELDS.index(k.split(".")[0]) if k.split(".")[0] in SHOWN_FIELDS else 99, k))
    return [k for k in names if len({_canonical(f.get(k)) for f in flats}) > 1]


def describe(record: dict[str, Any], fields: Sequence[str]) -> str:
    flat = _flat(identity_of(record))
    return ", ".join(f"{k}={_shown(k, flat.get(k))}" for k in fields)


def result_name(record: dict[str, Any]) -> str:
    return str(record.get("_path") or f"{record.get('model')}/{record.get('task')}/{record.get('protocol')}@{key_of(record)[:KEY_LENGTH]}")


# ---------------------------------------------------------------------------------------------
# Selection: one result per (model, task, protocol)
# ---------------------------------------------------------------------------------------------
@dataclass
class Selection:
    """Filters on stored results (None / empty: no filter).

    ``seeds``: head seeds to keep (the first is the one shown; the others give the spread over seeds);
    ``split_seed``, ``n_boot``, ``split``: split seed, bootstrap replicates, split mode (default | official);
    ``settings``: ``{protocol: {setting: value}}`` as ``--set`` gives them; ``key``: a result key prefix.
    """

    seeds: Optional[list[int]] = None
    split_seed: Optional[int] = None
    n_boot: Optional[int] = None
    split: Optional[str] = None
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    key: Optional[str] = None

    def _parts(self) -> list[str]:
        parts = []
        if self.seeds:
            parts.append(f"--seed {','.join(map(str, self.seeds))}")
        if self.split_seed is not None:
            parts.append(f"--split-seed {self.split_seed}")
        if self.n_boot is not None:
            parts.append(f"--n-boot {self.n_boot}")
        if self.split:
            parts.append(f"--split {self.split}")
        parts += [f"--set {p}.{k}={v}" for p, kv in sorted(self.settings.items()) for k, v in sorted(kv.items())]
        if self.key:
            parts.append(f"--key {self.key}")
        return parts

    def describe(self) -> str:
        return " ".join(self._parts()) or "no filters"

    def matching(self) -> str:
        """`` matching --seed 1 ...`` for an error that found nothing, or ``""`` when nothing was filtered."""
        parts = self._parts()
        return f" matching {' '.join(parts)}" if parts else ""


def _setting_matches(stored: Any, wanted: Any) -> bool:
    if isinstance(wanted, str) and not isinstance(stored, str):
        if isinstance(stored, bool):
            return wanted.strip().lower() in (("true", "1", "yes", "on") if stored else ("false", "0", "no", "off"))
        if isinstance(stored, (list, tuple)):
            return [str(x) for x in stored] == [x.strip() for x in wanted.split(",")] or str(stored) == wanted
        try:
            return type(stored)(wanted) == stored
        except (TypeError, ValueError):
            return False
    return stored == wanted


def matches(record: dict[str, Any], selection: Selection) -> bool:
    ident = identity_of(record)
    if selection.seeds and ident.get("head_seed") not in selection.seeds:
        return False
    if selection.split_seed is not None and ident.get("split_seed") != selection.split_seed:
        return False
    if selection.n_boot is not None and ident.get("n_boot") != selection.n_boot:
        return False
    if selection.split and ident.get("split_mode", "default") != selection.split:
        return False
    if selection.key and not key_of(record).startswith(selection.key):
        return False
    wanted = selection.settings.get(str(record.get("protocol"))) or {}
    settings = ident.get("settings") or {}
    return all(k in settings and _setting_matches(settings[k], v) for k, v in wanted.items())


def _preference(record: dict[str, Any], selection: Selection) -> tuple:
    """Smaller is preferred: requested first seed, then the paper's defaults, newest protocol version."""
    ident = identity_of(record)
    first_seed = selection.seeds[0] if selection.seeds else PAPER_DEFAULTS["head_seed"]
    return (ident.get("head_seed") != first_seed,
            bool(ident.get("overrides")),
            ident.get("split_mode", "default") != PAPER_DEFAULTS["split_mode"],
            ident.get("split_seed") != PAPER_DEFAULTS["split_seed"],
            ident.get("n_boot") != PAPER_DEFAULTS["n_boot"],
            -int(ident.get("protocol_version") or 0))


SELECTION_RULE = ("One result per (model, task, protocol): the results matching the filters; among them the "
                  "first requested head seed (default 0), then no --set overrides, the default split, split "
                  "seed 0, 1,000 bootstrap replicates, the newest protocol version. Results that still tie "
                  "(they differ in something else: data, weights, task card) are refused; filter them.")


@dataclass
class Picked:
    record: dict[str, Any]
    seed_records: list[dict[str, Any]]  # the chosen result and the results differing from it only in head seed


def select_results(records: Sequence[dict[str, Any]], selection: Optional[Selection] = None) -> dict[tuple[str, str, str], Picked]:
    """(model, task, protocol) -> the chosen result (and its seed siblings), by :data:`SELECTION_RULE`.

    Raises :class:`ResultSelectionError` naming the tied results and what differs between them.
    """
    selection = selection or Selection()
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in records:
        if matches(r, selection):
            groups.setdefault((str(r.get("model")), str(r.get("task")), str(r.get("protocol"))), []).append(r)
    out: dict[tuple[str, str, str], Picked] = {}
    for cell, candidates in groups.items():
        ranked = sorted(candidates, key=lambda r: (_preference(r, selection), result_name(r)))
        best = _preference(ranked[0], selection)
        tied = [r for r in ranked if _preference(r, selection) == best]
        if len(tied) > 1:
            differs = differing_settings(tied)
            listing = "; ".join(f"{result_name(r)} ({describe(r, differs) or 'identical settings'})" for r in tied[:4])
            raise ResultSelectionError(
                f"{' · '.join(cell)}: {len(tied)} results match ({selection.describe()}) and none is preferred by the "
                f"selection rule; they differ in {', '.join(differs) or 'nothing recorded'}: {listing}. Choose one with "
                f"--key KEY (or the option of the setting that differs), or move the others out of the results folder")
        chosen = tied[0]
        siblings = [r for r in candidates if differing_settings([chosen, r]) in ([], ["head_seed"])
                    and (not selection.seeds or identity_of(r).get("head_seed") in selection.seeds)]
        seen_seeds: dict[Any, dict] = {}
        for r in sorted(siblings, key=lambda r: (identity_of(r).get("head_seed"), result_name(r))):
            seen_seeds.setdefault(identity_of(r).get("head_seed"), r)
        out[cell] = Picked(chosen, list(seen_seeds.values()))
    return out


def check_same_test_set(records: Sequence[dict[str, Any]], what: str) -> None:
    """Refuse to put on one table results whose test sets (split sha256) or shared bootstrap resamples
    (their file's sha256) differ: paired marks and tests need pairs. ``what`` names the table."""
    if len(records) < 2:
        return
    first = records[0]
    for other in records[1:]:
        for label, get in (("split sha256", lambda r: r.get("split_sha256")),
                           ("bootstrap resamples (sha256)", lambda r: (r.get("bootstrap") or {}).get("sha256"))):
            if get(first) != get(other):
                differs = differing_settings([first, other])
                raise ResultSelectionError(
                    f"{what}: {result_name(first)} and {result_name(other)} have different {label} "
                    f"({str(get(first))[:12]} vs {str(get(other))[:12]}; they differ in {', '.join(differs) or label}), "
                    f"so they cannot share a table or a paired test. Rerun one with the other's settings, or select "
                    f"results on one split (--split-seed, --split, --n-boot)")
