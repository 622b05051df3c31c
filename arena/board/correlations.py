"""How much each safety metric tracks arena capability across models (Pearson and Spearman with bootstrap
intervals), so a metric that is capability in disguise is flagged (safetywashing, Ren et al. 2024).

The numerics are ranking.correlation's; this module chooses what is correlated with what, and the flag."""

from __future__ import annotations

from typing import Iterable

from arena.board.scores import ChosenScore
from ranking.correlation import CONFIDENCE, correlation_bootstrap

CORRELATION_REPLICATES = 1000
CORRELATION_SEED = 2024  # fixed, and published with every correlation, so anyone gets the same intervals
FLAG_REASON = (
    "|Spearman| >= {threshold:g}: at 0.7, rho^2 ~ 0.5, i.e. about half of the metric's variance "
    "(in ranks) tracks arena capability; gains on a flagged metric are largely capability gains "
    "presented as safety (safetywashing, Ren et al. 2024)"
)


def correlations(
    document: dict,
    chosen: dict[tuple[str, str], ChosenScore],
    *,
    threshold: float,
    metrics: Iterable[str] = (),
    replicates: int = CORRELATION_REPLICATES,
    seed: int = CORRELATION_SEED,
) -> dict:
    """Every safety metric (those with a score at the snapshot's date, and `metrics`) against the rating on
    the snapshot's overall board, across the models that have both; flagged when |Spearman| >= threshold."""
    ratings = {row["model"]: row["rating"] for row in document["boards"]["overall"]["models"]}
    names = sorted({metric for _, metric in chosen} | set(metrics))
    results = []
    for metric in names:
        pairs = sorted(
            (model, ratings[model], c.score.value)
            for (model, m), c in chosen.items()
            if m == metric and model in ratings
        )
        result = correlation_bootstrap([p[1] for p in pairs], [p[2] for p in pairs], replicates=replicates, seed=seed)
        entry = {
            "metric": metric,
            "n": result.n,
            "models": [p[0] for p in pairs],
            "pearson": {"r": result.pearson, "ci_low": result.pearson_low, "ci_high": result.pearson_high},
            "spearman": {"rho": result.spearman, "ci_low": result.spearman_low, "ci_high": result.spearman_high},
            "replicates_used": result.replicates_used,
            "flagged": result.spearman is not None and abs(result.spearman) >= threshold,
        }
        if result.n < 3:
            entry["note"] = (
                f"only {result.n} model(s) have both a rating on the overall board and a score: "
                "fewer than 3, no correlation"
            )
        elif result.spearman is None:
            entry["note"] = "the ratings or the scores are all equal: no correlation"
        elif entry["flagged"]:
            entry["note"] = (
                f"flagged: |Spearman| {abs(result.spearman):.2f} >= {threshold:g}; this metric mostly tracks capability"
            )
        results.append(entry)
    return {
        "against": "rating on the overall board",
        "threshold": threshold,
        "statistic": "spearman",
        "why": FLAG_REASON.format(threshold=threshold),
        "replicates": replicates,
        "seed": seed,
        "confidence": CONFIDENCE,
        "interval_method": "percentile bootstrap over models",
        "metrics": results,
    }
