"""What an operator's probes and dashboards ask of a running arena: is it ready to serve, and what state is it in.

- readiness (`/readyz`): the database answers a `SELECT 1`, and this host's snapshot builder beat recently
  (arena.leaderboard.builder's heartbeat; not asked on a host with ARENA_READY_NEEDS_BUILDER=0). A load balancer
  sends no traffic to an instance that is not ready; `/healthz` only says the process answers.
- state (`/metrics`): gauges read from the database at each scrape, beside the processes' event counts
  (arena.metrics).
"""

from __future__ import annotations

import time
from typing import NamedTuple

from flask import Flask
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from arena import db
from arena.errors import Unavailable, one_line
from arena.leaderboard.builder import builder_alive
from arena.leaderboard.reading import as_utc
from arena.models import BATTLE_STATES, Battle, Snapshot, Vote
from arena.settings import settings_of


class Readiness(NamedTuple):
    ready: bool
    checks: dict[str, str]  # each check: "ok", or what is wrong


def readiness(app: Flask) -> Readiness:
    """Each check's result; ready when all are ok."""
    checks = {}
    try:
        with db.new_session(app) as session:
            session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as error:  # noqa: BLE001 - any failure to reach the database means not ready
        checks["database"] = f"unreachable: {one_line(error)}"
    if settings_of(app).ready_needs_builder:
        checks["builder"] = (
            "ok"
            if builder_alive(settings_of(app))
            else (
                "no recent heartbeat from this host's snapshot builder (arena serve starts it; arena builder runs it)"
            )
        )
    return Readiness(all(result == "ok" for result in checks.values()), checks)


def require_ready(app: Flask) -> dict[str, str]:
    """The checks, all ok; else Unavailable not_ready (503) naming each failed one."""
    result = readiness(app)
    if not result.ready:
        failed = "; ".join(f"{name}: {why}" for name, why in result.checks.items() if why != "ok")
        raise Unavailable("not_ready", f"not ready: {failed}", details=result.checks)
    return result.checks


def database_gauges(session: Session, *, now: float | None = None) -> list[GaugeMetricFamily]:
    """The arena's state, as the database has it now: three aggregate queries (the battle count reads the whole
    table, tens of milliseconds per million battles on PostgreSQL, once per scrape)."""
    counts = dict(session.execute(select(Battle.state, func.count()).group_by(Battle.state)).all())
    battles = GaugeMetricFamily("arena_battles_by_state", "Battles in each state now", labels=["state"])
    for state in BATTLE_STATES:
        battles.add_metric([state], counts.get(state, 0))
    votes = GaugeMetricFamily(
        "arena_votes_stored",
        "Votes stored (counted or not: a snapshot's rules decide)",
        value=session.scalar(select(func.count()).select_from(Vote)) or 0,
    )
    newest = session.execute(
        select(Snapshot.version, Snapshot.created_at).order_by(Snapshot.version.desc()).limit(1)
    ).first()
    families = [
        battles,
        votes,
        GaugeMetricFamily(
            "arena_snapshot_version",
            "The newest snapshot's version (0: none yet)",
            value=newest.version if newest else 0,
        ),
    ]
    if newest is not None:
        age = (now if now is not None else time.time()) - as_utc(newest.created_at).timestamp()
        families.append(
            GaugeMetricFamily("arena_snapshot_age_seconds", "Seconds since the newest snapshot was built", value=age)
        )
    return families


def state_families(app: Flask) -> list[GaugeMetricFamily]:
    """The database gauges, and arena_database_up: 0 (and no gauges) when the database cannot be read, so that a
    scrape still brings the processes' counts while it is away."""
    try:
        with db.new_session(app) as session:
            families = database_gauges(session)
    except Exception:  # noqa: BLE001 - reported as arena_database_up 0
        families, up = [], 0
    else:
        up = 1
    return families + [GaugeMetricFamily("arena_database_up", "Whether this scrape could read the database", value=up)]
