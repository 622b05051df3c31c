"""Bootstrap and asymptotic intervals against brute-force references."""

import numpy as np
import pytest
from scipy import stats

import ranking  # noqa: F401
from ranking import bootstrap as bs
from ranking import bradley_terry as bt
from ranking.data import A_WINS, B_WINS
from ranking.stats import PairCounts, pair_counts
from tests.ranking.test_bradley_terry import simulate

# Monte-Carlo tolerance for comparing two independent 1,000-replicate percentile intervals: the 2.5 % and
# 97.5 % quantiles each have a relative Monte-Carlo error of roughly 5-8 % of the interval's half-width.
INTERVAL_RTOL = 0.15


def _draws(cells, replicate, seed=1):
    """Draws of the compiled sampler for the non-zero cells of `cells` in one replicate."""
    tables = bs._poisson_tables(np.asarray(cells, np.float64))
    return np.asarray(bs._draw_one(tables, np.uint64(bs._seed_key(seed)), np.int64(replicate)))


@pytest.mark.parametrize("mean", [1, 3, 17, 250, 4000])
def test_poisson_draws_match_the_poisson_distribution(mean):
    draws = np.concatenate([_draws(np.full(25_000, mean), r) for r in range(2)])
    values, observed = np.unique(draws, return_counts=True)
    assert np.all(draws == np.round(draws)) and draws.min() >= 0
    # Pool the tails so every expected count is at least 20, then a chi-square goodness-of-fit test.
    edges = np.arange(values.min(), values.max() + 2)
    expected = np.diff(stats.poisson.cdf(edges - 1, mean)) * draws.size
    expected[0] += stats.poisson.cdf(values.min() - 1, mean) * draws.size
    expected[-1] += stats.poisson.sf(values.max(), mean) * draws.size
    observed_full = np.zeros(edges.size - 1)
    observed_full[(values - values.min()).astype(int)] = observed
    keep = expected >= 20
    o = np.append(observed_full[keep], observed_full[~keep].sum())
    e = np.append(expected[keep], expected[~keep].sum())
    if e[-1] == 0:
        o, e = o[:-1], e[:-1]
    e *= o.sum() / e.sum()
    assert stats.chisquare(o, e).pvalue > 1e-4
    assert draws.mean() == pytest.approx(mean, rel=5 * np.sqrt(mean / draws.size) / mean)
    assert draws.var() == pytest.approx(mean, rel=0.05)


def test_alias_tables_reproduce_their_distributions_exactly():
    rng = np.random.default_rng(0)
    pmfs = [stats.poisson.pmf(np.arange(0, 60), 7.0), np.array([1.0]), np.array([0.5, 0.5]), np.array([0.0, 1.0, 0.0])]
    pmfs += [rng.exponential(size=rng.integers(1, 300)) ** rng.uniform(0.2, 6) for _ in range(50)]
    pmfs = [p / p.sum() for p in pmfs]
    threshold, alias = bs.alias_tables(pmfs)
    start = 0
    for pmf in pmfs:
        w = pmf.size
        t, a = threshold[start : start + w], alias[start : start + w].astype(int)
        start += w
        # outcome k: its own cell's kept share plus every cell that aliases to it, each cell 1/w
        implied = t / w
        np.add.at(implied, a, (1 - t) / w)
        np.testing.assert_allclose(implied, pmf, atol=1e-12)
        assert np.all((0 <= t) & (t <= 1)) and np.all((0 <= a) & (a < w))


def test_draws_are_independent_across_cells_replicates_and_seeds():
    cells = np.full(20_000, 30.0)
    first, second, other_seed = _draws(cells, 0), _draws(cells, 1), _draws(cells, 0, seed=2)
    limit = 4 / np.sqrt(cells.size)  # four standard errors of a correlation of independent draws
    assert abs(np.corrcoef(first, second)[0, 1]) < limit
    assert abs(np.corrcoef(first, other_seed)[0, 1]) < limit
    assert abs(np.corrcoef(first[:-1], first[1:])[0, 1]) < limit
    np.testing.assert_array_equal(first, _draws(cells, 0))


def test_replicate_counts_keep_zero_cells_and_each_cell_its_mean():
    counts = PairCounts(
        np.array([0, 0, 1]),
        np.array([1, 2, 2]),
        np.array([0.0, 40.0, 900.0]),
        np.array([5.0, 0.0, 2.0]),
        np.array([0.0, 0.0, 7.0]),
        3,
    )
    drawn = [bs.replicate_counts(counts, r, seed=4) for r in range(400)]
    for field in ("first_wins", "second_wins", "ties"):
        values = np.stack([getattr(d, field) for d in drawn])
        mean = getattr(counts, field)
        assert np.all(values[:, mean == 0] == 0)
        assert np.all(np.abs(values.mean(axis=0) - mean) <= 4 * np.sqrt(mean / 400)), (field, values.mean(axis=0))
    assert drawn[0].first.tolist() == [0, 0, 1] and drawn[0].n_models == 3


def _numpy_half_fit(a, b, outcome, m, prior=bt.DEFAULT_PRIOR):
    """Independent reference: plain Newton on the penalised half-win likelihood, in numpy (Elo, mean 1000)."""
    scores = np.zeros((m, m))
    np.add.at(scores, (a, b), np.where(outcome == A_WINS, 1.0, np.where(outcome == B_WINS, 0.0, 0.5)))
    np.add.at(scores, (b, a), np.where(outcome == B_WINS, 1.0, np.where(outcome == A_WINS, 0.0, 0.5)))
    battles = scores + scores.T
    theta = np.zeros(m)
    for _ in range(100):
        p = 1 / (1 + np.exp(theta[None, :] - theta[:, None]))
        gradient = (scores - battles * p).sum(axis=1) - prior * theta
        weight = battles * p * (1 - p)
        step = np.linalg.solve(np.diag(weight.sum(axis=1) + prior) - weight, gradient)
        theta += step
        if np.abs(step).max() < 1e-9:
            return 1000 + 400 / np.log(10) * (theta - theta.mean())
    raise AssertionError("the reference Newton did not converge")


def _row_bootstrap(a, b, outcome, m, replicates, seed):
    """Brute force: resample battles with replacement and refit each replicate."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(replicates):
        rows = rng.integers(0, a.size, a.size)
        samples.append(_numpy_half_fit(a[rows], b[rows], outcome[rows], m))
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


@pytest.mark.parametrize(
    "ties, prior, coarse",
    [
        ("half", bt.DEFAULT_PRIOR, False),
        ("half", bt.DEFAULT_PRIOR, True),
        ("half", 0.0, True),
        ("davidson", bt.DEFAULT_PRIOR, False),
        ("davidson", 0.0, False),
    ],
)
def test_chord_and_damped_newton_refits_agree(monkeypatch, ties, prior, coarse):
    _, a, b, outcome = simulate(8, 3000, seed=31, tie_rate=0.2)
    counts = pair_counts(a, b, outcome, 8)
    # `coarse`: the float32 first steps, which the library itself uses from COARSE_MIN_MODELS models on
    monkeypatch.setattr(bs, "COARSE_MIN_MODELS", 0 if coarse else 10**9)
    chord = bs.bootstrap_ratings(counts, replicates=40, seed=5, ties=ties, prior=prior)
    assert chord.refits == 0
    monkeypatch.setattr(bs, "CHORD_MAX_ITER", 1)  # every replicate falls back to the damped Newton solver
    damped = bs.bootstrap_ratings(counts, replicates=40, seed=5, ties=ties, prior=prior)
    assert damped.refits == 40
    np.testing.assert_allclose(chord.samples, damped.samples, atol=1e-6)


def test_pieces_and_models_without_battles_refit_like_the_damped_solver(monkeypatch):
    """Two pieces that never met and a model with no battles: each piece keeps its own zero-sum gauge."""
    _, a1, b1, o1 = simulate(4, 1500, seed=40)
    _, a2, b2, o2 = simulate(3, 1500, seed=41)
    a, b = np.concatenate([a1, a2 + 4]), np.concatenate([b1, b2 + 4])
    counts = pair_counts(a, b, np.concatenate([o1, o2]), 8)  # model 7 never plays
    with pytest.warns(bt.RankingWarning):
        chord = bs.bootstrap_ratings(counts, replicates=30, seed=2)
    assert chord.refits == 0
    assert np.all(np.isnan(chord.samples[:, 7])) and np.all(np.isfinite(chord.samples[:, :7]))
    monkeypatch.setattr(bs, "CHORD_MAX_ITER", 1)
    with pytest.warns(bt.RankingWarning):
        damped = bs.bootstrap_ratings(counts, replicates=30, seed=2)
    np.testing.assert_allclose(chord.samples, damped.samples, atol=1e-6)


def test_each_replicate_is_a_full_refit_of_its_resampled_counts():
    _, a, b, outcome = simulate(5, 800, seed=32, tie_rate=0.25)
    counts = pair_counts(a, b, outcome, 5)
    result = bs.bootstrap_ratings(counts, replicates=3, seed=9)
    for r in range(3):
        refit = bt.fit_bradley_terry(bs.replicate_counts(counts, r, seed=9), warn=False)
        np.testing.assert_allclose(result.samples[r], refit.ratings, atol=1e-6)


def test_half_win_gradient_of_the_refit_equals_the_fits_gradient():
    """The refit's division form of the gradient (e_i / (e_i + e_j)) against the fit's own derivatives."""
    _, a, b, outcome = simulate(9, 2000, seed=39, tie_rate=0.3)
    counts = pair_counts(a, b, outcome, 9)
    problem = bt.make_problem(counts, np.zeros(9, np.int32))
    theta = np.random.default_rng(1).normal(0, 2, 9)
    scored = problem.wins + problem.ties / 2
    for prior, same_component in ((0.1, None), (0.0, np.ones((9, 9)))):
        ours = bs._half_gradient(theta, scored.sum(axis=1), scored + scored.T, same_component, prior)
        reference = bt.gradient(np.append(theta, 0.0), problem, prior, False)[:9]
        np.testing.assert_allclose(ours, reference, rtol=1e-10, atol=1e-9)


def test_same_seed_same_samples_bit_for_bit_whatever_the_batch_or_threads(monkeypatch):
    _, a, b, outcome = simulate(7, 2000, seed=33)
    counts = pair_counts(a, b, outcome, 7)
    monkeypatch.setattr(bs, "COARSE_MIN_MODELS", 0)  # every kind of step, float32 ones included
    first = bs.bootstrap_ratings(counts, replicates=50, seed=11)
    for batch_size, threads in ((None, 1), (7, 2), (1, 3), (64, 2)):
        monkeypatch.setattr(bs, "THREADS", threads)
        again = bs.bootstrap_ratings(counts, replicates=50, seed=11, batch_size=batch_size)
        np.testing.assert_array_equal(again.samples, first.samples)
        np.testing.assert_array_equal(again.low, first.low)
        np.testing.assert_array_equal(again.high, first.high)
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


@pytest.mark.parametrize(
    "bad",
    [
        dict(replicates=1),
        dict(confidence=1.0),
        dict(seed=-1),
        dict(seed=2**64),
        dict(seed=1.5),
        dict(batch_size=0),
        dict(ties="thirds"),
        dict(prior=-1.0),
    ],
)
def test_invalid_bootstrap_options(bad):
    counts = pair_counts(np.array([0, 1]), np.array([1, 0]), np.array([A_WINS, B_WINS], np.int8), 2)
    with pytest.raises(ValueError):
        bs.bootstrap_ratings(counts, **bad)


def test_weighted_cells_are_drawn_as_poisson_of_their_weighted_count():
    """A down-weighted cell is redrawn as Poisson(weighted count): mean and variance both that count."""
    rng = np.random.default_rng(3)
    a = rng.integers(0, 3, 400)
    b = (a + 1 + rng.integers(0, 2, 400)) % 3
    counts = pair_counts(
        a, b, rng.choice([A_WINS, B_WINS], 400).astype(np.int8), 3, weights=rng.choice([0.25, 1 / 3, 1.0], 400)
    )
    draws = np.array([bs._cells(bs.replicate_counts(counts, r, seed=5)) for r in range(2000)])
    cells = bs._cells(counts)
    assert np.all(draws == np.round(draws))
    drawn = cells > 0
    se = np.sqrt(cells[drawn] / len(draws))
    assert np.all(draws[:, ~drawn] == 0)
    assert np.all(np.abs(draws[:, drawn].mean(axis=0) - cells[drawn]) < 5 * se)
    assert np.all(np.abs(draws[:, drawn].var(axis=0) / cells[drawn] - 1) < 0.15)
    result = bs.bootstrap_ratings(counts, replicates=50, seed=1)
    assert np.all(np.isfinite(result.low)) and np.all(result.low < result.fit.ratings)
