"""What a lab does through its API, as plain functions taking a session.

Every action writes its AuditEvent in the same transaction as the change itself: either both are stored or
neither. Where arena.labs already has the function (status changes, key rotation), the audit row is added to the
session first and that function's commit stores both. Errors a client can act on are ApiError.
"""
from __future__ import annotations

import ipaddress
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout
from datetime import datetime, timezone
from urllib.parse import urlsplit

from sqlalchemy import and_, delete, func, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from arena import labs, providers
from arena.crypto import encrypt_secret
from arena.errors import ApiError
from arena.models import (AuditEvent, Battle, EndpointCheck, Lab, Message, Model, Prompt, RecordedAnswer, Vote,
                          utcnow)

HEALTH_WINDOW = 100  # the error rate is over this many of the newest calls
RESOLVE_TIMEOUT = 5.0
MAX_REPORTED_LINES = 1000
# Cloud metadata services that are not link-local (169.254.169.254 and fd00:ec2::254 are refused as such anyway,
# listed for the message): Alibaba's 100.100.100.200 sits in shared address space, AWS's IPv6 one in fc00::/7.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in
                               ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "169.254.170.2"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


# ------------------------------------------------------------------------------------------------ audit

def audit(session: Session, lab: Lab, action: str, *, key_prefix: str | None = None, model_id: int | None = None,
          details: dict | None = None) -> AuditEvent:
    """Add the record of a lab action to the session; the action's own commit stores it."""
    event = AuditEvent(lab_id=lab.id, actor=lab.name, key_prefix=key_prefix, action=action, model_id=model_id,
                       details=details or {}, created_at=utcnow())
    session.add(event)
    return event


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


def register_recorded_model(session: Session, lab: Lab, *, key_prefix: str | None, name: str, organization: str,
                            system_prompt: str | None = None) -> Model:
    _name_taken(session, name)
    model = Model(lab=lab, name=name, organization=organization, kind="recorded", status="active",
                  system_prompt=system_prompt, sampling_params={}, aliases=[], created_at=utcnow())
    session.add(model)
    session.flush()
    audit(session, lab, "model.create", key_prefix=key_prefix, model_id=model.id,
          details={"name": name, "organization": organization, "kind": "recorded"})
    _commit_new_model(session, name)
    return model


def register_endpoint_model(session: Session, lab: Lab, *, key_prefix: str | None, secret_key: str, name: str,
                            organization: str, base_url: str, endpoint_model: str, api_key: str | None,
                            system_prompt: str | None, sampling_params: dict, allow_private: bool,
                            check_timeout: float) -> Model:
    """Check the URL and the endpoint (one short real request), then store the model with the check's result.

    Nothing is stored when the check fails: the ApiError (422) says what failed.
    """
    try:
        base_url = labs.validate_base_url(base_url)
    except ValueError as e:
        raise ApiError(400, "invalid_base_url", str(e)) from None
    _name_taken(session, name)
    check_endpoint_address(base_url, allow_private=allow_private)
    session.rollback()  # end the read transaction: the check may take seconds, hold nothing meanwhile
    started = time.monotonic()
    try:
        providers.check_endpoint(base_url, endpoint_model, api_key=api_key, timeout=check_timeout)
    except providers.ProviderError as e:
        raise ApiError(422, "endpoint_check_failed", f"The endpoint check failed ({e.kind}): {e.message}",
                       details={"kind": e.kind, **({"status": e.status} if e.status else {})}) from None
    duration_ms = 1000 * (time.monotonic() - started)
    model = Model(lab=lab, name=name, organization=organization, kind="endpoint", status="active",
                  base_url=base_url, endpoint_model=endpoint_model, system_prompt=system_prompt,
                  endpoint_key_encrypted=encrypt_secret(secret_key, api_key) if api_key else None,
                  sampling_params=sampling_params, aliases=[], created_at=utcnow())
    session.add(model)
    session.flush()
    session.add(EndpointCheck(model_id=model.id, ok=True, duration_ms=duration_ms, created_at=utcnow()))
    audit(session, lab, "model.create", key_prefix=key_prefix, model_id=model.id,
          details={"name": name, "organization": organization, "kind": "endpoint", "base_url": base_url,
                   "model": endpoint_model, "api_key": "set" if api_key else "none"})
    _commit_new_model(session, name)
    return model


_ACTION_FOR_STATUS = {"paused": "pause", "active": "resume", "retired": "retire"}


def update_model(session: Session, lab: Lab, model: Model, *, key_prefix: str | None, changes: dict) -> Model:
    """Apply `changes` (status, system_prompt, sampling_params) in one transaction with its audit record."""
    if "status" in changes and changes["status"] != model.status:
        if model.status == "retired":
            raise ApiError(409, "model_retired", f"Model {model.id} is retired; retiring is final.")
    details = {}
    for field in ("system_prompt", "sampling_params"):
        if field in changes:
            setattr(model, field, changes[field])
            details[field] = "changed"
    status = changes.get("status")
    if status is not None and status != model.status:
        details["status"] = {"from": model.status, "to": status}
        audit(session, lab, f"model.{_ACTION_FOR_STATUS[status]}", key_prefix=key_prefix, model_id=model.id,
              details=details)
        labs.change_status(session, model, _ACTION_FOR_STATUS[status])  # commits the audit record with it
        return model
    if details:
        audit(session, lab, "model.update", key_prefix=key_prefix, model_id=model.id, details=details)
    session.commit()
    return model


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

_ANSWER_FIELDS = {"prompt_id", "answer", "duration_ms"}


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
                     "duration_ms": None if record.get("duration_ms") is None else float(record["duration_ms"])})
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
    """Last success, last error and error rate over the newest calls: registration checks and battle answers."""
    own_answer = and_(Message.role == "assistant", or_(and_(Battle.model_a_id == model.id, Message.side == "a"),
                                                       and_(Battle.model_b_id == model.id, Message.side == "b")))
    answers = session.execute(select(Message.created_at, Message.complete, Message.error)
                              .join(Battle, Message.battle_id == Battle.id).where(own_answer)
                              .order_by(Message.created_at.desc()).limit(HEALTH_WINDOW)).all()
    checks = session.execute(select(EndpointCheck.created_at, EndpointCheck.ok, EndpointCheck.error)
                             .where(EndpointCheck.model_id == model.id)
                             .order_by(EndpointCheck.created_at.desc()).limit(HEALTH_WINDOW)).all()
    calls = sorted(((_utc(at), bool(ok), error) for at, ok, error in [*answers, *checks]),
                   key=lambda c: c[0], reverse=True)[:HEALTH_WINDOW]
    last_success = max((at for at, ok, _ in calls if ok), default=None)
    last_error = next(({"at": at, "message": error or "failed"} for at, ok, error in calls if not ok), None)
    if last_success is None:  # older than the window, if at all
        last_success = _utc(session.scalar(select(func.max(Message.created_at)).join(Battle, Message.battle_id ==
                                                                                     Battle.id)
                                           .where(own_answer, Message.complete.is_(True))))
    return {"last_success_at": last_success, "last_error": last_error, "calls": len(calls),
            "error_rate": (sum(1 for _, ok, _ in calls if not ok) / len(calls)) if calls else None}


def model_status(session: Session, model: Model) -> dict:
    """Everything the ModelOut response holds, as plain values."""
    involves = _involves(model.id)
    battles = session.scalar(select(func.count()).select_from(Battle).where(involves)) or 0
    counted = identity_leak = not_voted = 0
    for state, flagged, n in session.execute(select(Battle.state, Battle.flagged, func.count(Vote.id))
                                             .join(Vote, Vote.battle_id == Battle.id).where(involves)
                                             .group_by(Battle.state, Battle.flagged)):
        if flagged:
            identity_leak += n
        elif state != "voted":
            not_voted += n
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
        "recorded_answers": answers,
        "health": endpoint_health(session, model) if model.kind == "endpoint" else None,
        "battles": battles,
        "votes": {"counted": counted, "excluded": identity_leak + not_voted,
                  "excluded_by_reason": {"identity_leak": identity_leak, "battle_void": not_voted}},
        "leaderboard": {"rating": None, "interval": None, "rank": None, "snapshot": None,
                        "note": "No leaderboard snapshot ranks this model yet."},
        "deletable": counted == 0,
    }
