"""A lock that every gunicorn worker (and every host on the same PostgreSQL) sees: for work that must run alone.

PostgreSQL: a session-level advisory lock, held by one dedicated connection for as long as the work runs, so
it is released even if the process dies. SQLite: an flock on a file beside the database (an SQLite database
lives on one host, so a host-wide lock is enough); flock locks belong to the open file, so two threads of one
process exclude each other too. An in-memory database gets a process-wide lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import threading
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine

_memory_locks: dict[str, threading.Lock] = {}
_memory_guard = threading.Lock()


def _advisory_key(name: str) -> int:
    """A stable signed 64-bit key for pg_try_advisory_lock, from the lock's name."""
    return int.from_bytes(hashlib.sha256(f"arena:{name}".encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def try_exclusive(engine: Engine, name: str):
    """Yield True while holding the lock `name`, or False at once if someone else holds it (never waits)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            key = _advisory_key(name)
            held = bool(connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar())
            connection.commit()  # the lock is the session's, not the transaction's
            try:
                yield held
            finally:
                if held:
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                    connection.commit()
        return
    database = engine.url.database
    if not database or database == ":memory:":
        with _memory_guard:
            lock = _memory_locks.setdefault(name, threading.Lock())
        held = lock.acquire(blocking=False)
        try:
            yield held
        finally:
            if held:
                lock.release()
        return
    path = Path(f"{database}.{name}.lock")
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
