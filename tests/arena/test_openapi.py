"""The OpenAPI document at /api/v1/openapi.json matches the code: the same routes, and responses that conform
(a bounded schemathesis run: no 5xx, every status, content type and body as documented)."""

from __future__ import annotations

import itertools
import json
import re

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import load_all_checks
from schemathesis.specs.openapi import checks as openapi_checks

from arena.catalog import labs
from arena.catalog.audit import OPERATOR
from arena.egress import addresses, providers
from arena.settings import override
from tests.arena.conftest import gen_prompt

ENDPOINT_MODEL = "the endpoint model the explicit cases register"
# In each mode, valid requests then invalid ones. A count of examples, never a time budget: on a busy machine a
# budget ran out and the test failed, while a count takes longer and still says the same.
EXAMPLES_PER_OPERATION = 10


def _documented_path(rule: str) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def test_every_api_route_is_documented_and_every_documented_route_exists(app, client):
    document = client.get("/api/v1/openapi.json").json
    served = {
        (_documented_path(rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/v1/")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    documented = {(path, method) for path, operations in document["paths"].items() for method in operations}
    assert served == documented
    assert document["openapi"].startswith("3.1")
    lab_operations = [op for path, ops in document["paths"].items() for op in ops.values() if op["tags"] == ["labs"]]
    assert lab_operations and all(
        op["security"] == [{"bearer": []}] and "401" in op["responses"] for op in lab_operations
    )


def test_a_route_without_an_entry_stops_the_document(tmp_path):
    """The document is read from Flask's routes: one added without its entry is an error, not a silent gap."""
    from arena import create_app
    from arena.web import openapi

    app = create_app(
        {"DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}", "INSTANCE_PATH": str(tmp_path), "SECRET_KEY": "k"}
    )
    assert "/api/v1/models/{model_id}" in openapi.document(app)["paths"]
    app.add_url_rule("/api/v1/undocumented", "undocumented", lambda: "")
    with pytest.raises(LookupError, match="/api/v1/undocumented .* has no OpenAPI entry"):
        openapi.document(app)


def test_the_document_never_offers_the_endpoint_key_for_reading(client):
    schemas = client.get("/api/v1/openapi.json").json["components"]["schemas"]
    assert "api_key" in schemas["EndpointIn"]["properties"]
    readable = set(schemas["ModelOut"]["properties"]) | set(schemas["EndpointOut"]["properties"])
    assert "api_key" not in readable and "endpoint_key_encrypted" not in readable


@schemathesis.serializer("application/jsonl")
def _jsonl(_context, value) -> bytes:
    """The answers upload is documented as a string of JSON Lines; send it as it is (invalid UTF-8 included)."""
    if isinstance(value, str):
        return value.encode("utf-8", errors="surrogatepass")
    return value if isinstance(value, bytes) else json.dumps(value).encode()  # negative cases: not a string


# 400s to schema-valid requests that only the model's stored state or a rule across fields can decide: a model's
# kind against the fields sent (an endpoint model needs "endpoint", a recorded one takes none), and an alias with no
# letter or digit (Unicode classes, which the document's regular expressions cannot name portably), and a base
# URL's rules (scheme, host, no credentials, query or fragment, a port in range), checked by the one function the
# CLI uses too, with their own error code.
RULES_THE_SCHEMA_CANNOT_STATE = (
    'Send "endpoint"',
    "A recorded model takes no endpoint",
    "A recorded model has no endpoint",
    "has no letter or digit",
    "the base URL",  # arena.egress.addresses: its own code (invalid_base_url), shared with the CLI
)

CHECKS = [
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
]


def test_schemathesis_finds_no_server_error_and_no_response_that_breaks_the_document(app, session, monkeypatch):
    """Every operation, with a valid key, on a database with a prompt and a model of the lab's own.

    The network is left out: hosts resolve to a public address and the endpoint check passes, so that
    registrations get as far as storing the model.
    """
    load_all_checks()
    monkeypatch.setattr(addresses, "resolve_host", lambda host, port: ["93.184.216.34"])
    monkeypatch.setattr(providers, "check_endpoint", lambda *args, **kwargs: None)
    override(app, ENDPOINT_CHECK_TIMEOUT=1.0)
    _, key = labs.create_lab(session, OPERATOR, "Fuzz Lab")
    gen_prompt(session)
    client = app.test_client()
    own_ids = []
    for name in ("Fuzz target", "Disposable 1", "Disposable 2", "Disposable 3"):
        created = client.post(
            "/api/v1/models",
            json={"name": name, "organization": "F", "kind": "recorded"},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert created.status_code == 201
        own_ids.append(created.json["id"])
    target, disposable = own_ids[0], own_ids[1:]

    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    documented = {(method.upper(), path) for path, ops in schema.raw_schema["paths"].items() for method in ops}
    # schemathesis leaves out the operation that serves the document itself
    assert {(op.method.upper(), op.path) for op in operations} == documented - {("GET", "/api/v1/openapi.json")}
    seen_statuses: dict[str, set[int]] = {}

    for operation, mode in itertools.product(operations, (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)):

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case):
            if operation.path == "/api/v1/keys/rotate":
                return  # rotating would lock the run out; tests/arena/test_lab_api.py covers it
            model_id = (case.path_parameters or {}).get("model_id")
            if mode is GenerationMode.POSITIVE and isinstance(model_id, int) and model_id % 4:
                # most cases aim at the lab's own models (random ids are almost never one)
                if operation.method.upper() != "DELETE":
                    case.path_parameters["model_id"] = target
                elif disposable:
                    case.path_parameters["model_id"] = disposable.pop()
            response = case.call(headers={"Authorization": f"Bearer {key}"})
            seen_statuses.setdefault(operation.label, set()).add(response.status_code)
            # No 5xx, except the one the document names (503: the voters' API has too few models to pair).
            documented = schema.raw_schema["paths"][operation.path][operation.method.lower()]["responses"]
            assert response.status_code < 500 or str(response.status_code) in documented, response.text
            if mode is GenerationMode.POSITIVE and response.status_code == 400:
                # What the document calls valid is not refused as malformed, but for the rules it cannot state
                message = response.json()["error"]["message"]
                allowed = any(rule in message for rule in RULES_THE_SCHEMA_CANNOT_STATE)
                assert allowed, (operation.label, response.text, case.body)
            case.validate_response(response, checks=CHECKS)

        try:
            run()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # nothing to get wrong in an operation without input
    assert 200 in seen_statuses["GET /api/v1/models"]

    # And the successful answers of every lab operation, which random input rarely reaches, conform too.
    by_label = {op.label: op for op in operations}
    prompt_id = gen_prompt(session, "explicit").id
    fresh, doomed = (
        client.post(
            "/api/v1/models",
            json={"name": name, "organization": "F", "kind": "recorded"},
            headers={"Authorization": f"Bearer {key}"},
        ).json["id"]
        for name in ("Explicit target", "Explicit doomed")
    )
    explicit = [
        (
            "POST /api/v1/models",
            {},
            {
                "name": "Explicit endpoint",
                "organization": "F",
                "sampling_params": {"seed": 1},
                "endpoint": {"base_url": "https://models.example.com/v1", "model": "m", "api_key": "k"},
            },
            201,
        ),
        ("POST /api/v1/models", {}, {"name": "Explicit recorded", "organization": "F", "kind": "recorded"}, 201),
        ("GET /api/v1/models/{model_id}", {"model_id": fresh}, None, 200),
        ("PATCH /api/v1/models/{model_id}", {"model_id": fresh}, {"status": "paused"}, 200),
        (
            "PATCH /api/v1/models/{model_id}",
            {"model_id": ENDPOINT_MODEL},
            {"endpoint": {"base_url": "https://other.example.com/v1", "model": "m2"}},
            400,
        ),  # the key must come along
        (
            "PATCH /api/v1/models/{model_id}",
            {"model_id": ENDPOINT_MODEL},
            {"endpoint": {"base_url": "https://other.example.com/v1", "api_key": "k2"}, "sampling_params": None},
            200,
        ),
        ("PATCH /api/v1/models/{model_id}", {"model_id": fresh}, {"endpoint": {"model": "m"}}, 400),
        ("POST /api/v1/models/{model_id}/answers", {"model_id": fresh}, '{"prompt_id": 1, "answer": "x"}\n{', 422),
        (
            "POST /api/v1/models/{model_id}/answers",
            {"model_id": fresh},
            json.dumps({"prompt_id": prompt_id, "answer": "x"}),
            201,
        ),
        ("DELETE /api/v1/models/{model_id}", {"model_id": doomed}, None, 204),
        ("GET /api/v1/models", {}, None, 200),
        ("POST /api/v1/keys/rotate", {}, None, 200),
    ]
    created: dict[str, int] = {}
    for label, path_parameters, body, status in explicit:
        if path_parameters.get("model_id") == ENDPOINT_MODEL:
            path_parameters = {"model_id": created["Explicit endpoint"]}
        case = by_label[label].Case(path_parameters=path_parameters, **({} if body is None else {"body": body}))
        response = case.call(headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == status, (label, response.text)
        case.validate_response(response, checks=CHECKS)
        if label == "POST /api/v1/models":
            created[body["name"]] = response.json()["id"]
