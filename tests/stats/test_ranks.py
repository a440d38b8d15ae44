"""Ranks with bootstrap intervals; Friedman against SciPy, Nemenyi's q against Demšar's table."""
import numpy as np
import pytest
from scipy import stats as sps

from dermbench.stats import ranks as R


def test_friedman_matches_scipy_with_and_without_ties():
    rng = np.random.default_rng(0)
    values = rng.random((4, 7))
    values[1, 2] = values[2, 2]  # a tie
    ours = R.friedman_nemenyi(values)
    ref = sps.friedmanchisquare(*values)
    assert ours["chi2"] == pytest.approx(ref.statistic) and ours["p"] == pytest.approx(ref.pvalue)
    assert "3 models" in R.friedman_nemenyi(values[:2])["note"]


def test_nemenyi_q_alpha_matches_demsar_table():
    # Demšar (2006), Table 5(a): q_0.05 for k = 3, 4, 5 classifiers
    for k, q in ((3, 2.343), (4, 2.569), (5, 2.728)):
        res = R.friedman_nemenyi(np.random.default_rng(k).random((k, 10)))
        assert res["q_alpha"] == pytest.approx(q, abs=1e-3)
        assert res["cd"] == pytest.approx(q * np.sqrt(k * (k + 1) / 60), rel=1e-3)


def test_mean_rank_borda_and_intervals():
    models, tasks = ["a", "b", "c"], ["t1", "t2", "t3"]
    points = {"t1": np.array([0.9, 0.8, 0.7]), "t2": np.array([0.9, 0.7, 0.8]), "t3": np.array([0.6, 0.6, 0.5])}
    rng = np.random.default_rng(1)
    reps = {t: points[t][:, None] + rng.normal(0, 0.01, (3, 200)) for t in tasks}
    res = R.rank_models(models, tasks, points, reps)
    assert res.mean_rank == pytest.approx([(1 + 1 + 1.5) / 3, (2 + 3 + 1.5) / 3, (3 + 2 + 3) / 3])
    assert res.borda == pytest.approx([2 + 2 + 1.5, 1 + 0 + 1.5, 0 + 1 + 0])
    assert res.position == pytest.approx([1, 2, 3])
    lo, hi = res.intervals["mean_rank"][0]
    assert lo <= res.mean_rank[0] <= hi
    # a and c are far apart on every replicate: distinguishable; b and c swap on t2/t3 noise less so
    pair = next(p for p in res.pairs if (p["a"], p["b"]) == ("a", "c"))
    assert pair["distinguishable"] and pair["p_holm"] >= pair["p"]


def test_indistinguishable_models_get_wide_intervals():
    points = {"t": np.array([0.80, 0.79])}
    rng = np.random.default_rng(2)
    base = rng.normal(0.8, 0.05, 300)
    reps = {"t": np.stack([base + rng.normal(0, 0.02, 300), base + rng.normal(-0.01, 0.02, 300)])}
    res = R.rank_models(["a", "b"], ["t"], points, reps)
    assert tuple(res.intervals["position"][0]) == (1.0, 2.0)
    assert not res.pairs[0]["distinguishable"]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="at least 2 models"):
        R.rank_models(["a"], ["t"], {"t": np.array([1.0])}, {"t": np.ones((1, 5))})
    with pytest.raises(ValueError, match="same --n-boot"):
        R.rank_models(["a", "b"], ["t", "u"], {"t": np.ones(2), "u": np.ones(2)}, {"t": np.ones((2, 5)), "u": np.ones((2, 6))})
