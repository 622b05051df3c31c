"""Sufficient statistics of a battle log: per-pair outcome counts, win matrices and win rates.

Bradley-Terry and its tie variants depend on the battles only through how often each unordered pair ended in
each outcome, so once the log is reduced to these counts every later step costs O(models²), not O(battles).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.special import expit

from ranking.data import A_WINS, B_WINS, TIE, TIE_BOTHBAD


class PairCounts(NamedTuple):
    """Outcome counts of every compared unordered pair, `first < second`, one entry per pair.

    Counts are float64 so that weighted logs (down-weighted repeats, bootstrap weights) fit the same type.
    """

    first: np.ndarray  # int32 (K,)
    second: np.ndarray  # int32 (K,)
    first_wins: np.ndarray  # float64 (K,)
    second_wins: np.ndarray  # float64 (K,)
    ties: np.ndarray  # float64 (K,), both tie kinds
    n_models: int

    @property
    def totals(self) -> np.ndarray:
        return self.first_wins + self.second_wins + self.ties


def pair_counts(model_a, model_b, outcome, n_models: int, *, weights=None) -> PairCounts:
    """Reduce battles to per-pair outcome counts; pairs never compared are left out.

    The orientation of a battle (which model was shown as A) is dropped: Bradley-Terry has no side effect.
    """
    model_a = np.asarray(model_a)
    model_b = np.asarray(model_b)
    outcome = np.asarray(outcome)
    if not (model_a.shape == model_b.shape == outcome.shape) or model_a.ndim != 1:
        raise ValueError("model_a, model_b and outcome must be 1-d arrays of one length")
    if n_models < 0 or (
        model_a.size and (min(model_a.min(), model_b.min()) < 0 or max(model_a.max(), model_b.max()) >= n_models)
    ):
        raise ValueError(f"model codes must lie in [0, {n_models})")
    if np.any(model_a == model_b):
        raise ValueError("a battle of a model with itself cannot be ranked")
    if outcome.size and not np.isin(outcome, (A_WINS, B_WINS, TIE, TIE_BOTHBAD)).all():
        raise ValueError("outcome codes must be A_WINS, B_WINS, TIE or TIE_BOTHBAD")
    w = np.ones(model_a.shape, np.float64) if weights is None else np.asarray(weights, np.float64)
    if w.shape != model_a.shape or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite, non-negative and one per battle")

    a = model_a.astype(np.int64)
    b = model_b.astype(np.int64)
    first = np.minimum(a, b)
    second = np.maximum(a, b)
    a_is_first = a == first
    first_won = np.where(a_is_first, outcome == A_WINS, outcome == B_WINS)
    second_won = np.where(a_is_first, outcome == B_WINS, outcome == A_WINS)
    tied = (outcome == TIE) | (outcome == TIE_BOTHBAD)

    key = first * n_models + second
    size = n_models * n_models
    if size <= 16 * max(key.size, 1) + 1_000_000:
        # Dense keys: bincount is an order of magnitude faster than a sort-based unique.
        present = np.flatnonzero(np.bincount(key, minlength=size))
        fw = np.bincount(key, weights=w * first_won, minlength=size)[present]
        sw = np.bincount(key, weights=w * second_won, minlength=size)[present]
        tw = np.bincount(key, weights=w * tied, minlength=size)[present]
    else:
        present, inverse = np.unique(key, return_inverse=True)
        fw = np.bincount(inverse, weights=w * first_won, minlength=present.size)
        sw = np.bincount(inverse, weights=w * second_won, minlength=present.size)
        tw = np.bincount(inverse, weights=w * tied, minlength=present.size)
    return PairCounts(
        first=(present // n_models).astype(np.int32),
        second=(present % n_models).astype(np.int32),
        first_wins=fw.astype(np.float64),
        second_wins=sw.astype(np.float64),
        ties=tw.astype(np.float64),
        n_models=int(n_models),
    )


def win_matrix(counts: PairCounts) -> np.ndarray:
    """W[i, j] = wins of i over j plus half of their ties (FastChat's convention), float64 (m, m)."""
    m = counts.n_models
    wins = np.zeros((m, m))
    half_ties = counts.ties / 2
    np.add.at(wins, (counts.first, counts.second), counts.first_wins + half_ties)
    np.add.at(wins, (counts.second, counts.first), counts.second_wins + half_ties)
    return wins


def battle_counts(counts: PairCounts) -> np.ndarray:
    """Number of battles each model took part in (with weights, their sum), float64 (m,)."""
    totals = counts.totals
    return np.bincount(counts.first, weights=totals, minlength=counts.n_models) + np.bincount(
        counts.second, weights=totals, minlength=counts.n_models
    )


def observed_win_rates(counts: PairCounts) -> np.ndarray:
    """Share of battles i won against j, ties counting half; NaN for pairs never compared and the diagonal."""
    wins = win_matrix(counts)
    games = wins + wins.T
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(games > 0, wins / np.where(games > 0, games, 1.0), np.nan)


def predicted_win_rates(ratings, *, scale: float = 400.0, base: float = 10.0) -> np.ndarray:
    """P(i beats j) = 1 / (1 + base**((R_j - R_i) / scale)) for Elo-scale ratings; 0.5 on the diagonal."""
    r = np.asarray(ratings, np.float64)
    # expit of the natural-log odds: extreme gaps give 0 or 1, never an overflow warning.
    return expit((r[:, None] - r[None, :]) * np.log(base) / scale)
