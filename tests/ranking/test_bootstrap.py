"""Bootstrap and asymptotic intervals against brute-force references."""
import numpy as np
import pytest
from scipy import stats

import ranking  # noqa: F401
from ranking import bootstrap as bs
from ranking import bradley_terry as bt
from ranking.data import A_WINS, B_WINS
from ranking.stats import pair_counts
from tests.ranking.test_bradley_terry import simulate

# Monte-Carlo tolerance for comparing two independent 1,000-replicate percentile intervals: the 2.5 % and
# 97.5 % quantiles each have a relative Monte-Carlo error of roughly 5-8 % of the interval's half-width.
INTERVAL_RTOL = 0.15


@pytest.mark.parametrize("mean", [0.4, 3.0, 17.0, 250.0, 4000.0])
def test_poisson_sampler_matches_the_poisson_distribution(mean):
    sampler = bs.PoissonSampler(np.full(50_000, mean))
    draws = sampler.draw(np.random.default_rng(1))
    values, observed = np.unique(draws, return_counts=True)
    # Pool the tails so every expected count is at least 20, then a chi-square goodness-of-fit test.
    edges = np.arange(values.min(), values.max() + 2)
    expected = np.diff(stats.poisson.cdf(edges - 1, mean)) * draws.size
    expected[0] += stats.poisson.cdf(values.min() - 1, mean) * draws.size
    expected[-1] += stats.poisson.sf(values.max(), mean) * draws.size
    observed_full = np.zeros(edges.size - 1)
    observed_full[values - values.min()] = observed
    keep = expected >= 20
    o = np.append(observed_full[keep], observed_full[~keep].sum())
    e = np.append(expected[keep], expected[~keep].sum())
    if e[-1] == 0:
        o, e = o[:-1], e[:-1]
    e *= o.sum() / e.sum()
    assert stats.chisquare(o, e).pvalue > 1e-4
    assert draws.mean() == pytest.approx(mean, rel=5 * np.sqrt(mean / draws.size) / mean + 1e-12)


def test_poisson_sampler_mixed_means_keep_their_order():
    means = np.array([0.0, 1.0, 50.0, 0.0, 1000.0] * 2000)
    draws = np.stack([bs.PoissonSampler(means).draw(np.random.default_rng(s)) for s in range(20)])
    assert np.all(draws[:, means == 0] == 0)
    for value in (1.0, 50.0, 1000.0):
        assert draws[:, means == value].mean() == pytest.approx(value, rel=0.02)
        assert draws[:, means == value].var() == pytest.approx(value, rel=0.1)


def _row_bootstrap(a, b, outcome, m, replicates, seed):
    """Brute force: resample battles with replacement and refit each replicate."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(replicates):
        rows = rng.integers(0, a.size, a.size)
        fit = bt.fit_bradley_terry(pair_counts(a[rows], b[rows], outcome[rows], m), warn=False)
        samples.append(fit.ratings)
    return np.quantile(np.array(samples), [0.025, 0.975], axis=0)


def test_poisson_cell_bootstrap_agrees_with_a_brute_force_row_bootstrap():
    _, a, b, outcome = simulate(6, 1500, seed=30, tie_rate=0.2)
    counts = pair_counts(a, b, outcome, 6)
    ours = bs.bootstrap_ratings(counts, replicates=1000, seed=3)
    low, high = _row_bootstrap(a, b, outcome, 6, 1000, seed=4)
    width = high - low
    np.testing.assert_allclose(ours.low, low, atol=INTERVAL_RTOL * width.mean())
    np.testing.assert_allclose(ours.high, high, atol=INTERVAL_RTOL * width.mean())
    np.testing.assert_allclose(ours.high - ours.low, width, rtol=INTERVAL_RTOL)


def test_newton_chord_and_damped_refits_agree(monkeypatch):
    _, a, b, outcome = simulate(8, 3000, seed=31)
    counts = pair_counts(a, b, outcome, 8)
    newton = bs.bootstrap_ratings(counts, replicates=40, seed=5)
    assert newton.refits == 0
    monkeypatch.setattr(bs, "NEWTON_MAX_MODELS", 0)  # chord steps on one factorization instead
    chord = bs.bootstrap_ratings(counts, replicates=40, seed=5)
    assert chord.refits == 0
    monkeypatch.setattr(bs, "CHORD_MAX_ITER", 1)  # every replicate falls back to the damped Newton solver
    damped = bs.bootstrap_ratings(counts, replicates=40, seed=5)
    assert damped.refits == 40
    np.testing.assert_allclose(chord.samples, newton.samples, atol=1e-5)
    np.testing.assert_allclose(damped.samples, newton.samples, atol=1e-5)


def test_each_replicate_is_a_full_refit_of_its_resampled_counts():
    _, a, b, outcome = simulate(5, 800, seed=32, tie_rate=0.25)
    counts = pair_counts(a, b, outcome, 5)
    result = bs.bootstrap_ratings(counts, replicates=3, seed=9)
    k = counts.first.size
    sampler = bs.PoissonSampler(np.concatenate([counts.first_wins, counts.second_wins, counts.ties]))
    for r in range(3):
        drawn = sampler.draw(bs.replicate_generator(9, r))
        replicate = counts._replace(first_wins=drawn[:k].astype(float), second_wins=drawn[k:2 * k].astype(float),
                                    ties=drawn[2 * k:].astype(float))
        refit = bt.fit_bradley_terry(replicate, warn=False)
        np.testing.assert_allclose(result.samples[r], refit.ratings, atol=1e-6)


def test_same_seed_same_intervals_bit_for_bit_whatever_the_batch():
    _, a, b, outcome = simulate(7, 2000, seed=33)
    counts = pair_counts(a, b, outcome, 7)
    first = bs.bootstrap_ratings(counts, replicates=50, seed=11)
    again = bs.bootstrap_ratings(counts, replicates=50, seed=11)
    np.testing.assert_array_equal(first.samples, again.samples)
    np.testing.assert_array_equal(first.low, again.low)
    rebatched = bs.bootstrap_ratings(counts, replicates=50, seed=11, batch_size=7)
    np.testing.assert_allclose(rebatched.samples, first.samples, atol=1e-7)
    other = bs.bootstrap_ratings(counts, replicates=50, seed=12)
    assert not np.allclose(other.samples, first.samples)


def test_davidson_bootstrap_runs_and_covers_the_fit():
    _, a, b, outcome = simulate(6, 3000, seed=34, tie_rate=0.3)
    counts = pair_counts(a, b, outcome, 6)
    result = bs.bootstrap_ratings(counts, replicates=200, seed=1, ties="davidson")
    assert np.all(result.low < result.fit.ratings) and np.all(result.fit.ratings < result.high)


def test_sandwich_and_bootstrap_intervals_agree_fisher_is_wider_with_ties():
    _, a, b, outcome = simulate(10, 20_000, seed=35, tie_rate=0.3)
    counts = pair_counts(a, b, outcome, 10)
    boot = bs.bootstrap_ratings(counts, replicates=1000, seed=2)
    sandwich = bs.sandwich_intervals(counts, boot.fit)
    fisher = bs.sandwich_intervals(counts, boot.fit, robust=False)
    boot_width = boot.high - boot.low
    np.testing.assert_allclose(sandwich.high - sandwich.low, boot_width, rtol=0.1)
    # Half-win ties have less variance than the binomial model assumes, so Fisher intervals are too wide.
    assert np.all(fisher.high - fisher.low > sandwich.high - sandwich.low)


def test_undefeated_model_gets_an_open_interval():
    _, a, b, outcome = simulate(4, 800, seed=36)
    a = np.concatenate([a, np.full(15, 4)])
    b = np.concatenate([b, np.arange(15) % 4])
    outcome = np.concatenate([outcome, np.full(15, A_WINS)]).astype(np.int8)
    counts = pair_counts(a, b, outcome, 5)
    with pytest.warns(bt.RankingWarning):
        result = bs.bootstrap_ratings(counts, replicates=50, seed=0)
    assert result.high[4] == np.inf and np.isfinite(result.low[4])
    assert np.all(np.isfinite(result.low[:4])) and np.all(np.isfinite(result.high[:4]))
    assert bs.rank_upper_bound(result.low, result.high)[4] == 1


def test_anchor_carries_into_the_samples():
    _, a, b, outcome = simulate(5, 1500, seed=37)
    counts = pair_counts(a, b, outcome, 5)
    result = bs.bootstrap_ratings(counts, replicates=30, seed=0, anchor=2, anchor_rating=1500.0)
    np.testing.assert_allclose(result.samples[:, 2], 1500.0)
    assert result.low[2] == pytest.approx(1500.0) and result.high[2] == pytest.approx(1500.0)


def test_rank_upper_bound_matches_a_loop():
    rng = np.random.default_rng(38)
    low = rng.normal(1000, 50, 30)
    high = low + rng.uniform(5, 80, 30)
    expected = [1 + sum(low[j] > high[i] for j in range(30)) for i in range(30)]
    assert bs.rank_upper_bound(low, high).tolist() == expected


@pytest.mark.parametrize("bad", [dict(replicates=1), dict(confidence=1.0), dict(seed=-1)])
def test_invalid_bootstrap_options(bad):
    counts = pair_counts(np.array([0, 1]), np.array([1, 0]), np.array([A_WINS, B_WINS], np.int8), 2)
    with pytest.raises(ValueError):
        bs.bootstrap_ratings(counts, **bad)


def test_weighted_counts_are_refused():
    counts = pair_counts(np.array([0, 1]), np.array([1, 0]), np.array([A_WINS, B_WINS], np.int8), 2,
                         weights=np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="whole numbers"):
        bs.bootstrap_ratings(counts, replicates=10)
