"""Security settings of the whole app: headers, cross-site writes, the session cookie, the trusted proxy, request
size, error bodies that never show internals, operator secrets, and every page fuzzed with malformed input."""

import itertools
import os
import stat

import pytest
from flask import Flask
from sqlalchemy import select, text

from arena.battles import lifecycle
from arena.models import Battle
from arena.settings import override, settings_of
from arena.web import security

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
GENERIC_500 = {"error": {"code": "internal_error", "message": "something went wrong on our side"}}


def assert_security_headers(response):
    assert response.headers["Content-Security-Policy"] == CSP
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"


# ------------------------------------------------------------------------------------------------ headers


def test_every_kind_of_response_carries_the_security_headers(app, client, prompt_id):
    assert security.CONTENT_SECURITY_POLICY == CSP  # the contract with the pages, word for word
    responses = [
        client.get("/api/v1/prompts"),
        client.get("/api/v1/nope"),
        client.get("/no-such-page"),
        client.post("/api/v1/battles", json={"prompt_id": prompt_id}),
        client.post("/api/v1/battles", data="not json"),
        client.post("/api/v1/battles", json={"prompt_id": 1}, headers={"Sec-Fetch-Site": "cross-site"}),
    ]
    created = responses[3].get_json()
    responses.append(client.get(f"/api/v1/battles/{created['id']}/stream"))
    for response in responses:
        assert_security_headers(response)


# ------------------------------------------------------------------------------------------------ cross-site writes


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # a sibling subdomain is another origin
        {"Sec-Fetch-Site": "cross-site", "Origin": "http://localhost"},  # Sec-Fetch-Site decides when present
        {"Origin": "https://evil.example"},
        {"Origin": "http://localhost.evil.example"},
        {"Origin": "http://localhost:8080"},
        {"Origin": "null"},
        {"Origin": "http://[::1"},  # unparseable
    ],
)
def test_a_cross_site_browser_write_is_refused(client, session, prompt_id, headers):
    for method, path in (
        ("post", "/api/v1/battles"),
        ("post", "/api/v1/battles/x/vote"),
        ("patch", "/api/v1/models/1"),
        ("delete", "/api/v1/models/1"),
    ):
        response = getattr(client, method)(path, json={"prompt_id": prompt_id}, headers=headers)
        assert response.status_code == 403, (method, path, response.get_json())
        assert response.get_json()["error"]["code"] == "cross_site_request"
    assert session.scalar(select(Battle.id)) is None


@pytest.mark.parametrize(
    "headers",
    [
        {},  # curl, scripts: no browser, no cookie carried across sites
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},  # typed by the user
        {"Origin": "http://localhost"},
        {"Origin": "http://LOCALHOST:80"},
        {"Origin": "https://localhost"},  # TLS ended by a proxy we were not told to trust
    ],
)
def test_a_same_origin_or_non_browser_write_passes(client, prompt_id, headers):
    response = client.post("/api/v1/battles", json={"prompt_id": prompt_id}, headers=headers)
    assert response.status_code == 201, response.get_json()


def test_a_lab_request_with_a_bearer_key_is_never_refused_as_cross_site(client):
    response = client.post(
        "/api/v1/models", json={}, headers={"Sec-Fetch-Site": "cross-site", "Authorization": "Bearer arena_wrong"}
    )
    assert response.status_code == 401  # the key is checked, not the origin


def test_cross_site_reads_are_not_refused(client):
    assert client.get("/api/v1/prompts", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200


def test_origin_comparison():
    assert security.same_origin("http://arena.example", "arena.example")
    assert security.same_origin("https://arena.example", "arena.example:443")
    assert security.same_origin("http://arena.example:8000", "arena.example:8000")
    assert not security.same_origin("http://arena.example:8001", "arena.example:8000")
    assert not security.same_origin("http://arena.example.evil", "arena.example")
    assert not security.same_origin("ftp://arena.example", "arena.example")
    assert not security.same_origin("null", "arena.example")


# ------------------------------------------------------------------------------------------------ session cookie


def voter_cookie(response) -> str:
    cookies = [h for h in response.headers.getlist("Set-Cookie") if h.startswith("session=")]
    assert len(cookies) == 1, response.headers
    return cookies[0]


def test_the_voter_cookie_is_httponly_and_samesite_lax_and_not_secure_over_http(client, prompt_id):
    cookie = voter_cookie(client.post("/api/v1/battles", json={"prompt_id": prompt_id}))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie


def test_the_cookie_is_secure_over_https(client, prompt_id):
    response = client.post("/api/v1/battles", json={"prompt_id": prompt_id}, base_url="https://localhost")
    assert "Secure" in voter_cookie(response)


def test_forwarded_headers_count_only_behind_a_trusted_proxy(database_url, tmp_path, session, prompt_id):
    from arena import create_app

    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.9"}
    results = {}
    for trust in (0, 1):
        app = create_app(
            {
                "DATABASE_URL": database_url,
                "INSTANCE_PATH": str(tmp_path),
                "SECRET_KEY": "test-secret",
                "TRUST_PROXY": trust,
                "RATE_LIMITS": False,
            }
        )
        try:
            response = app.test_client().post("/api/v1/battles", json={"prompt_id": prompt_id}, headers=forwarded)
            assert response.status_code == 201
            session.expire_all()
            stored = session.scalar(select(Battle.address_hash).where(Battle.id == response.get_json()["id"]))
            results[trust] = ("Secure" in voter_cookie(response), stored)
        finally:
            app.extensions["arena.engine"].dispose()
    assert results[0] == (False, lifecycle.address_hash("test-secret", "127.0.0.1"))  # spoofed headers ignored
    assert results[1] == (True, lifecycle.address_hash("test-secret", "198.51.100.9"))


def test_arena_secure_cookies_forces_the_flag(monkeypatch):
    from arena.settings import Settings

    monkeypatch.setenv("ARENA_SECURE_COOKIES", "1")
    assert Settings().flask_config()["SESSION_COOKIE_SECURE"] is True


# ------------------------------------------------------------------------------------------------ request size


def test_a_body_over_the_limit_is_a_413_json_error(app, client):
    limit = settings_of(app).max_request_bytes
    assert limit == 1 << 20
    response = client.post("/api/v1/battles", data=b"x" * (limit + 1), content_type="application/json")
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "request_entity_too_large"


# ------------------------------------------------------------------------------------------------ error bodies


def test_an_internal_error_answers_the_generic_body_only(client, monkeypatch, prompt_id):
    def explode(*args, **kwargs):
        raise RuntimeError("secret detail: /srv/arena/battles.py line 42, password=hunter2")

    monkeypatch.setattr(lifecycle, "create_battle", explode)
    response = client.post("/api/v1/battles", json={"prompt_id": prompt_id})
    assert response.status_code == 500 and response.get_json() == GENERIC_500
    assert b"secret" not in response.data and b"Traceback" not in response.data


def test_a_database_error_answers_the_generic_body_without_sql(app, client, session, prompt_id):
    session.execute(text("DROP TABLE recorded_answers"))  # a bug's worth of broken schema
    session.commit()
    response = client.post("/api/v1/battles", json={"prompt_id": prompt_id})
    assert response.status_code == 500 and response.get_json() == GENERIC_500
    lowered = response.data.lower()
    for leak in (b"select", b"recorded_answers", b"sqlalchemy", b"psycopg", b"sqlite", b"traceback"):
        assert leak not in lowered


def test_a_page_error_answers_a_plain_message(database_url, tmp_path):
    from arena import create_app

    app = create_app({"DATABASE_URL": database_url, "INSTANCE_PATH": str(tmp_path), "SECRET_KEY": "test-secret"})
    try:
        app.add_url_rule("/explode", "explode", lambda: 1 / 0)
        response = app.test_client().get("/explode", headers={"Accept": "text/html"})
        assert response.status_code == 500 and response.data == b"Something went wrong on our side."
        assert_security_headers(response)
    finally:
        app.extensions["arena.engine"].dispose()


# ------------------------------------------------------------------------------------------------ secrets


def test_without_arena_secret_key_a_random_key_is_made_once_in_the_instance_folder(monkeypatch, tmp_path):
    from arena.settings import load

    monkeypatch.delenv("ARENA_SECRET_KEY", raising=False)
    monkeypatch.setenv("ARENA_INSTANCE_PATH", str(tmp_path / "instance"))
    first = load().secret_key
    path = tmp_path / "instance" / "secret_key"
    assert len(first) >= 48 and path.read_text().strip() == first
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # readable by the service's user only
    assert load().secret_key == first  # sessions and challenges survive a restart
    monkeypatch.setenv("ARENA_SECRET_KEY", "from-the-environment")
    assert load().secret_key == "from-the-environment"


# ------------------------------------------------------------------------------------------------ fuzzing pages

GARBAGE_VALUES = ["1", "0", "-1", "x" * 400, "%00", "..%2F..%2Fetc%2Fpasswd", "%ff%fe", "<script>", "Ω", "1e309"]
QUERY_STRINGS = [
    "",
    "?a=%zz&&=&%ff=%fe",
    "?category=%00&style=maybe&snapshot=-1&page=99999999999999999999",
    "?" + "&".join(f"k{i}=v" for i in range(2000)),
    "?format=csv&format=json&version[]=1",
    "?q=" + "%E2%82" * 50,
]
COOKIES = [
    "session=garbage",
    "session=eyJ2b3RlciI6IngifQ.AAAAAA.invalidsignature",
    "session=" + "A" * 8000,
    "session=",
    'session="unterminated',
    "a=1; " * 300,
    "session=%ff%fe; other=\x7f",
]
HEADERS = [
    {"Accept": "*/*;q=nonsense, text/html;q=2"},
    {"Accept": "application/json"},
    {"Accept-Language": "zz-ZZ;q=0.5," * 100},
    {"If-Modified-Since": "yesterday"},
    {"Range": "bytes=999999-1"},
    {"X-Forwarded-For": "not an address"},
    {"Content-Type": "multipart/form-data"},
    {"Sec-Fetch-Site": "garbage", "Origin": "::::"},
    {"Accept-Encoding": "gzip;q=-1"},
]
FORM_BODIES = [
    ("application/x-www-form-urlencoded", b"a=%zz&&b=\xff\xfe&=" + b"c" * 5000),
    ("multipart/form-data; boundary=xyz", b'--xyz\r\nContent-Disposition: form-data; name="a"\r\n\r\n1'),
    ("multipart/form-data", b"no boundary at all"),
    ("application/json", b'{"prompt": '),
    ("text/plain", b"\x00\x01\x02"),
]


def page_urls(app, values=GARBAGE_VALUES) -> list[tuple[str, set[str]]]:
    """Every route outside the JSON API, with garbage in each of its URL variables."""
    urls = []
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            continue
        methods = set(rule.methods) - {"OPTIONS"}
        if not rule.arguments:
            urls.append((rule.rule, methods))
            continue
        for value in values:
            path = rule.rule
            for argument in rule.arguments:
                path = path.replace(f"<{argument}>", value)
                for converter in ("int", "path", "string", "float", "uuid", "any"):
                    path = path.replace(f"<{converter}:{argument}>", value)
            urls.append((path, methods))
    return urls


def assert_answered(response, what):
    assert response.status_code < 500, (what, response.status_code, response.data[:300])
    if response.status_code >= 400:
        assert response.mimetype in ("application/json", "text/html"), (what, response.mimetype)
        if response.mimetype == "application/json":
            assert set(response.get_json()) == {"error"}, what
    assert b"Traceback" not in response.data, what


def test_every_page_survives_malformed_cookies_headers_queries_and_forms(app, session, prompt_id):
    """Walks app.url_map, so a page added later is fuzzed too: never a 5xx, a 4xx is JSON or HTML."""
    fuzz_pages(app, page_urls(app))


def test_every_page_with_a_published_leaderboard_survives_the_same(app, session):
    """The same with the LLMFAO demo loaded and a snapshot published, so the pages have boards, models and
    charts to draw; real model names stand beside the garbage in the URLs."""
    from arena.catalog import demo
    from arena.leaderboard import builds

    override(app, SNAPSHOT_REPLICATES=20, SNAPSHOT_STYLE_REPLICATES=20, SNAPSHOT_EVERY_VOTES=0)
    demo.load_demo(session)
    builds.build_snapshot(app)
    names = session.scalars(text("SELECT name FROM models ORDER BY id LIMIT 2")).all()
    fuzz_pages(app, page_urls(app, [*names, *GARBAGE_VALUES]))


def fuzz_pages(app, urls) -> None:
    from arena.leaderboard.builder import Builder

    assert urls
    Builder(app).beat()  # a live builder: /readyz answers 200 (its 503 means "not ready", not bad input)
    other = Flask("elsewhere")
    other.secret_key = "another-key"  # a well-formed session signed with someone else's key
    other_key_cookie = "session=" + other.session_interface.get_signing_serializer(other).dumps({"voter": "x"})
    client = app.test_client()
    requests = 0
    for path, methods in urls:
        cases = itertools.chain(
            (("GET", path + query, {}, None) for query in QUERY_STRINGS),
            (("GET", path, {"Cookie": cookie}, None) for cookie in COOKIES + [other_key_cookie]),
            (("GET", path, headers, None) for headers in HEADERS),
            (
                (method, path, {"Content-Type": kind}, body)
                for method in sorted(methods - {"GET", "HEAD"})
                for kind, body in FORM_BODIES
            ),
            (("POST", path, {"Content-Type": kind}, body) for kind, body in FORM_BODIES[:2]),  # 405 or handled
        )
        for method, url, headers, body in cases:
            if "GET" not in methods and method == "GET":
                method = sorted(methods)[0]
            response = client.open(url, method=method, headers=headers, data=body)
            assert_answered(response, (method, url[:120], str(headers)[:120]))
            requests += 1
    assert requests > 50


# ------------------------------------------------------------------------------------------------ dependency audit


def _audit_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "tools" / "audit_dependencies.py"
    spec = importlib.util.spec_from_file_location("audit_dependencies", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_audit_fails_on_a_known_vulnerability_and_warns_when_it_cannot_ask():
    verdict = _audit_module().verdict
    vulnerable = {
        "dependencies": [
            {"name": "flask", "version": "3.1.3", "vulns": []},
            {
                "name": "jinja2",
                "version": "2.10",
                "vulns": [{"id": "PYSEC-2019-217", "fix_versions": ["2.10.1"], "aliases": ["CVE-2019-10906"]}],
            },
            {"name": "arena", "skip_reason": "distribution marked as editable"},
        ]
    }
    status, lines = verdict(vulnerable, 1, "")
    assert status == 1 and "jinja2 2.10: PYSEC-2019-217 (CVE-2019-10906); fixed in: 2.10.1" in "\n".join(lines)

    clean = {
        "dependencies": [
            {"name": "flask", "version": "3.1.3", "vulns": []},
            {"name": "private-thing", "skip_reason": "Dependency not found on PyPI"},
        ]
    }
    status, lines = verdict(clean, 0, "")
    assert status == 0 and "1 packages audited, no known vulnerability" in lines[0] and "private-thing" in lines[1]

    unanswered = {
        "dependencies": [
            {"name": "flask", "skip_reason": "Dependency not found on PyPI"},
            {"name": "arena", "skip_reason": "distribution marked as editable"},
        ]
    }
    for status, lines in (verdict(unanswered, 0, ""), verdict(None, 1, "ConnectionError: pypi.org\n")):
        assert status == 0 and lines[0].startswith("WARNING: dependency audit NOT DONE")
