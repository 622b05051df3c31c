"""Voters as the leaderboard sees them: the operators' exclusions (recorded with a reason, never deleted) and
the stable pseudonym each voter has in every published battle and vote file."""

from __future__ import annotations

import hashlib
import hmac

from sqlalchemy import select
from sqlalchemy.orm import Session

from arena.errors import BadRequest, Conflict, NotFound
from arena.models import Vote, VoterExclusion


def excluded_voters(session: Session) -> set[str]:
    """Voters whose latest exclusion record is in force (a later record with `lifted` lifts it)."""
    latest = {}
    for voter, lifted in session.execute(
        select(VoterExclusion.voter, VoterExclusion.lifted).order_by(VoterExclusion.id)
    ):
        latest[voter] = lifted
    return {voter for voter, lifted in latest.items() if not lifted}


def voter_exclusions(session: Session) -> list[VoterExclusion]:
    return list(session.scalars(select(VoterExclusion).order_by(VoterExclusion.id)))


def set_voter_exclusion(
    session: Session, secret_key: str, voter: str, reason: str, *, lifted: bool, actor: str = "operator"
) -> str:
    """Record an operator's decision to exclude a voter (or lift the exclusion); returns the voter's id.

    `voter` is a voter id as stored, or the pseudonym a snapshot's files show ("v" and 16 hex digits).
    Raises NotFound for a voter who never voted, BadRequest for an empty reason, Conflict for a no-op.
    """
    reason = reason.strip()
    if not reason:
        raise BadRequest("reason_required", "give a reason: it is published with every snapshot's vote file")
    voters = set(session.scalars(select(Vote.voter).where(Vote.voter.is_not(None)).distinct()))
    if voter not in voters:
        pseudonym = pseudonymiser(secret_key)
        matches = [v for v in voters if pseudonym(v) == voter]
        if not matches:
            raise NotFound(
                "voter_not_found", f"no vote was cast by a voter {voter!r} (give a voter id or a vote file's pseudonym)"
            )
        voter = matches[0]
    excluded = voter in excluded_voters(session)
    if excluded != lifted:
        raise Conflict("exclusion_unchanged", f"voter {voter!r} is {'already' if excluded else 'not'} excluded")
    session.add(VoterExclusion(voter=voter, reason=reason, lifted=lifted, actor=actor))
    session.commit()
    return voter


def pseudonymiser(secret_key: str):
    """Voter -> a stable pseudonym: a keyed hash, so voters can be told apart across snapshots (which the
    per-voter checks need) but not identified; the key never leaves the server."""
    key = hashlib.sha256(b"arena-voter-pseudonym:" + secret_key.encode()).digest()
    cache: dict[str | None, str | None] = {None: None}

    def pseudonym(voter: str | None) -> str | None:
        if voter not in cache:
            cache[voter] = "v" + hmac.new(key, voter.encode(), hashlib.sha256).hexdigest()[:16]
        return cache[voter]

    return pseudonym
