"""The schema exists only through Alembic: it applies to an empty database, matches the models, and goes back."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from arena import db
from arena.db import Base

TABLES = {
    "labs",
    "api_keys",
    "models",
    "prompts",
    "recorded_answers",
    "battles",
    "messages",
    "votes",
    "endpoint_checks",
    "audit_log",
}


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


def test_on_sqlite_model_ids_continue_past_every_id_the_audit_log_names(tmp_path):
    """Migration 0005 starts SQLite's AUTOINCREMENT counter past the ids of models deleted before it ran."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    db.upgrade(url, "0004")
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            for model_id, name in ((1, "kept"), (2, "deleted later")):
                connection.execute(
                    text(
                        "INSERT INTO models (id, name, organization, kind, status, sampling_weight, sampling_params, "
                        "aliases, families, source, created_at) VALUES (:id, :name, '', 'recorded', 'active', 1, '{}', "
                        "'[]', '[]', 'arena', '2026-12-01')"
                    ),
                    {"id": model_id, "name": name},
                )
            connection.execute(
                text(
                    "INSERT INTO audit_log (created_at, actor, action, model_id, details) "
                    "VALUES ('2026-12-01', 'Lab', 'model.delete', 7, '{}')"
                )
            )
            connection.execute(text("DELETE FROM models WHERE id = 2"))
        db.upgrade(url)
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO models (name, organization, kind, status, sampling_weight, sampling_params, aliases, "
                    "families, source, created_at) VALUES ('new', '', 'recorded', 'active', 1, '{}', '[]', '[]', "
                    "'arena', '2026-12-02')"
                )
            )
            assert connection.execute(text("SELECT id FROM models WHERE name = 'new'")).scalar() == 8
    finally:
        engine.dispose()
