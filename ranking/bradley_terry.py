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

Solver: damped Newton with an Armijo backtracking line search on the concave penalised log-likelihood, with the
per-pair derivatives from JAX autodiff and the Hessian assembled by scatter-adds (O(K + m²) per iteration
plus an m³ Cholesky). The pair arrays are padded to size buckets so that compiled code is reused across
problems of similar size.
"""
from __future__ import annotations

import warnings
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

import ranking  # noqa: F401  (float64 JAX)
from ranking.stats import PairCounts, battle_counts

DEFAULT_PRIOR = 1e-3
TIE_MODELS = ("half", "davidson")
DEFAULT_TOL = 1e-10  # largest Newton step at convergence, in nats (4e-8 Elo points)
DEFAULT_MAX_ITER = 100


class RankingWarning(UserWarning):
    """The data cannot support part of a ranking (disconnected pieces, undefeated models...)."""


class BTFit(NamedTuple):
    """A fitted Bradley-Terry model.

    ratings: Elo scale (m,), NaN for a model without battles; strengths: natural-log theta as fitted (m,); log_likelihood: of the data under the
    fit, without the prior term; tie_strength: Davidson's nu (NaN for half-win ties); component: label of each
    model's connected piece of the comparison graph; unbounded_above / unbounded_below: the data put no upper /
    lower limit on that model's rating (its value there is set by the prior).
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


class _Problem(NamedTuple):
    """Padded device arrays of one fitting problem (padding rows have zero counts)."""

    first: jax.Array
    second: jax.Array
    first_wins: jax.Array
    second_wins: jax.Array
    ties: jax.Array
    component: jax.Array  # (m,) int, used for the gauge when prior == 0


def bucket_size(k: int) -> int:
    """Round k up to 2^n or 1.5·2^n so that compiled functions are reused across similar problem sizes."""
    size = 16
    while size < k:
        if size * 3 // 2 >= k:
            return size * 3 // 2
        size *= 2
    return size


def _check_options(ties: str, prior: float, scale: float, base: float) -> None:
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
    if k[0] and (counts.first.min() < 0 or counts.second.max() >= counts.n_models
                 or np.any(counts.first == counts.second)):
        raise ValueError("pair codes must be distinct models in [0, n_models)")
    for name in ("first_wins", "second_wins", "ties"):
        values = getattr(counts, name)
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise ValueError(f"PairCounts.{name} must be finite and non-negative")


def make_problem(counts: PairCounts, component: np.ndarray) -> _Problem:
    k = counts.first.shape[0]
    padded = bucket_size(k)

    def pad(values, dtype):
        out = np.zeros(padded, dtype)
        out[:k] = values
        return jnp.asarray(out)

    # Padding rows are the pair (0, 1) with no battles (or (0, 0) for a lone model): zero contribution.
    second_fill = np.ones(padded, np.int32) if counts.n_models > 1 else np.zeros(padded, np.int32)
    second_fill[:k] = counts.second
    return _Problem(
        first=pad(counts.first, np.int32),
        second=jnp.asarray(second_fill),
        first_wins=pad(counts.first_wins, np.float64),
        second_wins=pad(counts.second_wins, np.float64),
        ties=pad(counts.ties, np.float64),
        component=jnp.asarray(component, dtype=jnp.int32),
    )


# ----------------------------------------------------------------------------------------------- the model

def _pair_loglik(d, phi, first_wins, second_wins, ties, davidson: bool):
    """Log-likelihood of one pair's counts given d = theta_first - theta_second and phi = log nu."""
    if davidson:
        n = first_wins + second_wins + ties
        # log(e^{d/2} + e^{-d/2} + e^phi), the Davidson normaliser divided by sqrt(pi_i pi_j), without overflow.
        log_norm = jnp.logaddexp(jnp.logaddexp(d / 2, -d / 2), phi)
        return (first_wins - second_wins) * d / 2 + ties * phi - n * log_norm
    return ((first_wins + ties / 2) * jax.nn.log_sigmoid(d)
            + (second_wins + ties / 2) * jax.nn.log_sigmoid(-d))


_pair_grad = jax.vmap(jax.grad(_pair_loglik, argnums=(0, 1)), in_axes=(0, None, 0, 0, 0, None))
_pair_hess = jax.vmap(jax.hessian(_pair_loglik, argnums=(0, 1)), in_axes=(0, None, 0, 0, 0, None))


def _gauge_weight(prior):
    """With no prior the likelihood is flat along per-component shifts; pinning each component's sum to zero
    (a penalty that is zero at the optimum, so it biases nothing) makes the Newton system definite."""
    return jnp.where(prior > 0, 0.0, 1.0)


def _objective(x, problem: _Problem, prior, davidson: bool):
    """Penalised log-likelihood of params x = (theta_0..theta_{m-1}, phi)."""
    theta, phi = x[:-1], x[-1]
    d = theta[problem.first] - theta[problem.second]
    data = jnp.sum(_pair_loglik(d, phi, problem.first_wins, problem.second_wins, problem.ties, davidson))
    component_sums = jax.ops.segment_sum(theta, problem.component, num_segments=theta.shape[0])
    penalty = prior / 2 * (jnp.sum(theta**2) + (phi**2 if davidson else 0.0))
    gauge = _gauge_weight(prior) / 2 * jnp.sum(component_sums**2)
    return data - penalty - gauge


def _data_loglik(x, problem: _Problem, davidson: bool):
    theta, phi = x[:-1], x[-1]
    d = theta[problem.first] - theta[problem.second]
    return jnp.sum(_pair_loglik(d, phi, problem.first_wins, problem.second_wins, problem.ties, davidson))


def _gradient(x, problem: _Problem, prior, davidson: bool):
    """Gradient of the penalised log-likelihood, assembled from per-pair derivatives by scatter-adds."""
    theta, phi = x[:-1], x[-1]
    m = theta.shape[0]
    d = theta[problem.first] - theta[problem.second]
    g_d, g_phi = _pair_grad(d, phi, problem.first_wins, problem.second_wins, problem.ties, davidson)
    component_sums = jax.ops.segment_sum(theta, problem.component, num_segments=m)
    g_theta = (jnp.zeros(m).at[problem.first].add(g_d).at[problem.second].add(-g_d)
               - prior * theta - _gauge_weight(prior) * component_sums[problem.component])
    g_last = jnp.sum(g_phi) - prior * phi if davidson else jnp.zeros(())
    return jnp.concatenate([g_theta, g_last[None]])


def _negative_hessian(x, problem: _Problem, prior, davidson: bool):
    """Minus the Hessian of the penalised log-likelihood: positive definite, (m+1, m+1)."""
    theta, phi = x[:-1], x[-1]
    m = theta.shape[0]
    first, second = problem.first, problem.second
    d = theta[first] - theta[second]
    (h_dd, h_dp), (_, h_pp) = _pair_hess(d, phi, problem.first_wins, problem.second_wins, problem.ties, davidson)
    h = (jnp.zeros((m + 1, m + 1))
         .at[first, first].add(-h_dd).at[second, second].add(-h_dd)
         .at[first, second].add(h_dd).at[second, first].add(h_dd))
    same_component = (problem.component[:, None] == problem.component[None, :]).astype(jnp.float64)
    h = h.at[:m, :m].add(prior * jnp.eye(m) + _gauge_weight(prior) * same_component)
    if davidson:
        cross = jnp.zeros(m).at[first].add(-h_dp).at[second].add(h_dp)
        h = h.at[:m, m].set(cross).at[m, :m].set(cross).at[m, m].set(prior - jnp.sum(h_pp))
    else:
        h = h.at[m, m].set(1.0)  # phi is not a parameter here; a unit pivot keeps the system regular
    return h


# Compiled entry points for callers outside a jitted function (eager JAX would compile every primitive).
negative_hessian = jax.jit(_negative_hessian, static_argnums=3)
pair_gradient = jax.jit(_pair_grad, static_argnums=5)


@partial(jax.jit, static_argnames=("davidson", "max_iter"))
def _newton(x0, problem: _Problem, prior, tol, *, davidson: bool, max_iter: int):
    """Damped Newton ascent; returns (x, iterations, converged)."""

    def step(state):
        x, _, it, _ = state
        g = _gradient(x, problem, prior, davidson)
        h = _negative_hessian(x, problem, prior, davidson)
        direction = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(h), g)
        value = _objective(x, problem, prior, davidson)
        slope = jnp.dot(g, direction)

        def shrink(ls):
            t, _ = ls
            return t / 2, _objective(x + t / 2 * direction, problem, prior, davidson)

        def insufficient(ls):
            t, new_value = ls
            # Armijo condition, with a floor on t so a flat objective (at convergence) cannot loop.
            return (new_value < value + 1e-4 * t * slope) & (t > 1e-8)

        t, _ = jax.lax.while_loop(insufficient, shrink,
                                  (1.0, _objective(x + direction, problem, prior, davidson)))
        size = jnp.max(jnp.abs(t * direction))
        return x + t * direction, size, it + 1, size < tol

    def keep_going(state):
        _, size, it, done = state
        return (~done) & (it < max_iter) & ~jnp.isnan(size)

    init = (x0, jnp.inf, 0, False)
    x, size, it, done = jax.lax.while_loop(keep_going, step, init)
    return x, it, done


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
        warnings.warn(RankingWarning(
            f"the comparison graph has {pieces} pieces that never met: ratings in different "
            f"pieces are related only through the prior (precision {prior:g}), not by any battle"), stacklevel=3)
    loose = np.flatnonzero(unbounded_above | unbounded_below)
    if loose.size:
        shown = ", ".join(label(i) for i in loose[:5]) + (" ..." if loose.size > 5 else "")
        warnings.warn(RankingWarning(
            f"{loose.size} model(s) never lost or never won against the rest of their piece ({shown}): the data "
            f"put no limit on their rating on that side, which is set by the prior (precision {prior:g})"),
            stacklevel=3)


# ------------------------------------------------------------------------------------------- public API

def to_elo(strengths, *, anchor: int | None = None, anchor_rating: float = 1000.0, scale: float = 400.0,
           base: float = 10.0, played=None):
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


def fit_bradley_terry(counts: PairCounts, *, ties: str = "half", prior: float = DEFAULT_PRIOR,
                      anchor: int | None = None, anchor_rating: float = 1000.0, scale: float = 400.0,
                      base: float = 10.0, tol: float = DEFAULT_TOL, max_iter: int = DEFAULT_MAX_ITER,
                      names=None, warn: bool = True) -> BTFit:
    """Maximum (penalised) likelihood Bradley-Terry fit on per-pair counts.

    `anchor` (a model index) pins that model at `anchor_rating`; otherwise the mean rating is `anchor_rating`.
    `names` (optional, one per model) only makes warnings readable. Raises ValueError on invalid input, when
    prior=0 and the plain MLE does not exist, and RuntimeError if Newton does not converge in max_iter steps.
    """
    _check_options(ties, prior, scale, base)
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
            raise ValueError("the plain maximum-likelihood estimate does not exist for these battles (a model "
                             "never lost or never won within its piece of the comparison graph); use prior > 0")
        if davidson and counts.ties.sum() == 0:
            raise ValueError("the Davidson tie strength has no maximum-likelihood estimate without any tie; "
                             "use prior > 0 or ties='half'")
    elif warn:
        _warn_about_graph(component, unbounded_above, unbounded_below, played, names, prior)

    problem = make_problem(counts, component)
    x, iterations, converged = _newton(jnp.zeros(m + 1), problem, jnp.float64(prior), jnp.float64(tol),
                                       davidson=davidson, max_iter=max_iter)
    x = np.asarray(x)
    if not (bool(converged) and np.all(np.isfinite(x))):
        raise RuntimeError(f"Bradley-Terry Newton iterations did not converge in {max_iter} steps")
    theta = x[:-1]
    return BTFit(
        ratings=to_elo(theta, anchor=anchor, anchor_rating=anchor_rating, scale=scale, base=base, played=played),
        strengths=theta,
        log_likelihood=float(_data_loglik(jnp.asarray(x), problem, davidson)),
        iterations=int(iterations),
        converged=True,
        tie_strength=float(np.exp(x[-1])) if davidson else float("nan"),
        component=component,
        unbounded_above=unbounded_above,
        unbounded_below=unbounded_below,
    )


def fit_categories(counts_by_category: list[PairCounts], *, ties: str = "half", prior: float = DEFAULT_PRIOR,
                   anchor: int | None = None, anchor_rating: float = 1000.0, scale: float = 400.0,
                   base: float = 10.0, tol: float = DEFAULT_TOL, max_iter: int = DEFAULT_MAX_ITER,
                   names=None, warn: bool = True) -> list[BTFit]:
    """One Bradley-Terry fit per category, solved together in one vmapped Newton run.

    All categories are indexed by the same models (a model absent from a category has no battles there and
    gets a NaN rating in it), so their problems share one shape, padded to the largest pair count, and one
    compiled solver. The results equal separate `fit_bradley_terry` calls.
    """
    _check_options(ties, prior, scale, base)
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
            raise ValueError("the plain maximum-likelihood estimate does not exist in one of the categories; "
                             "use prior > 0")
        if warn and prior > 0:
            _warn_about_graph(*graph, has_battles, names, prior)
        graphs.append(graph)
        played.append(has_battles)
    padded = bucket_size(max(c.first.shape[0] for c in counts_by_category))
    problems = [make_problem(c, g[0]) for c, g in zip(counts_by_category, graphs)]
    stacked = _Problem(*[jnp.stack([jnp.pad(getattr(p, f), (0, padded - getattr(p, f).shape[0]))
                                    if f != "component" else getattr(p, f) for p in problems])
                         for f in _Problem._fields])
    # pad() added zero-count rows (pair (0, 0)), which contribute nothing.
    solve = jax.vmap(lambda problem: _newton(jnp.zeros(m + 1), problem, jnp.float64(prior), jnp.float64(tol),
                                             davidson=davidson, max_iter=max_iter))
    xs, iterations, converged = solve(stacked)
    data_loglik = jax.vmap(lambda x, problem: _data_loglik(x, problem, davidson))(xs, stacked)
    xs, iterations, converged = np.asarray(xs), np.asarray(iterations), np.asarray(converged)
    if not (converged.all() and np.all(np.isfinite(xs))):
        raise RuntimeError(f"Bradley-Terry Newton iterations did not converge in {max_iter} steps")
    return [BTFit(ratings=to_elo(x[:-1], anchor=anchor, anchor_rating=anchor_rating, scale=scale, base=base,
                                 played=has_battles),
                  strengths=x[:-1], log_likelihood=float(ll), iterations=int(it), converged=True,
                  tie_strength=float(np.exp(x[-1])) if davidson else float("nan"),
                  component=graph[0], unbounded_above=graph[1], unbounded_below=graph[2])
            for x, ll, it, graph, has_battles in zip(xs, data_loglik, iterations, graphs, played)]
