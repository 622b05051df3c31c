"""Models in the arena: registering one, changing it, pausing, retiring or deleting it; one path for the labs'
API and the operator's commands, so both apply exactly the same checks (an `Actor` says who acts).

Every action writes its AuditEvent in the same transaction as the change itself: either both are stored or
neither.

Endpoint checks: an EndpointCheck row is written when, and only when, an endpoint is set (at registration and at
each change of address, model name or key), after its real check passed. The newest one therefore marks when the
current endpoint began, and the health a lab reads counts calls from then on.
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple
from urllib.parse import urlsplit

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from arena.catalog.audit import MAX_ID, Actor, record_action
from arena.catalog.identity import clean_labels, merge_labels
from arena.catalog.labs import clean_name
from arena.egress import providers
from arena.egress.addresses import check_endpoint_address, endpoint_client, validate_base_url
from arena.egress.secrets import SecretDecryptionError, decrypt_secret, encrypt_secret
from arena.errors import ArenaError, BadRequest, Conflict, NotFound, Rejected
from arena.models import Battle, EndpointCheck, Lab, Message, Model, RecordedAnswer, Vote, utcnow
from arena.settings import Settings


class EndpointSettings(NamedTuple):
    """The operator's settings that registering or changing an endpoint needs."""

    secret_key: str  # encrypts the endpoints' keys (arena.egress.secrets)
    allow_private: bool  # ARENA_ALLOW_PRIVATE_ENDPOINTS
    check_timeout: float  # seconds for the one real request that checks an endpoint

    @classmethod
    def from_settings(cls, settings: Settings) -> "EndpointSettings":
        return cls(
            secret_key=settings.secret_key,
            allow_private=settings.allow_private_endpoints,
            check_timeout=settings.endpoint_check_timeout,
        )


def model_by_name(session: Session, name: str) -> Model:
    model = session.scalars(select(Model).where(Model.name == name)).first()
    if model is None:
        raise NotFound("model_not_found", f"there is no model named {name!r}")
    return model


def list_models(session: Session, lab: Lab | None = None) -> list[Model]:
    statement = select(Model).order_by(Model.name)
    if lab is not None:
        statement = statement.where(Model.lab_id == lab.id)
    return list(session.scalars(statement))


def own_model(session: Session, lab: Lab, model_id: int) -> Model:
    """The lab's model; another lab's answers exactly as one that does not exist."""
    model = None
    if 1 <= model_id <= MAX_ID:
        model = session.scalars(select(Model).where(Model.id == model_id, Model.lab_id == lab.id)).first()
    if model is None:
        raise NotFound("model_not_found", f"You have no model {model_id}.")
    return model


def _name_taken(name: str) -> Conflict:
    return Conflict("name_taken", f"A model named {name!r} already exists in the arena.")


def _check_name_free(session: Session, name: str) -> None:
    if session.scalars(select(Model.id).where(Model.name == name)).first() is not None:
        raise _name_taken(name)


def _commit_new_model(session: Session, name: str) -> None:
    try:
        session.commit()
    except IntegrityError:  # the same name registered at the same moment
        session.rollback()
        raise _name_taken(name) from None


def identity_labels(aliases, families) -> dict:
    """Aliases and families as sent, cleaned (arena.catalog.identity.clean_labels); BadRequest if malformed."""
    return {"aliases": clean_labels(aliases, "aliases"), "families": clean_labels(families, "families")}


def _labels_details(labels: dict) -> dict:
    return {field: values for field, values in labels.items() if values}


def _on_lab(lab: Lab | None) -> dict:
    """The audit details that name the lab a model belongs to, when an operator registers it for one."""
    return {"lab": lab.name} if lab is not None else {}


def register_recorded_model(
    session: Session,
    actor: Actor,
    *,
    lab: Lab | None,
    name: str,
    organization: str,
    system_prompt: str | None = None,
    aliases=None,
    families=None,
) -> Model:
    """A model whose answers are recorded (uploaded next through `arena.catalog.answers`)."""
    name, organization = clean_name(name, "model"), clean_name(organization, "organization")
    _check_name_free(session, name)
    labels = identity_labels(aliases, families)
    model = Model(
        lab=lab,
        name=name,
        organization=organization,
        kind="recorded",
        status="active",
        system_prompt=system_prompt or None,
        sampling_params={},
        **labels,
        created_at=utcnow(),
    )
    session.add(model)
    session.flush()
    record_action(
        session,
        actor,
        "model.create",
        lab_id=model.lab_id,
        model_id=model.id,
        details={
            "name": name,
            "organization": organization,
            "kind": "recorded",
            **_labels_details(labels),
            **(_on_lab(lab) if actor.lab_id is None else {}),
        },
    )
    _commit_new_model(session, name)
    return model


def register_endpoint_model(
    session: Session,
    actor: Actor,
    *,
    lab: Lab | None,
    settings: EndpointSettings,
    name: str,
    organization: str,
    base_url: str,
    endpoint_model: str,
    api_key: str | None,
    system_prompt: str | None = None,
    sampling_params: dict | None = None,
    aliases=None,
    families=None,
) -> Model:
    """Check the URL, its addresses and the endpoint itself (one short real request), then store the model
    with the check's result. The one registration path: a lab's API call and an operator's command alike.

    Nothing is stored when a check fails: BadRequest (a malformed URL), Rejected (a refused address, a failed
    check) says what failed.
    """
    name, organization = clean_name(name, "model"), clean_name(organization, "organization")
    base_url = validate_base_url(base_url)
    endpoint_model = (endpoint_model or "").strip()
    if not endpoint_model:
        raise BadRequest("invalid_request", "the endpoint's model identifier is empty")
    sampling_params = sampling_params or {}
    _check_name_free(session, name)
    labels = identity_labels(aliases, families)
    session.rollback()  # end the read transaction: the check may take seconds, hold nothing meanwhile
    duration_ms = check_new_endpoint(
        base_url, endpoint_model, api_key, settings, system_prompt=system_prompt, sampling_params=sampling_params
    )
    model = Model(
        lab=lab,
        name=name,
        organization=organization,
        kind="endpoint",
        status="active",
        base_url=base_url,
        endpoint_model=endpoint_model,
        system_prompt=system_prompt or None,
        endpoint_key_encrypted=encrypt_secret(settings.secret_key, api_key) if api_key else None,
        sampling_params=sampling_params,
        **labels,
        created_at=utcnow(),
    )
    session.add(model)
    session.flush()
    session.add(EndpointCheck(model_id=model.id, ok=True, duration_ms=duration_ms, created_at=utcnow()))
    record_action(
        session,
        actor,
        "model.create",
        lab_id=model.lab_id,
        model_id=model.id,
        details={
            "name": name,
            "organization": organization,
            "kind": "endpoint",
            "base_url": base_url,
            "model": endpoint_model,
            "api_key": "set" if api_key else "none",
            "checked_ms": round(duration_ms),
            **_labels_details(labels),
            **(_on_lab(lab) if actor.lab_id is None else {}),
        },
    )
    _commit_new_model(session, name)
    return model


def check_new_endpoint(
    base_url: str,
    endpoint_model: str,
    api_key: str | None,
    settings: EndpointSettings,
    *,
    system_prompt: str | None = None,
    sampling_params: dict | None = None,
) -> float:
    """Refuse a forbidden address, then make the one short real request (with the model's system prompt and
    sampling parameters, as battles send them); its duration in ms, or Rejected.

    Hold no transaction while calling this: the check may take `settings.check_timeout` seconds.
    """
    check_endpoint_address(base_url, allow_private=settings.allow_private)
    started = time.monotonic()
    try:
        providers.check_endpoint(
            base_url,
            endpoint_model,
            api_key=api_key,
            timeout=settings.check_timeout,
            system_prompt=system_prompt,
            params=sampling_params or None,
            client=endpoint_client(allow_private=settings.allow_private),
        )
    except providers.ProviderError as e:
        # An endpoint may echo the key it was sent; the message goes to the lab and to the audit log
        message = e.message.replace(api_key, "[the API key]") if api_key else e.message
        raise Rejected(
            "endpoint_check_failed",
            f"The endpoint check failed ({e.kind}): {message}",
            details={"kind": e.kind, **({"status": e.status} if e.status else {})},
        ) from None
    return 1000 * (time.monotonic() - started)


# Allowed status changes: paused and active go back and forth; retired is final (its battles stay).
_TRANSITIONS = {
    "pause": ({"active", "paused"}, "paused"),
    "resume": ({"active", "paused"}, "active"),
    "retire": ({"active", "paused", "retired"}, "retired"),
}
_ACTION_FOR_STATUS = {"paused": "pause", "active": "resume", "retired": "retire"}


def change_status(session: Session, actor: Actor, model: Model, action: str, *, details: dict | None = None) -> Model:
    """Pause, resume or retire a model, with its audit record. A retired model stays retired: its past battles
    keep it on record. `details`: what else the same change did (a lab's PATCH), recorded with it."""
    allowed_from, target = _TRANSITIONS[action]
    if model.status not in allowed_from:
        raise Conflict("model_retired", f"model {model.name!r} is {model.status}; a retired model cannot be {action}d")
    record_action(
        session,
        actor,
        f"model.{action}",
        lab_id=model.lab_id,
        model_id=model.id,
        details={"name": model.name, **(details or {}), "status": {"from": model.status, "to": target}},
    )
    model.status = target
    session.commit()
    return model


def set_sampling_weight(session: Session, actor: Actor, model: Model, weight: float) -> Model:
    """The published sampling weight: a pair is drawn with probability proportional to w_a * w_b; 0 = never."""
    weight = float(weight)
    if not math.isfinite(weight) or weight < 0:
        raise BadRequest("invalid_weight", f"the sampling weight must be a finite number >= 0, not {weight!r}")
    record_action(
        session,
        actor,
        "model.weight",
        lab_id=model.lab_id,
        model_id=model.id,
        details={"name": model.name, "sampling_weight": {"from": model.sampling_weight, "to": weight}},
    )
    model.sampling_weight = weight
    session.commit()
    return model


# What a model's votes rate, besides its answers: changing any of these makes it another model.
RATED_FIELDS = ("base_url", "endpoint_model", "system_prompt", "sampling_params")


def update_model(
    session: Session, actor: Actor, lab: Lab, model: Model, *, changes: dict, settings: EndpointSettings
) -> Model:
    """Apply a PATCH (status, system_prompt, sampling_params, endpoint: base_url, model, api_key), all of it
    or nothing, with one audit record.

    Honest results: the votes a model has were cast on answers of its endpoint (address and model name), its
    system prompt and its sampling parameters (RATED_FIELDS). Once a vote has counted these are fixed (409
    model_rated): another configuration is another model, to register anew, while this one is retired. The
    endpoint's key is not among them (it authorises, it does not answer) and can change at any time. A change
    before the first counted vote voids the model's battles still waiting for a vote, so that no answer of the
    old configuration is voted on under the new one (a battle voided while it streams stays void: the stream
    stores its answers, and its state only if the battle is still streaming).

    A new address, model name or key is checked with one real request before anything is stored, as at
    registration. The stored key is never sent to another origin (scheme, host, port): a base URL on a new
    origin needs the key again, or null for none (400 api_key_required); otherwise a stolen lab key could point
    the endpoint at its thief's server and collect the endpoint's key from the check.
    """
    endpoint = changes.get("endpoint") or {}
    status = changes.get("status")
    # Aliases and families are only ever added by a lab (arena.catalog.identity.set_identity_labels says why).
    labels = identity_labels(changes.get("aliases"), changes.get("families"))
    if model.kind == "recorded" and ("endpoint" in changes or "sampling_params" in changes):
        raise BadRequest("invalid_request", "A recorded model has no endpoint or sampling_params.")
    if model.status == "retired" and (set(changes) - {"status"} or status not in (None, "retired")):
        raise Conflict("model_retired", f"Model {model.id} is retired; retiring is final.")

    new: dict = {}  # RATED_FIELDS that really change -> their new value
    if "base_url" in endpoint:
        base_url = validate_base_url(endpoint["base_url"])
        if base_url != model.base_url:
            new["base_url"] = base_url
    if "model" in endpoint and endpoint["model"] != model.endpoint_model:
        new["endpoint_model"] = endpoint["model"]
    if "system_prompt" in changes and (changes["system_prompt"] or None) != model.system_prompt:
        new["system_prompt"] = changes["system_prompt"] or None
    if "sampling_params" in changes and changes["sampling_params"] != (model.sampling_params or {}):
        new["sampling_params"] = changes["sampling_params"]
    new_key = "api_key" in endpoint
    api_key = (endpoint.get("api_key") or None) if new_key else None
    if new and counted_vote_exists(session, model.id):
        raise _rated(model.id)
    if (
        "base_url" in new
        and not new_key
        and model.endpoint_key_encrypted is not None
        and _origin(new["base_url"]) != _origin(model.base_url)
    ):
        raise BadRequest(
            "api_key_required",
            "The stored endpoint key is never sent to another host: with a base_url on another "
            'scheme, host or port, send "api_key" again (null for none).',
        )

    details = _changed(model, new, new_key and ("changed" if api_key else "removed"))
    check_ms = None
    if model.kind == "endpoint" and (new_key or set(RATED_FIELDS) & new.keys()):
        if not new_key and model.endpoint_key_encrypted is not None:
            api_key = _stored_key(model, settings)
        model_id, base_url = model.id, new.get("base_url", model.base_url)
        endpoint_model = new.get("endpoint_model", model.endpoint_model)
        system_prompt = new.get("system_prompt", model.system_prompt)
        sampling_params = new.get("sampling_params", model.sampling_params)
        session.rollback()  # hold nothing during the real request
        check_ms = check_new_endpoint(
            base_url, endpoint_model, api_key, settings, system_prompt=system_prompt, sampling_params=sampling_params
        )
        model = own_model(session, lab, model_id)  # anew: it may have changed meanwhile
        if model.status == "retired":
            raise Conflict("model_retired", f"Model {model.id} is retired; retiring is final.")
        details["checked_ms"] = round(check_ms)
    if new:
        voided = _void_waiting_battles(session, model)
        if voided:
            details["voided_battles"] = voided
    for field, value in new.items():
        setattr(model, field, value)
    if new_key:
        model.endpoint_key_encrypted = encrypt_secret(settings.secret_key, api_key) if api_key else None
    if check_ms is not None:
        session.add(EndpointCheck(model_id=model.id, ok=True, duration_ms=check_ms, created_at=utcnow()))

    for field, wanted in labels.items():
        merged, added = merge_labels(getattr(model, field), wanted)
        if added:
            setattr(model, field, merged)
            details[field] = {"added": added}
    if status is not None and status != model.status:
        change_status(session, actor, model, _ACTION_FOR_STATUS[status], details=details)
        return model
    record_action(
        session, actor, "model.update", lab_id=model.lab_id, model_id=model.id, details=details or {"unchanged": True}
    )
    session.commit()
    return model


def _rated(model_id: int) -> ArenaError:
    return Conflict(
        "model_rated",
        f"Model {model_id} has counted votes: its endpoint, model name, system prompt and sampling "
        "parameters are what those votes rated, so they stay as they are. Register the new "
        'configuration as a new model and retire this one (PATCH {"status": "retired"}); the '
        "endpoint's api_key can still be changed.",
    )


def _origin(url: str | None) -> tuple:
    parts = urlsplit(url or "")
    return parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def _stored_key(model: Model, settings: EndpointSettings) -> str:
    try:
        return decrypt_secret(settings.secret_key, model.endpoint_key_encrypted)
    except SecretDecryptionError:
        raise Conflict(
            "endpoint_key_unreadable",
            "The stored endpoint key can no longer be read (the arena's secret key changed): "
            'send "api_key" again with this change.',
        ) from None


def _changed(model: Model, new: dict, key_change: str | bool) -> dict:
    """The audit record's account of a change: addresses and parameters from/to, prompts and keys by name only."""
    details: dict = {}
    for field, label in (("base_url", "base_url"), ("endpoint_model", "model"), ("sampling_params", "sampling_params")):
        if field in new:
            details[label] = {"from": getattr(model, field), "to": new[field]}
    if "system_prompt" in new:
        details["system_prompt"] = "changed" if new["system_prompt"] else "removed"
    if key_change:
        details["api_key"] = key_change
    return details


def _void_waiting_battles(session: Session, model: Model) -> int:
    """Void the model's battles that could still take a vote (created, streaming or ready), in the caller's
    transaction; refuse (and roll back) when a vote has counted meanwhile.

    The conditional UPDATE comes first: a vote racing with it either lands before (and is seen by the check
    that follows, which refuses) or finds its battle void.
    """
    waiting = and_(_involves(model.id), Battle.state.in_(("created", "streaming", "ready")))
    voided = session.execute(
        update(Battle)
        .where(waiting)
        .values(state="void", void_reason=f"model {model.id}'s configuration changed before the vote")
        .execution_options(synchronize_session=False)
    ).rowcount
    if counted_vote_exists(session, model.id):
        session.rollback()
        raise _rated(model.id)
    return voided


def _involves(model_id: int):
    return or_(Battle.model_a_id == model_id, Battle.model_b_id == model_id)


def counted_vote_exists(session: Session, model_id: int) -> bool:
    """A vote that counts: on a battle in the voted state that is not flagged (any source, imported included)."""
    statement = (
        select(Vote.id)
        .join(Battle, Vote.battle_id == Battle.id)
        .where(_involves(model_id), Battle.state == "voted", Battle.flagged.is_(False))
        .limit(1)
    )
    return session.scalars(statement).first() is not None


def delete_model(session: Session, actor: Actor, model: Model) -> None:
    """Delete a model that no counted vote has ranked, with its uncounted battles, answers and checks.

    Once a vote has counted its results are published: 409, it can only be retired.
    """
    if counted_vote_exists(session, model.id):
        raise Conflict(
            "model_has_counted_votes",
            f"Model {model.id} has counted votes: its results stay published. Retire it instead "
            '(PATCH with {"status": "retired"}).',
        )
    battle_ids = select(Battle.id).where(_involves(model.id)).scalar_subquery()
    counts = {}
    for table, condition in (
        (Vote, Vote.battle_id.in_(battle_ids)),
        (Message, Message.battle_id.in_(battle_ids)),
        (Battle, _involves(model.id)),
        (RecordedAnswer, RecordedAnswer.model_id == model.id),
        (EndpointCheck, EndpointCheck.model_id == model.id),
    ):
        counts[table.__tablename__] = session.execute(
            delete(table).where(condition).execution_options(synchronize_session=False)
        ).rowcount
    details = {
        "name": model.name,
        "kind": model.kind,
        "battles": counts["battles"],
        "uncounted_votes": counts["votes"],
        "recorded_answers": counts["recorded_answers"],
    }
    model_id = model.id
    session.delete(model)
    record_action(session, actor, "model.delete", lab_id=model.lab_id, model_id=model_id, details=details)
    try:
        session.commit()
    except IntegrityError:  # a vote or battle arrived meanwhile
        session.rollback()
        raise Conflict("model_busy", f"Model {model_id} changed while being deleted; try again.") from None
