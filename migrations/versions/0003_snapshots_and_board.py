"""leaderboard snapshots and the milestone board

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

snapshots and snapshot_files: published leaderboards with their battle and vote files (arena.snapshots).
voter_exclusions: operators' decisions to leave a voter's votes out, with the reason (never deleted).
safety_scores, milestones: the milestone board's imported safety measurements and declared milestones.
messages, recorded_answers: each answer's style counts (arena.answer_style), filled in here for answers
stored before this revision.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "milestones",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "snapshots",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("code_version", sa.String(length=100), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("last_vote_id", sa.Integer(), nullable=False),
        sa.Column("votes_counted", sa.Integer(), nullable=False),
        sa.Column("votes_excluded", sa.Integer(), nullable=False),
        sa.Column("battle_file_sha256", sa.String(length=64), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("version"),
    )
    op.create_table(
        "voter_exclusions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("voter", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("lifted", sa.Boolean(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("voter_exclusions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_voter_exclusions_voter"), ["voter"], unique=False)

    op.create_table(
        "snapshot_files",
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("gzip", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("kind in ('battles', 'votes')", name="snapshot_file_kind"),
        sa.ForeignKeyConstraint(
            ["version"],
            ["snapshots.version"],
        ),
        sa.PrimaryKeyConstraint("version", "kind"),
    )
    op.create_table(
        "safety_scores",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(length=100), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("ci_low", sa.Float(), nullable=True),
        sa.Column("ci_high", sa.Float(), nullable=True),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("measured_on", sa.Date(), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["models.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model_id", "metric", "source", "measured_on", name="one_score_per_measure"),
    )
    with op.batch_alter_table("safety_scores", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_safety_scores_metric"), ["metric"], unique=False)
        batch_op.create_index(batch_op.f("ix_safety_scores_model_id"), ["model_id"], unique=False)

    for table in ("messages", "recorded_answers"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in ("tokens", "header_count", "list_count", "bold_count"):
                batch_op.add_column(sa.Column(column, sa.Integer(), nullable=True))
    _count_styles("recorded_answers", "text", None)
    _count_styles("messages", "content", "role = 'assistant'")


def _count_styles(table: str, column: str, condition) -> None:
    """Style counts for the answers already stored, in batches (the ORM fills them for new ones)."""
    from arena.answer_style import style_counts

    connection = op.get_bind()
    where = f" WHERE {condition}" if condition else ""
    rows = connection.execute(sa.text(f"SELECT id, {column} FROM {table}{where}")).all()
    update = sa.text(
        f"UPDATE {table} SET tokens = :tokens, header_count = :header_count, "
        f"list_count = :list_count, bold_count = :bold_count WHERE id = :id"
    )
    for start in range(0, len(rows), 1000):
        connection.execute(update, [{"id": row[0], **style_counts(row[1] or "")} for row in rows[start : start + 1000]])


def downgrade() -> None:
    for table in ("recorded_answers", "messages"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in ("bold_count", "list_count", "header_count", "tokens"):
                batch_op.drop_column(column)

    with op.batch_alter_table("safety_scores", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_safety_scores_model_id"))
        batch_op.drop_index(batch_op.f("ix_safety_scores_metric"))

    op.drop_table("safety_scores")
    op.drop_table("snapshot_files")
    with op.batch_alter_table("voter_exclusions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_voter_exclusions_voter"))

    op.drop_table("voter_exclusions")
    op.drop_table("snapshots")
    op.drop_table("milestones")
