"""The labs' API: keys, registration (checked against the loopback model server), recorded answers, status,
isolation between labs, and the audit log. Runs on SQLite and, when configured, PostgreSQL."""

from __future__ import annotations

import json
import socket
import time

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from arena.answer_style import style_counts
from arena.battles.lifecycle import cast_vote
from arena.catalog import labs
from arena.catalog.audit import OPERATOR
from arena.egress import addresses, providers
from arena.egress.secrets import decrypt_secret
from arena.errors import ArenaError
from arena.loopback_model import LoopbackModelServer
from arena.models import AuditEvent, Battle, EndpointCheck, Message, Model, RecordedAnswer, Vote
from arena.settings import override
from tests.arena.conftest import gen_endpoint_model, gen_prompt

ENDPOINT_KEY = "sk-endpoint-secret-0123456789"


@pytest.fixture
def two_labs(app, session):
    """Two labs and their keys; loopback endpoints allowed, endpoint checks limited to 1 s."""
    override(app, ALLOW_PRIVATE_ENDPOINTS=True, ENDPOINT_CHECK_TIMEOUT=1.0)
    (_, key_a), (_, key_b) = labs.create_lab(session, OPERATOR, "Lab A"), labs.create_lab(session, OPERATOR, "Lab B")
    return key_a, key_b


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def register_recorded(client, key, name="Recorded One", organization="Lab A Inc"):
    response = client.post(
        "/api/v1/models", json={"name": name, "organization": organization, "kind": "recorded"}, headers=bearer(key)
    )
    assert response.status_code == 201, response.json
    return response.json["id"]


def upload(client, key, model_id, lines, **kwargs):
    data = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    return client.post(
        f"/api/v1/models/{model_id}/answers",
        data=data.encode(),
        headers={**bearer(key), "Content-Type": "application/jsonl"},
        **kwargs,
    )


def gen_battle(
    session, model_a_id, model_b_id, *, state="voted", flagged=False, winner="a", source="arena", errors=(None, None)
):
    number = session.scalar(select(func.count()).select_from(Battle)) + 1
    battle = Battle(
        id=f"battle{number}",
        prompt_text="hi",
        model_a_id=model_a_id,
        model_b_id=model_b_id,
        state=state,
        flagged=flagged,
        source=source,
    )
    session.add(battle)
    session.flush()
    for side, error in zip("ab", errors):
        session.add(
            Message(
                battle_id=battle.id,
                side=side,
                role="assistant",
                content="" if error else "answer",
                complete=error is None,
                error=error,
            )
        )
    if winner:
        session.add(Vote(battle_id=battle.id, winner=winner, source=source))
    session.commit()
    return battle


# ------------------------------------------------------------------------------------------------ keys

LAB_ROUTES = [
    ("get", "/api/v1/models"),
    ("post", "/api/v1/models"),
    ("get", "/api/v1/models/1"),
    ("patch", "/api/v1/models/1"),
    ("delete", "/api/v1/models/1"),
    ("post", "/api/v1/models/1/answers"),
    ("post", "/api/v1/keys/rotate"),
]


def test_every_lab_route_refuses_missing_malformed_wrong_and_revoked_keys_alike(client, two_labs):
    key_a, _ = two_labs
    old = key_a
    rotated = client.post("/api/v1/keys/rotate", headers=bearer(key_a))
    assert rotated.status_code == 200
    new_key = rotated.json["api_key"]
    assert new_key.startswith("arena_") and new_key != old and rotated.json["revoked"] == 1
    bad_headers = [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": f"Basic {new_key}"},
        {"Authorization": "Bearer arena_not-a-real-key"},
        {"Authorization": "Bearer not-even-prefixed"},
        bearer(old),
    ]
    for method, path in LAB_ROUTES:
        for headers in bad_headers:
            response = getattr(client, method)(path, headers=headers, json={"status": "paused"})
            assert response.status_code == 401, (method, path, headers)
            assert response.json == {"error": {"code": "unauthorized", "message": response.json["error"]["message"]}}
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/api/v1/models", headers=bearer(new_key)).status_code == 200
    assert client.get("/api/v1/models", headers={"Authorization": f"bearer  {new_key}"}).status_code == 200


# ------------------------------------------------------------------------------------------------ isolation

# A valid request for each documented operation on one model: refusals must come from ownership, not from input.
BODIES = {
    ("patch", "/api/v1/models/{model_id}"): [
        {"status": "paused"},
        {"status": "retired"},
        {"endpoint": {"model": "echo", "api_key": "sk-x"}},
        {"system_prompt": "Mine now."},
    ],
    ("post", "/api/v1/models/{model_id}/answers"): ['{"prompt_id": 1, "answer": "mine now"}\n'],
}


def test_two_labs_try_every_model_route_on_each_others_models_and_get_404_as_for_no_model(
    client, session, two_labs, loopback
):
    """Every documented route with a model id, by each lab on the other's models (endpoint and recorded), answers
    exactly as for an id that does not exist, changes nothing, and leaves a record of the attempt."""
    keys = two_labs
    gen_prompt(session)
    owned = [
        [
            register_endpoint(client, keys[0], loopback.base_url, name="A endpoint", api_key=ENDPOINT_KEY),
            register_recorded(client, keys[0], "A recorded"),
        ],
        [
            register_endpoint(client, keys[1], loopback.base_url, name="B endpoint"),
            register_recorded(client, keys[1], "B recorded", "B"),
        ],
    ]
    document = client.get("/api/v1/openapi.json").json
    routes = [
        (method, path)
        for path, operations in document["paths"].items()
        if "{model_id}" in path
        for method in operations
    ]
    assert len(routes) == 4
    before = {
        m.id: (m.status, m.base_url, m.endpoint_model, m.system_prompt, m.endpoint_key_encrypted)
        for m in session.scalars(select(Model))
    }
    sent = len(loopback.requests)
    missing = max(before) + 1000
    attempts = 0
    for attacker, victim in ((0, 1), (1, 0)):
        for method, path in routes:
            for body in BODIES.get((method, path), [None]):
                for target in [*owned[victim], missing]:
                    url = path.replace("{model_id}", str(target))
                    kwargs = (
                        {"data": body.encode(), "content_type": "application/jsonl"}
                        if isinstance(body, str)
                        else {"json": body}
                    )
                    response = getattr(client, method)(url, headers=bearer(keys[attacker]), **kwargs)
                    assert response.status_code == 404, (method, url, body)
                    assert response.json == {
                        "error": {"code": "model_not_found", "message": f"You have no model {target}."}
                    }
                    attempts += method != "get"
        listed = {m["id"] for m in client.get("/api/v1/models", headers=bearer(keys[attacker])).json["models"]}
        assert listed == set(owned[attacker])
    session.expire_all()
    assert {
        m.id: (m.status, m.base_url, m.endpoint_model, m.system_prompt, m.endpoint_key_encrypted)
        for m in session.scalars(select(Model))
    } == before
    assert session.scalar(select(func.count()).select_from(RecordedAnswer)) == 0
    assert len(loopback.requests) == sent  # no endpoint check ran for another lab's model
    failures = session.scalars(select(AuditEvent).where(AuditEvent.action.like("%_failed"))).all()
    assert len(failures) == attempts and {f.details["code"] for f in failures} == {"model_not_found"}
    for model_ids, lab_name in ((owned[1] + [missing], "Lab A"), (owned[0] + [missing], "Lab B")):
        assert {f.model_id for f in failures if f.actor == lab_name} == set(model_ids)
    for owner, model_ids in enumerate(owned):  # while each owner still reads its own
        for model_id in model_ids:
            assert client.get(f"/api/v1/models/{model_id}", headers=bearer(keys[owner])).status_code == 200


# ------------------------------------------------------------------------------------------------ endpoint models


def test_registering_a_working_endpoint_checks_it_and_never_returns_its_key(client, session, two_labs, loopback):
    key_a, _ = two_labs
    response = client.post(
        "/api/v1/models",
        headers=bearer(key_a),
        json={
            "name": "Echo 1",
            "organization": "Lab A Inc",
            "system_prompt": "Be brief.",
            "sampling_params": {"temperature": 0.2, "max_tokens": 64},
            "endpoint": {"base_url": loopback.base_url, "model": "echo", "api_key": ENDPOINT_KEY},
        },
    )
    assert response.status_code == 201, response.json
    body = response.json
    assert body["endpoint"] == {"base_url": loopback.base_url, "model": "echo", "has_api_key": True}
    assert body["status"] == "active" and body["sampling_params"] == {"temperature": 0.2, "max_tokens": 64}
    assert body["health"]["last_success_at"] and body["health"]["error_rate"] == 0.0
    assert body["health"]["calls"] == 1 and body["health"]["last_error"] is None
    assert body["leaderboard"]["rating"] is None and body["votes"]["counted"] == 0
    assert loopback.requests[-1]["model"] == "echo"  # the check was a real request
    for read in (
        client.get(f"/api/v1/models/{body['id']}", headers=bearer(key_a)),
        client.get("/api/v1/models", headers=bearer(key_a)),
        response,
    ):
        assert ENDPOINT_KEY not in read.get_data(as_text=True)
    stored = session.get(Model, body["id"])
    assert ENDPOINT_KEY not in stored.endpoint_key_encrypted
    assert decrypt_secret("test-secret", stored.endpoint_key_encrypted) == ENDPOINT_KEY
    audit_row = session.scalars(select(AuditEvent).where(AuditEvent.action == "model.create")).one()
    assert ENDPOINT_KEY not in json.dumps(audit_row.details) and audit_row.model_id == body["id"]


@pytest.mark.parametrize(
    "behaviour, kind", [("http-500", "http"), ("never", "timeout"), ("stall-mid", "timeout"), ("garbage", "garbage")]
)
def test_a_failing_or_slow_endpoint_is_refused_with_what_failed(client, session, two_labs, loopback, behaviour, kind):
    key_a, _ = two_labs
    started = time.monotonic()
    response = client.post(
        "/api/v1/models",
        headers=bearer(key_a),
        json={
            "name": "Broken",
            "organization": "Lab A Inc",
            "endpoint": {"base_url": loopback.base_url, "model": behaviour},
        },
    )
    assert time.monotonic() - started < 2.5  # ENDPOINT_CHECK_TIMEOUT is 1 s
    assert response.status_code == 422
    assert response.json["error"]["code"] == "endpoint_check_failed"
    assert response.json["error"]["details"]["kind"] == kind
    if kind == "http":
        assert response.json["error"]["details"]["status"] == 500 and "500" in response.json["error"]["message"]
    assert session.scalar(select(func.count()).select_from(Model)) == 0
    failed = session.scalars(select(AuditEvent).where(AuditEvent.action != "lab.create")).one()  # the attempt only
    assert (failed.actor, failed.action, failed.model_id) == ("Lab A", "model.create_failed", None)
    assert failed.details["code"] == "endpoint_check_failed" and failed.details["status"] == 422
    assert failed.details["request"]["endpoint"] == {"base_url": loopback.base_url, "model": behaviour}


def test_a_slow_streaming_endpoint_registers_since_the_check_is_short(client, two_labs, loopback):
    key_a, _ = two_labs
    started = time.monotonic()
    response = client.post(
        "/api/v1/models",
        headers=bearer(key_a),
        json={
            "name": "Slow",
            "organization": "Lab A Inc",
            "endpoint": {"base_url": loopback.base_url, "model": "slow:5"},
        },
    )
    assert response.status_code == 201 and time.monotonic() - started < 3.0  # not the 5 s of the whole answer
    assert loopback.requests[-1]["stream"] is False and loopback.requests[-1]["max_tokens"] == 8


def test_an_unreachable_endpoint_is_refused(client, two_labs):
    key_a, _ = two_labs
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    response = client.post(
        "/api/v1/models",
        headers=bearer(key_a),
        json={
            "name": "Nowhere",
            "organization": "Lab A Inc",
            "endpoint": {"base_url": f"http://127.0.0.1:{port}/v1", "model": "echo"},
        },
    )
    assert response.status_code == 422 and response.json["error"]["details"]["kind"] == "connect"


@pytest.mark.parametrize(
    "base_url, status, code",
    [
        ("ftp://example.com/v1", 400, "invalid_base_url"),
        ("http://user:pass@127.0.0.1:9/v1", 400, "invalid_base_url"),
        ("http://169.254.169.254/latest", 422, "endpoint_unsafe"),
        ("http://[::ffff:169.254.169.254]/v1", 422, "endpoint_unsafe"),
        ("http://[fe80::1]/v1", 422, "endpoint_unsafe"),
        ("http://0.0.0.0:9/v1", 422, "endpoint_unsafe"),
        ("https://models.example.com/v1?api-key=sk-123", 400, "invalid_base_url"),
    ],
)
def test_unsafe_endpoint_urls_are_refused_even_when_private_addresses_are_allowed(
    client, two_labs, base_url, status, code
):
    key_a, _ = two_labs
    response = client.post(
        "/api/v1/models",
        headers=bearer(key_a),
        json={"name": "Sneaky", "organization": "Lab A Inc", "endpoint": {"base_url": base_url, "model": "echo"}},
    )
    assert (response.status_code, response.json["error"]["code"]) == (status, code)


def test_loopback_endpoints_need_the_operator_setting(app, client, two_labs, loopback):
    key_a, _ = two_labs
    override(app, ALLOW_PRIVATE_ENDPOINTS=False)
    body = {"name": "Local", "organization": "Lab A Inc", "endpoint": {"base_url": loopback.base_url, "model": "echo"}}
    response = client.post("/api/v1/models", headers=bearer(key_a), json=body)
    assert response.status_code == 422 and "ARENA_ALLOW_PRIVATE_ENDPOINTS" in response.json["error"]["message"]
    assert loopback.requests == []  # refused before any request
    override(app, ALLOW_PRIVATE_ENDPOINTS=True)
    assert client.post("/api/v1/models", headers=bearer(key_a), json=body).status_code == 201


def test_a_host_that_rebinds_after_the_check_is_never_called(app, client, two_labs, loopback, monkeypatch):
    """DNS rebinding: the host resolves to a public address when its address is checked, then to loopback for
    the connection. The client vets the addresses it dials, so no request reaches loopback."""
    key_a, _ = two_labs
    override(app, ALLOW_PRIVATE_ENDPOINTS=False)
    real_getaddrinfo, lookups = socket.getaddrinfo, []

    def rebinding(host, port, *args):
        if host != "rebind.example":
            return real_getaddrinfo(host, port, *args)
        lookups.append(host)
        address = "93.184.216.34" if len(lookups) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    port = loopback.base_url.split(":")[2].split("/")[0]
    response = client.post(
        "/api/v1/models",
        headers=bearer(key_a),
        json={
            "name": "Rebinder",
            "organization": "Lab A Inc",
            "endpoint": {"base_url": f"http://rebind.example:{port}/v1", "model": "echo"},
        },
    )
    assert response.status_code == 422 and response.json["error"]["details"]["kind"] == "connect"
    assert "refused" in response.json["error"]["message"] and len(lookups) == 2
    assert loopback.requests == []
    # the same client connects to what it vetted when the address is allowed
    allowed = addresses.endpoint_client(allow_private=True)
    assert (
        allowed.post(
            f"http://rebind.example:{port}/v1/chat/completions",
            json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]},
        ).status_code
        == 200
    )
    assert len(loopback.requests) == 1


def test_the_check_sends_the_system_prompt_and_sampling_parameters(client, two_labs, loopback):
    key_a, _ = two_labs
    model_id = register_endpoint(
        client,
        key_a,
        loopback.base_url,
        system_prompt="Answer in French.",
        sampling_params={"temperature": 0.25, "max_tokens": 900},
    )
    check = loopback.requests[-1]
    assert check["messages"][0] == {"role": "system", "content": "Answer in French."}
    assert check["temperature"] == 0.25 and check["max_tokens"] == 8  # the check stays short
    assert patch_model(client, key_a, model_id, {"sampling_params": {"temperature": 0.75}}).status_code == 200
    assert loopback.requests[-1]["temperature"] == 0.75 and len(loopback.requests) == 2  # checked again


def test_every_address_a_host_resolves_to_is_checked(monkeypatch):
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda host, port, *a: [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port)),
        ],
    )
    with pytest.raises(Exception, match="metadata"):
        addresses.check_endpoint_address("https://models.example.com/v1", allow_private=True)


@pytest.mark.parametrize(
    "address, allowed_private, allowed_public",
    [
        ("8.8.8.8", True, True),
        ("2606:4700::1111", True, True),
        ("10.1.2.3", True, False),
        ("127.0.0.1", True, False),
        ("::1", True, False),
        ("192.168.0.9", True, False),
        ("169.254.169.254", False, False),
        ("100.100.100.200", False, False),
        ("fd00:ec2::254", False, False),
        ("fe80::1", False, False),
        ("64:ff9b::a9fe:a9fe", False, False),
        ("224.0.0.1", False, False),
    ],
)
def test_address_rules(address, allowed_private, allowed_public):
    assert (addresses.address_problem(address, allow_private=True) is None) == allowed_private
    assert (addresses.address_problem(address, allow_private=False) is None) == allowed_public


# ------------------------------------------------------------------------------------------------ requests


@pytest.mark.parametrize(
    "body, code",
    [
        ({"organization": "x", "kind": "recorded"}, "invalid_request"),
        ({"name": "  ", "organization": "x", "kind": "recorded"}, "invalid_request"),
        ({"name": "a", "organization": "x", "kind": "recorded", "colour": "red"}, "invalid_request"),
        ({"name": "a\x00b", "organization": "x", "kind": "recorded"}, "invalid_request"),
        ({"name": "a", "organization": "x"}, "invalid_request"),
        (
            {"name": "a", "organization": "x", "kind": "recorded", "endpoint": {"base_url": "http://h", "model": "m"}},
            "invalid_request",
        ),
        (
            {
                "name": "a",
                "organization": "x",
                "endpoint": {"base_url": "http://h", "model": "m"},
                "sampling_params": {"temperature": 9},
            },
            "invalid_request",
        ),
        ([1, 2], "invalid_json"),
    ],
)
def test_invalid_registrations_get_400_with_the_field(client, two_labs, body, code):
    key_a, _ = two_labs
    response = client.post("/api/v1/models", json=body, headers=bearer(key_a))
    assert response.status_code == 400 and response.json["error"]["code"] == code


def test_every_refused_registration_is_on_record_without_the_key(app, client, session, two_labs):
    key_a, _ = two_labs
    register_recorded(client, key_a, name="Taken")
    attempts = [
        ({"name": "Taken", "organization": "A", "kind": "recorded"}, 409, "name_taken"),
        (
            {
                "name": "Probe",
                "organization": "A",
                "endpoint": {"base_url": "http://169.254.169.254/latest", "model": "m", "api_key": ENDPOINT_KEY},
            },
            422,
            "endpoint_unsafe",
        ),
        ({"name": "x" * 300, "organization": "A", "kind": "recorded"}, 400, "invalid_request"),
        (
            {"name": "Big", "organization": "A", "kind": "recorded", "system_prompt": "y" * 5000},
            413,
            "request_entity_too_large",
        ),
    ]
    override(app, MAX_REQUEST_BYTES=4096)
    for body, status, code in attempts:
        response = client.post("/api/v1/models", json=body, headers=bearer(key_a))
        assert (response.status_code, response.json["error"]["code"]) == (status, code)
    failures = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "model.create_failed").order_by(AuditEvent.id)
    ).all()
    assert [(f.details["status"], f.details["code"]) for f in failures] == [(s, c) for _, s, c in attempts]
    assert all(f.actor == "Lab A" and f.key_prefix == key_a[:12] and f.model_id is None for f in failures)
    assert failures[1].details["request"]["endpoint"] == {
        "base_url": "http://169.254.169.254/latest",
        "model": "m",
        "api_key": "set",
    }
    assert len(failures[2].details["request"]["name"]) < 210  # what was asked, cut short
    assert ENDPOINT_KEY not in json.dumps([f.details for f in failures])
    assert session.scalar(select(func.count()).select_from(Model)) == 1


def test_malformed_json_bodies_get_400_never_500(client, two_labs):
    key_a, _ = two_labs
    model_id = register_recorded(client, key_a)
    headers = {**bearer(key_a), "Content-Type": "application/json"}
    for body in [
        "[" * 100_000,
        '{"name": ' * 50_000,
        "{not json",
        "",
        '{"name": "a", "organization": "b", "kind": "recorded", "system_prompt": "\\ud800"}',
    ]:
        for method, url in (("post", "/api/v1/models"), ("patch", f"/api/v1/models/{model_id}")):
            response = getattr(client, method)(url, data=body, headers=headers)
            assert response.status_code == 400 and response.json["error"]["code"] in ("invalid_json", "invalid_request")


def test_names_are_unique_across_the_arena(client, two_labs):
    key_a, key_b = two_labs
    register_recorded(client, key_a, name="Taken")
    response = client.post(
        "/api/v1/models", json={"name": "Taken", "organization": "B", "kind": "recorded"}, headers=bearer(key_b)
    )
    assert response.status_code == 409 and response.json["error"]["code"] == "name_taken"


# ------------------------------------------------------------------------------------------------ answers


def test_answers_upload_stores_all_lines(client, session, two_labs):
    key_a, _ = two_labs
    p1, p2 = gen_prompt(session, "one"), gen_prompt(session, "two")
    model_id = register_recorded(client, key_a)
    styled = "# Plan\n\n- **one** step\n- two"
    response = upload(
        client,
        key_a,
        model_id,
        [{"prompt_id": p1.id, "answer": "First.", "duration_ms": 1200}, "", {"prompt_id": p2.id, "answer": styled}],
    )
    assert response.status_code == 201 and response.json == {"model_id": model_id, "imported": 2}
    stored = session.scalars(select(RecordedAnswer).order_by(RecordedAnswer.prompt_id)).all()
    assert [(a.prompt_id, a.text, a.duration_ms) for a in stored] == [(p1.id, "First.", 1200.0), (p2.id, styled, None)]
    # the style-controlled board's covariates are counted on upload, as for every other way answers arrive
    assert [(a.header_count, a.list_count, a.bold_count) for a in stored] == [(0, 0, 0), (1, 2, 1)]
    assert [a.tokens for a in stored] == [style_counts("First.")["tokens"], style_counts(styled)["tokens"]]
    assert client.get(f"/api/v1/models/{model_id}", headers=bearer(key_a)).json["recorded_answers"] == 2
    again = upload(client, key_a, model_id, [{"prompt_id": p1.id, "answer": "Again."}])
    assert again.status_code == 422 and "already has an answer" in again.json["error"]["details"]["lines"][0]["error"]


def test_a_malformed_upload_stores_nothing_and_reports_each_line(client, session, two_labs):
    key_a, _ = two_labs
    p1 = gen_prompt(session)
    model_id = register_recorded(client, key_a)
    lines = [
        {"prompt_id": p1.id, "answer": "fine"},
        "{not json",
        {"prompt_id": 999999, "answer": "x"},
        {"prompt_id": p1.id, "answer": "twice"},
        {"prompt_id": p1.id + 0.5, "answer": "x"},
        {"prompt_id": p1.id, "answer": "x", "extra": 1},
        {"prompt_id": p1.id, "answer": "nul\x00"},
        "[1]",
    ]
    response = upload(client, key_a, model_id, lines)
    assert response.status_code == 422
    error = response.json["error"]
    assert error["code"] == "invalid_answers" and error["details"]["failed"] == 7 and error["details"]["total"] == 8
    assert [p["line"] for p in error["details"]["lines"]] == [2, 3, 4, 5, 6, 7, 8]
    assert "not valid JSON" in error["details"]["lines"][0]["error"]
    assert "twice" in error["details"]["lines"][2]["error"]
    bad_utf8 = client.post(
        f"/api/v1/models/{model_id}/answers", data=b'{"prompt_id": 1, "answer": "\xff"}\n', headers=bearer(key_a)
    )
    assert bad_utf8.status_code == 422 and bad_utf8.json["error"]["details"]["lines"][0]["error"] == "not UTF-8 text"
    assert upload(client, key_a, model_id, ["", "  "]).status_code == 400
    assert session.scalar(select(func.count()).select_from(RecordedAnswer)) == 0
    assert (
        session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "answers.import")) == 0
    )


def test_an_oversized_upload_is_refused_whole(app, client, session, two_labs):
    key_a, _ = two_labs
    p1 = gen_prompt(session)
    model_id = register_recorded(client, key_a)
    override(app, MAX_REQUEST_BYTES=4096)
    response = upload(client, key_a, model_id, [{"prompt_id": p1.id, "answer": "x" * 5000}])
    assert response.status_code == 413 and set(response.json["error"]) == {"code", "message"}
    assert session.scalar(select(func.count()).select_from(RecordedAnswer)) == 0
    failed = session.scalars(select(AuditEvent).where(AuditEvent.action == "answers.import_failed")).one()
    assert failed.model_id == model_id and failed.details["status"] == 413
    assert failed.details["request"]["content_length"] > 4096


def test_endpoint_models_take_no_answers(client, session, two_labs, loopback):
    key_a, _ = two_labs
    gen_prompt(session)
    created = client.post(
        "/api/v1/models",
        headers=bearer(key_a),
        json={"name": "Echo", "organization": "A", "endpoint": {"base_url": loopback.base_url, "model": "echo"}},
    )
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
    actions = session.scalars(
        select(AuditEvent.action).where(AuditEvent.action != "lab.create").order_by(AuditEvent.id)
    ).all()
    assert actions == [
        "model.create",
        "model.pause",
        "model.resume",
        "model.update",
        "model.update_failed",
        "model.update_failed",
        "model.retire",
        "model.update_failed",
    ]
    assert session.scalars(select(AuditEvent.details).where(AuditEvent.action == "model.update")).one() == {
        "system_prompt": "changed"
    }


def test_a_model_with_a_counted_vote_cannot_be_deleted_only_retired(client, session, two_labs):
    key_a, key_b = two_labs
    mine, theirs = register_recorded(client, key_a, "Mine"), register_recorded(client, key_b, "Theirs", "B")
    gen_battle(session, mine, theirs, winner="a")
    gen_battle(session, mine, theirs, flagged=True, winner="b")
    gen_battle(session, theirs, mine, state="void", winner=None, errors=("ProviderError: boom", None))
    status = client.get(f"/api/v1/models/{mine}", headers=bearer(key_a)).json
    assert status["battles"] == 3 and status["deletable"] is False
    assert status["votes"] == {
        "counted": 1,
        "excluded": 1,
        "excluded_by_reason": {"identity_leak": 1, "battle_void": 0, "voter_excluded": 0},
    }
    refused = client.delete(f"/api/v1/models/{mine}", headers=bearer(key_a))
    assert refused.status_code == 409 and refused.json["error"]["code"] == "model_has_counted_votes"
    assert session.get(Model, mine) is not None
    assert session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "model.delete")) == 0


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


def test_a_deleted_models_id_is_never_given_to_another(client, session, two_labs):
    """The audit log keeps a deleted model's id: a new model must not inherit its history (SQLite would reuse
    the largest id without AUTOINCREMENT, migration 0005)."""
    key_a, _ = two_labs
    first = register_recorded(client, key_a, "First")
    newest = register_recorded(client, key_a, "Newest")
    assert client.delete(f"/api/v1/models/{newest}", headers=bearer(key_a)).status_code == 204
    again = register_recorded(client, key_a, "Again")
    assert again > newest > first
    history = session.scalars(select(AuditEvent.action).where(AuditEvent.model_id == again)).all()
    assert history == ["model.create"]


def test_endpoint_health_counts_the_answers_in_battles(client, session, two_labs, loopback):
    key_a, key_b = two_labs
    created = client.post(
        "/api/v1/models",
        headers=bearer(key_a),
        json={"name": "Echo", "organization": "A", "endpoint": {"base_url": loopback.base_url, "model": "echo"}},
    )
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
    events = session.scalars(
        select(AuditEvent).where(AuditEvent.action != "lab.create").order_by(AuditEvent.id)
    ).all()  # the fixture's labs are created by the operator
    assert [(e.actor, e.action, e.model_id) for e in events] == [
        ("Lab A", "model.create", model_id),
        ("Lab A", "model.pause", model_id),
        ("Lab A", "key.rotate", None),
    ]
    assert all(e.key_prefix == key_a[:12] for e in events) and new_key not in json.dumps([e.details for e in events])
    for statement in ("UPDATE audit_log SET action = 'nothing'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"):
            session.execute(text(statement))
        session.rollback()
    assert session.scalar(select(func.count()).select_from(AuditEvent)) == 3 + 2  # and the two lab.create

    result = app.test_cli_runner().invoke(args=["audit", "list", "--lab", "Lab A"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["WHEN", "(UTC)", "ACTOR", "KEY", "LAB", "ACTION", "MODEL", "DETAILS"]
    assert "key.rotate" in lines[1] and "model.create" in lines[3] and '"name": "Audited"' in lines[3]
    as_json = app.test_cli_runner().invoke(args=["audit", "list", "--json", "--model", str(model_id)])
    records = [json.loads(line) for line in as_json.output.splitlines()]
    assert [(r["action"], r["actor"], r["lab"], r["key"]) for r in records] == [
        ("model.pause", "Lab A", "Lab A", key_a[:12]),
        ("model.create", "Lab A", "Lab A", key_a[:12]),
    ]
    unknown = app.test_cli_runner().invoke(args=["audit", "list", "--lab", "Nobody"])
    assert unknown.exit_code == 2 and "no lab named" in unknown.output


def test_paused_models_are_not_sampled(client, session, two_labs):
    from arena.battles.pairing import eligible_models

    key_a, _ = two_labs
    prompt = gen_prompt(session)
    model_id = register_recorded(client, key_a)
    upload(client, key_a, model_id, [{"prompt_id": prompt.id, "answer": "x"}])
    assert [m.id for m in eligible_models(session, prompt.id)] == [model_id]
    client.patch(f"/api/v1/models/{model_id}", json={"status": "paused"}, headers=bearer(key_a))
    session.expire_all()
    assert eligible_models(session, prompt.id) == []


# ------------------------------------------------------------------------------------------------ changing endpoints


def register_endpoint(client, key, base_url, name="Echo", model="echo", api_key=None, **extra):
    endpoint = {"base_url": base_url, "model": model, **({"api_key": api_key} if api_key else {})}
    response = client.post(
        "/api/v1/models",
        headers=bearer(key),
        json={"name": name, "organization": "Lab A Inc", "endpoint": endpoint, **extra},
    )
    assert response.status_code == 201, response.json
    return response.json["id"]


def patch_model(client, key, model_id, body):
    return client.patch(f"/api/v1/models/{model_id}", json=body, headers=bearer(key))


def stored(session, model_id) -> Model:
    session.expire_all()
    return session.get(Model, model_id)


def test_a_new_endpoint_is_checked_for_real_then_stored_with_its_key_encrypted(client, session, two_labs, loopback):
    key_a, _ = two_labs
    model_id = register_endpoint(client, key_a, loopback.base_url, api_key=ENDPOINT_KEY)
    gen_battle(
        session,
        model_id,
        register_recorded(client, key_a),
        state="void",
        winner=None,
        errors=("ProviderError: HTTP 500", None),
    )
    before = client.get(f"/api/v1/models/{model_id}", headers=bearer(key_a)).json["health"]
    assert before["calls"] == 2 and before["error_rate"] == 0.5
    new_key = "sk-the-new-one-987654321"
    with LoopbackModelServer(api_key=new_key) as moved:
        response = patch_model(
            client,
            key_a,
            model_id,
            {"endpoint": {"base_url": moved.base_url + "/", "model": "slow:0", "api_key": new_key}},
        )
        assert response.status_code == 200, response.json
        assert moved.requests[-1]["model"] == "slow:0" and moved.requests[-1]["max_tokens"] == 8
    body = response.json
    assert body["endpoint"] == {"base_url": moved.base_url, "model": "slow:0", "has_api_key": True}
    assert new_key not in response.get_data(as_text=True)
    # the health is the new endpoint's: its check, none of the old endpoint's failures
    assert body["health"]["calls"] == 1 and body["health"]["error_rate"] == 0.0
    assert body["health"]["last_error"] is None and body["health"]["since"] > before["since"]
    model = stored(session, model_id)
    assert (model.base_url, model.endpoint_model) == (moved.base_url, "slow:0")
    assert new_key not in model.endpoint_key_encrypted
    assert decrypt_secret("test-secret", model.endpoint_key_encrypted) == new_key
    event = session.scalars(select(AuditEvent).where(AuditEvent.action == "model.update")).one()
    assert event.details["base_url"] == {"from": loopback.base_url, "to": moved.base_url}
    assert event.details["model"] == {"from": "echo", "to": "slow:0"} and event.details["api_key"] == "changed"
    assert new_key not in json.dumps(event.details) and ENDPOINT_KEY not in json.dumps(event.details)


def test_a_failing_new_endpoint_changes_nothing_and_the_attempt_is_audited(client, session, two_labs, loopback):
    key_a, _ = two_labs
    model_id = register_endpoint(client, key_a, loopback.base_url, api_key=ENDPOINT_KEY)
    before = stored(session, model_id)
    encrypted, checks = before.endpoint_key_encrypted, session.scalar(select(func.count()).select_from(EndpointCheck))
    for endpoint, status, code in [
        ({"model": "http-500"}, 422, "endpoint_check_failed"),
        ({"model": "never"}, 422, "endpoint_check_failed"),
        ({"base_url": "http://169.254.169.254/v1", "api_key": None}, 422, "endpoint_unsafe"),
        ({"base_url": "http://localhost:1/v1?key=sk-in-the-url"}, 400, "invalid_base_url"),
        ({}, 400, "invalid_request"),
        ({"base_url": None}, 400, "invalid_request"),
    ]:
        response = patch_model(client, key_a, model_id, {"endpoint": endpoint, "system_prompt": "New prompt."})
        assert (response.status_code, response.json["error"]["code"]) == (status, code), endpoint
    model = stored(session, model_id)
    assert (model.base_url, model.endpoint_model, model.system_prompt) == (loopback.base_url, "echo", None)
    assert model.endpoint_key_encrypted == encrypted
    assert session.scalar(select(func.count()).select_from(EndpointCheck)) == checks  # a refused check is no call
    failures = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "model.update_failed").order_by(AuditEvent.id)
    ).all()
    assert [f.details["code"] for f in failures] == [
        "endpoint_check_failed",
        "endpoint_check_failed",
        "endpoint_unsafe",
        "invalid_base_url",
        "invalid_request",
        "invalid_request",
    ]
    assert all(f.model_id == model_id and f.key_prefix == key_a[:12] for f in failures)
    assert failures[2].details["request"]["endpoint"] == {"base_url": "http://169.254.169.254/v1", "api_key": "none"}


def test_the_stored_key_is_never_sent_to_another_host(client, session, two_labs, loopback):
    key_a, _ = two_labs
    with LoopbackModelServer(api_key=ENDPOINT_KEY) as guarded:
        model_id = register_endpoint(client, key_a, guarded.base_url, api_key=ENDPOINT_KEY)
        # same origin, another path or model: the stored key goes along, and the check passes with it
        response = patch_model(
            client, key_a, model_id, {"endpoint": {"base_url": guarded.base_url[:-3], "model": "slow:0"}}
        )
        assert response.status_code == 200, response.json
        assert response.json["endpoint"]["has_api_key"] is True and guarded.requests[-1]["model"] == "slow:0"
        sent_before = len(guarded.requests)
        # another origin (the other loopback server's port): only with the key given again, or null
        refused = patch_model(client, key_a, model_id, {"endpoint": {"base_url": loopback.base_url}})
        assert refused.status_code == 400 and refused.json["error"]["code"] == "api_key_required"
        assert loopback.requests == [] and len(guarded.requests) == sent_before
        moved = patch_model(client, key_a, model_id, {"endpoint": {"base_url": loopback.base_url, "api_key": None}})
        assert moved.status_code == 200 and moved.json["endpoint"]["has_api_key"] is False
    assert "Authorization" not in loopback.requests[-1] and stored(session, model_id).endpoint_key_encrypted is None


def test_a_wrong_new_key_is_refused_and_an_echoed_key_never_reaches_the_log(client, session, two_labs, monkeypatch):
    key_a, _ = two_labs
    with LoopbackModelServer(api_key=ENDPOINT_KEY) as guarded:
        model_id = register_endpoint(client, key_a, guarded.base_url, api_key=ENDPOINT_KEY)
        wrong = patch_model(client, key_a, model_id, {"endpoint": {"api_key": "sk-wrong"}})
        assert wrong.status_code == 422 and wrong.json["error"]["details"] == {"kind": "http", "status": 401}
    assert decrypt_secret("test-secret", stored(session, model_id).endpoint_key_encrypted) == ENDPOINT_KEY

    def echoing_check(base_url, model, *, api_key=None, **options):
        raise providers.ProviderError("http", f"HTTP 401 from {base_url}: invalid key {api_key}", status=401)

    monkeypatch.setattr(providers, "check_endpoint", echoing_check)
    echoed = patch_model(client, key_a, model_id, {"endpoint": {"api_key": "sk-echoed-secret"}})
    assert echoed.status_code == 422 and "[the API key]" in echoed.json["error"]["message"]
    everything = echoed.get_data(as_text=True) + json.dumps(session.scalars(select(AuditEvent.details)).all())
    assert "sk-echoed-secret" not in everything and "sk-wrong" not in everything and ENDPOINT_KEY not in everything


def test_a_rated_models_configuration_is_fixed_but_its_key_and_status_can_change(client, session, two_labs, loopback):
    key_a, key_b = two_labs
    model_id = register_endpoint(
        client,
        key_a,
        loopback.base_url,
        system_prompt="Be brief.",
        sampling_params={"temperature": 0.5},
        api_key=ENDPOINT_KEY,
    )
    gen_battle(session, model_id, register_recorded(client, key_b, "Theirs", "B"), winner="b")  # a counted vote
    for change in [
        {"endpoint": {"base_url": loopback.base_url + "/other"}},
        {"endpoint": {"model": "slow:0"}},
        {"system_prompt": "Be verbose."},
        {"system_prompt": None},
        {"sampling_params": {"temperature": 1}},
        {"sampling_params": None},
        {"status": "paused", "endpoint": {"model": "slow:0"}},
    ]:
        response = patch_model(client, key_a, model_id, change)
        assert response.status_code == 409 and response.json["error"]["code"] == "model_rated", change
    sent = len(loopback.requests)
    model = stored(session, model_id)
    assert (model.base_url, model.endpoint_model, model.system_prompt, model.sampling_params, model.status) == (
        loopback.base_url,
        "echo",
        "Be brief.",
        {"temperature": 0.5},
        "active",
    )
    # the same values again are no change; the key and the status may change (the key after a real check)
    same = patch_model(
        client,
        key_a,
        model_id,
        {
            "system_prompt": "Be brief.",
            "sampling_params": {"temperature": 0.5},
            "endpoint": {"base_url": loopback.base_url, "model": "echo"},
        },
    )
    assert same.status_code == 200 and len(loopback.requests) == sent
    rekeyed = patch_model(client, key_a, model_id, {"endpoint": {"api_key": "sk-rotated"}, "status": "paused"})
    assert rekeyed.status_code == 200 and rekeyed.json["status"] == "paused"
    assert len(loopback.requests) == sent + 1
    assert decrypt_secret("test-secret", stored(session, model_id).endpoint_key_encrypted) == "sk-rotated"
    event = session.scalars(select(AuditEvent).where(AuditEvent.action == "model.pause")).one()
    assert event.details["api_key"] == "changed" and event.details["status"] == {"from": "active", "to": "paused"}


def test_a_change_before_the_first_counted_vote_voids_the_battles_waiting_for_one(client, session, two_labs, loopback):
    key_a, key_b = two_labs
    model_id = register_endpoint(client, key_a, loopback.base_url)
    theirs = register_recorded(client, key_b, "Theirs", "B")
    ready = gen_battle(session, model_id, theirs, state="ready", winner=None).id
    created = gen_battle(session, theirs, model_id, state="created", winner=None).id
    flagged = gen_battle(session, model_id, theirs, flagged=True, winner="a").id  # voted, not counted
    streaming = gen_battle(session, model_id, theirs, state="streaming", winner=None).id
    unrelated = gen_battle(
        session, theirs, register_recorded(client, key_b, "Third", "B"), state="ready", winner=None
    ).id
    response = patch_model(client, key_a, model_id, {"system_prompt": "Be brief."})
    assert response.status_code == 200, response.json
    session.expire_all()
    states = dict(session.execute(select(Battle.id, Battle.state)).all())
    assert [states[b] for b in (ready, created, streaming, flagged, unrelated)] == [
        "void",
        "void",
        "void",
        "voted",
        "ready",
    ]
    assert "configuration changed" in session.get(Battle, ready).void_reason
    event = session.scalars(select(AuditEvent).where(AuditEvent.action == "model.update")).one()
    checked_ms = event.details.pop("checked_ms")  # a new system prompt is checked against the endpoint
    assert event.details == {"system_prompt": "changed", "voided_battles": 3} and checked_ms >= 0
    with pytest.raises(ArenaError, match="void"):  # its answer was the old configuration's: no vote counts for it
        cast_vote(session, session.get(Battle, ready), "a", voter=None, address=None)
    assert client.get(f"/api/v1/models/{model_id}", headers=bearer(key_a)).json["votes"]["counted"] == 0


def test_a_battle_streaming_when_the_configuration_changes_stays_void(client, session, two_labs, loopback):
    """The live path: a voter's battle is answering (slowly) when the lab changes its model; the answers are
    stored when they end, but the battle stays void and takes no vote."""
    key_a, _ = two_labs
    model_id = register_endpoint(client, key_a, loopback.base_url, model="slow:1")
    gen_endpoint_model(session, "Baseline", "Operator", loopback.base_url, "slow:1")
    battle_id = client.post("/api/v1/battles", json={"prompt": "Why is the sky blue?"}).json["id"]
    stream = iter(client.get(f"/api/v1/battles/{battle_id}/stream").response)
    assert next(stream).startswith(b": stream open")
    assert session.scalar(select(Battle.state).where(Battle.id == battle_id)) == "streaming"
    changed = patch_model(client, key_a, model_id, {"sampling_params": {"temperature": 0.1}})
    assert changed.status_code == 200
    events = b"".join(stream).decode()
    assert 'event: end\ndata: {"state": "void"}' in events
    session.expire_all()
    assert session.scalar(select(Battle.state).where(Battle.id == battle_id)) == "void"
    answers = session.scalars(select(Message).where(Message.battle_id == battle_id, Message.role == "assistant"))
    assert [m.complete for m in answers] == [True, True]  # stored all the same, for the record
    vote = client.post(f"/api/v1/battles/{battle_id}/vote", json={"winner": "a"})
    assert vote.status_code == 409 and vote.json["error"]["code"] == "battle_void"


def test_recorded_and_retired_models_take_no_endpoint_change(client, two_labs, loopback):
    key_a, _ = two_labs
    recorded = register_recorded(client, key_a)
    for change in ({"endpoint": {"model": "x"}}, {"sampling_params": {"temperature": 1}}):
        response = patch_model(client, key_a, recorded, change)
        assert response.status_code == 400 and response.json["error"]["code"] == "invalid_request"
    assert patch_model(client, key_a, recorded, {"system_prompt": "Recorded with this."}).status_code == 200
    endpoint = register_endpoint(client, key_a, loopback.base_url)
    assert patch_model(client, key_a, endpoint, {"status": "retired"}).status_code == 200
    sent = len(loopback.requests)
    for change in ({"endpoint": {"model": "slow:0"}}, {"system_prompt": "x"}, {"status": "paused"}):
        response = patch_model(client, key_a, endpoint, change)
        assert response.status_code == 409 and response.json["error"]["code"] == "model_retired"
    assert (
        len(loopback.requests) == sent
        and patch_model(client, key_a, endpoint, {"status": "retired"}).json["status"] == "retired"
    )


def test_a_vote_that_counts_while_the_new_endpoint_is_checked_keeps_the_old_configuration(
    client, session, two_labs, loopback, monkeypatch
):
    key_a, key_b = two_labs
    model_id = register_endpoint(client, key_a, loopback.base_url)
    theirs = register_recorded(client, key_b, "Theirs", "B")
    check = providers.check_endpoint

    def check_while_a_vote_lands(*args, **kwargs):  # the check holds no transaction: a vote can land meanwhile
        gen_battle(session, model_id, theirs, winner="a")
        return check(*args, **kwargs)

    monkeypatch.setattr(providers, "check_endpoint", check_while_a_vote_lands)
    response = patch_model(client, key_a, model_id, {"endpoint": {"model": "slow:0"}})
    assert response.status_code == 409 and response.json["error"]["code"] == "model_rated"
    model = stored(session, model_id)
    assert model.endpoint_model == "echo"
    assert session.scalar(select(func.count()).select_from(EndpointCheck)) == 1
    assert session.scalar(select(Battle.state)) == "voted"
