"""Style-controlled Bradley-Terry against scipy fits of the same likelihood written here, and synthetic truth."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import expit, log_expit

import ranking  # noqa: F401
from ranking import style
from ranking.data import A_WINS, B_WINS, STYLE_FEATURES, TIE, TIE_BOTHBAD
from ranking.style import (
    StyleBootstrap,
    StyleFit,
    bootstrap_style_controlled,
    fit_style_controlled,
    poisson_weights,
    sandwich_style_intervals,
    style_covariates,
)

ELO_PER_NAT = 400 / math.log(10)
RATING_ATOL = 0.01  # Elo points, against an independent scipy optimum
COEF_ATOL = 1e-4  # nats of log-odds per standard deviation
GRAD_RTOL = 1e-10  # analytic vs autodiff derivatives (same float64 arithmetic, different order)
FD_RTOL = 1e-6  # analytic gradient vs central finite differences
EXACT = 1e-9  # two routes to the same optimum (tol = 1e-10 nats per step)


# ------------------------------------------------------------------------------------------- helpers


def random_rows(seed, n, m, p, *, ties=0.2, beta=None, spread=1.0):
    """Battles drawn from the style model itself (with some ties mixed in)."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(0, spread, m)
    beta = rng.normal(0, 0.5, p) if beta is None else np.asarray(beta, float)
    a = rng.integers(0, m, n)
    b = (a + rng.integers(1, m, n)) % m
    z = rng.normal(size=(n, p))
    win = rng.random(n) < expit(theta[a] - theta[b] + z @ beta)
    outcome = np.where(win, A_WINS, B_WINS)
    tie = rng.random(n) < ties
    outcome[tie] = rng.choice([TIE, TIE_BOTHBAD], tie.sum())
    return a.astype(np.int32), b.astype(np.int32), outcome.astype(np.int8), z, theta, beta


def targets(outcome):
    return np.select([outcome == A_WINS, outcome == B_WINS], [1.0, 0.0], 0.5)


def penalised_nll(params, a, b, y, w, z, m, prior):
    """Minus sum w [y log p + (1 - y) log(1 - p)] + prior/2 ||theta||^2 and its gradient, in numpy."""
    theta, beta = params[:m], params[m:]
    eta = theta[a] - theta[b] + z @ beta
    loglik = np.sum(w * (y * log_expit(eta) + (1 - y) * log_expit(-eta)))
    r = w * (y - expit(eta))
    g_theta = np.bincount(a, r, m) - np.bincount(b, r, m) - prior * theta
    return -(loglik - prior / 2 * theta @ theta), -np.concatenate([g_theta, z.T @ r])


def scipy_fit(a, b, outcome, z, m, prior, w=None):
    w = np.ones(a.size) if w is None else w
    result = minimize(
        penalised_nll,
        np.zeros(m + z.shape[1]),
        args=(a, b, targets(outcome), w, z, m, prior),
        jac=True,
        method="L-BFGS-B",
        options=dict(maxiter=20000, maxcor=50, ftol=0.0, gtol=1e-9),
    )
    assert np.max(np.abs(result.jac)) < 1e-5, result.message  # rounding floor of f at ~1e3 nats
    return result.x[:m], result.x[m:]


def elo(theta):
    return 1000 + ELO_PER_NAT * (theta - theta.mean())


# ------------------------------------------------------------------------------------------- fit vs scipy


@pytest.mark.parametrize(
    "seed, n, m, p, prior", [(0, 3000, 8, 3, 1e-3), (1, 1500, 15, 4, 0.5), (2, 800, 5, 1, 0.0), (3, 5000, 30, 2, 1e-3)]
)
def test_matches_scipy_on_the_same_penalised_likelihood(seed, n, m, p, prior):
    a, b, o, z, _, _ = random_rows(seed, n, m, p)
    fit = fit_style_controlled(a, b, o, z, m, prior=prior)
    theta, beta = scipy_fit(a, b, o, z, m, prior)
    assert fit.converged and 0 < fit.iterations < 30
    np.testing.assert_allclose(fit.ratings, elo(theta), rtol=0, atol=RATING_ATOL)
    np.testing.assert_allclose(fit.coefficients, beta, rtol=0, atol=COEF_ATOL)
    loglik = -penalised_nll(np.concatenate([fit.strengths, fit.coefficients]), a, b, targets(o), np.ones(n), z, m, 0.0)[
        0
    ]
    assert fit.log_likelihood == pytest.approx(loglik, rel=1e-12)
    assert abs(fit.strengths.sum()) < 1e-8  # the gauge: sum theta = 0 at the optimum


def test_weights_match_duplicated_rows_and_scipy():
    a, b, o, z, _, _ = random_rows(4, 1200, 6, 2)
    counts = np.random.default_rng(4).integers(0, 4, a.size)
    weighted = fit_style_controlled(a, b, o, z, 6, weights=counts.astype(float))
    rows = np.repeat(np.arange(a.size), counts)
    duplicated = fit_style_controlled(a[rows], b[rows], o[rows], z[rows], 6)
    np.testing.assert_allclose(weighted.ratings, duplicated.ratings, rtol=0, atol=EXACT * ELO_PER_NAT)
    np.testing.assert_allclose(weighted.coefficients, duplicated.coefficients, rtol=0, atol=EXACT)
    theta, beta = scipy_fit(a, b, o, z, 6, 1e-3, w=counts.astype(float))
    np.testing.assert_allclose(weighted.ratings, elo(theta), rtol=0, atol=RATING_ATOL)


def bt_scipy(a, b, outcome, m, prior):
    """Plain Bradley-Terry with half-win ties from the win matrix, fitted by BFGS."""
    y = targets(outcome)
    wins = np.zeros((m, m))
    np.add.at(wins, (a, b), y)
    np.add.at(wins, (b, a), 1 - y)

    def nll(theta):
        d = theta[:, None] - theta[None, :]
        value = -np.sum(wins * log_expit(d)) + prior / 2 * theta @ theta
        g = wins * expit(-d)
        return value, -(g.sum(axis=1) - g.sum(axis=0)) + prior * theta

    result = minimize(nll, np.zeros(m), jac=True, method="BFGS", options=dict(gtol=1e-10, maxiter=10000))
    return result.x


@pytest.mark.parametrize("prior", [1e-3, 0.0])
def test_zero_covariates_reduce_to_plain_bradley_terry(prior):
    a, b, o, _, _, _ = random_rows(5, 4000, 12, 0)
    fit = fit_style_controlled(a, b, o, np.zeros((a.size, 3)), 12, prior=prior)
    assert fit.converged
    np.testing.assert_array_equal(fit.coefficients, 0.0)
    np.testing.assert_allclose(fit.ratings, elo(bt_scipy(a, b, o, 12, prior)), rtol=0, atol=RATING_ATOL)
    no_covariates = fit_style_controlled(a, b, o, np.zeros((a.size, 0)), 12, prior=prior)
    np.testing.assert_allclose(no_covariates.ratings, fit.ratings, rtol=0, atol=EXACT * ELO_PER_NAT)


def test_recovers_known_strengths_and_style_effect():
    m, p, n = 8, 2, 200_000
    true_beta = np.array([0.5, -0.3])
    a, b, o, z, theta, _ = random_rows(6, n, m, p, ties=0.0, beta=true_beta, spread=0.7)
    fit = fit_style_controlled(a, b, o, z, m, prior=0.0)
    # Standard errors from the Fisher information at the truth, model 0 as the reference.
    design = np.zeros((n, m - 1 + p))
    rows = np.arange(n)
    np.add.at(design, (rows[a > 0], a[a > 0] - 1), 1.0)
    np.add.at(design, (rows[b > 0], b[b > 0] - 1), -1.0)
    design[:, m - 1 :] = z
    prob = expit(theta[a] - theta[b] + z @ true_beta)
    covariance = np.linalg.inv(design.T @ (design * (prob * (1 - prob))[:, None]))
    se = np.sqrt(np.diag(covariance))
    assert np.all(se[m - 1 :] < 0.01) and np.all(se[: m - 1] < 0.02)  # the check is sharp
    estimate = np.concatenate([fit.strengths[1:] - fit.strengths[0], fit.coefficients])
    truth = np.concatenate([theta[1:] - theta[0], true_beta])
    assert np.all(np.abs(estimate - truth) < 4.5 * se), (estimate - truth) / se


# ------------------------------------------------------------------------------------------- derivatives


def small_problem(seed=7, n=300, m=6, p=3, weights=None):
    a, b, o, z, _, _ = random_rows(seed, n, m, p)
    w = np.ones(n) if weights is None else weights
    problem, _ = style._make_problem(a, b, o, z, w, m)  # padded: 1024 rows, 16 models
    rng = np.random.default_rng(seed)
    x = np.zeros(problem.real_model.shape[0] + p)
    x[:m] = rng.normal(0, 1, m)
    x[-p:] = rng.normal(0, 0.5, p)
    return problem, jnp.asarray(x), (a, b, targets(o), w, z, m)


def plain_loss(x, problem, prior):
    """Penalised log-likelihood with the solver's gauge term, from the formula, for jax.grad."""
    m = problem.real_model.shape[0]
    theta, beta = x[:m], x[m:]
    eta = theta[problem.model_a] - theta[problem.model_b] + beta @ problem.covariates
    p = 1 / (1 + jnp.exp(-eta))
    y, w = problem.target, problem.weight
    loglik = jnp.sum(w * (y * jnp.log(p) + (1 - y) * jnp.log1p(-p)))
    return loglik - prior / 2 * jnp.sum(theta**2) - jnp.sum(problem.real_model * theta) ** 2 / 2


@pytest.mark.parametrize("prior", [0.0, 1e-3, 2.0])
def test_analytic_gradient_and_hessian_match_autodiff(prior):
    weights = np.random.default_rng(1).poisson(1.0, 300).astype(float)
    problem, x, _ = small_problem(weights=weights)
    gradient = jax.jit(style._gradient)(x, problem, prior)
    np.testing.assert_allclose(gradient, jax.jit(jax.grad(plain_loss))(x, problem, prior), rtol=GRAD_RTOL, atol=1e-10)
    np.testing.assert_allclose(
        jax.jit(style._negative_hessian)(x, problem, prior),
        -jax.jit(jax.hessian(plain_loss))(x, problem, prior),
        rtol=GRAD_RTOL,
        atol=1e-10,
    )
    assert float(jax.jit(style._objective)(x, problem, prior)) == pytest.approx(
        float(plain_loss(x, problem, prior)), rel=1e-13
    )


def test_analytic_gradient_matches_finite_differences():
    problem, x, (a, b, y, w, z, m) = small_problem()
    models = problem.real_model.shape[0]
    prior = 1e-3
    gradient = np.asarray(jax.jit(style._gradient)(x, problem, prior))
    params = np.concatenate([np.asarray(x)[:m], np.asarray(x)[models:]])

    def loss(v):  # the penalised log-likelihood + gauge term, numpy
        return -penalised_nll(v, a, b, y, w, z, m, prior)[0] - v[:m].sum() ** 2 / 2

    step = 1e-5
    numeric = np.array([(loss(params + step * e) - loss(params - step * e)) / (2 * step) for e in np.eye(params.size)])
    expected = np.concatenate([gradient[:m], gradient[models:]])
    np.testing.assert_allclose(expected, numeric, rtol=FD_RTOL, atol=FD_RTOL * np.abs(numeric).max())
    np.testing.assert_array_equal(gradient[m:models], 0.0)  # padding models feel nothing


@pytest.mark.slow  # eager mode compiles every primitive once
def test_jit_and_plain_newton_agree():
    problem, _, _ = small_problem(n=60, m=4, p=2)
    x0 = jnp.zeros(problem.real_model.shape[0] + 2)
    args = (problem, jnp.float64(1e-3), jnp.float64(1e-10), jnp.int32(50))
    jitted, it_jit, ok_jit = style._newton_jit(x0, *args)
    with jax.disable_jit():
        plain, it_plain, ok_plain = style._newton(x0, *args)
    assert bool(ok_jit) and bool(ok_plain) and int(it_jit) == int(it_plain)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(plain), rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------- options


def test_anchor_scale_and_base():
    a, b, o, z, _, _ = random_rows(8, 2000, 7, 2)
    default = fit_style_controlled(a, b, o, z, 7)
    assert default.ratings.mean() == pytest.approx(1000.0, abs=1e-9)
    anchored = fit_style_controlled(a, b, o, z, 7, anchor=3, anchor_rating=1500.0)
    assert anchored.ratings[3] == pytest.approx(1500.0, abs=1e-9)
    np.testing.assert_allclose(
        anchored.ratings - anchored.ratings[3], default.ratings - default.ratings[3], rtol=0, atol=1e-9
    )
    natural = fit_style_controlled(a, b, o, z, 7, scale=1.0, base=math.e)
    np.testing.assert_allclose(natural.ratings - 1000, (default.ratings - 1000) / ELO_PER_NAT, rtol=0, atol=1e-9)
    np.testing.assert_allclose(natural.coefficients, default.coefficients, rtol=0, atol=0)


def test_prior_shrinks_strengths_but_not_coefficients():
    a, b, o, z, _, _ = random_rows(9, 600, 5, 2)
    loose, tight = fit_style_controlled(a, b, o, z, 5), fit_style_controlled(a, b, o, z, 5, prior=1e4)
    assert np.ptp(tight.ratings) < 0.05 * np.ptp(loose.ratings)
    # beta is unpenalised: with theta pinned near 0 it is still the logistic fit on z alone.
    _, beta = scipy_fit(a, b, o, z, 5, 1e4)
    np.testing.assert_allclose(tight.coefficients, beta, rtol=0, atol=COEF_ATOL)
    assert np.max(np.abs(tight.coefficients)) > 0.1


def test_compiled_newton_is_reused_across_similar_sizes():
    a, b, o, z, _, _ = random_rows(10, 3000, 20, 2)
    fit_style_controlled(a, b, o, z, 20)
    size = style._newton_jit._cache_size()
    fit_style_controlled(a[:2900], b[:2900], o[:2900], z[:2900], 21, prior=0.1, tol=1e-9, max_iter=40)
    assert style._newton_jit._cache_size() == size


# ------------------------------------------------------------------------------------------- extremes


def test_model_that_never_wins_gets_a_finite_rating_from_the_prior():
    a, b, o, z, _, _ = random_rows(11, 2000, 6, 2)
    o = o.copy()
    o[a == 5] = B_WINS  # model 5 loses every battle, on either side
    o[b == 5] = A_WINS
    fit = fit_style_controlled(a, b, o, z, 6)
    assert fit.converged and np.all(np.isfinite(fit.ratings)) and np.all(np.isfinite(fit.coefficients))
    assert fit.ratings[5] < fit.ratings.min(where=np.arange(6) != 5, initial=np.inf) - 300
    # Without the prior the MLE does not exist: flagged, never NaN.
    plain = fit_style_controlled(a, b, o, z, 6, prior=0.0, max_iter=30)
    assert not plain.converged
    assert np.all(np.isfinite(plain.ratings)) and np.all(np.isfinite(plain.coefficients))
    assert np.isfinite(plain.log_likelihood)


def test_extreme_covariates_and_model_without_battles():
    a, b, o, z, _, _ = random_rows(12, 1000, 5, 2)
    z = z * 1e3
    z[:, 1] = 0.0  # a covariate that never varies
    fit = fit_style_controlled(a, b, o, z, 7)  # models 5 and 6 never play
    assert fit.converged and np.all(np.isfinite(fit.ratings))
    assert fit.coefficients[1] == 0.0
    # A model without battles sits at the prior's mean, 0 (the optimum has sum theta = 0).
    np.testing.assert_allclose(fit.strengths[5:], 0.0, rtol=0, atol=1e-9)


def test_prior_zero_requires_a_connected_graph():
    a, b, o, z, _, _ = random_rows(13, 500, 4, 1)
    with pytest.raises(ValueError, match="connected"):
        fit_style_controlled(a, b, o, z, 5, prior=0.0)


def test_single_battle():
    fit = fit_style_controlled([0], [1], [A_WINS], np.zeros((1, 1)), 2)
    assert fit.converged and fit.ratings[0] > fit.ratings[1]
    # theta = (t, -t): d/dt [log sigmoid(2t) - prior t^2] = 0  <=>  sigmoid(-2t) = prior t.
    t = fit.strengths[0]
    assert expit(-2 * t) == pytest.approx(1e-3 * t, rel=1e-9)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(covariates=np.zeros(10)), "covariates"),
        (dict(covariates=np.zeros((9, 2))), "covariates"),
        (dict(covariates=np.full((10, 2), np.nan)), "finite"),
        (dict(model_b=np.arange(9)), "same length"),
        (dict(outcome=np.full(10, 7)), "outcome"),
        (dict(n_models=3), r"\[0, 3\)"),
        (dict(weights=np.ones(9)), "weights"),
        (dict(weights=-np.ones(10)), "weights"),
        (dict(prior=-1.0), "prior"),
        (dict(anchor=12), "anchor"),
        (dict(scale=0.0), "scale"),
        (dict(tol=0.0), "tol"),
        (dict(max_iter=0), "max_iter"),
    ],
)
def test_bad_input_raises(change, message):
    args = dict(
        model_a=np.arange(10) % 5,
        model_b=(np.arange(10) + 1) % 5,
        outcome=np.zeros(10, int),
        covariates=np.zeros((10, 2)),
        n_models=5,
    )
    options = {k: change.pop(k) for k in list(change) if k not in args}
    args.update(change)
    with pytest.raises(ValueError, match=message):
        fit_style_controlled(
            args.pop("model_a"),
            args.pop("model_b"),
            args.pop("outcome"),
            args.pop("covariates"),
            args.pop("n_models"),
            **options,
        )


# ------------------------------------------------------------------------------------------- bootstrap


def test_bootstrap_is_reproducible_and_independent_of_batch_size():
    a, b, o, z, _, _ = random_rows(14, 1500, 6, 2)
    runs = [bootstrap_style_controlled(a, b, o, z, 6, replicates=7, seed=42, batch_size=size) for size in (7, 3, 1)]
    again = bootstrap_style_controlled(a, b, o, z, 6, replicates=7, seed=42, batch_size=3)
    for run in runs[1:] + [again]:
        np.testing.assert_array_equal(run.rating_samples, runs[0].rating_samples)
        np.testing.assert_array_equal(run.coef_samples, runs[0].coef_samples)
    other = bootstrap_style_controlled(a, b, o, z, 6, replicates=7, seed=43, batch_size=3)
    assert not np.array_equal(other.rating_samples, runs[0].rating_samples)


def test_bootstrap_replicate_is_the_fit_with_poisson_weights():
    a, b, o, z, _, _ = random_rows(15, 2000, 5, 2)
    weights = np.random.default_rng(0).uniform(0.5, 2.0, a.size)
    boot = bootstrap_style_controlled(a, b, o, z, 5, replicates=4, seed=3, batch_size=2, weights=weights, anchor=1)
    assert isinstance(boot, StyleBootstrap) and isinstance(boot.fit, StyleFit)
    assert boot.converged.all()
    for r in range(4):
        direct = fit_style_controlled(a, b, o, z, 5, anchor=1, weights=weights * poisson_weights(a.size, r, 3))
        np.testing.assert_allclose(boot.rating_samples[r], direct.ratings, rtol=0, atol=EXACT * ELO_PER_NAT)
        np.testing.assert_allclose(boot.coef_samples[r], direct.coefficients, rtol=0, atol=EXACT)
    np.testing.assert_array_equal(boot.rating_samples[:, 1], 1000.0)


def test_poisson_weights_are_poisson_one_and_stream_per_replicate():
    w = poisson_weights(200_000, 0, 0)
    assert w.mean() == pytest.approx(1.0, abs=5 / math.sqrt(w.size))
    assert w.var() == pytest.approx(1.0, abs=0.02)
    np.testing.assert_array_equal(poisson_weights(1000, 5, 9), poisson_weights(1000, 5, 9))
    assert not np.array_equal(poisson_weights(1000, 5, 9), poisson_weights(1000, 6, 9))


def test_bootstrap_intervals_cover_the_fit_and_shrink_with_data():
    a, b, o, z, _, _ = random_rows(16, 8000, 6, 2)
    big = bootstrap_style_controlled(a, b, o, z, 6, replicates=40, seed=0, batch_size=16)
    small = bootstrap_style_controlled(a[:1000], b[:1000], o[:1000], z[:1000], 6, replicates=40, seed=0, batch_size=16)
    assert np.all(big.ratings_low <= big.fit.ratings) and np.all(big.fit.ratings <= big.ratings_high)
    assert np.all(big.coef_low <= big.fit.coefficients) and np.all(big.fit.coefficients <= big.coef_high)
    np.testing.assert_array_equal(big.ratings_low, np.quantile(big.rating_samples, 0.025, axis=0))
    width_big = np.median(big.ratings_high - big.ratings_low)
    width_small = np.median(small.ratings_high - small.ratings_low)
    assert 1.8 < width_small / width_big < 4.5  # about sqrt(8)


# ------------------------------------------------------------------------------------------- sandwich

SANDWICH_RTOL = 1e-7  # analytic assembly vs explicit per-row outer products (same float64 quantities)


def sandwich_by_rows(a, b, outcome, z, m, prior, w, fit, anchor=None):
    """The sandwich standard errors the long way: one design vector per row, the bread from the rows'
    curvature (no gauge term), the meat from explicit outer products, the contrast matrix written out."""
    n, p = z.shape
    x = np.zeros((n, m + p))
    x[np.arange(n), a] += 1.0
    x[np.arange(n), b] -= 1.0
    x[:, m:] = z
    eta = x @ np.concatenate([fit.strengths, fit.coefficients])
    prob = expit(eta)
    y = targets(outcome)
    bread = (x * (w * prob * (1 - prob))[:, None]).T @ x + np.diag(np.r_[np.full(m, prior), np.zeros(p)])
    scores = x * (w * (y - prob))[:, None]
    meat = sum(np.outer(s, s) for s in scores)
    inverse = np.linalg.inv(bread)
    covariance = inverse @ meat @ inverse
    contrast = np.eye(m) - (1.0 / m if anchor is None else 0.0)
    if anchor is not None:
        contrast[:, anchor] -= 1.0
    rating_var = np.diag(contrast @ covariance[:m, :m] @ contrast.T)
    return ELO_PER_NAT * np.sqrt(rating_var), np.sqrt(np.diag(covariance)[m:])


@pytest.mark.parametrize("anchor, weighted", [(None, False), (2, True)])
def test_sandwich_matches_explicit_row_outer_products(anchor, weighted):
    a, b, o, z, _, _ = random_rows(21, 400, 6, 3)
    w = np.random.default_rng(3).choice([0.5, 1.0, 2.0], a.size) if weighted else np.ones(a.size)
    prior = 1e-3
    got = sandwich_style_intervals(a, b, o, z, 6, prior=prior, anchor=anchor, weights=w if weighted else None)
    rating_se, coef_se = sandwich_by_rows(a, b, o, z, 6, prior, w, got.fit, anchor)
    np.testing.assert_allclose(got.ratings_se, rating_se, rtol=SANDWICH_RTOL, atol=1e-9)
    np.testing.assert_allclose(got.coef_se, coef_se, rtol=SANDWICH_RTOL)
    np.testing.assert_allclose(got.ratings_high - got.fit.ratings, 1.959963984540054 * got.ratings_se, rtol=1e-12)
    if anchor is not None:
        assert got.ratings_se[anchor] == 0.0 and got.ratings_low[anchor] == got.fit.ratings[anchor]
    with pytest.raises(ValueError, match="confidence"):
        sandwich_style_intervals(a, b, o, z, 6, confidence=1.0)
    with pytest.raises(TypeError, match="unknown fit options"):
        sandwich_style_intervals(a, b, o, z, 6, replicates=10)


def test_sandwich_agrees_with_the_row_bootstrap():
    """The sandwich is the large-sample limit of the Poisson row bootstrap: with 20,000 rows their 95 % half-
    widths agree to within the bootstrap's Monte-Carlo error (400 replicates: a quantile-based half-width is
    off by ~7 % (one sd); the tolerance, 20 %, is about three of those)."""
    a, b, o, z, _, _ = random_rows(22, 20_000, 8, 2)
    sandwich = sandwich_style_intervals(a, b, o, z, 8)
    boot = bootstrap_style_controlled(a, b, o, z, 8, replicates=400, seed=1, batch_size=50)
    ratio = (sandwich.ratings_high - sandwich.ratings_low) / (boot.ratings_high - boot.ratings_low)
    assert np.all(np.abs(ratio - 1) < 0.2), ratio
    coef_ratio = (sandwich.coef_high - sandwich.coef_low) / (boot.coef_high - boot.coef_low)
    assert np.all(np.abs(coef_ratio - 1) < 0.2), coef_ratio
    np.testing.assert_array_equal(sandwich.fit.ratings, boot.fit.ratings)


def test_bootstrap_rejects_bad_options():
    a, b, o, z, _, _ = random_rows(17, 100, 3, 1)
    with pytest.raises(ValueError):
        bootstrap_style_controlled(a, b, o, z, 3, replicates=0)
    with pytest.raises(ValueError):
        bootstrap_style_controlled(a, b, o, z, 3, batch_size=0)
    with pytest.raises(ValueError):
        bootstrap_style_controlled(a, b, o, z, 3, confidence=1.0)
    with pytest.raises(TypeError):
        bootstrap_style_controlled(a, b, o, z, 3, ties="davidson")


# ------------------------------------------------------------------------------------------- covariates


def covariates_loop(style_counts):
    """Reference: the normalised differences row by row, then a z-score per column over rows with metadata."""
    n, _, p = style_counts.shape
    mask = np.array([not np.isnan(row).any() for row in style_counts])
    diff = np.zeros((n, p))
    for i in range(n):
        for j in range(p):
            a, b = style_counts[i, 0, j], style_counts[i, 1, j]
            diff[i, j] = (a - b) / (a + b) if mask[i] and a + b > 0 else 0.0
    z = np.zeros((n, p))
    for j in range(p):
        column = diff[mask, j]
        mean = sum(column) / len(column)
        std = math.sqrt(sum((v - mean) ** 2 for v in column) / len(column))
        if std > 1e-12:
            z[mask, j] = (column - mean) / std
    return mask, z


def test_style_covariates_match_the_recipe():
    rng = np.random.default_rng(18)
    counts = rng.integers(0, 30, (400, 2, len(STYLE_FEATURES))).astype(float)
    counts[:, :, 0] = rng.integers(1, 3000, (400, 2))  # token counts
    counts[::7, :, 2] = 0.0  # a + b == 0
    counts[::11] = np.nan  # no metadata
    counts[5, 1, 3] = np.nan
    mask, z, names = style_covariates(counts)
    ref_mask, ref_z = covariates_loop(counts)
    np.testing.assert_array_equal(mask, ref_mask)
    np.testing.assert_allclose(z, ref_z, rtol=1e-12, atol=1e-12)
    assert names == STYLE_FEATURES and not mask[5] and not mask[0] and mask[1]
    np.testing.assert_allclose(z[mask].mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z[mask].std(axis=0), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(z[~mask], 0.0)


def test_style_covariates_zero_variance_and_empty():
    counts = np.ones((50, 2, len(STYLE_FEATURES)))
    counts[:, 0, 0] = np.arange(50) + 1.0
    mask, z, _ = style_covariates(counts)
    assert mask.all() and np.all(z[:, 1:] == 0.0) and z[:, 0].std() == pytest.approx(1.0)
    mask, z, _ = style_covariates(np.full((3, 2, len(STYLE_FEATURES)), np.nan))
    assert not mask.any() and np.all(z == 0.0)
    mask, z, _ = style_covariates(np.zeros((0, 2, len(STYLE_FEATURES))))
    assert mask.shape == (0,) and z.shape == (0, len(STYLE_FEATURES))


@pytest.mark.parametrize(
    "bad", [np.zeros((5, 2, 3)), np.zeros((5, 4)), -np.ones((5, 2, 4)), np.full((5, 2, 4), np.inf)]
)
def test_style_covariates_reject_bad_input(bad):
    with pytest.raises(ValueError):
        style_covariates(bad)


def test_style_covariates_feed_the_fit():
    rng = np.random.default_rng(19)
    a, b, o, _, _, _ = random_rows(19, 3000, 6, 0)
    counts = rng.integers(0, 20, (3000, 2, len(STYLE_FEATURES))).astype(float)
    # Longer answers win more often: the length coefficient must come out positive.
    longer_a = counts[:, 0, 0] > counts[:, 1, 0]
    o = np.where(rng.random(3000) < np.where(longer_a, 0.7, 0.3), A_WINS, B_WINS).astype(np.int8)
    counts[:100] = np.nan
    mask, z, names = style_covariates(counts)
    fit = fit_style_controlled(a[mask], b[mask], o[mask], z[mask], 6)
    assert fit.converged and fit.coefficients[names.index("sum_assistant_tokens")] > 0.3
