"""ranking.correlation against SciPy and a brute-force bootstrap loop (tolerance 1e-12: the same arithmetic,
summed in a different order)."""

import math

import numpy as np
import pytest
import scipy.stats

from ranking.correlation import average_ranks, correlation_bootstrap, pearson, spearman

ATOL = 1e-12


def _ties(rng, n):
    return np.round(rng.normal(size=n), 1)  # rounded: ties, which Spearman's average ranks must handle


def test_pearson_and_spearman_match_scipy():
    rng = np.random.default_rng(1)
    for n in (3, 4, 10, 57):
        x, y = rng.normal(size=n) * 100 + 1000, _ties(rng, n)
        assert pearson(x, y) == pytest.approx(scipy.stats.pearsonr(x, y).statistic, abs=ATOL)
        assert spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y).statistic, abs=ATOL)
    # many replicates at once, as the bootstrap computes them: row by row equal to scipy's one-at-a-time
    xs, ys = rng.normal(size=(40, 9)), np.round(rng.normal(size=(40, 9)), 1)
    rows = [scipy.stats.spearmanr(a, b).statistic for a, b in zip(xs, ys)]
    assert spearman(xs, ys) == pytest.approx(rows, abs=ATOL)


def test_ties_get_the_average_of_their_ranks():
    assert average_ranks([10.0, 20.0, 20.0, 30.0]).tolist() == [1.0, 2.5, 2.5, 4.0]
    assert average_ranks([[2.0, 2.0, 2.0], [3.0, 1.0, 2.0]]).tolist() == [[2.0, 2.0, 2.0], [3.0, 1.0, 2.0]]


def test_a_constant_input_has_no_correlation():
    assert math.isnan(pearson([1.0, 2.0, 3.0], [0.1, 0.1, 0.1]))
    assert math.isnan(spearman([5.0, 5.0, 5.0], [1.0, 2.0, 3.0]))
    result = correlation_bootstrap([1.0, 2.0, 3.0, 4.0], [7.0, 7.0, 7.0, 7.0], replicates=50)
    assert result.pearson is None and result.spearman is None
    assert result.pearson_low is None and result.replicates_used == 0


def test_fewer_than_three_models_give_no_correlation():
    assert correlation_bootstrap([1.0, 2.0], [3.0, 4.0]) == (2, None, None, None, None, None, None, 0)
    with pytest.raises(ValueError, match="one length"):
        correlation_bootstrap([1.0, 2.0, 3.0], [1.0, 2.0])


def test_the_bootstrap_interval_matches_a_brute_force_loop():
    rng = np.random.default_rng(2)
    n, replicates, seed = 12, 300, 7
    x, y = rng.normal(size=n) * 80 + 1000, _ties(rng, n)
    result = correlation_bootstrap(x, y, replicates=replicates, seed=seed)

    draws = np.random.default_rng(seed)
    pearsons, spearmans = [], []
    for _ in range(replicates):
        i = draws.integers(0, n, n)
        if np.ptp(x[i]) == 0 or np.ptp(y[i]) == 0:
            continue  # the correlation of a constant sample is undefined: left out
        pearsons.append(scipy.stats.pearsonr(x[i], y[i]).statistic)
        spearmans.append(scipy.stats.spearmanr(x[i], y[i]).statistic)
    assert result.replicates_used == len(pearsons)
    assert result.pearson_low == pytest.approx(np.percentile(pearsons, 2.5), abs=ATOL)
    assert result.pearson_high == pytest.approx(np.percentile(pearsons, 97.5), abs=ATOL)
    assert result.spearman_low == pytest.approx(np.percentile(spearmans, 2.5), abs=ATOL)
    assert result.spearman_high == pytest.approx(np.percentile(spearmans, 97.5), abs=ATOL)
    assert result.spearman == pytest.approx(scipy.stats.spearmanr(x, y).statistic, abs=ATOL)
    assert result.pearson == pytest.approx(scipy.stats.pearsonr(x, y).statistic, abs=ATOL)


def test_importing_it_loads_no_jax():
    import subprocess
    import sys

    code = "import sys, ranking.correlation; sys.exit('jax' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
