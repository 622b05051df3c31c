"""What a lab reads of its model: battles, votes by counting rule, the endpoint's health, and its line on
the newest leaderboard snapshot (read, never computed here: the caller passes the newest published document and
the voters excluded, both from arena.leaderboard)."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from arena.models import Battle, EndpointCheck, Message, Model, RecordedAnswer, Vote

HEALTH_WINDOW = 100  # the error rate is over this many of the newest calls


def _involves(model_id: int):
    return or_(Battle.model_a_id == model_id, Battle.model_b_id == model_id)


def _utc(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:  # SQLite keeps no zone; everything is stored in UTC
        return moment.replace(tzinfo=timezone.utc)
    return moment


def endpoint_health(session: Session, model: Model) -> dict:
    """Last success, last error and error rate over the newest calls of the current endpoint: its check (at
    registration or at the last change) and its answers in battles since then."""
    since = session.scalar(select(func.max(EndpointCheck.created_at)).where(EndpointCheck.model_id == model.id))
    own_answer = and_(
        Message.role == "assistant",
        or_(
            and_(Battle.model_a_id == model.id, Message.side == "a"),
            and_(Battle.model_b_id == model.id, Message.side == "b"),
        ),
    )
    if since is not None:
        own_answer = and_(own_answer, Message.created_at >= since)
    answers = session.execute(
        select(Message.created_at, Message.complete, Message.error)
        .join(Battle, Message.battle_id == Battle.id)
        .where(own_answer)
        .order_by(Message.created_at.desc())
        .limit(HEALTH_WINDOW)
    ).all()
    checks = (
        session.execute(
            select(EndpointCheck.created_at, EndpointCheck.ok, EndpointCheck.error)
            .where(EndpointCheck.model_id == model.id, EndpointCheck.created_at >= since)
            .order_by(EndpointCheck.created_at.desc())
            .limit(HEALTH_WINDOW)
        ).all()
        if since is not None
        else []
    )
    calls = sorted(
        ((_utc(at), bool(ok), error) for at, ok, error in [*answers, *checks]), key=lambda c: c[0], reverse=True
    )[:HEALTH_WINDOW]
    last_success = max((at for at, ok, _ in calls if ok), default=None)
    last_error = next(({"at": at, "message": error or "failed"} for at, ok, error in calls if not ok), None)
    if last_success is None:  # older than the window, if at all
        last_success = _utc(
            session.scalar(
                select(func.max(Message.created_at))
                .join(Battle, Message.battle_id == Battle.id)
                .where(own_answer, Message.complete.is_(True))
            )
        )
    return {
        "since": _utc(since),
        "last_success_at": last_success,
        "last_error": last_error,
        "calls": len(calls),
        "error_rate": (sum(1 for _, ok, _ in calls if not ok) / len(calls)) if calls else None,
    }


def _leaderboard_entry(model: Model, document: dict | None) -> dict:
    """The model's line on the newest snapshot's overall board (read, never computed here)."""
    row = (
        None
        if document is None
        else next((r for r in document["boards"]["overall"]["models"] if r["model"] == model.name), None)
    )
    entry = (
        None
        if document is None
        else next((e for e in document.get("models", []) if e["model"] == model.name and "votes" in e), None)
    )
    # what the snapshot's counting rules (integrity rules included) did with the votes of this model's battles
    counted_votes = None if entry is None else entry["votes"]["counted"]
    excluded_votes = None if entry is None else entry["votes"]["excluded"]
    if row is None:
        note = (
            "No leaderboard snapshot has been published yet."
            if document is None
            else f"Snapshot {document['version']} does not rank this model: it had no counted vote by then."
        )
        return {
            "rating": None,
            "interval": None,
            "rank": None,
            "tier": None,
            "provisional": None,
            "snapshot": None if document is None else str(document["version"]),
            "counted_votes": counted_votes,
            "excluded_votes": excluded_votes,
            "note": note,
        }
    return {
        "rating": row["rating"],
        "interval": [row["ci_low"], row["ci_high"]],
        "rank": row["rank_ub"],
        "tier": row["tier"],
        "provisional": row["provisional"],
        "snapshot": str(document["version"]),
        "counted_votes": counted_votes,
        "excluded_votes": excluded_votes,
        "note": f"Snapshot {document['version']} of {document['created_at']}: rank upper bound {row['rank_ub']}, "
        f"tier {row['tier']}, {row['battles']} counted votes"
        f"{' (provisional)' if row['provisional'] else ''}.",
    }


def model_status(session: Session, model: Model, *, newest: dict | None, excluded_voters: set[str]) -> dict:
    """Everything the ModelOut response holds, as plain values. `newest`: the newest published snapshot
    (arena.leaderboard.reading.newest_document); `excluded_voters`: the voters an operator excluded
    (arena.leaderboard.voters.excluded_voters), whose votes no snapshot counts."""
    involves = _involves(model.id)
    battles = session.scalar(select(func.count()).select_from(Battle).where(involves)) or 0
    counted = identity_leak = not_voted = voter_excluded = 0
    # the snapshot builder's rules, in its order (arena.leaderboard.builds.COUNTING_RULES)
    by_excluded_voter = Vote.voter.in_(excluded_voters)
    for state, flagged, excluded, n in session.execute(
        select(Battle.state, Battle.flagged, by_excluded_voter, func.count(Vote.id))
        .join(Vote, Vote.battle_id == Battle.id)
        .where(involves)
        .group_by(Battle.state, Battle.flagged, by_excluded_voter)
    ):
        if state != "voted":
            not_voted += n
        elif flagged:
            identity_leak += n
        elif excluded:
            voter_excluded += n
        else:
            counted += n
    answers = (
        session.scalar(select(func.count()).select_from(RecordedAnswer).where(RecordedAnswer.model_id == model.id)) or 0
    )
    return {
        "id": model.id,
        "name": model.name,
        "organization": model.organization,
        "kind": model.kind,
        "status": model.status,
        "created_at": _utc(model.created_at),
        "endpoint": (
            {
                "base_url": model.base_url,
                "model": model.endpoint_model,
                "has_api_key": model.endpoint_key_encrypted is not None,
            }
            if model.kind == "endpoint"
            else None
        ),
        "system_prompt": model.system_prompt,
        "sampling_params": model.sampling_params or {},
        "aliases": list(model.aliases or []),
        "families": list(model.families or []),
        "recorded_answers": answers,
        "health": endpoint_health(session, model) if model.kind == "endpoint" else None,
        "battles": battles,
        "votes": {
            "counted": counted,
            "excluded": identity_leak + not_voted + voter_excluded,
            "excluded_by_reason": {
                "identity_leak": identity_leak,
                "battle_void": not_voted,
                "voter_excluded": voter_excluded,
            },
        },
        "leaderboard": _leaderboard_entry(model, newest),
        "deletable": counted + voter_excluded == 0,
    }
