"""Online Elo over battles in file order, as one compiled `jax.lax.scan`.

Each battle moves both ratings by the surprise of its outcome (Elo 1978, FastChat's `compute_online_elo`):

    E_a = 1 / (1 + base ** ((R_b - R_a) / scale))       expected score of model_a, in [0, 1]
    S_a = 1 (A_WINS), 0 (B_WINS), 1/2 (TIE or TIE_BOTHBAD)
    R_a <- R_a + k (S_a - E_a),   R_b <- R_b - k (S_a - E_a)

Ratings are in Elo points (default: 400 points per factor of 10 in odds, start at 1000, K = 4 as FastChat).
The update is zero-sum, so the mean rating stays `initial`. Unlike Bradley-Terry, the result depends on the
order of the battles: it is a running estimate that weights recent battles more, and is reported as such.

Compilation: the battle arrays are padded to size buckets (2^j or 1.5 * 2^j rows, at least 1024) with rows
that are masked out, and the number of models to the same kind of bucket, so 999,999 and 1,000,000 battles
(and 150 or 170 models) reuse one compiled function. K, scale, base and the initial rating are traced
arguments: changing them does not recompile either. A scan step is a few scalar operations and two in-place
scatter-adds, so 1M battles run in tens of milliseconds on one CPU core once compiled.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import ranking._jax  # noqa: F401  (float64 JAX)
from ranking.data import A_WINS, B_WINS, TIE, TIE_BOTHBAD

MIN_BATTLE_BUCKET = 1024
MIN_MODEL_BUCKET = 16

# Score of model_a for each outcome code (index = code).
_SCORE = np.array([1.0, 0.0, 0.5, 0.5])
assert (A_WINS, B_WINS, TIE, TIE_BOTHBAD) == (0, 1, 2, 3)


class EloResult(NamedTuple):
    """Final online Elo ratings.

    ratings: (m,) float64 Elo points after the last battle; battles: (m,) int64 number of battles each model
    took part in (a model with 0 battles keeps `initial`).
    """

    ratings: np.ndarray
    battles: np.ndarray


def bucket(size: int, minimum: int) -> int:
    """Smallest of minimum * 2^j or 1.5 * minimum * 2^j that is >= size (wastes at most a third of the rows)."""
    padded = minimum
    while padded < size:
        if padded * 3 // 2 >= size:
            return padded * 3 // 2
        padded *= 2
    return padded


def _elo_scan(initial_ratings, model_a, model_b, score_a, live, k, scale, base):
    """Sequential Elo updates; rows with live == False change nothing. Returns the final ratings."""

    def battle(ratings, row):
        a, b, s, keep = row
        expected = 1.0 / (1.0 + base ** ((ratings[b] - ratings[a]) / scale))
        delta = jnp.where(keep, k * (s - expected), 0.0)
        return ratings.at[a].add(delta).at[b].add(-delta), None

    final, _ = jax.lax.scan(battle, jnp.asarray(initial_ratings, jnp.float64), (model_a, model_b, score_a, live))
    return final


_elo_scan_jit = jax.jit(_elo_scan)


def _as_codes(values, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integer codes, got dtype {array.dtype}")
    return array


def check_battles(model_a, model_b, outcome, n_models):
    """Validate battle arrays at the boundary; returns them as int32, int32, int8 numpy arrays."""
    model_a = _as_codes(model_a, "model_a")
    model_b = _as_codes(model_b, "model_b")
    outcome = _as_codes(outcome, "outcome")
    if not (model_a.shape == model_b.shape == outcome.shape):
        raise ValueError(
            f"model_a, model_b and outcome must have the same length, got "
            f"{model_a.shape[0]}, {model_b.shape[0]} and {outcome.shape[0]}"
        )
    if isinstance(n_models, (bool, np.bool_)) or not isinstance(n_models, (int, np.integer)) or n_models < 0:
        raise ValueError(f"n_models must be a non-negative integer, got {n_models!r}")
    if model_a.size:
        for name, codes in (("model_a", model_a), ("model_b", model_b)):
            if codes.min() < 0 or codes.max() >= n_models:
                raise ValueError(f"{name} codes must lie in [0, {n_models}), found {codes.min()}..{codes.max()}")
        if np.any(model_a == model_b):
            row = int(np.flatnonzero(model_a == model_b)[0])
            raise ValueError(f"battle {row} pits model {model_a[row]} against itself")
        if outcome.min() < 0 or outcome.max() > TIE_BOTHBAD:
            raise ValueError(
                f"outcome codes must be A_WINS, B_WINS, TIE or TIE_BOTHBAD (0..3), "
                f"found {outcome.min()}..{outcome.max()}"
            )
    return model_a.astype(np.int32), model_b.astype(np.int32), outcome.astype(np.int8)


def online_elo(
    model_a,
    model_b,
    outcome,
    n_models: int,
    *,
    k: float = 4.0,
    scale: float = 400.0,
    base: float = 10.0,
    initial: float = 1000.0,
) -> EloResult:
    """Online Elo ratings after playing the battles in the given order (see the module docstring).

    model_a, model_b: (n,) integer model codes in [0, n_models), distinct per row; outcome: (n,) codes A_WINS,
    B_WINS, TIE, TIE_BOTHBAD from model_a's point of view. k: Elo points moved by a maximally surprising result
    (> 0); scale, base: R_b - R_a = scale means odds of base to 1 for b; initial: every model's start rating.
    Raises ValueError on malformed input.
    """
    model_a, model_b, outcome = check_battles(model_a, model_b, outcome, n_models)
    for name, value in (("k", k), ("scale", scale), ("initial", initial), ("base", base)):
        if not np.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
    if not (k > 0 and scale > 0 and base > 1):
        raise ValueError(f"need k > 0, scale > 0 and base > 1, got k={k!r}, scale={scale!r}, base={base!r}")
    n = model_a.shape[0]
    battles = (np.bincount(model_a, minlength=n_models) + np.bincount(model_b, minlength=n_models)).astype(np.int64)
    if n == 0:
        return EloResult(ratings=np.full(n_models, float(initial)), battles=battles)

    rows, models = bucket(n, MIN_BATTLE_BUCKET), bucket(n_models, MIN_MODEL_BUCKET)

    def pad(values, dtype):
        out = np.zeros(rows, dtype)
        out[:n] = values
        return out

    # Padding rows pit model 0 against model 0 and are masked out, so they change nothing.
    final = _elo_scan_jit(
        jnp.full(models, initial, dtype=jnp.float64),
        pad(model_a, np.int32),
        pad(model_b, np.int32),
        pad(_SCORE[outcome], np.float64),
        pad(np.ones(n, bool), bool),
        jnp.float64(k),
        jnp.float64(scale),
        jnp.float64(base),
    )
    return EloResult(ratings=np.asarray(final)[:n_models].copy(), battles=battles)
