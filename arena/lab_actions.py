"""What a lab does through its API, as plain functions taking a session.

Every action writes its AuditEvent in the same transaction as the change itself: either both are stored or
neither. Where arena.labs already has the function (status changes), the audit row is added to the session first
and that function's commit stores both. A refused action is recorded too, in a transaction of its own
(`record_failure`). Errors a client can act on are ApiError.

Endpoint checks: an EndpointCheck row is written when, and only when, an endpoint is set (at registration and at
each change of address, model name or key), after its real check passed. The newest one therefore marks when the
current endpoint began, and the health a lab reads counts calls from then on.
"""
from __future__ import annotations

import functools
import ipaddress
import json
import math
import socket
import time
from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout
from datetime import datetime, timezone
from typing import NamedTuple
from urllib.parse import urlsplit

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from arena import integrity, labs, providers, snapshots
from arena.answer_style import style_counts
from arena.crypto import SecretDecryptionError, decrypt_secret, encrypt_secret
from arena.errors import ApiError
from arena.models import (AuditEvent, Battle, EndpointCheck, Lab, Message, Model, Prompt, RecordedAnswer, Vote,
                          utcnow)

HEALTH_WINDOW = 100  # the error rate is over this many of the newest calls
RESOLVE_TIMEOUT = 5.0
MAX_REPORTED_LINES = 1000
MAX_ID = 2**31 - 1  # ids are 32-bit integers in PostgreSQL
# Cloud metadata services that are not link-local (169.254.169.254 and fd00:ec2::254 are refused as such anyway,
# listed for the message): Alibaba's 100.100.100.200 sits in shared address space, AWS's IPv6 one in fc00::/7.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in
                               ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "169.254.170.2"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class EndpointSettings(NamedTuple):
    """The operator's settings that registering or changing an endpoint needs."""
    secret_key: str  # encrypts the endpoints' keys (arena.crypto)
    allow_private: bool  # ARENA_ALLOW_PRIVATE_ENDPOINTS
    check_timeout: float  # seconds for the one real request that checks an endpoint

    @classmethod
    def from_config(cls, config) -> "EndpointSettings":
        return cls(secret_key=config["SECRET_KEY"], allow_private=bool(config.get("ALLOW_PRIVATE_ENDPOINTS")),
                   check_timeout=float(config["ENDPOINT_CHECK_TIMEOUT"]))


# ------------------------------------------------------------------------------------------------ audit

def audit(session: Session, lab: Lab, action: str, *, key_prefix: str | None = None, model_id: int | None = None,
          details: dict | None = None) -> AuditEvent:
    """Add the record of a lab action to the session; the action's own commit stores it."""
    return labs.record_action(session, action, actor=lab.name, lab_id=lab.id, key_prefix=key_prefix,
                              model_id=model_id, details=details)


def record_failure(session: Session, lab: Lab, action: str, *, key_prefix: str | None, model_id: int | None,
                   status: int, code: str, message: str, request: dict | None = None) -> AuditEvent:
    """Record a refused lab action (`<action>_failed`) in a transaction of its own; the caller has rolled back
    whatever the action had begun. `request` is a short summary of what was asked, never a key."""
    details = {"status": status, "code": code, "message": loggable(message, 500)}
    if request:
        details["request"] = request
    if model_id is not None and not 1 <= model_id <= MAX_ID:  # no such id can exist; keep it as text
        details["model_id"], model_id = str(model_id)[:40], None
    event = audit(session, lab, f"{action}_failed", key_prefix=key_prefix, model_id=model_id, details=details)
    session.commit()
    return event


def loggable(value, max_chars: int = 200, depth: int = 0):
    """A short copy of JSON input that every database can store: strings cut at `max_chars`, without NUL or
    lone surrogates; no NaN; nesting and lists cut short; the value of any `api_key` replaced by set/none."""
    if isinstance(value, str):
        text = value.encode("utf-8", errors="replace").decode("utf-8").replace("\x00", "\\0")
        return text if len(text) <= max_chars else text[:max_chars] + "…"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        if depth >= 3:
            return "{…}"
        return {loggable(str(k), 50): ("set" if v else "none") if k == "api_key"
                else loggable(v, max_chars, depth + 1) for k, v in list(value.items())[:20]}
    if isinstance(value, list):
        return [loggable(v, max_chars, depth + 1) for v in value[:5]] + (["…"] if len(value) > 5 else [])
    return value if value is None or isinstance(value, (bool, int, float)) else loggable(repr(value), max_chars)


def audit_events(session: Session, *, lab: Lab | None = None, model_id: int | None = None,
                 limit: int = 50) -> list[AuditEvent]:
    """The newest events first."""
    statement = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if lab is not None:
        statement = statement.where(AuditEvent.lab_id == lab.id)
    if model_id is not None:
        statement = statement.where(AuditEvent.model_id == model_id)
    return list(session.scalars(statement))


# ------------------------------------------------------------------------------------------------ endpoint URLs

def resolve_host(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (bounded in time: a resolver can hang far longer than a request)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
        try:
            infos = future.result(timeout=RESOLVE_TIMEOUT)
        except FutureTimeout:
            raise ApiError(422, "endpoint_unsafe", f"resolving {host!r} took more than {RESOLVE_TIMEOUT:g} s") \
                from None
        except (socket.gaierror, UnicodeError, OSError) as e:
            raise ApiError(422, "endpoint_unreachable", f"cannot resolve {host!r}: {e}") from None
    return sorted({info[4][0] for info in infos})


def address_problem(address: str, *, allow_private: bool) -> str | None:
    """Why the arena must not call `address`, or None. Private and loopback only with `allow_private`."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
                                                     if ip in _NAT64 else None)
        if embedded is not None:
            return address_problem(str(embedded), allow_private=allow_private)
    if ip in METADATA_ADDRESSES:
        return f"{ip} is a cloud metadata address"
    if ip.is_link_local:
        return f"{ip} is a link-local address"
    if ip.is_multicast or ip.is_unspecified:
        return f"{ip} is not a unicast address"
    if ip.is_loopback or ip.is_private:
        return None if allow_private else (f"{ip} is a private or loopback address (the operator setting "
                                           "ARENA_ALLOW_PRIVATE_ENDPOINTS allows it)")
    if ip.is_reserved:
        return f"{ip} is a reserved address"
    if not ip.is_global and not allow_private:  # shared address space (100.64/10) and the like
        return f"{ip} is not a public address (the operator setting ARENA_ALLOW_PRIVATE_ENDPOINTS allows it)"
    return None


def endpoint_client(*, allow_private: bool):
    """The HTTP client for labs' endpoints: it connects only to addresses `address_problem` accepts, checked on
    the addresses it dials (`check_endpoint_address` before a call gives the clear message; this closes the
    window between that check and the connection)."""
    return providers.vetted_client(("labs", allow_private),
                                   functools.partial(address_problem, allow_private=allow_private))


def check_endpoint_address(base_url: str, *, allow_private: bool) -> None:
    """Refuse a base URL whose host is, or resolves to, any address the arena must not call."""
    parts = urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    for address in resolve_host(parts.hostname, port):
        problem = address_problem(address, allow_private=allow_private)
        if problem:
            raise ApiError(422, "endpoint_unsafe", f"the endpoint's host {parts.hostname!r} is refused: {problem}")


# ------------------------------------------------------------------------------------------------ models

def own_model(session: Session, lab: Lab, model_id: int) -> Model:
    """The lab's model; another lab's answers exactly as one that does not exist."""
    model = None
    if 1 <= model_id <= 2**31 - 1:
        model = session.scalars(select(Model).where(Model.id == model_id, Model.lab_id == lab.id)).first()
    if model is None:
        raise ApiError(404, "model_not_found", f"You have no model {model_id}.")
    return model


def _name_taken(session: Session, name: str) -> None:
    if session.scalars(select(Model.id).where(Model.name == name)).first() is not None:
        raise ApiError(409, "name_taken", f"A model named {name!r} already exists in the arena.")


def _commit_new_model(session: Session, name: str) -> None:
    try:
        session.commit()
    except IntegrityError:  # the same name registered at the same moment
        session.rollback()
        raise ApiError(409, "name_taken", f"A model named {name!r} already exists in the arena.") from None


def identity_labels(aliases, families) -> dict:
    """Aliases and families as sent by a lab, cleaned (arena.integrity.clean_labels); 400 if malformed."""
    try:
        return {"aliases": integrity.clean_labels(aliases, "aliases"),
                "families": integrity.clean_labels(families, "families")}
    except ValueError as e:
        raise ApiError(400, "invalid_request", str(e)) from None


def _labels_details(labels: dict) -> dict:
    return {field: values for field, values in labels.items() if values}


def register_recorded_model(session: Session, lab: Lab, *, key_prefix: str | None, name: str, organization: str,
                            system_prompt: str | None = None, aliases=None, families=None) -> Model:
    _name_taken(session, name)
    labels = identity_labels(aliases, families)
    model = Model(lab=lab, name=name, organization=organization, kind="recorded", status="active",
                  system_prompt=system_prompt, sampling_params={}, **labels, created_at=utcnow())
    session.add(model)
    session.flush()
    audit(session, lab, "model.create", key_prefix=key_prefix, model_id=model.id,
          details={"name": name, "organization": organization, "kind": "recorded", **_labels_details(labels)})
    _commit_new_model(session, name)
    return model


def register_endpoint_model(session: Session, lab: Lab, *, key_prefix: str | None, settings: EndpointSettings,
                            name: str, organization: str, base_url: str, endpoint_model: str, api_key: str | None,
                            system_prompt: str | None, sampling_params: dict, aliases=None, families=None) -> Model:
    """Check the URL and the endpoint (one short real request), then store the model with the check's result.

    Nothing is stored when the check fails: the ApiError (422) says what failed.
    """
    try:
        base_url = labs.validate_base_url(base_url)
    except ValueError as e:
        raise ApiError(400, "invalid_base_url", str(e)) from None
    _name_taken(session, name)
    labels = identity_labels(aliases, families)
    session.rollback()  # end the read transaction: the check may take seconds, hold nothing meanwhile
    duration_ms = check_new_endpoint(base_url, endpoint_model, api_key, settings, system_prompt=system_prompt,
                                     sampling_params=sampling_params)
    model = Model(lab=lab, name=name, organization=organization, kind="endpoint", status="active",
                  base_url=base_url, endpoint_model=endpoint_model, system_prompt=system_prompt,
                  endpoint_key_encrypted=encrypt_secret(settings.secret_key, api_key) if api_key else None,
                  sampling_params=sampling_params, **labels, created_at=utcnow())
    session.add(model)
    session.flush()
    session.add(EndpointCheck(model_id=model.id, ok=True, duration_ms=duration_ms, created_at=utcnow()))
    audit(session, lab, "model.create", key_prefix=key_prefix, model_id=model.id,
          details={"name": name, "organization": organization, "kind": "endpoint", "base_url": base_url,
                   "model": endpoint_model, "api_key": "set" if api_key else "none",
                   "checked_ms": round(duration_ms), **_labels_details(labels)})
    _commit_new_model(session, name)
    return model


def check_new_endpoint(base_url: str, endpoint_model: str, api_key: str | None, settings: EndpointSettings, *,
                       system_prompt: str | None = None, sampling_params: dict | None = None) -> float:
    """Refuse a forbidden address, then make the one short real request (with the model's system prompt and
    sampling parameters, as battles send them); its duration in ms, or ApiError 422.

    Hold no transaction while calling this: the check may take `settings.check_timeout` seconds.
    """
    check_endpoint_address(base_url, allow_private=settings.allow_private)
    started = time.monotonic()
    try:
        providers.check_endpoint(base_url, endpoint_model, api_key=api_key, timeout=settings.check_timeout,
                                 system_prompt=system_prompt, params=sampling_params or None,
                                 client=endpoint_client(allow_private=settings.allow_private))
    except providers.ProviderError as e:
        # An endpoint may echo the key it was sent; the message goes to the lab and to the audit log
        message = e.message.replace(api_key, "[the API key]") if api_key else e.message
        raise ApiError(422, "endpoint_check_failed", f"The endpoint check failed ({e.kind}): {message}",
                       details={"kind": e.kind, **({"status": e.status} if e.status else {})}) from None
    return 1000 * (time.monotonic() - started)


_ACTION_FOR_STATUS = {"paused": "pause", "active": "resume", "retired": "retire"}
# What a model's votes rate, besides its answers: changing any of these makes it another model.
RATED_FIELDS = ("base_url", "endpoint_model", "system_prompt", "sampling_params")


def update_model(session: Session, lab: Lab, model: Model, *, key_prefix: str | None, changes: dict,
                 settings: EndpointSettings) -> Model:
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
    # Aliases and families are only ever added by a lab (arena.integrity.set_identity_labels says why).
    labels = identity_labels(changes.get("aliases"), changes.get("families"))
    if model.kind == "recorded" and ("endpoint" in changes or "sampling_params" in changes):
        raise ApiError(400, "invalid_request", "A recorded model has no endpoint or sampling_params.")
    if model.status == "retired" and (set(changes) - {"status"} or status not in (None, "retired")):
        raise ApiError(409, "model_retired", f"Model {model.id} is retired; retiring is final.")

    new: dict = {}  # RATED_FIELDS that really change -> their new value
    if "base_url" in endpoint:
        try:
            base_url = labs.validate_base_url(endpoint["base_url"])
        except ValueError as e:
            raise ApiError(400, "invalid_base_url", str(e)) from None
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
    if ("base_url" in new and not new_key and model.endpoint_key_encrypted is not None
            and _origin(new["base_url"]) != _origin(model.base_url)):
        raise ApiError(400, "api_key_required",
                       "The stored endpoint key is never sent to another host: with a base_url on another "
                       'scheme, host or port, send "api_key" again (null for none).')

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
        check_ms = check_new_endpoint(base_url, endpoint_model, api_key, settings, system_prompt=system_prompt,
                                      sampling_params=sampling_params)
        model = own_model(session, lab, model_id)  # anew: it may have changed meanwhile
        if model.status == "retired":
            raise ApiError(409, "model_retired", f"Model {model.id} is retired; retiring is final.")
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
        merged, added = integrity.merge_labels(getattr(model, field), wanted)
        if added:
            setattr(model, field, merged)
            details[field] = {"added": added}
    if status is not None and status != model.status:
        details["status"] = {"from": model.status, "to": status}
        audit(session, lab, f"model.{_ACTION_FOR_STATUS[status]}", key_prefix=key_prefix, model_id=model.id,
              details=details)
        labs.change_status(session, model, _ACTION_FOR_STATUS[status])  # commits the audit record with it
        return model
    audit(session, lab, "model.update", key_prefix=key_prefix, model_id=model.id,
          details=details or {"unchanged": True})
    session.commit()
    return model


def _rated(model_id: int) -> ApiError:
    return ApiError(409, "model_rated",
                    f"Model {model_id} has counted votes: its endpoint, model name, system prompt and sampling "
                    "parameters are what those votes rated, so they stay as they are. Register the new "
                    'configuration as a new model and retire this one (PATCH {"status": "retired"}); the '
                    "endpoint's api_key can still be changed.")


def _origin(url: str | None) -> tuple:
    parts = urlsplit(url or "")
    return parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def _stored_key(model: Model, settings: EndpointSettings) -> str:
    try:
        return decrypt_secret(settings.secret_key, model.endpoint_key_encrypted)
    except SecretDecryptionError:
        raise ApiError(409, "endpoint_key_unreadable",
                       "The stored endpoint key can no longer be read (the arena's secret key changed): "
                       'send "api_key" again with this change.') from None


def _changed(model: Model, new: dict, key_change: str | bool) -> dict:
    """The audit record's account of a change: addresses and parameters from/to, prompts and keys by name only."""
    details: dict = {}
    for field, label in (("base_url", "base_url"), ("endpoint_model", "model"), ("sampling_params",
                                                                               "sampling_params")):
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
    voided = session.execute(update(Battle).where(waiting)
                             .values(state="void", void_reason=f"model {model.id}'s configuration changed before "
                                                               "the vote")
                             .execution_options(synchronize_session=False)).rowcount
    if counted_vote_exists(session, model.id):
        session.rollback()
        raise _rated(model.id)
    return voided


def _involves(model_id: int):
    return or_(Battle.model_a_id == model_id, Battle.model_b_id == model_id)


def counted_vote_exists(session: Session, model_id: int) -> bool:
    """A vote that counts: on a battle in the voted state that is not flagged (any source, imported included)."""
    statement = (select(Vote.id).join(Battle, Vote.battle_id == Battle.id)
                 .where(_involves(model_id), Battle.state == "voted", Battle.flagged.is_(False)).limit(1))
    return session.scalars(statement).first() is not None


def delete_model(session: Session, lab: Lab, model: Model, *, key_prefix: str | None) -> None:
    """Delete a model that no counted vote has ranked, with its uncounted battles, answers and checks.

    Once a vote has counted its results are published: 409, it can only be retired.
    """
    if counted_vote_exists(session, model.id):
        raise ApiError(409, "model_has_counted_votes",
                       f"Model {model.id} has counted votes: its results stay published. Retire it instead "
                       '(PATCH with {"status": "retired"}).')
    battle_ids = select(Battle.id).where(_involves(model.id)).scalar_subquery()
    counts = {}
    for table, condition in ((Vote, Vote.battle_id.in_(battle_ids)), (Message, Message.battle_id.in_(battle_ids)),
                             (Battle, _involves(model.id)), (RecordedAnswer, RecordedAnswer.model_id == model.id),
                             (EndpointCheck, EndpointCheck.model_id == model.id)):
        counts[table.__tablename__] = session.execute(
            delete(table).where(condition).execution_options(synchronize_session=False)).rowcount
    details = {"name": model.name, "kind": model.kind, "battles": counts["battles"],
               "uncounted_votes": counts["votes"], "recorded_answers": counts["recorded_answers"]}
    model_id = model.id
    session.delete(model)
    audit(session, lab, "model.delete", key_prefix=key_prefix, model_id=model_id, details=details)
    try:
        session.commit()
    except IntegrityError:  # a vote or battle arrived meanwhile
        session.rollback()
        raise ApiError(409, "model_busy", f"Model {model_id} changed while being deleted; try again.") from None


# ------------------------------------------------------------------------------------------------ answers

def import_answers(session: Session, lab: Lab, model: Model, data: bytes, *, key_prefix: str | None) -> int:
    """Store a recorded model's answers from JSON Lines, all or none; 422 lists every failing line."""
    if model.kind != "recorded":
        raise ApiError(409, "not_a_recorded_model", f"Model {model.id} is an endpoint model: it takes no answers.")
    if model.status == "retired":
        raise ApiError(409, "model_retired", f"Model {model.id} is retired.")
    prompts = set(session.scalars(select(Prompt.id)))
    answered = set(session.scalars(select(RecordedAnswer.prompt_id).where(RecordedAnswer.model_id == model.id)))
    seen: dict[int, int] = {}
    rows, problems, count = [], [], 0
    for number, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        count += 1
        try:
            record = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            problems.append({"line": number, "error": "not UTF-8 text"})
            continue
        except (ValueError, RecursionError) as e:
            problems.append({"line": number, "error": f"not valid JSON ({getattr(e, 'msg', 'too deeply nested')})"})
            continue
        reason = labs.answer_problem(record, prompts, answered, seen)
        if reason:
            problems.append({"line": number, "error": reason})
            continue
        seen[record["prompt_id"]] = number
        rows.append({"model_id": model.id, "prompt_id": record["prompt_id"], "text": record["answer"],
                     "duration_ms": None if record.get("duration_ms") is None else float(record["duration_ms"]),
                     **style_counts(record["answer"])})  # a bulk insert skips the ORM listener that counts them
    if problems:
        raise ApiError(422, "invalid_answers", f"Nothing imported: {len(problems)} of {count} line(s) failed.",
                       details={"lines": problems[:MAX_REPORTED_LINES], "failed": len(problems), "total": count})
    if not rows:
        raise ApiError(400, "no_answers", "The upload has no answers: send one JSON object a line.")
    session.execute(insert(RecordedAnswer), rows)
    audit(session, lab, "answers.import", key_prefix=key_prefix, model_id=model.id, details={"answers": len(rows)})
    try:
        session.commit()
    except IntegrityError:  # the same answers uploaded twice at once
        session.rollback()
        raise ApiError(409, "answers_conflict", "Some of these answers were stored meanwhile; nothing imported.") \
            from None
    return len(rows)


# ------------------------------------------------------------------------------------------------ keys

def rotate_key(session: Session, lab: Lab, *, key_prefix: str | None) -> tuple[str, int]:
    revoked = len(labs.active_keys(lab))
    audit(session, lab, "key.rotate", key_prefix=key_prefix, details={"revoked": revoked})
    key = labs.rotate_key(session, lab)  # commits the audit record with it
    return key, revoked


# ------------------------------------------------------------------------------------------------ status

def _utc(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:  # SQLite keeps no zone; everything is stored in UTC
        return moment.replace(tzinfo=timezone.utc)
    return moment


def endpoint_health(session: Session, model: Model) -> dict:
    """Last success, last error and error rate over the newest calls of the current endpoint: its check (at
    registration or at the last change) and its answers in battles since then."""
    since = session.scalar(select(func.max(EndpointCheck.created_at)).where(EndpointCheck.model_id == model.id))
    own_answer = and_(Message.role == "assistant", or_(and_(Battle.model_a_id == model.id, Message.side == "a"),
                                                       and_(Battle.model_b_id == model.id, Message.side == "b")))
    if since is not None:
        own_answer = and_(own_answer, Message.created_at >= since)
    answers = session.execute(select(Message.created_at, Message.complete, Message.error)
                              .join(Battle, Message.battle_id == Battle.id).where(own_answer)
                              .order_by(Message.created_at.desc()).limit(HEALTH_WINDOW)).all()
    checks = session.execute(select(EndpointCheck.created_at, EndpointCheck.ok, EndpointCheck.error)
                             .where(EndpointCheck.model_id == model.id, EndpointCheck.created_at >= since)
                             .order_by(EndpointCheck.created_at.desc()).limit(HEALTH_WINDOW)).all() \
        if since is not None else []
    calls = sorted(((_utc(at), bool(ok), error) for at, ok, error in [*answers, *checks]),
                   key=lambda c: c[0], reverse=True)[:HEALTH_WINDOW]
    last_success = max((at for at, ok, _ in calls if ok), default=None)
    last_error = next(({"at": at, "message": error or "failed"} for at, ok, error in calls if not ok), None)
    if last_success is None:  # older than the window, if at all
        last_success = _utc(session.scalar(select(func.max(Message.created_at)).join(Battle, Message.battle_id ==
                                                                                     Battle.id)
                                           .where(own_answer, Message.complete.is_(True))))
    return {"since": _utc(since), "last_success_at": last_success, "last_error": last_error, "calls": len(calls),
            "error_rate": (sum(1 for _, ok, _ in calls if not ok) / len(calls)) if calls else None}


def _leaderboard_entry(session: Session, model: Model) -> dict:
    """The model's line on the newest snapshot's overall board (read, never computed here)."""
    document = snapshots.newest_document(session)
    row = None if document is None else next(
        (r for r in document["boards"]["overall"]["models"] if r["model"] == model.name), None)
    entry = None if document is None else next(
        (e for e in document.get("models", []) if e["model"] == model.name and "votes" in e), None)
    # what the snapshot's counting rules (integrity rules included) did with the votes of this model's battles
    counted_votes = None if entry is None else entry["votes"]["counted"]
    excluded_votes = None if entry is None else entry["votes"]["excluded"]
    if row is None:
        note = ("No leaderboard snapshot has been published yet." if document is None else
                f"Snapshot {document['version']} does not rank this model: it had no counted vote by then.")
        return {"rating": None, "interval": None, "rank": None, "tier": None, "provisional": None,
                "snapshot": None if document is None else str(document["version"]), "counted_votes": counted_votes,
                "excluded_votes": excluded_votes, "note": note}
    return {"rating": row["rating"], "interval": [row["ci_low"], row["ci_high"]], "rank": row["rank_ub"],
            "tier": row["tier"], "provisional": row["provisional"], "snapshot": str(document["version"]),
            "counted_votes": counted_votes, "excluded_votes": excluded_votes,
            "note": f"Snapshot {document['version']} of {document['created_at']}: rank upper bound {row['rank_ub']}, "
                    f"tier {row['tier']}, {row['battles']} counted votes"
                    f"{' (provisional)' if row['provisional'] else ''}."}


def model_status(session: Session, model: Model) -> dict:
    """Everything the ModelOut response holds, as plain values."""
    involves = _involves(model.id)
    battles = session.scalar(select(func.count()).select_from(Battle).where(involves)) or 0
    counted = identity_leak = not_voted = voter_excluded = 0
    # the snapshot builder's rules, in its order (arena.snapshots.COUNTING_RULES)
    by_excluded_voter = Vote.voter.in_(snapshots.excluded_voters(session))
    for state, flagged, excluded, n in session.execute(
            select(Battle.state, Battle.flagged, by_excluded_voter, func.count(Vote.id))
            .join(Vote, Vote.battle_id == Battle.id).where(involves)
            .group_by(Battle.state, Battle.flagged, by_excluded_voter)):
        if state != "voted":
            not_voted += n
        elif flagged:
            identity_leak += n
        elif excluded:
            voter_excluded += n
        else:
            counted += n
    answers = session.scalar(select(func.count()).select_from(RecordedAnswer)
                             .where(RecordedAnswer.model_id == model.id)) or 0
    return {
        "id": model.id, "name": model.name, "organization": model.organization, "kind": model.kind,
        "status": model.status, "created_at": _utc(model.created_at),
        "endpoint": ({"base_url": model.base_url, "model": model.endpoint_model,
                      "has_api_key": model.endpoint_key_encrypted is not None} if model.kind == "endpoint" else None),
        "system_prompt": model.system_prompt, "sampling_params": model.sampling_params or {},
        "aliases": list(model.aliases or []), "families": list(model.families or []),
        "recorded_answers": answers,
        "health": endpoint_health(session, model) if model.kind == "endpoint" else None,
        "battles": battles,
        "votes": {"counted": counted, "excluded": identity_leak + not_voted + voter_excluded,
                  "excluded_by_reason": {"identity_leak": identity_leak, "battle_void": not_voted,
                                         "voter_excluded": voter_excluded}},
        "leaderboard": _leaderboard_entry(session, model),
        "deletable": counted + voter_excluded == 0,
    }
