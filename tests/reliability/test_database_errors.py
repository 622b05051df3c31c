"""A lost database answers 503 database_unavailable (never a 500 or a hung request), and the same process serves
again once the database is back, with no restart (the pool tests its connections before use)."""

from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from arena import create_app, db
from arena.errors import database_unavailable
from arena.models import Prompt
from tests.arena.conftest import POSTGRES_URL
from tests.reliability.harness import SECRET_KEY, TcpProxy, reset_postgres, seed, voter_cookie


def _wrapped(kind, message, invalidated=False):
    return kind("SELECT 1", {}, Exception(message), connection_invalidated=invalidated)


def test_which_database_errors_mean_unavailable():
    assert database_unavailable(_wrapped(OperationalError, "connection refused"))
    assert database_unavailable(_wrapped(OperationalError, "server closed the connection unexpectedly"))
    assert database_unavailable(_wrapped(OperationalError, "database is locked"))
    assert database_unavailable(_wrapped(ProgrammingError, "whatever", invalidated=True))
    assert database_unavailable(PoolTimeout("QueuePool limit of size 4 overflow 0 reached"))
    # bugs stay bugs (500): SQLite reports a missing table as an OperationalError too
    assert not database_unavailable(_wrapped(OperationalError, "no such table: votes"))
    assert not database_unavailable(_wrapped(IntegrityError, "UNIQUE constraint failed"))
    assert not database_unavailable(_wrapped(ProgrammingError, "syntax error at or near"))
    assert not database_unavailable(ValueError("not a database error"))
    assert not database_unavailable(sqlite3.OperationalError("raw, not wrapped by SQLAlchemy"))


@contextmanager
def app_behind_a_proxy(tmp_path):
    """An app whose PostgreSQL connections go through a TCP proxy of ours, which the test cuts and restores."""
    host, port = POSTGRES_URL.split("@", 1)[1].split("/", 1)[0].split(":")
    with TcpProxy((host, int(port))) as proxy:
        url = POSTGRES_URL.replace(f"@{host}:{port}/", f"@127.0.0.1:{proxy.port}/")
        app = create_app(
            {
                "DATABASE_URL": url,
                "INSTANCE_PATH": str(tmp_path),
                "SECRET_KEY": SECRET_KEY,
                "DB_POOL_SIZE": 2,
                "VOTE_CHALLENGE": False,
            }
        )
        try:
            yield app, proxy
        finally:
            app.extensions["arena.engine"].dispose()


@pytest.mark.skipif(not POSTGRES_URL, reason="needs PostgreSQL (ARENA_TEST_DATABASE_URL)")
def test_a_lost_postgresql_answers_503_and_the_same_process_recovers(tmp_path):
    reset_postgres(POSTGRES_URL)
    arena = seed(POSTGRES_URL, voters=1, battles_per_voter=3)
    with app_behind_a_proxy(tmp_path) as (app, proxy):
        client = app.test_client()
        voter, battles = next(iter(arena.ready.items()))
        client.set_cookie("session", voter_cookie(voter))
        assert client.get("/api/v1/prompts").status_code == 200  # the pool holds a connection now
        assert client.post(f"/api/v1/battles/{battles[0]}/vote", json={"winner": "a"}).status_code == 200

        proxy.cut()
        started = time.monotonic()
        for request in (
            lambda: client.get("/api/v1/prompts"),  # a pooled connection found dead
            lambda: client.post(f"/api/v1/battles/{battles[1]}/vote", json={"winner": "b"}),
            lambda: client.post("/api/v1/battles", json={"prompt_id": arena.prompt_id}),
            lambda: client.get("/api/v1/prompts"),
        ):  # a new connection refused
            response = request()
            assert response.status_code == 503, response.data
            assert response.get_json()["error"]["code"] == "database_unavailable"
            assert response.headers["Retry-After"].isdigit()
            assert b"Traceback" not in response.data and b"SELECT" not in response.data
        assert time.monotonic() - started < 5  # refused at once, not after a pool or connect timeout

        proxy.restore()
        assert client.get("/api/v1/prompts").status_code == 200
        assert client.post(f"/api/v1/battles/{battles[1]}/vote", json={"winner": "b"}).status_code == 200
        assert client.post(f"/api/v1/battles/{battles[0]}/vote", json={"winner": "a"}).status_code == 409


@pytest.mark.skipif(not POSTGRES_URL, reason="needs PostgreSQL (ARENA_TEST_DATABASE_URL)")
def test_a_database_lost_after_the_answer_is_decided_does_not_make_it_a_500(tmp_path, caplog):
    """The session is closed after the view returns (for a stream, before its body starts): when the database
    went away meanwhile, the rollback of that close fails, and the answer the view decided must still go out."""
    reset_postgres(POSTGRES_URL)
    seed(POSTGRES_URL, voters=1, battles_per_voter=1)
    with app_behind_a_proxy(tmp_path) as (app, proxy):

        @app.get("/test/read-then-lose-the-database")
        def read_then_lose_the_database():
            count = db.session().execute(select(func.count()).select_from(Prompt)).scalar_one()  # opens a transaction
            proxy.cut()
            return {"prompts": count}

        client = app.test_client()
        response = client.get("/test/read-then-lose-the-database")
        assert response.status_code == 200 and response.get_json()["prompts"] >= 1
        assert "database unavailable while closing" in caplog.text
        proxy.restore()
        assert client.get("/api/v1/prompts").status_code == 200  # the dead connection was not reused
