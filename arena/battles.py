"""Battles: pairing two models, streaming their answers, and taking the one vote.

The side-to-model mapping never leaves the server before the vote: everything a voter receives speaks of
sides "a" and "b" only, and provider failures are reported in words that name neither model.
"""
from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import logging
import queue
import re
import secrets
import threading
import time
from dataclasses import dataclass, field

from flask import Flask
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

from arena import db
from arena.errors import ApiError
from arena.models import Battle, Message, Model, Prompt, RecordedAnswer, Vote

log = logging.getLogger(__name__)

SIDES = ("a", "b")
NEUTRAL_FAILURE = "This answer could not be completed, so this battle cannot be voted on. Please start a new one."
LLMFAO_ATTRIBUTION = ("Prompts and answers from the Crowdsourced LLM Benchmark by llmonitor.com (CC BY 4.0); "
                      "crowd votes from LLMFAO by Dmitry Ustalov (CC BY 4.0).")
_system_random = secrets.SystemRandom()


# ------------------------------------------------------------------------------------------------ identity

def address_hash(secret_key: str, address: str | None) -> str | None:
    """A keyed hash of the client address: rate limits and abuse checks can group by it, nobody can reverse it."""
    if not address:
        return None
    key = hashlib.sha256(b"arena-address:" + secret_key.encode()).digest()
    return hmac.new(key, address.encode(), hashlib.sha256).hexdigest()[:32]


def _normalise(text: str) -> str:
    return " " + re.sub(r"[^0-9a-z]+", " ", text.lower()).strip() + " "


def identity_leak(answer: str, model: Model) -> str | None:
    """The name, organisation or alias of `model` that `answer` reveals, if any.

    Case, punctuation and spacing are ignored ("GPT-3.5 turbo" matches "GPT 3.5 Turbo"), and matches are whole
    words, so an organisation called "Meta" does not match "metaphor".
    """
    text = _normalise(answer)
    for label in [model.name, model.organization, *(model.aliases or [])]:
        needle = _normalise(label or "")
        if needle.strip() and needle in text:
            return label
    return None


# ------------------------------------------------------------------------------------------------ pairing

def eligible_models(session: Session, prompt_id: int | None) -> list[Model]:
    """Active models that can answer: endpoint models always, recorded ones only for prompts they answered."""
    endpoint = select(Model).where(Model.status == "active", Model.kind == "endpoint", Model.sampling_weight > 0)
    models = list(session.scalars(endpoint))
    if prompt_id is not None:
        recorded = (select(Model, RecordedAnswer.text).join(RecordedAnswer, RecordedAnswer.model_id == Model.id)
                    .where(Model.status == "active", Model.kind == "recorded", Model.sampling_weight > 0,
                           RecordedAnswer.prompt_id == prompt_id))
        # an empty recording (25 of LLMFAO's answers are empty) could only void the battle
        models += [model for model, text in session.execute(recorded) if text.strip()]
    return sorted(models, key=lambda m: m.id)


def pick_pair(models: list[Model], rng=_system_random) -> tuple[Model, Model]:
    """Two different models, the pair {i, j} drawn with probability proportional to w_i · w_j.

    With equal weights that is uniform over pairs, so every model is in a battle equally often; the weights
    are the operators' published per-model sampling weights. The sides are then shuffled.
    """
    pairs = list(itertools.combinations(models, 2))
    if not pairs:
        raise ApiError(503, "no_models", "Not enough models can answer this prompt right now.")
    weights = [a.sampling_weight * b.sampling_weight for a, b in pairs]
    first, second = rng.choices(pairs, weights=weights)[0]
    return (first, second) if rng.random() < 0.5 else (second, first)


def create_battle(session: Session, *, prompt_text: str | None, prompt_id: int | None, voter: str,
                  address: str | None) -> Battle:
    if prompt_id is not None:
        prompt = session.get(Prompt, prompt_id)
        if prompt is None:
            raise ApiError(404, "prompt_not_found", f"There is no prompt {prompt_id}.")
        prompt_text = prompt.text
    models = eligible_models(session, prompt_id)
    model_a, model_b = pick_pair(models)
    battle = Battle(id=secrets.token_urlsafe(16), prompt_id=prompt_id, prompt_text=prompt_text,
                    model_a_id=model_a.id, model_b_id=model_b.id, state="created", voter=voter,
                    address_hash=address, sampling_policy="weighted" if any(
                        m.sampling_weight != 1.0 for m in models) else "uniform")
    session.add(battle)
    for side in SIDES:
        session.add(Message(battle_id=battle.id, side=side, turn=0, role="user", content=prompt_text,
                            complete=True))
    session.commit()
    return battle


def own_battle(session: Session, battle_id: str, voter: str | None) -> Battle:
    """The voter's battle, with both models loaded in the same query (the vote reveals them).

    Someone else's battle answers exactly like one that does not exist.
    """
    statement = select(Battle).where(Battle.id == battle_id).options(joinedload(Battle.model_a, innerjoin=True),
                                                                      joinedload(Battle.model_b, innerjoin=True))
    battle = session.scalars(statement).first()
    if battle is None or voter is None or battle.voter != voter:
        raise ApiError(404, "battle_not_found", "There is no such battle.")
    return battle


def add_turn(session: Session, battle: Battle, text: str) -> int:
    """A follow-up prompt before the vote; each model continues its own conversation."""
    if battle.state != "ready":
        raise ApiError(409, "battle_not_ready", "A follow-up can be sent only when both answers are complete.")
    if battle.model_a.kind != "endpoint" or battle.model_b.kind != "endpoint":
        raise ApiError(409, "no_follow_up", "This battle's answers are recorded: it takes no follow-up.")
    turn = max(m.turn for m in battle.messages) + 1
    for side in SIDES:
        session.add(Message(battle_id=battle.id, side=side, turn=turn, role="user", content=text, complete=True))
    battle.state = "created"
    session.commit()
    return turn


def cast_vote(session: Session, battle: Battle, winner: str, *, voter: str, address: str | None) -> Vote:
    """Record the vote and close the battle in one transaction; only a ready battle takes it, exactly once."""
    if battle.state == "voted":
        raise ApiError(409, "already_voted", "This battle already has a vote.")
    if battle.state == "void":
        raise ApiError(409, "battle_void", "This battle was void: it takes no vote.")
    if battle.state != "ready":
        raise ApiError(409, "battle_not_ready", "Both answers must be complete before the vote.")
    closed = session.execute(update(Battle).where(Battle.id == battle.id, Battle.state == "ready")
                             .values(state="voted").execution_options(synchronize_session=False))
    if closed.rowcount != 1:
        session.rollback()
        raise ApiError(409, "already_voted", "This battle already has a vote.")
    vote = Vote(battle_id=battle.id, winner=winner, voter=voter, address_hash=address, source="arena")
    session.add(vote)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ApiError(409, "already_voted", "This battle already has a vote.") from None
    return vote


def reveal(battle: Battle) -> dict:
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
    announces itself, so a client that has seen both sides finish can vote at once.
    """

    def __init__(self, app: Flask, battle_id: str):
        self.app, self.battle_id = app, battle_id
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
        state = self._store() if last else None
        self.events.put(("error" if result.error else "done", side, ""))
        if last:
            self.events.put(("end", None, state))

    def _store(self) -> str:
        """Store both answers and move the battle to ready (or void) in one transaction."""
        with db.new_session(self.app) as session:
            battle = session.get(Battle, self.battle_id)
            turn = max(m.turn for m in battle.messages)
            failed = [side for side in SIDES if self.results[side].error]
            for side in SIDES:
                result = self.results[side]
                text = "".join(result.text)
                error = result.error or (None if text.strip() else "empty answer")
                if error and side not in failed:
                    failed.append(side)
                session.add(Message(
                    battle_id=battle.id, side=side, turn=turn, role="assistant", content=text,
                    complete=error is None, error=error,
                    first_token_ms=None if result.first_token is None else 1000 * (result.first_token - result.started),
                    duration_ms=1000 * ((result.finished or time.monotonic()) - result.started)))
                model = battle.model_a if side == "a" else battle.model_b
                leak = identity_leak(text, model)
                if leak and not battle.flagged:
                    battle.flagged = True
                    battle.flag_reason = f"side {side} named {leak!r}"
            if failed:
                battle.state = "void"
                battle.void_reason = "; ".join(f"{s}: {self.results[s].error or 'empty answer'}" for s in failed)
            else:
                battle.state = "ready"
            session.commit()
            return battle.state


def answer_sources(app: Flask, session: Session, battle: Battle) -> dict:
    """For each side, a zero-argument callable returning an iterator of text deltas for the current turn."""
    from arena import providers

    config = app.config
    sources = {}
    for side, model in (("a", battle.model_a), ("b", battle.model_b)):
        if model.kind == "recorded":
            answer = session.scalars(select(RecordedAnswer).where(RecordedAnswer.model_id == model.id,
                                                                  RecordedAnswer.prompt_id == battle.prompt_id)).first()
            if answer is None:
                raise ApiError(409, "battle_void", NEUTRAL_FAILURE)
            sources[side] = (lambda a=answer: providers.replay_recorded(
                a.text, a.duration_ms, speed=config["REPLAY_SPEED"], max_seconds=config["REPLAY_MAX_SECONDS"]))
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


def _call_endpoint(model: Model, conversation: list, api_key: str | None, config):
    """Stream one endpoint model's answer. A lab's endpoint is checked again here, not only at registration:
    its host may have been pointed at a forbidden address since (operators' own models are trusted)."""
    from arena import providers
    from arena.lab_actions import check_endpoint_address

    if model.lab_id is not None:
        check_endpoint_address(model.base_url, allow_private=config["ALLOW_PRIVATE_ENDPOINTS"])
    return providers.stream_chat(
        model.base_url, model.endpoint_model, conversation, api_key=api_key,
        params=model.sampling_params or None, connect_timeout=config["PROVIDER_CONNECT_TIMEOUT"],
        first_token_timeout=config["PROVIDER_FIRST_TOKEN_TIMEOUT"], total_timeout=config["PROVIDER_TOTAL_TIMEOUT"])


def sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def start_stream(app: Flask, session: Session, battle: Battle):
    """Claim the battle for streaming (exactly one stream per turn) and return the SSE event iterator."""
    if battle.state in ("ready", "voted", "void"):
        return _replay_stored(battle)
    claimed = session.execute(update(Battle).where(Battle.id == battle.id, Battle.state == "created")
                              .values(state="streaming").execution_options(synchronize_session=False))
    session.commit()
    if claimed.rowcount != 1:
        raise ApiError(409, "already_streaming", "This battle's answers are already being streamed.")
    session.refresh(battle)
    try:
        sources = answer_sources(app, session, battle)
    except ApiError:
        session.execute(update(Battle).where(Battle.id == battle.id).values(state="void",
                                                                             void_reason="no recorded answer"))
        session.commit()
        raise
    run = BattleRun(app, battle.id)
    run.start(sources)
    return _forward(run)


def _forward(run: BattleRun):
    yield ": stream open\n\n"
    while True:
        try:
            kind, side, payload = run.events.get(timeout=15)
        except queue.Empty:
            yield ": keep-alive\n\n"  # proxies close silent connections
            continue
        if kind == "delta":
            yield sse("delta", {"side": side, "text": payload})
        elif kind == "done":
            yield sse("done", {"side": side})
        elif kind == "error":
            yield sse("error", {"side": side, "message": NEUTRAL_FAILURE})
        else:
            yield sse("end", {"state": payload})
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
