"""Pairwise ranking of AI models from battle logs: online Elo and Bradley-Terry with bootstrap intervals.

Pure numerics over arrays: nothing here knows about the web service or its database. Ratings are on the
Elo scale (400 points per factor of 10 in odds) unless a function says otherwise.

JAX runs in float64 here: Bradley-Terry log-likelihoods over millions of battles lose digits in float32, and
the ratings we publish must agree with an independent scipy fit to 0.01 Elo points. We switch it on once, in
this file, because every module of the package relies on it; an application that imports `ranking` gets
float64 JAX as a consequence.
"""
import jax

jax.config.update("jax_enable_x64", True)

from ranking.bootstrap import BootstrapResult, Intervals, bootstrap_ratings, rank_upper_bound, sandwich_intervals  # noqa: E402
from ranking.bradley_terry import (DEFAULT_PRIOR, BTFit, RankingWarning, fit_bradley_terry,  # noqa: E402
                                   fit_categories)
from ranking.data import (A_WINS, B_WINS, TIE, TIE_BOTHBAD, BattleFileError, Battles,  # noqa: E402
                          encode_battles, read_battles, write_battles_jsonl)
from ranking.elo import EloResult, online_elo  # noqa: E402
from ranking.leaderboard import Leaderboard, ModelResult, RankingOptions, rank_battles  # noqa: E402
from ranking.stats import (PairCounts, observed_win_rates, pair_counts, predicted_win_rates,  # noqa: E402
                           win_matrix)
from ranking.style import StyleFit, bootstrap_style_controlled, fit_style_controlled, style_covariates  # noqa: E402

__all__ = [
    "A_WINS", "B_WINS", "TIE", "TIE_BOTHBAD", "DEFAULT_PRIOR",
    "Battles", "BattleFileError", "read_battles", "encode_battles", "write_battles_jsonl",
    "PairCounts", "pair_counts", "win_matrix", "observed_win_rates", "predicted_win_rates",
    "BTFit", "RankingWarning", "fit_bradley_terry", "fit_categories",
    "BootstrapResult", "Intervals", "bootstrap_ratings", "sandwich_intervals", "rank_upper_bound",
    "EloResult", "online_elo",
    "StyleFit", "style_covariates", "fit_style_controlled", "bootstrap_style_controlled",
    "RankingOptions", "ModelResult", "Leaderboard", "rank_battles",
]
