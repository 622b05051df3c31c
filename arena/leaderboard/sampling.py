"""The sampling policy in the service: which two models answer the next battle.

The rule itself lives in `ranking.sampling` (pure numpy, published in /api/v1/sampling and in every snapshot);
this module gives it what it reads, cheaply:
- the eligible models come from `battles.eligible_models`, read live for each battle (a paused model, or one
  that cannot answer the prompt, is never drawn, whatever the cache says);
- the fit comes from the newest stored snapshot (its overall board's ratings and intervals, a document each
  process parses once) plus the votes counted since it, as per-pair outcome counts; models whose recent calls
  mostly failed are set aside (see `failing_models`). Both are read into a `PolicyState` that each process
  caches and refreshes at most every ARENA_SAMPLING_REFRESH_SECONDS (or at once when a model it does not know
  is eligible): a battle's pair costs a dictionary lookup and a draw, never a query for the fit or a refit.

Failing models: an endpoint whose answers in battles (and health checks) started in the last
ARENA_SAMPLING_FAILING_SECONDS failed at a rate of at least ARENA_SAMPLING_FAILING_RATE, over at least
ARENA_SAMPLING_FAILING_MIN_CALLS calls, is not drawn. Its failures then age out of the window and it is tried
again: a model that recovered comes back by itself, one that did not is set aside again after a few calls.
"""

from __future__ import annotations

import random
import secrets
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

import numpy as np
from flask import Flask
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from arena.errors import Unavailable
from arena.leaderboard.reading import newest_document
from arena.models import Battle, EndpointCheck, Message, Model, Vote
from arena.settings import Settings, settings_of
from ranking import sampling as rule_math

_system_random = secrets.SystemRandom()
_EXTENSION = "arena.sampling"


class SamplingSettings(NamedTuple):
    """The operator's sampling settings (ARENA_SAMPLING_*), published with the policy and in each snapshot."""

    policy: str
    boost: float
    provisional_votes: int
    active_floor: float
    active_focus: float
    refresh_seconds: float
    failing_rate: float
    failing_min_calls: int
    failing_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> "SamplingSettings":
        """The sampling view of the arena's settings (validated there, once)."""
        return cls(
            policy=settings.sampling_policy,
            boost=settings.sampling_boost,
            provisional_votes=settings.provisional_votes,
            active_floor=settings.sampling_active_floor,
            active_focus=settings.sampling_active_focus,
            refresh_seconds=settings.sampling_refresh_seconds,
            failing_rate=settings.sampling_failing_rate,
            failing_min_calls=settings.sampling_failing_min_calls,
            failing_seconds=settings.sampling_failing_seconds,
        )

    @property
    def rule(self) -> rule_math.SamplingRule:
        return rule_math.SamplingRule(
            policy=self.policy,
            boost=self.boost,
            provisional_votes=self.provisional_votes,
            floor=self.active_floor,
            focus=self.active_focus,
        )

    def published(self) -> dict:
        """The policy, its rule in words and the settings that apply to it."""
        settings: dict = {}
        if self.policy == "new_model_boost":
            settings.update(boost=self.boost, provisional_votes=self.provisional_votes)
        if self.policy == "active":
            settings.update(floor=self.active_floor, focus=self.active_focus, refresh_seconds=self.refresh_seconds)
        settings.update(
            failing={
                "error_rate": self.failing_rate,
                "min_calls": self.failing_min_calls,
                "window_seconds": self.failing_seconds,
            }
        )
        return {"policy": self.policy, "rule": rule_math.RULES[self.policy], "settings": settings}


class PolicyState(NamedTuple):
    """What the policy knows, as of one refresh: per model (by id) its position in the arrays below."""

    settings: SamplingSettings
    snapshot: int | None  # the version the fit comes from
    refreshed: float  # time.monotonic() of the refresh
    refreshed_at: datetime
    position: dict[int, int]  # model id -> index
    votes: np.ndarray  # counted votes per model: the snapshot's, plus those since
    fit: rule_math.ActiveState
    odds: np.ndarray | None  # active_odds of the active_pair_scores, for the active policy
    failing: dict[int, tuple[int, int]]  # model id -> (failed calls, calls) in the window, for failing models
    since: dict[tuple[int, int], tuple[float, float]]  # (model id, model id) -> (first's score, votes) since
    read_up_to: int  # the newest vote id read into `since`


# ------------------------------------------------------------------------------------------------ the state


def policy_state(app: Flask, session: Session, *, known: tuple[int, ...] = ()) -> PolicyState:
    """This process's current state, refreshed when older than the refresh interval, when a newer snapshot has
    been read here, or when one of `known` (model ids) is missing. While one thread refreshes, the others
    carry on with the previous state."""
    holder = app.extensions.setdefault(_EXTENSION, {"state": None, "lock": threading.Lock()})
    state: PolicyState | None = holder["state"]
    if state is not None and not _stale(app, state, known):
        return state
    if not holder["lock"].acquire(blocking=state is None):
        return state
    try:
        current = holder["state"]
        if current is None or _stale(app, current, known):
            settings = SamplingSettings.from_settings(settings_of(app))
            current = holder["state"] = build_state(session, settings, previous=current)
        return current
    finally:
        holder["lock"].release()


def _stale(app: Flask, state: PolicyState, known: tuple[int, ...]) -> bool:
    if time.monotonic() - state.refreshed >= settings_of(app).sampling_refresh_seconds:
        return True
    return any(model_id not in state.position for model_id in known)


def build_state(
    session: Session, settings: SamplingSettings, *, now: datetime | None = None, previous: PolicyState | None = None
) -> PolicyState:
    """Read the newest snapshot's fit, the votes counted since and the failing models: a few cheap queries.

    The votes since the snapshot are read incrementally: a refresh on the same snapshot as `previous` reads only
    the votes after the ones it read (so a refresh stays cheap when snapshots are rare or off)."""
    started = time.monotonic()
    now = now or datetime.now(timezone.utc)
    models = session.execute(select(Model.id, Model.name).where(Model.status == "active").order_by(Model.id)).all()
    position = {row.id: i for i, row in enumerate(models)}
    m = len(models)
    ratings, low, high, votes = (np.full(m, np.nan), np.full(m, np.nan), np.full(m, np.nan), np.zeros(m))
    document = newest_document(session)
    last_vote_id, confidence = 0, 0.95
    if document is not None:
        board = document["boards"]["overall"]
        confidence = float(board["options"].get("confidence", 0.95))
        last_vote_id = int(document["votes"]["last_vote_id"])
        by_name = {row.name: position[row.id] for row in models}
        for row in board["models"]:
            i = by_name.get(row["model"])
            if i is not None:
                ratings[i] = row["rating"]
                low[i] = np.nan if row["ci_low"] is None else row["ci_low"]
                high[i] = np.nan if row["ci_high"] is None else row["ci_high"]
                votes[i] = row["battles"]
    fit = rule_math.state_from_intervals(ratings, low, high, confidence=confidence)
    version = None if document is None else int(document["version"])
    if previous is not None and previous.snapshot == version:
        since, read_up_to = dict(previous.since), previous.read_up_to
    else:
        since, read_up_to = {}, last_vote_id
    read_up_to = _read_votes_since(session, read_up_to, since)
    first, second, score, battles = _pairs(since, position)
    votes += np.bincount(first, battles, m) + np.bincount(second, battles, m)
    fit = rule_math.update_with_votes(fit, first, second, score, battles)
    odds = None
    if settings.policy == "active":
        odds = rule_math.active_odds(rule_math.active_pair_scores(fit, confidence=confidence), settings.active_focus)
    return PolicyState(
        settings=settings,
        snapshot=version,
        refreshed=started,
        refreshed_at=now.replace(microsecond=0),
        position=position,
        votes=votes,
        fit=fit,
        odds=odds,
        failing=failing_models(session, settings, now=now),
        since=since,
        read_up_to=read_up_to,
    )


def _read_votes_since(session: Session, after: int, since: dict) -> int:
    """Add to `since` the votes with id > `after` that the cheap rules count (battle voted, not flagged), per
    pair of model ids (smaller id first): (first's wins + half the ties, votes). Returns the newest id read.

    A vote committed late with an id below one already read is missed until the next snapshot: these counts
    only steer sampling between two snapshots, and the snapshot counts every vote."""
    newest = after
    for model_a, model_b, winner, n, last in session.execute(
        select(Battle.model_a_id, Battle.model_b_id, Vote.winner, func.count(), func.max(Vote.id))
        .join(Battle, Vote.battle_id == Battle.id)
        .where(Vote.id > after, Battle.state == "voted", Battle.flagged.is_(False))
        .group_by(Battle.model_a_id, Battle.model_b_id, Vote.winner)
    ):
        a_score = {"a": 1.0, "b": 0.0}.get(winner, 0.5)
        key, first_score = ((model_a, model_b), a_score) if model_a < model_b else ((model_b, model_a), 1 - a_score)
        score, count = since.get(key, (0.0, 0.0))
        since[key] = (score + first_score * n, count + n)
        newest = max(newest, int(last))
    return newest


def _pairs(since: dict, position: dict[int, int]):
    """`since` as arrays over the state's positions: (first, second, first's score, votes)."""
    rows = [
        (position[a], position[b], score, n) for (a, b), (score, n) in since.items() if a in position and b in position
    ]
    if not rows:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0), np.zeros(0)
    first, second, score, n = (np.array(column) for column in zip(*rows))
    return first.astype(np.int64), second.astype(np.int64), score.astype(float), n.astype(float)


def failing_models(session: Session, settings: SamplingSettings, *, now: datetime) -> dict[int, tuple[int, int]]:
    """Models whose calls in the window failed too often: {model id: (failed, calls)}.

    The calls are the answers of battles created in the window (an answer that failed or came back empty is
    stored incomplete) and the endpoint checks made in it; both are read through indexed creation times.
    """
    since = now - timedelta(seconds=settings.failing_seconds)
    model = case((Message.side == "a", Battle.model_a_id), else_=Battle.model_b_id)
    failed = func.sum(case((Message.complete.is_(False), 1), else_=0))
    calls: dict[int, list[int]] = {}
    for model_id, n_failed, n in session.execute(
        select(model, failed, func.count())
        .join(Battle, Message.battle_id == Battle.id)
        .where(Battle.created_at >= since, Message.role == "assistant")
        .group_by(model)
    ):
        calls[model_id] = [int(n_failed or 0), int(n)]
    for model_id, n_failed, n in session.execute(
        select(EndpointCheck.model_id, func.sum(case((EndpointCheck.ok.is_(False), 1), else_=0)), func.count())
        .where(EndpointCheck.created_at >= since)
        .group_by(EndpointCheck.model_id)
    ):
        cell = calls.setdefault(model_id, [0, 0])
        cell[0] += int(n_failed or 0)
        cell[1] += int(n)
    return {
        model_id: (bad, n)
        for model_id, (bad, n) in calls.items()
        if n >= settings.failing_min_calls and bad >= settings.failing_rate * n
    }


# ------------------------------------------------------------------------------------------------ the draw


def choose_pair(state: PolicyState, candidates: list, rng=_system_random) -> tuple:
    """Two of `candidates` (objects with .id and .sampling_weight, the models that can answer) drawn by the
    state's rule, sides shuffled; failing models are left out. Unavailable when fewer than two remain.

    The draw runs over every model of the state, those that cannot be drawn now weighing 0, so that no
    matrix is copied per battle (see `ranking.sampling.draw_pair`).
    """
    usable = [c for c in candidates if c.id not in state.failing]
    rule = state.settings.rule
    if all(c.id in state.position for c in usable):
        index = [state.position[c.id] for c in usable]
        weights = np.zeros(len(state.position))
        weights[index] = [c.sampling_weight for c in usable]
        pair = rule_math.draw_pair(rule, weights, rng, votes=state.votes, odds=state.odds)
        by_index = dict(zip(index, usable))
        pair = pair and (by_index[pair[0]], by_index[pair[1]])
    else:  # a model the state does not know yet (it was refreshed meanwhile): the weighted rule, by the floor
        votes = [state.votes[state.position[c.id]] if c.id in state.position else 0.0 for c in usable]
        pair = rule_math.draw_pair(rule._replace(floor=1.0), [c.sampling_weight for c in usable], rng, votes=votes)
        pair = pair and (usable[pair[0]], usable[pair[1]])
    if not pair:
        raise Unavailable("no_models", "Not enough models can answer this prompt right now.")
    return pair


def pick_pair(app: Flask, session: Session, candidates: list, rng=_system_random) -> tuple:
    """(model a, model b, policy name): the one place where the service picks a battle's pair."""
    state = policy_state(app, session, known=tuple(c.id for c in candidates))
    a, b = choose_pair(state, candidates, rng)
    return a, b, state.settings.policy


# ------------------------------------------------------------------------------------------------ publishing


def published(app: Flask, session: Session) -> dict:
    """The active policy, its rule and settings, and each active model's weight, votes and share of battles.

    The share is the model's expected share of battle sides for a prompt every active model can answer
    (recorded models answer only the prompts they have answers for, so for others it differs).
    """
    state = policy_state(app, session)
    models = session.execute(
        select(Model.id, Model.name, Model.organization, Model.kind, Model.sampling_weight)
        .where(Model.status == "active")
        .order_by(Model.name)
    ).all()
    drawn = [row for row in models if row.id not in state.failing and row.sampling_weight > 0]
    index = np.array([state.position.get(row.id, -1) for row in drawn], np.int64)
    votes = np.array([state.votes[i] if i >= 0 else 0.0 for i in index])
    odds = None
    if state.odds is not None:
        odds = state.odds[np.ix_(np.maximum(index, 0), np.maximum(index, 0))]
        odds[index < 0, :] = odds[:, index < 0] = 0.0
    probabilities = rule_math.pair_probabilities(
        state.settings.rule, np.array([r.sampling_weight for r in drawn], np.float64), votes=votes, odds=odds
    )
    shares = dict(zip((row.id for row in drawn), rule_math.model_shares(probabilities)))
    rule = state.settings.rule
    rows = []
    for row in models:
        i = state.position.get(row.id)
        count = int(state.votes[i]) if i is not None else 0
        failing = state.failing.get(row.id)
        rows.append(
            {
                "model": row.name,
                "organization": row.organization,
                "kind": row.kind,
                "weight": row.sampling_weight,
                "votes": count,
                "provisional": count < rule.provisional_votes,
                "share": round(float(shares.get(row.id, 0.0)), 6),
                "failing": None if failing is None else {"failed": failing[0], "calls": failing[1]},
            }
        )
    return {
        **state.settings.published(),
        "snapshot": state.snapshot,
        "refreshed_at": state.refreshed_at.isoformat().replace("+00:00", "Z"),
        "models": rows,
    }


def snapshot_record(settings: Settings) -> dict:
    """What a snapshot records of the sampling in force when it was built: the policy, its rule, settings."""
    return SamplingSettings.from_settings(settings).published()


def seeded(seed: int) -> random.Random:
    """A reproducible source of draws for tests and benchmarks (the service draws from the system's)."""
    return random.Random(seed)
