"""What identifies a model to a voter, and the check that an answer reveals it.

A model's identity is its name, its organisation, and the aliases and families registered for it (by its lab,
which can only add, or an operator). The battle's stream flags an answer that names its model at the time;
every snapshot build checks the stored answers again (rule identity_leak, arena.leaderboard.integrity).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from sqlalchemy.orm import Session

from arena.catalog.audit import Actor, record_action
from arena.errors import BadRequest
from arena.models import Model


class Identity(NamedTuple):
    """What identifies a model to a voter: revealed after the vote, and looked for in its answers before."""

    name: str
    organization: str
    aliases: tuple[str, ...] = ()
    families: tuple[str, ...] = ()  # the model families it belongs to ("Llama", "GPT"): naming one reveals it

    @classmethod
    def of(cls, model: Model) -> "Identity":
        return cls(model.name, model.organization, tuple(model.aliases or ()), tuple(model.families or ()))


def _normalise(text: str) -> str:
    return " " + re.sub(r"[^0-9a-z]+", " ", text.lower()).strip() + " "


def identity_leak(answer: str, model: Model | Identity) -> str | None:
    """The name, organisation, alias or family of `model` that `answer` reveals, if any.

    Case, punctuation and spacing are ignored ("GPT-3.5 turbo" matches "GPT 3.5 Turbo"), and matches are whole
    words, so an organisation called "Meta" does not match "metaphor".
    """
    text = _normalise(answer)
    for label in [model.name, model.organization, *(model.aliases or []), *(model.families or [])]:
        needle = _normalise(label or "")
        if needle.strip() and needle in text:
            return label
    return None


_LABEL_SPACE = re.compile(r"\s+")


def clean_labels(values, field: str) -> list[str]:
    """A list of identity labels (aliases, families) as given by a lab or an operator: strings, stripped,
    without duplicates; raises BadRequest with a message naming the field."""
    if values is None:
        return []
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise BadRequest("invalid_request", f"{field} must be a list of strings")
    if len(values) > 50:
        raise BadRequest("invalid_request", f"{field}: at most 50 names")
    out: list[str] = []
    for value in values:
        label = _LABEL_SPACE.sub(" ", value).strip()
        if not label or len(label) > 200:
            raise BadRequest("invalid_request", f"{field}: each name must have 1 to 200 characters")
        if not re.search(r"[0-9A-Za-z]", label):
            raise BadRequest("invalid_request", f"{field}: {label!r} has no letter or digit to look for")
        if label.lower() not in (o.lower() for o in out):
            out.append(label)
    return out


def merge_labels(current, wanted: list[str]) -> tuple[list[str], list[str]]:
    """(current + the wanted labels not already there, case-insensitively; the ones added)."""
    have = list(current or [])
    known = {label.lower() for label in have}
    added = [label for label in wanted if label.lower() not in known]
    return have + added, added


def set_identity_labels(
    session: Session, model, *, add_aliases=(), add_families=(), remove_aliases=(), remove_families=(), actor: Actor
) -> dict:
    """Add (or, for an operator, remove) a model's aliases and families, with one audit record; the caller
    commits. Returns what changed ({"aliases": {"added": [...], "removed": [...]}, ...}, empty if nothing).

    Labs can only add: an answer that names its maker's family reveals the model whatever the lab says later,
    and removing a name would let votes on such answers count again. The next snapshot build re-checks every
    stored answer against the names as they are then (rule identity_leak)."""
    changes: dict = {}
    for field, add, remove in (("aliases", add_aliases, remove_aliases), ("families", add_families, remove_families)):
        labels, added = merge_labels(getattr(model, field), clean_labels(list(add), field))
        gone = {label.lower() for label in clean_labels(list(remove), field)}
        removed = [label for label in labels if label.lower() in gone]
        labels = [label for label in labels if label.lower() not in gone]
        if added or removed:
            setattr(model, field, labels)
            changes[field] = {key: value for key, value in (("added", added), ("removed", removed)) if value}
    if changes:
        record_action(
            session,
            actor,
            "model.identity",
            lab_id=model.lab_id,
            model_id=model.id,
            details={"name": model.name, **changes},
        )
    return changes
