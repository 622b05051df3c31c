"""Reading published snapshots: pages, the API and a lab's model status read the newest stored one, so a read
never waits for a fit and never recomputes one. A snapshot never changes, so each process parses it once."""

from __future__ import annotations

import gzip
import json
import threading
from datetime import datetime, timezone

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from arena.models import Battle, Snapshot, SnapshotFile, Vote


def latest_version(session: Session) -> int | None:
    return session.scalar(select(func.max(Snapshot.version)))


def get_snapshot(session: Session, version: int | None = None) -> Snapshot | None:
    """The snapshot of that version, or the newest one; None if there is none."""
    if version is None:
        return session.scalars(select(Snapshot).order_by(Snapshot.version.desc()).limit(1)).first()
    return session.get(Snapshot, version)


def published_document(snapshot: Snapshot) -> dict:
    """The snapshot as published: the stored document with its signature block. Shared: do not modify."""
    return _cached(snapshot.version, snapshot.signature) or _parse(
        snapshot.version, snapshot.document, snapshot.signature
    )


def newest_document(session: Session) -> dict | None:
    """The newest snapshot as published, or None. Reads only the version and the signature when this process
    has parsed that snapshot before (the document itself can be a megabyte). Shared: do not modify."""
    newest = session.execute(
        select(Snapshot.version, Snapshot.signature).order_by(Snapshot.version.desc()).limit(1)
    ).first()
    if newest is None:
        return None
    return _cached(newest.version, newest.signature) or _parse(
        newest.version,
        session.scalar(select(Snapshot.document).where(Snapshot.version == newest.version)),
        newest.signature,
    )


_parsed_cache: dict[tuple[int, str], dict] = {}


_parsed_lock = threading.Lock()


def _cached(version: int, signature: str) -> dict | None:
    """A snapshot never changes, so each process parses it once (keyed by its signature too, should a
    database be rebuilt under a running process)."""
    with _parsed_lock:
        return _parsed_cache.get((version, signature))


def _parse(version: int, document: str, signature: str) -> dict:
    parsed = json.loads(document)
    parsed["signature"] = json.loads(signature)
    with _parsed_lock:
        if len(_parsed_cache) >= 16:
            _parsed_cache.pop(next(iter(_parsed_cache)))
        _parsed_cache[(version, signature)] = parsed
    return parsed


def snapshot_index():
    """The statement listing every snapshot, newest first, without its document."""
    return select(
        Snapshot.version,
        Snapshot.created_at,
        Snapshot.code_version,
        Snapshot.votes_counted,
        Snapshot.votes_excluded,
        Snapshot.battle_file_sha256,
        Snapshot.key_id,
    ).order_by(Snapshot.version.desc())


def snapshot_file(session: Session, version: int, kind: str) -> bytes | None:
    stored = session.get(SnapshotFile, (version, kind))
    return None if stored is None else gzip.decompress(stored.gzip)


def new_counted_votes(session: Session) -> int:
    """Votes since the newest snapshot that the cheap rules already let count (not void, not flagged)."""
    last = session.scalar(select(func.max(Snapshot.last_vote_id))) or 0
    return (
        session.scalar(
            select(func.count())
            .select_from(Vote)
            .join(Battle, Vote.battle_id == Battle.id)
            .where(Vote.id > last, Battle.state == "voted", Battle.flagged.is_(False))
        )
        or 0
    )


def named_boards(boards: dict):
    """(name, board) for each board of a snapshot: overall, style, then the categories by name."""
    yield "overall", boards["overall"]
    if boards["style"]:
        yield "style", boards["style"]
    for name, board in sorted(boards["categories"].items()):
        yield f"category:{name}", board


def as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment  # SQLite drops the zone


def iso_utc(moment: datetime) -> str:
    return as_utc(moment).astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
