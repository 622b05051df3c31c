"""Online Elo against a plain Python loop written from the textbook formula."""

import csv
import math
from pathlib import Path

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ranking  # noqa: F401
from ranking import elo
from ranking.data import A_WINS, B_WINS, TIE, TIE_BOTHBAD
from ranking.elo import EloResult, online_elo

ATOL = 1e-9  # Elo points: the compiled scan must match the sequential loop to rounding
LLMFAO = Path(__file__).resolve().parents[2] / "data" / "llmfao" / "crowd-comparisons.csv"


def loop_elo(model_a, model_b, outcome, n_models, *, k=4.0, scale=400.0, base=10.0, initial=1000.0):
    """Reference: the Elo update, one battle at a time, in Python floats."""
    ratings = [float(initial)] * n_models
    for a, b, o in zip(model_a.tolist(), model_b.tolist(), outcome.tolist()):
        score = {A_WINS: 1.0, B_WINS: 0.0, TIE: 0.5, TIE_BOTHBAD: 0.5}[o]
        expected = 1.0 / (1.0 + math.pow(base, (ratings[b] - ratings[a]) / scale))
        ratings[a] += k * (score - expected)
        ratings[b] -= k * (score - expected)
    return np.array(ratings)


def random_battles(rng, n, m):
    a = rng.integers(0, m, n)
    b = (a + rng.integers(1, m, n)) % m  # never a self-battle
    return a.astype(np.int32), b.astype(np.int32), rng.integers(0, 4, n).astype(np.int8)


def read_llmfao():
    models, a, b, o = {}, [], [], []
    code = {"left": A_WINS, "right": B_WINS, "tie": TIE}
    with open(LLMFAO, newline="") as f:
        for row in csv.DictReader(f):
            a.append(models.setdefault(row["left"], len(models)))
            b.append(models.setdefault(row["right"], len(models)))
            o.append(code[row["winner"]])
    return np.array(a, np.int32), np.array(b, np.int32), np.array(o, np.int8), len(models)


@pytest.mark.parametrize("n, m", [(1, 2), (500, 3), (5000, 40), (20000, 150)])
def test_matches_python_loop_on_random_battles(n, m):
    a, b, o = random_battles(np.random.default_rng(n), n, m)
    result = online_elo(a, b, o, m)
    np.testing.assert_allclose(result.ratings, loop_elo(a, b, o, m), rtol=0, atol=ATOL)
    np.testing.assert_array_equal(result.battles, np.bincount(a, minlength=m) + np.bincount(b, minlength=m))


def test_matches_python_loop_on_llmfao_crowd_votes():
    a, b, o, m = read_llmfao()
    assert a.size > 8000 and m > 50  # the real file, not a stub
    result = online_elo(a, b, o, m)
    expected = loop_elo(a, b, o, m)
    np.testing.assert_allclose(result.ratings, expected, rtol=0, atol=ATOL)
    assert np.ptp(expected) > 50  # the votes do separate the models, so the comparison has teeth


@pytest.mark.parametrize(
    "options",
    [
        dict(k=32.0),
        dict(scale=173.7),
        dict(base=math.e),
        dict(initial=1500.0),
        dict(k=10.0, scale=200.0, base=2.0, initial=0.0),
    ],
)
def test_options_are_respected(options):
    a, b, o = random_battles(np.random.default_rng(7), 3000, 12)
    result = online_elo(a, b, o, 12, **options)
    np.testing.assert_allclose(result.ratings, loop_elo(a, b, o, 12, **options), rtol=0, atol=ATOL)
    default = online_elo(a, b, o, 12)
    assert np.max(np.abs(result.ratings - default.ratings)) > 1e-3  # the option made a difference


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 300),
    m=st.integers(2, 9),
    k=st.floats(0.1, 64),
    initial=st.floats(-5000, 5000),
)
def test_conservation_of_total_rating(seed, n, m, k, initial):
    a, b, o = random_battles(np.random.default_rng(seed), n, m)
    ratings = online_elo(a, b, o, m, k=k, initial=initial).ratings
    assert math.isclose(ratings.sum(), m * initial, rel_tol=0, abs_tol=1e-9 * max(1.0, abs(initial)) * m)
    np.testing.assert_allclose(
        ratings, loop_elo(a, b, o, m, k=k, initial=initial), rtol=0, atol=1e-9 * max(1.0, abs(initial))
    )


@pytest.mark.slow  # eager mode compiles every primitive once
def test_jit_and_plain_scan_agree():
    a, b, o = random_battles(np.random.default_rng(3), 60, 3)  # few models: eager mode compiles per index
    score = elo._SCORE[o]
    args = (np.full(3, 1000.0), a, b, score, np.ones(a.size, bool), 4.0, 400.0, 10.0)
    with jax.disable_jit():
        plain = np.asarray(elo._elo_scan(*args))
    np.testing.assert_allclose(online_elo(a, b, o, 3).ratings, plain, rtol=0, atol=ATOL)


def test_single_battle_closed_form():
    # Equal ratings: E = 1/2, so a win moves k/2 points each way.
    result = online_elo(np.array([0]), np.array([1]), np.array([A_WINS]), 3, k=10.0)
    np.testing.assert_allclose(result.ratings, [1005.0, 995.0, 1000.0], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(result.battles, [1, 1, 0])
    tie = online_elo(np.array([0]), np.array([1]), np.array([TIE_BOTHBAD]), 2)
    np.testing.assert_allclose(tie.ratings, [1000.0, 1000.0], rtol=0, atol=1e-12)


def test_order_matters():
    a, b, o = random_battles(np.random.default_rng(11), 200, 4)
    forward, backward = online_elo(a, b, o, 4), online_elo(a[::-1], b[::-1], o[::-1], 4)
    assert np.max(np.abs(forward.ratings - backward.ratings)) > 1e-3


def test_empty_input():
    empty = np.zeros(0, np.int32)
    result = online_elo(empty, empty, empty.astype(np.int8), 3, initial=1200.0)
    assert isinstance(result, EloResult)
    np.testing.assert_array_equal(result.ratings, [1200.0] * 3)
    np.testing.assert_array_equal(result.battles, [0, 0, 0])
    assert online_elo([], [], [], 0).ratings.shape == (0,)


def test_compiled_function_is_reused_across_similar_lengths():
    rng = np.random.default_rng(5)
    a, b, o = random_battles(rng, 3000, 20)
    online_elo(a, b, o, 20)
    size = elo._elo_scan_jit._cache_size()
    online_elo(a[:-1], b[:-1], o[:-1], 20, k=8.0)  # same bucket, other options
    online_elo(a[:2900], b[:2900], o[:2900], 21, initial=0.0)  # same battle and model buckets
    assert elo._elo_scan_jit._cache_size() == size


def test_extreme_rating_gap_stays_finite():
    a, b, o = np.array([0] * 50), np.array([1] * 50), np.array([A_WINS] * 50)
    result = online_elo(a, b, o, 2, k=1e5)
    assert np.all(np.isfinite(result.ratings))
    np.testing.assert_allclose(result.ratings, loop_elo(a, b, o, 2, k=1e5), rtol=1e-12, atol=ATOL)


@pytest.mark.parametrize(
    "args, message",
    [
        (([0, 1], [1], [0], 2), "same length"),
        (([[0, 1]], [[1, 0]], [[0, 0]], 2), "1-D"),
        (([0.0], [1.0], [0], 2), "integer"),
        (([0], [2], [0], 2), r"\[0, 2\)"),
        (([-1], [1], [0], 2), r"\[0, 2\)"),
        (([1], [1], [0], 2), "against itself"),
        (([0], [1], [4], 2), "outcome"),
        (([0], [1], [-1], 2), "outcome"),
        (([0], [1], [0], -1), "n_models"),
        (([0], [1], [0], 2.0), "n_models"),
    ],
)
def test_bad_input_raises(args, message):
    with pytest.raises(ValueError, match=message):
        online_elo(*args)


@pytest.mark.parametrize(
    "options",
    [dict(k=0.0), dict(k=-1.0), dict(scale=0.0), dict(base=1.0), dict(initial=float("nan")), dict(k=float("inf"))],
)
def test_bad_options_raise(options):
    with pytest.raises(ValueError):
        online_elo([0], [1], [0], 2, **options)
