"""when a battle's current stream began

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04

battles.stream_started_at: set when a stream claims the battle's turn. A battle still `streaming` long after
any stream can last lost its stream (its worker was killed, or its answers could not be stored); the next
read of its stream voids it instead of answering 409 already_streaming for ever (arena.battles).
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("battles") as batch:
        batch.add_column(sa.Column("stream_started_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("battles") as batch:
        batch.drop_column("stream_started_at")
