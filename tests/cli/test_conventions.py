"""One language across commands (issue #16): --results for results folders (old names hidden aliases),
--out for exported files, --device auto through one resolver, one --json shape, help on every parameter,
`dermbench list` without an argument."""
from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
import typer
from typer.testing import CliRunner

from dermbench import __version__
from dermbench.cli import app

runner = CliRunner()

# commands that read or write a results folder, and the commands that run a model
RESULTS_COMMANDS = ["run", "plan", "status", "leaderboard", "compare", "fairness", "results list", "results migrate",
                    "calibration", "skin-tone", "paper", "reader-study"]
MODEL_COMMANDS = ["run", "federated export-client", "pretrain", "paper"]


def _commands() -> dict[str, click.Command]:
    """Every command and group of the `dermbench` tree by its path ('' for the root, 'results list', ...)."""
    found: dict[str, click.Command] = {}

    def walk(cmd: click.Command, path: str) -> None:
        found[path] = cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{path} {name}".strip())

    walk(typer.main.get_command(app), "")
    return found


def _option(cmd: click.Command, flag: str) -> click.Parameter | None:
    return next((p for p in cmd.params if flag in p.opts or flag in p.secondary_opts), None)


def test_every_option_and_argument_has_help():
    missing = [f"{path or 'dermbench'}: {'/'.join(p.opts)}" for path, cmd in _commands().items() for p in cmd.params
               if not (p.help or "").strip()]
    assert not missing, "parameters without help text: " + "; ".join(missing)


def test_every_command_takes_h_and_the_root_its_version():
    for path in _commands():
        res = runner.invoke(app, [*path.split(), "-h"])
        assert res.exit_code == 0 and "Usage:" in res.output, (path, res.output)
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"dermbench {__version__}"


def test_argument_help_is_shown():
    # typer 0.20 with click 8.5 dropped positional arguments' help (dermbench.cli._app keeps it)
    res = runner.invoke(app, ["list", "-h"])
    assert res.exit_code == 0 and "models | tasks | protocols" in res.output, res.output
    assert _commands()["weights check"].params[0].help.startswith("The weights file")


def test_results_folders_are_named_results_and_old_names_are_hidden():
    commands = _commands()
    for path in RESULTS_COMMANDS:
        option = _option(commands[path], "--results")
        assert option is not None and not option.hidden, f"{path} has no visible --results"
    for path, cmd in commands.items():
        for flag in ("--output", "-o"):
            option = _option(cmd, flag)
            assert option is None or option.hidden, f"{path}: {flag} is visible; results go to --results, files to --out"
    for path in ("run", "plan"):
        assert _option(commands[path], "--output").hidden and _option(commands[path], "-o").hidden
    pretrain = commands["pretrain"]
    assert not _option(pretrain, "--out").hidden and _option(pretrain, "--output").hidden and _option(pretrain, "-o").hidden
    for path in ("leaderboard", "paper", "reader-study", "data synth", "federated export-client", "federated app"):
        assert _option(commands[path], "--out") is not None, f"{path} writes files but has no --out"


def test_device_defaults_to_auto_on_every_command_that_runs_a_model():
    commands = _commands()
    for path in MODEL_COMMANDS:
        option = _option(commands[path], "--device")
        assert option is not None and option.default == "auto", f"{path}: --device default {option and option.default!r}"
        assert "auto" in option.help and "cpu" in option.help


PLAN = ["--model", "random-vit", "--task", "ddi", "--protocol", "retrieval", "--synth-scale", "0.25", "--n-boot", "100"]


def test_old_results_names_still_work_and_both_names_at_once_is_an_error(tmp_path):
    for flag in ("--results", "--output", "-o"):
        res = runner.invoke(app, ["plan", *PLAN, flag, str(tmp_path / "r")])
        assert res.exit_code == 0, res.output
        assert f"results: {tmp_path / 'r'}" in res.output
    res = runner.invoke(app, ["run", *PLAN, "--results", str(tmp_path / "a"), "--output", str(tmp_path / "b")])
    assert res.exit_code == 2 and "--results and --output were both given" in res.output and "give only --results" in res.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_pretrain_old_output_name_still_works(tmp_path):
    res = runner.invoke(app, ["pretrain", "--print-config", "--device", "cpu", "-o", str(tmp_path / "run")])
    assert res.exit_code == 0 and json.loads(res.output)["run"]["device"] == "cpu", res.output
    res = runner.invoke(app, ["pretrain", "--print-config", "--out", "a", "--output", "b"])
    assert res.exit_code == 2 and "give only --out" in res.output


# --------------------------------------------------------------------------------------------
# the device resolver
# --------------------------------------------------------------------------------------------
@pytest.fixture
def gpus(monkeypatch):
    """Pretend this machine has N CUDA devices (0: none)."""
    import torch

    def set_count(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)

    return set_count


def test_auto_is_cuda_when_present_else_cpu(gpus):
    from dermbench.models.devices import resolve_device

    gpus(0)
    assert resolve_device("auto") == "cpu" and resolve_device("CPU") == "cpu"
    gpus(2)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda") == "cuda" and resolve_device("cuda:1") == "cuda:1"


@pytest.mark.parametrize("count,choice,message", [
    (0, "cuda", "torch sees no CUDA device"),
    (0, "cuda:0", "torch sees no CUDA device"),
    (2, "cuda:2", "has 2 CUDA device(s), numbered 0 to 1"),
    (2, "gpu", "expected auto | cpu | cuda | cuda:N | mps"),
    (2, "cuda:x", "expected auto | cpu | cuda | cuda:N | mps"),
])
def test_bad_devices_are_clear_errors(gpus, count, choice, message):
    from dermbench.models.devices import DeviceError, resolve_device

    gpus(count)
    with pytest.raises(DeviceError, match="--device") as err:
        resolve_device(choice)
    assert message in str(err.value)


def test_mps_is_refused_where_torch_has_no_usable_backend(monkeypatch):
    import torch

    from dermbench.models.devices import DeviceError, resolve_device

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="--device mps: .* no usable MPS backend"):
        resolve_device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("mps") == "mps"


def test_the_runner_uses_the_same_resolver(gpus):
    from dermbench.models.devices import DeviceError
    from dermbench.run.runner import resolve_device

    gpus(0)
    with pytest.raises(DeviceError, match="use --device cpu or --device auto"):
        resolve_device("cuda")


def test_slurm_runs_check_only_the_device_name():
    from dermbench.cli.common import device_option

    assert device_option("cuda:3", on_this_machine=False) == "cuda:3"  # the GPUs are on the nodes
    with pytest.raises(typer.Exit):
        device_option("gpu0", on_this_machine=False)


# --------------------------------------------------------------------------------------------
# dermbench list, and the one --json shape
# --------------------------------------------------------------------------------------------
def test_list_without_an_argument_shows_its_choices():
    from dermbench.data.tasks import load_cards
    from dermbench.models import registry

    res = runner.invoke(app, ["list"])
    assert res.exit_code == 0, res.output
    assert "dermbench list WHAT" in res.output
    lines = {line.split()[0]: line.split()[1] for line in res.output.splitlines()[1:]}
    assert lines == {"models": str(len(registry.available())), "tasks": str(len(load_cards())), "protocols": "9"}
    res = runner.invoke(app, ["list", "things"])
    assert res.exit_code == 2 and "choose models, tasks, protocols" in res.output


def test_list_without_an_argument_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom typer.testing import CliRunner\nfrom dermbench.cli import app\n"
            "for args in (['list'], ['list', '--json'], ['list', 'protocols', '--json']):\n"
            "    assert CliRunner().invoke(app, args).exit_code == 0, args\n"
            "assert 'torch' not in sys.modules, 'listing imported torch'\nprint('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr


def test_run_refuses_a_misspelt_option_before_importing_torch(tmp_path):
    """The checks that need no torch come before the device check (which imports it, seconds)."""
    import subprocess
    import sys

    code = ("import sys\nfrom typer.testing import CliRunner\nfrom dermbench.cli import app\n"
            f"out = {str(tmp_path / 'results')!r}\n"
            "for args in (['--task', 'ddj'], ['--task', 'ddi', '--set', 'linear.epoch=5'], ['--task', 'ddi', '--n-boot', '1']):\n"
            "    res = CliRunner().invoke(app, ['run', '--model', 'random-vit', '--results', out, *args])\n"
            "    assert res.exit_code == 2, (args, res.output)\n"
            "assert 'torch' not in sys.modules, 'the refusal imported torch'\nprint('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr
    assert not (tmp_path / "results").exists()


def test_ctrl_c_in_a_run_says_what_is_kept_and_how_to_go_on(tmp_path, monkeypatch):
    """Typer turns KeyboardInterrupt into a silent exit 130; run says what was kept and how to resume.
    (A real SIGINT mid-run, by hand: exit 130, the Ray processes of a federated job gone.)"""
    from dermbench.run import runner as run_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "run_benchmark", interrupted)
    res = runner.invoke(app, ["run", "--model", "random-vit", "--task", "ddi", "--results", str(tmp_path / "r"),
                              "--device", "cpu", "--quiet"])
    assert res.exit_code == 130
    assert "interrupted: every result finished so far is stored" in res.output
    assert "the same command again goes on from there" in res.output


@pytest.fixture
def json_cases(tmp_path) -> dict[str, list[list[str]]]:
    """Arguments of each command with --json, run on small real inputs: a run's results folder, a weights file."""
    from tests.models.release_files import write_release_file, zeros_like_meta
    from dermbench.models.weights_check import architecture_module

    results = tmp_path / "results"  # a real (small) run: its plan for status, its result for results list
    res = runner.invoke(app, ["run", *PLAN, "--results", str(results), "--quiet", "--workers", "0"])
    assert res.exit_code == 0, res.output
    module, _, _ = architecture_module("lvmmed")
    weights = write_release_file("lvmmed", zeros_like_meta(module.state_dict()), tmp_path)
    return {
        "list": [[], ["models"], ["tasks"], ["protocols"]],
        "plan": [[*PLAN, "--results", str(results)]],
        "status": [["--results", str(results)]],
        "results list": [["--results", str(results)]],
        "weights check": [["--model", "lvmmed", str(weights)]],
        "weights where": [["--model", "dinov2"]],
    }


def test_every_json_output_has_the_one_shape(json_cases):
    with_json = sorted(path for path, cmd in _commands().items() if _option(cmd, "--json") is not None)
    assert with_json == sorted(json_cases), "a command with --json has no case here (or a case lost its --json)"
    for path, cases in json_cases.items():
        for args in cases:
            res = runner.invoke(app, [*path.split(), *args, "--json"])
            assert res.exit_code == 0, (path, args, res.output)
            doc = json.loads(res.stdout)
            assert set(doc) == {"dermbench", "command", "items", "warnings"}, (path, args, sorted(doc))
            assert doc["dermbench"] == __version__
            assert doc["command"] == (f"list {args[0]}" if path == "list" and args else path)
            assert isinstance(doc["items"], list) and doc["items"], (path, args)
            assert isinstance(doc["warnings"], list) and all(isinstance(w, str) for w in doc["warnings"])
            assert all(isinstance(item, dict) for item in doc["items"]), (path, args)


# --------------------------------------------------------------------------------------------
# README: the backbone count and the conventions it documents
# --------------------------------------------------------------------------------------------
README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_counts_the_registered_backbones_and_documents_the_conventions():
    from dermbench.models import registry

    shipped = [k for k in registry.available() if registry.get(k).source.split(".")[0] in ("dermbench", "dermino", "baselines")]
    text = README.read_text()
    assert f"the {len(shipped)} registered backbones" in text and f"shows {len(shipped)} keys" in text
    release = [k for k in shipped if k not in ("dermino-tiny", "random-vit")]
    assert f"{len(release)} keys, since" in text
    assert '"command": "list models", "items": [' in text and '"warnings": []}' in text
    for flag in ("--results DIR", "--out PATH", "`--device`", "`--json`", "--result-path"):
        assert flag in text, flag
    assert "--output /" not in text and " -o " not in text  # README examples name results folders --results
