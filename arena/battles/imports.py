"""Historical battles from a battle file (FastChat JSON, JSON Lines or CSV), stored as voted battles of models
the arena already has, all of them or none (`arena battles import`)."""

from __future__ import annotations

import math
import os
import re
from datetime import datetime, timedelta, timezone

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from arena.catalog.audit import Actor, record_action
from arena.errors import BadRequest, Conflict, NotFound
from arena.models import Battle, Model, Vote

SOURCE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")
# Outcome code (ranking.data: A_WINS, B_WINS, TIE, TIE_BOTHBAD) -> Vote.winner.
_WINNER_OF_OUTCOME = ("a", "b", "tie", "bothbad")
_VOTER_MAX = 64


def import_battles(session: Session, actor: Actor, battles, *, source: str, file_name: str) -> int:
    """Store encoded battles (ranking.data.Battles) as voted battles with their votes, and the import's audit
    record, in one transaction. `source` is recorded with each battle and vote and prefixes their voters.

    Battle ids derive from the file's sha256 and the row, so importing the same file twice is refused.
    A row's tstamp becomes its battle's and vote's time; rows without one get the import time (kept in file
    order by microsecond steps). Categories are not stored: a battle's category is its prompt's, and these
    battles have no prompt.
    """
    if not SOURCE_NAME.fullmatch(source) or source == "arena":
        raise BadRequest(
            "invalid_source",
            f"--source {source!r} must be 1-32 of a-z 0-9 _ . - and not 'arena' (which marks votes cast here)",
        )
    ids = dict(session.execute(select(Model.name, Model.id).where(Model.name.in_(battles.models))).all())
    unknown = [name for name in battles.models if name not in ids]
    if unknown:
        raise NotFound("model_not_found", f"unknown model(s), add them first: {', '.join(unknown)}")
    a, b, outcome = battles.model_a.tolist(), battles.model_b.tolist(), battles.outcome.tolist()
    same = [i + 1 for i in range(len(a)) if a[i] == b[i]]
    if same:
        raise BadRequest("same_model", f"battle(s) {_first(same)} put a model against itself")
    voters = [f"{source}:{v}" for v in battles.voters]
    too_long = [v for v in voters if len(v) > _VOTER_MAX]
    if too_long:
        raise BadRequest(
            "voter_too_long", f"voter name(s) longer than {_VOTER_MAX - len(source) - 1} characters: {too_long[0]!r}"
        )
    prefix = f"imp-{battles.sha256[:12]}-" if battles.sha256 else f"imp-{os.urandom(6).hex()}-"
    if session.scalars(select(Battle.id).where(Battle.id.startswith(prefix)).limit(1)).first() is not None:
        raise Conflict("already_imported", "this battle file was already imported (its battles exist)")
    now = datetime.now(timezone.utc)
    voter_codes, stamps = battles.voter.tolist(), battles.tstamp.tolist()
    battle_rows, vote_rows = [], []
    for i in range(len(a)):
        try:
            at = (
                datetime.fromtimestamp(stamps[i], timezone.utc)
                if math.isfinite(stamps[i])
                else now + timedelta(microseconds=i)
            )
        except (OverflowError, OSError, ValueError):
            raise BadRequest("invalid_tstamp", f"battle {i + 1}: tstamp {stamps[i]} is out of range") from None
        battle_id = f"{prefix}{i + 1}"
        voter = voters[voter_codes[i]] if voter_codes[i] >= 0 else None
        battle_rows.append(
            {
                "id": battle_id,
                "prompt_id": None,
                "prompt_text": "",
                "model_a_id": ids[battles.models[a[i]]],
                "model_b_id": ids[battles.models[b[i]]],
                "state": "voted",
                "flagged": False,
                "voter": voter,
                "source": source,
                "sampling_policy": "imported",
                "created_at": at,
            }
        )
        vote_rows.append(
            {
                "battle_id": battle_id,
                "winner": _WINNER_OF_OUTCOME[outcome[i]],
                "voter": voter,
                "source": source,
                "created_at": at,
            }
        )
    record_action(
        session,
        actor,
        "battles.import",
        details={"file": file_name, "sha256": battles.sha256, "source": source, "battles": len(battle_rows)},
    )
    try:
        session.execute(insert(Battle), battle_rows)
        session.execute(insert(Vote), vote_rows)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return len(battle_rows)


def _first(numbers: list[int], shown: int = 10) -> str:
    text = ", ".join(map(str, numbers[:shown]))
    return text + (f" and {len(numbers) - shown} more" if len(numbers) > shown else "")
