"""The schema exists only through Alembic: it applies to an empty database, matches the models, and goes back."""
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from arena import db, models  # noqa: F401  (models register the tables)
from arena.db import Base

TABLES = {"labs", "api_keys", "models", "prompts", "recorded_answers", "battles", "messages", "votes",
          "endpoint_checks", "audit_log"}


def test_migrations_apply_match_the_models_and_downgrade(database_url):
    engine = create_engine(database_url)
    try:
        assert not TABLES & set(inspect(engine).get_table_names())
        db.upgrade(database_url)
        assert TABLES <= set(inspect(engine).get_table_names())
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert differences == []
        db.downgrade(database_url, "base")
        assert not TABLES & set(inspect(engine).get_table_names())
        db.upgrade(database_url)  # and forward again, as a redeploy would
        assert TABLES <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
