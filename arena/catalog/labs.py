"""Labs and their API keys.

API keys are long random tokens ("arena_" + 32 random bytes, URL-safe base64), shown once when made and stored
only as their SHA-256: a database dump reveals no usable key. A key with 256 random bits needs no salt or slow
hash; SHA-256 lets a request find its key with one indexed lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from arena.catalog.audit import Actor, record_action
from arena.errors import BadRequest, Conflict, NotFound
from arena.models import ApiKey, Lab, utcnow

KEY_PREFIX = "arena_"
SHOWN_PREFIX_CHARS = 12  # "arena_" and six random characters: enough for an operator to tell keys apart
MAX_NAME = 200


def hash_key(key: str) -> str:
    """SHA-256 hex of an API key, as stored in ApiKey.key_hash."""
    return hashlib.sha256(key.encode()).hexdigest()


def _new_key(session: Session, lab: Lab) -> str:
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(lab=lab, key_hash=hash_key(key), prefix=key[:SHOWN_PREFIX_CHARS]))
    return key


def clean_name(name: str, what: str) -> str:
    name = (name or "").strip()
    if not name:
        raise BadRequest("invalid_name", f"the {what} name is empty")
    if len(name) > MAX_NAME:
        raise BadRequest("invalid_name", f"the {what} name is longer than {MAX_NAME} characters")
    return name


def create_lab(session: Session, actor: Actor, name: str) -> tuple[Lab, str]:
    """A new lab and its first API key; the plain key is returned here and nowhere else, ever."""
    name = clean_name(name, "lab")
    if session.scalars(select(Lab.id).where(Lab.name == name)).first() is not None:
        raise _lab_exists(name)
    lab = Lab(name=name)
    session.add(lab)
    key = _new_key(session, lab)
    try:
        session.flush()
        record_action(
            session, actor, "lab.create", lab_id=lab.id, details={"lab": name, "key": key[:SHOWN_PREFIX_CHARS]}
        )
        session.commit()
    except IntegrityError:  # the same name created at the same moment elsewhere
        session.rollback()
        raise _lab_exists(name) from None
    return lab, key


def _lab_exists(name: str) -> Conflict:
    return Conflict("name_taken", f"a lab named {name!r} already exists")


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


def rotate_key(session: Session, actor: Actor, lab: Lab) -> tuple[str, int]:
    """Revoke every key of `lab` at once and return a new one (shown once) and how many were revoked; by the
    lab itself (its API) or the operator, recorded in the same transaction."""
    revoked = len(active_keys(lab))
    record_action(session, actor, "key.rotate", lab_id=lab.id, details={"lab": lab.name, "revoked": revoked})
    session.execute(
        update(ApiKey)
        .where(ApiKey.lab_id == lab.id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    key = _new_key(session, lab)
    session.commit()
    return key, revoked


def lab_by_name(session: Session, name: str) -> Lab:
    lab = session.scalars(select(Lab).where(Lab.name == name)).first()
    if lab is None:
        raise NotFound("lab_not_found", f"there is no lab named {name!r}")
    return lab


def list_labs(session: Session) -> list[Lab]:
    return list(session.scalars(select(Lab).order_by(Lab.name)))


def active_keys(lab: Lab) -> list[ApiKey]:
    return [k for k in lab.keys if k.revoked_at is None]
