"""Every vote as cast, with its battle, in FastChat battle format (JSON Lines or CSV), oldest first: what
`arena votes export` writes and `python -m ranking` reads."""

from __future__ import annotations

import csv
import io
import json
from datetime import timezone

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from arena.models import Battle, Model, Prompt, Vote

_FASTCHAT_WINNER = {"a": "model_a", "b": "model_b", "tie": "tie", "bothbad": "tie (bothbad)"}

EXPORT_FIELDS = (
    "model_a",
    "model_b",
    "winner",
    "tstamp",
    "judge",
    "category",
    "battle_id",
    "source",
    "flagged",
    "state",
)


def vote_records(session: Session):
    """One FastChat-format dict per vote (plus battle_id, source, flagged, state), ordered by vote time."""
    model_a, model_b = aliased(Model), aliased(Model)
    statement = (
        select(
            model_a.name,
            model_b.name,
            Vote.winner,
            Vote.created_at,
            Vote.voter,
            Prompt.category,
            Battle.id,
            Battle.source,
            Battle.flagged,
            Battle.state,
        )
        .join(Battle, Vote.battle_id == Battle.id)
        .join(model_a, Battle.model_a_id == model_a.id)
        .join(model_b, Battle.model_b_id == model_b.id)
        .outerjoin(Prompt, Battle.prompt_id == Prompt.id)
        .order_by(Vote.created_at, Vote.id)
        .execution_options(yield_per=5000)
    )
    for a, b, winner, at, voter, category, battle_id, source, flagged, state in session.execute(statement):
        if at.tzinfo is None:  # SQLite keeps no zone; everything is stored in UTC
            at = at.replace(tzinfo=timezone.utc)
        record = {"model_a": a, "model_b": b, "winner": _FASTCHAT_WINNER[winner], "tstamp": at.timestamp()}
        if voter:
            record["judge"] = voter
        if category:
            record["category"] = category
        record.update(battle_id=battle_id, source=source, flagged=bool(flagged), state=state)
        yield record


def export_votes(session: Session, out: io.TextIOBase, fmt: str) -> int:
    count = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS, lineterminator="\n")
        writer.writeheader()
        for record in vote_records(session):
            record["flagged"] = "true" if record["flagged"] else "false"
            writer.writerow(record)
            count += 1
    else:
        for record in vote_records(session):
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count
