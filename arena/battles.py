"""Battles: pairing two models, streaming their answers, and taking the one vote.

The side-to-model mapping never leaves the server before the vote: everything a voter receives speaks of
sides "a" and "b" only, and provider failures are reported in words that name neither model.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import queue
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import NamedTuple

from flask import Flask
from sqlalchemy import and_, bindparam, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

from arena import db
from arena.answer_style import style_counts
from arena.errors import ApiError, database_unavailable, one_line
from arena.models import Battle, Message, Model, Prompt, RecordedAnswer, Vote, utcnow

log = logging.getLogger(__name__)

SIDES = ("a", "b")
# Waits between tries to store a finished battle's answers while the database is unreachable (3.5 s in all).
STORE_RETRY_DELAYS_S = (0.5, 1.0, 2.0)
NEUTRAL_FAILURE = "This answer could not be completed, so this battle cannot be voted on. Please start a new one."
LLMFAO_ATTRIBUTION = ("Prompts and answers from the Crowdsourced LLM Benchmark by llmonitor.com (CC BY 4.0); "
                      "crowd votes from LLMFAO by Dmitry Ustalov (CC BY 4.0).")
_system_random = secrets.SystemRandom()

# The busiest requests (creating a battle, streaming it, voting) run Core statements on the tables the models
# map: the ORM's per-statement work (identity map, unit of work, loading whole rows) was more than half of a
# vote's server CPU (bench/service.py). The typed models stay the one definition of the schema.
_battles, _messages, _votes = Battle.__table__, Message.__table__, Vote.__table__
_models, _answers, _prompts = Model.__table__, RecordedAnswer.__table__, Prompt.__table__


# ------------------------------------------------------------------------------------------------ identity

def address_hash(secret_key: str, address: str | None) -> str | None:
    """A keyed hash of the client address: rate limits and abuse checks can group by it, nobody can reverse it."""
    if not address:
        return None
    return hmac.new(_address_key(secret_key), address.encode(), hashlib.sha256).hexdigest()[:32]


@functools.lru_cache(maxsize=4)
def _address_key(secret_key: str) -> bytes:
    return hashlib.sha256(b"arena-address:" + secret_key.encode()).digest()


class Identity(NamedTuple):
    """What identifies a model to a voter: revealed after the vote, and looked for in its answers before."""
    name: str
    organization: str
    aliases: tuple[str, ...] = ()
    families: tuple[str, ...] = ()  # the model families it belongs to ("Llama", "GPT"): naming one reveals it

    @classmethod
    def of(cls, model: Model) -> "Identity":
        return cls(model.name, model.organization, tuple(model.aliases or ()), tuple(model.families or ()))


def _normalise(text: str) -> str:
    return " " + re.sub(r"[^0-9a-z]+", " ", text.lower()).strip() + " "


def identity_leak(answer: str, model: Model | Identity) -> str | None:
    """The name, organisation, alias or family of `model` that `answer` reveals, if any.

    Case, punctuation and spacing are ignored ("GPT-3.5 turbo" matches "GPT 3.5 Turbo"), and matches are whole
    words, so an organisation called "Meta" does not match "metaphor".
    """
    text = _normalise(answer)
    for label in [model.name, model.organization, *(model.aliases or []), *(model.families or [])]:
        needle = _normalise(label or "")
        if needle.strip() and needle in text:
            return label
    return None


# ------------------------------------------------------------------------------------------------ pairing

class Candidate(NamedTuple):
    """A model that can answer a battle's prompt: all that pairing needs, read without loading the model."""
    id: int
    sampling_weight: float


# What str.strip() removes (all of it lies below U+3001). An answer made only of these is an empty recording:
# 25 of LLMFAO's answers are, and drawn into a battle one could only void it.
_WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())
_ELIGIBLE = select(_models.c.id, _models.c.sampling_weight).where(
    _models.c.status == "active", _models.c.sampling_weight > 0).order_by(_models.c.id)
_ELIGIBLE_ENDPOINTS = _ELIGIBLE.where(_models.c.kind == "endpoint")
_ELIGIBLE_FOR_PROMPT = _ELIGIBLE.where(or_(_models.c.kind == "endpoint", and_(
    _models.c.kind == "recorded",
    select(_answers.c.id).where(_answers.c.model_id == _models.c.id,
                                _answers.c.prompt_id == bindparam("prompt_id"),
                                func.length(func.trim(_answers.c.text, _WHITESPACE)) > 0).exists())))


def eligible_models(session: Session, prompt_id: int | None) -> list[Candidate]:
    """Active models that can answer, by id: endpoint models always, recorded ones only for prompts they
    answered with some text. One query; the answers' text is tested in the database, never fetched."""
    if prompt_id is None:
        return [Candidate(*row) for row in session.execute(_ELIGIBLE_ENDPOINTS)]
    return [Candidate(*row) for row in session.execute(_ELIGIBLE_FOR_PROMPT, {"prompt_id": prompt_id})]


def pick_pair(models: list[Candidate], rng=_system_random) -> tuple[Candidate, Candidate]:
    """Two different models by the weighted rule, the pair {i, j} with probability proportional to w_i · w_j.

    The same draw as the service's (`ranking.sampling.draw_pair`, linear in the number of models, sides
    shuffled) for callers that hold candidates but no configured policy; battles go through
    `arena.sampling.pick_pair`, which applies the operator's policy and leaves failing models out.
    """
    from ranking.sampling import SamplingRule, draw_pair

    pair = draw_pair(SamplingRule(policy="weighted"), [m.sampling_weight for m in models], rng)
    if pair is None:
        raise ApiError(503, "no_models", "Not enough models can answer this prompt right now.")
    return models[pair[0]], models[pair[1]]


class NewBattle(NamedTuple):
    id: str
    prompt_text: str
    state: str
    attribution: str | None  # the credit owed for the prompt's content, shown with it


_PROMPT = select(_prompts.c.text, _prompts.c.source).where(_prompts.c.id == bindparam("prompt_id"))
_INSERT_BATTLE, _INSERT_MESSAGES, _INSERT_VOTE = insert(_battles), insert(_messages), insert(_votes)


def create_battle(session: Session, *, prompt_text: str | None, prompt_id: int | None, voter: str,
                  address: str | None, app: Flask | None = None) -> NewBattle:
    """Pair two eligible models on the prompt by the sampling policy (arena.sampling; `app`: the current one by
    default) and store the battle, with the policy that drew it, and each side's first user message."""
    from flask import current_app

    from arena import sampling

    attribution = None
    if prompt_id is not None:
        prompt = session.execute(_PROMPT, {"prompt_id": prompt_id}).first()
        if prompt is None:
            raise ApiError(404, "prompt_not_found", f"There is no prompt {prompt_id}.")
        prompt_text = prompt.text
        attribution = LLMFAO_ATTRIBUTION if prompt.source == "llmfao" else None
    models = eligible_models(session, prompt_id)
    model_a, model_b, policy = sampling.pick_pair(app or current_app._get_current_object(), session, models)
    battle_id = secrets.token_urlsafe(16)
    session.execute(_INSERT_BATTLE, dict(
        id=battle_id, prompt_id=prompt_id, prompt_text=prompt_text, model_a_id=model_a.id, model_b_id=model_b.id,
        state="created", voter=voter, address_hash=address,
        sampling_policy=policy))
    session.execute(_INSERT_MESSAGES, [dict(battle_id=battle_id, side=side, turn=0, role="user",
                                            content=prompt_text, complete=True) for side in SIDES])
    session.commit()
    return NewBattle(battle_id, prompt_text, "created", attribution)


def _not_found() -> ApiError:
    # Someone else's battle answers exactly like one that does not exist.
    return ApiError(404, "battle_not_found", "There is no such battle.")


def own_battle(session: Session, battle_id: str, voter: str | None) -> Battle:
    """The voter's battle, with both models loaded in the same query."""
    statement = select(Battle).where(Battle.id == battle_id).options(joinedload(Battle.model_a, innerjoin=True),
                                                                      joinedload(Battle.model_b, innerjoin=True))
    battle = session.scalars(statement).first()
    if battle is None or voter is None or battle.voter != voter:
        raise _not_found()
    return battle


def add_turn(session: Session, battle: Battle, text: str) -> int:
    """A follow-up prompt before the vote; each model continues its own conversation."""
    if battle.state != "ready":
        raise ApiError(409, "battle_not_ready", "A follow-up can be sent only when both answers are complete.")
    if battle.model_a.kind != "endpoint" or battle.model_b.kind != "endpoint":
        raise ApiError(409, "no_follow_up", "This battle's answers are recorded: it takes no follow-up.")
    turn = max(m.turn for m in battle.messages) + 1
    # The state was read before: a vote (or another follow-up) since then leaves this UPDATE without a row, so a
    # voted battle never reopens and two racing follow-ups cannot both open the same turn.
    if session.execute(_REOPEN, {"battle_id": battle.id}).rowcount != 1:
        session.rollback()
        raise ApiError(409, "battle_not_ready", "A follow-up can be sent only when both answers are complete.")
    session.add_all(Message(battle_id=battle.id, side=side, turn=turn, role="user", content=text, complete=True)
                    for side in SIDES)
    session.commit()
    session.expire(battle, ["state"])
    return turn


_REOPEN = (update(_battles).where(_battles.c.id == bindparam("battle_id"), _battles.c.state == "ready")
           .values(state="created"))


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
    .where(_battles.c.id == bindparam("battle_id"), _battles.c.voter == bindparam("owner"),
           _battles.c.state == "ready")
    .values(state="voted")
    .returning(*(_identity_of(side_id, column) for side_id in (_battles.c.model_a_id, _battles.c.model_b_id)
                 for column in (_models.c.name, _models.c.organization))))
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


_CLOSE = (update(_battles).where(_battles.c.id == bindparam("battle_id"), _battles.c.state == "ready")
          .values(state="voted"))


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


def _refusal(state: str) -> ApiError | None:
    """Why a battle in `state` takes no vote, or None when it is ready."""
    if state == "voted":
        return _already_voted()
    if state == "void":
        return ApiError(409, "battle_void", "This battle was void: it takes no vote.")
    if state != "ready":
        return ApiError(409, "battle_not_ready", "Both answers must be complete before the vote.")
    return None


def _already_voted() -> ApiError:
    return ApiError(409, "already_voted", "This battle already has a vote.")


def _record_vote(session: Session, battle_id: str, winner: str, *, voter: str | None, address: str | None) -> None:
    """Insert the vote beside the battle's closing UPDATE and commit both; the unique battle_id is the last guard."""
    session.execute(_INSERT_VOTE, dict(battle_id=battle_id, winner=winner, voter=voter, address_hash=address,
                                       source="arena"))
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise _already_voted() from None


def reveal(battle: Battle | Sides) -> dict:
    return {side: {"model": model.name, "organization": model.organization}
            for side, model in (("a", battle.model_a), ("b", battle.model_b))}


# ------------------------------------------------------------------------------------------------ streaming

@dataclass
class _SideResult:
    text: list[str] = field(default_factory=list)
    error: str | None = None
    started: float = field(default_factory=time.monotonic)
    first_token: float | None = None
    finished: float | None = None


class BattleRun:
    """Both sides of one turn, answered concurrently; results are stored whether or not anyone listens.

    Each side runs in its own thread and puts ("delta" | "done" | "error", side, text) on a queue that the
    HTTP response drains. The last side to finish first stores both answers and the battle's new state, then
    announces itself, so a client that has seen both sides finish can vote at once. Everything the store needs
    (the turn, both identities, whether the battle is already flagged) is given at the start, so storing is
    one INSERT, one UPDATE and a commit.
    """

    def __init__(self, app: Flask, battle_id: str, *, turn: int, identities: dict[str, Identity],
                 flagged: bool):
        self.app, self.battle_id = app, battle_id
        self.turn, self.identities, self.flagged = turn, identities, flagged
        self.events: queue.Queue = queue.Queue()
        self.results = {side: _SideResult() for side in SIDES}
        self._lock = threading.Lock()
        self._remaining = len(SIDES)

    def start(self, sources: dict) -> None:
        for side in SIDES:
            threading.Thread(target=self._run_side, args=(side, sources[side]), daemon=True,
                             name=f"battle-{self.battle_id[:6]}-{side}").start()

    def _run_side(self, side: str, source) -> None:
        result = self.results[side]
        try:
            for delta in source():
                if not delta:
                    continue
                if result.first_token is None:
                    result.first_token = time.monotonic()
                result.text.append(delta)
                self.events.put(("delta", side, delta))
        except Exception as error:  # a provider failure of any kind voids the battle, never the worker
            result.error = f"{type(error).__name__}: {error}"
            log.warning("battle %s side %s failed: %s", self.battle_id, side, result.error)
        result.finished = time.monotonic()
        with self._lock:
            self._remaining -= 1
            last = self._remaining == 0
        state = None
        if last:
            state = self._store_answers()
        self.events.put(("error" if result.error else "done", side, ""))
        if last:
            self.events.put(("end", None, state))

    def _store_answers(self) -> str:
        """Store the answers, retrying for a few seconds while the database is unreachable (a restart or a
        failover): they cost two provider calls and a voter's wait. Whatever happens, the stream then ends, or
        its listener would wait forever; answers that could not be stored end it as void."""
        for delay in (*STORE_RETRY_DELAYS_S, None):
            try:
                return self._store()
            except Exception as error:
                if delay is None or not database_unavailable(error):
                    log.exception("battle %s: the answers could not be stored", self.battle_id)
                    return "void"
                log.warning("battle %s: database unavailable while storing the answers (%s); retrying in %.1f s",
                            self.battle_id, one_line(error), delay)
                time.sleep(delay)

    def _store(self) -> str:
        """Store both answers and move the battle to ready (or void) in one transaction."""
        failed = [side for side in SIDES if self.results[side].error]
        rows, flag = [], {}
        for side in SIDES:
            result = self.results[side]
            text = "".join(result.text)
            error = result.error or (None if text.strip() else "empty answer")
            if error and side not in failed:
                failed.append(side)
            rows.append(dict(
                battle_id=self.battle_id, side=side, turn=self.turn, role="assistant", content=text,
                complete=error is None, error=error,
                first_token_ms=None if result.first_token is None else 1000 * (result.first_token - result.started),
                duration_ms=1000 * ((result.finished or time.monotonic()) - result.started),
                **style_counts(text)))  # the style-controlled leaderboard's covariates, counted once here
            leak = identity_leak(text, self.identities[side])
            if leak and not self.flagged and not flag:
                flag = {"flagged": True, "flag_reason": f"side {side} named {leak!r}"}
        if failed:
            change = {"state": "void",
                      "void_reason": "; ".join(f"{s}: {self.results[s].error or 'empty answer'}" for s in failed)}
        else:
            change = {"state": "ready"}
        this_battle = _battles.c.id == self.battle_id
        with db.new_session(self.app) as session:
            session.execute(_INSERT_MESSAGES, rows)
            moved = session.execute(update(_battles).where(this_battle, _battles.c.state == "streaming")
                                    .values(**change, **flag))
            state = change["state"]
            if moved.rowcount != 1:
                # Voided meanwhile (an operator changed one of its models): that stands; the answers and the
                # flag are stored all the same.
                if flag:
                    session.execute(update(_battles).where(this_battle).values(**flag))
                state = session.execute(select(_battles.c.state).where(this_battle)).scalar_one()
            session.commit()
            return state


def answer_sources(app: Flask, session: Session, battle: Battle) -> dict:
    """For each side, a zero-argument callable returning an iterator of text deltas for the current turn."""
    from arena import providers

    config = app.config
    models = {"a": battle.model_a, "b": battle.model_b}
    recorded_ids = [model.id for model in models.values() if model.kind == "recorded"]
    recorded = {}
    if recorded_ids:  # both sides' recordings in one query
        recorded = {model_id: (text, duration_ms) for model_id, text, duration_ms in session.execute(
            select(_answers.c.model_id, _answers.c.text, _answers.c.duration_ms)
            .where(_answers.c.prompt_id == battle.prompt_id, _answers.c.model_id.in_(recorded_ids)))}
    sources = {}
    for side, model in models.items():
        if model.kind == "recorded":
            if model.id not in recorded:
                raise ApiError(409, "battle_void", NEUTRAL_FAILURE)
            text, duration_ms = recorded[model.id]
            sources[side] = (lambda t=text, d=duration_ms: providers.replay_recorded(
                t, d, speed=config["REPLAY_SPEED"], max_seconds=config["REPLAY_MAX_SECONDS"]))
        else:
            conversation = []
            if model.system_prompt:
                conversation.append({"role": "system", "content": model.system_prompt})
            conversation += [{"role": m.role, "content": m.content} for m in battle.messages if m.side == side]
            api_key = None
            if model.endpoint_key_encrypted:
                from arena.crypto import decrypt_secret

                api_key = decrypt_secret(config["SECRET_KEY"], model.endpoint_key_encrypted)
            sources[side] = (lambda m=model, c=conversation, k=api_key: _call_endpoint(m, c, k, config))
    return sources


def _current_turn(battle: Battle) -> int:
    """The turn being answered. Recorded answers take no follow-up, so a battle with a recorded side is on its
    first turn, and its messages need not be read for this."""
    if "recorded" in (battle.model_a.kind, battle.model_b.kind):
        return 0
    return max(m.turn for m in battle.messages)


def _call_endpoint(model: Model, conversation: list, api_key: str | None, config):
    """Stream one endpoint model's answer. A lab's endpoint is checked again here, not only at registration:
    its host may have been pointed at a forbidden address since (operators' own models are trusted)."""
    from arena import providers
    from arena.lab_actions import check_endpoint_address, endpoint_client

    client = None
    if model.lab_id is not None:
        check_endpoint_address(model.base_url, allow_private=config["ALLOW_PRIVATE_ENDPOINTS"])
        client = endpoint_client(allow_private=config["ALLOW_PRIVATE_ENDPOINTS"])  # vets what it dials too
    return providers.stream_chat(
        model.base_url, model.endpoint_model, conversation, api_key=api_key, client=client,
        params=model.sampling_params or None, connect_timeout=config["PROVIDER_CONNECT_TIMEOUT"],
        first_token_timeout=config["PROVIDER_FIRST_TOKEN_TIMEOUT"], total_timeout=config["PROVIDER_TOTAL_TIMEOUT"])


def sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def start_stream(app: Flask, session: Session, battle: Battle):
    """Claim the battle for streaming (exactly one stream per turn) and return the SSE event iterator."""
    if battle.state == "streaming":
        _void_if_interrupted(app.config, session, battle)
    if battle.state in ("ready", "voted", "void"):
        return _replay_stored(battle)
    this_battle = _battles.c.id == battle.id
    claimed = session.execute(update(_battles).where(this_battle, _battles.c.state == "created")
                              .values(state="streaming", stream_started_at=utcnow()))
    session.commit()
    if claimed.rowcount != 1:
        raise ApiError(409, "already_streaming", "This battle's answers are already being streamed.")
    try:
        sources = answer_sources(app, session, battle)
    except ApiError:
        session.execute(update(_battles).where(this_battle).values(state="void", void_reason="no recorded answer"))
        session.commit()
        raise
    run = BattleRun(app, battle.id, turn=_current_turn(battle), flagged=battle.flagged,
                    identities={"a": Identity.of(battle.model_a), "b": Identity.of(battle.model_b)})
    run.start(sources)
    return _forward(run)


def stream_deadline_s(config) -> float:
    """How long after its start a stream has surely ended: the slowest provider call or recorded replay, the
    retries of storing its answers, and a minute's margin for a slow database."""
    slowest = max(config["PROVIDER_CONNECT_TIMEOUT"] + config["PROVIDER_TOTAL_TIMEOUT"], config["REPLAY_MAX_SECONDS"])
    return slowest + sum(STORE_RETRY_DELAYS_S) + 60


def _void_if_interrupted(config, session: Session, battle: Battle) -> None:
    """Void a battle still streaming past the deadline: its stream was lost (a killed worker, answers that could
    not be stored) and nothing else would ever end it, so a reload would answer 409 already_streaming for ever.
    The write is conditional, so a stream that does end meanwhile keeps its result."""
    started = func.coalesce(_battles.c.stream_started_at, _battles.c.created_at)  # battles from before 0006
    cutoff = utcnow() - timedelta(seconds=stream_deadline_s(config))
    voided = session.execute(update(_battles).where(
        _battles.c.id == battle.id, _battles.c.state == "streaming", started < cutoff).values(
        state="void", void_reason="stream interrupted: no answers were stored before its deadline"))
    session.commit()
    if voided.rowcount == 1:
        log.warning("battle %s: its stream was interrupted; voided", battle.id)
        session.refresh(battle)


def _forward(run: BattleRun):
    """The SSE text of a run's events. Whatever has arrived while the last write went out is sent in one write:
    a fast answer's deltas then cost one socket write per batch instead of one each."""
    yield ": stream open\n\n"
    while True:
        try:
            events = [run.events.get(timeout=15)]
        except queue.Empty:
            yield ": keep-alive\n\n"  # proxies close silent connections
            continue
        while True:
            try:
                events.append(run.events.get_nowait())
            except queue.Empty:
                break
        text, ended = [], False
        for kind, side, payload in events:
            if kind == "delta":
                text.append(sse("delta", {"side": side, "text": payload}))
            elif kind == "done":
                text.append(sse("done", {"side": side}))
            elif kind == "error":
                text.append(sse("error", {"side": side, "message": NEUTRAL_FAILURE}))
            else:
                text.append(sse("end", {"state": payload}))
                ended = True  # the last event of a run
        yield "".join(text)
        if ended:
            return


def _replay_stored(battle: Battle) -> list[str]:
    """A battle already answered (a reload): its latest turn at once, from the database.

    Built eagerly, while the request's session is open: the response body is sent after it closes.
    """
    turn = max(m.turn for m in battle.messages)
    answers = {m.side: m for m in battle.messages if m.turn == turn and m.role == "assistant"}
    events = [": stream open\n\n"]
    for side in SIDES:
        message = answers.get(side)
        if message is not None and message.content:
            events.append(sse("delta", {"side": side, "text": message.content}))
        if message is None or not message.complete:
            events.append(sse("error", {"side": side, "message": NEUTRAL_FAILURE}))
        else:
            events.append(sse("done", {"side": side}))
    events.append(sse("end", {"state": battle.state}))
    return events
