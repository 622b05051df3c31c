"""Engine, sessions and schema migrations: one SQLAlchemy session per request, opened lazily."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from flask import Flask, current_app, g
from sqlalchemy import create_engine, event, make_url
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from arena.errors import database_unavailable, one_line
from arena.settings import settings_of

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
DB_CONNECT_TIMEOUT_S = 5


class Base(DeclarativeBase):
    pass


def make_engine(url: str, pool_size: int = 20) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection, _record):
            # WAL lets readers run beside the one writer; foreign keys are off by default in SQLite.
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL stays consistent through crashes; FULL's flush per commit held the one write
            # lock ~4 ms per commit (measured in bench/service.py). A power cut may lose the last commits.
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    # No overflow: every worker holds at most pool_size connections, so workers × pool_size can be kept under
    # the server's max_connections (overflow connections were opened and closed per burst, and ran out).
    # pool_pre_ping: after a server restart the pooled connections are dead; each is tested (and replaced) when
    # checked out, so the service recovers by itself (a disconnect seen mid-request also invalidates the pool).
    # connect_timeout and TCP keepalives: an unreachable server fails a request in seconds (a 503, see
    # arena.errors) instead of holding a worker thread on a connect or a dead socket for minutes.
    connect_args = {}
    if make_url(url).get_driver_name() in ("psycopg", "psycopg2"):  # libpq's parameters
        connect_args = {
            "connect_timeout": DB_CONNECT_TIMEOUT_S,
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        }
    return create_engine(
        url, pool_size=pool_size, max_overflow=0, pool_timeout=30, pool_pre_ping=True, connect_args=connect_args
    )


def init_app(app: Flask) -> None:
    engine = make_engine(settings_of(app).sqlalchemy_url, settings_of(app).db_pool_size)
    app.extensions["arena.engine"] = engine
    app.extensions["arena.sessionmaker"] = sessionmaker(engine, expire_on_commit=False)
    app.teardown_appcontext(_close_session)


def session() -> Session:
    """The request's session, created on first use and closed at teardown."""
    if "db_session" not in g:
        g.db_session = current_app.extensions["arena.sessionmaker"]()
    return g.db_session


def new_session(app: Flask | None = None) -> Session:
    """A session outside a request (background work, the command line); the caller closes it."""
    return (app or current_app).extensions["arena.sessionmaker"]()


def _close_session(_exc):
    """Close the request's session; a failure here must not turn an answered request into a 500.

    Closing rolls back whatever the request left open. When the database went away meanwhile, that rollback
    fails on a dead connection (which SQLAlchemy has invalidated and the pool will replace): the response is
    already decided (for a stream, its body has not even started), so the failure is logged, not raised.
    """
    db_session = g.pop("db_session", None)
    if db_session is None:
        return
    try:
        db_session.close()
    except DBAPIError as error:
        if not database_unavailable(error):
            log.exception("closing the request's database session failed")
        else:
            log.warning("database unavailable while closing a request's session: %s", one_line(error))
        db_session.invalidate()  # drop the connection rather than return it in an unknown state (the pool
        # closes it and logs, never raises, when even that fails)


def alembic_config(url: str) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)
