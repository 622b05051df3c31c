"""Faults under traffic, against a real gunicorn server on PostgreSQL: a worker SIGKILLed in the middle of votes,
PostgreSQL restarting, Redis stopping, and a model that never answers.

In each: every vote answered 2xx is in the database exactly once afterwards (the voters record the battles
whose votes were accepted; the database is counted), a vote whose answer was lost can be sent again safely (200,
or 409 when it had been stored), errors while a dependency is down are 503 with the one JSON error shape (never
a 500), and the service serves again by itself once the fault is over. PostgreSQL and Redis "restart" behind a
TCP proxy of ours (tests.reliability.harness.TcpProxy), never the machine's own servers.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import pytest
from sqlalchemy import create_engine, insert, select, update

from arena.battles.streaming import STORE_RETRY_DELAYS_S
from arena.loopback_model import LoopbackModelServer
from arena.models import Battle, Model
from tests.reliability.conftest import needs_server, through, upstream
from tests.reliability.harness import (
    Arena,
    Outcome,
    Server,
    TcpProxy,
    VoteStream,
    check_no_vote_lost_or_doubled,
    reset_postgres,
    seed,
    voter_cookie,
    wait_until,
)

VOTERS, BATTLES_PER_VOTER = 168, 16
FIRST_TOKEN_TIMEOUT = 2.5  # seconds; votes must not wait anywhere near this long behind the silent model
REDIS = ("127.0.0.1", 6379)


@dataclass
class Service:
    server: Server
    postgres: TcpProxy
    redis: TcpProxy
    models: LoopbackModelServer
    url: str  # the database, directly (the tests' own view, not through the proxy)
    arena: Arena
    _next: int = 0

    def voters(self, count: int) -> Arena:
        """`count` voters nobody has used yet, with their ready battles."""
        names = list(self.arena.ready)[self._next : self._next + count]
        assert len(names) == count, "seed more voters"
        self._next += count
        return Arena(self.arena.prompt_id, {name: self.arena.ready[name] for name in names})


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    url = needs_server()
    reset_postgres(url)
    arena = seed(url, voters=VOTERS, battles_per_voter=BATTLES_PER_VOTER)
    workdir = tmp_path_factory.mktemp("faults")
    with TcpProxy(upstream(url)) as postgres, TcpProxy(REDIS) as redis, LoopbackModelServer() as models:
        settings = {
            "ARENA_REDIS_URL": f"redis://127.0.0.1:{redis.port}/0",
            "ARENA_PROVIDER_CONNECT_TIMEOUT": "1",
            "ARENA_PROVIDER_FIRST_TOKEN_TIMEOUT": str(FIRST_TOKEN_TIMEOUT),
            "ARENA_PROVIDER_TOTAL_TIMEOUT": "5",
        }
        with Server(workdir, through(url, postgres.port), workers=2, threads=48, pool=6, extra=settings) as server:
            yield Service(server, postgres, redis, models, url, arena)


@dataclass
class BattleStream:
    """Voters who create battles on the prompt and read each stream to its end, as the pages do, until stopped."""

    base: str
    prompt_id: int
    threads: int = 2
    statuses: Counter = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list = field(default_factory=list)

    def start(self) -> "BattleStream":
        for _ in range(self.threads):
            thread = threading.Thread(target=self._run, daemon=True)
            self._workers.append(thread)
            thread.start()
        return self

    def stop(self) -> Counter:
        self._stop.set()
        for thread in self._workers:
            thread.join(15)
        return self.statuses

    def _run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=10) as client:
            while not self._stop.is_set():
                try:
                    created = client.post("/api/v1/battles", json={"prompt_id": self.prompt_id})
                    self.statuses[("create", created.status_code, _code(created))] += 1
                    if created.status_code == 201:
                        with client.stream("GET", created.json()["stream"]) as stream:
                            body = "".join(stream.iter_text())
                            self.statuses[("stream", stream.status_code, "end" in body)] += 1
                except httpx.HTTPError as error:
                    self.statuses[("transport", None, type(error).__name__)] += 1
                time.sleep(0.01)


def _code(response: httpx.Response) -> str | None:
    if response.status_code < 400:
        return None
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return "(not the JSON error shape)"


def resend(service: Service, outcomes: list[Outcome], arena: Arena) -> Counter:
    """Send again every vote whose answer was not 2xx: 200 if it had not been stored, 409 if it had."""
    owner = {battle: voter for voter, battles in arena.ready.items() for battle in battles}
    statuses = Counter()
    with httpx.Client(base_url=service.server.base, timeout=10) as client:
        for outcome in outcomes:
            if outcome.status is not None and 200 <= outcome.status < 300:
                continue
            client.cookies.set("session", voter_cookie(owner[outcome.battle_id]))
            response = client.post(f"/api/v1/battles/{outcome.battle_id}/vote", json={"winner": "a"})
            statuses[(response.status_code, _code(response))] += 1
            outcome.status = response.status_code if response.status_code < 300 else outcome.status
    assert set(statuses) <= {(200, None), (409, "already_voted")}, statuses
    return statuses


def recovered(service: Service, arena: Arena) -> None:
    """The service answers votes again (a few fresh ones, all 200) with no restart by anyone."""
    stream = VoteStream([service.server.base], arena, threads=2).start()
    outcomes = stream.wait(30)
    assert outcomes and all(o.status == 200 for o in outcomes), Counter((o.status, o.code) for o in outcomes)
    check_no_vote_lost_or_doubled(outcomes, service.url)


def test_a_worker_killed_in_the_middle_of_votes_loses_no_accepted_vote(service):
    arena = service.voters(24)
    stream = VoteStream([service.server.base], arena, threads=8, pause=0.003).start()
    wait_until(lambda: len(stream.outcomes) >= 60, 20, "votes flowing")
    victim = service.server.workers()[0]
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    outcomes = stream.wait(40)

    statuses = check_no_vote_lost_or_doubled(outcomes, service.url)
    assert not [key for key in statuses if key[0] is not None and key[0] != 200], statuses
    lost_answers = sum(n for (status, _code), n in statuses.items() if status is None)
    assert lost_answers <= 2 * stream.threads, statuses  # only requests in flight on (or bound for) the victim
    assert any(o.status == 200 and o.at > killed_at + 0.5 for o in outcomes), "no vote accepted after the kill"
    assert victim not in service.server.wait_for_workers()  # the master started a new worker in its place
    resend(service, outcomes, arena)
    check_no_vote_lost_or_doubled(outcomes, service.url)
    assert len(outcomes) == sum(len(b) for b in arena.ready.values())


def test_postgresql_restarting_under_traffic_answers_503_then_recovers(service):
    arena = service.voters(80)  # 1,280 battles: refused votes are fast, and the outage lasts 5 s
    stream = VoteStream([service.server.base], arena, threads=6, pause=0.05).start()
    battles = BattleStream(service.server.base, arena.prompt_id).start()
    wait_until(lambda: len(stream.outcomes) >= 40, 20, "votes flowing")
    service.postgres.cut()
    down_at = time.monotonic()
    # Longer than a finished battle's answers are retried (sum(STORE_RETRY_DELAYS_S), 3.5 s): a battle reader
    # whose stream was storing at the cut waits that long, then creates battles that must meet the outage.
    time.sleep(sum(STORE_RETRY_DELAYS_S) + 1.5)
    service.postgres.restore()
    up_at = time.monotonic()
    wait_until(
        lambda: sum(o.status == 200 and o.at > up_at + 0.5 for o in stream.outcomes) >= 20,
        20,
        "votes accepted again after the restart",
    )
    outcomes = stream.stop()
    created = battles.stop()

    statuses = check_no_vote_lost_or_doubled(outcomes, service.url)
    assert set(statuses) <= {(200, None), (503, "database_unavailable")}, statuses
    during = [o for o in outcomes if down_at + 0.2 < o.at < up_at - 0.2]
    assert during and all(o.status == 503 for o in during), Counter((o.status, o.code) for o in during)
    assert max(o.seconds for o in outcomes if o.status == 503) < 6  # refused at once, no hung worker
    assert {key[:2] for key in created} <= {("create", 201), ("create", 503), ("stream", 200), ("stream", 503)}, created
    assert created[("create", 503, "database_unavailable")] > 0 and created[("create", 201, None)] > 0, created
    assert "unhandled error" not in service.server.log_text()  # no 500 on any route, streams included
    resend(service, outcomes, arena)
    check_no_vote_lost_or_doubled(outcomes, service.url)
    recovered(service, service.voters(4))


def test_redis_stopping_under_traffic_loses_no_vote(service):
    """Redis holds what workers share (rate-limit counters); without it they fall back to their own memory."""
    arena = service.voters(16)
    service.redis.cut()
    try:
        stream = VoteStream([service.server.base], arena, threads=6, pause=0.005).start()
        battles = BattleStream(service.server.base, arena.prompt_id, threads=1).start()
        outcomes = stream.wait(40)
        created = battles.stop()
    finally:
        service.redis.restore()
    statuses = check_no_vote_lost_or_doubled(outcomes, service.url)
    assert set(statuses) == {(200, None)}, statuses
    assert {key[:2] for key in created} <= {("create", 201), ("stream", 200)}, created
    log = service.server.log_text()
    # the rate limiter (arena.ratelimit) said so, once per worker, and went on counting in memory
    assert "rate limits: Redis at" in log and "is unreachable" in log, log[-2000:]
    assert log.count("is unreachable") <= int(service.server.env["ARENA_WORKERS"])
    recovered(service, service.voters(4))


def test_a_model_that_never_answers_is_cut_by_the_timeouts_while_votes_go_on(service):
    engine = create_engine(service.url)
    with engine.begin() as connection:  # only these two answer typed prompts (recorded models cannot)
        hanging = [
            connection.execute(
                insert(Model)
                .values(
                    name=f"Silent {n}",
                    organization="Nobody",
                    kind="endpoint",
                    status="active",
                    sampling_weight=1.0,
                    base_url=service.models.base_url,
                    endpoint_model="never",
                    sampling_params={},
                    aliases=[],
                    source="arena",
                )
                .returning(Model.id)
            ).scalar_one()
            for n in (1, 2)
        ]
    streams, results = 24, []

    def hang_once():
        with httpx.Client(base_url=service.server.base, timeout=15) as client:
            started = time.monotonic()
            created = client.post("/api/v1/battles", json={"prompt": "Are you there?"})
            assert created.status_code == 201, created.text
            with client.stream("GET", created.json()["stream"]) as stream:
                body = "".join(stream.iter_text())
            results.append((created.json()["id"], time.monotonic() - started, body))

    try:
        arena = service.voters(16)
        hangers = [threading.Thread(target=hang_once, daemon=True) for _ in range(streams)]
        for thread in hangers:
            thread.start()
        wait_until(lambda: len(service.models.requests) >= 2 * streams, 10, "every stream waiting on the model")
        votes = VoteStream([service.server.base], arena, threads=4, pause=0.005).start()
        outcomes = votes.wait(40)
        for thread in hangers:
            thread.join(15)
    finally:
        with engine.begin() as connection:
            connection.execute(update(Model).where(Model.id.in_(hanging)).values(status="retired"))

    statuses = check_no_vote_lost_or_doubled(outcomes, service.url)
    assert set(statuses) == {(200, None)}, statuses
    voting = sorted(o.seconds for o in outcomes)
    assert voting[int(0.99 * (len(voting) - 1))] < FIRST_TOKEN_TIMEOUT, "votes waited behind the silent model"
    assert len(results) == streams
    for battle_id, seconds, body in results:
        assert FIRST_TOKEN_TIMEOUT * 0.9 < seconds < FIRST_TOKEN_TIMEOUT + 3, seconds
        assert "event: error" in body and '"state": "void"' in body, body[-300:]
    with engine.connect() as connection:
        states = connection.execute(
            select(Battle.state, Battle.void_reason).where(Battle.id.in_([r[0] for r in results]))
        ).all()
    engine.dispose()
    assert len(states) == streams and all(state == "void" and reason for state, reason in states), states[:3]
    recovered(service, service.voters(4))
