"""The public JSON API under /api/v1: prompts, battles, their streams and votes. Views stay thin."""

from __future__ import annotations

import secrets

from flask import Blueprint, Response, current_app, jsonify, request
from flask import session as cookie
from sqlalchemy import select

from arena import db
from arena.battles import challenge, lifecycle
from arena.battles.streaming import start_stream
from arena.catalog.demo import LLMFAO_ATTRIBUTION
from arena.errors import TooLarge
from arena.leaderboard import sampling
from arena.models import Prompt
from arena.settings import current
from arena.web import openapi, ratelimit
from arena.web.openapi import BATTLE_ID, ErrorBody

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def _voter() -> str:
    """The anonymous voter of this browser: a random id in the signed session cookie."""
    if "voter" not in cookie:
        cookie["voter"] = secrets.token_urlsafe(16)
        cookie.permanent = True
    return cookie["voter"]


def _address() -> str | None:
    return lifecycle.address_hash(current().secret_key, request.remote_addr)


def _body(schema):
    """The request body, checked by the model the OpenAPI document shows for it (arena.web.openapi)."""
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # nested deeper than the JSON decoder goes: malformed input, not our failure
        body = None
    return openapi.parse(schema, body)


def _check_length(text: str) -> None:
    if len(text) > current().max_prompt_chars:
        raise TooLarge("prompt_too_long", f"A prompt may have at most {current().max_prompt_chars} characters.")


@bp.get("/prompts")
@openapi.documented("The prompt set", "voters", {200: openapi.PromptList})
def list_prompts():
    prompts = db.session().scalars(select(Prompt).order_by(Prompt.id)).all()
    body = {"prompts": [{"id": p.id, "text": p.text, "category": p.category} for p in prompts]}
    if any(p.source == "llmfao" for p in prompts):
        body["attribution"] = LLMFAO_ATTRIBUTION
    return body


@bp.get("/sampling")
@openapi.documented(
    "The sampling policy: its rule, settings, each model's weight and share", "voters", {200: openapi.SamplingOut}
)
def sampling_policy():
    """The published sampling rule: the policy, its settings, and each active model's weight and share."""
    return sampling.published(current_app._get_current_object(), db.session())


@bp.post("/battles")
@openapi.documented(
    "Start a battle",
    "voters",
    {201: openapi.BattleCreated, 400: ErrorBody, 404: ErrorBody, 413: ErrorBody, 429: ErrorBody, 503: ErrorBody},
    body=openapi.BattleCreate,
)
def create_battle():
    body = _body(openapi.BattleCreate)
    ratelimit.check("battles", voter=_voter(), address=request.remote_addr)
    prompt, prompt_id = body.prompt, body.prompt_id
    if prompt is not None:
        _check_length(prompt)
    battle = lifecycle.create_battle(
        db.session(), prompt_text=prompt, prompt_id=prompt_id, voter=_voter(), address=_address()
    )
    response = {
        "id": battle.id,
        "prompt": battle.prompt_text,
        "state": battle.state,
        "stream": f"/api/v1/battles/{battle.id}/stream",
    }
    if battle.attribution:
        response["attribution"] = battle.attribution
    vote_challenge = challenge.issue(current(), battle.id)
    if vote_challenge is not None:
        response["challenge"] = vote_challenge
    return jsonify(response), 201


@bp.get("/battles/<battle_id>")
@openapi.documented(
    "A battle (yours)", "voters", {200: openapi.BattleOut, 404: ErrorBody}, path_params={"battle_id": BATTLE_ID}
)
def show_battle(battle_id: str):
    battle = lifecycle.own_battle(db.session(), battle_id, cookie.get("voter"))
    turns = {}
    for message in battle.messages:
        turns.setdefault(message.turn, {"prompt": None, "a": None, "b": None})
        if message.role == "user":
            turns[message.turn]["prompt"] = message.content
        else:
            turns[message.turn][message.side] = message.content if message.complete else None
    body = {
        "id": battle.id,
        "state": battle.state,
        "turns": [turns[t] for t in sorted(turns)],
        # whether a follow-up turn is possible (both answer live): says nothing about which models answer
        "follow_up": battle.model_a.kind == "endpoint" and battle.model_b.kind == "endpoint",
    }
    if battle.state == "voted":
        body["winner"] = battle.vote.winner
        body["models"] = lifecycle.reveal(battle)
    elif battle.state != "void" and (vote_challenge := challenge.issue(current(), battle.id)):
        body["challenge"] = vote_challenge  # a reloaded page solves it again
    return body


@bp.get("/battles/<battle_id>/stream")
@openapi.documented(
    "The answers, as Server-Sent Events",
    "voters",
    {200: openapi.SSE, 404: ErrorBody, 409: ErrorBody},
    path_params={"battle_id": BATTLE_ID},
)
def stream_battle(battle_id: str):
    session = db.session()
    battle = lifecycle.own_battle(session, battle_id, cookie.get("voter"))
    events = start_stream(current_app._get_current_object(), session, battle)
    return Response(
        events, mimetype="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )


@bp.post("/battles/<battle_id>/turns")
@openapi.documented(
    "A follow-up prompt",
    "voters",
    {201: openapi.TurnCreated, 400: ErrorBody, 404: ErrorBody, 409: ErrorBody, 413: ErrorBody, 429: ErrorBody},
    body=openapi.TurnCreate,
    path_params={"battle_id": BATTLE_ID},
)
def add_turn(battle_id: str):
    text = _body(openapi.TurnCreate).prompt
    ratelimit.check("battles", voter=cookie.get("voter"), address=request.remote_addr)  # calls both models again
    _check_length(text)
    session = db.session()
    battle = lifecycle.own_battle(session, battle_id, cookie.get("voter"))
    turn = lifecycle.add_turn(session, battle, text)
    return jsonify(
        {"id": battle.id, "turn": turn, "state": "created", "stream": f"/api/v1/battles/{battle.id}/stream"}
    ), 201


@bp.post("/battles/<battle_id>/vote")
@openapi.documented(
    "Vote (once); reveals both models",
    "voters",
    {200: openapi.VoteOut, 400: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody, 429: ErrorBody},
    body=openapi.VoteIn,
    path_params={"battle_id": BATTLE_ID},
)
def vote(battle_id: str):
    body = _body(openapi.VoteIn)
    ratelimit.check("votes", voter=cookie.get("voter"), address=request.remote_addr)
    winner = body.winner
    challenge.check(current(), battle_id, body.proof)
    models = lifecycle.vote(db.session(), battle_id, winner, voter=cookie.get("voter"), address=_address())
    return {"battle_id": battle_id, "winner": winner, "models": models}
