"""The arena's stored facts, as typed SQLAlchemy 2.0 models.

Raw facts only: battles, messages and votes are stored as they happened, with what was known at the time (the
battle's state, an identity-leak flag). Which votes count for the ranking is decided later, by the snapshot
builder, from these facts; nothing here is rewritten to "clean" the data.
"""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (JSON, Boolean, CheckConstraint, DateTime, Float, ForeignKey, Integer, String, Text,
                        UniqueConstraint)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from arena.db import Base


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# Battle lifecycle: created -> streaming -> ready -> voted, or -> void.
BATTLE_STATES = ("created", "streaming", "ready", "voted", "void")
WINNERS = ("a", "b", "tie", "bothbad")
MODEL_KINDS = ("endpoint", "recorded")
MODEL_STATUSES = ("active", "paused", "retired")


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
    # Other names the model or its makers go by, for identity-leak checks (family names, aliases).
    aliases: Mapped[list] = mapped_column(JSON, default=list)
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


class RecordedAnswer(Base):
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

    model_a: Mapped[Model] = relationship(foreign_keys=[model_a_id])
    model_b: Mapped[Model] = relationship(foreign_keys=[model_b_id])
    messages: Mapped[list["Message"]] = relationship(back_populates="battle", order_by="Message.id")
    vote: Mapped["Vote | None"] = relationship(back_populates="battle")


class Message(Base):
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
