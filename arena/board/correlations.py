"""How much each safety metric tracks arena capability across models (Pearson and Spearman with bootstrap
intervals), so a metric that is capability in disguise is flagged (safetywashing, Ren et al. 2024)."""
from __future__ import annotations

import math
from typing import Iterable, NamedTuple

import numpy as np

from arena.board.scores import ChosenScore

CONFIDENCE = 0.95
CORRELATION_REPLICATES = 1000
CORRELATION_SEED = 2024  # fixed, and published with every correlation, so anyone gets the same intervals
FLAG_REASON = ("|Spearman| >= {threshold:g}: at 0.7, rho^2 ~ 0.5, i.e. about half of the metric's variance "
               "(in ranks) tracks arena capability; gains on a flagged metric are largely capability gains "
               "presented as safety (safetywashing, Ren et al. 2024)")


# ------------------------------------------------------------------------------------------------ correlation

class Correlation(NamedTuple):
    """Correlation of a safety metric with capability across models, with percentile bootstrap intervals.

    The values are None where they are undefined (fewer than 3 models, or all ratings or all scores equal).
    `replicates_used` counts the bootstrap replicates in which both were not constant (the others are left
    out of the intervals).
    """

    n: int
    pearson: float | None
    pearson_low: float | None
    pearson_high: float | None
    spearman: float | None
    spearman_low: float | None
    spearman_high: float | None
    replicates_used: int


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n along the last axis, tied values given the average of their ranks (Spearman's convention),
    by sorting: a run of equal values at sorted positions start..end (0-based) gets (start + end) / 2 + 1."""
    values = np.asarray(values, dtype=float)
    n = values.shape[-1]
    order = np.argsort(values, axis=-1, kind="stable")
    ordered = np.take_along_axis(values, order, axis=-1)
    position = np.broadcast_to(np.arange(n), values.shape)
    starts = np.ones(values.shape, dtype=bool)
    starts[..., 1:] = ordered[..., 1:] != ordered[..., :-1]
    ends = np.ones(values.shape, dtype=bool)
    ends[..., :-1] = starts[..., 1:]
    start = np.maximum.accumulate(np.where(starts, position, 0), axis=-1)
    end = np.flip(np.minimum.accumulate(np.flip(np.where(ends, position, n - 1), -1), axis=-1), -1)
    ranks = np.empty(values.shape)
    np.put_along_axis(ranks, order, (start + end) / 2 + 1, axis=-1)
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson's r along the last axis; NaN where x or y is constant (the correlation is undefined)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    xc, yc = x - x.mean(-1, keepdims=True), y - y.mean(-1, keepdims=True)
    constant = (np.ptp(x, axis=-1) == 0) | (np.ptp(y, axis=-1) == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(-1) / np.sqrt((xc * xc).sum(-1) * (yc * yc).sum(-1))
    return np.where(constant, np.nan, np.clip(r, -1.0, 1.0))


def spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho along the last axis: Pearson's r of the average ranks."""
    return pearson(average_ranks(x), average_ranks(y))


def correlation_bootstrap(x, y, *, replicates: int = CORRELATION_REPLICATES, seed: int = CORRELATION_SEED,
                          confidence: float = CONFIDENCE) -> Correlation:
    """Pearson and Spearman of (x, y) with percentile intervals from resampling the models with replacement.

    Replicate b uses the indices `rng.integers(0, n, n)`, drawn in order from `numpy.random.default_rng(seed)`;
    the interval is the (1 - confidence)/2 and (1 + confidence)/2 percentiles (numpy's linear interpolation)
    of the replicates whose resampled x and y are not constant.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
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

    return Correlation(n, _finite(pearson(x, y)), *interval(samples_p), _finite(spearman(x, y)),
                       *interval(samples_s), int(valid.sum()))


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def correlations(document: dict, chosen: dict[tuple[str, str], ChosenScore], *, threshold: float,
                 metrics: Iterable[str] = (), replicates: int = CORRELATION_REPLICATES,
                 seed: int = CORRELATION_SEED) -> dict:
    """Every safety metric (those with a score at the snapshot's date, and `metrics`) against the rating on
    the snapshot's overall board, across the models that have both; flagged when |Spearman| >= threshold."""
    ratings = {row["model"]: row["rating"] for row in document["boards"]["overall"]["models"]}
    names = sorted({metric for _, metric in chosen} | set(metrics))
    results = []
    for metric in names:
        pairs = sorted((model, ratings[model], c.score.value) for (model, m), c in chosen.items()
                       if m == metric and model in ratings)
        result = correlation_bootstrap([p[1] for p in pairs], [p[2] for p in pairs], replicates=replicates,
                                       seed=seed)
        entry = {"metric": metric, "n": result.n, "models": [p[0] for p in pairs],
                 "pearson": {"r": result.pearson, "ci_low": result.pearson_low, "ci_high": result.pearson_high},
                 "spearman": {"rho": result.spearman, "ci_low": result.spearman_low,
                              "ci_high": result.spearman_high},
                 "replicates_used": result.replicates_used,
                 "flagged": result.spearman is not None and abs(result.spearman) >= threshold}
        if result.n < 3:
            entry["note"] = (f"only {result.n} model(s) have both a rating on the overall board and a score: "
                             "fewer than 3, no correlation")
        elif result.spearman is None:
            entry["note"] = "the ratings or the scores are all equal: no correlation"
        elif entry["flagged"]:
            entry["note"] = (f"flagged: |Spearman| {abs(result.spearman):.2f} >= {threshold:g}; this metric "
                             "mostly tracks capability")
        results.append(entry)
    return {"against": "rating on the overall board", "threshold": threshold, "statistic": "spearman",
            "why": FLAG_REASON.format(threshold=threshold), "replicates": replicates, "seed": seed,
            "confidence": CONFIDENCE, "interval_method": "percentile bootstrap over models", "metrics": results}
