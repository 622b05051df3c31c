"""Style control: Bradley-Terry on battle rows with per-battle covariates (answer length, markdown).

Voters prefer longer, more formatted answers, so a plain Bradley-Terry rating mixes "what the model says" with
"how it looks". Style control (LMArena, "Does style matter?", 2024) adds the style difference of the two
answers of each battle as covariates of a logistic model and reports the model strengths with that effect
held fixed:

    logit P(a beats b) = theta_a - theta_b + beta . z          (natural-log odds)

theta (m,) are the natural-log strengths, z (p,) the row's covariates and beta (p,) their effects, in nats of
log-odds per standard deviation of each covariate. A tie (either kind) counts half a win each way: the row's
target is y = 1/2, which is the same likelihood as FastChat's duplicated tie rows. The fit maximises

    sum_rows w [y log p + (1 - y) log(1 - p)] - prior / 2 * ||theta||^2

with a Gaussian prior of precision `prior` on theta only (beta is not shrunk: it is estimated from every
battle). Ratings are reported on the Elo scale, rating = anchor_rating + scale / ln(base) * (theta - ref), ref
the mean strength or the `anchor` model's strength.

Solver: damped Newton (Armijo backtracking) in float64 JAX, inside one `jax.lax.while_loop`. The gradient and
the Hessian are analytic and assembled by scatter-adds, so an iteration costs O(n p^2 + (m + p)^2) plus an
(m + p)^3 Cholesky, never O(n m):
    theta-theta: per-row curvature h = w p (1 - p) scattered onto the (m, m) pair cells (a Laplacian) + prior I
    theta-beta:  h z summed per model (+ for side a, - for side b)
    beta-beta:   z^T diag(h) z
The Newton system is solved after a Jacobi scaling with a tiny ridge (RIDGE), so a covariate that is zero on
every row, or a model with no battle, gives a zero step instead of a singular solve, and the iterates never
become NaN. The sum of theta is pinned by a gauge term (sum theta)^2 / 2: with prior > 0 the optimum already
has sum theta = 0 (the data gradient sums to zero over models), so the gauge changes nothing but the
conditioning; with prior = 0 it picks one member of the flat family. Sums over rows and models use a fixed
pairwise order (`_tree_sum`) instead of jnp.sum, whose order XLA changes with the batch size, so that vmapped
bootstrap replicates are bit-identical whatever the batch size. Arrays are padded to size buckets
(`ranking.elo`'s scheme) so problems of similar size reuse the compiled code.

Bootstrap: the row-level Poisson bootstrap. Each replicate reweights every row by an independent Poisson(1)
count, the standard large-sample approximation of resampling n rows with replacement (whose counts are
Multinomial(n, 1/n), i.e. Poisson(1) for large n, independent across rows). Replicates are vmapped in batches
and warm-started from the full-data fit.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

import ranking._jax  # noqa: F401  (float64 JAX)
from ranking.bradley_terry import DEFAULT_PRIOR  # precision per nat^2, shared with plain Bradley-Terry
from ranking.data import STYLE_FEATURES
from ranking.elo import MIN_BATTLE_BUCKET, MIN_MODEL_BUCKET, bucket, check_battles

DEFAULT_TOL = 1e-10  # largest full Newton step at convergence, in nats
DEFAULT_MAX_ITER = 100
RIDGE = 1e-12  # added to the unit-diagonal (Jacobi-scaled) Newton matrix; far below any real curvature
ARMIJO = 1e-4  # sufficient-increase constant of the line search
NOISE = 1e-12  # a predicted gain below NOISE * (1 + |objective|) is within the rounding of the sum: accept
MIN_STEP = 2.0**-30  # line search gives up (converged=False) below this fraction of the Newton step

# Target y of model_a for each outcome code: A_WINS, B_WINS, TIE, TIE_BOTHBAD.
_TARGET = np.array([1.0, 0.0, 0.5, 0.5])


# ------------------------------------------------------------------------------------------- covariates


def style_covariates(style) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Standardised style differences of each battle, following LMArena's published style-control recipe.

    Written from LMArena's description (normalised differences of answer length, header, list and bold counts,
    then z-scored), not copied from their code. For each feature f in STYLE_FEATURES, with counts a (side a)
    and b (side b) of the row:

        d = (a - b) / (a + b)      in [-1, 1], 0 when a + b == 0

    then each column is standardised over the rows that have metadata: z = (d - mean) / std (population
    standard deviation, ddof=0); a column with zero variance stays 0, because it cannot be told apart from
    the strengths and carries no information.

    style: (n, 2, len(STYLE_FEATURES)) float counts, [side a, side b], as `Battles.style`; a row with any NaN
    has no metadata. Returns (mask (n,) bool: rows with metadata, z (n, p) float64 with 0 on rows outside the
    mask, names: the feature names of z's columns). Fit only the rows in the mask: a 0 there means
    "no information", not "same style". Raises ValueError for a wrong shape or negative / infinite counts.
    """
    style = np.asarray(style, dtype=np.float64)
    features = len(STYLE_FEATURES)
    if style.ndim != 3 or style.shape[1:] != (2, features):
        raise ValueError(f"style must have shape (n, 2, {features}), got {style.shape}")
    mask = ~np.isnan(style).any(axis=(1, 2))
    rows = style[mask]
    if not np.all(np.isfinite(rows)) or np.any(rows < 0):
        raise ValueError("style counts must be finite and non-negative (NaN marks a row without metadata)")
    a, b = rows[:, 0, :], rows[:, 1, :]
    total = a + b
    diff = np.divide(a - b, total, out=np.zeros_like(total), where=total > 0)
    z = np.zeros((style.shape[0], features))
    if diff.shape[0]:
        mean, std = diff.mean(axis=0), diff.std(axis=0)
        # Rounding leaves ~1e-17 of "spread" in a constant column; the differences live in [-1, 1].
        varies = std > 1e-12
        z[mask] = np.where(varies, (diff - mean) / np.where(varies, std, 1.0), 0.0)
    return mask, z, tuple(STYLE_FEATURES)


# ------------------------------------------------------------------------------------------- results


class StyleFit(NamedTuple):
    """A style-controlled Bradley-Terry fit.

    ratings: (m,) Elo scale, with the style effects held fixed; strengths: (m,) natural-log theta as fitted
    (sum zero); coefficients: (p,) beta, the change of the natural-log odds of a win for side a per standard
    deviation of each covariate (multiply by scale / ln(base) for Elo points); log_likelihood: of the weighted
    rows at the fit, without the prior; iterations: Newton steps taken; converged: the last full Newton step
    was below `tol` (False: the values are the last finite iterate, not an optimum).
    """

    ratings: np.ndarray
    strengths: np.ndarray
    coefficients: np.ndarray
    log_likelihood: float
    iterations: int
    converged: bool


class StyleBootstrap(NamedTuple):
    """Poisson-bootstrap intervals of a style-controlled fit.

    ratings_low / ratings_high: (m,) Elo; coef_low / coef_high: (p,); the (1 - confidence) / 2 and
    (1 + confidence) / 2 quantiles of the replicates. rating_samples: (R, m) Elo; coef_samples: (R, p);
    converged: (R,) whether each replicate's Newton iterations converged; fit: the full-data StyleFit.
    """

    ratings_low: np.ndarray
    ratings_high: np.ndarray
    coef_low: np.ndarray
    coef_high: np.ndarray
    rating_samples: np.ndarray
    coef_samples: np.ndarray
    converged: np.ndarray
    fit: StyleFit


# ------------------------------------------------------------------------------------------- the model


class _Problem(NamedTuple):
    """Padded device arrays of one fit; padding rows have weight 0, padding models mask 0."""

    model_a: jax.Array  # int32 (N,)
    model_b: jax.Array  # int32 (N,)
    target: jax.Array  # float64 (N,): 1, 0 or 1/2
    weight: jax.Array  # float64 (N,)
    covariates: jax.Array  # float64 (p, N): one contiguous row per covariate
    real_model: jax.Array  # float64 (M,): 1 for the n_models real models, 0 for padding


def _tree_sum(values):
    """Sum over the last axis by repeated halving (pairwise summation).

    Every level is an elementwise add of two slices, so the order of the additions is fixed by the shapes:
    the result does not depend on how XLA vectorises, fuses or batches a reduction, which makes vmapped
    bootstrap replicates bit-identical whatever the batch size (jnp.sum is not: its order changes with the
    batch size). The rounding error grows like log2(n).
    """
    while values.shape[-1] > 1:
        size = values.shape[-1]
        half = size // 2
        folded = values[..., :half] + values[..., half : 2 * half]
        if size % 2:
            folded = folded.at[..., 0].add(values[..., -1])
        values = folded
    return values[..., 0] if values.shape[-1] else jnp.zeros(values.shape[:-1], values.dtype)


def _linear_predictor(x, problem: _Problem):
    """eta = theta_a - theta_b + beta . z per row, the covariate terms added in a fixed order."""
    m = problem.real_model.shape[0]
    theta, beta = x[:m], x[m:]
    eta = theta[problem.model_a] - theta[problem.model_b]
    for j in range(problem.covariates.shape[0]):
        eta = eta + beta[j] * problem.covariates[j]
    return eta


def _rows_loglik(eta, problem: _Problem):
    """sum_rows w [y log p + (1 - y) log(1 - p)] with p = sigmoid(eta), using log(1 - p) = log p - eta."""
    return _tree_sum(problem.weight * (jax.nn.log_sigmoid(eta) - (1 - problem.target) * eta))


def _data_loglik(x, problem: _Problem):
    return _rows_loglik(_linear_predictor(x, problem), problem)


def _penalty(x, problem: _Problem, prior):
    """prior / 2 ||theta||^2 plus the gauge term (sum theta)^2 / 2 (see the module docstring)."""
    theta = x[: problem.real_model.shape[0]]
    return prior / 2 * _tree_sum(theta**2) + _tree_sum(problem.real_model * theta) ** 2 / 2


def _objective(x, problem: _Problem, prior):
    """Penalised log-likelihood plus the gauge term, to be maximised."""
    return _data_loglik(x, problem) - _penalty(x, problem, prior)


def _derivatives(x, eta, problem: _Problem, prior):
    """Analytic gradient and minus the Hessian of `_objective` at x (eta: its linear predictor).

    Per row: residual r = w (y - p) and curvature h = w p (1 - p), with 1 - p = sigmoid(-eta) computed without
    cancellation. The gradient scatters r per model (+ side a, - side b) and sums z_j r; minus the Hessian is
    the rows' curvature matrix (`_curvature_blocks` with h) + prior I + gauge 1 1^T on the theta block.
    """
    m = problem.real_model.shape[0]
    z = problem.covariates
    p = z.shape[0]
    theta = x[:m]
    r, h = _residual_and_curvature(eta, problem)
    gauge = _tree_sum(problem.real_model * theta) * problem.real_model
    g_theta = _per_model(r, problem) - prior * theta - gauge
    g_beta = jnp.stack([_tree_sum(r * z[j]) for j in range(p)]) if p else jnp.zeros(0)
    gradient = jnp.concatenate([g_theta, g_beta])
    laplacian, theta_beta, beta_beta = _curvature_blocks(h, problem)
    theta_theta = laplacian + prior * jnp.eye(m) + jnp.outer(problem.real_model, problem.real_model)
    return gradient, jnp.block([[theta_theta, theta_beta], [theta_beta.T, beta_beta]])


def _residual_and_curvature(eta, problem: _Problem):
    """r = w (y - p) and h = w p (1 - p) per row, p = sigmoid(eta) and 1 - p = sigmoid(-eta) from one
    exponential, each without cancellation."""
    small = jnp.exp(-jnp.abs(eta))
    big_side, small_side = 1 / (1 + small), small / (1 + small)
    prob_a, prob_b = jnp.where(eta >= 0, big_side, small_side), jnp.where(eta >= 0, small_side, big_side)
    y = problem.target
    return problem.weight * (y * prob_b - (1 - y) * prob_a), problem.weight * prob_a * prob_b


def _per_model(values, problem: _Problem):
    """Sum over the rows where the model is side a, minus where it is side b."""
    m = problem.real_model.shape[0]
    return jax.ops.segment_sum(values, problem.model_a, num_segments=m) - jax.ops.segment_sum(
        values, problem.model_b, num_segments=m
    )


def _curvature_blocks(h, problem: _Problem):
    """The blocks of sum_rows h x x^T, x = (e_a - e_b, z) the row's design vector, in O(n p^2 + m^2):
        theta-theta: h on the (a, b) cells, symmetrised, as a weighted Laplacian
        theta-beta:  h z_j per model (+ side a, - side b);   beta-beta: sum h z_j z_k
    With h = w p (1 - p) it is the data part of minus the Hessian; with h = r^2 the sandwich's meat."""
    m = problem.real_model.shape[0]
    a, b, z = problem.model_a, problem.model_b, problem.covariates
    p = z.shape[0]
    pair = jax.ops.segment_sum(h, a * m + b, num_segments=m * m).reshape(m, m)
    pair = pair + pair.T
    laplacian = jnp.diag(_tree_sum(pair)) - pair
    hz = [h * z[j] for j in range(p)]
    theta_beta = jnp.stack([_per_model(column, problem) for column in hz], axis=1) if p else jnp.zeros((m, 0))
    products = {(j, k): _tree_sum(hz[j] * z[k]) for j in range(p) for k in range(j + 1)}
    beta_beta = (
        jnp.stack([jnp.stack([products[max(j, k), min(j, k)] for k in range(p)]) for j in range(p)])
        if p
        else jnp.zeros((0, 0))
    )
    return laplacian, theta_beta, beta_beta


@jax.jit
def _sandwich_parts(x, problem: _Problem, prior):
    """(bread, meat) at x: minus the Hessian of the objective, and sum_rows s s^T with s = r x the rows'
    scores (r = w (y - p), so a row of weight w counts as w^2, as in the Poisson bootstrap's w * Poisson(1))."""
    eta = _linear_predictor(x, problem)
    _, bread = _derivatives(x, eta, problem, prior)
    r, _ = _residual_and_curvature(eta, problem)
    laplacian, theta_beta, beta_beta = _curvature_blocks(r * r, problem)
    return bread, jnp.block([[laplacian, theta_beta], [theta_beta.T, beta_beta]])


def _gradient(x, problem: _Problem, prior):
    return _derivatives(x, _linear_predictor(x, problem), problem, prior)[0]


def _negative_hessian(x, problem: _Problem, prior):
    return _derivatives(x, _linear_predictor(x, problem), problem, prior)[1]


def _newton_direction(neg_hessian, gradient):
    """Solve H d = g after Jacobi scaling, with RIDGE on the unit diagonal (see module docstring)."""
    scale = jnp.sqrt(jnp.diagonal(neg_hessian))
    scale = jnp.where(scale > 0, scale, 1.0)
    scaled = neg_hessian / jnp.outer(scale, scale) + RIDGE * jnp.eye(scale.shape[0])
    return jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(scaled), gradient / scale) / scale


def _newton(x0, problem: _Problem, prior, tol, max_iter):
    """Damped Newton ascent of `_objective` from x0; returns (x, iterations, converged).

    Stops when the full Newton step is below tol (converged), after max_iter steps, or when the line search
    or the linear solve fails (not converged; x is then the last finite iterate). The predictor is linear in
    x, so the line search evaluates eta(x) + t eta(direction) without gathering again.
    """

    def step(state):
        x, value, it, _, _ = state
        eta = _linear_predictor(x, problem)
        gradient, neg_hessian = _derivatives(x, eta, problem, prior)
        direction = _newton_direction(neg_hessian, gradient)
        eta_direction = _linear_predictor(direction, problem)
        slope = _tree_sum(gradient * direction)  # predicted gain of the full step, to first order
        noise = NOISE * (1 + jnp.abs(value))

        def value_at(t):
            return _rows_loglik(eta + t * eta_direction, problem) - _penalty(x + t * direction, problem, prior)

        def acceptable(t, new_value):
            # Armijo, or a predicted gain that the rounding of the objective cannot resolve (at convergence).
            return (new_value >= value + ARMIJO * t * slope) | (t * slope <= noise)

        def shrink(ls):
            t, _ = ls
            return t / 2, value_at(t / 2)

        def keep_shrinking(ls):
            t, new_value = ls
            return ~acceptable(t, new_value) & (t >= MIN_STEP)

        t, new_value = jax.lax.while_loop(keep_shrinking, shrink, (jnp.float64(1.0), value_at(1.0)))
        new_x = x + t * direction
        ok = (
            jnp.all(jnp.isfinite(direction))
            & acceptable(t, new_value)
            & jnp.isfinite(new_value)
            & jnp.all(jnp.isfinite(new_x))
        )
        converged = ok & (jnp.max(jnp.abs(direction)) <= tol)
        return (jnp.where(ok, new_x, x), jnp.where(ok, new_value, value), it + ok.astype(it.dtype), converged, ~ok)

    def keep_going(state):
        _, _, it, converged, failed = state
        return ~converged & ~failed & (it < max_iter)

    init = (x0, _objective(x0, problem, prior), jnp.int32(0), jnp.bool_(False), jnp.bool_(False))
    x, _, iterations, converged, _ = jax.lax.while_loop(keep_going, step, init)
    return x, iterations, converged


_newton_jit = jax.jit(_newton)
_newton_batched = jax.jit(
    jax.vmap(_newton, in_axes=(None, _Problem(None, None, None, 0, None, None), None, None, None))
)


# ------------------------------------------------------------------------------------------- input


def _check_options(prior, anchor, n_models, scale, base, tol, max_iter):
    if not (np.isfinite(prior) and prior >= 0):
        raise ValueError(f"prior must be a finite precision >= 0, got {prior!r}")
    if anchor is not None and (
        isinstance(anchor, (bool, np.bool_)) or not isinstance(anchor, (int, np.integer)) or not 0 <= anchor < n_models
    ):
        raise ValueError(f"anchor must be a model index in [0, {n_models}), got {anchor!r}")
    if not (np.isfinite(scale) and scale > 0 and np.isfinite(base) and base > 1):
        raise ValueError(f"need scale > 0 and base > 1, got scale={scale!r}, base={base!r}")
    if not (np.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be > 0, got {tol!r}")
    if isinstance(max_iter, (bool, np.bool_)) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")


def _check_rows(model_a, model_b, outcome, covariates, n_models, weights):
    model_a, model_b, outcome = check_battles(model_a, model_b, outcome, n_models)
    if n_models < 1:
        raise ValueError("there are no models to rank")
    n = model_a.shape[0]
    covariates = np.asarray(covariates, dtype=np.float64)
    if covariates.ndim != 2 or covariates.shape[0] != n:
        raise ValueError(f"covariates must have shape ({n}, p), one row per battle, got {covariates.shape}")
    if not np.all(np.isfinite(covariates)):
        raise ValueError("covariates must be finite (drop rows without style metadata, see style_covariates)")
    if weights is None:
        weights = np.ones(n)
    else:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (n,):
            raise ValueError(f"weights must have shape ({n},), got {weights.shape}")
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ValueError("weights must be finite and non-negative")
    return model_a, model_b, outcome, covariates, weights


def _require_connected(model_a, model_b, weights, n_models):
    """prior = 0 leaves models in different pieces of the comparison graph on no common scale."""
    used = weights > 0
    graph = coo_matrix((np.ones(int(used.sum())), (model_a[used], model_b[used])), shape=(n_models, n_models))
    pieces, _ = connected_components(graph, directed=False)
    if pieces > 1:
        raise ValueError(
            f"with prior=0 every model must be connected by battles, but the comparison graph has "
            f"{pieces} pieces (a model without battles counts as one); use prior > 0"
        )


def _make_problem(model_a, model_b, outcome, covariates, weights, n_models) -> tuple[_Problem, np.ndarray]:
    """Pad to buckets; returns the problem (weights padded in) and the padded weight vector."""
    n = model_a.shape[0]
    rows, models = bucket(n, MIN_BATTLE_BUCKET), bucket(n_models, MIN_MODEL_BUCKET)

    def pad(values, dtype, shape=()):
        out = np.zeros((rows, *shape), dtype)
        out[:n] = values
        return out

    real = np.zeros(models)
    real[:n_models] = 1.0
    # Padding rows pit model 0 against itself with weight 0: they contribute exactly nothing.
    problem = _Problem(
        model_a=jnp.asarray(pad(model_a, np.int32)),
        model_b=jnp.asarray(pad(model_b, np.int32)),
        target=jnp.asarray(pad(_TARGET[outcome], np.float64)),
        weight=jnp.asarray(pad(weights, np.float64)),
        covariates=jnp.asarray(np.ascontiguousarray(pad(covariates, np.float64, covariates.shape[1:]).T)),
        real_model=jnp.asarray(real),
    )
    return problem, rows


def _to_elo(theta, anchor, anchor_rating, scale, base):
    reference = theta[..., anchor][..., None] if anchor is not None else theta.mean(axis=-1, keepdims=True)
    return anchor_rating + scale / np.log(base) * (theta - reference)


# ------------------------------------------------------------------------------------------- public API


def fit_style_controlled(
    model_a,
    model_b,
    outcome,
    covariates,
    n_models: int,
    *,
    prior: float = DEFAULT_PRIOR,
    anchor: int | None = None,
    anchor_rating: float = 1000.0,
    scale: float = 400.0,
    base: float = 10.0,
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_MAX_ITER,
    weights=None,
) -> StyleFit:
    """Style-controlled Bradley-Terry fit on battle rows (see the module docstring for the model).

    model_a, model_b: (n,) model codes; outcome: (n,) outcome codes from model_a's side; covariates: (n, p)
    finite per-battle covariates, usually `style_covariates(...)[1]` restricted to its mask (p may be 0:
    plain Bradley-Terry on rows); weights: optional (n,) non-negative row weights. `anchor` pins that model at
    `anchor_rating`, otherwise the mean rating is `anchor_rating`. With prior=0 every model must be connected
    by battles; if the plain MLE does not exist (a model that never wins) the fit returns converged=False.
    Raises ValueError on malformed input; never returns NaN.
    """
    _check_options(prior, anchor, n_models, scale, base, tol, max_iter)
    model_a, model_b, outcome, covariates, weights = _check_rows(
        model_a, model_b, outcome, covariates, n_models, weights
    )
    if prior == 0:
        _require_connected(model_a, model_b, weights, n_models)
    problem, _ = _make_problem(model_a, model_b, outcome, covariates, weights, n_models)
    x0 = jnp.zeros(problem.real_model.shape[0] + covariates.shape[1])
    x, iterations, converged = _newton_jit(x0, problem, jnp.float64(prior), jnp.float64(tol), jnp.int32(max_iter))
    return _result(x, problem, n_models, int(iterations), bool(converged), anchor, anchor_rating, scale, base)


def _result(x, problem, n_models, iterations, converged, anchor, anchor_rating, scale, base) -> StyleFit:
    models = problem.real_model.shape[0]
    x_host = np.asarray(x)
    theta = x_host[:n_models].copy()
    return StyleFit(
        ratings=_to_elo(theta, anchor, anchor_rating, scale, base),
        strengths=theta,
        coefficients=x_host[models:].copy(),
        log_likelihood=float(_data_loglik(x, problem)),
        iterations=iterations,
        converged=converged,
    )


def _check_interval_options(confidence, fit_options) -> None:
    """The checks both interval methods make before fitting: a confidence level, and fit options they know."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    unknown = set(fit_options) - {"prior", "anchor", "anchor_rating", "scale", "base", "tol", "max_iter", "weights"}
    if unknown:
        raise TypeError(f"unknown fit options: {sorted(unknown)}")


def poisson_weights(n: int, replicate: int, seed: int) -> np.ndarray:
    """Poisson(1) row counts of one bootstrap replicate, from its own SeedSequence child (seed, replicate).

    Each replicate has its own stream, so a replicate's weights do not depend on how replicates are batched.
    """
    generator = np.random.Generator(np.random.SFC64(np.random.SeedSequence(seed, spawn_key=(replicate,))))
    return generator.poisson(1.0, n).astype(np.float64)


def bootstrap_style_controlled(
    model_a,
    model_b,
    outcome,
    covariates,
    n_models: int,
    *,
    replicates: int = 100,
    seed: int = 0,
    batch_size: int = 8,
    confidence: float = 0.95,
    **fit_options,
) -> StyleBootstrap:
    """Poisson-bootstrap intervals for a style-controlled fit (see the module docstring).

    Replicate r reweights row i by w_i * Poisson(1) drawn from `poisson_weights(n, r, seed)`, so the samples are
    bit-identical for the same seed whatever `batch_size`. Every replicate starts from the full-data fit;
    `batch_size` replicates are fitted together (vmapped), which costs batch_size * n * (p + 8) * 8 bytes of
    memory. fit_options are those of fit_style_controlled. Intervals are quantiles over all replicates;
    `converged` says which replicates reached tol (one that did not holds its last finite iterate).
    """
    if isinstance(replicates, (bool, np.bool_)) or not isinstance(replicates, (int, np.integer)) or replicates < 1:
        raise ValueError(f"replicates must be a positive integer, got {replicates!r}")
    if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    _check_interval_options(confidence, fit_options)
    fit = fit_style_controlled(model_a, model_b, outcome, covariates, n_models, **fit_options)
    options = (
        dict(
            prior=DEFAULT_PRIOR,
            anchor=None,
            anchor_rating=1000.0,
            scale=400.0,
            base=10.0,
            tol=DEFAULT_TOL,
            max_iter=DEFAULT_MAX_ITER,
            weights=None,
        )
        | fit_options
    )
    model_a, model_b, outcome, covariates, weights = _check_rows(
        model_a, model_b, outcome, covariates, n_models, options["weights"]
    )
    problem, rows = _make_problem(model_a, model_b, outcome, covariates, weights, n_models)
    n, models = model_a.shape[0], problem.real_model.shape[0]
    x0 = jnp.asarray(np.concatenate([fit.strengths, np.zeros(models - n_models), fit.coefficients]))
    batch_size = min(batch_size, replicates)
    thetas = np.empty((replicates, n_models))
    coefs = np.empty((replicates, covariates.shape[1]))
    converged = np.empty(replicates, bool)
    for start in range(0, replicates, batch_size):
        stop = min(start + batch_size, replicates)
        # The last batch is padded with repeats of its last replicate so every batch has one compiled shape.
        batch_weights = np.zeros((batch_size, rows))
        for slot, replicate in enumerate(range(start, stop)):
            batch_weights[slot, :n] = weights * poisson_weights(n, replicate, seed)
        batch_weights[stop - start :] = batch_weights[stop - start - 1]
        x, _, ok = _newton_batched(
            x0,
            problem._replace(weight=jnp.asarray(batch_weights)),
            jnp.float64(options["prior"]),
            jnp.float64(options["tol"]),
            jnp.int32(options["max_iter"]),
        )
        x = np.asarray(x)
        thetas[start:stop] = x[: stop - start, :n_models]
        coefs[start:stop] = x[: stop - start, models:]
        converged[start:stop] = np.asarray(ok)[: stop - start]
    ratings = _to_elo(thetas, options["anchor"], options["anchor_rating"], options["scale"], options["base"])
    tail = (1 - confidence) / 2
    return StyleBootstrap(
        ratings_low=np.quantile(ratings, tail, axis=0),
        ratings_high=np.quantile(ratings, 1 - tail, axis=0),
        coef_low=np.quantile(coefs, tail, axis=0),
        coef_high=np.quantile(coefs, 1 - tail, axis=0),
        rating_samples=ratings,
        coef_samples=coefs,
        converged=converged,
        fit=fit,
    )


class StyleSandwich(NamedTuple):
    """Normal-approximation intervals of a style-controlled fit from the sandwich (robust) covariance.

    ratings_low / ratings_high: (m,) Elo; coef_low / coef_high: (p,); ratings_se: (m,) standard errors in Elo
    points of each rating (as reported: against the mean, or against the anchor); coef_se: (p,);
    fit: the full-data StyleFit.
    """

    ratings_low: np.ndarray
    ratings_high: np.ndarray
    coef_low: np.ndarray
    coef_high: np.ndarray
    ratings_se: np.ndarray
    coef_se: np.ndarray
    fit: StyleFit


def sandwich_style_intervals(
    model_a,
    model_b,
    outcome,
    covariates,
    n_models: int,
    *,
    confidence: float = 0.95,
    fit: StyleFit | None = None,
    **fit_options,
) -> StyleSandwich:
    """Intervals for a style-controlled fit without refitting: V = H^-1 B H^-1 at the fit.

    H is minus the Hessian of the penalised objective, B = sum_rows s s^T the rows' score outer products
    (`_sandwich_parts`). It is the large-sample limit of the row-level Poisson bootstrap (which reweights the
    same score terms), at the cost of one pass over the rows instead of one Newton fit per replicate: on a
    million rows, ~1 s instead of ~0.5 s per replicate. It stays honest when the model's variance is wrong
    (half-win ties), like `ranking.bootstrap.sandwich_intervals` for the pair-count fit. Ratings are contrasts
    (against the mean strength, or the anchor), so the direction fixed by the gauge term drops out.
    fit_options are those of fit_style_controlled; `fit`, when given, must be its result on the same rows.
    """
    _check_interval_options(confidence, fit_options)
    if fit is None:
        fit = fit_style_controlled(model_a, model_b, outcome, covariates, n_models, **fit_options)
    options = (
        dict(prior=DEFAULT_PRIOR, anchor=None, anchor_rating=1000.0, scale=400.0, base=10.0, weights=None) | fit_options
    )
    model_a, model_b, outcome, covariates, weights = _check_rows(
        model_a, model_b, outcome, covariates, n_models, options["weights"]
    )
    problem, _ = _make_problem(model_a, model_b, outcome, covariates, weights, n_models)
    models, p = problem.real_model.shape[0], covariates.shape[1]
    x = jnp.asarray(np.concatenate([fit.strengths, np.zeros(models - n_models), fit.coefficients]))
    bread, meat = (np.asarray(part) for part in _sandwich_parts(x, problem, jnp.float64(options["prior"])))
    # The padding models have no rows: they decouple (their bread is prior I, their meat 0). Drop them.
    keep = np.r_[np.arange(n_models), models + np.arange(p)]
    bread, meat = bread[np.ix_(keep, keep)], meat[np.ix_(keep, keep)]
    # A parameter without curvature (a covariate that is 0 on every row: a feature no battle reports) carries no
    # information and does not move in the bootstrap either (the Newton solve's ridge holds it): variance 0.
    active = np.flatnonzero(np.diagonal(bread) > 0)
    bread, meat = bread[np.ix_(active, active)], meat[np.ix_(active, active)]
    half = np.linalg.solve(bread, meat)  # H^-1 B
    covariance = np.zeros((keep.size, keep.size))
    covariance[np.ix_(active, active)] = np.linalg.solve(bread, half.T).T  # H^-1 B H^-1 (B and H symmetric)
    covariance = (covariance + covariance.T) / 2
    # Ratings are L theta: theta - mean(theta), or theta - theta_anchor.
    contrast = np.eye(n_models)
    if options["anchor"] is None:
        contrast -= 1.0 / n_models
    else:
        contrast[:, options["anchor"]] -= 1.0
    theta_cov = covariance[:n_models, :n_models]
    elo = options["scale"] / np.log(options["base"])
    ratings_se = elo * np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", contrast, theta_cov, contrast), 0.0))
    coef_se = np.sqrt(np.maximum(np.diagonal(covariance)[n_models:], 0.0))
    from scipy.stats import norm

    z = norm.ppf(0.5 + confidence / 2)
    return StyleSandwich(
        ratings_low=fit.ratings - z * ratings_se,
        ratings_high=fit.ratings + z * ratings_se,
        coef_low=fit.coefficients - z * coef_se,
        coef_high=fit.coefficients + z * coef_se,
        ratings_se=ratings_se,
        coef_se=coef_se,
        fit=fit,
    )
