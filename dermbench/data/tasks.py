"""Task cards: one declarative TOML file per evaluation task, in ``tasks/``.

A card says *what* a task is (dataset, classes, split rule, protocols, main metric,
licence, citation); all behaviour lives in the adapters and protocols.
Extra card folders can be added with the ``DERMBENCH_TASK_DIRS`` environment variable
(``os.pathsep``-separated), e.g. for a hospital's own manifest-based tasks.
"""
from __future__ import annotations

import hashlib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

GROUPS = ("malignancy", "severity", "multi-category", "caption", "segmentation", "federated")
CLASSIFICATION_GROUPS = ("malignancy", "severity", "multi-category")
SPLIT_RULES = ("stratified", "random", "derived", "sites")

# The top-level tasks/ folder is the source of truth; dermbench/data/task_cards links to it so that a
# wheel ships the cards as package data (pip install . works outside the source tree).
_BUILTIN_DIR = Path(__file__).resolve().parent / "task_cards"


@dataclass(frozen=True)
class TaskCard:
    name: str
    title: str
    group: str
    adapter: str
    folders: tuple[str, ...]  # official folder names looked up under the data root, first found wins
    classes: tuple[str, ...]  # empty for segmentation and captioning
    protocols: tuple[str, ...]
    main_metric: str
    split: str = "stratified"  # 'stratified' | 'random' | 'derived'
    train_fraction: float = 0.5
    split_from: Optional[str] = None  # for split = 'derived': the task whose split this one reuses
    sites: tuple[str, ...] = ()  # for split = 'sites' (federated): one client per task, each with its own split
    source: str = "public"  # 'public' | 'private'
    licence: str = "unknown"
    citation: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # adapter options (label column, image kind...)
    expected: dict[str, Any] = field(default_factory=dict)  # expected counts of the real release
    subgroups: tuple[str, ...] = ()  # sample.groups keys used for fairness analyses
    # folders the official archives unzip into; found directly in the data root, they mean the
    # archives were extracted there without a wrapper folder named after the task
    unzipped: tuple[str, ...] = ()
    # another dataset's spelling of a class: {"naevus": "nevus"}; sites of one federation (and any
    # other comparison across datasets) match classes by these canonical names
    class_aliases: dict[str, str] = field(default_factory=dict)
    transfer: Optional["TransferSpec"] = None  # cross-dataset transfer family (tasks/README.md, "transfer")
    path: Optional[Path] = None
    sha256: str = ""

    @property
    def is_classification(self) -> bool:
        return self.group in CLASSIFICATION_GROUPS

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def canonical_classes(self) -> tuple[str, ...]:
        """The classes under their canonical names (``class_aliases`` applied)."""
        return tuple(self.class_aliases.get(c, c) for c in self.classes)


@dataclass(frozen=True)
class TransferSpec:
    """A task's membership of a transfer family: every pair of member tasks is a transfer pair.

    ``classes``: the family's label space in score order (the last is the positive class for AUROC);
    ``map``: this task's class -> family class. Classes left out of ``map`` do not take part in transfer.
    """

    family: str
    classes: tuple[str, ...]
    map: dict[str, str]


def _parse_transfer(path: Path, d: dict) -> Optional[TransferSpec]:
    t = d.get("transfer")
    if t is None:
        return None
    where = f"task card {path}: [transfer]"
    if not isinstance(t, dict) or not isinstance(t.get("family"), str) or not t["family"]:
        raise ValueError(f"{where} needs family = '<name>' (see tasks/README.md, section transfer)")
    classes, mapping = t.get("classes"), t.get("map")
    if not isinstance(classes, list) or len(classes) < 2 or len(set(classes)) != len(classes):
        raise ValueError(f"{where} needs classes = [...], at least two distinct family class names, got {classes!r}")
    if not isinstance(mapping, dict) or not mapping:
        raise ValueError(f"{where} needs map = {{ <task class> = <family class>, ... }}, got {mapping!r}")
    own = set(d.get("classes", ()))
    unknown = [k for k in mapping if k not in own]
    bad = [v for v in mapping.values() if v not in classes]
    if unknown or bad:
        raise ValueError(f"{where}: map keys must be the task's classes {sorted(own)} and values the family classes "
                         f"{classes}; unknown keys {unknown}, unknown values {bad}")
    unmapped = [c for c in classes if c not in mapping.values()]
    if unmapped:
        raise ValueError(f"{where}: family class(es) {unmapped} receive no class of this task; map one to each")
    return TransferSpec(family=t["family"], classes=tuple(classes), map=dict(mapping))


def task_dirs() -> list[Path]:
    dirs = [_BUILTIN_DIR]
    extra = os.environ.get("DERMBENCH_TASK_DIRS", "")
    dirs += [Path(p) for p in extra.split(os.pathsep) if p]
    return dirs


def _parse_card(path: Path) -> TaskCard:
    raw = path.read_bytes()
    try:
        d = tomllib.loads(raw.decode("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"task card {path}: not valid TOML ({exc})") from exc
    required = ("name", "title", "group", "adapter", "folders", "protocols", "main_metric")
    missing = [k for k in required if k not in d]
    if missing:
        raise ValueError(f"task card {path}: missing field(s) {missing}; see tasks/README.md for the schema")
    if d["group"] not in GROUPS:
        raise ValueError(f"task card {path}: group {d['group']!r} is not one of {GROUPS}")
    split = d.get("split", "stratified")
    if split not in SPLIT_RULES:
        raise ValueError(f"task card {path}: split {split!r} is not one of {SPLIT_RULES}")
    if split == "derived" and not d.get("split_from"):
        raise ValueError(f"task card {path}: split = 'derived' needs split_from = '<task>'")
    return TaskCard(
        name=d["name"],
        title=d["title"],
        group=d["group"],
        adapter=d["adapter"],
        folders=tuple(d["folders"]),
        classes=tuple(d.get("classes", ())),
        protocols=tuple(d["protocols"]),
        main_metric=d["main_metric"],
        split=split,
        train_fraction=float(d.get("train_fraction", 0.5)),
        split_from=d.get("split_from"),
        sites=tuple(d.get("sites", ())),
        source=d.get("source", "public"),
        licence=d.get("licence", "unknown"),
        citation=d.get("citation", ""),
        options=dict(d.get("options", {})),
        expected=dict(d.get("expected", {})),
        subgroups=tuple(d.get("subgroups", ())),
        unzipped=tuple(d.get("unzipped", ())),
        class_aliases=dict(d.get("class_aliases", {})),
        transfer=_parse_transfer(path, d),
        path=path,
        sha256=hashlib.sha256(raw).hexdigest(),
    )


_CACHE: Optional[dict[str, TaskCard]] = None


def load_cards(reload: bool = False) -> dict[str, TaskCard]:
    """All task cards by name, in a stable order (built-in order file, then extra dirs)."""
    global _CACHE
    if _CACHE is not None and not reload:
        return _CACHE
    cards: dict[str, TaskCard] = {}
    for d in task_dirs():
        if not d.is_dir():
            continue
        for path in sorted(d.glob("*.toml")):
            card = _parse_card(path)
            if card.name in cards:
                raise ValueError(f"task {card.name!r} defined twice: {cards[card.name].path} and {path}")
            cards[card.name] = card
    _check_transfer_families(cards)
    order = {g: i for i, g in enumerate(GROUPS)}
    _CACHE = dict(sorted(cards.items(), key=lambda kv: (order[kv[1].group], _paper_order(kv[0]))))
    return _CACHE


def _check_transfer_families(cards: dict[str, TaskCard]) -> None:
    """Every member of a transfer family declares the same family classes, in the same order."""
    first: dict[str, TaskCard] = {}
    for card in cards.values():
        if card.transfer is None:
            continue
        ref = first.setdefault(card.transfer.family, card)
        if ref.transfer.classes != card.transfer.classes:
            raise ValueError(f"transfer family {card.transfer.family!r}: {card.path} declares classes "
                             f"{list(card.transfer.classes)} but {ref.path} declares {list(ref.transfer.classes)}; "
                             "every member must list the same family classes in the same order")


def transfer_members(family: str) -> list[TaskCard]:
    """The task cards of a transfer family, in the benchmark's task order."""
    return [c for c in load_cards().values() if c.transfer is not None and c.transfer.family == family]


# The paper's table order within each group.
PAPER_ORDER = [
    "ddi", "fitzpatrick17k-2", "mednode", "ph2-cls", "mpl5",
    "msd2", "mtd2", "acne04",
    "gld6", "sid2", "vwcd4", "derm7pt", "fitzpatrick17k-3", "fitzpatrick17k-9",
    "skincap",
    "fl-malignancy",
    "ph2-seg", "skincancer", "isic2016", "isic2017", "isic2018",
]


def _paper_order(name: str) -> tuple[int, str]:
    return (PAPER_ORDER.index(name) if name in PAPER_ORDER else len(PAPER_ORDER), name)


def get_card(name: str) -> TaskCard:
    cards = load_cards()
    if name not in cards:
        from dermbench.names import did_you_mean

        hint = did_you_mean(name, [*cards, *GROUPS, "all", "classification"])
        raise KeyError(f"unknown task {name!r}{hint}. Valid tasks: {', '.join(cards)}; groups: {', '.join(GROUPS)}; or 'all'")
    return cards[name]


def select_tasks(spec: str) -> list[TaskCard]:
    """'all' | a group name | 'classification' | comma-separated task names (mixable)."""
    cards = load_cards()
    chosen: list[str] = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        if part == "all":
            names = list(cards)
        elif part == "classification":
            names = [n for n, c in cards.items() if c.is_classification]
        elif part in GROUPS:
            names = [n for n, c in cards.items() if c.group == part]
        else:
            names = [get_card(part).name]
        chosen += [n for n in names if n not in chosen]
    if not chosen:
        raise KeyError(f"no task selected by {spec!r}. Valid tasks: {', '.join(cards)}")
    return [cards[n] for n in chosen]
