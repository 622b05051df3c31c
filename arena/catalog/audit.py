"""The audit log: every action on labs and models, by a lab (and which of its keys) or the operator.

`record_action` is the one place an AuditEvent is made, and it is always committed together with the change
it records (the action's own commit stores both, or neither). A refused lab action is recorded too, in a
transaction of its own (`record_failure`). The table is append-only: the migration adds triggers that refuse
UPDATE and DELETE.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from arena.models import AuditEvent, Lab, utcnow

MAX_ID = 2**31 - 1  # ids are 32-bit integers in PostgreSQL


class Actor(NamedTuple):
    """Who acts: a lab through its API (with the prefix of the key it used), or the operator's command line."""

    name: str  # the lab's name at the time, or "operator"
    lab_id: int | None = None
    key_prefix: str | None = None

    @classmethod
    def of_lab(cls, lab: Lab, key_prefix: str | None) -> "Actor":
        return cls(lab.name, lab.id, key_prefix)


OPERATOR = Actor("operator")


def record_action(
    session: Session,
    actor: Actor,
    action: str,
    *,
    lab_id: int | None = None,
    model_id: int | None = None,
    details: dict | None = None,
) -> AuditEvent:
    """Add the record of an action to the session; the action's own commit stores both (or neither).
    `lab_id`: the lab acted on (default: the acting lab)."""
    event = AuditEvent(
        lab_id=actor.lab_id if lab_id is None else lab_id,
        actor=actor.name,
        key_prefix=actor.key_prefix,
        action=action,
        model_id=model_id,
        details=details or {},
        created_at=utcnow(),
    )
    session.add(event)
    return event


def record_failure(
    session: Session,
    actor: Actor,
    action: str,
    *,
    model_id: int | None,
    status: int,
    code: str,
    message: str,
    request: dict | None = None,
) -> AuditEvent:
    """Record a refused lab action (`<action>_failed`) in a transaction of its own; the caller has rolled back
    whatever the action had begun. `request` is a short summary of what was asked, never a key."""
    details = {"status": status, "code": code, "message": loggable(message, 500)}
    if request:
        details["request"] = request
    if model_id is not None and not 1 <= model_id <= MAX_ID:  # no such id can exist; keep it as text
        details["model_id"], model_id = str(model_id)[:40], None
    event = record_action(session, actor, f"{action}_failed", model_id=model_id, details=details)
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
        return {
            loggable(str(k), 50): ("set" if v else "none") if k == "api_key" else loggable(v, max_chars, depth + 1)
            for k, v in list(value.items())[:20]
        }
    if isinstance(value, list):
        return [loggable(v, max_chars, depth + 1) for v in value[:5]] + (["…"] if len(value) > 5 else [])
    return value if value is None or isinstance(value, (bool, int, float)) else loggable(repr(value), max_chars)


def audit_events(
    session: Session, *, lab: Lab | None = None, model_id: int | None = None, limit: int = 50
) -> list[AuditEvent]:
    """The newest events first."""
    statement = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if lab is not None:
        statement = statement.where(AuditEvent.lab_id == lab.id)
    if model_id is not None:
        statement = statement.where(AuditEvent.model_id == model_id)
    return list(session.scalars(statement))
