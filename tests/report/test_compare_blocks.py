"""compare on results whose predictions hold several blocks per test image (robustness: one per corruption
and severity; transfer: one per training task). The claim's fresh resamples crashed on them
("could not broadcast ... (2000,260) into ... (2000,40)"): every `compare` of a store made by `make demo`."""
from __future__ import annotations

import math

from typer.testing import CliRunner

from dermbench.cli import app
from dermbench.report.compare import compare_models

runner = CliRunner()


def test_compare_claims_on_robustness_and_transfer_results(tmp_path):
    out = tmp_path / "results"
    res = runner.invoke(app, ["run", "--model", "random-vit,dermino-tiny", "--task", "ph2-cls", "--protocol",
                              "robustness,transfer", "--synth-scale", "0.25", "--n-boot", "20", "--quiet",
                              "--workers", "0", "--results", str(out)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["compare", "--results", str(out), "--model", "dermino-tiny", "--model", "random-vit"])
    assert res.exit_code == 0, res.output
    assert "ph2-cls · robustness" in res.output and "ph2-cls · transfer" in res.output
    # two rows, α = 0.05: 20·m/α = 800 fresh paired resamples for the claim (the 20 stored ones cannot reach α/m)
    assert "B = 800 resamples drawn" in res.output
    table = compare_models(out, "dermino-tiny", "random-vit")
    assert list(table["protocol"]) == ["robustness", "transfer"]
    assert (table["claim_n_boot"] == 800).all() and table["p_claim"].map(math.isfinite).all()
    # the claim's replicates are of the same metric as the stored ones: their p agree roughly
    assert ((table["p_claim"] - table["p_boot"]).abs() < 0.25).all(), table[["p_claim", "p_boot"]]
