"""The compact terminal leaderboard: fitted to the width, nothing cut off, marks as in the full tables."""
from __future__ import annotations

import pytest

from dermbench.report.leaderboard import Table
from dermbench.report.terminal import cell_text, compact_tables, render_table, to_terminal

TASKS = ["isic2019", "fitzpatrick17k-3", "fitzpatrick17k-9", "fitzpatrick17k-114", "derm7pt", "pad-ufes-20", "dermnet", "sd-198"]
TITLES = ["ISIC 2019", "Fitzpatrick17k-3", "Fitzpatrick17k-9", "Fitzpatrick17k-114", "Derm7pt", "PAD-UFES-20", "DermNet", "SD-198"]
MODELS = ["dermino-base", "panderm-large", "random-vit", "biomedclip-vit-b16"]


def _table(metric="auroc", tasks=TASKS, titles=TITLES, models=MODELS) -> Table:
    cells = {(m, t): {"value": 0.5 + 0.05 * i + 0.01 * j, "ci_low": 0.4, "ci_high": 0.9, "contaminated": j == 1 and i == 0}
             for i, m in enumerate(models) for j, t in enumerate(tasks)}
    return Table("multi-category", "linear", metric, list(tasks), list(titles), list(models), cells)


@pytest.mark.parametrize("width", [40, 60, 80, 120, 250])
def test_every_line_fits_the_width_and_every_value_is_shown(width):
    table = _table()
    table.cells[("random-vit", "derm7pt")]["p_vs_best"] = 0.01  # † against the best
    text = to_terminal([table], width, ["skipped a/very/long/path/to/some/result@0123456789ab.json: unreadable JSON"])
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width, "\n" + text
    for m in MODELS:
        for t in TASKS + ["avg"]:
            assert cell_text(table, m, t) in text  # wrapped or abbreviated, never dropped
    assert "60.04†" not in text and "64.00†" in text  # random-vit on derm7pt (index 4): 0.6 + 0.04
    assert "65.00*" in text and "51.00‡" in text and "Notes:" in text
    blocks = sum(line.startswith("multi-category · linear") for line in lines)
    assert (blocks == 1) == (width >= 200)  # wide enough: one block with the full titles
    if blocks > 1:
        assert "(columns 1–" in " ".join(lines)


def test_abbreviated_titles_are_unique_and_spelled_out_in_a_key():
    lines = render_table(_table(), 60)
    key = " ".join(line.strip() for line in lines if line.startswith("  "))
    headers = [line for line in lines if line.startswith("model")]
    shown = [h for line in headers for h in line.split()[1:]]
    assert len(shown) == len(set(shown)) == len(TASKS) + 1
    for title in TITLES:
        assert title in shown or f"= {title}" in key
    assert "Fit…-9 = Fitzpatrick17k-9" in key  # the variants of a dataset keep their distinguishing end


def test_a_model_name_wider_than_the_terminal_is_shortened_not_overflowing():
    table = _table(tasks=TASKS[:1], titles=TITLES[:1], models=["a" * 70, "b"])
    lines = render_table(table, 40)
    assert max(len(line) for line in lines) <= 40 and any("…" in line for line in lines)


def test_compact_shows_the_main_metric_of_each_group_or_the_asked_metrics():
    auroc, f1 = _table("auroc"), _table("f1")
    seg = Table("segmentation", "seg-linear", "dice", ["isic2018"], ["ISIC 2018"], ["m"], {("m", "isic2018"): {"value": 0.8}})
    jac = Table("segmentation", "seg-linear", "jaccard", ["isic2018"], ["ISIC 2018"], ["m"], {("m", "isic2018"): {"value": 0.7}})
    per_fraction = Table("federated", "federated", "auroc", ["auroc@a", "auroc@b"], ["a", "b"], ["m"], {}, task="isic2019")
    kinds = {("multi-category", "linear"): "classification", ("segmentation", "seg-linear"): "segmentation",
             ("federated", "federated"): "classification"}
    tables = [auroc, f1, seg, jac, per_fraction]
    assert compact_tables(tables, kinds) == [auroc, seg, per_fraction]
    assert compact_tables(tables, kinds, ["f1", "jaccard"]) == [f1, jac]


def test_filters_take_tasks_groups_and_the_run_aliases_and_refuse_what_is_not_there():
    from dermbench.report.leaderboard import FilterError, filter_records

    records = [{"task": t, "task_group": g, "protocol": p, "metrics": {"auroc": {}, "f1": {}, "auroc@0.5": {}}}
               for t, g in (("ddi", "malignancy"), ("acne04", "severity"), ("isic2018", "segmentation"))
               for p in ("linear", "retrieval")]
    tasks = lambda recs: sorted({r["task"] for r in recs})  # noqa: E731
    assert tasks(filter_records(records, ["classification"])) == ["acne04", "ddi"]
    assert tasks(filter_records(records, ["all"], ["linear"])) == ["acne04", "ddi", "isic2018"]
    assert tasks(filter_records(records, ["severity", "ddi"], metrics=["auroc"])) == ["acne04", "ddi"]
    with pytest.raises(FilterError, match=r"--task isic2020: .*tasks: ddi, acne04, isic2018; groups: malignancy, severity, segmentation"):
        filter_records(records, ["isic2020"])
    with pytest.raises(FilterError, match=r"--metric dice: .*auroc, f1"):
        filter_records(records, metrics=["dice"])
