"""The labs' API: keys, registration (checked against the loopback model server), recorded answers, status,
isolation between labs, and the audit log. Runs on SQLite and, when configured, PostgreSQL."""
from __future__ import annotations

import json
import socket
import time

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from arena import lab_actions, labs
from arena.crypto import decrypt_secret
from arena.models import AuditEvent, Battle, EndpointCheck, Message, Model, RecordedAnswer, Vote
from tests.arena.conftest import gen_prompt

ENDPOINT_KEY = "sk-endpoint-secret-0123456789"


@pytest.fixture
def two_labs(app, session):
    """Two labs and their keys; loopback endpoints allowed, endpoint checks limited to 1 s."""
    app.config.update(ALLOW_PRIVATE_ENDPOINTS=True, ENDPOINT_CHECK_TIMEOUT=1.0)
    (_, key_a), (_, key_b) = labs.create_lab(session, "Lab A"), labs.create_lab(session, "Lab B")
    return key_a, key_b


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def register_recorded(client, key, name="Recorded One", organization="Lab A Inc"):
    response = client.post("/api/v1/models", json={"name": name, "organization": organization, "kind": "recorded"},
                           headers=bearer(key))
    assert response.status_code == 201, response.json
    return response.json["id"]


def upload(client, key, model_id, lines, **kwargs):
    data = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    return client.post(f"/api/v1/models/{model_id}/answers", data=data.encode(),
                       headers={**bearer(key), "Content-Type": "application/jsonl"}, **kwargs)


def gen_battle(session, model_a_id, model_b_id, *, state="voted", flagged=False, winner="a", source="arena",
               errors=(None, None)):
    number = session.scalar(select(func.count()).select_from(Battle)) + 1
    battle = Battle(id=f"battle{number}", prompt_text="hi", model_a_id=model_a_id, model_b_id=model_b_id,
                    state=state, flagged=flagged, source=source)
    session.add(battle)
    session.flush()
    for side, error in zip("ab", errors):
        session.add(Message(battle_id=battle.id, side=side, role="assistant", content="" if error else "answer",
                            complete=error is None, error=error))
    if winner:
        session.add(Vote(battle_id=battle.id, winner=winner, source=source))
    session.commit()
    return battle


# ------------------------------------------------------------------------------------------------ keys

LAB_ROUTES = [("get", "/api/v1/models"), ("post", "/api/v1/models"), ("get", "/api/v1/models/1"),
              ("patch", "/api/v1/models/1"), ("delete", "/api/v1/models/1"), ("post", "/api/v1/models/1/answers"),
              ("post", "/api/v1/keys/rotate")]


def test_every_lab_route_refuses_missing_malformed_wrong_and_revoked_keys_alike(client, two_labs):
    key_a, _ = two_labs
    old = key_a
    rotated = client.post("/api/v1/keys/rotate", headers=bearer(key_a))
    assert rotated.status_code == 200
    new_key = rotated.json["api_key"]
    assert new_key.startswith("arena_") and new_key != old and rotated.json["revoked"] == 1
    bad_headers = [{}, {"Authorization": ""}, {"Authorization": "Bearer"}, {"Authorization": f"Basic {new_key}"},
                   {"Authorization": "Bearer arena_not-a-real-key"}, {"Authorization": "Bearer not-even-prefixed"},
                   bearer(old)]
    for method, path in LAB_ROUTES:
        for headers in bad_headers:
            response = getattr(client, method)(path, headers=headers, json={"status": "paused"})
            assert response.status_code == 401, (method, path, headers)
            assert response.json == {"error": {"code": "unauthorized", "message": response.json["error"]["message"]}}
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/api/v1/models", headers=bearer(new_key)).status_code == 200
    assert client.get("/api/v1/models", headers={"Authorization": f"bearer  {new_key}"}).status_code == 200


# ------------------------------------------------------------------------------------------------ isolation

def test_a_lab_cannot_see_or_change_another_labs_model(client, session, two_labs):
    key_a, key_b = two_labs
    gen_prompt(session)
    model_id = register_recorded(client, key_a)
    missing_id = model_id + 1000
    attempts = [("get", "", None), ("patch", "", {"status": "paused"}), ("delete", "", None)]
    for method, suffix, body in attempts:
        for probe in (model_id, missing_id):
            response = getattr(client, method)(f"/api/v1/models/{probe}{suffix}", json=body, headers=bearer(key_b))
            assert response.status_code == 404
            assert response.json == {"error": {"code": "model_not_found", "message": f"You have no model {probe}."}}
    for probe in (model_id, missing_id):
        response = upload(client, key_b, probe, [{"prompt_id": 1, "answer": "mine now"}])
        assert response.status_code == 404
        assert response.json == {"error": {"code": "model_not_found", "message": f"You have no model {probe}."}}
    assert client.get("/api/v1/models", headers=bearer(key_b)).json == {"models": []}
    mine = client.get(f"/api/v1/models/{model_id}", headers=bearer(key_a)).json
    assert mine["status"] == "active" and mine["recorded_answers"] == 0
    assert [m["id"] for m in client.get("/api/v1/models", headers=bearer(key_a)).json["models"]] == [model_id]
    assert client.get("/api/v1/models/99999999999", headers=bearer(key_a)).status_code == 404


# ------------------------------------------------------------------------------------------------ endpoint models

def test_registering_a_working_endpoint_checks_it_and_never_returns_its_key(client, session, two_labs, loopback):
    key_a, _ = two_labs
    response = client.post("/api/v1/models", headers=bearer(key_a), json={
        "name": "Echo 1", "organization": "Lab A Inc", "system_prompt": "Be brief.",
        "sampling_params": {"temperature": 0.2, "max_tokens": 64},
        "endpoint": {"base_url": loopback.base_url, "model": "echo", "api_key": ENDPOINT_KEY}})
    assert response.status_code == 201, response.json
    body = response.json
    assert body["endpoint"] == {"base_url": loopback.base_url, "model": "echo", "has_api_key": True}
    assert body["status"] == "active" and body["sampling_params"] == {"temperature": 0.2, "max_tokens": 64}
    assert body["health"]["last_success_at"] and body["health"]["error_rate"] == 0.0
    assert body["health"]["calls"] == 1 and body["health"]["last_error"] is None
    assert body["leaderboard"]["rating"] is None and body["votes"]["counted"] == 0
    assert loopback.requests[-1]["model"] == "echo"  # the check was a real request
    for read in (client.get(f"/api/v1/models/{body['id']}", headers=bearer(key_a)),
                 client.get("/api/v1/models", headers=bearer(key_a)), response):
        assert ENDPOINT_KEY not in read.get_data(as_text=True)
    stored = session.get(Model, body["id"])
    assert ENDPOINT_KEY not in stored.endpoint_key_encrypted
    assert decrypt_secret("test-secret", stored.endpoint_key_encrypted) == ENDPOINT_KEY
    audit_row = session.scalars(select(AuditEvent).where(AuditEvent.action == "model.create")).one()
    assert ENDPOINT_KEY not in json.dumps(audit_row.details) and audit_row.model_id == body["id"]


@pytest.mark.parametrize("behaviour, kind", [("http-500", "http"), ("never", "timeout"), ("stall-mid", "timeout"),
                                             ("garbage", "garbage")])
def test_a_failing_or_slow_endpoint_is_refused_with_what_failed(client, session, two_labs, loopback, behaviour,
                                                                 kind):
    key_a, _ = two_labs
    started = time.monotonic()
    response = client.post("/api/v1/models", headers=bearer(key_a), json={
        "name": "Broken", "organization": "Lab A Inc", "endpoint": {"base_url": loopback.base_url,
                                                                   "model": behaviour}})
    assert time.monotonic() - started < 2.5  # ENDPOINT_CHECK_TIMEOUT is 1 s
    assert response.status_code == 422
    assert response.json["error"]["code"] == "endpoint_check_failed"
    assert response.json["error"]["details"]["kind"] == kind
    if kind == "http":
        assert response.json["error"]["details"]["status"] == 500 and "500" in response.json["error"]["message"]
    assert session.scalar(select(func.count()).select_from(Model)) == 0
    assert session.scalar(select(func.count()).select_from(AuditEvent)) == 0


def test_a_slow_streaming_endpoint_registers_since_the_check_is_short(client, two_labs, loopback):
    key_a, _ = two_labs
    started = time.monotonic()
    response = client.post("/api/v1/models", headers=bearer(key_a), json={
        "name": "Slow", "organization": "Lab A Inc", "endpoint": {"base_url": loopback.base_url, "model": "slow:5"}})
    assert response.status_code == 201 and time.monotonic() - started < 1.0
    assert loopback.requests[-1]["stream"] is False and loopback.requests[-1]["max_tokens"] == 8


def test_an_unreachable_endpoint_is_refused(client, two_labs):
    key_a, _ = two_labs
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    response = client.post("/api/v1/models", headers=bearer(key_a), json={
        "name": "Nowhere", "organization": "Lab A Inc", "endpoint": {"base_url": f"http://127.0.0.1:{port}/v1",
                                                                    "model": "echo"}})
    assert response.status_code == 422 and response.json["error"]["details"]["kind"] == "connect"


@pytest.mark.parametrize("base_url, status, code", [
    ("ftp://example.com/v1", 400, "invalid_base_url"),
    ("http://user:pass@127.0.0.1:9/v1", 400, "invalid_base_url"),
    ("http://169.254.169.254/latest", 422, "endpoint_unsafe"),
    ("http://[::ffff:169.254.169.254]/v1", 422, "endpoint_unsafe"),
    ("http://[fe80::1]/v1", 422, "endpoint_unsafe"),
    ("http://0.0.0.0:9/v1", 422, "endpoint_unsafe"),
])
def test_unsafe_endpoint_urls_are_refused_even_when_private_addresses_are_allowed(client, two_labs, base_url,
                                                                                  status, code):
    key_a, _ = two_labs
    response = client.post("/api/v1/models", headers=bearer(key_a), json={
        "name": "Sneaky", "organization": "Lab A Inc", "endpoint": {"base_url": base_url, "model": "echo"}})
    assert (response.status_code, response.json["error"]["code"]) == (status, code)


def test_loopback_endpoints_need_the_operator_setting(app, client, two_labs, loopback):
    key_a, _ = two_labs
    app.config["ALLOW_PRIVATE_ENDPOINTS"] = False
    body = {"name": "Local", "organization": "Lab A Inc", "endpoint": {"base_url": loopback.base_url,
                                                                      "model": "echo"}}
    response = client.post("/api/v1/models", headers=bearer(key_a), json=body)
    assert response.status_code == 422 and "ARENA_ALLOW_PRIVATE_ENDPOINTS" in response.json["error"]["message"]
    assert loopback.requests == []  # refused before any request
    app.config["ALLOW_PRIVATE_ENDPOINTS"] = True
    assert client.post("/api/v1/models", headers=bearer(key_a), json=body).status_code == 201


def test_every_address_a_host_resolves_to_is_checked(monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, *a: [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port))])
    with pytest.raises(Exception, match="metadata"):
        lab_actions.check_endpoint_address("https://models.example.com/v1", allow_private=True)


@pytest.mark.parametrize("address, allowed_private, allowed_public", [
    ("8.8.8.8", True, True), ("2606:4700::1111", True, True),
    ("10.1.2.3", True, False), ("127.0.0.1", True, False), ("::1", True, False), ("192.168.0.9", True, False),
    ("169.254.169.254", False, False), ("100.100.100.200", False, False), ("fd00:ec2::254", False, False),
    ("fe80::1", False, False), ("64:ff9b::a9fe:a9fe", False, False), ("224.0.0.1", False, False),
])
def test_address_rules(address, allowed_private, allowed_public):
    assert (lab_actions.address_problem(address, allow_private=True) is None) == allowed_private
    assert (lab_actions.address_problem(address, allow_private=False) is None) == allowed_public


# ------------------------------------------------------------------------------------------------ requests

@pytest.mark.parametrize("body, code", [
    ({"organization": "x", "kind": "recorded"}, "invalid_request"),
    ({"name": "  ", "organization": "x", "kind": "recorded"}, "invalid_request"),
    ({"name": "a", "organization": "x", "kind": "recorded", "colour": "red"}, "invalid_request"),
    ({"name": "a\x00b", "organization": "x", "kind": "recorded"}, "invalid_request"),
    ({"name": "a", "organization": "x"}, "invalid_request"),
    ({"name": "a", "organization": "x", "kind": "recorded", "endpoint": {"base_url": "http://h", "model": "m"}},
     "invalid_request"),
    ({"name": "a", "organization": "x", "endpoint": {"base_url": "http://h", "model": "m"},
      "sampling_params": {"temperature": 9}}, "invalid_request"),
    ([1, 2], "invalid_json"),
])
def test_invalid_registrations_get_400_with_the_field(client, two_labs, body, code):
    key_a, _ = two_labs
    response = client.post("/api/v1/models", json=body, headers=bearer(key_a))
    assert response.status_code == 400 and response.json["error"]["code"] == code


def test_names_are_unique_across_the_arena(client, two_labs):
    key_a, key_b = two_labs
    register_recorded(client, key_a, name="Taken")
    response = client.post("/api/v1/models", json={"name": "Taken", "organization": "B", "kind": "recorded"},
                           headers=bearer(key_b))
    assert response.status_code == 409 and response.json["error"]["code"] == "name_taken"


# ------------------------------------------------------------------------------------------------ answers

def test_answers_upload_stores_all_lines(client, session, two_labs):
    key_a, _ = two_labs
    p1, p2 = gen_prompt(session, "one"), gen_prompt(session, "two")
    model_id = register_recorded(client, key_a)
    response = upload(client, key_a, model_id, [{"prompt_id": p1.id, "answer": "First.", "duration_ms": 1200},
                                                "", {"prompt_id": p2.id, "answer": "Second."}])
    assert response.status_code == 201 and response.json == {"model_id": model_id, "imported": 2}
    stored = session.scalars(select(RecordedAnswer).order_by(RecordedAnswer.prompt_id)).all()
    assert [(a.prompt_id, a.text, a.duration_ms) for a in stored] == [(p1.id, "First.", 1200.0),
                                                                      (p2.id, "Second.", None)]
    assert client.get(f"/api/v1/models/{model_id}", headers=bearer(key_a)).json["recorded_answers"] == 2
    again = upload(client, key_a, model_id, [{"prompt_id": p1.id, "answer": "Again."}])
    assert again.status_code == 422 and "already has an answer" in again.json["error"]["details"]["lines"][0]["error"]


def test_a_malformed_upload_stores_nothing_and_reports_each_line(client, session, two_labs):
    key_a, _ = two_labs
    p1 = gen_prompt(session)
    model_id = register_recorded(client, key_a)
    lines = [{"prompt_id": p1.id, "answer": "fine"}, "{not json", {"prompt_id": 999999, "answer": "x"},
             {"prompt_id": p1.id, "answer": "twice"}, {"prompt_id": p1.id + 0.5, "answer": "x"},
             {"prompt_id": p1.id, "answer": "x", "extra": 1}, {"prompt_id": p1.id, "answer": "nul\x00"}, "[1]"]
    response = upload(client, key_a, model_id, lines)
    assert response.status_code == 422
    error = response.json["error"]
    assert error["code"] == "invalid_answers" and error["details"]["failed"] == 7 and error["details"]["total"] == 8
    assert [p["line"] for p in error["details"]["lines"]] == [2, 3, 4, 5, 6, 7, 8]
    assert "not valid JSON" in error["details"]["lines"][0]["error"]
    assert "twice" in error["details"]["lines"][2]["error"]
    bad_utf8 = client.post(f"/api/v1/models/{model_id}/answers", data=b'{"prompt_id": 1, "answer": "\xff"}\n',
                           headers=bearer(key_a))
    assert bad_utf8.status_code == 422 and bad_utf8.json["error"]["details"]["lines"][0]["error"] == "not UTF-8 text"
    assert upload(client, key_a, model_id, ["", "  "]).status_code == 400
    assert session.scalar(select(func.count()).select_from(RecordedAnswer)) == 0
    assert session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "answers.import")) == 0


def test_an_oversized_upload_is_refused_whole(app, client, session, two_labs):
    key_a, _ = two_labs
    p1 = gen_prompt(session)
    model_id = register_recorded(client, key_a)
    app.config["MAX_CONTENT_LENGTH"] = 4096
    response = upload(client, key_a, model_id, [{"prompt_id": p1.id, "answer": "x" * 5000}])
    assert response.status_code == 413 and set(response.json["error"]) == {"code", "message"}
    big_registration = client.post("/api/v1/models", headers=bearer(key_a), json={
        "name": "Big", "organization": "x", "kind": "recorded", "system_prompt": "y" * 5000})
    assert big_registration.status_code == 413
    assert session.scalar(select(func.count()).select_from(RecordedAnswer)) == 0


def test_endpoint_models_take_no_answers(client, session, two_labs, loopback):
    key_a, _ = two_labs
    gen_prompt(session)
    created = client.post("/api/v1/models", headers=bearer(key_a), json={
        "name": "Echo", "organization": "A", "endpoint": {"base_url": loopback.base_url, "model": "echo"}})
    response = upload(client, key_a, created.json["id"], [{"prompt_id": 1, "answer": "x"}])
    assert response.status_code == 409 and response.json["error"]["code"] == "not_a_recorded_model"


# ------------------------------------------------------------------------------------------------ status changes

def test_pause_resume_and_retire(client, session, two_labs):
    key_a, _ = two_labs
    model_id = register_recorded(client, key_a)

    def patch(body):
        return client.patch(f"/api/v1/models/{model_id}", json=body, headers=bearer(key_a))

    assert patch({"status": "paused"}).json["status"] == "paused"
    assert session.scalar(select(Model.status).where(Model.id == model_id)) == "paused"
    assert patch({"status": "active"}).json["status"] == "active"
    assert patch({"system_prompt": "Hello."}).json["system_prompt"] == "Hello."
    assert patch({}).status_code == 400
    assert patch({"status": "gone"}).status_code == 400
    assert patch({"status": "retired"}).json["status"] == "retired"
    refused = patch({"status": "active"})
    assert refused.status_code == 409 and refused.json["error"]["code"] == "model_retired"
    actions = session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)).all()
    assert actions == ["model.create", "model.pause", "model.resume", "model.update", "model.retire"]


def test_a_model_with_a_counted_vote_cannot_be_deleted_only_retired(client, session, two_labs):
    key_a, key_b = two_labs
    mine, theirs = register_recorded(client, key_a, "Mine"), register_recorded(client, key_b, "Theirs", "B")
    gen_battle(session, mine, theirs, winner="a")
    gen_battle(session, mine, theirs, flagged=True, winner="b")
    gen_battle(session, theirs, mine, state="void", winner=None, errors=("ProviderError: boom", None))
    status = client.get(f"/api/v1/models/{mine}", headers=bearer(key_a)).json
    assert status["battles"] == 3 and status["deletable"] is False
    assert status["votes"] == {"counted": 1, "excluded": 1,
                               "excluded_by_reason": {"identity_leak": 1, "battle_void": 0}}
    refused = client.delete(f"/api/v1/models/{mine}", headers=bearer(key_a))
    assert refused.status_code == 409 and refused.json["error"]["code"] == "model_has_counted_votes"
    assert session.get(Model, mine) is not None
    assert session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "model.delete")) == 0


def test_a_model_without_counted_votes_is_deleted_with_its_uncounted_battles(client, session, two_labs):
    key_a, key_b = two_labs
    gen_prompt(session)
    mine, theirs = register_recorded(client, key_a, "Mine"), register_recorded(client, key_b, "Theirs", "B")
    assert upload(client, key_a, mine, [{"prompt_id": 1, "answer": "x"}]).status_code == 201
    gen_battle(session, mine, theirs, flagged=True, winner="a")
    gen_battle(session, theirs, mine, state="void", winner=None, errors=(None, "timeout"))
    assert client.delete(f"/api/v1/models/{mine}", headers=bearer(key_a)).status_code == 204
    assert client.get(f"/api/v1/models/{mine}", headers=bearer(key_a)).status_code == 404
    session.expire_all()
    assert session.get(Model, mine) is None and session.get(Model, theirs) is not None
    assert session.scalar(select(func.count()).select_from(Battle)) == 0
    event = session.scalars(select(AuditEvent).where(AuditEvent.action == "model.delete")).one()
    assert event.model_id == mine and event.details["battles"] == 2 and event.details["uncounted_votes"] == 1


def test_endpoint_health_counts_the_answers_in_battles(client, session, two_labs, loopback):
    key_a, key_b = two_labs
    created = client.post("/api/v1/models", headers=bearer(key_a), json={
        "name": "Echo", "organization": "A", "endpoint": {"base_url": loopback.base_url, "model": "echo"}})
    mine, theirs = created.json["id"], register_recorded(client, key_b, "Theirs", "B")
    gen_battle(session, mine, theirs, state="void", winner=None, errors=("ProviderError: HTTP 500", None))
    gen_battle(session, theirs, mine, state="void", winner=None, errors=(None, "timeout after 30 s"))
    gen_battle(session, theirs, mine, winner="tie", errors=("their failure", None))  # side a is theirs
    health = client.get(f"/api/v1/models/{mine}", headers=bearer(key_a)).json["health"]
    assert health["calls"] == 4 and health["error_rate"] == 0.5  # the check, 3 answers, 2 failed
    assert health["last_error"]["message"] == "timeout after 30 s"
    assert client.get(f"/api/v1/models/{theirs}", headers=bearer(key_b)).json["health"] is None


# ------------------------------------------------------------------------------------------------ audit

def test_the_audit_log_is_append_only_and_readable_by_operators(app, client, session, two_labs):
    key_a, _ = two_labs
    model_id = register_recorded(client, key_a, "Audited")
    client.patch(f"/api/v1/models/{model_id}", json={"status": "paused"}, headers=bearer(key_a))
    new_key = client.post("/api/v1/keys/rotate", headers=bearer(key_a)).json["api_key"]
    events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
    assert [(e.actor, e.action, e.model_id) for e in events] == [
        ("Lab A", "model.create", model_id), ("Lab A", "model.pause", model_id), ("Lab A", "key.rotate", None)]
    assert all(e.key_prefix == key_a[:12] for e in events) and new_key not in json.dumps([e.details for e in events])
    for statement in ("UPDATE audit_log SET action = 'nothing'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"):
            session.execute(text(statement))
        session.rollback()
    assert session.scalar(select(func.count()).select_from(AuditEvent)) == 3

    result = app.test_cli_runner().invoke(args=["audit", "list", "--lab", "Lab A"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["WHEN", "(UTC)", "LAB"]
    assert "key.rotate" in lines[1] and "model.create" in lines[3] and '"name": "Audited"' in lines[3]
    as_json = app.test_cli_runner().invoke(args=["audit", "list", "--json", "--model", str(model_id)])
    assert [json.loads(line)["action"] for line in as_json.output.splitlines()] == ["model.pause", "model.create"]
    unknown = app.test_cli_runner().invoke(args=["audit", "list", "--lab", "Nobody"])
    assert unknown.exit_code == 2 and "no lab named" in unknown.output


def test_paused_models_are_not_sampled(client, session, two_labs):
    from arena.battles import eligible_models

    key_a, _ = two_labs
    prompt = gen_prompt(session)
    model_id = register_recorded(client, key_a)
    upload(client, key_a, model_id, [{"prompt_id": prompt.id, "answer": "x"}])
    assert [m.id for m in eligible_models(session, prompt.id)] == [model_id]
    client.patch(f"/api/v1/models/{model_id}", json={"status": "paused"}, headers=bearer(key_a))
    session.expire_all()
    assert eligible_models(session, prompt.id) == []
