"""From encoded battles to a leaderboard: the one place where options, filters, fits and intervals meet.

The command line and the service's snapshot builder both call `rank_battles`, so a published leaderboard and
`python -m ranking fit` on its battle file go through the same code with the same options.
"""
from __future__ import annotations

import math
import warnings
from importlib import metadata
from typing import NamedTuple

import numpy as np

from ranking import bootstrap as bs
from ranking import bradley_terry as bt
from ranking.data import A_WINS, B_WINS, Battles
from ranking.stats import pair_counts


def code_version() -> str:
    try:
        return metadata.version("arena")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


class RankingOptions(NamedTuple):
    """Everything that determines a leaderboard besides the battles themselves."""

    ties: str = "half"
    prior: float = bt.DEFAULT_PRIOR
    replicates: int = bs.DEFAULT_REPLICATES  # 0: no bootstrap, sandwich intervals instead
    seed: int = 0
    confidence: float = 0.95
    anchor: str | None = None  # a model name pinned at anchor_rating; None: mean rating = anchor_rating
    anchor_rating: float = 1000.0
    scale: float = 400.0
    base: float = 10.0
    category: str | None = None
    style: bool = False
    include_named: bool = False  # FastChat ranks anonymous battles only; named ones can be let in


class ModelResult(NamedTuple):
    model: str
    rating: float
    ci_low: float  # -inf where the data give no lower limit
    ci_high: float  # +inf where the data give no upper limit
    rank_ub: int
    battles: int
    wins: int
    losses: int
    ties: int


class Leaderboard(NamedTuple):
    models: list[ModelResult]  # best first
    options: RankingOptions
    battles_read: int
    battles_used: int
    excluded: dict  # reason -> number of battles left out
    interval_method: str
    tie_strength: float | None
    style_coefficients: dict | None  # feature -> {"value", "ci_low", "ci_high"}
    warnings: list[str]


def select_battles(battles: Battles, options: RankingOptions):
    """The rows that the options keep, and the count left out for each reason."""
    keep = np.ones(battles.model_a.shape[0], bool)
    excluded = {}
    if not options.include_named:
        named = ~battles.anony
        excluded["not_anonymous"] = int(named.sum())
        keep &= ~named
    if options.category is not None:
        if options.category not in battles.categories:
            known = ", ".join(sorted(battles.categories)) or "none"
            raise ValueError(f"no battle has category {options.category!r} (categories in the file: {known})")
        other = battles.category != battles.categories.index(options.category)
        excluded["other_category"] = int((other & keep).sum())
        keep &= ~other
    if options.style:
        if battles.style is None:
            raise ValueError("style control needs answer lengths (conv_metadata), and no battle has them")
        missing = np.isnan(battles.style[:, :, style_features_used(battles, keep)]).any(axis=(1, 2))
        excluded["no_style_metadata"] = int((missing & keep).sum())
        keep &= ~missing
    return keep, excluded


def style_features_used(battles: Battles, keep) -> np.ndarray:
    """Indices of the style features that some selected battle reports (a file may give lengths only)."""
    return np.flatnonzero(~np.isnan(battles.style[keep]).all(axis=(0, 1)))


def rank_battles(battles: Battles, options: RankingOptions = RankingOptions(), *, progress: bool = False
                 ) -> Leaderboard:
    """Fit, intervals and rank upper bounds for the battles that the options select."""
    keep, excluded = select_battles(battles, options)
    if not keep.any():
        raise ValueError("no battle is left to rank after the filters " + str(excluded))
    a, b, outcome = battles.model_a[keep], battles.model_b[keep], battles.outcome[keep]
    m = len(battles.models)
    anchor = None
    if options.anchor is not None:
        if options.anchor not in battles.models:
            raise ValueError(f"anchor model {options.anchor!r} does not appear in the battles")
        anchor = battles.models.index(options.anchor)
    fit_options = dict(anchor=anchor, anchor_rating=options.anchor_rating, scale=options.scale, base=options.base)
    counts = pair_counts(a, b, outcome, m)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", bt.RankingWarning)
        tie_strength = style_coefficients = None
        if options.style:
            ratings, low, high, style_coefficients = _style_controlled(battles, keep, options, fit_options)
            method = f"bootstrap ({options.replicates} replicates, style-controlled rows)"
        else:
            fit = bt.fit_bradley_terry(counts, ties=options.ties, prior=options.prior, names=battles.models,
                                       **fit_options)
            if options.ties == "davidson":
                tie_strength = fit.tie_strength
            ratings = fit.ratings
            if options.replicates:
                boot = bs.bootstrap_ratings(counts, replicates=options.replicates, seed=options.seed,
                                            ties=options.ties, prior=options.prior, confidence=options.confidence,
                                            fit=fit, progress=progress, **fit_options)
                low, high = boot.low, boot.high
                method = f"percentile bootstrap ({options.replicates} replicates)"
            else:
                sandwich = bs.sandwich_intervals(counts, fit, ties=options.ties, prior=options.prior,
                                                 confidence=options.confidence, scale=options.scale,
                                                 base=options.base)
                low, high = sandwich.low, sandwich.high
                method = "sandwich (robust normal approximation)"
    messages = [str(w.message) for w in caught if issubclass(w.category, bt.RankingWarning)]

    played = ~np.isnan(ratings)
    # A model without battles has no interval: it neither ranks nor pushes anyone down.
    rank_ub = bs.rank_upper_bound(np.where(played, low, -np.inf), np.where(played, high, np.inf))
    wins, losses, tie_counts = _record(a, b, outcome, m)
    order = sorted(np.flatnonzero(played), key=lambda i: (-ratings[i], battles.models[i]))
    models = [ModelResult(model=battles.models[i], rating=float(ratings[i]), ci_low=float(low[i]),
                          ci_high=float(high[i]), rank_ub=int(rank_ub[i]),
                          battles=int(wins[i] + losses[i] + tie_counts[i]), wins=int(wins[i]),
                          losses=int(losses[i]), ties=int(tie_counts[i])) for i in order]
    return Leaderboard(models=models, options=options, battles_read=int(battles.model_a.shape[0]),
                       battles_used=int(keep.sum()), excluded=excluded, interval_method=method,
                       tie_strength=tie_strength, style_coefficients=style_coefficients, warnings=messages)


def _record(a, b, outcome, m):
    tie = (outcome != A_WINS) & (outcome != B_WINS)
    wins = np.bincount(a[outcome == A_WINS], minlength=m) + np.bincount(b[outcome == B_WINS], minlength=m)
    losses = np.bincount(a[outcome == B_WINS], minlength=m) + np.bincount(b[outcome == A_WINS], minlength=m)
    ties = np.bincount(a[tie], minlength=m) + np.bincount(b[tie], minlength=m)
    return wins, losses, ties


def _style_controlled(battles: Battles, keep, options: RankingOptions, fit_options):
    from ranking import style

    if options.ties != "half":
        raise ValueError("style control is fitted with half-win ties only")
    if not options.replicates:
        raise ValueError("style control reports bootstrap intervals: use at least 2 replicates")
    used = style_features_used(battles, keep)
    counts = battles.style[keep].copy()
    # A feature that no selected battle reports is held constant: it standardises to 0 and gets no coefficient.
    counts[:, :, np.setdiff1d(np.arange(counts.shape[2]), used)] = 0.0
    mask, covariates, names = style.style_covariates(counts)
    rows = np.flatnonzero(keep)[mask]
    args = (battles.model_a[rows], battles.model_b[rows], battles.outcome[rows], covariates[mask],
            len(battles.models))
    fit = style.fit_style_controlled(*args, prior=options.prior, **fit_options)
    boot = style.bootstrap_style_controlled(*args, replicates=options.replicates, seed=options.seed,
                                            prior=options.prior, confidence=options.confidence, **fit_options)
    coefficients = {name: {"value": float(fit.coefficients[i]), "ci_low": float(boot.coef_low[i]),
                           "ci_high": float(boot.coef_high[i])} for i, name in enumerate(names) if i in used}
    return fit.ratings, boot.ratings_low, boot.ratings_high, coefficients


def finite_or_none(value: float):
    """JSON has no infinity: an unbounded interval end is written as null."""
    return value if math.isfinite(value) else None
