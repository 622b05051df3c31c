"""A battle from creation to its vote: pair two models by the sampling policy, store the battle, follow-up
turns, and the one vote, cast in one transaction, which reveals both identities."""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from typing import NamedTuple

from flask import Flask, current_app
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

from arena import metrics
from arena.battles.pairing import eligible_models
from arena.catalog.demo import LLMFAO_ATTRIBUTION
from arena.catalog.identity import Identity
from arena.errors import ArenaError, Conflict, NotFound
from arena.leaderboard import sampling
from arena.models import Battle, Message, Model, Prompt, RecordedAnswer, Vote

SIDES = ("a", "b")
# The busiest requests (creating a battle, streaming it, voting) run Core statements on the tables the models
# map: the ORM's per-statement work (identity map, unit of work, loading whole rows) was more than half of a
# vote's server CPU (bench/service.py). The typed models stay the one definition of the schema.
_battles, _messages, _votes = Battle.__table__, Message.__table__, Vote.__table__
_models, _answers, _prompts = Model.__table__, RecordedAnswer.__table__, Prompt.__table__


def address_hash(secret_key: str, address: str | None) -> str | None:
    """A keyed hash of the client address: rate limits and abuse checks can group by it, nobody can reverse it."""
    if not address:
        return None
    return hmac.new(_address_key(secret_key), address.encode(), hashlib.sha256).hexdigest()[:32]


@functools.lru_cache(maxsize=4)
def _address_key(secret_key: str) -> bytes:
    return hashlib.sha256(b"arena-address:" + secret_key.encode()).digest()


class NewBattle(NamedTuple):
    id: str
    prompt_text: str
    state: str
    attribution: str | None  # the credit owed for the prompt's content, shown with it


_PROMPT = select(_prompts.c.text, _prompts.c.source).where(_prompts.c.id == bindparam("prompt_id"))


_INSERT_BATTLE, _INSERT_MESSAGES, _INSERT_VOTE = insert(_battles), insert(_messages), insert(_votes)


def create_battle(
    session: Session,
    *,
    prompt_text: str | None,
    prompt_id: int | None,
    voter: str,
    address: str | None,
    app: Flask | None = None,
) -> NewBattle:
    """Pair two eligible models on the prompt by the sampling policy (arena.leaderboard.sampling; `app`: the current
    one by
    default) and store the battle, with the policy that drew it, and each side's first user message."""
    attribution = None
    if prompt_id is not None:
        prompt = session.execute(_PROMPT, {"prompt_id": prompt_id}).first()
        if prompt is None:
            raise NotFound("prompt_not_found", f"There is no prompt {prompt_id}.")
        prompt_text = prompt.text
        attribution = LLMFAO_ATTRIBUTION if prompt.source == "llmfao" else None
    models = eligible_models(session, prompt_id)
    model_a, model_b, policy = sampling.pick_pair(app or current_app._get_current_object(), session, models)
    battle_id = secrets.token_urlsafe(16)
    session.execute(
        _INSERT_BATTLE,
        dict(
            id=battle_id,
            prompt_id=prompt_id,
            prompt_text=prompt_text,
            model_a_id=model_a.id,
            model_b_id=model_b.id,
            state="created",
            voter=voter,
            address_hash=address,
            sampling_policy=policy,
        ),
    )
    session.execute(
        _INSERT_MESSAGES,
        [
            dict(battle_id=battle_id, side=side, turn=0, role="user", content=prompt_text, complete=True)
            for side in SIDES
        ],
    )
    session.commit()
    metrics.BATTLES.labels("created").inc()
    return NewBattle(battle_id, prompt_text, "created", attribution)


def _not_found() -> ArenaError:
    # Someone else's battle answers exactly like one that does not exist.
    return NotFound("battle_not_found", "There is no such battle.")


def own_battle(session: Session, battle_id: str, voter: str | None) -> Battle:
    """The voter's battle, with both models loaded in the same query."""
    statement = (
        select(Battle)
        .where(Battle.id == battle_id)
        .options(joinedload(Battle.model_a, innerjoin=True), joinedload(Battle.model_b, innerjoin=True))
    )
    battle = session.scalars(statement).first()
    if battle is None or voter is None or battle.voter != voter:
        raise _not_found()
    return battle


def add_turn(session: Session, battle: Battle, text: str) -> int:
    """A follow-up prompt before the vote; each model continues its own conversation."""
    if battle.state != "ready":
        raise Conflict("battle_not_ready", "A follow-up can be sent only when both answers are complete.")
    if battle.model_a.kind != "endpoint" or battle.model_b.kind != "endpoint":
        raise Conflict("no_follow_up", "This battle's answers are recorded: it takes no follow-up.")
    turn = max(m.turn for m in battle.messages) + 1
    # The state was read before: a vote (or another follow-up) since then leaves this UPDATE without a row, so a
    # voted battle never reopens and two racing follow-ups cannot both open the same turn.
    if session.execute(_REOPEN, {"battle_id": battle.id}).rowcount != 1:
        session.rollback()
        raise Conflict("battle_not_ready", "A follow-up can be sent only when both answers are complete.")
    session.add_all(
        Message(battle_id=battle.id, side=side, turn=turn, role="user", content=text, complete=True) for side in SIDES
    )
    session.commit()
    session.expire(battle, ["state"])
    return turn


_REOPEN = (
    update(_battles).where(_battles.c.id == bindparam("battle_id"), _battles.c.state == "ready").values(state="created")
)


class Sides(NamedTuple):
    """Who answered on each side, as a vote reveals it."""

    model_a: Identity
    model_b: Identity


def _identity_of(side_id, column):
    return select(column).where(_models.c.id == side_id).scalar_subquery()


# Closes the voter's ready battle and reads both identities in one statement (UPDATE ... RETURNING, in
# PostgreSQL and in SQLite from 3.35; SQLite's RETURNING cannot name another table, hence the subqueries, which
# SQLAlchemy renders unqualified for SQLite: "id" is the model's, "model_a_id" the battle's): ownership and state
# are checked by the very write that closes the battle, so of two racing votes exactly one gets a row.
_CLOSE_AND_REVEAL = (
    update(_battles)
    .where(_battles.c.id == bindparam("battle_id"), _battles.c.voter == bindparam("owner"), _battles.c.state == "ready")
    .values(state="voted")
    .returning(
        *(
            _identity_of(side_id, column)
            for side_id in (_battles.c.model_a_id, _battles.c.model_b_id)
            for column in (_models.c.name, _models.c.organization)
        )
    )
)


_BATTLE_STATE = select(_battles.c.state, _battles.c.voter).where(_battles.c.id == bindparam("battle_id"))


def vote(session: Session, battle_id: str, winner: str, *, voter: str | None, address: str | None) -> dict:
    """The voter's vote on their battle, cast in one transaction; returns both sides' identities.

    Two statements when the vote is taken (close the battle, reading both identities; insert the vote) and one
    commit: a vote's server CPU is mostly SQLAlchemy's and psycopg's per-statement work. A refused vote reads
    the battle once more, to say why.
    """
    closed = None
    if voter is not None:
        closed = session.execute(_CLOSE_AND_REVEAL, {"battle_id": battle_id, "owner": voter}).first()
    if closed is None:
        session.rollback()
        battle = session.execute(_BATTLE_STATE, {"battle_id": battle_id}).first()
        if battle is None or voter is None or battle.voter != voter:
            raise _not_found()
        raise _refusal(battle.state) or _already_voted()  # still "ready": a racing vote held it and rolled back
    _record_vote(session, battle_id, winner, voter=voter, address=address)
    return reveal(Sides(Identity(closed[0], closed[1]), Identity(closed[2], closed[3])))


_CLOSE = (
    update(_battles).where(_battles.c.id == bindparam("battle_id"), _battles.c.state == "ready").values(state="voted")
)


def cast_vote(session: Session, battle: Battle, winner: str, *, voter: str | None, address: str | None) -> None:
    """Record a vote on a battle already loaded (operators' tools, tests) by the rules of `vote`: only a ready
    battle takes it, exactly once, and the vote and the battle's new state commit together."""
    refusal = _refusal(battle.state)
    if refusal is not None:
        raise refusal
    # The state was read before: a concurrent vote (or a voiding) since then leaves this UPDATE without a row.
    if session.execute(_CLOSE, {"battle_id": battle.id}).rowcount != 1:
        session.rollback()
        raise _already_voted()
    _record_vote(session, battle.id, winner, voter=voter, address=address)


def _refusal(state: str) -> ArenaError | None:
    """Why a battle in `state` takes no vote, or None when it is ready."""
    if state == "voted":
        return _already_voted()
    if state == "void":
        return Conflict("battle_void", "This battle was void: it takes no vote.")
    if state != "ready":
        return Conflict("battle_not_ready", "Both answers must be complete before the vote.")
    return None


def _already_voted() -> ArenaError:
    return Conflict("already_voted", "This battle already has a vote.")


def _record_vote(session: Session, battle_id: str, winner: str, *, voter: str | None, address: str | None) -> None:
    """Insert the vote beside the battle's closing UPDATE and commit both; the unique battle_id is the last guard."""
    session.execute(
        _INSERT_VOTE, dict(battle_id=battle_id, winner=winner, voter=voter, address_hash=address, source="arena")
    )
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise _already_voted() from None
    metrics.BATTLES.labels("voted").inc()
    metrics.VOTES.labels(winner).inc()


def reveal(battle: Battle | Sides) -> dict:
    return {
        side: {"model": model.name, "organization": model.organization}
        for side, model in (("a", battle.model_a), ("b", battle.model_b))
    }
