"""ranking.integrity: each test catches a planted attacker and spares honest voters on a fixed seed, and its
statistic agrees with an independent reference (scipy's binomial test, brute-force enumeration, finite
differences of the weighted fit)."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
from scipy.stats import binom, binomtest

from ranking import RankingOptions, encode_battles, rank_battles, read_battles, write_battles_jsonl
from ranking import integrity as ig
from ranking.bradley_terry import fit_bradley_terry
from ranking.data import A_WINS, B_WINS, TIE
from ranking.stats import pair_counts

RTOL = 1e-9  # exact tails against scipy / enumeration
APPROX_ATOL = 2e-4  # the refined normal approximation of a Poisson-binomial tail beyond EXACT_TRIALS
PRIOR = 1e-3
ALPHA = 1e-4


def honest_arena(seed=0, models=12, votes=20000, voters=800, spread=0.6):
    """Votes from Bradley-Terry with known strengths, 10 % ties, voters of uneven activity."""
    rng = np.random.default_rng(seed)
    theta = np.sort(rng.normal(0, spread, models))[::-1]
    a = rng.integers(0, models, votes)
    b = (a + rng.integers(1, models, votes)) % models
    p = 1 / (1 + np.exp(theta[b] - theta[a]))
    tie = rng.random(votes) < 0.1
    o = np.where(tie, TIE, np.where(rng.random(votes) < p, A_WINS, B_WINS)).astype(np.int8)
    activity = rng.lognormal(0, 1, voters)
    v = np.minimum(np.searchsorted(np.cumsum(activity), rng.random(votes) * activity.sum()), voters - 1)
    return rng, theta, a, b, o, v


def plant(columns, attacker: int, a_new, b_new, o_new):
    a, b, o, v = columns
    return (np.r_[a, a_new], np.r_[b, b_new], np.r_[o, o_new].astype(np.int8), np.r_[v, np.full(len(a_new), attacker)])


def for_target(rng, target, models, n):
    """n votes in battles with the target, each for the target, on random sides."""
    other = (target + rng.integers(1, models, n)) % models
    swap = rng.random(n) < 0.5
    return (
        np.where(swap, other, target),
        np.where(swap, target, other),
        np.where(swap, B_WINS, A_WINS).astype(np.int8),
    )


# ------------------------------------------------------------------------------------------------ tails


def test_poisson_binomial_tail_is_the_binomial_tail_when_all_probabilities_are_equal():
    for n, p in [(1, 0.3), (20, 0.3), (200, 0.05), (2000, 0.45)]:
        for k in {0, 1, n // 3, n // 2, n}:
            expected = binomtest(k, n, p, alternative="greater").pvalue if k else 1.0
            assert ig.poisson_binomial_sf(np.full(n, p), k) == pytest.approx(expected, rel=RTOL, abs=1e-300)


def test_poisson_binomial_tail_by_enumeration_with_unequal_probabilities():
    p = np.array([0.1, 0.5, 0.9, 0.33, 0.02, 0.7, 0.45])
    for k in range(p.size + 2):
        brute = sum(
            np.prod([q if hit else 1 - q for q, hit in zip(p, hits)])
            for hits in itertools.product([0, 1], repeat=p.size)
            if sum(hits) >= k
        )
        assert ig.poisson_binomial_sf(p, k) == pytest.approx(brute, rel=RTOL, abs=1e-15)


def test_poisson_binomial_tail_approximation_beyond_the_exact_range():
    n = ig.EXACT_TRIALS + 1000
    for k in (int(0.3 * n), int(0.33 * n), int(0.36 * n)):
        assert abs(ig.poisson_binomial_sf(np.full(n, 0.3), k) - binom.sf(k - 1, n, 0.3)) < APPROX_ATOL


# ------------------------------------------------------------------------------------------------ sequential test


def test_sequential_test_is_the_binomial_test_at_a_single_checkpoint():
    """One pair whose crowd favours model 0 at r: a voter with exactly min_votes decisive votes has one
    checkpoint, and its p-value is 2 x the binomial tail of its disagreements (alpha spending j = 0)."""
    crowd = 1000
    a = np.zeros(crowd + 20, np.int64)
    b = np.ones(crowd + 20, np.int64)
    o = np.r_[np.where(np.arange(crowd) < 700, A_WINS, B_WINS), np.where(np.arange(20) < 12, B_WINS, A_WINS)]
    v = np.r_[np.full(crowd, -1), np.zeros(20, np.int64)]
    result = ig.crowd_disagreement_test(a, b, o.astype(np.int8), v, 1, alpha=ALPHA, min_votes=20, min_crowd=10)
    r = (700 + 1) / (crowd + 2)
    reference = binomtest(12, 20, 1 - r, alternative="greater").pvalue
    assert result.tested[0] == 20 and result.disagreements[0] == 12
    assert result.expected[0] == pytest.approx(20 * (1 - r), rel=RTOL)
    assert result.p_value[0] == pytest.approx(min(1.0, 2 * reference), rel=RTOL)
    assert not result.flagged[0]


def test_sequential_test_flags_a_contrarian_voter_and_spares_honest_ones():
    rng, theta, a, b, o, v = honest_arena(seed=1)
    voters = v.max() + 1
    weak = len(theta) - 1  # always voting for the weakest model disagrees with the crowd nearly every time
    columns = plant((a, b, o, v), voters, *for_target(rng, weak, len(theta), 60))
    result = ig.crowd_disagreement_test(*columns, voters + 1, alpha=ALPHA)
    assert result.flagged[voters] and result.checkpoint[voters] == 20  # rejected at the first checkpoint
    assert result.flagged[:voters].sum() == 0


# ------------------------------------------------------------------------------------------------ improbable votes


def test_improbable_votes_cluster_on_the_planted_voter():
    rng, theta, a, b, o, v = honest_arena(seed=2, spread=1.0)
    voters = v.max() + 1
    weak = len(theta) - 1
    # votes for the weakest model against the strongest: the fit gives each well under 10 %
    n = 15
    columns = plant((a, b, o, v), voters, np.full(n, weak), np.zeros(n, np.int64), np.full(n, A_WINS))
    fit = fit_bradley_terry(pair_counts(*columns[:3], len(theta)), prior=PRIOR)
    result = ig.improbable_vote_test(*columns, voters + 1, fit.strengths, below=0.1, alpha=ALPHA)
    assert result.flagged[voters] and result.count[voters] == n
    assert result.improbable[-n:].all() and not result.improbable[:-n].any()
    assert result.flagged[:voters].sum() == 0
    # the p-value is the Poisson-binomial tail of the voter's null probabilities of an improbable vote
    p_a = 1 / (1 + np.exp(fit.strengths[columns[1]] - fit.strengths[columns[0]]))
    u = np.minimum(p_a, 1 - p_a)[columns[3] == voters]
    u = np.where(u < 0.1, u, 0.0)
    assert result.p_value[voters] == pytest.approx(ig.poisson_binomial_sf(u[u > 0], n), rel=RTOL)


# ------------------------------------------------------------------------------------------------ influence


def test_influence_is_the_derivative_of_the_weighted_fit():
    """influence[v] = d ratings / d (weight of v's votes) at weight 1: central finite differences of the fit."""
    rng, theta, a, b, o, v = honest_arena(seed=3, votes=4000, voters=60)
    fit = fit_bradley_terry(pair_counts(a, b, o, len(theta)), prior=PRIOR, tol=1e-13)
    result = ig.influence_concentration(a, b, o, v, v.max() + 1, fit.strengths, prior=PRIOR, alpha=ALPHA)
    eps = 1e-5
    for voter in (0, 7, 31):

        def ratings(scale):
            w = np.where(v == voter, scale, 1.0)
            return fit_bradley_terry(pair_counts(a, b, o, len(theta), weights=w), prior=PRIOR, tol=1e-13).ratings

        numeric = (ratings(1 + eps) - ratings(1 - eps)) / (2 * eps)
        assert np.max(np.abs(numeric - result.influence[voter])) < 1e-5 * max(1.0, np.abs(numeric).max())


def test_influence_z_scores_are_standard_normal_for_honest_voters():
    rng, theta, a, b, o, v = honest_arena(seed=4, votes=30000, voters=600)
    fit = fit_bradley_terry(pair_counts(a, b, o, len(theta)), prior=PRIOR)
    result = ig.influence_concentration(a, b, o, v, v.max() + 1, fit.strengths, prior=PRIOR, alpha=ALPHA)
    busy = np.bincount(v, minlength=v.max() + 1) >= 30
    z = result.z[busy].ravel()
    # ties make a vote's variance below the Bernoulli one assumed, so honest z's are slightly narrower
    assert abs(z.mean()) < 0.05 and 0.8 < z.std() < 1.05
    assert result.flagged.sum() == 0


def test_influence_flags_a_voter_pushing_one_model_through_battles_it_is_not_in():
    """The attacker never votes in the target's battles: it votes against the target's rivals."""
    rng, theta, a, b, o, v = honest_arena(seed=5)
    voters, models, target = v.max() + 1, len(theta), 6
    rival = target - 1
    n = 60
    other = np.array([m for m in range(models) if m not in (target, rival)])[rng.integers(0, models - 2, n)]
    columns = plant((a, b, o, v), voters, np.full(n, rival), other, np.full(n, B_WINS))
    fit = fit_bradley_terry(pair_counts(*columns[:3], models), prior=PRIOR)
    result = ig.influence_concentration(*columns, voters + 1, fit.strengths, prior=PRIOR, alpha=ALPHA)
    assert result.flagged[voters] and result.top_model[voters] == rival
    # the rival falls below the target: the target gains on it without one vote in its own battles
    pushed = result.influence[voters]
    assert pushed[rival] < -3 and pushed[target] - pushed[rival] > 3
    assert result.flagged[:voters].sum() == 0


def test_influence_group_test_catches_many_identities_with_few_votes_each():
    rng, theta, a, b, o, v = honest_arena(seed=6, votes=40000, voters=1500)
    voters, models, target = v.max() + 1, len(theta), 6
    sybils = 60
    columns = (a, b, o, v)
    for s in range(sybils):
        columns = plant(columns, voters + s, *for_target(rng, target, models, 12))
    honest_fit = fit_bradley_terry(pair_counts(a, b, o, models), prior=PRIOR)
    result = ig.influence_concentration(*columns, voters + sybils, honest_fit.strengths, prior=PRIOR, alpha=ALPHA)
    assert (target, 1) in result.pushed
    assert result.group[voters:].mean() > 0.8  # most sybils, one by one each below the single-voter threshold
    assert result.group[:voters].mean() < 0.01


# ------------------------------------------------------------------------------------------------ weights, cap


def test_repeated_prompts_count_as_at_most_the_threshold():
    prompt = np.array([-1, 5, 5, 5, 5, 7, 7, -1, 5])
    weights = ig.repeated_prompt_weights(prompt, threshold=2)
    assert weights.tolist() == [1, 0.4, 0.4, 0.4, 0.4, 1, 1, 1, 0.4]
    assert weights[prompt == 5].sum() == pytest.approx(2)
    assert (ig.repeated_prompt_weights(prompt, threshold=0) == 1).all()


def test_daily_cap_keeps_each_voters_first_votes_of_each_day():
    voter = np.array([0, 0, 0, 1, 0, 0, -1, -1, -1, 0])
    day = np.array([10, 10, 10, 10, 11, 11, 10, 10, 10, 10])
    over = ig.daily_cap_mask(voter, day, cap=2)
    assert over.tolist() == [False, False, True, False, False, False, False, False, False, True]
    assert not ig.daily_cap_mask(voter, day, cap=0).any()


def test_weighted_battle_files_round_trip_and_rank_with_their_weights(tmp_path):
    records = [
        {"model_a": "x", "model_b": "y", "winner": "model_a", "weight": 0.25},
        {"model_a": "y", "model_b": "x", "winner": "model_a"},
        {"model_a": "x", "model_b": "z", "winner": "tie", "weight": 0.5},
    ] * 20
    battles = encode_battles(records)
    path = os.path.join(tmp_path, "b.jsonl")
    write_battles_jsonl(battles, path)
    back = read_battles(path)
    assert np.array_equal(back.weight, battles.weight) and back.weight[:3].tolist() == [0.25, 1.0, 0.5]
    board = rank_battles(back, RankingOptions(replicates=20))
    counts = pair_counts(back.model_a, back.model_b, back.outcome, 3, weights=back.weight)
    fit = fit_bradley_terry(counts)
    assert {row.model: row.rating for row in board.models} == pytest.approx(dict(zip(back.models, fit.ratings)))
    csv_path = os.path.join(tmp_path, "b.csv")
    with open(csv_path, "w") as f:
        f.write("model_a,model_b,winner,weight\nx,y,model_a,0.5\ny,x,model_a,\n")
    assert read_battles(csv_path).weight.tolist() == [0.5, 1.0]
    with pytest.raises(ValueError, match="weight"):
        encode_battles([{"model_a": "x", "model_b": "y", "winner": "model_a", "weight": -1}])


def test_influence_z_scores_against_a_brute_force_loop():
    """The Hessian, its inverse and each voter's null variance summed vote by vote, as the docstring writes them."""
    rng, theta, a, b, o, v = honest_arena(seed=12, models=9, votes=3000, voters=40)
    m = len(theta)
    fit = fit_bradley_terry(pair_counts(a, b, o, m), prior=PRIOR)
    result = ig.influence_concentration(a, b, o, v, v.max() + 1, fit.strengths, prior=PRIOR, alpha=ALPHA)
    s = fit.strengths
    hessian = PRIOR * np.eye(m)
    gradient = np.zeros((v.max() + 1, m))
    variance = np.zeros((v.max() + 1, m))
    for i in range(a.size):
        pi = 1 / (1 + np.exp(s[b[i]] - s[a[i]]))
        e = np.zeros(m)
        e[a[i]], e[b[i]] = 1, -1
        hessian += pi * (1 - pi) * np.outer(e, e)
        y = {A_WINS: 1.0, B_WINS: 0.0}.get(int(o[i]), 0.5)
        gradient[v[i]] += (y - pi) * e
    c = ig.ELO_PER_NAT * (np.eye(m) - 1 / m) @ np.linalg.inv(hessian)
    for i in range(a.size):
        pi = 1 / (1 + np.exp(s[b[i]] - s[a[i]]))
        variance[v[i]] += pi * (1 - pi) * (c[:, a[i]] - c[:, b[i]]) ** 2
    assert np.allclose(result.influence, gradient @ c.T, rtol=1e-9, atol=1e-9)
    assert np.allclose(result.z, gradient @ c.T / np.sqrt(variance), rtol=1e-8, atol=1e-8)
    # a contrast: model k against model l, the row c[k] - c[l] in place of c[k]
    (k, l), row = result.contrasts[5], c[result.contrasts[5][0]] - c[result.contrasts[5][1]]
    assert s[l] > s[k]  # l is rated above k
    contrast_variance = np.zeros(v.max() + 1)
    for i in range(a.size):
        pi = 1 / (1 + np.exp(s[b[i]] - s[a[i]]))
        contrast_variance[v[i]] += pi * (1 - pi) * (row[a[i]] - row[b[i]]) ** 2
    assert np.allclose(result.direction_z[:, m + 5], gradient @ row / np.sqrt(contrast_variance), rtol=1e-8, atol=1e-8)


def test_influence_group_test_along_contrasts_catches_identities_pushing_rivals_down():
    """Many identities, a few votes each, for the target and against the model rated just above it: along
    each model alone the pushes are small; along "target against its rival" they are a group."""
    rng, theta, a, b, o, v = honest_arena(seed=13, votes=40000, voters=1500)
    voters, models, target = v.max() + 1, len(theta), 6
    rival = target - 1
    sybils = 60
    columns = (a, b, o, v)
    for s in range(sybils):
        up = for_target(rng, target, models, 4)
        other = np.array([m for m in range(models) if m not in (target, rival)])[rng.integers(0, models - 2, 8)]
        down = (np.full(8, rival), other, np.full(8, B_WINS, np.int8))
        columns = plant(columns, voters + s, *(np.r_[x, y] for x, y in zip(up, down)))
    honest_fit = fit_bradley_terry(pair_counts(a, b, o, models), prior=PRIOR)
    result = ig.influence_concentration(*columns, voters + sybils, honest_fit.strengths, prior=PRIOR, alpha=ALPHA)
    assert ((target, rival), 1) in result.pushed
    assert result.group[voters:].mean() > 0.7 and result.group[:voters].mean() < 0.01
