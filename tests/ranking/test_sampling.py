"""The sampling rules (ranking.sampling): long-run draws match each rule's probabilities, and the active score
matches its closed form.

Tolerances: draws are compared with the rule's probabilities by a chi-square test at p > 1e-3 with a fixed seed
(a correct sampler fails it one run in a thousand, and the seed makes the verdict reproducible); the floor and
shares are exact identities, checked to RTOL.
"""

import itertools
import math
import random
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from scipy import stats

from ranking import sampling
from ranking.sampling import ActiveState, SamplingRule

P_MIN = 1e-3
RTOL = 1e-12
DRAWS = 30_000


def _state(m=6, seed=3):
    rng = np.random.default_rng(seed)
    ratings = np.sort(rng.normal(1000, 80, m))[::-1]
    half = rng.uniform(15, 60, m)
    return sampling.state_from_intervals(ratings, ratings - half, ratings + half)


def _draw_counts(rule, weights, *, votes=None, odds=None, draws=DRAWS, seed=20240611):
    rng = random.Random(seed)
    pairs, first_is_lower = Counter(), 0
    for _ in range(draws):
        a, b = sampling.draw_pair(rule, weights, rng, votes=votes, odds=odds)
        assert a != b
        pairs[(min(a, b), max(a, b))] += 1
        first_is_lower += a < b
    return pairs, first_is_lower


@pytest.mark.parametrize("policy", sampling.POLICIES)
def test_draws_follow_the_rule_probabilities(policy):
    """Every policy's per-battle draw has, in the long run, the pair probabilities the rule publishes."""
    weights = np.array([1.0, 2.0, 0.5, 1.0, 3.0, 1.0])
    votes = np.array([0, 500, 20, 400, 299, 301])
    rule = SamplingRule(policy=policy, boost=3.0, provisional_votes=300, floor=0.25, focus=3.0)
    odds = sampling.active_odds(sampling.active_pair_scores(_state()), rule.focus)
    probabilities = sampling.pair_probabilities(rule, weights, votes=votes, odds=odds)
    pairs = list(itertools.combinations(range(6), 2))
    expected = np.array([probabilities[i, j] for i, j in pairs])
    assert expected.sum() == pytest.approx(1.0, rel=RTOL)
    counts, first_is_lower = _draw_counts(rule, weights, votes=votes, odds=odds)
    assert stats.chisquare([counts[p] for p in pairs], expected * DRAWS).pvalue > P_MIN
    assert stats.binomtest(first_is_lower, DRAWS).pvalue > P_MIN  # the sides are shuffled


def test_each_rule_in_closed_form():
    """uniform: all pairs alike; weighted: w_i w_j; boost: the provisional models' weights times the boost."""
    weights = np.array([1.0, 2.0, 4.0, 0.0])
    pairs = [(0, 1), (0, 2), (1, 2)]
    uniform = sampling.pair_probabilities(SamplingRule("uniform"), weights)
    assert [uniform[p] for p in pairs] == pytest.approx([1 / 3] * 3, rel=RTOL)
    assert not uniform[3].any()  # weight 0: never drawn, under every policy
    weighted = sampling.pair_probabilities(SamplingRule("weighted"), weights)
    assert [weighted[p] for p in pairs] == pytest.approx(np.array([2, 4, 8]) / 14, rel=RTOL)
    boosted = sampling.pair_probabilities(
        SamplingRule("new_model_boost", boost=5, provisional_votes=10), weights, votes=np.array([9, 10, 100, 0])
    )
    assert [boosted[p] for p in pairs] == pytest.approx(np.array([10, 20, 8]) / 38, rel=RTOL)
    assert sampling.model_shares(boosted).sum() == pytest.approx(1.0, rel=RTOL)


def test_the_active_floor_keeps_every_model_a_share():
    """Whatever the fit, a model keeps at least `floor` times its share under the weighted rule."""
    weights = np.ones(8)
    theta = np.zeros(8)
    var = np.full(8, 1e-6)
    var[0] = sampling.PRIOR_VARIANCE  # one unknown model takes nearly every active draw
    scores = sampling.active_pair_scores(ActiveState(theta, var))
    for floor in (0.0, 0.1, 0.5):
        rule = SamplingRule("active", floor=floor)
        shares = sampling.model_shares(sampling.pair_probabilities(rule, weights, odds=scores))
        assert shares.min() >= floor * (1 / 8) * (1 - 1e-12)
        assert shares[0] > (1 - floor) * 0.5 * 0.999  # the uncertain model is in nearly every active battle
    # a fit with nothing left to learn falls back to the weighted rule
    assert sampling.pair_probabilities(SamplingRule("active"), weights, odds=np.zeros((8, 8))) == pytest.approx(
        sampling.pair_probabilities(SamplingRule("weighted"), weights), rel=RTOL
    )


def test_active_scores_match_the_sherman_morrison_reduction():
    """s_ij against a brute-force reference: the models' variances weighted by their boundaries under diagonal
    covariance, before and after a rank-one Fisher update along e_i - e_j."""
    state = _state(m=7)
    theta, var = state
    order, omega = sampling.boundary_weights(state)
    scores = sampling.active_pair_scores(state)

    weight = np.zeros(7)
    for w, a, b in zip(omega, order[:-1], order[1:]):  # each model: twice the mean of its boundaries' weights
        weight[a] += w if a != order[0] else 2 * w
        weight[b] += w if b != order[-1] else 2 * w

    def objective(variances):
        return weight @ variances

    for i, j in itertools.combinations(range(7), 2):
        p = 1 / (1 + math.exp(-(theta[i] - theta[j])))
        e = np.zeros(7)
        e[i], e[j] = 1, -1
        cov = np.diag(var)
        information = p * (1 - p)
        updated = cov - information * np.outer(cov @ e, cov @ e) / (1 + information * e @ cov @ e)
        assert scores[i, j] == pytest.approx(objective(var) - objective(np.diag(updated)), rel=1e-9)
        assert scores[i, j] == scores[j, i]
    assert not np.diag(scores).any()


def test_boundary_weights_peak_where_intervals_are_about_to_part():
    se = 20 * sampling.NATS_PER_ELO

    def weight(gap_elo):
        state = ActiveState(np.array([gap_elo * sampling.NATS_PER_ELO, 0.0]), np.full(2, se**2))
        return sampling.boundary_weights(state)[1][0]

    touching = 1.96 * 2 * 20  # the two 95 % intervals just touch
    assert weight(0) == pytest.approx(sampling.BOUNDARY_FLOOR)  # equal-looking neighbours: no vote parts them
    assert weight(touching / 2) > weight(touching) > weight(2 * touching)
    assert weight(2 * touching) == pytest.approx(sampling.BOUNDARY_FLOOR, abs=2e-3)  # x = 2.77
    assert max(weight(g) for g in np.linspace(0, 200, 401)) == pytest.approx(
        2 / math.sqrt(math.pi) * math.sqrt(0.5) * math.exp(-0.5) + sampling.BOUNDARY_FLOOR, rel=1e-3
    )


def test_intervals_become_variances_and_votes_update_them():
    ratings = np.array([1100.0, 1000.0, np.nan, 900.0])
    low = np.array([1080.4, 980.4, np.nan, -np.inf])
    high = ratings + 19.6
    state = sampling.state_from_intervals(ratings, low, high)
    se = 10 * sampling.NATS_PER_ELO
    assert state.variances[:2] == pytest.approx([se**2 / (1.959964 / 1.96) ** 2] * 2, rel=1e-5)
    assert state.variances[2] == state.variances[3] == sampling.PRIOR_VARIANCE  # unrated, open interval
    assert state.strengths[2] == 0.0  # an unrated model sits at the mean
    assert state.strengths[0] - state.strengths[1] == pytest.approx(100 * sampling.NATS_PER_ELO)
    # 50 votes between 1 and the unrated 2, all won by 2: its variance shrinks, its rating rises above 1's
    updated = sampling.update_with_votes(state, [1], [2], [0.0], [50.0])
    assert updated.variances[2] < state.variances[2] / 10
    assert updated.strengths[2] > updated.strengths[1]
    assert updated.variances[1] < state.variances[1]
    assert updated.strengths[0] == state.strengths[0] and updated.variances[3] == state.variances[3]
    unchanged = sampling.update_with_votes(state, [], [], [], [])
    assert np.array_equal(unchanged.strengths, state.strengths)


def test_no_pair_without_two_drawable_models():
    rng = random.Random(1)
    for policy in sampling.POLICIES:
        rule = SamplingRule(policy)
        assert sampling.draw_pair(rule, [1.0], rng, odds=np.zeros((1, 1))) is None
        assert sampling.draw_pair(rule, [1.0, 0.0, 0.0], rng, odds=np.ones((3, 3)) - np.eye(3)) is None
        assert sampling.draw_pair(rule, [], rng, odds=np.zeros((0, 0))) is None


def test_bad_rules_are_refused():
    for bad in (
        SamplingRule("random"),
        SamplingRule(boost=0.5),
        SamplingRule(floor=1.5),
        SamplingRule(provisional_votes=-1),
    ):
        with pytest.raises(ValueError):
            sampling.check_rule(bad)


def test_importing_the_rules_does_not_import_jax_or_scipy():
    """The service imports this module on its battle path."""
    code = "import sys, ranking.sampling; print('jax' in sys.modules, 'scipy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
