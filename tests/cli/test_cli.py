"""CLI: listing, lazy imports, and clear errors for unknown names."""
from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from dermbench.cli import app

runner = CliRunner()


def test_help_and_list_do_not_import_torch():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from dermbench.cli import app\n"
        "r = CliRunner()\n"
        "assert r.invoke(app, ['--help']).exit_code == 0\n"
        "for what in ('models', 'tasks', 'protocols'):\n"
        "    res = r.invoke(app, ['list', what])\n"
        "    assert res.exit_code == 0, res.output\n"
        "assert 'torch' not in sys.modules, 'listing imported torch'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


def test_list_tasks_json_has_all_twenty_one_cards():
    res = runner.invoke(app, ["list", "tasks", "--json"])
    assert res.exit_code == 0, res.output
    cards = json.loads(res.output)["items"]
    names = [c["name"] for c in cards]
    assert len(names) == 21 and names[0] == "ddi" and "isic2018" in names and "fl-malignancy" in names
    groups = {c["group"] for c in cards}
    assert groups == {"malignancy", "severity", "multi-category", "caption", "segmentation", "federated"}


def test_list_models_json_includes_random_vit():
    res = runner.invoke(app, ["list", "models", "--json"])
    assert res.exit_code == 0, res.output
    models = {m["key"]: m for m in json.loads(res.output)["items"]}
    assert models["random-vit"]["embed_dim"] == 96


def test_unknown_names_list_the_valid_ones():
    res = runner.invoke(app, ["run", "--model", "nope", "--task", "ddi"])
    assert res.exit_code == 2 and "Valid models" in res.output and "random-vit" in res.output
    res = runner.invoke(app, ["run", "--model", "random-vit", "--task", "nope"])
    assert res.exit_code == 2 and "Valid tasks" in res.output and "ddi" in res.output
    res = runner.invoke(app, ["run", "--model", "random-vit", "--task", "ddi", "--protocol", "nope"])
    assert res.exit_code == 2 and "Valid protocols" in res.output and "retrieval" in res.output
    res = runner.invoke(app, ["list", "things"])
    assert res.exit_code == 2


def test_a_protocol_that_does_not_run_on_the_task_says_so(tmp_path):
    res = runner.invoke(app, ["run", "--model", "random-vit", "--task", "ddi", "--protocol", "seg-linear",
                              "--output", str(tmp_path), "--quiet"])
    assert res.exit_code == 1, res.output  # nothing computed, nothing stored before: a run that produced nothing
    assert "ddi: none of the requested protocols (seg-linear) runs on this task" in res.output
    assert "retrieval, linear, label-efficiency" in res.output and "0 result(s) computed" in res.output
