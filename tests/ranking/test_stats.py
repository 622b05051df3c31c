"""Sufficient statistics against plain loops over the battles."""

from collections import defaultdict

import numpy as np
import pytest

from ranking.data import A_WINS, B_WINS, TIE, TIE_BOTHBAD
from ranking.stats import battle_counts, observed_win_rates, pair_counts, predicted_win_rates, win_matrix


def random_battles(m=7, n=3000, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, m, n)
    b = (a + rng.integers(1, m, n)) % m
    outcome = rng.choice([A_WINS, B_WINS, TIE, TIE_BOTHBAD], n, p=[0.4, 0.35, 0.15, 0.1]).astype(np.int8)
    return a, b, outcome


@pytest.mark.parametrize("m", [7, 3000])  # 3000 models takes the sort-based path for sparse keys
def test_pair_counts_match_a_loop(m):
    a, b, outcome = random_battles(m=m, n=5000)
    expected = defaultdict(lambda: [0, 0, 0])
    for x, y, o in zip(a, b, outcome):
        first, second = min(x, y), max(x, y)
        if o in (TIE, TIE_BOTHBAD):
            expected[first, second][2] += 1
        elif (o == A_WINS) == (x == first):
            expected[first, second][0] += 1
        else:
            expected[first, second][1] += 1
    counts = pair_counts(a, b, outcome, m)
    got = {
        (int(f), int(s)): [fw, sw, t]
        for f, s, fw, sw, t in zip(counts.first, counts.second, counts.first_wins, counts.second_wins, counts.ties)
    }
    assert got == {key: value for key, value in expected.items()}
    assert np.all(counts.first < counts.second)


def test_weights_scale_the_counts():
    a, b, outcome = random_battles()
    weights = np.random.default_rng(1).uniform(0, 2, a.size)
    weighted = pair_counts(a, b, outcome, 7, weights=weights)
    w = win_matrix(weighted)
    expected = np.zeros((7, 7))
    for x, y, o, wt in zip(a, b, outcome, weights):
        if o == A_WINS:
            expected[x, y] += wt
        elif o == B_WINS:
            expected[y, x] += wt
        else:
            expected[x, y] += wt / 2
            expected[y, x] += wt / 2
    np.testing.assert_allclose(w, expected, rtol=1e-12)


def test_win_rates_and_battle_counts():
    a, b, outcome = random_battles()
    counts = pair_counts(a, b, outcome, 7)
    rates = observed_win_rates(counts)
    assert np.all(np.isnan(np.diag(rates)))
    off = ~np.eye(7, dtype=bool)
    np.testing.assert_allclose(rates[off] + rates.T[off], 1.0)
    i, j = 2, 5
    mask = ((a == i) & (b == j)) | ((a == j) & (b == i))
    score = np.where(outcome[mask] >= TIE, 0.5, ((outcome[mask] == A_WINS) == (a[mask] == i)).astype(float))
    assert rates[i, j] == pytest.approx(score.mean())
    np.testing.assert_array_equal(battle_counts(counts), np.bincount(a, minlength=7) + np.bincount(b, minlength=7))


def test_predicted_win_rates_follow_the_elo_formula():
    ratings = np.array([1000.0, 1200.0, 800.0, 5000.0])
    p = predicted_win_rates(ratings)
    assert p[1, 0] == pytest.approx(1 / (1 + 10 ** (-200 / 400)))
    np.testing.assert_allclose(p + p.T, 1.0)
    assert p[3, 2] == pytest.approx(1.0) and np.all(np.isfinite(p))


@pytest.mark.parametrize(
    "bad",
    [
        dict(model_a=np.array([0, 1]), model_b=np.array([0, 2])),  # self-battle
        dict(model_a=np.array([0, 9]), model_b=np.array([1, 2])),  # out of range
        dict(outcome=np.array([0, 7])),  # unknown outcome
        dict(weights=np.array([1.0, -1.0])),
        dict(model_b=np.array([1])),  # length mismatch
    ],
)
def test_invalid_battles_raise(bad):
    args = dict(model_a=np.array([0, 1]), model_b=np.array([1, 2]), outcome=np.array([0, 1]))
    weights = bad.pop("weights", None)
    args.update(bad)
    with pytest.raises(ValueError):
        pair_counts(args["model_a"], args["model_b"], args["outcome"], 3, weights=weights)
