"""Leaderboard sections for robustness, transfer and boundary metrics, from stored-style records."""
from __future__ import annotations

from dermbench.report.robustness import build_boundary, build_robustness, build_transfer
from dermbench.report.sections import BUILDERS


def m(value, low, high):
    return {"value": value, "ci_low": low, "ci_high": high}


def test_sections_are_registered():
    assert {"dermbench.report.robustness:build_robustness", "dermbench.report.robustness:build_transfer",
            "dermbench.report.robustness:build_boundary"} <= set(BUILDERS)


def test_robustness_section_tables_and_figure(tmp_path):
    record = {"model": "mA", "task": "ph2-cls", "task_title": "PH2(cls)", "protocol": "robustness",
              "info": {"corruptions": {"hair": {}, "gaussian_noise": {}}},
              "provenance": {"config": {"protocol": {"corruptions": ["gaussian_noise", "hair"], "severities": [1, 5]}}},
              "metrics": {"auroc": m(0.9, 0.8, 1.0), "auroc_rel_drop": m(0.1, 0.05, 0.2),
                          "auroc@hair@1": m(0.85, 0.7, 0.95), "auroc_delta@hair@1": m(-0.05, -0.1, 0.0),
                          "auroc@hair@5": m(0.7, 0.5, 0.9), "auroc_delta@hair@5": m(-0.2, -0.3, -0.1),
                          "auroc_rel_drop@hair": m(0.139, 0.05, 0.25)}}
    section = build_robustness(tmp_path, [record, {"protocol": "linear", "task": "ph2-cls", "model": "mA"}])
    assert section.name == "robustness"
    assert "| mA | PH2(cls) | 90.0 [80.0, 100.0] | 10.0 [5.0, 20.0] | 2 | 1,5 |" in section.markdown
    assert "| hair | 5 | 70.0 [50.0, 90.0] | -20.0 [-30.0, -10.0] | 13.9 [5.0, 25.0] |" in section.markdown
    assert section.figures[0][0] == "fig_robustness.svg" and section.figures[0][1].startswith(b"<?xml")
    csv = dict(section.files)["robustness.csv"].decode()
    assert csv.splitlines()[0].startswith("model,task,corruption,severity,auroc_value")
    assert build_robustness(tmp_path, []) is None


def test_transfer_section_matrix_diagonal_and_drop(tmp_path):
    def record(task, title, sources):
        metrics = {}
        for s, (v, d) in sources.items():
            metrics[f"auroc@{s}"] = m(v, v - 0.1, min(v + 0.1, 1))
            if d is not None:
                metrics[f"auroc_drop@{s}"] = m(d, d - 0.05, d + 0.05)
        return {"model": "mA", "task": task, "task_title": title, "protocol": "transfer",
                "info": {"family": "melanoma-naevus", "sources": list(sources)}, "metrics": metrics}

    records = [record("ph2-cls", "PH2(cls)", {"ph2-cls": (0.9, None), "mednode": (0.7, 0.2)}),
               record("mednode", "MED-Node", {"mednode": (0.8, None), "ph2-cls": (0.6, 0.2)})]
    section = build_transfer(tmp_path, records)
    md = section.markdown
    assert "| train \\ test | MED-Node | PH2(cls) |" in md  # paper order
    assert "| MED-Node | 80.0 [70.0, 90.0] | 70.0 [60.0, 80.0] |" in md  # row = train task
    assert "| PH2(cls) | 60.0 [50.0, 70.0] | 90.0 [80.0, 100.0] |" in md
    assert "| MED-Node | (in-domain) | 20.0 [15.0, 25.0] |" in md
    assert [name for name, _ in section.figures] == ["fig_transfer_melanoma-naevus_mA.svg"]


def test_boundary_section(tmp_path):
    record = {"model": "mA", "task": "ph2-seg", "task_title": "PH2(seg)", "protocol": "seg-linear", "kind": "segmentation",
              "info": {"boundary_metrics": {"surface_dice_tolerance_px": 5.0, "n_test_hd95_undefined": 1}},
              "metrics": {"dice": m(0.8, 0.7, 0.9), "hd95": m(12.5, 10.0, 15.0), "surface_dice": m(0.6, 0.5, 0.7),
                          "threshold_jaccard": m(0.55, 0.45, 0.65)}}
    section = build_boundary(tmp_path, [record])
    assert "| PH2(seg) | seg-linear | mA | 80.0 [70.0, 90.0] | 12.5 [10.0, 15.0] | 60.0 [50.0, 70.0] | 55.0 [45.0, 65.0] | 5 | 1 |" \
        in section.markdown
    assert build_boundary(tmp_path, [{**record, "metrics": {"dice": m(0.8, 0.7, 0.9)}}]) is None
