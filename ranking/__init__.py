"""Pairwise ranking of AI models from battle logs: online Elo and Bradley-Terry with bootstrap intervals.

Pure numerics over arrays: nothing here knows about the web service or its database. Ratings are on the
Elo scale (400 points per factor of 10 in odds) unless a function says otherwise.

JAX runs in float64 (see `ranking._jax`, imported by every module that computes with JAX). The names below
are loaded on first use, so `import ranking.data` or `ranking.signature` does not import JAX.
"""

import importlib

_HOMES = {
    "ranking.bootstrap": (
        "BootstrapResult",
        "Intervals",
        "bootstrap_ratings",
        "rank_upper_bound",
        "sandwich_intervals",
    ),
    "ranking.compilation": ("enable_compilation_cache",),
    "ranking.correlation": ("Correlation", "average_ranks", "pearson", "spearman", "correlation_bootstrap"),
    "ranking.bradley_terry": ("DEFAULT_PRIOR", "BTFit", "RankingWarning", "fit_bradley_terry", "fit_categories"),
    "ranking.data": (
        "A_WINS",
        "B_WINS",
        "TIE",
        "TIE_BOTHBAD",
        "BattleFileError",
        "Battles",
        "encode_battles",
        "read_battles",
        "write_battles_jsonl",
    ),
    "ranking.elo": ("EloResult", "online_elo"),
    "ranking.leaderboard": ("Leaderboard", "ModelResult", "RankingOptions", "rank_battles"),
    "ranking.stats": ("PairCounts", "observed_win_rates", "pair_counts", "predicted_win_rates", "win_matrix"),
    "ranking.style": ("StyleFit", "bootstrap_style_controlled", "fit_style_controlled", "style_covariates"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str):
    """The public API, imported from its module on first use (PEP 562)."""
    if name not in _HOME_OF:
        raise AttributeError(f"module 'ranking' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME_OF[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "A_WINS",
    "B_WINS",
    "TIE",
    "TIE_BOTHBAD",
    "DEFAULT_PRIOR",
    "Battles",
    "BattleFileError",
    "read_battles",
    "encode_battles",
    "write_battles_jsonl",
    "PairCounts",
    "pair_counts",
    "win_matrix",
    "observed_win_rates",
    "predicted_win_rates",
    "BTFit",
    "RankingWarning",
    "fit_bradley_terry",
    "fit_categories",
    "BootstrapResult",
    "Intervals",
    "bootstrap_ratings",
    "sandwich_intervals",
    "rank_upper_bound",
    "EloResult",
    "online_elo",
    "StyleFit",
    "style_covariates",
    "fit_style_controlled",
    "bootstrap_style_controlled",
    "RankingOptions",
    "ModelResult",
    "Leaderboard",
    "rank_battles",
    "Correlation",
    "average_ranks",
    "pearson",
    "spearman",
    "correlation_bootstrap",
    "enable_compilation_cache",
]
