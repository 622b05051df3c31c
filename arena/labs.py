"""Labs, their API keys, and the models they put in the arena: plain functions taking a session.

API keys are long random tokens ("arena_" + 32 random bytes, URL-safe base64), shown once when made and stored
only as their SHA-256: a database dump reveals no usable key. A key with 256 random bits needs no salt or slow
hash; SHA-256 lets a request find its key with one indexed lookup.

Functions commit their own short transaction. Bad input raises ValueError, an unknown name LookupError; both
carry a message meant for the person who typed the input.

The audit log: `record_action` is the one place an AuditEvent is made, and it is always committed together with
the change it records. The functions that change something take `actor`: given one (the operator's commands pass
OPERATOR), they record their event in the transaction of the change. The lab API records richer events (which key
acted, what changed) in arena.lab_actions and passes no actor.
"""
from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from arena.crypto import encrypt_secret
from arena.models import ApiKey, AuditEvent, Lab, Model, utcnow

KEY_PREFIX = "arena_"
OPERATOR = "operator"  # the audit log's actor for the command line
_SHOWN_PREFIX_CHARS = 12  # "arena_" and six random characters: enough for an operator to tell keys apart
MAX_NAME = 200


# ------------------------------------------------------------------------------------------------ audit

def record_action(session: Session, action: str, *, actor: str, lab_id: int | None = None,
                  key_prefix: str | None = None, model_id: int | None = None,
                  details: dict | None = None) -> AuditEvent:
    """Add the record of an action to the session; the action's own commit stores both (or neither)."""
    event = AuditEvent(lab_id=lab_id, actor=actor, key_prefix=key_prefix, action=action, model_id=model_id,
                       details=details or {}, created_at=utcnow())
    session.add(event)
    return event


# ------------------------------------------------------------------------------------------------ keys

def hash_key(key: str) -> str:
    """SHA-256 hex of an API key, as stored in ApiKey.key_hash."""
    return hashlib.sha256(key.encode()).hexdigest()


def _new_key(session: Session, lab: Lab) -> str:
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(lab=lab, key_hash=hash_key(key), prefix=key[:_SHOWN_PREFIX_CHARS]))
    return key


def _clean_name(name: str, what: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ValueError(f"the {what} name is empty")
    if len(name) > MAX_NAME:
        raise ValueError(f"the {what} name is longer than {MAX_NAME} characters")
    return name


def create_lab(session: Session, name: str, *, actor: str | None = None) -> tuple[Lab, str]:
    """A new lab and its first API key; the plain key is returned here and nowhere else, ever."""
    name = _clean_name(name, "lab")
    if session.scalars(select(Lab.id).where(Lab.name == name)).first() is not None:
        raise ValueError(f"a lab named {name!r} already exists")
    lab = Lab(name=name)
    session.add(lab)
    key = _new_key(session, lab)
    try:
        if actor is not None:
            session.flush()
            record_action(session, "lab.create", actor=actor, lab_id=lab.id,
                          details={"lab": name, "key": key[:_SHOWN_PREFIX_CHARS]})
        session.commit()
    except IntegrityError:  # the same name created at the same moment elsewhere
        session.rollback()
        raise ValueError(f"a lab named {name!r} already exists") from None
    return lab, key


def authenticate(session: Session, key: str | None) -> Lab | None:
    """The lab that owns `key`, or None for an unknown, revoked or malformed key."""
    if not key or not key.startswith(KEY_PREFIX):
        return None
    digest = hash_key(key)
    found = session.scalars(select(ApiKey).where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None))).first()
    # The lookup is by an index on the hash, so its timing says nothing about the key itself; the
    # constant-time comparison guards against a database collation that would match inexactly.
    if found is None or not hmac.compare_digest(found.key_hash, digest):
        return None
    return found.lab


def rotate_key(session: Session, lab: Lab, *, actor: str | None = None) -> str:
    """Revoke every key of `lab` at once and return a new one (shown once)."""
    if actor is not None:
        record_action(session, "key.rotate", actor=actor, lab_id=lab.id,
                      details={"lab": lab.name, "revoked": len(active_keys(lab))})
    session.execute(update(ApiKey).where(ApiKey.lab_id == lab.id, ApiKey.revoked_at.is_(None))
                    .values(revoked_at=utcnow()).execution_options(synchronize_session=False))
    key = _new_key(session, lab)
    session.commit()
    return key


def lab_by_name(session: Session, name: str) -> Lab:
    lab = session.scalars(select(Lab).where(Lab.name == name)).first()
    if lab is None:
        raise LookupError(f"there is no lab named {name!r}")
    return lab


def list_labs(session: Session) -> list[Lab]:
    return list(session.scalars(select(Lab).order_by(Lab.name)))


def active_keys(lab: Lab) -> list[ApiKey]:
    return [k for k in lab.keys if k.revoked_at is None]


# ------------------------------------------------------------------------------------------------ models

def validate_base_url(url: str) -> str:
    """An endpoint's base URL: http or https, a host, no user name or password in it (those would be stored
    in clear and shown to operators; the key goes in the encrypted api_key instead). Trailing '/' removed."""
    url = (url or "").strip()
    try:
        parts = urlsplit(url)
        parts.port  # raises ValueError for a port that is not a number or out of range
    except ValueError as e:
        raise ValueError(f"the base URL {url!r} is not a valid URL: {e}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"the base URL {url!r} must start with http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise ValueError("the base URL must not contain a user name or password; pass the key as the API key")
    if not parts.hostname:
        raise ValueError(f"the base URL {url!r} has no host")
    if parts.fragment:
        raise ValueError(f"the base URL {url!r} must not have a #fragment")
    if parts.query:  # the arena appends /chat/completions, and a query is where keys hide in plain text
        raise ValueError(f"the base URL {url!r} must not have a ?query; pass a key as the API key")
    return url.rstrip("/")


def model_by_name(session: Session, name: str) -> Model:
    model = session.scalars(select(Model).where(Model.name == name)).first()
    if model is None:
        raise LookupError(f"there is no model named {name!r}")
    return model


def list_models(session: Session, lab: Lab | None = None) -> list[Model]:
    statement = select(Model).order_by(Model.name)
    if lab is not None:
        statement = statement.where(Model.lab_id == lab.id)
    return list(session.scalars(statement))


def add_endpoint_model(session: Session, *, secret_key: str, name: str, organization: str, base_url: str,
                       endpoint_model: str, api_key: str | None = None, lab: Lab | None = None,
                       system_prompt: str | None = None, actor: str | None = None) -> Model:
    """Register an OpenAI-compatible endpoint as a model; its API key is stored encrypted (arena.crypto).

    Nothing is called here: the first battle is the first call.
    """
    name = _clean_name(name, "model")
    organization = _clean_name(organization, "organization")
    base_url = validate_base_url(base_url)
    endpoint_model = (endpoint_model or "").strip()
    if not endpoint_model:
        raise ValueError("the endpoint's model identifier is empty")
    if session.scalars(select(Model.id).where(Model.name == name)).first() is not None:
        raise ValueError(f"a model named {name!r} already exists")
    model = Model(name=name, organization=organization, kind="endpoint", status="active", base_url=base_url,
                  endpoint_model=endpoint_model, lab=lab, system_prompt=system_prompt or None,
                  endpoint_key_encrypted=encrypt_secret(secret_key, api_key) if api_key else None)
    session.add(model)
    try:
        if actor is not None:
            session.flush()
            record_action(session, "model.create", actor=actor, lab_id=lab.id if lab else None, model_id=model.id,
                          details={"name": name, "organization": organization, "kind": "endpoint",
                                   "base_url": base_url, "model": endpoint_model,
                                   "api_key": "set" if api_key else "none", "checked": False,
                                   **({"lab": lab.name} if lab else {})})
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ValueError(f"a model named {name!r} already exists") from None
    return model


# Allowed status changes: paused and active go back and forth; retired is final (its battles stay).
_TRANSITIONS = {"pause": ({"active", "paused"}, "paused"),
                "resume": ({"active", "paused"}, "active"),
                "retire": ({"active", "paused", "retired"}, "retired")}


def change_status(session: Session, model: Model, action: str, *, actor: str | None = None) -> Model:
    """Pause, resume or retire a model. A retired model stays retired: its past battles keep it on record."""
    allowed_from, target = _TRANSITIONS[action]
    if model.status not in allowed_from:
        raise ValueError(f"model {model.name!r} is {model.status}; a retired model cannot be {action}d")
    if actor is not None:
        record_action(session, f"model.{action}", actor=actor, lab_id=model.lab_id, model_id=model.id,
                      details={"name": model.name, "status": {"from": model.status, "to": target}})
    model.status = target
    session.commit()
    return model


def set_sampling_weight(session: Session, model: Model, weight: float, *, actor: str | None = None) -> Model:
    """The published sampling weight: a pair is drawn with probability proportional to w_a * w_b; 0 = never."""
    weight = float(weight)
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f"the sampling weight must be a finite number >= 0, not {weight!r}")
    if actor is not None:
        record_action(session, "model.weight", actor=actor, lab_id=model.lab_id, model_id=model.id,
                      details={"name": model.name, "sampling_weight": {"from": model.sampling_weight, "to": weight}})
    model.sampling_weight = weight
    session.commit()
    return model


_ANSWER_FIELDS = {"prompt_id", "answer", "duration_ms"}


def answer_problem(record, prompts: set[int], answered: set[int], seen: dict[int, int]) -> str | None:
    """Why one line of a recorded-answers upload is refused, or None: the rules of both the lab API and
    `arena answers import`. `answered`: prompts the model already has; `seen`: prompt -> earlier line."""
    if not isinstance(record, dict):
        return "not a JSON object"
    unknown = sorted(set(record) - _ANSWER_FIELDS)
    if unknown:
        return f"unknown field(s) {', '.join(unknown)} (expected prompt_id, answer, duration_ms)"
    prompt_id = record.get("prompt_id")
    if not isinstance(prompt_id, int) or isinstance(prompt_id, bool):
        return "prompt_id must be an integer"
    if prompt_id not in prompts:
        return f"there is no prompt {prompt_id}"
    if prompt_id in answered:
        return f"the model already has an answer to prompt {prompt_id}"
    if prompt_id in seen:
        return f"prompt {prompt_id} is answered twice (also on line {seen[prompt_id]})"
    answer = record.get("answer")
    if not isinstance(answer, str) or not answer.strip():
        return "answer must be a non-empty string"
    if "\x00" in answer or not _encodable(answer):  # PostgreSQL text cannot hold NUL or lone surrogates
        return "answer must be valid Unicode text without NUL characters"
    duration = record.get("duration_ms")
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (int, float))
                                 or not math.isfinite(duration) or duration < 0):
        return "duration_ms must be a number of milliseconds >= 0"
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
