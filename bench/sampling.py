"""How many votes each sampling policy spends before the ranking can tell the tiers apart, and whether it is fair.

    .venv/bin/python bench/sampling.py            # 20, 100 (5 replicates) and 300 models (2), every policy
    .venv/bin/python bench/sampling.py --quick    # 20 models, every policy; 100 models, uniform and active
                                                  # (5 replicates each)

The simulated arena:
- M models with known ratings in T true tiers of equal size: every model of a tier has the same rating, and
  neighbouring tiers are GAP_ELO apart (the truth has ties, so "the order within a tier" is noise by design).
  Outcomes follow Davidson's tie model with tie strength NU (23 % ties between equal models).
- Models belong to labs of unequal size (LAB_SIZES, as shares of the models, assigned at random), and carry
  operator weights: most 1, a few 2 and a few 0.5 (WEIGHTS). A tenth of the models join late, after
  LATE_JOIN_PER_MODEL * M votes, as new models do.
- Each policy draws its pairs from `ranking.sampling.pair_probabilities`, the probabilities that the service's
  per-battle `draw_pair` follows (tests/ranking/test_sampling.py), from a state refreshed the way the service
  refreshes it: a refit every 10 M votes stands for a stored snapshot (the project's Bradley-Terry fit with
  Davidson ties on the counts so far, standard errors from the Fisher information:
  `ranking.bootstrap.sandwich_intervals(robust=False)`), and between refits the votes counted since update it
  every M / 2 votes (`update_with_votes`), as the service does every few seconds.
- Each arena size is simulated R times (replicates: other labs, weights, late models and outcomes); the
  stopping time below is noisy (a maximum over every model of a tier), so medians are compared.

What is measured, per arena and policy:
- "votes to separate": the first refit at which the 95 % intervals separate every pair of neighbouring true
  tiers, i.e. for every t, min over tier t of ci_low > max over tier t+1 of ci_high (all models rated); the
  resolution is the refit interval. "> budget" when not reached within 1000 M votes (counted as the budget in
  the median).
- Kendall's tau-b of the fitted ratings against the true ones after N = TAU_VOTES_PER_MODEL * M votes, and how
  many votes the active policy needed to reach uniform's tau at N.
- Each lab's share of battle sides against its rule: the share the policy's own probabilities gave the lab's
  models (summed over every draw, from `pair_probabilities` of the state the draw used), and the largest
  relative difference |observed / rule - 1| over labs. The share a lab would have by its number of models is
  printed beside it.
- The mean Fisher information of a vote about its pair's difference (at the true ratings): what a policy buys
  per vote. Two equal models give the most (0.192 with these ties); uniform pairs are often far apart.
- The time per pick for 300 models: `draw_pair` for each policy, and the service's `choose_pair` on a cached
  state (every model of the state passed, those that cannot answer at weight 0).
Targets (issue #8): the active policy reaches the uniform policy's accuracy with at most half the votes; no lab's
share off its rule by more than 10 %. The last line is `votes ratio active/uniform: X` for the 100-model arena
(the ratio of the medians of votes to separate).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import warnings
from pathlib import Path

# One BLAS thread, set before numpy loads it: the refits' small inversions (m + 1 unknowns) contended with
# OpenBLAS's own threads and took 0.2 s each instead of milliseconds on the shared machine (see
# ranking.bradley_terry.one_blas_thread).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
from typing import NamedTuple

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from scipy.stats import kendalltau  # noqa: E402

from arena.settings import override, settings_of  # noqa: E402
from ranking import sampling  # noqa: E402

GAP_ELO = 100.0
NU = 0.6  # Davidson tie strength: P(tie) = 0.6 / 2.6, 23 %, between equal models
LAB_SIZES = (0.4, 0.25, 0.15, 0.1, 0.1)
WEIGHTS = ((2.0, 0.05), (0.5, 0.05))  # (weight, share of the models); the rest weigh 1
LATE_SHARE = 0.1
LATE_JOIN_PER_MODEL = 10
TAU_VOTES_PER_MODEL = 60
ARENAS = {20: 4, 100: 10, 300: 15}  # models: true tiers
RULE = sampling.SamplingRule(provisional_votes=100)  # sim scale: a model is provisional below 100 votes
TARGET_RATIO = 0.5
TARGET_LAB_DEVIATION = 0.10


class Arena(NamedTuple):
    truth: np.ndarray  # (m,) nats
    tier: np.ndarray  # (m,) 0 = best
    lab: np.ndarray  # (m,) lab index
    weights: np.ndarray  # (m,)
    joins_at: np.ndarray  # (m,) the vote count from which the model can be drawn


class Result(NamedTuple):
    policy: str
    votes_to_separate: int | None
    tau_at_n: float
    tau_curve: list  # (votes, tau) at every refit
    lab_observed: np.ndarray
    lab_rule: np.ndarray
    votes: int
    seconds: float
    information: float  # mean Fisher information of a vote on the drawn pair about its difference, at the truth


def make_arena(m: int, tiers: int, seed: int) -> Arena:
    rng = np.random.default_rng(seed)
    tier = np.repeat(np.arange(tiers), m // tiers)
    tier = np.concatenate([tier, np.full(m - tier.size, tiers - 1)])
    truth = -tier * GAP_ELO * sampling.NATS_PER_ELO
    truth = truth - truth.mean()
    lab = rng.permutation(np.repeat(np.arange(len(LAB_SIZES)), np.ceil(np.array(LAB_SIZES) * m).astype(int))[:m])
    weights = np.ones(m)
    shuffled = rng.permutation(m)
    start = 0
    for value, share in WEIGHTS:
        count = max(1, round(share * m))
        weights[shuffled[start : start + count]] = value
        start += count
    joins_at = np.zeros(m, int)
    joins_at[rng.choice(m, max(1, round(LATE_SHARE * m)), replace=False)] = LATE_JOIN_PER_MODEL * m
    return Arena(truth, tier, lab, weights, joins_at)


def refit(wins: np.ndarray, ties: np.ndarray):
    """Bradley-Terry (Davidson ties) on the counts so far; ratings and 95 % Fisher intervals, Elo scale."""
    from ranking import bootstrap as bs
    from ranking import bradley_terry as bt
    from ranking.stats import PairCounts

    m = wins.shape[0]
    first, second = np.triu_indices(m, 1)
    played = (wins[first, second] + wins[second, first] + ties[first, second]) > 0
    first, second = first[played], second[played]
    counts = PairCounts(
        first.astype(np.int32),
        second.astype(np.int32),
        wins[first, second],
        wins[second, first],
        ties[first, second],
        m,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bt.fit_bradley_terry(counts, ties="davidson", warn=False)
        intervals = bs.sandwich_intervals(counts, fit, ties="davidson", robust=False)
    return fit.ratings, intervals.low, intervals.high


def separated(arena: Arena, ratings, low, high) -> bool:
    if not np.isfinite(ratings).all():
        return False
    tiers = arena.tier.max() + 1
    return all(low[arena.tier == t].min() > high[arena.tier == t + 1].max() for t in range(tiers - 1))


def simulate(arena: Arena, policy: str, *, max_votes: int, refit_every: int, refresh_every: int, seed: int) -> Result:
    started = time.perf_counter()
    rule = RULE._replace(policy=policy)
    m = arena.truth.shape[0]
    rng = np.random.default_rng(seed)
    wins, ties = np.zeros((m, m)), np.zeros((m, m))
    since_wins, since_ties = np.zeros((m, m)), np.zeros((m, m))
    labs = arena.lab.max() + 1
    lab_sides, lab_rule = np.zeros(labs), np.zeros(labs)
    base = sampling.state_from_intervals(np.full(m, np.nan), np.full(m, np.nan), np.full(m, np.nan))
    tau_votes = TAU_VOTES_PER_MODEL * m
    votes_to_separate, tau_at_n, curve = None, float("nan"), []
    votes, information = 0, 0.0
    while votes < max_votes:
        # the service's refresh: the newest "snapshot" plus the votes counted since
        first, second = np.nonzero(np.triu(since_wins + since_wins.T + since_ties, 1))
        state = sampling.update_with_votes(
            base,
            first,
            second,
            since_wins[first, second] + since_ties[first, second] / 2,
            since_wins[first, second] + since_wins[second, first] + since_ties[first, second],
        )
        can = np.flatnonzero(arena.joins_at <= votes)
        played = wins.sum(axis=1) + wins.sum(axis=0) + ties.sum(axis=1)
        odds = None
        if policy == "active":
            odds = sampling.active_odds(
                sampling.active_pair_scores(sampling.ActiveState(state.strengths[can], state.variances[can])),
                rule.focus,
            )
        probabilities = sampling.pair_probabilities(rule, arena.weights[can], votes=played[can], odds=odds)
        shares = sampling.model_shares(probabilities)
        block = min(refresh_every, max_votes - votes)
        lab_rule += block * 2 * np.bincount(arena.lab[can], shares, labs)
        # the block's pairs, drawn from the rule's probabilities (tests/ranking/test_sampling.py checks that the
        # service's one-at-a-time draw_pair follows them), sides at random
        upper_first, upper_second = np.triu_indices(can.size, 1)
        drawn = rng.choice(upper_first.size, size=block, p=_unit(probabilities[upper_first, upper_second]))
        swap = rng.random(block) < 0.5
        a = can[np.where(swap, upper_second[drawn], upper_first[drawn])]
        b = can[np.where(swap, upper_first[drawn], upper_second[drawn])]
        lab_sides += np.bincount(arena.lab[a], minlength=labs) + np.bincount(arena.lab[b], minlength=labs)
        d = arena.truth[a] - arena.truth[b]
        norm = np.exp(d / 2) + np.exp(-d / 2) + NU
        information += davidson_information(d).sum()
        u = rng.random(block)
        a_wins = u < np.exp(d / 2) / norm
        tied = ~a_wins & (u < (np.exp(d / 2) + NU) / norm)
        b_wins = ~a_wins & ~tied
        for target_wins, target_ties in ((wins, ties), (since_wins, since_ties)):
            np.add.at(target_wins, (a[a_wins], b[a_wins]), 1)
            np.add.at(target_wins, (b[b_wins], a[b_wins]), 1)
            np.add.at(target_ties, (a[tied], b[tied]), 1)
            np.add.at(target_ties, (b[tied], a[tied]), 1)
        votes += block
        if votes % refit_every == 0 or votes >= max_votes:
            ratings, low, high = refit(wins, ties)
            rated = np.isfinite(ratings)
            tau = kendalltau(arena.truth[rated], ratings[rated]).statistic if rated.sum() > 1 else float("nan")
            curve.append((votes, tau))
            if votes_to_separate is None and separated(arena, ratings, low, high):
                votes_to_separate = votes
            if votes == tau_votes:
                tau_at_n = tau
            base = sampling.state_from_intervals(ratings, low, high)
            since_wins[:], since_ties[:] = 0, 0
            if votes_to_separate is not None and votes >= tau_votes:
                break
    return Result(
        policy,
        votes_to_separate,
        tau_at_n,
        curve,
        lab_sides / lab_sides.sum(),
        lab_rule / lab_rule.sum(),
        votes,
        time.perf_counter() - started,
        information / votes,
    )


def davidson_information(d):
    """Fisher information about d = theta_a - theta_b of one Davidson battle: E[(d/dd log P(outcome))^2]."""
    half = np.exp(d / 2), np.exp(-d / 2)
    norm = half[0] + half[1] + NU
    p_a, p_b = half[0] / norm, half[1] / norm
    slope = (half[0] - half[1]) / (2 * norm)  # d/dd log norm
    return p_a * (0.5 - slope) ** 2 + p_b * (-0.5 - slope) ** 2 + (1 - p_a - p_b) * slope**2


def _unit(p: np.ndarray) -> np.ndarray:
    return p / p.sum()  # the rule's probabilities sum to 1 up to rounding; numpy's choice wants it exact


def votes_to_reach(curve, tau: float) -> int | None:
    return next((votes for votes, value in curve if value >= tau), None)


def time_per_pick(m: int = 300, picks: int = 2000, seed: int = 1) -> dict:
    """Seconds per pick at m models: `draw_pair` for each policy, the active one with its cached score matrix
    restricted to the models that can answer (90 % of them), and the service's whole pick
    (`arena.leaderboard.sampling.choose_pair` on a cached state: failing models left out, the restriction, the draw)."""
    from datetime import datetime, timezone

    from arena.battles.pairing import Candidate
    from arena.leaderboard import sampling as service

    rng = np.random.default_rng(seed)
    ratings = rng.normal(1000, 150, m)
    half = rng.uniform(10, 60, m)
    state = sampling.state_from_intervals(ratings, ratings - half, ratings + half)
    odds = sampling.active_odds(sampling.active_pair_scores(state), RULE.focus)
    weights = np.ones(m)
    votes = rng.integers(0, 1000, m).astype(float)
    draw_rng = random.SystemRandom()
    can = np.sort(rng.choice(m, int(0.9 * m), replace=False))
    timings = {}
    for policy in sampling.POLICIES:
        rule = RULE._replace(policy=policy)
        started = time.perf_counter()
        for _ in range(picks):
            can_weights = np.zeros(m)  # the models that cannot answer weigh 0, as in the service
            can_weights[can] = weights[can]
            sampling.draw_pair(rule, can_weights, draw_rng, votes=votes, odds=odds)
        timings[f"draw_pair, {policy}"] = (time.perf_counter() - started) / picks
    settings = service.SamplingSettings(
        policy="active",
        boost=RULE.boost,
        provisional_votes=RULE.provisional_votes,
        active_floor=RULE.floor,
        active_focus=RULE.focus,
        refresh_seconds=5.0,
        failing_rate=0.5,
        failing_min_calls=4,
        failing_seconds=600.0,
    )
    cached = service.PolicyState(
        settings=settings,
        snapshot=1,
        refreshed=time.monotonic(),
        refreshed_at=datetime.now(timezone.utc),
        position={i: i for i in range(m)},
        votes=votes,
        fit=state,
        odds=odds,
        failing={int(can[0]): (5, 5)},
        since={},
        read_up_to=0,
    )
    candidates = [Candidate(int(i), 1.0) for i in can]
    started = time.perf_counter()
    for _ in range(picks):
        service.choose_pair(cached, candidates, draw_rng)
    timings["arena.leaderboard.sampling.choose_pair, active"] = (time.perf_counter() - started) / picks
    started = time.perf_counter()
    for _ in range(20):
        sampling.active_pair_scores(state)
    timings["a refresh's active_pair_scores (per process)"] = (time.perf_counter() - started) / 20
    scores = sampling.active_pair_scores(state)
    started = time.perf_counter()
    for _ in range(20):
        sampling.active_odds(scores, RULE.focus)
    timings["a refresh's active_odds"] = (time.perf_counter() - started) / 20
    return timings


def service_timings(m: int = 300, votes: int = 60_000, requests: int = 200, seed: int = 0) -> dict:
    """Milliseconds of the service itself at m models (SQLite in a temporary folder, every model a recorded one
    answering the prompt, `votes` votes and one snapshot): a refresh of the sampling state (`build_state`), and
    POST /api/v1/battles per policy (median and 99th percentile; one request in each run of `requests` reads
    the state)."""
    import tempfile
    from datetime import datetime, timezone

    from sqlalchemy import insert

    from arena import create_app, db
    from arena.leaderboard import builds
    from arena.leaderboard import sampling as service
    from arena.models import Battle, Model, Prompt, RecordedAnswer, Vote

    folder = tempfile.mkdtemp(prefix="bench-sampling-")
    url = f"sqlite:///{folder}/arena.db"
    db.upgrade(url)
    app = create_app(
        {
            "DATABASE_URL": url,
            "INSTANCE_PATH": folder,
            "SECRET_KEY": "bench",
            "SNAPSHOT_REPLICATES": 20,
            "SNAPSHOT_EVERY_VOTES": 0,
            "VOTE_CHALLENGE": False,
            "RATE_LIMITS": False,
        }
    )
    rng = np.random.default_rng(seed)
    strength = rng.normal(0, 1, m)
    a = rng.integers(0, m, votes)
    b = (a + 1 + rng.integers(0, m - 1, votes)) % m
    a_wins = rng.random(votes) < 1 / (1 + np.exp(strength[b] - strength[a]))
    now = datetime.now(timezone.utc)
    with db.new_session(app) as session:
        session.add(Prompt(id=1, text="q", category="general"))
        session.flush()
        session.execute(
            insert(Model), [dict(id=i + 1, name=f"M{i}", organization=f"L{i % 5}", kind="recorded") for i in range(m)]
        )
        session.execute(insert(RecordedAnswer), [dict(model_id=i + 1, prompt_id=1, text="an answer") for i in range(m)])
        session.execute(
            insert(Battle),
            [
                dict(
                    id=f"b{k}",
                    prompt_text="q",
                    model_a_id=int(a[k]) + 1,
                    model_b_id=int(b[k]) + 1,
                    state="voted",
                    voter=f"v{k % 5000}",
                    created_at=now,
                )
                for k in range(votes)
            ],
        )
        session.execute(
            insert(Vote),
            [
                dict(battle_id=f"b{k}", winner="a" if a_wins[k] else "b", voter=f"v{k % 5000}", created_at=now)
                for k in range(votes)
            ],
        )
        session.commit()
    builds.build_snapshot(app)
    timings = {}
    with db.new_session(app) as session:
        settings = service.SamplingSettings.from_settings(settings_of(app))
        service.build_state(session, settings)
        started = time.perf_counter()
        for _ in range(5):
            service.build_state(session, settings)
        timings["refresh: build_state, active"] = (time.perf_counter() - started) / 5 * 1e3
    client = app.test_client()
    for policy in sampling.POLICIES:
        override(app, SAMPLING_POLICY=policy)
        app.extensions.pop("arena.sampling", None)
        spent = []
        for _ in range(requests):
            started = time.perf_counter()
            assert client.post("/api/v1/battles", json={"prompt_id": 1}).status_code == 201
            spent.append((time.perf_counter() - started) * 1e3)
        timings[f"POST /battles, {policy}: median"] = float(np.median(spent))
        timings[f"POST /battles, {policy}: p99"] = float(np.percentile(spent, 99))
    app.extensions["arena.engine"].dispose()
    return timings


def _fmt_votes(votes: int | None, budget: int) -> str:
    return f"{votes:,}" if votes is not None else f"> {budget:,}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="20 models (every policy) and 100 (uniform and active): under a minute"
    )
    parser.add_argument("--models", type=int, nargs="*", help="arena sizes (default 20 100 300)")
    parser.add_argument("--policies", nargs="*", choices=sampling.POLICIES)
    parser.add_argument("--replicates", type=int, help="simulated arenas per size (default 5, 2 from 300 models)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--service",
        action="store_true",
        help="also time the service: a state refresh and POST /battles at 300 models (SQLite)",
    )
    args = parser.parse_args(argv)
    sizes = args.models or ([20, 100] if args.quick else [20, 100, 300])
    print(
        f"truth: tiers of equal ratings {GAP_ELO:g} Elo apart, Davidson ties nu={NU} (23 % between equals); "
        f"labs of {', '.join(f'{s:.0%}' for s in LAB_SIZES)} of the models; weights "
        f"{', '.join(f'{w:g} for {s:.0%}' for w, s in WEIGHTS)}, 1 for the rest; {LATE_SHARE:.0%} of the models "
        f"join after {LATE_JOIN_PER_MODEL}*M votes"
    )
    print(
        f"rule settings: boost {RULE.boost:g} below {RULE.provisional_votes} votes; active floor {RULE.floor:g}, "
        f"focus {RULE.focus:g}"
    )
    print(
        "separated: every neighbouring pair of true tiers t, t+1 has min ci_low(t) > max ci_high(t+1), 95 % "
        "Fisher intervals of a Bradley-Terry (Davidson) refit; the median over replicates is shown"
    )
    ratios = {}
    for m in sizes:
        tiers = ARENAS.get(m, max(2, m // 10))
        replicates = args.replicates or (5 if m < 300 else 2)
        policies = args.policies or (["uniform", "active"] if args.quick and m >= 100 else list(sampling.POLICIES))
        refit_every = max(100, 10 * m)
        refresh_every = max(20, m // 2)
        max_votes = 1000 * m
        print(
            f"\n== {m} models in {tiers} tiers, {replicates} replicates: refit every {refit_every} votes, refresh "
            f"every {refresh_every}, tau after N = {TAU_VOTES_PER_MODEL * m:,} votes, budget {max_votes:,} votes"
        )
        print(
            f"{'policy':<16} {'votes to separate (each replicate)':>44} {'tau@N':>7} {'lab |obs/rule-1|':>17} "
            f"{'info/vote':>9} {'s/run':>6}"
        )
        results: dict[str, list[Result]] = {}
        labs = []
        for policy in policies:
            runs = results[policy] = []
            for r in range(replicates):
                arena = make_arena(m, tiers, args.seed + 1000 * r)
                if policy == policies[0]:
                    labs.append(np.bincount(arena.lab, minlength=len(LAB_SIZES)) / m)
                runs.append(
                    simulate(
                        arena,
                        policy,
                        max_votes=max_votes,
                        refit_every=refit_every,
                        refresh_every=refresh_every,
                        seed=args.seed + 1000 * r + 1,
                    )
                )
            observed = sum(run.lab_observed for run in runs)
            rule = sum(run.lab_rule for run in runs)
            each = " ".join(_fmt_votes(run.votes_to_separate, max_votes) for run in runs)
            print(
                f"{policy:<16} {_fmt_votes(_median_votes(runs, max_votes), max_votes):>9} ({each:>32}) "
                f"{np.mean([run.tau_at_n for run in runs]):>7.3f} {np.max(np.abs(observed / rule - 1)):>16.1%} "
                f"{np.mean([run.information for run in runs]):>9.3f} {np.mean([run.seconds for run in runs]):>6.1f}"
            )
        print("lab shares of battle sides, observed (rule) [share by number of models], all replicates:")
        by_count = np.mean(labs, axis=0)
        for lab in range(len(LAB_SIZES)):
            cells = "  ".join(
                f"{p}: {sum(r.lab_observed for r in runs)[lab] / len(runs):.3f} "
                f"({sum(r.lab_rule for r in runs)[lab] / len(runs):.3f})"
                for p, runs in results.items()
            )
            print(f"  lab {lab} [{by_count[lab]:.3f}]  {cells}")
        if "active" in results and "uniform" in results:
            active, uniform = results["active"], results["uniform"]
            ratios[m] = _median_votes(active, max_votes) / _median_votes(uniform, max_votes)
            # a uniform median at the budget is censored: the true ratio is smaller than the one printed
            bound = "<= " if _median_votes(uniform, max_votes) >= max_votes else ""
            reach = [votes_to_reach(a.tau_curve, u.tau_at_n) for a, u in zip(active, uniform)]
            best = float(davidson_information(np.zeros(1))[0])
            print(
                f"active/uniform votes to separate (medians): {bound}{ratios[m]:.2f}; active reaches uniform's tau@N "
                f"after {' '.join(_fmt_votes(v, max_votes) for v in reach)} votes (N = {TAU_VOTES_PER_MODEL * m:,}); "
                f"information per vote uniform {np.mean([u.information for u in uniform]):.3f}, active "
                f"{np.mean([a.information for a in active]):.3f}, at most {best:.3f} (two equal models)"
            )
    print("\ntime per pick, 300 models, 90 % of them able to answer:")
    for name, seconds in time_per_pick().items():
        print(f"  {name:<44} {seconds * 1e3:8.3f} ms")
    if args.service:
        print("the service, 300 models, 60,000 votes, one snapshot (SQLite):")
        for name, milliseconds in service_timings().items():
            print(f"  {name:<44} {milliseconds:8.2f} ms")
    print(f"Targets: active/uniform votes <= {TARGET_RATIO}; every lab within {TARGET_LAB_DEVIATION:.0%} of its rule")
    if 100 in ratios:
        print(f"votes ratio active/uniform: {ratios[100]:.2f}")
    return 0


def _median_votes(runs: list[Result], budget: int) -> int:
    """The median of the replicates' votes to separate, a run that never separated counting as the budget."""
    return int(np.median([run.votes_to_separate or budget for run in runs]))


if __name__ == "__main__":
    sys.exit(main())
