"""Which pair of models a voter sees next: the sampling policies, as pure functions over arrays.

Every policy is a published rule giving each unordered pair {i, j} of the models that can answer a prompt a
non-negative odds o_ij; the pair is drawn with probability o_ij / sum of all odds. None of them reads who made a
model, so no lab gets more than the rule gives its models.

- "uniform": o_ij = 1. Every pair, hence every model, equally often.
- "weighted": o_ij = w_i w_j, w the operators' published per-model weights (0: never drawn).
- "new_model_boost": o_ij = b_i b_j with b_i = w_i * boost while model i has fewer than `provisional_votes`
  counted votes (its rating is provisional), else w_i: new models reach a stable rating sooner.
- "active": a mixture. With probability `floor` the pair is drawn by the weighted rule; otherwise with odds
  w_i w_j s_ij ** focus, s_ij the expected reduction, by one vote on {i, j}, of the uncertainty that the ranking
  publishes (see `active_pair_scores`). Every model therefore keeps at least `floor` times its share under the
  weighted rule, whatever the fit says. `focus` concentrates the draws on the pairs with most to gain: with
  focus 1 the many pairs that each gain a little (far-apart models, p near 0 or 1) still took about half the
  draws in bench/sampling.py, and the active policy gained little over uniform; with focus 3 the draws go
  mostly to close, uncertain pairs while every pair with a gain keeps a chance.

The active score reads only the current fit: each model's rating and variance (from a stored snapshot's
intervals, updated by the votes counted since with one diagonal Newton step, `update_with_votes`). Nothing
here refits, so a battle's pair costs microseconds.

Numpy only (no JAX, no scipy): the service imports this on its battle path.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

POLICIES = ("uniform", "weighted", "new_model_boost", "active")
NATS_PER_ELO = math.log(10.0) / 400.0  # one Elo point, in natural-log strength
# The variance given to a rating that the fit does not bound (a model without votes, or an interval with an
# open side): (400 Elo)², wide enough that such a model is explored first, finite so every score stays finite.
PRIOR_VARIANCE = (400.0 * NATS_PER_ELO) ** 2
BOUNDARY_FLOOR = 0.05  # the least weight of a boundary between neighbours (see boundary_weights)
MAX_STEP = 1.0  # nats: the largest move of a rating by `update_with_votes` (a Newton step from few votes)

RULES = {
    "uniform": "every pair of models that can answer the prompt equally likely",
    "weighted": "a pair drawn with probability proportional to the product of the two models' published weights",
    "new_model_boost": (
        "as weighted, with the weight of a model multiplied by the boost factor while its "
        "rating is provisional (fewer than provisional_votes counted votes)"
    ),
    "active": (
        "a share `floor` of battles drawn as weighted; the rest with odds w_i w_j s_ij^focus, s_ij the "
        "expected reduction by one vote on the pair of the variance of the rating differences between "
        "neighbours on the board, each weighted by how close the two intervals are to parting"
    ),
}


class SamplingRule(NamedTuple):
    """A policy and its settings: everything that, with the models' weights and the fit, fixes the odds."""

    policy: str = "weighted"
    boost: float = 3.0  # new_model_boost: factor on a provisional model's weight
    provisional_votes: int = 300  # new_model_boost: a rating is provisional below this many counted votes
    floor: float = 0.1  # active: share of battles drawn by the weighted rule
    focus: float = 3.0  # active: the odds are w_i w_j s_ij ** focus (1: in proportion to the expected gain)


def check_rule(rule: SamplingRule) -> SamplingRule:
    """The rule, or ValueError naming what is wrong with it."""
    if rule.policy not in POLICIES:
        raise ValueError(f"sampling policy must be one of {', '.join(POLICIES)}, not {rule.policy!r}")
    if not (math.isfinite(rule.boost) and rule.boost >= 1):
        raise ValueError(f"the boost factor must be a finite number >= 1, not {rule.boost!r}")
    if rule.provisional_votes < 0:
        raise ValueError("provisional_votes must be >= 0")
    if not 0 <= rule.floor <= 1:
        raise ValueError(f"the active policy's floor must lie in [0, 1], not {rule.floor!r}")
    if not (math.isfinite(rule.focus) and rule.focus > 0):
        raise ValueError(f"the active policy's focus must be a finite number > 0, not {rule.focus!r}")
    return rule


class ActiveState(NamedTuple):
    """What the active policy knows of each model: rating and its variance, natural-log strength units."""

    strengths: np.ndarray  # (m,) nats
    variances: np.ndarray  # (m,) nats²


# ------------------------------------------------------------------------------------------------ the fit


def state_from_intervals(
    ratings, low, high, *, confidence: float = 0.95, prior_variance: float = PRIOR_VARIANCE
) -> ActiveState:
    """Ratings and their variances from published Elo-scale ratings and two-sided intervals.

    The standard error is the half-width over z = Phi^-1((1 + confidence) / 2) (exact for normal intervals, the
    usual reading of percentile ones). A model without a rating (NaN) sits at the mean of the rated ones; it
    and any model with an open interval side (±inf or NaN) get `prior_variance`.
    """
    ratings, low, high = (np.asarray(v, np.float64) for v in (ratings, low, high))
    z = _normal_quantile((1 + confidence) / 2)
    rated = np.isfinite(ratings)
    centre = ratings[rated].mean() if rated.any() else 0.0
    strengths = np.where(rated, ratings - centre, 0.0) * NATS_PER_ELO
    bounded = rated & np.isfinite(low) & np.isfinite(high)
    half_width = np.where(bounded, (high - low) / 2, 0.0) * NATS_PER_ELO
    variances = np.where(bounded, (half_width / z) ** 2, prior_variance)
    return ActiveState(strengths, np.clip(variances, 1e-12, prior_variance))


def update_with_votes(state: ActiveState, first, second, first_score, battles) -> ActiveState:
    """The state after votes counted since it was fitted, by one diagonal Newton step per model.

    first, second: (K,) model indices of each pair; first_score: wins of `first` plus half the ties; battles:
    votes on the pair. Each model's precision grows by the Fisher information of its votes,
    sum_j n_ij p_ij (1 - p_ij), and its strength moves by the new variance times the score residual
    sum_j (s_ij - n_ij p_ij), at most MAX_STEP nats. Cross-terms between models are ignored: it is a cheap
    refresh between two refits, not a fit.
    """
    theta, var = (np.array(v, np.float64) for v in state)
    first, second = np.asarray(first, np.int64), np.asarray(second, np.int64)
    first_score, battles = np.asarray(first_score, np.float64), np.asarray(battles, np.float64)
    if first.size == 0:
        return ActiveState(theta, var)
    m = theta.shape[0]
    p = _sigmoid(theta[first] - theta[second])
    information = battles * p * (1 - p)
    residual = first_score - battles * p
    precision = 1 / var + np.bincount(first, information, m) + np.bincount(second, information, m)
    new_var = 1 / precision
    step = new_var * (np.bincount(first, residual, m) - np.bincount(second, residual, m))
    return ActiveState(theta + np.clip(step, -MAX_STEP, MAX_STEP), new_var)


# ------------------------------------------------------------------------------------------------ the odds


def boundary_weights(state: ActiveState, *, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """(order, weights): models best first, and for each neighbouring pair on the board (order[k], order[k+1])
    how much a vote's worth of precision there would move its two intervals apart.

    With d the rating gap and x = d / (sqrt(2) (se_a + se_b)) (scaled so that the intervals at `confidence` just
    touch at x = 1.39 for 95 %), the overlap of the two intervals is erfc(x), and shrinking both standard errors
    by a factor e^-t lowers it at the rate (2 / sqrt(pi)) x e^(-x²). That is the weight, plus BOUNDARY_FLOOR:
    largest (0.48) for neighbours about to part (x = 0.71), small for neighbours already apart and for
    neighbours that look equal, whom no affordable number of votes tells apart.
    """
    theta, var = state
    order = np.argsort(-theta, kind="stable")
    gap = theta[order[:-1]] - theta[order[1:]]
    se = np.sqrt(var)
    scale = _normal_quantile(0.975) / _normal_quantile((1 + confidence) / 2)
    x = gap / (math.sqrt(2) * (se[order[:-1]] + se[order[1:]])) * scale
    return order, 2 / math.sqrt(math.pi) * x * np.exp(-(x**2)) + BOUNDARY_FLOOR


def active_pair_scores(state: ActiveState, *, confidence: float = 0.95) -> np.ndarray:
    """s_ij: the expected reduction, by one more vote on {i, j}, of the variance of neighbours' differences.

    k runs over neighbouring pairs on the board (a(k) just above b(k)) and omega_k is how much more precision
    there would part their intervals (`boundary_weights`): the uncertainty that matters is where the published
    intervals are about to tell neighbours apart. The variance of a difference is read as the published
    intervals present it, the sum of the two models' own variances v (the ratings' covariance taken as
    diagonal), so the objective is sum_i B_i v_i with B_i the weight of model i's boundaries, taken as twice
    their mean so that the first and last models, with one neighbour each, count as much as the others (in
    bench/sampling.py that separated the tiers with about 5 % fewer votes than their sum).
    One vote adds Fisher information I_ij = p_ij (1 - p_ij) along e_i - e_j, and by Sherman-Morrison v_i drops
    by I v_i² / (1 + I (v_i + v_j)), so

        s_ij = I_ij / (1 + I_ij (v_i + v_j)) * (v_i² B_i + v_j² B_j).

    Close pairs carry more information per vote (p near 1/2), uncertain models have more to gain, and a model
    with few votes (a large v) is drawn first; opponents are spread over every close model rather than the one
    neighbour, which keeps the comparison graph from becoming a chain (whose ratings drift together). Returns
    a symmetric (m, m) with a zero diagonal.
    """
    theta, var = (np.asarray(v, np.float64) for v in state)
    m = theta.shape[0]
    if m < 2:
        return np.zeros((m, m))
    order, omega = boundary_weights(ActiveState(theta, var), confidence=confidence)
    touching = np.bincount(order[:-1], omega, m) + np.bincount(order[1:], omega, m)
    neighbours = np.bincount(order[:-1], None, m) + np.bincount(order[1:], None, m)
    touching = 2 * touching / neighbours
    p = _sigmoid(theta[:, None] - theta[None, :])
    information = p * (1 - p)
    own = var**2 * touching
    scores = np.triu(information / (1 + information * (var[:, None] + var[None, :])) * (own[:, None] + own[None, :]), 1)
    return scores + scores.T  # exactly symmetric, zero diagonal


def model_weights(rule: SamplingRule, weights, votes=None) -> np.ndarray:
    """Per-model factors of the product-form odds (w_i w_j): the weighted part of every policy.

    uniform: 1 for every model with a positive weight; weighted and active: the weights; new_model_boost: the
    weight times `boost` while the model has fewer than `provisional_votes` counted votes.
    """
    weights = np.asarray(weights, np.float64)
    if rule.policy == "uniform":
        return (weights > 0).astype(np.float64)
    if rule.policy == "new_model_boost":
        votes = np.zeros(weights.shape) if votes is None else np.asarray(votes, np.float64)
        return np.where(votes < rule.provisional_votes, weights * rule.boost, weights)
    return weights.copy()


def active_odds(scores, focus: float) -> np.ndarray:
    """s_ij ** focus: the active policy's odds before the weights, computed once per refresh of the fit."""
    scores = np.asarray(scores, np.float64)
    if focus == 1:
        return scores.copy()
    if focus == 3:  # the default: two products cost a fraction of a general power
        return scores * scores * scores
    return scores**focus


def pair_probabilities(rule: SamplingRule, weights, *, votes=None, odds=None) -> np.ndarray:
    """P[i, j] = P[j, i] = probability that the next battle is the pair {i, j}; the pairs i < j sum to 1.

    `odds` (m, m): `active_odds` of these models' `active_pair_scores`, for the active policy. A model's share
    of battle sides is P.sum(axis=1) / 2. All zeros when fewer than two models can be drawn.
    """
    w = model_weights(rule, weights, votes)
    product = _normalised(np.outer(w, w))
    if rule.policy != "active" or rule.floor >= 1:
        return product
    active = _normalised(np.outer(w, w) * np.asarray(odds, np.float64))
    if not active.any():  # nothing left to learn, by this fit: the weighted rule alone
        return product
    return rule.floor * product + (1 - rule.floor) * active


def model_shares(probabilities) -> np.ndarray:
    """Each model's share of battle sides (sums to 1): half its marginal probability of being in a battle."""
    return np.asarray(probabilities).sum(axis=1) / 2


def _normalised(odds: np.ndarray) -> np.ndarray:
    odds = odds.copy()
    np.fill_diagonal(odds, 0.0)
    total = odds.sum() / 2
    return odds / total if total > 0 else odds


# ------------------------------------------------------------------------------------------------ drawing


def draw_pair(rule: SamplingRule, weights, rng, *, votes=None, odds=None) -> tuple[int, int] | None:
    """One pair drawn by the rule, as (side a, side b) indices, or None when no two models can be drawn.

    Draws with the probabilities of `pair_probabilities` without building the pair matrix. Product-form
    policies: the first model i with odds w_i (W - w_i), W the total, then the second among the others with
    odds w_j, in time linear in the number of models. The active policy picks its mixture's component first,
    then i with odds w_i (A w)_i (one matrix-vector product with the `active_odds` A, zero diagonal) and j with
    odds w_j A_ij. A model that cannot be drawn has weight 0, so the service passes every model of its cached
    state and copies no matrix. The sides are then shuffled. `rng` is anything with .random() in [0, 1)
    (random.SystemRandom in the service: pairs nobody can predict).
    """
    w = model_weights(rule, weights, votes)
    if rule.policy == "active" and rule.floor < 1 and rng.random() >= rule.floor:
        odds = np.asarray(odds, np.float64)
        row_odds = w * (odds @ w)
        if row_odds.sum() > 0:
            i = _choose(row_odds, rng.random())
            return _shuffled(i, _choose(w * odds[i], rng.random()), rng)
    total = w.sum()
    first_odds = w * (total - w)
    if np.count_nonzero(w) < 2 or not (first_odds > 0).any():
        return None
    i = _choose(first_odds, rng.random())
    second = w.copy()
    second[i] = 0.0
    return _shuffled(i, _choose(second, rng.random()), rng)


def _choose(odds: np.ndarray, u: float) -> int:
    """The index drawn with probability odds / odds.sum() by the uniform u (inverse of the cumulative sum)."""
    cumulative = np.cumsum(odds)
    index = int(np.searchsorted(cumulative, u * cumulative[-1], side="right"))
    if index >= odds.shape[0] or odds[index] <= 0:  # u * total rounded up to the total: the last positive odds
        index = int(np.flatnonzero(odds > 0)[-1])
    return index


def _shuffled(i: int, j: int, rng) -> tuple[int, int]:
    return (i, j) if rng.random() < 0.5 else (j, i)


def _sigmoid(x):
    return 0.5 * (1 + np.tanh(np.asarray(x, np.float64) / 2))  # never overflows


@functools.lru_cache(maxsize=16)
def _normal_quantile(q: float) -> float:
    """Phi^-1(q) by bisection on erfc: called once per refresh, and keeps scipy off the battle path."""
    low, high = -40.0, 40.0
    for _ in range(200):
        mid = (low + high) / 2
        if 0.5 * math.erfc(-mid / math.sqrt(2)) < q:
            low = mid
        else:
            high = mid
    return (low + high) / 2
