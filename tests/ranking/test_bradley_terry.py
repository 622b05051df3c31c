"""Bradley-Terry fits against independent references: scipy on the same likelihood, closed forms, simulation."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import ranking  # noqa: F401
from ranking import bradley_terry as bt
from ranking.data import A_WINS, B_WINS, TIE
from ranking.stats import PairCounts, pair_counts

ELO_ATOL = 0.01  # agreement with scipy, in Elo points, as the issue asks
ELO_PER_NAT = 400 / np.log(10)


def simulate(m, n, *, seed=0, tie_rate=0.15, spread=1.0):
    """Battles drawn from a known Bradley-Terry model, with ties at a fixed rate."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(0, spread, m)
    a = rng.integers(0, m, n)
    b = rng.integers(0, m - 1, n)
    b = b + (b >= a)
    p = 1 / (1 + np.exp(-(theta[a] - theta[b])))
    outcome = np.where(rng.random(n) < tie_rate, TIE, np.where(rng.random(n) < p, A_WINS, B_WINS))
    return theta, a, b, outcome.astype(np.int8)


def scipy_half_fit(counts: PairCounts, prior: float):
    """Independent reference: the penalised half-win likelihood written in numpy, maximised by scipy."""
    score_first = counts.first_wins + counts.ties / 2
    score_second = counts.second_wins + counts.ties / 2
    m = counts.n_models

    def negative(theta):
        d = theta[counts.first] - theta[counts.second]
        ll = -(score_first * np.logaddexp(0, -d) + score_second * np.logaddexp(0, d)).sum()
        gauge = 0.0 if prior > 0 else theta.sum() ** 2 / 2
        return -ll + prior / 2 * theta @ theta + gauge

    def gradient(theta):
        d = theta[counts.first] - theta[counts.second]
        p = 1 / (1 + np.exp(-d))
        r = score_first - (score_first + score_second) * p
        g = np.bincount(counts.first, r, m) - np.bincount(counts.second, r, m)
        gauge = 0.0 if prior > 0 else theta.sum()
        return -g + prior * theta + gauge

    result = scipy.optimize.minimize(
        negative, np.zeros(m), jac=gradient, method="L-BFGS-B", options=dict(gtol=1e-12, ftol=1e-15, maxiter=10000)
    )
    return result.x


def scipy_davidson_fit(counts: PairCounts, prior: float):
    """Independent reference: Davidson's probabilities written directly (pi_i / D), maximised by scipy."""
    m = counts.n_models

    def negative(params):
        theta, phi = params[:-1], params[-1]
        pi_i, pi_j = np.exp(theta[counts.first]), np.exp(theta[counts.second])
        tie_term = np.exp(phi) * np.sqrt(pi_i * pi_j)
        denominator = pi_i + pi_j + tie_term
        ll = (
            counts.first_wins * np.log(pi_i / denominator)
            + counts.second_wins * np.log(pi_j / denominator)
            + counts.ties * np.log(tie_term / denominator)
        ).sum()
        return -ll + prior / 2 * (theta @ theta + phi**2)

    result = scipy.optimize.minimize(negative, np.zeros(m + 1), method="BFGS", options=dict(gtol=1e-9))
    return result.x


def elo(theta):
    return 1000 + ELO_PER_NAT * (theta - theta.mean())


@pytest.mark.parametrize("prior", [0.0, bt.DEFAULT_PRIOR, 0.5])
def test_half_ties_agree_with_scipy(prior):
    _, a, b, outcome = simulate(12, 4000, seed=1)
    counts = pair_counts(a, b, outcome, 12)
    fit = bt.fit_bradley_terry(counts, prior=prior)
    reference = scipy_half_fit(counts, prior)
    np.testing.assert_allclose(fit.ratings, elo(reference), atol=ELO_ATOL)
    assert fit.converged and np.isnan(fit.tie_strength)


@pytest.mark.parametrize("prior", [0.0, bt.DEFAULT_PRIOR])
def test_davidson_agrees_with_scipy(prior):
    _, a, b, outcome = simulate(8, 3000, seed=2, tie_rate=0.3)
    counts = pair_counts(a, b, outcome, 8)
    fit = bt.fit_bradley_terry(counts, ties="davidson", prior=prior)
    reference = scipy_davidson_fit(counts, prior)
    np.testing.assert_allclose(fit.ratings, elo(reference[:-1]), atol=ELO_ATOL)
    assert fit.tie_strength == pytest.approx(np.exp(reference[-1]), rel=1e-5)


def test_log_likelihood_is_the_data_term():
    _, a, b, outcome = simulate(5, 500, seed=3)
    counts = pair_counts(a, b, outcome, 5)
    fit = bt.fit_bradley_terry(counts)
    d = fit.strengths[counts.first] - fit.strengths[counts.second]
    p = 1 / (1 + np.exp(-d))
    expected = (
        (counts.first_wins + counts.ties / 2) * np.log(p) + (counts.second_wins + counts.ties / 2) * np.log(1 - p)
    ).sum()
    assert fit.log_likelihood == pytest.approx(expected, rel=1e-12)


def test_recovers_known_strengths_from_simulated_battles():
    theta, a, b, outcome = simulate(10, 200_000, seed=4, tie_rate=0.0, spread=0.8)
    fit = bt.fit_bradley_terry(pair_counts(a, b, outcome, 10))
    # Each model plays ~40k battles: the standard error of theta is about 0.012 nats (~5 Elo points).
    np.testing.assert_allclose(fit.strengths - fit.strengths.mean(), theta - theta.mean(), atol=0.05)


def test_davidson_recovers_a_known_tie_strength():
    rng = np.random.default_rng(5)
    m, n, nu = 6, 100_000, 0.6
    theta = rng.normal(0, 0.7, m)
    a = rng.integers(0, m, n)
    b = (a + rng.integers(1, m, n)) % m
    pi_a, pi_b = np.exp(theta[a]), np.exp(theta[b])
    tie = nu * np.sqrt(pi_a * pi_b)
    u = rng.random(n) * (pi_a + pi_b + tie)
    outcome = np.where(u < pi_a, A_WINS, np.where(u < pi_a + pi_b, B_WINS, TIE)).astype(np.int8)
    fit = bt.fit_bradley_terry(pair_counts(a, b, outcome, m), ties="davidson")
    assert fit.tie_strength == pytest.approx(nu, abs=0.02)
    np.testing.assert_allclose(fit.strengths - fit.strengths.mean(), theta - theta.mean(), atol=0.05)


def test_half_ties_compress_ratings_that_davidson_does_not():
    """Independent ties shrink half-win ratings towards the middle; Davidson keeps the win/loss scale."""
    theta, a, b, outcome = simulate(8, 100_000, seed=6, tie_rate=0.4, spread=1.0)
    counts = pair_counts(a, b, outcome, 8)
    half = bt.fit_bradley_terry(counts)
    davidson = bt.fit_bradley_terry(counts, ties="davidson")
    assert np.std(half.strengths) < 0.8 * np.std(davidson.strengths)


def test_two_model_closed_form():
    # Two models: the MLE of the log-odds is log(score_a / score_b), with ties counting half.
    counts = PairCounts(np.array([0]), np.array([1]), np.array([30.0]), np.array([10.0]), np.array([4.0]), 2)
    fit = bt.fit_bradley_terry(counts, prior=0)
    gap = fit.ratings[0] - fit.ratings[1]
    assert gap == pytest.approx(ELO_PER_NAT * np.log(32 / 12), abs=1e-8)
    assert fit.ratings.mean() == pytest.approx(1000)


def test_anchor_pins_one_model():
    _, a, b, outcome = simulate(6, 2000, seed=7)
    counts = pair_counts(a, b, outcome, 6)
    free = bt.fit_bradley_terry(counts)
    pinned = bt.fit_bradley_terry(counts, anchor=3, anchor_rating=1200.0)
    assert pinned.ratings[3] == pytest.approx(1200.0)
    np.testing.assert_allclose(np.diff(pinned.ratings), np.diff(free.ratings), atol=1e-9)


def test_scale_and_base_options():
    _, a, b, outcome = simulate(5, 1000, seed=8)
    counts = pair_counts(a, b, outcome, 5)
    default = bt.fit_bradley_terry(counts)
    natural = bt.fit_bradley_terry(counts, scale=1.0, base=np.e, anchor_rating=0.0)
    np.testing.assert_allclose(natural.ratings, default.strengths - default.strengths.mean(), atol=1e-12)


def test_undefeated_and_winless_models_are_finite_and_flagged():
    _, a, b, outcome = simulate(5, 1000, seed=9)
    # model 5 beats everyone it meets; model 6 loses every battle.
    a = np.concatenate([a, np.full(20, 5), np.full(20, 6)])
    b = np.concatenate([b, np.arange(20) % 5, np.arange(20) % 5])
    outcome = np.concatenate([outcome, np.full(20, A_WINS), np.full(20, B_WINS)]).astype(np.int8)
    counts = pair_counts(a, b, outcome, 7)
    with pytest.warns(bt.RankingWarning, match="never lost or never won"):
        fit = bt.fit_bradley_terry(counts, names=[f"m{i}" for i in range(7)])
    assert np.all(np.isfinite(fit.ratings))
    assert fit.ratings[5] == max(fit.ratings) and fit.ratings[6] == min(fit.ratings)
    assert fit.unbounded_above.tolist() == [False] * 5 + [True, False]
    assert fit.unbounded_below.tolist() == [False] * 6 + [True]
    with pytest.raises(ValueError, match="does not exist"):
        bt.fit_bradley_terry(counts, prior=0)


def test_disconnected_pieces_warn_and_stay_finite():
    _, a1, b1, o1 = simulate(3, 300, seed=10)
    _, a2, b2, o2 = simulate(3, 300, seed=11)
    counts = pair_counts(np.concatenate([a1, a2 + 3]), np.concatenate([b1, b2 + 3]), np.concatenate([o1, o2]), 6)
    with pytest.warns(bt.RankingWarning, match="2 pieces"):
        fit = bt.fit_bradley_terry(counts)
    assert np.all(np.isfinite(fit.ratings))
    assert len(set(fit.component[:3])) == 1 and fit.component[0] != fit.component[3]
    # Within a piece, differences match a fit of that piece alone.
    alone = bt.fit_bradley_terry(pair_counts(a1, b1, o1, 3))
    np.testing.assert_allclose(np.diff(fit.ratings[:3]), np.diff(alone.ratings), atol=0.05)
    # Without a prior each piece is centred on its own (the gauge), and nothing is NaN.
    plain = bt.fit_bradley_terry(counts, prior=0)
    assert np.all(np.isfinite(plain.ratings))


def test_a_single_battle():
    counts = pair_counts(np.array([0]), np.array([1]), np.array([A_WINS], np.int8), 2)
    with pytest.warns(bt.RankingWarning):
        fit = bt.fit_bradley_terry(counts)
    assert fit.ratings[0] > fit.ratings[1] and np.all(np.isfinite(fit.ratings))


def test_models_without_battles_have_no_rating():
    counts = pair_counts(np.array([0, 1]), np.array([1, 0]), np.array([A_WINS, A_WINS], np.int8), 3)
    fit = bt.fit_bradley_terry(counts)
    assert np.isnan(fit.ratings[2]) and np.nanmean(fit.ratings) == pytest.approx(1000)


def test_non_convergence_raises():
    _, a, b, outcome = simulate(6, 2000, seed=12)
    with pytest.raises(RuntimeError, match="did not converge"):
        bt.fit_bradley_terry(pair_counts(a, b, outcome, 6), max_iter=1)


@pytest.mark.parametrize(
    "bad", [dict(ties="thirds"), dict(prior=-1.0), dict(scale=0.0), dict(base=1.0), dict(anchor=9)]
)
def test_invalid_options_raise(bad):
    _, a, b, outcome = simulate(4, 100, seed=13)
    with pytest.raises(ValueError):
        bt.fit_bradley_terry(pair_counts(a, b, outcome, 4), **bad)


# ---------------------------------------------------------------------------------- derivatives, jit, vmap


def _problem(davidson=False, seed=14):
    _, a, b, outcome = simulate(7, 800, seed=seed, tie_rate=0.3)
    counts = pair_counts(a, b, outcome, 7)
    component, _, _ = bt.comparison_graph(counts)
    x = jnp.asarray(np.random.default_rng(seed).normal(0, 0.5, 8))
    return bt.make_problem(counts, component), x


@pytest.mark.parametrize("davidson", [False, True])
@pytest.mark.parametrize("prior", [0.0, 0.1])
def test_gradient_and_hessian_match_autodiff_and_finite_differences(davidson, prior):
    problem, x = _problem(davidson)
    if not davidson:
        x = x.at[-1].set(0.0)
    gradient = bt.gradient(x, problem, prior, davidson)
    autodiff = jax.grad(bt._objective)(x, problem, prior, davidson)
    size = 7 if not davidson else 8
    np.testing.assert_allclose(gradient[:size], autodiff[:size], rtol=1e-10, atol=1e-9)
    step = 1e-6
    for i in range(size):
        e = jnp.zeros(8).at[i].set(step)
        numeric = (bt._objective(x + e, problem, prior, davidson) - bt._objective(x - e, problem, prior, davidson)) / (
            2 * step
        )
        assert float(gradient[i]) == pytest.approx(float(numeric), rel=1e-5, abs=1e-5)
    hessian = bt._negative_hessian(x, problem, prior, davidson)
    autodiff_hessian = -jax.hessian(bt._objective)(x, problem, prior, davidson)
    np.testing.assert_allclose(hessian[:size, :size], autodiff_hessian[:size, :size], rtol=1e-9, atol=1e-8)


def test_jit_plain_and_vmap_agree():
    problem, x = _problem()
    x = x.at[-1].set(0.0)
    jitted = jax.jit(bt.gradient, static_argnums=3)(x, problem, 0.1, False)
    with jax.disable_jit():
        plain = bt.gradient(x, problem, 0.1, False)
    np.testing.assert_allclose(jitted, plain, rtol=1e-12, atol=1e-12)
    xs = jnp.stack([x, 2 * x])
    batched = jax.vmap(lambda v: bt.gradient(v, problem, 0.1, False))(xs)
    np.testing.assert_allclose(batched[1], bt.gradient(2 * x, problem, 0.1, False), rtol=1e-12, atol=1e-12)
    # The Newton solver runs on a batch: two copies of one problem give the same fit, bit for bit, as the
    # problem alone, and the compiled evaluation agrees with plain (unjitted) JAX.
    pair = jax.tree.map(lambda a: jnp.stack([a, a]), problem)
    alone = jax.tree.map(lambda a: a[None], problem)
    fits = bt.newton(np.zeros((2, 8)), pair, 0.1, 1e-10, davidson=False, max_iter=50)
    single = bt.newton(np.zeros((1, 8)), alone, 0.1, 1e-10, davidson=False, max_iter=50)
    assert fits[2].all() and single[2].all()
    np.testing.assert_array_equal(fits[0][0], fits[0][1])
    np.testing.assert_array_equal(fits[0][0], single[0][0])
    with jax.disable_jit():
        unjitted = bt.newton(np.zeros((1, 8)), alone, 0.1, 1e-10, davidson=False, max_iter=50)[0]
    np.testing.assert_allclose(single[0], unjitted, atol=1e-9)


def test_fit_does_not_depend_on_threadpoolctl(monkeypatch):
    """threadpoolctl only pins LAPACK to one thread for speed: without it the fit is the same."""
    _, a, b, outcome = simulate(9, 3000, seed=23)
    counts = pair_counts(a, b, outcome, 9)
    pinned = bt.fit_bradley_terry(counts)
    monkeypatch.setattr(bt, "threadpool_limits", None)
    free = bt.fit_bradley_terry(counts)
    np.testing.assert_allclose(free.ratings, pinned.ratings, atol=1e-9)
    assert free.iterations == pinned.iterations


def test_dense_counts_hold_each_pair_once_per_side():
    _, a, b, outcome = simulate(6, 500, seed=19, tie_rate=0.3)
    counts = pair_counts(a, b, outcome, 6)
    wins, ties = bt.dense_counts(counts)
    expected_wins = np.zeros((6, 6))
    expected_ties = np.zeros((6, 6))
    for i, j, o in zip(a, b, outcome):
        if o == A_WINS:
            expected_wins[i, j] += 1
        elif o == B_WINS:
            expected_wins[j, i] += 1
        else:
            expected_ties[i, j] += 1
            expected_ties[j, i] += 1
    np.testing.assert_array_equal(wins, expected_wins)
    np.testing.assert_array_equal(ties, expected_ties)


def test_fits_over_the_same_models_reuse_compiled_code():
    """The compiled evaluation depends on the number of models only, not on how many pairs have battles."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bt.RankingWarning)
        before = bt._evaluate_batch._cache_size()
        for seed, n in ((20, 400), (21, 3000), (22, 30)):
            _, a, b, outcome = simulate(9, n, seed=seed)
            bt.fit_bradley_terry(pair_counts(a, b, outcome, 9))
        assert bt._evaluate_batch._cache_size() - before <= 1


@pytest.mark.parametrize("ties", ["half", "davidson"])
def test_batched_category_fits_equal_separate_fits(ties):
    rng = np.random.default_rng(40)
    _, a, b, outcome = simulate(9, 6000, seed=41, tie_rate=0.25)
    category = rng.integers(0, 3, a.size)
    category[(a == 8) | (b == 8)] = 0  # model 8 plays in category 0 only
    per_category = [pair_counts(a[category == c], b[category == c], outcome[category == c], 9) for c in range(3)]
    batched = bt.fit_categories(per_category, ties=ties)
    for counts, fit in zip(per_category, batched):
        alone = bt.fit_bradley_terry(counts, ties=ties)
        np.testing.assert_allclose(fit.ratings, alone.ratings, atol=1e-8, equal_nan=True)
    assert np.isnan(batched[1].ratings[8]) and np.isfinite(batched[0].ratings[8])
