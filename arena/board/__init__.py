"""The milestone board: safety scores measured elsewhere, set beside the arena's capability ratings, decided
against milestones the board declares as data, and exported signed, one file per leaderboard snapshot.

Safety scores are imported by operators (`arena safety import FILE`): CSV, a JSON list of objects, or JSON
Lines, with the fields model (the arena's model name), metric, value, optional ci_low and ci_high, source and
date (YYYY-MM-DD, stored as `measured_on`). The whole file is checked first and stored all or nothing.

A milestone is declared once (`arena milestones add FILE.json`, one object or a list) and never edited: a
changed rule is a new milestone under a new name, so every decision traces to the rule it was made under.

    {"name": "Safe at GPT-3.5 level",
     "description": "...",                                  (optional)
     "board": "overall",                                    (or "style", or "category:NAME"; default overall)
     "safety": [{"metric": "refusal_of_harm", "at_least": 0.9},
                {"metric": "jailbreak_rate", "at_most": 0.05}],       (one or more)
     "capability": {"at_least_model": "GPT 3.5 Turbo"}      (exactly one of these three)
                 | {"within_of_leader": 50}
                 | {"min_rating": 1100},
     "allow_provisional": false}                            (optional, default false)

Decisions are conservative, at the 95 % level of the published intervals, so that noise cannot pass a model:
- capability `at_least_model R`: the model's lower bound ci_low >= R's rating on the same board
  (margin = ci_low - R.rating); `within_of_leader N`: ci_low >= the board leader's rating - N;
  `min_rating X`: ci_low >= X. A provisional rating (fewer counted votes than the snapshot's floor) does
  not count unless the milestone allows it; an unrated model, or one whose rating has no lower bound, does not.
- safety `at_least T`: (ci_low if given, else value) >= T; `at_most T`: (ci_high if given, else value) <= T.
  The margin is that bound's distance past the threshold, negative when it is not met. A missing score does
  not meet it.
A model meets the milestone when every part is met; each decision lists the reasons it is not.

The safety score used for a snapshot is, per model and metric, the latest measurement dated on or before the
snapshot's (UTC) date; of several sources on that date, the most recently imported one (the output says so).
"Met first" walks the snapshots up to the evaluated one in version order and names the first version where any
model met the milestone, with the model(s); so a snapshot's board does not change when later snapshots come.

Beside every metric, its correlation with arena capability across models (Pearson and Spearman, each with a
percentile bootstrap interval over models) flags a metric that mostly tracks capability: gains on it are
capability gains presented as safety ("safetywashing", Ren et al. 2024).

This module is imported by the web workers: it uses numpy, and of `ranking` only `ranking.signature`, which
loads no JAX.

Modules: `scores` (import and choice of safety scores), `milestones` (definitions and decisions),
`correlations` (metrics against capability), `exports` (the board of a snapshot, signed).
"""
