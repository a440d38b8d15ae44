"""A backbone plugin installed from a package is discovered through the entry point and runs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = Path(__file__).parent.parent / "fixtures" / "plugin_pkg"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """pip-install the example plugin into a private folder (no network: --no-deps, no build isolation)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(PLUGIN)], check=True, timeout=300)
    return target


def _run(code: str, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_plugin_is_discovered_without_importing_torch(plugin_site):
    out = _run("import sys\nfrom dermbench.models import registry\n"
               "assert 'example-vit' in registry.available(), registry.available()\n"
               "assert 'torch' not in sys.modules\nprint(registry.get('example-vit').meta.embed_dim)", plugin_site)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "32"


def test_plugin_runs_through_the_cli(plugin_site, tmp_path):
    code = ("from typer.testing import CliRunner\nfrom dermbench.cli import app\n"
            f"r = CliRunner().invoke(app, ['run', '--model', 'example-vit', '--task', 'mednode', '--output', r'{tmp_path}',"
            " '--set', 'linear.epochs=3', '--n-boot', '50', '--quiet'])\nprint(r.output)\nassert r.exit_code == 0")
    out = _run(code, plugin_site)
    assert out.returncode == 0, out.stdout + out.stderr
    assert list((tmp_path / "example-vit" / "mednode").glob("linear@*.json"))
