"""From encoded battles to a leaderboard: the one place where options, filters, fits and intervals meet.

The command line and the service's snapshot builder both call `rank_battles`, so a published leaderboard and
`python -m ranking fit` on its battle file go through the same code with the same options.
"""

from __future__ import annotations

import contextlib
import functools
import math
import subprocess
import time
import warnings
from importlib import metadata
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy.special import ndtri as norm_ppf

from ranking import bootstrap as bs
from ranking import bradley_terry as bt
from ranking.data import A_WINS, B_WINS, Battles
from ranking.stats import pair_counts


def code_version() -> str:
    """The package version, and the git commit when running from a checkout ("0.1.0+g1a2b3c4d5e6f", with
    ".dirty" when files differ from it): a published number names the exact code that made it."""
    try:
        version = metadata.version("arena")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        version = "unknown"
    commit = _git_commit()
    return f"{version}+g{commit}" if commit else version


@functools.lru_cache(maxsize=1)
def _git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", "ranking", "arena"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + (".dirty" if dirty.stdout.strip() else "")


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
    tier: int  # 1 for the top tier; see `tiers`
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


def rank_battles(
    battles: Battles, options: RankingOptions = RankingOptions(), *, progress: bool = False, timings: dict | None = None
) -> Leaderboard:
    """Fit, intervals and rank upper bounds for the battles that the options select.

    `timings`, when given, accumulates seconds under "fit", "bootstrap" (or "sandwich") and "style" (the whole
    style-controlled fit with its bootstrap), for benchmarks that report where a build's time goes.
    """
    clock = _Stopwatch(timings)
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
    # Weighted battles (the arena down-weights heavily repeated prompts) count `weight` times in every fit.
    counts = pair_counts(a, b, outcome, m, weights=None if battles.weight is None else battles.weight[keep])

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", bt.RankingWarning)
        tie_strength = style_coefficients = None
        if options.style:
            with clock("style"):
                ratings, low, high, samples, style_coefficients = _style_controlled(battles, keep, options, fit_options)
            method = (
                f"bootstrap ({options.replicates} replicates, style-controlled rows)"
                if options.replicates
                else "sandwich (robust normal approximation, style-controlled rows)"
            )
        else:
            with clock("fit"):
                fit = bt.fit_bradley_terry(
                    counts, ties=options.ties, prior=options.prior, names=battles.models, **fit_options
                )
            if options.ties == "davidson":
                tie_strength = fit.tie_strength
            ratings = fit.ratings
            if options.replicates:
                with clock("bootstrap"):
                    boot = bs.bootstrap_ratings(
                        counts,
                        replicates=options.replicates,
                        seed=options.seed,
                        ties=options.ties,
                        prior=options.prior,
                        confidence=options.confidence,
                        fit=fit,
                        progress=progress,
                        **fit_options,
                    )
                low, high, samples = boot.low, boot.high, boot.samples
                method = f"percentile bootstrap ({options.replicates} replicates)"
            else:
                with clock("sandwich"):
                    sandwich = bs.sandwich_intervals(
                        counts,
                        fit,
                        ties=options.ties,
                        prior=options.prior,
                        confidence=options.confidence,
                        scale=options.scale,
                        base=options.base,
                    )
                low, high, samples = sandwich.low, sandwich.high, None
                method = "sandwich (robust normal approximation)"
    messages = [str(w.message) for w in caught if issubclass(w.category, bt.RankingWarning)]

    played = ~np.isnan(ratings)
    # A model without battles has no interval: it neither ranks nor pushes anyone down.
    rank_ub = bs.rank_upper_bound(np.where(played, low, -np.inf), np.where(played, high, np.inf))
    wins, losses, tie_counts = _record(a, b, outcome, m)
    order = sorted(np.flatnonzero(played), key=lambda i: (-ratings[i], battles.models[i]))
    tier = dict(
        zip(
            order,
            tiers(
                ratings[order],
                low[order],
                high[order],
                None if samples is None else samples[:, order],
                confidence=options.confidence,
            ),
        )
    )
    models = [
        ModelResult(
            model=battles.models[i],
            rating=float(ratings[i]),
            ci_low=float(low[i]),
            ci_high=float(high[i]),
            rank_ub=int(rank_ub[i]),
            tier=tier[i],
            battles=int(wins[i] + losses[i] + tie_counts[i]),
            wins=int(wins[i]),
            losses=int(losses[i]),
            ties=int(tie_counts[i]),
        )
        for i in order
    ]
    return Leaderboard(
        models=models,
        options=options,
        battles_read=int(battles.model_a.shape[0]),
        battles_used=int(keep.sum()),
        excluded=excluded,
        interval_method=method,
        tie_strength=tie_strength,
        style_coefficients=style_coefficients,
        warnings=messages,
    )


class _Stopwatch:
    """`with clock("fit"):` adds the block's seconds to timings["fit"]; does nothing without a timings dict."""

    def __init__(self, timings: dict | None):
        self.timings = timings

    @contextlib.contextmanager
    def __call__(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            if self.timings is not None:
                self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - started


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
    used = style_features_used(battles, keep)
    counts = battles.style[keep].copy()
    # A feature that no selected battle reports is held constant: it standardises to 0 and gets no coefficient.
    counts[:, :, np.setdiff1d(np.arange(counts.shape[2]), used)] = 0.0
    mask, covariates, names = style.style_covariates(counts)
    rows = np.flatnonzero(keep)[mask]
    args = (battles.model_a[rows], battles.model_b[rows], battles.outcome[rows], covariates[mask], len(battles.models))
    weights = None if battles.weight is None else battles.weight[rows]
    fit = style.fit_style_controlled(*args, prior=options.prior, weights=weights, **fit_options)
    if options.replicates:
        boot = style.bootstrap_style_controlled(
            *args,
            replicates=options.replicates,
            seed=options.seed,
            prior=options.prior,
            confidence=options.confidence,
            weights=weights,
            **fit_options,
        )
        samples = boot.rating_samples
    else:  # one pass over the rows instead of a fit per replicate (see style.sandwich_style_intervals)
        boot = style.sandwich_style_intervals(
            *args, confidence=options.confidence, fit=fit, prior=options.prior, weights=weights, **fit_options
        )
        samples = None
    coefficients = {
        name: {
            "value": float(fit.coefficients[i]),
            "ci_low": float(boot.coef_low[i]),
            "ci_high": float(boot.coef_high[i]),
        }
        for i, name in enumerate(names)
        if i in used
    }
    return fit.ratings, boot.ratings_low, boot.ratings_high, samples, coefficients


def tiers(ratings, low, high, samples=None, *, confidence: float = 0.95) -> list[int]:
    """Group models, best first, into tiers whose members cannot be told apart from the tier's leader.

    `ratings`, `low`, `high` (m,) are sorted best first; `samples` (R, m) are bootstrap replicates of the
    ratings in the same column order, or None. The leader of tier 1 is the best model; each next model joins
    the current tier while the leader is not significantly better than it at the two-sided `confidence`
    level, and otherwise leads a new tier. "Significantly better": with samples, the (1 - confidence) / 2
    quantile of the replicate differences leader - model is above 0 (a percentile interval of the difference,
    which keeps the correlation between the two ratings that comparing two separate intervals would lose);
    without samples, the normal approximation with standard errors read off the intervals (independent errors
    assumed). A model whose interval is unbounded on a side is indistinguishable from its leader. Tiers are
    contiguous in rating order, so tier numbers never decrease down the board.
    """
    ratings, low, high = (np.asarray(v, np.float64) for v in (ratings, low, high))
    tail = (1 - confidence) / 2
    z = float(norm_ppf(1 - tail))
    result, leader, tier = [], 0, 0
    for j in range(ratings.shape[0]):
        if j == 0:
            tier = 1
        elif _better(leader, j, ratings, low, high, samples, tail, z):
            tier, leader = tier + 1, j
        result.append(tier)
    return result


def _better(i: int, j: int, ratings, low, high, samples, tail: float, z: float) -> bool:
    """Whether model i is significantly better than model j (see `tiers`)."""
    if not (np.isfinite(low[i]) and np.isfinite(high[i]) and np.isfinite(low[j]) and np.isfinite(high[j])):
        return False
    if samples is not None:
        return bool(np.quantile(samples[:, i] - samples[:, j], tail) > 0)
    se_i, se_j = (high[i] - low[i]) / (2 * z), (high[j] - low[j]) / (2 * z)
    return bool(ratings[i] - ratings[j] - z * math.hypot(se_i, se_j) > 0)


def board_dict(board: Leaderboard) -> dict:
    """A leaderboard as JSON-ready data: the one serialisation shared by `python -m ranking fit --format json`,
    the service's snapshots and `python -m ranking verify`, so that what is compared is what was published."""
    return {
        "options": board.options._asdict(),
        "interval_method": board.interval_method,
        "battles_read": board.battles_read,
        "battles_used": board.battles_used,
        "excluded": board.excluded,
        "tie_strength": board.tie_strength,
        "style_coefficients": board.style_coefficients,
        "warnings": board.warnings,
        "models": [
            {**row._asdict(), "ci_low": finite_or_none(row.ci_low), "ci_high": finite_or_none(row.ci_high)}
            for row in board.models
        ],
    }


def finite_or_none(value: float):
    """JSON has no infinity: an unbounded interval end is written as null."""
    return value if math.isfinite(value) else None
