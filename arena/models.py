"""The arena's stored facts, as typed SQLAlchemy 2.0 models.

Raw facts only: battles, messages and votes are stored as they happened, with what was known at the time (the
battle's state, an identity-leak flag). Which votes count for the ranking is decided later, by the snapshot
builder, from these facts; nothing here is rewritten to "clean" the data.
"""

from __future__ import annotations

from datetime import date, datetime, timezone

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from arena.answer_style import style_counts
from arena.db import Base


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# Battle lifecycle: created -> streaming -> ready -> voted, or -> void.
BATTLE_STATES = ("created", "streaming", "ready", "voted", "void")
WINNERS = ("a", "b", "tie", "bothbad")
MODEL_KINDS = ("endpoint", "recorded")
MODEL_STATUSES = ("active", "paused", "retired")


class AnswerStyle:
    """How an answer looks, counted when it is stored (arena.answer_style; filled by the listener below).

    The snapshot builder's style-controlled board needs these for every counted battle; counting them once at
    write time keeps the answers' text out of the builder's query. NULL where the answer predates the counts.
    """

    tokens: Mapped[int | None] = mapped_column(Integer)
    header_count: Mapped[int | None] = mapped_column(Integer)
    list_count: Mapped[int | None] = mapped_column(Integer)
    bold_count: Mapped[int | None] = mapped_column(Integer)


class Lab(Base):
    __tablename__ = "labs"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    keys: Mapped[list["ApiKey"]] = relationship(back_populates="lab")
    models: Mapped[list["Model"]] = relationship(back_populates="lab")


class ApiKey(Base):
    """A lab's API key, stored only as its SHA-256 (the key is a long random token, so no salt is needed)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    lab_id: Mapped[int] = mapped_column(ForeignKey("labs.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # shown to operators to tell keys apart
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    lab: Mapped[Lab] = relationship(back_populates="keys")


class Model(Base):
    """A model in the arena: an OpenAI-compatible endpoint the arena calls, or recorded answers to the prompts."""

    __tablename__ = "models"
    __table_args__ = (
        CheckConstraint("kind in ('endpoint', 'recorded')", name="model_kind"),
        CheckConstraint("status in ('active', 'paused', 'retired')", name="model_status"),
        CheckConstraint("sampling_weight >= 0", name="model_weight"),
        # A deleted model's id stays in the audit log: SQLite must not hand it to a new model (migration 0005).
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    lab_id: Mapped[int | None] = mapped_column(ForeignKey("labs.id"), index=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    organization: Mapped[str] = mapped_column(String(200), default="")
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="active")
    sampling_weight: Mapped[float] = mapped_column(Float, default=1.0)
    # Endpoint models only. The endpoint's own key is stored encrypted (never returned by any response).
    base_url: Mapped[str | None] = mapped_column(String(2000))
    endpoint_model: Mapped[str | None] = mapped_column(String(200))
    endpoint_key_encrypted: Mapped[str | None] = mapped_column(Text)
    system_prompt: Mapped[str | None] = mapped_column(Text)
    sampling_params: Mapped[dict] = mapped_column(JSON, default=dict)
    # Other names the model or its makers go by, for identity-leak checks: aliases of this model, and the
    # families it belongs to ("Llama", "GPT"), both set by its lab or an operator (arena.leaderboard.integrity).
    aliases: Mapped[list] = mapped_column(JSON, default=list)
    families: Mapped[list] = mapped_column(JSON, default=list, server_default="[]")
    source: Mapped[str] = mapped_column(String(32), default="arena")  # "llmfao" for the demo's models
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    lab: Mapped[Lab | None] = relationship(back_populates="models")


class Prompt(Base):
    __tablename__ = "prompts"

    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    category: Mapped[str] = mapped_column(String(64), default="general")
    slug: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(32), default="arena")


class RecordedAnswer(AnswerStyle, Base):
    __tablename__ = "recorded_answers"
    __table_args__ = (UniqueConstraint("model_id", "prompt_id", name="one_answer_per_prompt"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"), index=True)
    text: Mapped[str] = mapped_column(Text)
    duration_ms: Mapped[float | None] = mapped_column(Float)  # how long the model took, for the replay


class Battle(Base):
    """Two anonymous answers to one prompt; sides 'a' and 'b' map to models only here, on the server."""

    __tablename__ = "battles"
    __table_args__ = (
        CheckConstraint("state in ('created', 'streaming', 'ready', 'voted', 'void')", name="battle_state"),
        CheckConstraint("model_a_id <> model_b_id", name="two_different_models"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # unguessable token
    prompt_id: Mapped[int | None] = mapped_column(ForeignKey("prompts.id"), index=True)
    prompt_text: Mapped[str] = mapped_column(Text)
    model_a_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    model_b_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    state: Mapped[str] = mapped_column(String(16), default="created")
    void_reason: Mapped[str | None] = mapped_column(Text)  # for operators; voters see a neutral message
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)  # an answer revealed its model's identity
    flag_reason: Mapped[str | None] = mapped_column(Text)
    voter: Mapped[str | None] = mapped_column(String(64), index=True)  # the session's anonymous voter id
    address_hash: Mapped[str | None] = mapped_column(String(64))  # keyed hash; raw addresses are never stored
    source: Mapped[str] = mapped_column(String(32), default="arena")
    sampling_policy: Mapped[str] = mapped_column(String(32), default="uniform")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    stream_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # the current turn's

    model_a: Mapped[Model] = relationship(foreign_keys=[model_a_id])
    model_b: Mapped[Model] = relationship(foreign_keys=[model_b_id])
    messages: Mapped[list["Message"]] = relationship(back_populates="battle", order_by="Message.id")
    vote: Mapped["Vote | None"] = relationship(back_populates="battle")


class Message(AnswerStyle, Base):
    """One turn of one side's conversation: the user's prompt or the model's answer, as it was received."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    battle_id: Mapped[str] = mapped_column(ForeignKey("battles.id"), index=True)
    side: Mapped[str] = mapped_column(String(1))
    turn: Mapped[int] = mapped_column(Integer, default=0)
    role: Mapped[str] = mapped_column(String(16))  # "user" or "assistant"
    content: Mapped[str] = mapped_column(Text, default="")
    complete: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)  # what failed, for operators
    first_token_ms: Mapped[float | None] = mapped_column(Float)
    duration_ms: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    battle: Mapped[Battle] = relationship(back_populates="messages")


class Vote(Base):
    """A vote as cast. At most one per battle (the unique battle_id is the last line of defence)."""

    __tablename__ = "votes"
    __table_args__ = (CheckConstraint("winner in ('a', 'b', 'tie', 'bothbad')", name="vote_winner"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    battle_id: Mapped[str] = mapped_column(ForeignKey("battles.id"), unique=True)
    winner: Mapped[str] = mapped_column(String(8))
    voter: Mapped[str | None] = mapped_column(String(64), index=True)
    address_hash: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(32), default="arena")  # "llmfao" for imported crowd votes
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)

    battle: Mapped[Battle] = relationship(back_populates="vote")


# ------------------------------------------------------------------------------------------------ labs' API


class EndpointCheck(Base):
    """One call to an endpoint model outside a battle: the check made at registration (later, health probes).

    With the battles' own answers (messages) these make the endpoint's health that its lab reads.
    """

    __tablename__ = "endpoint_checks"

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    ok: Mapped[bool] = mapped_column(Boolean)
    error_kind: Mapped[str | None] = mapped_column(String(16))  # a ProviderError kind
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class AuditEvent(Base):
    """One lab action (who, what, when, details), written in the transaction of the action itself.

    Append-only: nothing in the code updates or deletes a row, and the migration adds triggers that refuse
    UPDATE and DELETE. model_id is a plain integer, not a foreign key, so the record of a deleted model stays.
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    lab_id: Mapped[int | None] = mapped_column(ForeignKey("labs.id"), index=True)
    actor: Mapped[str] = mapped_column(String(200))  # the lab's name at the time, or "operator"
    key_prefix: Mapped[str | None] = mapped_column(String(16))  # which of the lab's keys acted
    action: Mapped[str] = mapped_column(String(64))  # e.g. "model.create", "model.pause", "key.rotate"
    model_id: Mapped[int | None] = mapped_column(Integer, index=True)
    details: Mapped[dict] = mapped_column(JSON, default=dict)


# ------------------------------------------------------------------------------------------------ leaderboard


class VoterExclusion(Base):
    """A voter whose votes the snapshot builder leaves out, with the reason and who decided it.

    Nothing is deleted: the voter's votes stay stored and appear in every snapshot's vote file, marked
    excluded with this reason. An exclusion is lifted by a later row with `lifted` set, so the record of both
    decisions stays.
    """

    __tablename__ = "voter_exclusions"

    id: Mapped[int] = mapped_column(primary_key=True)
    voter: Mapped[str] = mapped_column(String(64), index=True)
    reason: Mapped[str] = mapped_column(Text)
    lifted: Mapped[bool] = mapped_column(Boolean, default=False)
    actor: Mapped[str] = mapped_column(String(200), default="operator")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Snapshot(Base):
    """One published leaderboard, computed once and never changed.

    `document` is the snapshot exactly as published and signed (canonical JSON, see arena.leaderboard.builds); the other
    columns repeat what readers filter or sort on. Versions count up from 1 without gaps: the primary key makes
    a second builder that raced for the same version fail instead of publishing twice.
    """

    __tablename__ = "snapshots"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    code_version: Mapped[str] = mapped_column(String(100))
    seed: Mapped[int] = mapped_column(Integer)
    last_vote_id: Mapped[int] = mapped_column(Integer)  # the votes considered are those with id <= this
    votes_counted: Mapped[int] = mapped_column(Integer)
    votes_excluded: Mapped[int] = mapped_column(Integer)
    battle_file_sha256: Mapped[str] = mapped_column(String(64))
    document: Mapped[str] = mapped_column(Text)
    signature: Mapped[str] = mapped_column(Text)  # the signature block, JSON
    key_id: Mapped[str] = mapped_column(String(64))


class SnapshotFile(Base):
    """A file published with a snapshot, stored gzip-compressed: its battle file and its vote file."""

    __tablename__ = "snapshot_files"
    __table_args__ = (CheckConstraint("kind in ('battles', 'votes')", name="snapshot_file_kind"),)

    version: Mapped[int] = mapped_column(ForeignKey("snapshots.version"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))  # of the uncompressed bytes
    size: Mapped[int] = mapped_column(Integer)  # uncompressed bytes
    gzip: Mapped[bytes] = mapped_column(LargeBinary)


# ------------------------------------------------------------------------------------------------ milestone board


class SafetyScore(Base):
    """A safety measurement of a model, imported from elsewhere (the arena measures capability only)."""

    __tablename__ = "safety_scores"
    __table_args__ = (UniqueConstraint("model_id", "metric", "source", "measured_on", name="one_score_per_measure"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    metric: Mapped[str] = mapped_column(String(100), index=True)
    value: Mapped[float] = mapped_column(Float)
    ci_low: Mapped[float | None] = mapped_column(Float)
    ci_high: Mapped[float | None] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(200))
    measured_on: Mapped[date] = mapped_column(Date)
    imported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Milestone(Base):
    """A milestone as the board declared it: safety thresholds and a capability floor (see arena.board).

    Definitions are never edited: a changed rule is a new milestone, so a decision can always be traced to the
    rule it was made under.
    """

    __tablename__ = "milestones"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    definition: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


@event.listens_for(RecordedAnswer, "before_insert")
@event.listens_for(RecordedAnswer, "before_update")
@event.listens_for(Message, "before_insert")
@event.listens_for(Message, "before_update")
def _count_answer_style(_mapper, _connection, answer) -> None:
    """Every answer stored through the ORM gets its style counts; bulk inserts call style_counts themselves."""
    text = (
        answer.text if isinstance(answer, RecordedAnswer) else (answer.content if answer.role == "assistant" else None)
    )
    if text is not None:
        for column, value in style_counts(text).items():
            setattr(answer, column, value)
