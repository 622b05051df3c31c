"""The request-side gates on voting: the proof-of-work challenge and the rate limits, through the voters' API."""

import hashlib
import logging
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from arena.battles import challenge, lifecycle
from arena.models import Vote
from arena.settings import Settings, SettingsError, override, settings_of
from arena.web import openapi, ratelimit
from tests.arena.conftest import gen_endpoint_model

REPO = Path(__file__).resolve().parents[2]
BITS = 10  # small enough that the Python solver takes a millisecond or so


@pytest.fixture
def gated(app):
    override(app, VOTE_CHALLENGE=True, VOTE_CHALLENGE_BITS=BITS)
    return app


def ready_battle(client, prompt_id) -> dict:
    created = client.post("/api/v1/battles", json={"prompt_id": prompt_id})
    assert created.status_code == 201, created.get_json()
    stream = client.get(f"/api/v1/battles/{created.get_json()['id']}/stream")
    assert stream.status_code == 200 and b'"state": "ready"' in stream.data  # read to the end: the battle is ready
    return created.get_json()


def votes_stored(session) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(Vote))


# ------------------------------------------------------------------------------------------------ challenge


def test_a_battle_carries_its_challenge_and_a_solved_vote_counts(gated, client, session, prompt_id):
    battle = ready_battle(client, prompt_id)
    issued = battle["challenge"]
    openapi.BattleCreated.model_validate(battle)  # as the OpenAPI document describes it
    assert issued == {"algorithm": "sha256", "salt": challenge.salt("test-secret", battle["id"]), "difficulty": BITS}
    assert client.get(f"/api/v1/battles/{battle['id']}").get_json()["challenge"] == issued  # a reloaded page

    proof = challenge.solve(issued)
    digest = hashlib.sha256(f"{issued['salt']}:{proof}".encode()).digest()
    assert int.from_bytes(digest, "big") >> (256 - BITS) == 0  # the contract's formula, checked independently

    voted = client.post(f"/api/v1/battles/{battle['id']}/vote", json={"winner": "a", "proof": proof})
    assert voted.status_code == 200, voted.get_json()
    assert votes_stored(session) == 1
    assert "challenge" not in client.get(f"/api/v1/battles/{battle['id']}").get_json()  # nothing left to solve


@pytest.mark.parametrize("proof", [None, "", 7, ["0"], "x" * 65])
def test_a_vote_without_a_valid_proof_is_refused_and_not_stored(gated, client, session, prompt_id, proof):
    battle = ready_battle(client, prompt_id)
    body = {"winner": "a"} if proof is None else {"winner": "a", "proof": proof}
    refused = client.post(f"/api/v1/battles/{battle['id']}/vote", json=body)
    # a missing or empty proof fails the challenge; one that is not a string of at most 64 characters is not what
    # the document allows, and is refused before the challenge is looked at
    wanted = (403, "challenge_failed") if proof in (None, "") else (400, "invalid_request")
    assert (refused.status_code, refused.get_json()["error"]["code"]) == wanted
    assert votes_stored(session) == 0
    # The battle is still open: the same voter can still vote with a proof.
    proof = challenge.solve(battle["challenge"])
    assert client.post(f"/api/v1/battles/{battle['id']}/vote", json={"winner": "a", "proof": proof}).status_code == 200


def test_a_wrong_proof_is_refused(gated, client, session, prompt_id):
    battle = ready_battle(client, prompt_id)
    salt = battle["challenge"]["salt"]
    wrong = next(str(n) for n in range(10**6) if not challenge.solves(salt, str(n), BITS))
    refused = client.post(f"/api/v1/battles/{battle['id']}/vote", json={"winner": "b", "proof": wrong})
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "challenge_failed"
    assert votes_stored(session) == 0


def test_a_proof_is_good_for_its_own_battle_only_and_only_once(gated, client, session, prompt_id):
    first, second = ready_battle(client, prompt_id), ready_battle(client, prompt_id)
    assert first["challenge"]["salt"] != second["challenge"]["salt"]
    proof = challenge.solve(first["challenge"])
    if not challenge.solves(second["challenge"]["salt"], proof, BITS):  # a 1-in-1024 coincidence otherwise
        moved = client.post(f"/api/v1/battles/{second['id']}/vote", json={"winner": "a", "proof": proof})
        assert moved.status_code == 403
    assert client.post(f"/api/v1/battles/{first['id']}/vote", json={"winner": "a", "proof": proof}).status_code == 200
    replayed = client.post(f"/api/v1/battles/{first['id']}/vote", json={"winner": "b", "proof": proof})
    assert replayed.status_code == 409 and replayed.get_json()["error"]["code"] == "already_voted"
    assert votes_stored(session) == 1


def test_the_salt_depends_on_the_secret_key(gated, client, prompt_id):
    battle = ready_battle(client, prompt_id)
    assert challenge.salt("another-secret", battle["id"]) != battle["challenge"]["salt"]


def test_off_means_no_challenge_and_proof_ignored(app, client, session, prompt_id):
    override(app, VOTE_CHALLENGE=False)
    battle = ready_battle(client, prompt_id)
    assert "challenge" not in battle
    voted = client.post(f"/api/v1/battles/{battle['id']}/vote", json={"winner": "tie", "proof": "anything"})
    assert voted.status_code == 200


def test_the_default_is_on_and_env_turns_it_off(monkeypatch):
    from arena.settings import Settings

    monkeypatch.delenv("ARENA_VOTE_CHALLENGE", raising=False)
    assert Settings().vote_challenge is True and Settings().vote_challenge_bits == 16
    monkeypatch.setenv("ARENA_VOTE_CHALLENGE", "off")
    monkeypatch.setenv("ARENA_VOTE_CHALLENGE_BITS", "12")
    assert Settings().vote_challenge is False and Settings().vote_challenge_bits == 12


def test_an_impossible_difficulty_stops_the_app_at_start(database_url, tmp_path):
    from arena import create_app

    with pytest.raises(SettingsError, match="ARENA_VOTE_CHALLENGE_BITS"):
        create_app({"DATABASE_URL": database_url, "INSTANCE_PATH": str(tmp_path), "VOTE_CHALLENGE_BITS": 300})


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_browser_solver_finds_proofs_the_server_accepts(tmp_path):
    """static/js/challenge-worker.js, run by node, solves challenges that arena.challenge accepts, for salts and
    difficulties that cross its 32-bit word boundary."""
    script = tmp_path / "solve.js"
    script.write_text(
        'const fs = require("fs"), vm = require("vm");\n'
        "const scope = {}; scope.self = scope; vm.createContext(scope);\n"
        f'vm.runInContext(fs.readFileSync({str(REPO / "static/js/challenge-worker.js")!r}, "utf8"), scope);\n'
        "const cases = JSON.parse(process.argv[2]);\n"
        "console.log(JSON.stringify(cases.map(([s, d, start, step]) =>"
        " scope.self.arenaChallengeSearch(s, d, start, step, 1 << 24))));\n"
    )
    salts = [challenge.salt("k", f"battle-{i}") for i in range(6)]
    cases = [
        [salts[0], 0, 0, 1],
        [salts[1], 1, 0, 1],
        [salts[2], 12, 0, 1],
        [salts[3], 16, 1, 2],
        [salts[4], 8, 0, 1],
        ["x" * 60, 8, 0, 1],
    ]  # the last message spans two SHA-256 blocks
    import json

    out = subprocess.run(["node", str(script), json.dumps(cases)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    proofs = json.loads(out.stdout)
    for (salt, bits, start, step), proof in zip(cases, proofs):
        assert proof is not None and challenge.solves(salt, proof, bits)
        assert (int(proof) - start) % step == 0
        if bits:  # the first hit: no smaller nonce of its stride solves it
            assert not any(challenge.solves(salt, str(n), bits) for n in range(start, int(proof), step))


# ------------------------------------------------------------------------------------------------ rate limits


def limit(app, **settings):
    """Turn the rate limits on with these settings (the rest unlimited) and rebuild the app's limiter."""
    for action in ratelimit.ACTIONS:
        for scope in ratelimit.SCOPES:
            override(app, **{ratelimit.setting_name(action, scope): settings.get(f"{action}_per_{scope}", "")})
    override(
        app, RATE_LIMITS=True, RATE_LIMIT_KEY_PREFIX=f"test-{uuid.uuid4().hex}", REDIS_URL=settings.get("redis_url")
    )
    ratelimit.init_app(app)
    return app


def create(client, prompt_id):
    return client.post("/api/v1/battles", json={"prompt_id": prompt_id})


def assert_limited(response):
    assert response.status_code == 429, response.get_json()
    assert response.get_json()["error"]["code"] == "rate_limited"
    assert 1 <= int(response.headers["Retry-After"]) <= 60


def test_battles_are_limited_per_voter(app, client, prompt_id):
    limit(app, battles_per_voter="3/minute")
    assert [create(client, prompt_id).status_code for _ in range(3)] == [201] * 3
    assert_limited(create(client, prompt_id))
    assert create(app.test_client(), prompt_id).status_code == 201  # another voter (same address) is not held


def test_a_follow_up_turn_counts_as_a_battle(app, client, session, loopback):
    for name in ("Echo One", "Echo Two"):
        gen_endpoint_model(session, name, f"Org {name}", loopback.base_url)
    limit(app, battles_per_voter="2/minute")
    created = client.post("/api/v1/battles", json={"prompt": "Tell me about tides."}).get_json()
    path = f"/api/v1/battles/{created['id']}"
    assert b'"state": "ready"' in client.get(f"{path}/stream").data
    assert client.post(f"{path}/turns", json={"prompt": "And the moon?"}).status_code == 201
    assert b'"state": "ready"' in client.get(f"{path}/stream").data
    assert_limited(client.post(f"{path}/turns", json={"prompt": "And the sun?"}))
    assert_limited(client.post("/api/v1/battles", json={"prompt": "Another one"}))


def test_battles_are_limited_per_address_whatever_the_cookie(app, prompt_id):
    limit(app, battles_per_address="4/minute")
    fresh = [app.test_client() for _ in range(5)]  # a script that drops its cookie every time
    assert [create(c, prompt_id).status_code for c in fresh[:4]] == [201] * 4
    assert_limited(create(fresh[4], prompt_id))
    elsewhere = app.test_client()
    elsewhere.environ_base["REMOTE_ADDR"] = "192.0.2.7"
    assert create(elsewhere, prompt_id).status_code == 201


def test_an_ipv6_client_is_limited_by_its_64_block(app, prompt_id):
    limit(app, battles_per_address="2/minute")
    statuses = []
    for address in ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9", "2001:db8:1:2::abcd", "2001:db8:1:3::1"):
        client = app.test_client()
        client.environ_base["REMOTE_ADDR"] = address
        statuses.append(create(client, prompt_id).status_code)
    assert statuses == [201, 201, 429, 201]  # the last is another subscriber's block


def test_address_keys():
    key = ratelimit.address_key
    assert key("k", "203.0.113.5") == lifecycle.address_hash("k", "203.0.113.5")  # the battles' own column
    assert key("k", "::ffff:203.0.113.5") == key("k", "203.0.113.5")
    assert key("k", "2001:db8::1") == key("k", "2001:db8:0:0:ffff::2") != key("k", "2001:db8:0:1::1")
    assert key("k", "not an address") == lifecycle.address_hash("k", "not an address") and key("k", None) is None


def test_votes_are_limited_per_voter_and_a_refused_vote_is_not_stored(app, client, session, prompt_id):
    battles_ready = [ready_battle(client, prompt_id) for _ in range(3)]
    limit(app, votes_per_voter="2/minute")
    for battle in battles_ready[:2]:
        assert client.post(f"/api/v1/battles/{battle['id']}/vote", json={"winner": "a"}).status_code == 200
    assert_limited(client.post(f"/api/v1/battles/{battles_ready[2]['id']}/vote", json={"winner": "a"}))
    assert votes_stored(session) == 2


def test_the_address_limit_counts_votes_of_every_voter(app, prompt_id):
    voters = [app.test_client() for _ in range(3)]
    battles_ready = [(v, ready_battle(v, prompt_id)) for v in voters]
    limit(app, votes_per_address="2/minute")
    statuses = [v.post(f"/api/v1/battles/{b['id']}/vote", json={"winner": "b"}).status_code for v, b in battles_ready]
    assert statuses == [200, 200, 429]


def test_rate_limits_off_means_no_limit(app, client, prompt_id):
    limit(app, battles_per_voter="1/minute", battles_per_address="1/minute")
    override(app, RATE_LIMITS=False)
    assert [create(client, prompt_id).status_code for _ in range(3)] == [201] * 3


def test_defaults_are_on_and_a_malformed_limit_stops_the_app_at_start(monkeypatch, database_url, tmp_path):
    from arena import create_app
    from arena.settings import Settings, SettingsError

    defaults = Settings()
    assert defaults.rate_limits is True and defaults.rate_limit_votes_per_voter == "20/minute;300/hour"
    assert ratelimit.parse_limits(defaults)["votes"][0].items
    monkeypatch.setenv("ARENA_RATE_LIMITS", "off")
    assert Settings().rate_limits is False
    with pytest.raises(SettingsError, match="ARENA_RATE_LIMIT_VOTES_PER_VOTER"):
        create_app({"DATABASE_URL": database_url, "INSTANCE_PATH": str(tmp_path), "RATE_LIMIT_VOTES_PER_VOTER": "lots"})


def only_limits(**limits) -> Settings:
    """Settings with these rate limits and no other."""
    none = {ratelimit.setting_name(a, s): "" for a in ratelimit.ACTIONS for s in ratelimit.SCOPES}
    return Settings(**{**none, **limits})


def test_the_redis_password_never_reaches_the_log():
    assert ratelimit.redacted("redis://user:s3cret@cache.example:6380/2") == "redis://user:***@cache.example:6380/2"
    assert ratelimit.redacted("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def _redis_answers(url: str) -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except Exception:  # noqa: BLE001 - any failure means: no Redis to test with
        return False


REDIS_URL = os.environ.get("ARENA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.mark.skipif(not _redis_answers(REDIS_URL), reason=f"no Redis at {REDIS_URL}")
def test_two_workers_share_their_counts_through_redis(app, database_url, tmp_path, prompt_id):
    """Two apps stand for two gunicorn workers (or hosts): with Redis they count together, and each alone
    would have let all six through."""
    from arena import create_app

    limit(app, battles_per_address="4/minute", redis_url=REDIS_URL)
    other = create_app(settings_of(app).model_dump())  # same settings, same key prefix, its own limiter and memory
    assert other.extensions["arena.ratelimit"] is not app.extensions["arena.ratelimit"]
    try:
        statuses = [create(worker.test_client(), prompt_id).status_code for worker in (app, other) * 3]
        assert statuses == [201, 201, 201, 201, 429, 429]
        assert app.extensions["arena.ratelimit"].shared and other.extensions["arena.ratelimit"].shared
    finally:
        other.extensions["arena.engine"].dispose()


@pytest.fixture
def own_redis(tmp_path):
    """A Redis server of this test's own on a free port, which the test may stop and start again."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    class Server:
        url = f"redis://127.0.0.1:{port}/0"
        process = None

        def start(self):
            self.process = subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(tmp_path),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 10
            while not _redis_answers(self.url):
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

        def stop(self):
            if self.process is not None:
                self.process.terminate()
                self.process.wait(timeout=10)
                self.process = None

    server = Server()
    server.start()
    yield server
    server.stop()


def test_redis_down_falls_back_to_memory_with_one_log_line_and_recovers(own_redis, caplog):
    limits = ratelimit.parse_limits(only_limits(RATE_LIMIT_VOTES_PER_VOTER="3/minute"))
    limiter = ratelimit.RateLimiter(limits, own_redis.url, key_prefix="fallback", retry_seconds=0.2)
    caplog.set_level(logging.INFO, logger="arena.web.ratelimit")
    assert limiter.hit("votes", {"voter": "v1"}) is None and limiter.shared

    own_redis.stop()
    started = time.monotonic()
    outcomes = [limiter.hit("votes", {"voter": "v2"}) for _ in range(5)]
    assert time.monotonic() - started < 2.0  # no request hangs on the dead Redis
    assert outcomes[:3] == [None] * 3 and all(1 <= wait <= 60 for wait in outcomes[3:])  # still limited, in memory
    assert not limiter.shared
    time.sleep(0.3)
    limiter.hit("votes", {"voter": "v3"})  # a retry that fails again: no second line
    down = [r for r in caplog.records if "is unreachable" in r.getMessage()]
    assert len(down) == 1 and down[0].levelno == logging.WARNING and own_redis.url in down[0].getMessage()

    own_redis.start()  # an empty Redis (it keeps nothing on disk): counts start again there
    time.sleep(0.3)
    assert limiter.hit("votes", {"voter": "v1"}) is None and limiter.shared
    back = [r for r in caplog.records if "answers again after" in r.getMessage()]
    assert len(back) == 1 and back[0].levelno == logging.INFO
    assert [limiter.hit("votes", {"voter": "v4"}) is None for _ in range(4)] == [True, True, True, False]


def test_without_redis_configured_counts_stay_in_memory(caplog):
    limiter = ratelimit.RateLimiter(ratelimit.parse_limits(only_limits(RATE_LIMIT_BATTLES_PER_ADDRESS="2/minute")))
    assert [limiter.hit("battles", {"address": "h"}) for _ in range(2)] == [None, None]
    assert limiter.hit("battles", {"address": "h"}) is not None
    assert limiter.hit("battles", {"address": None, "voter": "x"}) is None  # unknown address: not limited
    assert not limiter.shared and not caplog.records


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="/usr/bin/chromium is missing")
def test_challenge_js_solves_in_a_browser_with_workers_and_without(tmp_path):
    """window.arenaChallenge.solve in chromium: through Web Workers, and on the page when Worker is missing;
    the server's check accepts both proofs."""
    sync_api = pytest.importorskip("playwright.sync_api")
    import functools
    import http.server
    import threading

    (tmp_path / "js").mkdir()
    for name in ("challenge.js", "challenge-worker.js"):
        shutil.copy(REPO / "static" / "js" / name, tmp_path / "js" / name)
    (tmp_path / "index.html").write_text('<!doctype html><script src="js/challenge.js" defer></script>')
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    issued = {"algorithm": "sha256", "salt": challenge.salt("k", "browser-battle"), "difficulty": 12}
    solve = "c => window.arenaChallenge.solve(c)"
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            try:
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{server.server_port}/index.html")
                page.wait_for_function("() => window.arenaChallenge !== undefined")
                with_workers = page.evaluate(solve, issued)
                page.evaluate("() => { window.Worker = undefined; }")
                on_the_page = page.evaluate(solve, issued)
                refused = page.evaluate(
                    "c => window.arenaChallenge.solve(c).then(() => 'solved', e => e.message)",
                    {"algorithm": "md5", "salt": "x", "difficulty": 1},
                )
            finally:
                browser.close()
    finally:
        server.shutdown()
    assert challenge.solves(issued["salt"], with_workers, 12) and challenge.solves(issued["salt"], on_the_page, 12)
    assert on_the_page == challenge.solve(issued)  # one thread tries 0, 1, 2, ... like the Python solver
    assert refused == "unknown vote challenge"


def test_the_in_memory_moving_window_agrees_with_a_brute_force_count(monkeypatch):
    """Random hits on a few keys under a controlled clock: each is allowed exactly when fewer than `amount` of
    the key's allowed hits lie in the last window, and the reset time is when the oldest of them leaves it."""
    import random

    from limits import parse

    clock = [1_000_000.0]
    monkeypatch.setattr(ratelimit.time, "time", lambda: clock[0])
    limiter = ratelimit.MemoryMovingWindow()
    items = [parse("3/second"), parse("5/minute")]
    allowed: dict[tuple, list[float]] = {}
    rng = random.Random(7)
    for _ in range(3000):
        clock[0] += rng.expovariate(4.0)
        item, key = rng.choice(items), rng.choice(["a", "b", "c"])
        window = allowed.setdefault((str(item), key), [])
        recent = [t for t in window if t > clock[0] - item.get_expiry()]
        expected = len(recent) < item.amount
        assert limiter.hit(item, "votes", "voter", key) is expected
        if expected:
            window.append(clock[0])
            recent.append(clock[0])
        stats = limiter.get_window_stats(item, "votes", "voter", key)
        assert stats.remaining == item.amount - len(recent)
        assert stats.reset_time == pytest.approx(recent[0] + item.get_expiry())


def test_idle_keys_are_forgotten(monkeypatch):
    from limits import parse

    clock = [0.0]
    monkeypatch.setattr(ratelimit.time, "time", lambda: clock[0])
    limiter = ratelimit.MemoryMovingWindow()
    for voter in range(1000):
        limiter.hit(parse("2/minute"), "votes", "voter", str(voter))
    clock[0] += 61 + limiter.SWEEP_SECONDS
    limiter.hit(parse("2/minute"), "votes", "voter", "new")
    assert len(limiter._hits) == 1


def test_a_redis_that_never_answers_costs_one_request_a_timeout_then_memory(caplog):
    """A server that accepts connections and never replies (a hung Redis, a half-open network path)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        limiter = ratelimit.RateLimiter(ratelimit.parse_limits(only_limits(RATE_LIMIT_VOTES_PER_VOTER="2/minute")), url)
        started = time.monotonic()
        first = limiter.hit("votes", {"voter": "v"})
        waited = time.monotonic() - started
        started = time.monotonic()
        rest = [limiter.hit("votes", {"voter": "v"}) for _ in range(2)]
        assert first is None and rest[0] is None and rest[1] is not None  # limited all along, in memory
        # the two later hits wait on no timeout (each would cost REDIS_TIMEOUT)
        assert waited < 2 * ratelimit.REDIS_TIMEOUT + 0.5 and time.monotonic() - started < ratelimit.REDIS_TIMEOUT
    assert len([r for r in caplog.records if "is unreachable" in r.getMessage()]) == 1
