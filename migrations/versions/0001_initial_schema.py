"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25

Labs and their keys, models (endpoint or recorded), prompts, recorded answers, battles, messages, votes.
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "labs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "prompts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("slug", sa.String(length=64), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lab_id", sa.Integer(), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["lab_id"],
            ["labs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_hash"),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_keys_lab_id"), ["lab_id"], unique=False)

    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lab_id", sa.Integer(), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("organization", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("sampling_weight", sa.Float(), nullable=False),
        sa.Column("base_url", sa.String(length=2000), nullable=True),
        sa.Column("endpoint_model", sa.String(length=200), nullable=True),
        sa.Column("endpoint_key_encrypted", sa.Text(), nullable=True),
        sa.Column("system_prompt", sa.Text(), nullable=True),
        sa.Column("sampling_params", sa.JSON(), nullable=False),
        sa.Column("aliases", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind in ('endpoint', 'recorded')", name="model_kind"),
        sa.CheckConstraint("status in ('active', 'paused', 'retired')", name="model_status"),
        sa.CheckConstraint("sampling_weight >= 0", name="model_weight"),
        sa.ForeignKeyConstraint(
            ["lab_id"],
            ["labs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_models_lab_id"), ["lab_id"], unique=False)

    op.create_table(
        "battles",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("prompt_id", sa.Integer(), nullable=True),
        sa.Column("prompt_text", sa.Text(), nullable=False),
        sa.Column("model_a_id", sa.Integer(), nullable=False),
        sa.Column("model_b_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("void_reason", sa.Text(), nullable=True),
        sa.Column("flagged", sa.Boolean(), nullable=False),
        sa.Column("flag_reason", sa.Text(), nullable=True),
        sa.Column("voter", sa.String(length=64), nullable=True),
        sa.Column("address_hash", sa.String(length=64), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("sampling_policy", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("state in ('created', 'streaming', 'ready', 'voted', 'void')", name="battle_state"),
        sa.CheckConstraint("model_a_id <> model_b_id", name="two_different_models"),
        sa.ForeignKeyConstraint(
            ["model_a_id"],
            ["models.id"],
        ),
        sa.ForeignKeyConstraint(
            ["model_b_id"],
            ["models.id"],
        ),
        sa.ForeignKeyConstraint(
            ["prompt_id"],
            ["prompts.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("battles", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_battles_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_battles_model_a_id"), ["model_a_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_battles_model_b_id"), ["model_b_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_battles_prompt_id"), ["prompt_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_battles_voter"), ["voter"], unique=False)

    op.create_table(
        "recorded_answers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("prompt_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["models.id"],
        ),
        sa.ForeignKeyConstraint(
            ["prompt_id"],
            ["prompts.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model_id", "prompt_id", name="one_answer_per_prompt"),
    )
    with op.batch_alter_table("recorded_answers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_recorded_answers_model_id"), ["model_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_recorded_answers_prompt_id"), ["prompt_id"], unique=False)

    op.create_table(
        "messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("battle_id", sa.String(length=32), nullable=False),
        sa.Column("side", sa.String(length=1), nullable=False),
        sa.Column("turn", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("first_token_ms", sa.Float(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["battle_id"],
            ["battles.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_messages_battle_id"), ["battle_id"], unique=False)

    op.create_table(
        "votes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("battle_id", sa.String(length=32), nullable=False),
        sa.Column("winner", sa.String(length=8), nullable=False),
        sa.Column("voter", sa.String(length=64), nullable=True),
        sa.Column("address_hash", sa.String(length=64), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("winner in ('a', 'b', 'tie', 'bothbad')", name="vote_winner"),
        sa.ForeignKeyConstraint(
            ["battle_id"],
            ["battles.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("battle_id"),
    )
    with op.batch_alter_table("votes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_votes_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_votes_voter"), ["voter"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("votes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_votes_voter"))
        batch_op.drop_index(batch_op.f("ix_votes_created_at"))

    op.drop_table("votes")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_messages_battle_id"))

    op.drop_table("messages")
    with op.batch_alter_table("recorded_answers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_recorded_answers_prompt_id"))
        batch_op.drop_index(batch_op.f("ix_recorded_answers_model_id"))

    op.drop_table("recorded_answers")
    with op.batch_alter_table("battles", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_battles_voter"))
        batch_op.drop_index(batch_op.f("ix_battles_prompt_id"))
        batch_op.drop_index(batch_op.f("ix_battles_model_b_id"))
        batch_op.drop_index(batch_op.f("ix_battles_model_a_id"))
        batch_op.drop_index(batch_op.f("ix_battles_created_at"))

    op.drop_table("battles")
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_models_lab_id"))

    op.drop_table("models")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_lab_id"))

    op.drop_table("api_keys")
    op.drop_table("prompts")
    op.drop_table("labs")
