"""Fixtures for the service: a fresh database per test (SQLite, and PostgreSQL when configured), built through
the same Alembic migrations that production runs."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import create_engine, text

from arena import create_app, db
from arena.models import Model, Prompt, RecordedAnswer


def _worker_database(url: str | None) -> str | None:
    """Under pytest-xdist each worker gets a database of its own (test_gw0, test_gw1, ...), created on first use
    beside the configured one, since every test drops and recreates the schema of the database it uses."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not url or not worker:
        return url
    from sqlalchemy.engine import make_url

    base = make_url(url)
    name = f"{base.database}_{worker}"
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            exists = connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name})
            if exists.scalar() is None:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


POSTGRES_URL = _worker_database(os.environ.get("ARENA_TEST_DATABASE_URL"))
BACKENDS = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])


def reset_postgres(url: str) -> None:
    """An empty schema: every test (and the reliability harness) starts from nothing."""
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'arena.db'}"
    else:
        reset_postgres(POSTGRES_URL)
        yield POSTGRES_URL


@pytest.fixture
def app(database_url, tmp_path):
    db.upgrade(database_url)
    application = create_app(
        {
            "DATABASE_URL": database_url,
            "INSTANCE_PATH": str(tmp_path),
            "TESTING": True,
            "SECRET_KEY": "test-secret",
            "REPLAY_MAX_SECONDS": 0.0,
            "DB_POOL_SIZE": 5,
            "PROVIDER_CONNECT_TIMEOUT": 2.0,
            "PROVIDER_FIRST_TOKEN_TIMEOUT": 2.0,
            "PROVIDER_TOTAL_TIMEOUT": 5.0,
            # Tests of other features vote without solving the challenge and create battles
            # faster than a person would (test_integrity_gates turns both gates on).
            "VOTE_CHALLENGE": False,
            "RATE_LIMITS": False,
        }
    )
    yield application
    application.extensions["arena.engine"].dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def session(app):
    with db.new_session(app) as s:
        yield s


@pytest.fixture
def loopback():
    from arena.loopback_model import LoopbackModelServer

    with LoopbackModelServer() as server:
        yield server


@pytest.fixture
def prompt_id(session):
    """A prompt of the set that two recorded models (Alpha Model, Beta Model) have answered."""
    prompt = gen_prompt(session)
    gen_recorded_model(session, "Alpha Model", "Alpha Org", {prompt.id: "Rayleigh scattering, mostly."})
    gen_recorded_model(session, "Beta Model", "Beta Org", {prompt.id: "Because blue light scatters more."})
    return prompt.id


def gen_prompt(session, text="Why is the sky blue?", category="knowledge", source="arena") -> Prompt:
    prompt = Prompt(text=text, category=category, source=source)
    session.add(prompt)
    session.commit()
    return prompt


def gen_recorded_model(session, name, organization, answers: dict, *, duration_ms=100.0) -> Model:
    model = Model(name=name, organization=organization, kind="recorded")
    session.add(model)
    session.flush()
    for prompt_id, answer in answers.items():
        session.add(RecordedAnswer(model_id=model.id, prompt_id=prompt_id, text=answer, duration_ms=duration_ms))
    session.commit()
    return model


def gen_endpoint_model(session, name, organization, base_url, behaviour="echo", **fields) -> Model:
    model = Model(
        name=name, organization=organization, kind="endpoint", base_url=base_url, endpoint_model=behaviour, **fields
    )
    session.add(model)
    session.commit()
    return model
