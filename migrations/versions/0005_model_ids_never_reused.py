"""model ids are never reused on SQLite

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04

A model with no counted vote may be deleted, but its id stays in the audit log (model.create, model.delete, the
lab's other actions on it). SQLite without AUTOINCREMENT hands the largest deleted id to the next row, so a new
model would inherit the deleted one's history. On SQLite the models table is rebuilt with AUTOINCREMENT, and its
counter starts past every id the table or the audit log has ever held. PostgreSQL's sequences never reuse an id:
nothing to do there.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("models", recreate="always", table_kwargs={"sqlite_autoincrement": True}):
        pass
    op.execute(
        sa.text(
            "INSERT INTO sqlite_sequence (name, seq) SELECT 'models', 0 "
            "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'models')"
        )
    )
    op.execute(
        sa.text(
            "UPDATE sqlite_sequence SET seq = max(seq, (SELECT coalesce(max(id), 0) FROM models), "
            "(SELECT coalesce(max(model_id), 0) FROM audit_log)) WHERE name = 'models'"
        )
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("models", recreate="always", table_kwargs={"sqlite_autoincrement": False}):
        pass
