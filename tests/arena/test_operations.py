"""What operators expect of the service: /healthz, /readyz, /metrics (with counts where things happen) and JSON
logs. Two gunicorn workers' counts adding up is tests/reliability/test_metrics.py."""

from __future__ import annotations

import json
import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import REGISTRY
from sqlalchemy.exc import OperationalError

from arena import create_app, logs
from arena.leaderboard.builder import Builder, heartbeat_path
from arena.settings import override, settings_of
from arena.web import ratelimit
from tests.arena.test_battles import recorded_pair, run_battle  # noqa: F401 - recorded_pair is a fixture


def sample(name: str, **labels) -> float:
    """This process's value of a metric (tests run single-process: no PROMETHEUS_MULTIPROC_DIR)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scraped(response) -> dict:
    """The samples of a /metrics answer, by (name, sorted labels)."""
    assert response.status_code == 200, response.data[:300]
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for s in family.samples
    }


def test_healthz_answers_without_the_database(tmp_path):
    unreachable = create_app(
        {
            "DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:9/none",
            "INSTANCE_PATH": str(tmp_path),
            "SECRET_KEY": "k",
        }
    )
    client = unreachable.test_client()
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 503
    error = ready.get_json()["error"]
    assert error["code"] == "not_ready" and error["details"]["database"].startswith("unreachable: ")
    assert "database: unreachable" in error["message"] and "builder: no recent heartbeat" in error["message"]
    metrics = scraped(client.get("/metrics"))  # still scraped, with the database marked down
    assert metrics[("arena_database_up", ())] == 0
    assert not any(name == "arena_battles_by_state" for name, _ in metrics)


def test_readyz_wants_the_database_and_a_live_builder(app, client):
    missing = client.get("/readyz")
    assert missing.status_code == 503 and missing.get_json()["error"]["details"] == {
        "database": "ok",
        "builder": missing.get_json()["error"]["details"]["builder"],
    }
    assert "heartbeat" in missing.get_json()["error"]["details"]["builder"]
    Builder(app).beat()  # what the builder process writes every few seconds
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json() == {
        "status": "ready",
        "checks": {"database": "ok", "builder": "ok"},
    }
    override(app, READY_NEEDS_BUILDER=False)  # a host that only serves; its builder runs elsewhere
    heartbeat_path(settings_of(app)).unlink()
    assert client.get("/readyz").get_json() == {"status": "ready", "checks": {"database": "ok"}}


def test_a_battle_and_its_vote_are_counted(client, recorded_pair):  # noqa: F811
    prompt, alpha, beta = recorded_pair
    before = {state: sample("arena_battles_total", state=state) for state in ("created", "ready", "voted")}
    votes_before = sample("arena_votes_total", outcome="tie")
    answers_before = sample("arena_answer_seconds_count", model="Alpha Model", source="recorded")
    requests_before = sample("arena_http_requests_total", endpoint="api.vote", method="POST", status="200")

    battle_id, _, _, _ = run_battle(client, prompt_id=prompt.id)
    assert client.post(f"/api/v1/battles/{battle_id}/vote", json={"winner": "tie"}).status_code == 200
    assert client.post(f"/api/v1/battles/{battle_id}/vote", json={"winner": "tie"}).status_code == 409

    for state in ("created", "ready", "voted"):
        assert sample("arena_battles_total", state=state) == before[state] + 1
    assert sample("arena_votes_total", outcome="tie") == votes_before + 1
    assert sample("arena_answer_seconds_count", model="Alpha Model", source="recorded") == answers_before + 1
    assert sample("arena_http_requests_total", endpoint="api.vote", method="POST", status="200") == requests_before + 1
    assert sample("arena_http_requests_total", endpoint="api.vote", method="POST", status="409") >= 1

    metrics = scraped(client.get("/metrics"))
    assert metrics[("arena_battles_by_state", (("state", "voted"),))] == 1
    assert metrics[("arena_battles_by_state", (("state", "ready"),))] == 0
    assert metrics[("arena_votes_stored", ())] == 1 and metrics[("arena_database_up", ())] == 1
    assert metrics[("arena_snapshot_version", ())] == 0 and ("arena_snapshot_age_seconds", ()) not in metrics
    assert metrics[("arena_votes_total", (("outcome", "tie"),))] == votes_before + 1


def test_a_failing_endpoint_counts_against_its_model(app, client, session, loopback):
    from tests.arena.conftest import gen_endpoint_model, gen_prompt

    override(app, ALLOW_PRIVATE_ENDPOINTS=True)
    prompt = gen_prompt(session)
    gen_endpoint_model(session, "Broken Model", "Org", loopback.base_url, behaviour="http-500")
    gen_endpoint_model(session, "Echo Model", "Org", loopback.base_url, behaviour="echo")
    failures = sample("arena_answer_failures_total", model="Broken Model", source="endpoint")
    echo_failures = sample("arena_answer_failures_total", model="Echo Model", source="endpoint")
    void = sample("arena_battles_total", state="void")
    run_battle(client, prompt_id=prompt.id)
    assert sample("arena_answer_failures_total", model="Broken Model", source="endpoint") == failures + 1
    assert sample("arena_answer_failures_total", model="Echo Model", source="endpoint") == echo_failures
    assert sample("arena_answer_first_token_seconds_count", model="Echo Model", source="endpoint") >= 1
    assert sample("arena_battles_total", state="void") == void + 1


def test_rate_limit_refusals_and_database_errors_are_counted(app, client, recorded_pair):  # noqa: F811
    prompt, _, _ = recorded_pair

    def lost_connection():
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))

    app.add_url_rule("/api/v1/test-database-gone", "test_database_gone", lost_connection)
    override(app, RATE_LIMITS=True, RATE_LIMIT_BATTLES_PER_VOTER="1/minute")
    ratelimit.init_app(app)  # the limiter is built from the settings once
    refused = sample("arena_rate_limited_total", action="battles")
    assert client.post("/api/v1/battles", json={"prompt_id": prompt.id}).status_code == 201
    assert client.post("/api/v1/battles", json={"prompt_id": prompt.id}).status_code == 429
    assert sample("arena_rate_limited_total", action="battles") == refused + 1

    unavailable = sample("arena_database_errors_total", kind="unavailable")
    gone = client.get("/api/v1/test-database-gone")
    assert gone.status_code == 503 and gone.get_json()["error"]["code"] == "database_unavailable"
    assert sample("arena_database_errors_total", kind="unavailable") == unavailable + 1


def test_a_snapshot_build_is_timed(app, client, recorded_pair):  # noqa: F811
    from arena.leaderboard.builds import build_snapshot

    prompt, _, _ = recorded_pair
    battle_id, _, _, _ = run_battle(client, prompt_id=prompt.id)
    client.post(f"/api/v1/battles/{battle_id}/vote", json={"winner": "a"})
    built, timed = sample("arena_snapshot_builds_total", outcome="built"), sample("arena_snapshot_build_seconds_count")
    override(app, SNAPSHOT_REPLICATES=0)
    assert build_snapshot(app) is not None
    assert sample("arena_snapshot_builds_total", outcome="built") == built + 1
    assert sample("arena_snapshot_build_seconds_count") == timed + 1
    metrics = scraped(client.get("/metrics"))
    assert metrics[("arena_snapshot_version", ())] == 1
    assert 0 <= metrics[("arena_snapshot_age_seconds", ())] < 3600


def test_metrics_are_for_loopback_or_the_token(app, client):
    outside = {"REMOTE_ADDR": "203.0.113.9"}
    assert client.get("/metrics").status_code == 200  # the test client is 127.0.0.1
    hidden = client.get("/metrics", environ_base=outside)
    assert hidden.status_code == 404 and hidden.get_json()["error"]["code"] == "not_found"
    override(app, METRICS_TOKEN="scrape-secret")
    assert client.get("/metrics").status_code == 404  # with a token set, loopback needs it too
    assert client.get("/metrics", environ_base=outside, headers={"Authorization": "Bearer wrong"}).status_code == 404
    allowed = client.get("/metrics", environ_base=outside, headers={"Authorization": "Bearer scrape-secret"})
    assert allowed.status_code == 200 and allowed.mimetype == "text/plain"
    assert "version=" in allowed.headers["Content-Type"]


def test_an_unknown_method_is_not_a_label(client):
    before = sample("arena_http_requests_total", endpoint="unmatched", method="other", status="405")
    assert client.open("/healthz", method="BREW").status_code == 405
    assert sample("arena_http_requests_total", endpoint="unmatched", method="other", status="405") == before + 1


def test_json_logs_are_one_object_per_line(capsys):
    logs.configure("json")
    try:
        log = logging.getLogger("arena.test")
        log.warning("battle %s: stored", "abc", extra={"battle": "abc"})
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            log.exception("it failed")
    finally:
        logging.getLogger().handlers.clear()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2  # the traceback's lines stay inside its record
    first, second = map(json.loads, lines)
    assert first["message"] == "battle abc: stored" and first["level"] == "warning" and first["battle"] == "abc"
    assert first["logger"] == "arena.test" and first["time"].endswith("+00:00") and isinstance(first["pid"], int)
    assert "ValueError: boom\nsecond line" in second["exception"]


def test_an_access_record_becomes_fields():
    record = logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1, "%(h)s %(r)s", None, None)
    record.args = {
        "h": "127.0.0.1",
        "m": "POST",
        "U": "/api/v1/battles",
        "q": "",
        "s": "201",
        "B": "-",
        "L": "0.004",
        "a": "curl/8",
    }
    entry = json.loads(logs.JsonFormatter().format(record))
    assert entry["message"] == "request" and entry["status"] == 201 and entry["method"] == "POST"
    assert entry["path"] == "/api/v1/battles" and entry["duration_s"] == 0.004 and entry["user_agent"] == "curl/8"
    assert entry["bytes"] == "-"  # no body: gunicorn's dash, kept


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_log_format_setting_is_checked(log_format, monkeypatch):
    from arena.settings import SettingsError, load

    monkeypatch.setenv("ARENA_LOG_FORMAT", log_format)
    assert load().log_format == log_format
    monkeypatch.setenv("ARENA_LOG_FORMAT", "xml")
    with pytest.raises(SettingsError, match="ARENA_LOG_FORMAT"):
        load()
