"""Bradley-Terry maximum likelihood on per-pair counts, with half-win or Davidson ties, in float64 JAX.

The model: P(i beats j) = 1 / (1 + exp(theta_j - theta_i)) with theta the natural-log strength. Ratings are
reported on the Elo scale, rating = centre + scale / ln(base) * theta (400 points per factor of 10 in odds).

Ties:
- "half" (FastChat's convention): a tie counts as half a win for each side, so the pair term is
  (w_i + t/2) log p_ij + (w_j + t/2) log p_ji.
- "davidson" (Davidson 1970): P(i wins) = pi_i / D, P(tie) = nu sqrt(pi_i pi_j) / D with
  D = pi_i + pi_j + nu sqrt(pi_i pi_j); nu = exp(phi) is fitted with the strengths. Preferable when ties are
  common, because half-wins pull every tie-prone model towards the middle.

Existence: the plain MLE exists only when the "scored against" graph is strongly connected within each
connected piece of the comparison graph (Ford 1957): a model that never loses has an infinite MLE, and two
pieces that never met have no common scale. We therefore maximise a penalised likelihood with a small, named
prior: a zero-mean Gaussian on theta with precision `prior` (DEFAULT_PRIOR = 1e-3 per nat², a standard
deviation of about 32 nats, so it moves a model with a few hundred battles by far less than 0.01 Elo points)
and, for Davidson, the same prior on phi. Where the data do not bound a rating, the fit says so in
`BTFit.unbounded_above` / `unbounded_below` and warns (RankingWarning) instead of returning silent nonsense;
`prior=0` asks for the plain MLE and raises when it does not exist.

Solver: damped Newton with an Armijo backtracking line search on the concave penalised log-likelihood. The
counts are held as dense m×m matrices (O(m²) memory, like the Hessian itself); one compiled JAX function
evaluates the objective, its gradient and its Hessian from per-entry derivatives given by autodiff (row and
column sums, no scatter), and LAPACK solves the m+1 Newton system on the host. The compiled function depends
only on the number of models, so it is reused as the battle log grows, and it is small: compiling it is
part of every cold start.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

import ranking._jax  # noqa: F401  (float64 JAX)
from ranking.stats import PairCounts, battle_counts

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # optional: without it the solves are right, only slower when the cores are contended
    threadpool_limits = None

DEFAULT_PRIOR = 1e-3
TIE_MODELS = ("half", "davidson")
DEFAULT_TOL = 1e-10  # largest Newton step at convergence, in nats (4e-8 Elo points)
DEFAULT_MAX_ITER = 100


class RankingWarning(UserWarning):
    """The data cannot support part of a ranking (disconnected pieces, undefeated models...)."""


class BTFit(NamedTuple):
    """A fitted Bradley-Terry model.

    ratings: Elo scale (m,), NaN for a model without battles; strengths: natural-log theta as fitted (m,);
    log_likelihood: of the data under the fit, without the prior term; tie_strength: Davidson's nu (NaN for
    half-win ties); component: label of each model's connected piece of the comparison graph;
    unbounded_above / unbounded_below: the data put no upper / lower limit on that model's rating (its value
    there is set by the prior).
    """

    ratings: np.ndarray
    strengths: np.ndarray
    log_likelihood: float
    iterations: int
    converged: bool
    tie_strength: float
    component: np.ndarray
    unbounded_above: np.ndarray
    unbounded_below: np.ndarray


def check_options(ties: str, prior: float, scale: float, base: float) -> None:
    if ties not in TIE_MODELS:
        raise ValueError(f"ties must be one of {TIE_MODELS}, not {ties!r}")
    if not (np.isfinite(prior) and prior >= 0):
        raise ValueError("prior must be a finite precision >= 0")
    if not (np.isfinite(scale) and scale > 0 and np.isfinite(base) and base > 1):
        raise ValueError("scale must be > 0 and base > 1")


def _check_counts(counts: PairCounts) -> None:
    k = counts.first.shape
    for name in ("second", "first_wins", "second_wins", "ties"):
        if getattr(counts, name).shape != k:
            raise ValueError(f"PairCounts.{name} has shape {getattr(counts, name).shape}, expected {k}")
    if counts.n_models < 1:
        raise ValueError("there are no models to rank")
    if k[0] and (
        counts.first.min() < 0 or counts.second.max() >= counts.n_models or np.any(counts.first == counts.second)
    ):
        raise ValueError("pair codes must be distinct models in [0, n_models)")
    for name in ("first_wins", "second_wins", "ties"):
        values = getattr(counts, name)
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise ValueError(f"PairCounts.{name} must be finite and non-negative")


class _Problem(NamedTuple):
    """Dense statistics of one fitting problem, indexed by models (unplayed pairs and the diagonal are zero).

    Dense m×m arrays cost O(m²) like the Hessian that Newton needs anyway, and every derivative then becomes
    an elementwise expression with row and column sums: no gather or scatter, which keeps XLA's compile time
    (the cold path) and run time low.
    """

    wins: np.ndarray | jax.Array  # (m, m) float64: wins[i, j] = battles i won against j
    ties: np.ndarray | jax.Array  # (m, m) float64, symmetric: ties of i and j
    component: np.ndarray | jax.Array  # (m,) int32, used for the gauge when prior == 0


def dense_counts(counts: PairCounts) -> tuple[np.ndarray, np.ndarray]:
    """(wins, ties) as dense (m, m) float64 arrays: wins[i, j] = wins of i over j, ties symmetric."""
    m = counts.n_models
    first, second = counts.first.astype(np.int64), counts.second.astype(np.int64)
    forward, backward = first * m + second, second * m + first
    wins = np.bincount(forward, counts.first_wins, m * m) + np.bincount(backward, counts.second_wins, m * m)
    ties = np.bincount(forward, counts.ties, m * m) + np.bincount(backward, counts.ties, m * m)
    return wins.reshape(m, m), ties.reshape(m, m)


def make_problem(counts: PairCounts, component: np.ndarray, *, batch: bool = False) -> _Problem:
    """The dense problem, as numpy arrays (with a leading axis of one if `batch`).

    Numpy, because compiled functions take numpy arrays as they are, while building device arrays here
    would compile a small kernel for every conversion on a cold start.
    """
    wins, ties = dense_counts(counts)
    problem = _Problem(wins=wins, ties=ties, component=np.asarray(component, np.int32))
    return _Problem(*(a[None] for a in problem)) if batch else problem


# ----------------------------------------------------------------------------------------------- the model


def _pair_loglik(d, phi, first_wins, second_wins, ties, davidson: bool):
    """Log-likelihood of one pair's counts given d = theta_first - theta_second and phi = log nu."""
    if davidson:
        n = first_wins + second_wins + ties
        # log(e^{d/2} + e^{-d/2} + e^phi), the Davidson normaliser divided by sqrt(pi_i pi_j), without overflow.
        log_norm = jnp.logaddexp(jnp.logaddexp(d / 2, -d / 2), phi)
        return (first_wins - second_wins) * d / 2 + ties * phi - n * log_norm
    return (first_wins + ties / 2) * jax.nn.log_sigmoid(d) + (second_wins + ties / 2) * jax.nn.log_sigmoid(-d)


def _entry_terms(d, phi, wins, ties, davidson: bool):
    """One ordered entry (i, j) of the dense log-likelihood and its derivatives, d = theta_i - theta_j.

    The entries (i, j) and (j, i) of a pair add up to _pair_loglik of that pair (each holds its side's wins
    and half the ties), so the data log-likelihood is the plain sum over the matrix. Returns
    (value, d/dd, d/dphi, d2/dd2, d2/dd dphi, d2/dphi2), written out rather than left to autodiff because
    this is the whole cost of a Newton iteration and of compiling it (tests check them against autodiff).
    """
    score = wins + ties / 2
    if davidson:
        # a = e^{d/2}, b = e^{-d/2}, v = e^phi, D = a + b + v, all scaled by e^{-top} so nothing overflows.
        top = jnp.maximum(jnp.abs(d) / 2, phi)
        a, b, v = jnp.exp(d / 2 - top), jnp.exp(-d / 2 - top), jnp.exp(phi - top)
        norm = a + b + v
        odd, even, tie = (a - b) / norm, (a + b) / norm, v / norm
        value = wins * d / 2 + ties * phi / 2 - score * (top + jnp.log(norm))
        return (
            value,
            wins / 2 - score * odd / 2,
            ties / 2 - score * tie,
            -score * (even - odd**2) / 4,
            score * odd * tie / 2,
            -score * tie * even,
        )
    p = jax.nn.sigmoid(d)
    zero = jnp.zeros_like(d)
    return score * jax.nn.log_sigmoid(d), score * (1 - p), zero, -score * p * (1 - p), zero, zero


_pair_grad = jax.vmap(jax.grad(_pair_loglik, argnums=(0, 1)), in_axes=(0, None, 0, 0, 0, None))


def _gauge_weight(prior):
    """With no prior the likelihood is flat along per-component shifts; pinning each component's sum to zero
    (a penalty that is zero at the optimum, so it biases nothing) makes the Newton system definite."""
    return jnp.where(prior > 0, 0.0, 1.0)


def _same_component(problem: _Problem):
    """C[i, j] = 1 where i and j lie in one piece: C @ theta is each model's component sum."""
    return (problem.component[:, None] == problem.component[None, :]).astype(jnp.float64)


def _component_sums(problem: _Problem, theta):
    """Each model's component sum, C @ theta, as a row sum: a matrix product here costs more to compile."""
    return jnp.sum(_same_component(problem) * theta[None, :], axis=1)


def _entries(x, problem: _Problem, davidson: bool):
    theta, phi = x[:-1], x[-1]
    return _entry_terms(theta[:, None] - theta[None, :], phi, problem.wins, problem.ties, davidson)


def _data_loglik(x, problem: _Problem, davidson: bool):
    return jnp.sum(_entries(x, problem, davidson)[0])


def _penalty(x, problem: _Problem, prior, davidson: bool):
    theta, phi = x[:-1], x[-1]
    return prior / 2 * (jnp.sum(theta**2) + (phi**2 if davidson else 0.0)) + _gauge_weight(prior) / 2 * jnp.sum(
        theta * _component_sums(problem, theta)
    )


def _objective(x, problem: _Problem, prior, davidson: bool):
    """Penalised log-likelihood of params x = (theta_0..theta_{m-1}, phi)."""
    return _data_loglik(x, problem, davidson) - _penalty(x, problem, prior, davidson)


def _assemble_gradient(x, terms, problem: _Problem, prior, davidson: bool):
    # entry (a, b) depends on theta_a - theta_b: its derivative adds to a and subtracts from b
    theta, phi = x[:-1], x[-1]
    _, g_d, g_phi = terms[:3]
    g_theta = g_d.sum(axis=1) - g_d.sum(axis=0) - prior * theta - _gauge_weight(prior) * _component_sums(problem, theta)
    g_last = jnp.sum(g_phi) - prior * phi if davidson else jnp.zeros(())
    return jnp.concatenate([g_theta, g_last[None]])


def _assemble_negative_hessian(terms, problem: _Problem, prior, davidson: bool):
    _, _, _, h_dd, h_dp, h_pp = terms
    m = h_dd.shape[0]
    # entry (a, b)'s curvature lands on (a, a), (b, b) and, negated, on (a, b) and (b, a)
    w = -(h_dd + h_dd.T)
    h_theta = jnp.diag(w.sum(axis=1)) - w + prior * jnp.eye(m) + _gauge_weight(prior) * _same_component(problem)
    if davidson:
        cross = -(h_dp.sum(axis=1) - h_dp.sum(axis=0))
        corner = prior - jnp.sum(h_pp)
    else:  # phi is not a parameter here; a unit pivot keeps the system regular
        cross, corner = jnp.zeros(m), jnp.ones(())
    return jnp.block([[h_theta, cross[:, None]], [cross[None, :], corner[None, None]]])


def gradient(x, problem: _Problem, prior, davidson: bool):
    """Gradient of the penalised log-likelihood: row minus column sums of the per-entry derivatives."""
    return _assemble_gradient(x, _entries(x, problem, davidson), problem, prior, davidson)


def _negative_hessian(x, problem: _Problem, prior, davidson: bool):
    """Minus the Hessian of the penalised log-likelihood: positive definite, (m+1, m+1)."""
    return _assemble_negative_hessian(_entries(x, problem, davidson), problem, prior, davidson)


def _evaluate(x, problem: _Problem, prior, davidson: bool):
    """Everything one Newton iteration needs, in one pass: (objective, data log-likelihood, gradient, -Hessian)."""
    terms = _entries(x, problem, davidson)
    data = jnp.sum(terms[0])
    return (
        data - _penalty(x, problem, prior, davidson),
        data,
        _assemble_gradient(x, terms, problem, prior, davidson),
        _assemble_negative_hessian(terms, problem, prior, davidson),
    )


# One compiled function per (batch, m, tie model): fits of a single problem are a batch of one.
_evaluate_batch = jax.jit(jax.vmap(_evaluate, in_axes=(0, _Problem(0, 0, 0), None, None)), static_argnums=3)
pair_gradient = jax.jit(_pair_grad, static_argnums=5)


def negative_hessian(x, problem: _Problem, prior, davidson: bool) -> np.ndarray:
    """Minus the Hessian at x, (m+1, m+1) numpy, through the same compiled function as the Newton solver."""
    batch = _Problem(*(np.asarray(a)[None] for a in problem))
    return np.asarray(_evaluate_batch(np.asarray(x, np.float64)[None], batch, np.float64(prior), davidson)[3])[0]


def one_blas_thread():
    """A context in which LAPACK runs on one thread (when threadpoolctl is installed).

    The Newton systems are small (m+1 unknowns) and are solved right after a compiled evaluation: OpenBLAS's
    worker threads and XLA's then contend for the cores, and a 201-model Cholesky that takes about 1 ms on
    one thread was measured at 0.15-0.2 s on two.
    """
    return threadpool_limits(1, user_api="blas") if threadpool_limits else contextlib.nullcontext()


def newton(x0, problem: _Problem, prior, tol, *, davidson: bool, max_iter: int):
    """Damped Newton ascent on a batch of problems (leading axis of x0 and of every array of `problem`).

    Each iteration evaluates objective, gradient and Hessian in one compiled call for the whole batch and
    solves the Newton systems by Cholesky in LAPACK; an Armijo backtracking line search keeps every step an
    ascent. Finished members stay fixed. Returns numpy (x, iterations, converged, data log-likelihood).
    """
    with one_blas_thread():
        return _damped_newton(x0, problem, np.float64(prior), tol, davidson, max_iter)


def _damped_newton(x0, problem: _Problem, prior_, tol, davidson: bool, max_iter: int):
    x = np.array(x0, np.float64)
    value, data, grad, hess = map(np.array, _evaluate_batch(x, problem, prior_, davidson))
    batch = x.shape[0]
    iterations = np.zeros(batch, int)
    done = np.zeros(batch, bool)
    broken = np.zeros(batch, bool)  # a Hessian that is not positive definite: numerically lost, not converged
    for _ in range(max_iter):
        active = ~done & ~broken & np.all(np.isfinite(grad), axis=1)
        if not active.any():
            break
        direction = np.zeros_like(x)
        for i in np.flatnonzero(active):
            try:
                direction[i] = scipy.linalg.cho_solve(scipy.linalg.cho_factor(hess[i]), grad[i])
            except np.linalg.LinAlgError:
                active[i], broken[i] = False, True
        slope = np.einsum("bi,bi->b", grad, direction)
        t = np.where(active, 1.0, 0.0)
        while True:
            trial = x + t[:, None] * direction
            new = list(map(np.array, _evaluate_batch(trial, problem, prior_, davidson)))
            # Armijo condition, with a floor on t so a flat objective (at convergence) cannot loop.
            short = active & (new[0] < value + 1e-4 * t * slope) & (t > 1e-8)
            if not short.any():
                break
            t = np.where(short, t / 2, t)
        size = np.max(np.abs(t[:, None] * direction), axis=1)
        x = np.where(active[:, None], trial, x)
        for old, fresh in zip((value, data, grad, hess), new):
            old[active] = fresh[active]
        iterations += active
        done |= active & (size < tol)
    return x, iterations, done, data


# ------------------------------------------------------------------------------------------- diagnostics


def comparison_graph(counts: PairCounts, *, ties: str = "half"):
    """Components of the comparison graph and the models whose rating the data leave unbounded.

    Returns (component labels (m,), unbounded_above (m,), unbounded_below (m,)). Within a connected piece, the
    MLE exists iff the directed graph "i scored against j" (a win, or a tie, counting both ways) is strongly
    connected. Otherwise the pieces of that digraph form a hierarchy: a strongly connected group that nobody
    outside it ever scored against has no upper limit, one that never scored against anybody outside it has
    no lower limit. The flags are relative to the piece's reference group, its strong group with the most
    battles (the bulk of the leaderboard, whose own intervals stay finite); a group between the top and the
    reference is open on both sides.
    """
    m = counts.n_models
    played = counts.totals > 0
    f, s = counts.first[played], counts.second[played]
    both = coo_matrix((np.ones(f.size), (f, s)), shape=(m, m))
    n_components, component = connected_components(both, directed=False)
    forward = (counts.first_wins + counts.ties)[played] > 0  # first scored against second
    backward = (counts.second_wins + counts.ties)[played] > 0
    src = np.concatenate([f[forward], s[backward]])
    dst = np.concatenate([s[forward], f[backward]])
    scored = coo_matrix((np.ones(src.size), (src, dst)), shape=(m, m)).tocsr()
    _, strong = connected_components(scored, directed=True, connection="strong")
    # Edges between strong components: who scored against whom across the hierarchy.
    across = strong[src] != strong[dst]
    scored_out = np.zeros(m, bool)
    scored_in = np.zeros(m, bool)
    scored_out[strong[src[across]]] = True  # the strong component scored against someone outside it
    scored_in[strong[dst[across]]] = True  # someone outside scored against it
    # In each connected piece the strong group with the most battles is the reference: the scale is its
    # scale, and the groups that are not tied to it by results both ways are the ones left unbounded.
    battles = battle_counts(counts)
    group_battles = np.bincount(strong, weights=battles, minlength=strong.max() + 1)
    group_component = np.zeros(group_battles.size, int)
    group_component[strong] = component
    reference = np.zeros(n_components, int)
    for group in np.argsort(group_battles, kind="stable"):  # the largest is written last
        reference[group_component[group]] = group
    off_reference = strong != reference[component]
    unbounded_above = off_reference & ~scored_in[strong]
    unbounded_below = off_reference & ~scored_out[strong]
    # A group between the top and the reference is tied to neither by results both ways: both sides open.
    middle = off_reference & scored_in[strong] & scored_out[strong]
    unbounded_above |= middle
    unbounded_below |= middle
    return component, unbounded_above, unbounded_below


def _warn_about_graph(component, unbounded_above, unbounded_below, played, names, prior):
    label = (lambda i: names[i]) if names is not None else (lambda i: f"model {i}")
    pieces = np.unique(component[played]).size
    if pieces > 1:
        warnings.warn(
            RankingWarning(
                f"the comparison graph has {pieces} pieces that never met: ratings in different "
                f"pieces are related only through the prior (precision {prior:g}), not by any battle"
            ),
            stacklevel=3,
        )
    loose = np.flatnonzero(unbounded_above | unbounded_below)
    if loose.size:
        shown = ", ".join(label(i) for i in loose[:5]) + (" ..." if loose.size > 5 else "")
        warnings.warn(
            RankingWarning(
                f"{loose.size} model(s) never lost or never won against the rest of their piece ({shown}): the data "
                f"put no limit on their rating on that side, which is set by the prior (precision {prior:g})"
            ),
            stacklevel=3,
        )


# ------------------------------------------------------------------------------------------- public API


def to_elo(
    strengths,
    *,
    anchor: int | None = None,
    anchor_rating: float = 1000.0,
    scale: float = 400.0,
    base: float = 10.0,
    played=None,
):
    """Natural-log strengths -> Elo-scale ratings, centred on mean `anchor_rating` or with `anchor` pinned.

    Works on (..., m) arrays, so bootstrap samples convert in one call. `played` (bool (m,)) marks the models
    that have battles: only they enter the mean, and the others get NaN, since the data say nothing of them.
    """
    theta = np.asarray(strengths, np.float64)
    played = np.ones(theta.shape[-1], bool) if played is None else np.asarray(played, bool)
    if anchor is not None:
        reference = theta[..., anchor][..., None]
    else:
        reference = theta[..., played].mean(axis=-1, keepdims=True)
    return np.where(played, anchor_rating + scale / np.log(base) * (theta - reference), np.nan)


def fit_bradley_terry(
    counts: PairCounts,
    *,
    ties: str = "half",
    prior: float = DEFAULT_PRIOR,
    anchor: int | None = None,
    anchor_rating: float = 1000.0,
    scale: float = 400.0,
    base: float = 10.0,
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_MAX_ITER,
    names=None,
    warn: bool = True,
) -> BTFit:
    """Maximum (penalised) likelihood Bradley-Terry fit on per-pair counts.

    `anchor` (a model index) pins that model at `anchor_rating`; otherwise the mean rating is `anchor_rating`.
    `names` (optional, one per model) only makes warnings readable. Raises ValueError on invalid input, when
    prior=0 and the plain MLE does not exist, and RuntimeError if Newton does not converge in max_iter steps.
    """
    check_options(ties, prior, scale, base)
    _check_counts(counts)
    m = counts.n_models
    played = battle_counts(counts) > 0
    if not played.any():
        raise ValueError("there are no battles to rank")
    if anchor is not None and not (0 <= anchor < m and played[anchor]):
        raise ValueError(f"anchor must be the index of a model with battles, in [0, {m})")
    davidson = ties == "davidson"
    component, unbounded_above, unbounded_below = comparison_graph(counts, ties=ties)
    if prior == 0:
        if np.any(unbounded_above | unbounded_below):
            raise ValueError(
                "the plain maximum-likelihood estimate does not exist for these battles (a model "
                "never lost or never won within its piece of the comparison graph); use prior > 0"
            )
        if davidson and counts.ties.sum() == 0:
            raise ValueError(
                "the Davidson tie strength has no maximum-likelihood estimate without any tie; "
                "use prior > 0 or ties='half'"
            )
    elif warn:
        _warn_about_graph(component, unbounded_above, unbounded_below, played, names, prior)

    problem = make_problem(counts, component, batch=True)
    x, iterations, converged, data_loglik = newton(
        np.zeros((1, m + 1)), problem, prior, tol, davidson=davidson, max_iter=max_iter
    )
    if not (converged[0] and np.all(np.isfinite(x))):
        raise RuntimeError(f"Bradley-Terry Newton iterations did not converge in {max_iter} steps")
    return _make_fit(
        x[0],
        float(data_loglik[0]),
        int(iterations[0]),
        (component, unbounded_above, unbounded_below),
        played,
        davidson,
        anchor=anchor,
        anchor_rating=anchor_rating,
        scale=scale,
        base=base,
    )


def _make_fit(x, log_likelihood, iterations, graph, played, davidson, **elo_options) -> BTFit:
    theta = x[:-1]
    return BTFit(
        ratings=to_elo(theta, played=played, **elo_options),
        strengths=theta,
        log_likelihood=log_likelihood,
        iterations=iterations,
        converged=True,
        tie_strength=float(np.exp(x[-1])) if davidson else float("nan"),
        component=graph[0],
        unbounded_above=graph[1],
        unbounded_below=graph[2],
    )


def fit_categories(
    counts_by_category: list[PairCounts],
    *,
    ties: str = "half",
    prior: float = DEFAULT_PRIOR,
    anchor: int | None = None,
    anchor_rating: float = 1000.0,
    scale: float = 400.0,
    base: float = 10.0,
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_MAX_ITER,
    names=None,
    warn: bool = True,
) -> list[BTFit]:
    """One Bradley-Terry fit per category, solved together in one vmapped Newton run.

    All categories are indexed by the same models (a model absent from a category has no battles there and
    gets a NaN rating in it), so their dense problems share one shape and one compiled evaluation: each
    Newton iteration evaluates every category in one call. The results equal separate `fit_bradley_terry`
    calls.
    """
    check_options(ties, prior, scale, base)
    if not counts_by_category:
        return []
    m = counts_by_category[0].n_models
    if any(c.n_models != m for c in counts_by_category):
        raise ValueError("all categories must be counted over the same models")
    davidson = ties == "davidson"
    graphs, played = [], []
    for counts in counts_by_category:
        _check_counts(counts)
        graph = comparison_graph(counts, ties=ties)
        has_battles = battle_counts(counts) > 0
        if not has_battles.any():
            raise ValueError("a category without battles cannot be ranked")
        if prior == 0 and np.any(graph[1] | graph[2]):
            raise ValueError(
                "the plain maximum-likelihood estimate does not exist in one of the categories; use prior > 0"
            )
        if warn and prior > 0:
            _warn_about_graph(*graph, has_battles, names, prior)
        graphs.append(graph)
        played.append(has_battles)
    problems = [make_problem(c, g[0]) for c, g in zip(counts_by_category, graphs)]
    stacked = _Problem(*(np.stack(arrays) for arrays in zip(*problems)))
    xs, iterations, converged, data_loglik = newton(
        np.zeros((len(problems), m + 1)), stacked, prior, tol, davidson=davidson, max_iter=max_iter
    )
    if not (converged.all() and np.all(np.isfinite(xs))):
        raise RuntimeError(f"Bradley-Terry Newton iterations did not converge in {max_iter} steps")
    return [
        _make_fit(
            x,
            float(ll),
            int(it),
            graph,
            has_battles,
            davidson,
            anchor=anchor,
            anchor_rating=anchor_rating,
            scale=scale,
            base=base,
        )
        for x, ll, it, graph, has_battles in zip(xs, data_loglik, iterations, graphs, played)
    ]
