"""model families, for identity-leak checks

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

models.families: the model families a model belongs to ("Llama", "GPT"), beside its aliases; an answer that
names one reveals the model, so its vote is left out (arena.integrity). Existing models get an empty list.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("families", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("families")
