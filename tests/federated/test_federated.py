"""Federated learning with Flower: FedAvg aggregation, the simulation engine through the CLI, and the
deployment engine (SuperLink + three SuperNodes on localhost) giving the simulation's head."""
from __future__ import annotations

import itertools
import json
import time

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("flwr")
pytest.importorskip("ray")

from dermbench.cli import app  # noqa: E402
from dermbench.federated.partition import dirichlet_partition  # noqa: E402
from dermbench.federated.training import cosine_lr, derive_seed  # noqa: E402
from dermbench.run.results import iter_results, read_predictions  # noqa: E402

runner = CliRunner()
SITES = ("fitzpatrick17k-2", "mednode", "ph2-cls")
FAST = ["--n-boot", "200", "--quiet"]


# --- aggregation --------------------------------------------------------------------------------
def _reply(arrays: dict[str, np.ndarray], n: int, node: int):
    from flwr.app import Array, ArrayRecord, Message, MessageType, Metadata, MetricRecord, RecordDict

    md = Metadata(run_id=1, message_id=f"reply-{node}", src_node_id=node, dst_node_id=0, reply_to_message_id="train",
                  group_id="1", created_at=time.time(), ttl=60.0, message_type=MessageType.TRAIN)
    content = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                          "metrics": MetricRecord({"num-examples": n, "train-loss": float(node)})})
    return Message(content, metadata=md)


def test_fedavg_round_is_the_sample_weighted_average():
    from flwr.serverapp.strategy import FedAvg

    from dermbench.federated.server_app import AllClientsFedAvg

    rng = np.random.default_rng(0)
    counts = [49, 36, 40]
    heads = [{"weight": rng.normal(size=(2, 8)).astype(np.float32), "bias": rng.normal(size=2).astype(np.float32)}
             for _ in counts]
    replies = [_reply(h, n, node) for node, (h, n) in enumerate(zip(heads, counts))]
    expected = {k: sum(n * h[k].astype(np.float64) for h, n in zip(heads, counts)) / sum(counts) for k in ("weight", "bias")}

    # Flower's FedAvg, and the subclass the ServerApp runs (which only checks and orders the replies)
    for strategy in (FedAvg(), AllClientsFedAvg(num_clients=3)):
        arrays, metrics = strategy.aggregate_train(1, replies)
        for k in expected:
            np.testing.assert_allclose(arrays[k].numpy(), expected[k], rtol=0, atol=1e-6)
        assert metrics["train-loss"] == pytest.approx(sum(n * i for i, n in enumerate(counts)) / sum(counts))

    # any order of arrival gives the bit-identical head
    outs = [AllClientsFedAvg(3).aggregate_train(1, list(p))[0] for p in itertools.permutations(replies)]
    for out in outs[1:]:
        for k in expected:
            assert np.array_equal(out[k].numpy(), outs[0][k].numpy())

    # a site that did not answer is an error, not a silent average over the others
    with pytest.raises(RuntimeError, match="2 of 3 clients"):
        AllClientsFedAvg(3).aggregate_train(1, replies[:2])


def test_dirichlet_partition_is_seeded_disjoint_and_label_skewed():
    rng = np.random.default_rng(1)
    y_train, y_test = rng.integers(0, 2, 400), rng.integers(0, 2, 200)
    a = dirichlet_partition(y_train, y_test, 4, 0.1, seed=3)
    b = dirichlet_partition(y_train, y_test, 4, 0.1, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a[0] + a[1], b[0] + b[1]))
    for parts, n in ((a[0], 400), (a[1], 200)):
        joined = np.concatenate(parts)
        assert len(joined) == n and len(np.unique(joined)) == n  # every sample in exactly one client
    skew = [abs(np.mean(y_train[t]) - np.mean(y_train)) for t in a[0]]
    assert max(skew) > 0.2  # alpha 0.1: strongly non-IID
    assert not all(np.array_equal(x, y) for x, y in zip(a[0], dirichlet_partition(y_train, y_test, 4, 0.1, seed=4)[0]))


def test_schedule_and_seeds():
    assert cosine_lr(0, 4, 2e-4, 1e-6) == pytest.approx(2e-4)
    assert cosine_lr(2, 4, 2e-4, 1e-6) == pytest.approx((2e-4 + 1e-6) / 2)
    assert derive_seed(0, "client", 1, "mednode") == derive_seed(0, "client", 1, "mednode")
    assert len({derive_seed(0, "client", r, s) for r in (1, 2) for s in SITES}) == 6


# --- the protocol through the CLI -----------------------------------------------------------------
@pytest.fixture(scope="module")
def simulation_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fl-sim")
    started = time.perf_counter()
    res = runner.invoke(app, ["run", "--model", "random-vit", "--task", "fl-malignancy", "--output", str(out), *FAST])
    assert res.exit_code == 0, res.output
    return out, time.perf_counter() - started


def _heads(out):
    (record,) = [r for r in iter_results(out) if r["protocol"] == "federated"]
    with np.load(out / "random-vit" / "fl-malignancy" / record["artifacts"][0]) as z:
        return record, {k: z[k] for k in z.files}


def test_simulation_run_stores_federated_and_baseline_results(simulation_run):
    from dermbench.protocols.federated import Federated

    out, _ = simulation_run
    record, heads = _heads(out)
    assert record["task"] == "fl-malignancy" and record["info"]["engine"] == "simulation"
    cfg = record["provenance"]["config"]["protocol"]
    assert (cfg["rounds"], cfg["local_epochs"], cfg["lr"], cfg["batch_size"]) == (2, 2, 2e-4, 32)
    assert [c["name"] for c in record["info"]["clients"]] == list(SITES)
    assert sorted(record["info"]["history"]["train"]) == ["1", "2"]

    preds = read_predictions(record["_path"])
    assert len(preds) == record["n_test"] and set(preds["site"]) == set(SITES)
    for col in ("score_1", "central_score_1", "local_score_1", "central_pred", "local_pred"):
        assert preds[col].notna().all()
    metrics = record["metrics"]
    for key in ["auroc", "f1", "auroc@centralised", "auroc@local", "auroc@federated-centralised",
                *[f"auroc@{s}" for s in SITES], *[f"auroc@centralised/{s}" for s in SITES],
                *[f"f1@local/{s}" for s in SITES]]:
        m = metrics[key]
        assert np.isfinite(m["value"]) and m["ci_low"] <= m["ci_high"], key

    # every number recomputes from the stored predictions and resamples alone
    boot = np.load(out / record["bootstrap"]["path"])
    again = Federated().evaluate(preds, boot)
    assert set(again) == set(metrics)
    for key in metrics:
        assert again[key]["value"] == pytest.approx(metrics[key]["value"], abs=1e-9, nan_ok=True), key
        assert again[key]["ci_low"] == pytest.approx(metrics[key]["ci_low"], abs=1e-9, nan_ok=True), key
    # ... bit for bit, through the path of `leaderboard --rebuild`
    from dermbench.report.leaderboard import recompute_metrics

    rebuilt = recompute_metrics(out, record)
    assert json.dumps(rebuilt, sort_keys=True) == json.dumps(metrics, sort_keys=True)
    # the heads are stored: aggregated, after each round, centralised, every local-only one
    assert heads["federated.weight"].shape[0] == 2 and "centralised.weight" in heads and "local_mednode.weight" in heads
    assert not np.array_equal(heads["federated.weight"], heads["federated_round0.weight"])  # training moved it


def test_dirichlet_clients_from_settings(tmp_path):
    # one ordinary task split into K label-skewed clients: federated on request, though not on its card.
    # Ray gets one CPU: one ClientApp actor runs the 4 clients in turn (each actor is a process that
    # imports torch and flwr, ~5 CPU-s); the simulation fixture above keeps the default (actors side by side)
    res = runner.invoke(app, ["run", "--model", "random-vit", "--task", "acne04", "--protocol", "federated",
                              "--output", str(tmp_path),
                              "--set", "federated.clients=4", "--set", "federated.dirichlet_alpha=0.3",
                              "--set", "federated.rounds=1", "--set", "federated.client_evaluate=false",
                              "--set", "federated.ray_num_cpus=1", *FAST])
    assert res.exit_code == 0, res.output
    (record,) = list(iter_results(tmp_path))
    assert (record["task"], record["protocol"]) == ("acne04", "federated") and len(record["classes"]) == 4
    assert record["info"]["partition"] == "dirichlet(alpha=0.3)"
    assert [c["name"] for c in record["info"]["clients"]] == [f"client{i}" for i in range(4)]
    assert sum(c["n_train"] for c in record["info"]["clients"]) == record["n_train"]
    assert list(record["info"]["history"]["train"]) == ["1"] and not record["info"]["history"]["evaluate"]
    assert "auroc@client3" in record["metrics"] and "auroc@local/client0" in record["metrics"]


def test_deployment_engine_gives_the_simulation_head(simulation_run, tmp_path, monkeypatch):
    """A SuperLink and three SuperNodes as processes on localhost, the Flower App run with `flwr run`.

    Federated evaluation is off here (it does not change the head, and every Flower message starts a
    ClientApp process: this halves the test's time); the simulation test covers it."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the federation's work folder, to find its processes
    out = tmp_path / "fl-deploy"
    res = runner.invoke(app, ["run", "--model", "random-vit", "--task", "fl-malignancy", "--output", str(out),
                              "--set", "federated.engine=deployment", "--set", "federated.client_evaluate=false",
                              "--set", "federated.timeout=300", *FAST])
    assert res.exit_code == 0, res.output
    record, deployed = _heads(out)
    sim_record, simulated = _heads(simulation_run[0])
    assert record["info"]["engine"] == "deployment"
    for key in simulated:  # the same seeds: the same aggregated head (and rounds, and baselines)
        np.testing.assert_allclose(deployed[key], simulated[key], rtol=0, atol=1e-6, err_msg=key)
    assert record["metrics"]["auroc"]["value"] == pytest.approx(sim_record["metrics"]["auroc"]["value"], abs=1e-6)
    assert [c["name"] for c in record["info"]["clients"]] == list(SITES)

    # every process of the federation (SuperLink, SuperNodes, their SuperExecs and app processes) is gone
    try:
        import psutil
    except ImportError:
        return

    def ours(p) -> bool:
        try:
            return p.environ().get("FLWR_HOME", "").startswith(str(tmp_path))
        except psutil.Error:
            return False

    left = [p for p in psutil.process_iter() if ours(p) and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, [p.cmdline() for p in left]
    print(json.dumps({"simulation_s": simulation_run[1], "deployment_wall_s": record["info"]["wall_time_s"],
                      "timings": record["info"].get("timings")}))


# --- a real multi-site federation: per-site export, the coordinator's app ------------------------------
def test_sites_export_their_own_clients_and_the_coordinator_checks_them(tmp_path):
    import tomllib

    from dermbench.federated.partition import read_client
    from dermbench.data.synth import ensure_dermsynth

    root = ensure_dermsynth()
    exported = {}
    for site in ("mednode", "ph2-cls"):
        out = tmp_path / site / "client.npz"
        res = runner.invoke(app, ["federated", "export-client", "--model", "random-vit", "--task", site,
                                  "--data-root", str(root), "--out", str(out), "--name", f"hospital-{site}", "--quiet"])
        assert res.exit_code == 0, res.output
        client, info = read_client(out), json.loads(out.with_suffix(".json").read_text())
        # the same split as `dermbench run` (seed 0), recorded with its hash
        split = json.loads((tmp_path / site / "_splits").glob("*.json").__next__().read_text())
        assert list(client.test_ids) == split["test"] and client.n_train == len(split["train"])
        assert client.name == f"hospital-{site}" and client.x_train.shape[1] == info["feature_dim"]
        assert info["n_test"] == client.n_test and info["split"]["sha256"] and info["weights_sha256"]
        exported[site] = out.with_suffix(".json")

    # MED-Node spells 'naevus', PH2 'nevus': the cards' class_aliases make them one federation (as in the paper)
    res = runner.invoke(app, ["federated", "app", "--out", str(tmp_path / "fl-app"), "--result-path",
                              str(tmp_path / "head.npz"), *sum((["--client", str(p)] for p in exported.values()), [])])
    assert res.exit_code == 0, res.output
    assert "['nevus', 'melanoma']" in res.output
    # ... but sites whose classes really differ (here: another order) are refused
    swapped = tmp_path / "swapped.json"
    info = json.loads(exported["ph2-cls"].read_text())
    swapped.write_text(json.dumps({**info, "classes": info["classes"][::-1]}))
    res = runner.invoke(app, ["federated", "app", "--out", str(tmp_path / "fl-app2"), "--result-path",
                              str(tmp_path / "head.npz"), "--client", str(exported["mednode"]), "--client", str(swapped)])
    assert res.exit_code != 0 and "classes" in res.output and "same backbone" in res.output

    second = tmp_path / "copy.json"
    second.write_text(exported["mednode"].read_text())
    res = runner.invoke(app, ["federated", "app", "--out", str(tmp_path / "fl-app"), "--result-path",
                              str(tmp_path / "head.npz"), "--client", str(exported["mednode"]), "--client", str(second),
                              "--rounds", "3"])
    assert res.exit_code == 0, res.output
    config = tomllib.loads((tmp_path / "fl-app" / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert config["num-clients"] == 2 and config["num-server-rounds"] == 3 and config["num-classes"] == 2
    assert config["feature-dim"] == json.loads(second.read_text())["feature_dim"]

    res = runner.invoke(app, ["federated", "export-client", "--model", "random-vit", "--task", "fl-malignancy",
                              "--data-root", str(root), "--out", str(tmp_path / "x.npz")])
    assert res.exit_code != 0 and "single-site" in res.output
    # without a data root, as for `run`: DermSynth, said so
    res = runner.invoke(app, ["federated", "export-client", "--model", "random-vit", "--task", "mednode",
                              "--out", str(tmp_path / "synth" / "client.npz"), "--quiet"])
    assert res.exit_code == 0 and "DermSynth" in res.output, res.output
    assert read_client(tmp_path / "synth" / "client.npz").n_test == json.loads(exported["mednode"].read_text())["n_test"]
