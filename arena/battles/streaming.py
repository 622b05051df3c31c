"""Streaming a battle's two answers: both sides at once, as Server-Sent Events, stored whether or not anyone
listens, and replayed from the database on a reload."""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

from flask import Flask
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from arena import db, metrics
from arena.answer_style import style_counts
from arena.battles.lifecycle import SIDES
from arena.catalog.identity import Identity, identity_leak
from arena.egress import providers
from arena.egress.addresses import check_endpoint_address, endpoint_client
from arena.egress.secrets import decrypt_secret
from arena.errors import ArenaError, Conflict, database_unavailable, one_line
from arena.models import Battle, Message, Model, Prompt, RecordedAnswer, Vote, utcnow
from arena.settings import Settings, settings_of

log = logging.getLogger(__name__)

# Waits between tries to store a finished battle's answers while the database is unreachable (3.5 s in all).
STORE_RETRY_DELAYS_S = (0.5, 1.0, 2.0)
NEUTRAL_FAILURE = "This answer could not be completed, so this battle cannot be voted on. Please start a new one."
# The busiest requests (creating a battle, streaming it, voting) run Core statements on the tables the models
# map: the ORM's per-statement work (identity map, unit of work, loading whole rows) was more than half of a
# vote's server CPU (bench/service.py). The typed models stay the one definition of the schema.
_battles, _messages, _votes = Battle.__table__, Message.__table__, Vote.__table__
_models, _answers, _prompts = Model.__table__, RecordedAnswer.__table__, Prompt.__table__
_INSERT_MESSAGES = insert(_messages)


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

    def __init__(
        self,
        app: Flask,
        battle_id: str,
        *,
        turn: int,
        identities: dict[str, Identity],
        flagged: bool,
        kinds: dict[str, str] | None = None,
    ):
        self.app, self.battle_id = app, battle_id
        self.kinds = kinds or {}  # each side's model kind ("endpoint", "recorded"): its metrics' source label
        self.turn, self.identities, self.flagged = turn, identities, flagged
        self.events: queue.Queue = queue.Queue()
        self.results = {side: _SideResult() for side in SIDES}
        self._lock = threading.Lock()
        self._remaining = len(SIDES)

    def start(self, sources: dict) -> None:
        for side in SIDES:
            threading.Thread(
                target=self._run_side,
                args=(side, sources[side]),
                daemon=True,
                name=f"battle-{self.battle_id[:6]}-{side}",
            ).start()

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
        self._count(side, result)
        with self._lock:
            self._remaining -= 1
            last = self._remaining == 0
        state = None
        if last:
            state = self._store_answers()
            metrics.BATTLES.labels(state).inc()
        self.events.put(("error" if result.error else "done", side, ""))
        if last:
            self.events.put(("end", None, state))

    def _count(self, side: str, result: _SideResult) -> None:
        """The side's answer time, time to first text and failure, per model (arena.metrics)."""
        identity = self.identities.get(side)
        if identity is None:
            return
        labels = (identity.name, self.kinds.get(side, "endpoint"))
        metrics.ANSWER_SECONDS.labels(*labels).observe(result.finished - result.started)
        if result.first_token is not None:
            metrics.FIRST_TOKEN_SECONDS.labels(*labels).observe(result.first_token - result.started)
        if result.error or result.first_token is None:
            metrics.ANSWER_FAILURES.labels(*labels).inc()

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
                log.warning(
                    "battle %s: database unavailable while storing the answers (%s); retrying in %.1f s",
                    self.battle_id,
                    one_line(error),
                    delay,
                )
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
            rows.append(
                dict(
                    battle_id=self.battle_id,
                    side=side,
                    turn=self.turn,
                    role="assistant",
                    content=text,
                    complete=error is None,
                    error=error,
                    first_token_ms=None if result.first_token is None else 1000 * (result.first_token - result.started),
                    duration_ms=1000 * ((result.finished or time.monotonic()) - result.started),
                    **style_counts(text),
                )
            )  # the style-controlled leaderboard's covariates, counted once here
            leak = identity_leak(text, self.identities[side])
            if leak and not self.flagged and not flag:
                flag = {"flagged": True, "flag_reason": f"side {side} named {leak!r}"}
        if failed:
            change = {
                "state": "void",
                "void_reason": "; ".join(f"{s}: {self.results[s].error or 'empty answer'}" for s in failed),
            }
        else:
            change = {"state": "ready"}
        this_battle = _battles.c.id == self.battle_id
        with db.new_session(self.app) as session:
            session.execute(_INSERT_MESSAGES, rows)
            moved = session.execute(
                update(_battles).where(this_battle, _battles.c.state == "streaming").values(**change, **flag)
            )
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
    settings = settings_of(app)
    models = {"a": battle.model_a, "b": battle.model_b}
    recorded_ids = [model.id for model in models.values() if model.kind == "recorded"]
    recorded = {}
    if recorded_ids:  # both sides' recordings in one query
        recorded = {
            model_id: (text, duration_ms)
            for model_id, text, duration_ms in session.execute(
                select(_answers.c.model_id, _answers.c.text, _answers.c.duration_ms).where(
                    _answers.c.prompt_id == battle.prompt_id, _answers.c.model_id.in_(recorded_ids)
                )
            )
        }
    sources = {}
    for side, model in models.items():
        if model.kind == "recorded":
            if model.id not in recorded:
                raise Conflict("battle_void", NEUTRAL_FAILURE)
            text, duration_ms = recorded[model.id]
            sources[side] = lambda t=text, d=duration_ms: providers.replay_recorded(
                t, d, speed=settings.replay_speed, max_seconds=settings.replay_max_seconds
            )
        else:
            conversation = []
            if model.system_prompt:
                conversation.append({"role": "system", "content": model.system_prompt})
            conversation += [{"role": m.role, "content": m.content} for m in battle.messages if m.side == side]
            api_key = None
            if model.endpoint_key_encrypted:
                api_key = decrypt_secret(settings.secret_key, model.endpoint_key_encrypted)
            sources[side] = lambda m=model, c=conversation, k=api_key: _call_endpoint(m, c, k, settings)
    return sources


def _current_turn(battle: Battle) -> int:
    """The turn being answered. Recorded answers take no follow-up, so a battle with a recorded side is on its
    first turn, and its messages need not be read for this."""
    if "recorded" in (battle.model_a.kind, battle.model_b.kind):
        return 0
    return max(m.turn for m in battle.messages)


def _call_endpoint(model: Model, conversation: list, api_key: str | None, settings: Settings):
    """Stream one endpoint model's answer. A lab's endpoint is checked again here, not only at registration:
    its host may have been pointed at a forbidden address since (operators' own models are trusted)."""
    client = None
    if model.lab_id is not None:
        check_endpoint_address(model.base_url, allow_private=settings.allow_private_endpoints)
        client = endpoint_client(allow_private=settings.allow_private_endpoints)  # vets what it dials too
    return providers.stream_chat(
        model.base_url,
        model.endpoint_model,
        conversation,
        api_key=api_key,
        client=client,
        params=model.sampling_params or None,
        connect_timeout=settings.provider_connect_timeout,
        first_token_timeout=settings.provider_first_token_timeout,
        total_timeout=settings.provider_total_timeout,
    )


def sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def start_stream(app: Flask, session: Session, battle: Battle):
    """Claim the battle for streaming (exactly one stream per turn) and return the SSE event iterator."""
    if battle.state == "streaming":
        _void_if_interrupted(settings_of(app), session, battle)
    if battle.state in ("ready", "voted", "void"):
        return _replay_stored(battle)
    this_battle = _battles.c.id == battle.id
    claimed = session.execute(
        update(_battles)
        .where(this_battle, _battles.c.state == "created")
        .values(state="streaming", stream_started_at=utcnow())
    )
    session.commit()
    if claimed.rowcount != 1:
        raise Conflict("already_streaming", "This battle's answers are already being streamed.")
    try:
        sources = answer_sources(app, session, battle)
    except ArenaError:
        session.execute(update(_battles).where(this_battle).values(state="void", void_reason="no recorded answer"))
        session.commit()
        metrics.BATTLES.labels("void").inc()
        raise
    run = BattleRun(
        app,
        battle.id,
        turn=_current_turn(battle),
        flagged=battle.flagged,
        identities={"a": Identity.of(battle.model_a), "b": Identity.of(battle.model_b)},
        kinds={"a": battle.model_a.kind, "b": battle.model_b.kind},
    )
    run.start(sources)
    return _forward(run)


def stream_deadline_s(settings: Settings) -> float:
    """How long after its start a stream has surely ended: the slowest provider call or recorded replay, the
    retries of storing its answers, and a minute's margin for a slow database."""
    slowest = max(settings.provider_connect_timeout + settings.provider_total_timeout, settings.replay_max_seconds)
    return slowest + sum(STORE_RETRY_DELAYS_S) + 60


def _void_if_interrupted(settings: Settings, session: Session, battle: Battle) -> None:
    """Void a battle still streaming past the deadline: its stream was lost (a killed worker, answers that could
    not be stored) and nothing else would ever end it, so a reload would answer 409 already_streaming for ever.
    The write is conditional, so a stream that does end meanwhile keeps its result."""
    started = func.coalesce(_battles.c.stream_started_at, _battles.c.created_at)  # battles from before 0006
    cutoff = utcnow() - timedelta(seconds=stream_deadline_s(settings))
    voided = session.execute(
        update(_battles)
        .where(_battles.c.id == battle.id, _battles.c.state == "streaming", started < cutoff)
        .values(state="void", void_reason="stream interrupted: no answers were stored before its deadline")
    )
    session.commit()
    if voided.rowcount == 1:
        metrics.BATTLES.labels("void").inc()
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
