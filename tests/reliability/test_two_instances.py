"""Two service instances on different ports, sharing one PostgreSQL and one Redis, as two hosts behind a load
balancer would: votes spread over both are stored once (the same vote sent to both at once counts once), the
rate limits hold across both (their counts are in Redis), and one leaderboard snapshot is built at a time (the
PostgreSQL advisory lock of arena.leaderboard.locks, which a third process holding it keeps both instances'
builders from building)."""

from __future__ import annotations

import threading
from collections import Counter

import httpx
import pytest
from sqlalchemy import create_engine, select

from arena.leaderboard import builds, locks
from arena.models import Snapshot
from tests.reliability.conftest import needs_server
from tests.reliability.harness import (
    Arena,
    Server,
    VoteStream,
    check_no_vote_lost_or_doubled,
    reset_postgres,
    seed,
    voter_cookie,
    votes_in_database,
    wait_until,
)

VOTERS, BATTLES_PER_VOTER = 48, 16
VOTES_PER_VOTER_LIMIT = 20  # per minute, per voter: the shared limit the rate-limit test runs into
SNAPSHOT_EVERY_VOTES = 100
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="module")
def instances(tmp_path_factory):
    url = needs_server()
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping()
    except Exception as error:  # noqa: BLE001 - any reason Redis is not there
        pytest.skip(f"needs Redis at {REDIS_URL}: {error}")
    reset_postgres(url)
    arena = seed(url, voters=VOTERS, battles_per_voter=BATTLES_PER_VOTER)
    workdir = tmp_path_factory.mktemp("two")
    settings = {
        "ARENA_REDIS_URL": REDIS_URL,
        "ARENA_RATE_LIMIT_VOTES_PER_VOTER": f"{VOTES_PER_VOTER_LIMIT}/minute",
        "ARENA_SNAPSHOT_EVERY_VOTES": str(SNAPSHOT_EVERY_VOTES),
        "ARENA_SNAPSHOT_REPLICATES": "20",
        "ARENA_SNAPSHOT_STYLE_REPLICATES": "10",
        "ARENA_PROVISIONAL_VOTES": "5",
        "ARENA_BUILDER_CHECK_SECONDS": "0.2",
    }
    with (
        Server(workdir, url, name="one", workers=2, threads=24, pool=4, extra=settings, builder=True) as one,
        Server(workdir, url, name="two", workers=2, threads=24, pool=4, extra=settings, builder=True) as two,
    ):
        yield one, two, url, arena


def _split(arena: Arena, *counts: int) -> list[Arena]:
    names, parts, start = list(arena.ready), [], 0
    for count in counts:
        parts.append(Arena(arena.prompt_id, {name: arena.ready[name] for name in names[start : start + count]}))
        start += count
    return parts


def _snapshot_versions(url: str) -> list[int]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(select(Snapshot.version).order_by(Snapshot.version)).scalars())
    finally:
        engine.dispose()


def test_votes_spread_over_two_instances_count_once_and_one_snapshot_is_built_at_a_time(instances):
    one, two, url, arena = instances
    spread, racing = _split(arena, 36, 4)
    engine = create_engine(url)
    try:
        # A third party holds the snapshot lock: neither host's builder may build, however many votes are due.
        with locks.try_exclusive(engine, builds.LOCK_NAME) as held:
            assert held
            stream = VoteStream([one.base, two.base], spread, threads=6, spread=True).start()
            outcomes = stream.wait(60)
            statuses = check_no_vote_lost_or_doubled(outcomes, url)
            assert set(statuses) == {(200, None)}, statuses
            assert len(outcomes) == 36 * BATTLES_PER_VOTER > 5 * SNAPSHOT_EVERY_VOTES

            # The same vote sent to both instances at the same moment: one 200, one 409, one row.
            answers = Counter()
            for voter, battles in racing.ready.items():  # two requests per battle: under the voter's limit
                for battle in battles[: VOTES_PER_VOTER_LIMIT // 2]:
                    answers[_race(voter, battle, one.base, two.base)] += 1
            assert answers == {(200, 409): len(racing.ready) * (VOTES_PER_VOTER_LIMIT // 2)}, answers
            check_no_vote_lost_or_doubled([], url)
            # both builders looked twice more since every vote was in, and were refused the lock each time
            looked = {server.name: server.heartbeat().get("checks", 0) for server in (one, two)}
            for server in (one, two):
                wait_until(
                    lambda: server.heartbeat().get("checks", 0) >= looked[server.name] + 2,
                    90,
                    f"builder {server.name} to look for due votes again",
                    step=0.1,
                )
            assert _snapshot_versions(url) == []  # due votes, both builders looked: nobody built
        # Released: one of the two builders builds, once.
        try:
            wait_until(lambda: _snapshot_versions(url), 90, "a snapshot built once the lock was free", step=0.5)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{one.tail(30)}\n{two.tail(30)}") from None
    finally:
        engine.dispose()
    versions = _snapshot_versions(url)
    assert versions == list(range(1, len(versions) + 1))
    logs = one.log_text() + two.log_text()
    assert "snapshot build failed" not in logs and "unhandled error" not in logs, logs[-3000:]


def _race(voter: str, battle: str, *bases: str) -> tuple[int, ...]:
    barrier, statuses = threading.Barrier(len(bases)), []
    cookie = voter_cookie(voter)  # signed here: the sending threads never build a Flask app

    def send(base):
        with httpx.Client(base_url=base, timeout=10, cookies={"session": cookie}) as client:
            client.get("/api/v1/sampling")  # connected and warm, so that both votes leave together
            barrier.wait()
            response = client.post(f"/api/v1/battles/{battle}/vote", json={"winner": "tie"})
            statuses.append(response.status_code)
            if response.status_code == 409:
                assert response.json()["error"]["code"] == "already_voted"

    threads = [threading.Thread(target=send, args=(base,)) for base in bases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    return tuple(sorted(statuses))


def test_a_rate_limit_holds_across_both_instances(instances):
    one, two, url, arena = instances
    voter = list(arena.ready)[-1]
    battles = arena.ready[voter]
    extra = seed_more(url, voter, VOTES_PER_VOTER_LIMIT + 8 - len(battles))
    battles = battles + extra
    statuses = []
    clients = [
        httpx.Client(base_url=base, timeout=10, cookies={"session": voter_cookie(voter)})
        for base in (one.base, two.base)
    ]
    try:
        for n, battle in enumerate(battles):  # alternating instances, and so their four workers
            response = clients[n % 2].post(f"/api/v1/battles/{battle}/vote", json={"winner": "a"})
            statuses.append((response.status_code, response.json().get("error", {}).get("code")))
    finally:
        for client in clients:
            client.close()
    counts = Counter(statuses)
    assert counts == {(200, None): VOTES_PER_VOTER_LIMIT, (429, "rate_limited"): len(battles) - VOTES_PER_VOTER_LIMIT}
    stored = votes_in_database(url)
    assert sum(stored[battle] for battle in battles) == VOTES_PER_VOTER_LIMIT  # the 429s stored nothing


def seed_more(url: str, voter: str, count: int) -> list[str]:
    """`count` more ready battles for `voter` (copies of one of theirs)."""
    import secrets

    from sqlalchemy import insert

    from arena.models import Battle

    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            model = connection.execute(
                select(Battle.model_a_id, Battle.model_b_id, Battle.prompt_id).where(Battle.voter == voter).limit(1)
            ).one()
            ids = [secrets.token_urlsafe(16) for _ in range(max(0, count))]
            if ids:
                connection.execute(
                    insert(Battle),
                    [
                        dict(
                            id=i,
                            prompt_id=model.prompt_id,
                            prompt_text="?",
                            model_a_id=model.model_a_id,
                            model_b_id=model.model_b_id,
                            state="ready",
                            voter=voter,
                        )
                        for i in ids
                    ],
                )
            return ids
    finally:
        engine.dispose()
