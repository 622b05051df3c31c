"""The labs' JSON API under /api/v1 (Authorization: Bearer <key>), and its OpenAPI document. Views stay thin:
parse with the pydantic models of arena.web.openapi, call one function of arena.catalog, answer with a pydantic
model.

Every action a lab is refused (after its key was accepted) is recorded in the audit log as `<action>_failed`,
with what it asked for: operators see failed registrations, probes of other labs' models, unsafe endpoint
addresses.
"""

from __future__ import annotations

import functools
import logging

from flask import Blueprint, current_app, g, jsonify, request
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from arena import db
from arena.catalog import answers, labs, registry, status
from arena.catalog.audit import Actor, loggable, record_failure
from arena.errors import ArenaError, BadRequest, error_body, http_error_code, http_status
from arena.leaderboard import reading, voters
from arena.settings import current
from arena.web import openapi
from arena.web.openapi import ErrorBody

log = logging.getLogger(__name__)

bp = Blueprint("lab_api", __name__, url_prefix="/api/v1")

_LAB_ERRORS = {400: ErrorBody, 401: ErrorBody}
_UNAUTHORIZED = ("unauthorized", "A valid API key is required: send the header 'Authorization: Bearer <key>'.")


def _unauthorized():
    # One answer for a missing, malformed, revoked or wrong key: nothing tells a revoked key from a made-up one.
    return jsonify(error_body(*_UNAUTHORIZED)), 401, {"WWW-Authenticate": 'Bearer realm="arena"'}


def requires_key(view):
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        scheme, _, key = request.headers.get("Authorization", "").strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return _unauthorized()
        lab = labs.authenticate(db.session(), key)
        if lab is None:
            return _unauthorized()
        g.lab, g.key_prefix = lab, key[: labs.SHOWN_PREFIX_CHARS]
        g.actor = Actor.of_lab(lab, g.key_prefix)
        return view(*args, **kwargs)

    wrapper.needs_key = True  # the OpenAPI document's security for this route (arena.web.openapi)
    return wrapper


def records_failures(action: str):
    """Record the view's refusal (an ArenaError, or an HTTP error such as 413) in the audit log, then let it go
    on to its error handler. What the view had begun is rolled back first."""

    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            try:
                return view(*args, **kwargs)
            except (ArenaError, HTTPException) as error:
                if isinstance(error, ArenaError):
                    status, code, message = http_status(error), error.code, error.message
                else:
                    status, code = error.code or 400, http_error_code(error)
                    message = error.description or error.name or ""
                session = db.session()
                try:
                    session.rollback()
                    record_failure(
                        session,
                        g.actor,
                        action,
                        model_id=kwargs.get("model_id"),
                        status=status,
                        code=code,
                        message=message,
                        request=g.get("attempt"),
                    )
                except SQLAlchemyError:  # the refusal still goes to the client; the log says what was lost
                    session.rollback()
                    log.exception("could not record a failed %s (key %s…)", action, g.key_prefix)
                raise

        return wrapper

    return decorate


def _parse(schema: type[BaseModel]):
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # nested deeper than the JSON decoder goes: malformed input, not our failure
        body = None
    g.attempt = loggable(body)
    return openapi.parse(schema, body)


def _status(session, model) -> openapi.ModelOut:
    """The model's status as a lab reads it, with its line on the newest published leaderboard."""
    return openapi.ModelOut.model_validate(
        status.model_status(
            session, model, newest=reading.newest_document(session), excluded_voters=voters.excluded_voters(session)
        )
    )


def _model_out(model, code: int = 200):
    return jsonify(_status(db.session(), model).model_dump(mode="json")), code


@bp.get("/openapi.json")
@openapi.documented("This document", "meta", {200: None})
def openapi_document():
    app = current_app._get_current_object()
    if "arena.openapi" not in app.extensions:  # the routes are fixed once the app serves: built once
        app.extensions["arena.openapi"] = openapi.document(app)
    return app.extensions["arena.openapi"]


@bp.get("/models")
@openapi.documented("List your lab's models with their status", "labs", {200: openapi.ModelList, 401: ErrorBody})
@requires_key
def list_models():
    session = db.session()
    models = [_status(session, m) for m in registry.list_models(session, g.lab)]
    return openapi.ModelList(models=models).model_dump(mode="json")


@bp.post("/models")
@openapi.documented(
    "Register a model",
    "labs",
    {201: openapi.ModelOut, **_LAB_ERRORS, 409: ErrorBody, 413: ErrorBody, 422: ErrorBody},
    body=openapi.ModelCreate,
    description="An endpoint model is checked once, now, with a short real request; a failed check "
    "answers 422 with what failed and registers nothing.",
)
@requires_key
@records_failures("model.create")
def create_model():
    body = _parse(openapi.ModelCreate)
    session = db.session()
    common = {
        "lab": g.lab,
        "name": body.name,
        "organization": body.organization,
        "system_prompt": body.system_prompt,
        "aliases": body.aliases,
        "families": body.families,
    }
    if body.kind == "recorded":
        if body.endpoint is not None or body.sampling_params is not None:
            raise BadRequest("invalid_request", "A recorded model takes no endpoint or sampling_params.")
        model = registry.register_recorded_model(session, g.actor, **common)
    else:
        if body.endpoint is None:
            raise BadRequest(
                "invalid_request", 'Send "endpoint": {"base_url", "model", "api_key"?}, or "kind": "recorded".'
            )
        model = registry.register_endpoint_model(
            session,
            g.actor,
            **common,
            settings=registry.EndpointSettings.from_settings(current()),
            base_url=body.endpoint.base_url,
            endpoint_model=body.endpoint.model,
            api_key=body.endpoint.api_key or None,
            sampling_params=body.sampling_params.model_dump(exclude_none=True) if body.sampling_params else {},
        )
    return _model_out(model, 201)


@bp.get("/models/<int:model_id>")
@openapi.documented(
    "A model's status",
    "labs",
    {200: openapi.ModelOut, 401: ErrorBody, 404: ErrorBody},
    path_params={"model_id": openapi.MODEL_ID},
)
@requires_key
def show_model(model_id: int):
    return _model_out(registry.own_model(db.session(), g.lab, model_id))


@bp.patch("/models/<int:model_id>")
@openapi.documented(
    "Pause, resume, retire or reconfigure a model",
    "labs",
    {200: openapi.ModelOut, **_LAB_ERRORS, 404: ErrorBody, 409: ErrorBody, 413: ErrorBody, 422: ErrorBody},
    body=openapi.ModelPatch,
    path_params={"model_id": openapi.MODEL_ID},
    description="A new endpoint (base_url, model or api_key) is checked first with one short real "
    "request, as at registration; a failed check answers 422 and changes nothing. A "
    "change of what the model is (before its first counted vote) voids its battles "
    "still waiting for a vote.",
)
@requires_key
@records_failures("model.update")
def update_model(model_id: int):
    body = _parse(openapi.ModelPatch)
    changes = body.model_dump(exclude_unset=True)
    if "sampling_params" in changes:
        changes["sampling_params"] = body.sampling_params.model_dump(exclude_none=True) if body.sampling_params else {}
    if not changes:
        raise BadRequest(
            "invalid_request",
            "Send at least one of: status, endpoint, system_prompt, sampling_params, aliases, families.",
        )
    if "endpoint" in changes and not changes["endpoint"]:
        raise BadRequest("invalid_request", "Send at least one of endpoint.base_url, .model, .api_key.")
    session = db.session()
    model = registry.own_model(session, g.lab, model_id)
    return _model_out(
        registry.update_model(
            session, g.actor, g.lab, model, changes=changes, settings=registry.EndpointSettings.from_settings(current())
        )
    )


@bp.delete("/models/<int:model_id>")
@openapi.documented(
    "Delete a model that has no counted vote",
    "labs",
    {204: None, 401: ErrorBody, 404: ErrorBody, 409: ErrorBody},
    path_params={"model_id": openapi.MODEL_ID},
    description="Its uncounted battles (void, flagged, never voted) go with it. Once a vote has "
    "counted this answers 409: the model can only be retired.",
)
@requires_key
@records_failures("model.delete")
def delete_model(model_id: int):
    session = db.session()
    model = registry.own_model(session, g.lab, model_id)
    registry.delete_model(session, g.actor, model)
    return "", 204


@bp.post("/models/<int:model_id>/answers")
@openapi.documented(
    "Upload a recorded model's answers (JSON Lines)",
    "labs",
    {
        201: openapi.AnswersImported,
        **_LAB_ERRORS,
        404: ErrorBody,
        409: ErrorBody,
        413: ErrorBody,
        422: openapi.AnswersRejected,
    },
    body=openapi.JSONL,
    path_params={"model_id": openapi.MODEL_ID},
    description='One JSON object a line: {"prompt_id": N, "answer": "...", "duration_ms": 1234} '
    "(duration_ms optional). All lines are stored or none: a bad line answers 422 with "
    'error.details.lines = [{"line", "error"}, ...].',
)
@requires_key
@records_failures("answers.import")
def upload_answers(model_id: int):
    g.attempt = {"content_length": request.content_length}
    session = db.session()
    model = registry.own_model(session, g.lab, model_id)
    data = request.get_data(cache=False)  # over MAX_CONTENT_LENGTH: 413 before anything is read
    imported = answers.import_answers(session, g.actor, model, data)
    return jsonify(openapi.AnswersImported(model_id=model_id, imported=imported).model_dump(mode="json")), 201


@bp.post("/keys/rotate")
@openapi.documented(
    "Replace your API key (the old one stops working at once)", "labs", {200: openapi.KeyRotated, 401: ErrorBody}
)
@requires_key
def rotate_key():
    key, revoked = labs.rotate_key(db.session(), g.actor, g.lab)
    rotated = openapi.KeyRotated(api_key=key, prefix=key[: labs.SHOWN_PREFIX_CHARS], revoked=revoked)
    return rotated.model_dump(mode="json")
