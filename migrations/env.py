"""Alembic environment: the URL comes from the caller (arena.db.upgrade) or ARENA_DATABASE_URL."""

from alembic import context
from sqlalchemy import create_engine, pool

from arena import models  # noqa: F401  (registers the tables on Base.metadata)
from arena.db import Base

config = context.config
target_metadata = Base.metadata


def database_url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from arena.settings import Settings

    return Settings().sqlalchemy_url


def run_migrations_offline() -> None:
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        # batch mode lets later revisions alter SQLite tables (which cannot ALTER most things in place)
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
