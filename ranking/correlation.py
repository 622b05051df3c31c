"""Correlation across models, with percentile bootstrap intervals: how much one per-model quantity (a safety
score) tracks another (a capability rating). The arena's milestone board uses it to flag a safety metric that
is capability in disguise (safetywashing, Ren et al. 2024).

NumPy and SciPy only, no JAX: a thousand replicates of a few dozen models are computed at once as arrays.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import scipy.stats

CONFIDENCE = 0.95
REPLICATES = 1000


class Correlation(NamedTuple):
    """Correlation of x with y across n models, with percentile bootstrap intervals.

    The values are None where they are undefined (fewer than 3 models, or all x or all y equal).
    `replicates_used` counts the bootstrap replicates in which neither resampled x nor y was constant (the
    others are left out of the intervals).
    """

    n: int
    pearson: float | None
    pearson_low: float | None
    pearson_high: float | None
    spearman: float | None
    spearman_low: float | None
    spearman_high: float | None
    replicates_used: int


def average_ranks(values) -> np.ndarray:
    """Ranks 1..n along the last axis, tied values given the average of their ranks (Spearman's convention)."""
    return scipy.stats.rankdata(np.asarray(values, dtype=float), method="average", axis=-1)


def pearson(x, y) -> np.ndarray:
    """Pearson's r along the last axis; NaN where x or y is constant (the correlation is undefined).

    Written out rather than scipy.stats.pearsonr, which warns on every constant replicate of a bootstrap.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    xc, yc = x - x.mean(-1, keepdims=True), y - y.mean(-1, keepdims=True)
    constant = (np.ptp(x, axis=-1) == 0) | (np.ptp(y, axis=-1) == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(-1) / np.sqrt((xc * xc).sum(-1) * (yc * yc).sum(-1))
    return np.where(constant, np.nan, np.clip(r, -1.0, 1.0))


def spearman(x, y) -> np.ndarray:
    """Spearman's rho along the last axis: Pearson's r of the average ranks."""
    return pearson(average_ranks(x), average_ranks(y))


def correlation_bootstrap(
    x, y, *, replicates: int = REPLICATES, seed: int = 0, confidence: float = CONFIDENCE
) -> Correlation:
    """Pearson and Spearman of (x, y) with percentile intervals from resampling the models with replacement.

    The replicates' indices are `numpy.random.default_rng(seed).integers(0, n, size=(replicates, n))`, row b
    being replicate b; the interval is the (1 - confidence)/2 and (1 + confidence)/2 percentiles (numpy's
    linear interpolation) of the replicates whose resampled x and y are not constant. Anyone with the seed
    gets the same intervals.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-d and of one length (got shapes {x.shape} and {y.shape})")
    n = len(x)
    if n < 3:
        return Correlation(n, None, None, None, None, None, None, 0)
    indices = np.random.default_rng(seed).integers(0, n, size=(replicates, n))
    xs, ys = x[indices], y[indices]
    samples_p, samples_s = pearson(xs, ys), spearman(xs, ys)
    valid = ~np.isnan(samples_p)
    tail = 100 * (1 - confidence) / 2

    def interval(samples):
        if not valid.any():
            return None, None
        low, high = np.percentile(samples[valid], [tail, 100 - tail])
        return float(low), float(high)

    return Correlation(
        n, _finite(pearson(x, y)), *interval(samples_p), _finite(spearman(x, y)), *interval(samples_s), int(valid.sum())
    )


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
