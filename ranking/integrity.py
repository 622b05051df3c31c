"""Statistics that tell rigged votes from honest ones: pure functions over vote arrays, no web or SQL.

The arena's snapshot builder (`arena.leaderboard.integrity`) applies them as named counting rules and records each one's
settings and what it left out; `bench/rigging.py` measures them on simulated attacks. Every test here is a
test of one voter against a null hypothesis that an honest voter satisfies, at a level `alpha` per voter, so
that the share of honest voters wrongly flagged is about `alpha` whatever the arena's size.

Votes are arrays in vote order: `model_a`, `model_b` (model codes), `outcome` (ranking.data's A_WINS, B_WINS,
TIE, TIE_BOTHBAD), `voter` (a code per voter, -1 where unknown: such votes are evidence about the crowd but are
never tested themselves).

- `crowd_disagreement_test`: FastChat's per-voter sequential test against the pair's history, made exact.
- `improbable_vote_test`: votes the current Bradley-Terry fit makes very unlikely, clustered on one voter.
- `influence_concentration`: how far each voter moved each model's rating (the fit's influence function), and
  whether that push on one model is beyond chance, through battles the model was in or not.
- `repeated_prompt_weights`: heavily repeated prompts count as a fixed number of votes in all.
- `daily_cap_mask`: the votes beyond a voter's daily cap.
- `poisson_binomial_sf`: the tail used by the first two tests, exact (a test checks it against scipy's
  binomial test where all probabilities are equal).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.sparse import csr_matrix
from scipy.special import expit
from scipy.stats import norm

from ranking.data import A_WINS, B_WINS

# The exact Poisson-binomial tail costs O(n^2); beyond this many trials the refined normal approximation
# (Volkova 1996: normal with a skewness term and continuity correction) is used, within ~1e-4 of the exact tail
# there and far more precise than any level anyone sets.
EXACT_TRIALS = 4000
ELO_PER_NAT = 400 / np.log(10)
# The tests compute exact tails only where the refined normal approximation says they may be below this; a
# p-value above it is reported from the approximation (it is then far above any level used to flag a voter).
SCREEN_TAIL = 0.05
BLOCK_CELLS = 1 << 23


# ------------------------------------------------------------------------------------------------ tails


def poisson_binomial_sf(probabilities, k: int) -> float:
    """P(X >= k) for X the number of successes of independent trials with these success probabilities."""
    p = np.asarray(probabilities, np.float64)
    if k <= 0:
        return 1.0
    if k > p.size:
        return 0.0
    if p.size <= EXACT_TRIALS:
        return float(_poisson_binomial_pmf(p)[k:].sum().clip(0.0, 1.0))
    return _refined_normal_sf(p, k)


def _poisson_binomial_pmf(p: np.ndarray) -> np.ndarray:
    """The distribution of the number of successes, by the textbook recursion (one trial at a time)."""
    pmf = np.zeros(p.size + 1)
    pmf[0] = 1.0
    for n, q in enumerate(p, start=1):
        pmf[1 : n + 1] = pmf[1 : n + 1] * (1 - q) + pmf[:n] * q
        pmf[0] *= 1 - q
    return pmf


def _refined_normal_sf(p: np.ndarray, k: int) -> float:
    mean = p.sum()
    var = (p * (1 - p)).sum()
    if var <= 0:
        return float(k <= mean)
    sd = math.sqrt(var)
    skew = float((p * (1 - p) * (1 - 2 * p)).sum()) / sd**3
    x = (k - 0.5 - float(mean)) / sd
    sf = 0.5 * math.erfc(x / math.sqrt(2))  # scalar math: this runs once per voter and checkpoint
    pdf = math.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    return min(1.0, max(0.0, sf - skew * (1 - x * x) * pdf / 6))


# ------------------------------------------------------------------------------------------------ rule 2


class SequentialTest(NamedTuple):
    """Per voter (indexed by voter code): whether the test rejected, and what it saw.

    p_value: the smallest checkpoint p-value times its alpha-spending factor 2^(j+1), capped at 1 (the voter is
    flagged when it is <= alpha); tested: the voter's votes the test could judge; disagreements: how many of
    them went against the crowd's favourite; expected: how many an honest voter would have (the sum of q_i);
    checkpoint: the number of judged votes at the first checkpoint that rejected, 0 if none.
    """

    flagged: np.ndarray
    p_value: np.ndarray
    tested: np.ndarray
    disagreements: np.ndarray
    expected: np.ndarray
    checkpoint: np.ndarray


def crowd_disagreement_test(
    model_a, model_b, outcome, voter, n_voters: int, *, alpha: float, min_votes: int = 20, min_crowd: int = 10
) -> SequentialTest:
    """FastChat's per-voter sequential test against the pair's history, with an exact null distribution.

    FastChat (Chiang et al. 2024, "detecting anomalous users") compares each of a voter's votes with the
    history of votes on the same model pair and flags voters whose votes are, together, too unlike that
    history, testing sequentially as the votes come. Here, precisely:

    - The crowd of a vote on pair {i, j} is every other voter's votes on that pair (votes without a voter
      included; the voter's own votes never are). Its rate r = (crowd choices of i + 1) / (crowd votes + 2),
      ties counting half a choice each way (Laplace's rule: a pair without history has r = 1/2).
    - A vote is judged when it is not a tie, its crowd has at least `min_crowd` votes and r != 1/2. It
      *disagrees* when it picks the model the crowd does not favour. Under the null hypothesis (the voter
      votes like the crowd: vote t picks i with probability r_t, independently) vote t disagrees with
      probability q_t = min(r_t, 1 - r_t), so the number of disagreements among a voter's first n judged
      votes, D_n, is Poisson-binomial(q_1..q_n) and p_n = P(D_n >= observed) is exact (poisson_binomial_sf).
    - p-values above SCREEN_TAIL come from the refined normal approximation instead (saving the exact
      recursion for the voters who might be flagged).
    - Sequential: the test looks at checkpoints n_j = min_votes * 2^j judged votes (j = 0, 1, ...), the last
      one at the voter's total, and rejects at checkpoint j when p_{n_j} <= alpha / 2^(j+1). The levels sum
      to alpha, so an honest voter is flagged with probability at most alpha however many votes they cast
      (a union bound; Laplace's rule pulls r towards 1/2, which only makes the test more cautious).

    A voter with fewer than `min_votes` judged votes is not tested. Returns a SequentialTest per voter code.
    """
    a, b, o, v = (np.asarray(x) for x in (model_a, model_b, outcome, voter))
    m = int(max(a.max(initial=0), b.max(initial=0))) + 1
    first, second = np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64)
    pair = first * m + second
    decisive = (o == A_WINS) | (o == B_WINS)
    picks_first = decisive & (((o == A_WINS) & (a == first)) | ((o == B_WINS) & (b == first)))
    score = np.where(decisive, picks_first.astype(np.float64), 0.5)  # choices of the pair's first model
    _, pair_code = np.unique(pair, return_inverse=True)
    pair_score = np.bincount(pair_code, weights=score)
    pair_votes = np.bincount(pair_code).astype(np.float64)
    has_voter = v >= 0
    own = np.where(has_voter, v.astype(np.int64) * (pair_code.max(initial=0) + 1) + pair_code, -1)
    _, own_code = np.unique(own, return_inverse=True)
    own_score = np.where(has_voter, np.bincount(own_code, weights=score)[own_code], 0.0)
    own_votes = np.where(has_voter, np.bincount(own_code)[own_code], 0.0)
    crowd_votes = pair_votes[pair_code] - own_votes
    r = (pair_score[pair_code] - own_score + 1) / (crowd_votes + 2)
    judged = has_voter & decisive & (crowd_votes >= min_crowd) & (r != 0.5)
    disagrees = np.where(r > 0.5, ~picks_first, picks_first)
    q = np.minimum(r, 1 - r)

    flagged = np.zeros(n_voters, bool)
    p_value = np.ones(n_voters)
    tested = np.bincount(v[judged], minlength=n_voters)
    disagreements = np.bincount(v[judged], weights=disagrees[judged], minlength=n_voters).astype(np.int64)
    expected = np.bincount(v[judged], weights=q[judged], minlength=n_voters)
    checkpoint = np.zeros(n_voters, np.int64)
    rows = np.flatnonzero(judged)
    order = rows[np.argsort(v[rows], kind="stable")]  # each voter's judged votes, in vote order
    bounds = np.searchsorted(v[order], np.arange(n_voters + 1))
    for voter_code in np.flatnonzero(tested >= min_votes):
        mine = order[bounds[voter_code] : bounds[voter_code + 1]]
        running = np.cumsum(disagrees[mine])
        best, first_reject = 1.0, 0
        for j, n in enumerate(_checkpoints(mine.size, min_votes)):
            # Far from any level anyone sets, the refined normal tail is exact enough and skips the O(n^2)
            # recursion, which most honest voters would otherwise cost.
            tail = _refined_normal_sf(q[mine[:n]], int(running[n - 1]))
            if tail <= SCREEN_TAIL:
                tail = poisson_binomial_sf(q[mine[:n]], int(running[n - 1]))
            adjusted = min(1.0, tail * 2.0 ** (j + 1))
            best = min(best, adjusted)
            if adjusted <= alpha and not first_reject:
                first_reject = n
        p_value[voter_code], checkpoint[voter_code] = best, first_reject
        flagged[voter_code] = first_reject > 0
    return SequentialTest(flagged, p_value, tested, disagreements, expected, checkpoint)


def _checkpoints(total: int, start: int) -> list[int]:
    points, n = [], start
    while n < total:
        points.append(n)
        n *= 2
    return points + [total]


# ------------------------------------------------------------------------------------------------ rule 3


class ImprobableVotes(NamedTuple):
    """improbable: per vote, the fit gave the outcome voted for a probability below the threshold; flagged: per
    voter, such votes cluster on them beyond chance; p_value, count, expected: per voter."""

    improbable: np.ndarray
    flagged: np.ndarray
    p_value: np.ndarray
    count: np.ndarray
    expected: np.ndarray


def improbable_vote_test(
    model_a, model_b, outcome, voter, n_voters: int, strengths, *, below: float, alpha: float, min_count: int = 3
) -> ImprobableVotes:
    """Votes whose outcome the current fit makes very unlikely, when they cluster on one voter.

    `strengths` are the fit's natural-log Bradley-Terry strengths (BTFit.strengths). A decisive vote is
    *improbable* when the fit gives the side it picked a probability below `below`: P(a beats b) =
    1 / (1 + exp(theta_b - theta_a)). Ties are never improbable. Under the null hypothesis (the voter's votes
    follow the fit) vote t is improbable with probability u_t = min(P, 1 - P) when that is below `below`, else
    0, so a voter's count of improbable votes U is Poisson-binomial(u) and p = P(U >= observed) exactly. A voter
    with p <= alpha and at least `min_count` improbable votes is flagged; only those improbable votes are what
    the rule leaves out (the voter's other votes agree with the fit and cannot have bent it).
    """
    a, b, o, v = (np.asarray(x) for x in (model_a, model_b, outcome, voter))
    theta = np.asarray(strengths, np.float64)
    p_a = expit(theta[a] - theta[b])
    decisive = (o == A_WINS) | (o == B_WINS)
    picked = np.where(o == A_WINS, p_a, 1 - p_a)
    improbable = decisive & (picked < below) & (v >= 0)
    smaller = np.minimum(p_a, 1 - p_a)
    u = np.where(decisive & (smaller < below), smaller, 0.0)
    has_voter = v >= 0
    count = np.bincount(v[improbable], minlength=n_voters)
    expected = np.bincount(v[has_voter], weights=u[has_voter], minlength=n_voters)
    p_value = np.ones(n_voters)
    flagged = np.zeros(n_voters, bool)
    candidates = np.flatnonzero(count >= min_count)
    if candidates.size:
        rows = np.flatnonzero(has_voter & (u > 0))
        order = rows[np.argsort(v[rows], kind="stable")]
        bounds = np.searchsorted(v[order], np.arange(n_voters + 1))
        for voter_code in candidates:
            p_value[voter_code] = poisson_binomial_sf(
                u[order[bounds[voter_code] : bounds[voter_code + 1]]], int(count[voter_code])
            )
        flagged[candidates] = p_value[candidates] <= alpha
    return ImprobableVotes(improbable & flagged[np.where(has_voter, v, 0)], flagged, p_value, count, expected)


# ------------------------------------------------------------------------------------------------ rule 4


class Influence(NamedTuple):
    """Each voter's first-order effect on every model's rating, in Elo points, and its z-scores.

    influence[v, k]: how much voter v's votes moved model k's rating (ratings centred on their mean, as
    published); removing the voter moves it back by about that much. z[v, k]: that push over its standard
    deviation under the null (the voter's votes drawn from the fit). top_model[v]: argmax_k |z[v, k]|;
    flagged[v]: |z[v, top_model]| >= threshold, or the voter is one of a group pushing one model together.
    threshold: the z the settings give; pushed: (model, +1 or -1) for each model that a group of voters
    pushed up or down together, ((k, l), +1 or -1) for each contrast "k against l" (see
    influence_concentration); group: per voter, flagged as one of such a group.
    """

    influence: np.ndarray
    z: np.ndarray
    top_model: np.ndarray
    flagged: np.ndarray
    threshold: float
    pushed: list
    group: np.ndarray
    group_tail: np.ndarray  # (2, m): the binomial tail of N_k+ and N_k- (1 for models without votes)
    direction_z: np.ndarray  # (n_voters, m + len(contrasts)): z along each model, then each contrast
    contrasts: list  # (k, l): "model k against model l", l among the models rated just above k
    suspect_tail: np.ndarray  # (2, m + len(contrasts)): the group tail at suspect_z, for every direction


def influence_concentration(
    model_a,
    model_b,
    outcome,
    voter,
    n_voters: int,
    strengths,
    *,
    prior: float,
    alpha: float,
    min_votes: int = 10,
    group_z: float = 3.0,
    group_min_votes: int = 5,
    suspect_z: float = 2.0,
    null_replicates: int = 4,
    seed: int = 0,
    neighbours: int = 3,
    weights=None,
) -> Influence:
    """Voters whose votes concentrate on raising or lowering one model, through any battles.

    Bradley-Terry couples every model: a vote in a battle between j and l moves j and l, and through them every
    model compared with either. The influence function of the penalised fit measures that. With
    L(theta) = sum_t w_t l_t(theta) - prior/2 |theta|^2 (half-win ties: y_t = 1, 0, 1/2 for a, b, tie),
    g_t = w_t (y_t - pi_t)(e_a - e_b), pi_t = sigmoid(theta_a - theta_b), and H = -Hessian of L at the fit,
    the derivative of the fitted strengths with respect to a voter's weight is H^-1 G_v, G_v = sum of the
    voter's g_t. In published units: influence_v = ELO_PER_NAT * C G_v with C = (I - 11^T/m) H^-1 (ratings are
    centred). Under the null (each vote drawn from the fit, independently) influence_v has mean 0 and
    Var(influence_v[k]) = ELO_PER_NAT^2 sum_t w_t^2 pi_t (1 - pi_t) (C[k, a_t] - C[k, b_t])^2, so
    z[v, k] is standard normal to first order. A voter is flagged when max_k |z[v, k]| >= Phi^-1(1 - alpha/2m)
    (two-sided, Bonferroni over the m models: an honest voter is flagged with probability about alpha). Voters
    with fewer than `min_votes` votes are not tested (the normal approximation needs a few votes).

    Many identities with a few votes each (sybils) stay below that threshold one by one, but together they
    are many voters pushing the same model the same way. For each model k and direction s = +1 (up) or -1
    (down), N_ks counts the voters with at least `group_min_votes` votes and s z[v, k] >= group_z. Few-vote
    z-scores are far from normal (a weak model's rare win is a large push), so the null count is simulated:
    `null_replicates` times every vote is redrawn from the fit (seeded by `seed`) and the same count N'_ks
    taken over the replicates. Under the null N_ks and N'_ks are counts of rare events among many voters,
    Poisson with means in the ratio 1 : R, so given N_ks + N'_ks, N_ks is Binomial(N_ks + N'_ks, 1 / (R + 1)):
    a tail with the null's estimation included. When it is <= alpha / 2D (D the directions tested: the models
    played, and the contrasts below), model k was pushed in direction s and every voter
    counted in N_ks is flagged: the group, and the few honest voters who happened to push that model as hard
    (a fraction ~ Phi(-group_z) of the voters, the price of catching the group).

    Raising a model's rank needs no push on its rating: pushing down the models just above it does as well,
    a few votes each from many identities. So the group test also runs along contrasts: for each model k and
    each of the `neighbours` models l rated just above it, the voter's push on rating_k - rating_l (the same
    influence, z and simulated null, with the row C[k] - C[l] in place of C[k]); `pushed` then holds
    ((k, l), sign) for a contrast. The same test at `suspect_z` gives suspect_tail, which tells a caller where
    to look again (arena.leaderboard.integrity refits without the voters beyond suspect_z there: a group large enough
    drags
    the fit with it, which hides each of its members).

    `strengths`: the fit's natural-log strengths (BTFit.strengths) on the same votes with the same `prior`
    and `weights`; models without votes are left at 0 and have no influence.
    """
    a, b, o, v = (np.asarray(x) for x in (model_a, model_b, outcome, voter))
    theta = np.asarray(strengths, np.float64)
    m = theta.size
    w = np.ones(a.size) if weights is None else np.asarray(weights, np.float64)
    pi = expit(theta[a] - theta[b])
    y = np.where(o == A_WINS, 1.0, np.where(o == B_WINS, 0.0, 0.5))
    curvature = w * pi * (1 - pi)
    hessian = np.zeros((m, m))
    np.add.at(hessian, (a, a), curvature)
    np.add.at(hessian, (b, b), curvature)
    np.add.at(hessian, (a, b), -curvature)
    np.add.at(hessian, (b, a), -curvature)
    played = np.zeros(m, bool)
    played[a] = played[b] = True
    hessian += prior * np.eye(m)
    inverse = np.linalg.inv(hessian)
    centre = np.eye(m) - np.where(played, 1.0 / played.sum(), 0.0)[None, :]
    c = ELO_PER_NAT * (centre @ inverse)
    c[~played] = 0.0

    # Directions to measure a push along: each model's rating, then "model k against model l" for each model
    # and the `neighbours` models rated just above it (what raises a model's rank without raising its rating).
    order = np.flatnonzero(played)[np.argsort(-theta[played], kind="stable")]
    contrasts = [
        (int(k), int(l)) for position, k in enumerate(order) for l in order[max(0, position - neighbours) : position]
    ]
    against = np.zeros((len(contrasts), m))
    for i, (k, l) in enumerate(contrasts):
        against[i, k], against[i, l] = 1.0, -1.0
    directions = np.vstack([c, against @ c])  # (D, m): the rating (difference) a unit score on each model moves

    has_voter = v >= 0
    rows = np.flatnonzero(has_voter)
    voter_rows = v[rows].astype(np.int64)

    def pushes(residual):
        """Each voter's summed score G_v through the fit's influence, along every direction: (n_voters, D) Elo."""
        gradient = np.bincount(voter_rows * m + a[rows], weights=residual[rows], minlength=n_voters * m) - np.bincount(
            voter_rows * m + b[rows], weights=residual[rows], minlength=n_voters * m
        )
        return gradient.reshape(n_voters, m) @ directions.T

    pushed_elo = pushes(w * (y - pi))
    # Var[v, d] = sum_t s_t (R[d, a_t] - R[d, b_t])^2, s_t = w_t^2 pi_t (1 - pi_t), R the directions, expanded
    # so that no (votes x directions) array is ever made: sum_j S[v, j] R[d, j]^2 - 2 sum_pairs P[v, pair]
    # R[d, p] R[d, q], with S each voter's s summed per model and P per compared pair {p, q}.
    spread = (w**2) * pi * (1 - pi)
    per_model = np.bincount(voter_rows * m + a[rows], weights=spread[rows], minlength=n_voters * m) + np.bincount(
        voter_rows * m + b[rows], weights=spread[rows], minlength=n_voters * m
    )
    variance = per_model.reshape(n_voters, m) @ (directions**2).T
    pair_key = np.minimum(a[rows], b[rows]).astype(np.int64) * m + np.maximum(a[rows], b[rows])
    pairs, pair_code = np.unique(pair_key, return_inverse=True)
    per_pair = csr_matrix((spread[rows], (voter_rows, pair_code)), shape=(n_voters, pairs.size)).tocsc()
    step = max(1, BLOCK_CELLS // max(directions.shape[0], 1))  # pairs per block: (step, D) stays ~64 MB
    for start in range(0, pairs.size, step):
        block = pairs[start : start + step]
        products = (directions[:, block // m] * directions[:, block % m]).T  # (pairs in block, D)
        variance -= 2 * (per_pair[:, start : start + step] @ products)
    np.maximum(variance, 0.0, out=variance)  # rounding can leave -1e-18 where the variance is 0
    with np.errstate(invalid="ignore", divide="ignore"):
        z_all = np.where(variance > 0, pushed_elo / np.sqrt(variance), 0.0)
    influence, z = pushed_elo[:, :m], z_all[:, :m]
    top = np.argmax(np.abs(z), axis=1) if m else np.zeros(n_voters, np.int64)
    threshold = float(norm.isf(alpha / (2 * max(int(played.sum()), 1))))
    votes = np.bincount(v[rows], minlength=n_voters)
    flagged = (np.abs(z[np.arange(n_voters), top]) >= threshold) & (votes >= min_votes)
    pushed, group = [], np.zeros(n_voters, bool)
    width = directions.shape[0]
    tails, suspect_tails = np.ones((2, width)), np.ones((2, width))
    eligible = votes >= group_min_votes
    tested = int(eligible.sum())
    if tested and played.any():
        from scipy.stats import binom

        columns = np.r_[np.flatnonzero(played), np.arange(m, width)]
        scale = np.sqrt(variance[eligible][:, columns])

        def exceed(pushed_along):
            """(2 thresholds, 2 signs, directions): voters beyond group_z and suspect_z."""
            with np.errstate(invalid="ignore", divide="ignore"):
                zz = np.where(scale > 0, pushed_along[eligible][:, columns] / scale, 0.0)
            return np.stack([np.stack([(zz >= t).sum(axis=0), (zz <= -t).sum(axis=0)]) for t in (group_z, suspect_z)])

        counts = exceed(pushed_elo)
        # The null counts, by simulation: every vote redrawn from the fit (decisive, so with the variance the
        # z-scores assume: wider than votes with ties, which only makes the test more cautious).
        rng = np.random.default_rng(seed)
        simulated = sum(exceed(pushes(w * ((rng.random(pi.size) < pi) - pi))) for _ in range(null_replicates))
        # Conditional on N + N', N ~ Binomial(N + N', 1 / (R + 1)) under the null: exact, estimate included.
        both = binom.sf(counts - 1, counts + simulated, 1 / (null_replicates + 1))
        tails[:, columns], suspect_tails[:, columns] = both[0], both[1]
        for sign_row, d in zip(*np.nonzero(tails <= alpha / (2 * columns.size))):
            sign = 1 if sign_row == 0 else -1
            pushed.append((int(d), sign) if d < m else (contrasts[d - m], sign))
            group |= eligible & (sign * z_all[:, d] >= group_z)
    return Influence(
        influence, z, top, flagged | group, threshold, pushed, group, tails[:, :m], z_all, contrasts, suspect_tails
    )


# ------------------------------------------------------------------------------------------------ rules 5, 6


def repeated_prompt_weights(prompt, *, threshold: int) -> np.ndarray:
    """Per vote, a weight that makes every prompt count as at most `threshold` votes in all.

    `prompt` holds a code per vote (equal codes: the same prompt), -1 where the vote has none to compare. The
    k votes of a prompt with k > threshold get weight threshold / k each; every other vote weight 1. A prompt
    repeated many times (by one eager voter, a script, or a viral question) would otherwise rank the models on
    that one question; FastChat deduplicates such prompts for the same reason. threshold <= 0: all weights 1.
    """
    codes = np.asarray(prompt)
    weights = np.ones(codes.size)
    if threshold <= 0 or not codes.size:
        return weights
    known = codes >= 0
    _, group = np.unique(codes[known], return_inverse=True)
    sizes = np.bincount(group)[group]
    weights[known] = np.where(sizes > threshold, threshold / sizes, 1.0)
    return weights


def daily_cap_mask(voter, day, *, cap: int) -> np.ndarray:
    """True for each vote beyond its voter's first `cap` votes of its day (votes in vote order; `day` an integer
    per vote, e.g. days since the epoch in UTC). Votes without a voter (-1) are never capped; cap <= 0: none."""
    v, d = np.asarray(voter, np.int64), np.asarray(day, np.int64)
    over = np.zeros(v.size, bool)
    if cap <= 0 or not v.size:
        return over
    has_voter = v >= 0
    key = np.where(has_voter, v * (d.max() - d.min() + 1) + (d - d.min()), -1)
    rows = np.flatnonzero(has_voter)
    order = rows[np.argsort(key[rows], kind="stable")]
    keys = key[order]
    starts = np.r_[0, np.flatnonzero(keys[1:] != keys[:-1]) + 1]
    rank = np.arange(order.size) - np.repeat(starts, np.diff(np.r_[starts, order.size]))
    over[order] = rank >= cap
    return over
