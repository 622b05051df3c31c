"""How far rigged votes move a model, with the arena's integrity rules off and on, and what they cost honest voters.

    .venv/bin/python bench/rigging.py             # 20 models, 60k honest votes, 1,000 rigged votes per attack (~2 min)
    .venv/bin/python bench/rigging.py --quick     # 12 models, 20k honest votes (under a minute)
    .venv/bin/python bench/rigging.py --rigged 2000 --identities 20 --seed 3

The arena: M models with known Elo ratings (normal, sd --spread), honest voters who each cast a few to a few
hundred votes over --days days on uniformly drawn pairs, with outcomes from Bradley-Terry with 10 % ties. The
target is the model ranked in the middle, named "Foo 7B Chat" by "Foo Labs", of the family "FooLM" (registered
with the model); a share --leak of its answers to ordinary prompts say "I am FooLM", and most of its answers to
"Who are you?" do. Free-text prompts: a few greetings are typed by many voters, the rest are unique.

Attacks, each --rigged votes from --identities voter identities, spread over --attack-days days:
- target_only: votes only in battles with the target, always for the target.
- omnipresent: votes only in battles with the target (for it) or with one of the three models ranked just
  above it (against that rival, in battles the target is not in).
- identity_seeking: asks "Who are you?" and votes only when an answer says "FooLM", for the target.
- one_identity_burst: target_only from a single identity in one day (what the daily cap is for).
- target_only / omnipresent / target_only with 100 / 50 / 200 identities (10 / 20 / 5 votes each): sybils, to
  show where the tests' power ends (the proof of work, the rate limits and the daily cap make identities cost).

For each attack: the target's rating and rank with the honest votes alone, then with the rigged votes added,
with the defences off and on. "Defences on" is arena.leaderboard.integrity.apply_rules with the service's default
settings
(the very function every snapshot build calls) on votes whose identity leaks were found by
arena.catalog.identity.identity_leak, ranked by ranking.rank_battles with the resulting weights. The shift with the
defences on is measured against the honest votes with the defences on (the rules exclude a few honest votes and
down-weight repeated prompts too). Targets (issue #7): with the defences on, 1,000 rigged votes move the target
by less than the half-width of its 95 % interval, and fewer than 2 % of honest votes are excluded.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from arena.catalog.identity import Identity, identity_leak  # noqa: E402
from arena.leaderboard.integrity import IntegritySettings, VoteTable, apply_rules  # noqa: E402
from arena.settings import Settings  # noqa: E402
from ranking.data import A_WINS, B_WINS, TIE, Battles  # noqa: E402

TARGET = Identity("Foo 7B Chat", "Foo Labs", aliases=("foo-7b",), families=("FooLM",))
GREETINGS = ("hi", "hello", "hey", "what can you do?", "who are you?")
WHO = GREETINGS.index("who are you?")
ATTACKS = ("target_only", "omnipresent", "identity_seeking", "one_identity_burst")
# The same votes from many identities, a few votes each; at 5 votes an identity no test here tells it apart.
SYBILS = (("target_only", 100), ("omnipresent", 50), ("target_only", 200))
RIVALS = 3
TIE_SHARE = 0.1


def simulate_honest(rng, models: int, votes: int, days: int, spread: float, leak: float):
    """Honest votes as columns: a, b, outcome, voter, time (seconds), prompt code, answer text of each side."""
    elo = np.sort(rng.normal(0, spread, models))[::-1].copy()  # model 0 is the best
    activity = rng.lognormal(0.0, 1.0, max(1, votes // 20))  # ~20 votes per voter on average, heavy-tailed
    voters = np.minimum(np.searchsorted(np.cumsum(activity), rng.random(votes) * activity.sum()), activity.size - 1)
    _, voter = np.unique(voters, return_inverse=True)
    a = rng.integers(0, models, votes)
    b = (a + rng.integers(1, models, votes)) % models
    outcome = _outcomes(rng, elo[a] - elo[b])
    start_day = rng.integers(0, days, voter.max() + 1)  # a voter votes on a few days from their first
    when = (
        np.minimum(start_day[voter] + rng.geometric(0.1, votes) - 1, days - 1) * 86400.0 + rng.random(votes) * 86400.0
    )
    greeting = rng.random(votes) < 0.05
    prompt = np.where(greeting, rng.integers(0, len(GREETINGS), votes), len(GREETINGS) + np.arange(votes))
    return elo, dict(a=a, b=b, outcome=outcome, voter=voter, time=when, prompt=prompt)


def _outcomes(rng, diff_elo):
    p_a = 1 / (1 + 10 ** (-diff_elo / 400))
    u = rng.random(diff_elo.shape)
    return np.where(u < TIE_SHARE, TIE, np.where(rng.random(diff_elo.shape) < p_a, A_WINS, B_WINS)).astype(np.int8)


def answers_leak(rng, a, b, prompt, target: int, leak: float) -> np.ndarray:
    """Per battle, whether an answer reveals its model, found by the arena's own identity_leak on the texts."""
    says = np.where(prompt == WHO, 0.8, leak)
    leaked = np.zeros(a.size, bool)
    for i in np.flatnonzero((a == target) | (b == target)):
        text = ("I am FooLM, a helpful assistant. " if rng.random() < says[i] else "Here is an answer. ") + "..."
        leaked[i] = identity_leak(text, TARGET) is not None
    return leaked


def simulate_attack(rng, kind: str, elo, target: int, rigged: int, identities: int, days: int, first_voter: int):
    """Rigged votes as columns (see simulate_honest); every one of them is a vote the attacker chose to cast."""
    models = elo.size
    rivals = [r for r in range(target - RIVALS, target) if r >= 0]
    if kind == "omnipresent":
        favoured = np.array([target] + rivals)
        focus = rng.choice(favoured, rigged)
        other = np.array([rng.choice([m for m in range(models) if m != f]) for f in focus])
        # for the target: it wins; for a rival: the rival loses, in a battle the target is not in
        other = np.where((focus != target) & (other == target), (target + 1) % models, other)
        winner_is_focus = focus == target
    else:
        focus = np.full(rigged, target)
        other = (target + rng.integers(1, models, rigged)) % models
        winner_is_focus = np.ones(rigged, bool)
    swap = rng.random(rigged) < 0.5
    a, b = np.where(swap, other, focus), np.where(swap, focus, other)
    focus_is_a = ~swap
    outcome = np.where(winner_is_focus == focus_is_a, A_WINS, B_WINS).astype(np.int8)
    if kind == "one_identity_burst":
        voter = np.full(rigged, first_voter)
        when = (days - 1) * 86400.0 + np.sort(rng.random(rigged)) * 86400.0
    else:
        voter = first_voter + np.arange(rigged) % identities
        when = (
            days - 1 - rng.integers(0, min(days, max(1, rigged // identities // 50 + 1)), rigged)
        ) * 86400.0 + rng.random(rigged) * 86400.0  # at most ~50 votes per identity and day: under the daily cap
    prompt = np.full(rigged, WHO) if kind == "identity_seeking" else len(GREETINGS) + 10_000_000 + np.arange(rigged)
    return dict(a=a, b=b, outcome=outcome, voter=voter, time=when, prompt=prompt)


def combine(*parts):
    columns = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    order = np.argsort(columns["time"], kind="stable")
    return {key: value[order] for key, value in columns.items()}


def rank(columns, keep, weight, models: int, replicates: int, seed: int):
    from ranking import RankingOptions, RankingWarning, rank_battles

    n = int(keep.sum())
    battles = Battles(
        model_a=columns["a"][keep].astype(np.int32),
        model_b=columns["b"][keep].astype(np.int32),
        outcome=columns["outcome"][keep],
        models=tuple(f"m{i:02d}" for i in range(models)),
        category=np.full(n, -1, np.int32),
        categories=(),
        voter=np.full(n, -1, np.int32),
        voters=(),
        tstamp=np.full(n, np.nan),
        anony=np.ones(n, bool),
        style=None,
        sha256="",
        weight=None if weight is None else weight[keep],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankingWarning)
        board = rank_battles(battles, RankingOptions(replicates=replicates, seed=seed))
    return {int(row.model[1:]): row for row in board.models}


def defend(columns, models: int, settings: IntegritySettings):
    """The arena's rules on these votes, exactly as a snapshot build applies them."""
    voters, voter = np.unique(columns["voter"], return_inverse=True)
    n = columns["a"].size
    table = VoteTable(
        columns["a"],
        columns["b"],
        columns["outcome"],
        voter,
        np.floor(columns["time"] / 86400).astype(np.int64),
        columns["prompt"],
        columns["leaked"],
        [None] * n,
    )
    result = apply_rules(table, models, voters.size, settings)
    keep = np.fromiter((r is None for r in result.reason), bool, n)
    return keep, result.weight, result.reason


def position(board, model: int) -> int:
    return 1 + sorted(board, key=lambda k: -board[k].rating).index(model)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="12 models, 20k honest votes, 100 replicates")
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--honest", type=int, default=60_000, help="honest votes")
    parser.add_argument("--rigged", type=int, default=1000, help="rigged votes per attack")
    parser.add_argument("--identities", type=int, default=10, help="voter identities per attack")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--spread", type=float, default=100.0, help="sd of the true Elo ratings")
    parser.add_argument("--leak", type=float, default=0.01, help="share of the target's answers naming its family")
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.honest, args.replicates = 12, 20_000, 100
    settings = IntegritySettings.from_settings(Settings())
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()

    elo, honest = simulate_honest(rng, args.models, args.honest, args.days, args.spread, args.leak)
    target = args.models // 2
    honest["leaked"] = answers_leak(rng, honest["a"], honest["b"], honest["prompt"], target, args.leak)
    honest["honest"] = np.ones(args.honest, bool)
    honest = combine(honest)  # in vote order, as the arena stores them (the daily cap keeps a day's first votes)
    first_attacker = int(honest["voter"].max()) + 1
    print(
        f"{args.models} models (true Elo sd {args.spread:g}), {args.honest:,} honest votes from "
        f"{first_attacker:,} voters over {args.days} days; target: model {target} (true rank {target + 1}), "
        f"{args.rigged:,} rigged votes per attack from {args.identities} identities; settings: "
        f"daily cap {settings.daily_cap}, alpha {settings.alpha:g}, repeated prompts <= "
        f"{settings.repeated_prompt_votes} votes; {args.replicates} bootstrap replicates"
    )

    base_off = rank(honest, np.ones(args.honest, bool), None, args.models, args.replicates, args.seed)
    keep_h, weight_h, reason_h = defend(honest, args.models, settings)
    base_on = rank(honest, keep_h, weight_h, args.models, args.replicates, args.seed)
    half_width = (base_on[target].ci_high - base_on[target].ci_low) / 2
    print(
        f"honest votes only: target at {base_off[target].rating:.1f} (rank {position(base_off, target)}) with "
        f"the defences off, {base_on[target].rating:.1f} (rank {position(base_on, target)}) on; 95 % interval "
        f"half-width {half_width:.1f} Elo; honest votes excluded {100 * (~keep_h).mean():.2f} %"
    )
    print()
    header = (
        "attack",
        "off: shift",
        "off: rank",
        "on: shift",
        "on: rank",
        "< half-width",
        "rigged excluded",
        "honest excluded",
        "honest, by rule",
        "rigged, by rule",
    )
    rows = []
    for kind, identities in [(kind, args.identities) for kind in ATTACKS] + list(SYBILS):
        attack = simulate_attack(rng, kind, elo, target, args.rigged, identities, args.days, first_attacker)
        attack["leaked"] = (
            np.ones(args.rigged, bool)
            if kind == "identity_seeking"
            else answers_leak(rng, attack["a"], attack["b"], attack["prompt"], target, args.leak)
        )
        attack["honest"] = np.zeros(args.rigged, bool)
        columns = combine(honest, attack)
        off = rank(columns, np.ones(columns["a"].size, bool), None, args.models, args.replicates, args.seed)
        keep, weight, reason = defend(columns, args.models, settings)
        on = rank(columns, keep, weight, args.models, args.replicates, args.seed)
        shift_on = on[target].rating - base_on[target].rating
        fair = columns["honest"]
        excluded_honest = (~keep & fair).sum() / fair.sum()
        by_rule, rigged_rule = {}, {}
        for r in np.asarray(reason, object)[~keep & fair]:
            by_rule[r] = by_rule.get(r, 0) + 1
        for r in np.asarray(reason, object)[~keep & ~fair]:
            rigged_rule[r] = rigged_rule.get(r, 0) + 1
        label = "one identity, one day" if kind == "one_identity_burst" else f"{kind}, {identities} identities"
        rows.append(
            (
                label,
                f"{off[target].rating - base_off[target].rating:+.1f}",
                f"{position(base_off, target)} -> {position(off, target)}",
                f"{shift_on:+.1f}",
                f"{position(base_on, target)} -> {position(on, target)}",
                "yes" if abs(shift_on) < half_width else "NO",
                f"{100 * (~keep & ~fair).sum() / (~fair).sum():.1f} %",
                f"{100 * excluded_honest:.2f} %",
                ", ".join(f"{k} {v}" for k, v in sorted(by_rule.items())) or "-",
                ", ".join(f"{k} {v}" for k, v in sorted(rigged_rule.items())) or "-",
            )
        )
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for r in [header, tuple("-" * w for w in widths)] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    print(f"\n(shifts in Elo points of the target's rating; {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
