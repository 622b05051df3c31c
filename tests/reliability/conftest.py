"""The reliability tests run against a real gunicorn server on PostgreSQL; without either they skip."""

from __future__ import annotations

import pytest

from tests.arena.conftest import POSTGRES_URL
from tests.reliability.harness import gunicorn_available


def needs_server():
    if not POSTGRES_URL:
        pytest.skip("needs PostgreSQL (ARENA_TEST_DATABASE_URL)")
    if not gunicorn_available():
        pytest.skip("needs gunicorn")
    return POSTGRES_URL


def through(url: str, port: int) -> str:
    """`url` with its host and port replaced by a proxy's loopback port."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)


def upstream(url: str) -> tuple[str, int]:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return parsed.host or "127.0.0.1", parsed.port or 5432
