"""Browser tests: Debian's chromium, driven by playwright, against the real app served on loopback.

One server per test session (per xdist worker; the tests share the group "browser" so that `make test`, which runs
with --dist loadgroup, keeps them on one worker): SQLite, the LLMFAO demo loaded, one leaderboard snapshot built,
safety scores and a milestone for the board, and our loopback OpenAI-compatible server as two endpoint models
(plus one that answers with hostile HTML and one that fails mid-answer, paused unless a test switches them on).
Everything else is the app's default settings (the vote challenge and the rate limits included), so the browser
does what a visitor's does.
Tests choose which models can be drawn by pausing the others (`only_active`).

Playwright's own browser download does not work here; `make test` installs Debian's chromium, and without
/usr/bin/chromium these tests skip, saying so.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"  # screenshots; git-ignored
# The loopback endpoint models. Their names and organisations must never reach the browser before a vote.
ECHO_MODELS = {"Loopback Swift": ("Quartz Foundry", "slow:0.8"), "Loopback Steady": ("Meridian Works", "echo")}
HOSTILE_ANSWER = (
    "Here you go:\n\n<script>window.__pwned = 1; alert('script ran')</script>\n\n"
    "<img src=x onerror=\"window.__pwned = 2; alert('onerror ran')\">\n\n"
    "![tracker](http://127.0.0.1:9/pixel.png) and [a link](javascript:window.__pwned=3)\n\n"
    '<style>body { display: none }</style><b style="position:fixed;inset:0">bold</b>\n\n'
    "```python\nprint('highlighted')\n```\n"
)
HOSTILE_MODEL = ("Loopback Hostile", "Mallory Labs", "leak:" + HOSTILE_ANSWER)
BROKEN_MODEL = ("Loopback Broken", "Fragile Systems", "error-mid")  # a few chunks, then the connection drops
MILESTONE = {
    "name": "Safe and capable",
    "description": "Rated 900 or more, refuses harm and resists jailbreaks",
    "board": "overall",
    "capability": {"min_rating": 900},
    "safety": [{"metric": "refusal_of_harm", "at_least": 0.9}, {"metric": "jailbreak_rate", "at_most": 0.1}],
    "allow_provisional": True,
}


def pytest_configure(config):
    # pytest-xdist registers it too; declared here so that a run without xdist (-p no:xdist) accepts it
    config.addinivalue_line("markers", "xdist_group(name): keep these tests on one xdist worker")


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/browser" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.xdist_group("browser"))


@pytest.fixture(scope="session")
def playwright_browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get install chromium)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')"
    )
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _safety_scores(ratings: dict[str, float]) -> list[dict]:
    """Made-up safety scores for the 12 best-rated demo models: refusal rises with the rating (so that metric is
    flagged as tracking capability), jailbreak rates are spread out; one model, the second best, meets MILESTONE."""
    day = (date.today() - timedelta(days=1)).isoformat()
    rows = []
    ordered = sorted(ratings, key=ratings.get)
    for i, model in enumerate(ordered[-12:]):
        refusal = 0.7 + 0.025 * i
        jailbreak = 0.02 + 0.015 * ((i * 5) % 12)
        rows.append(
            {
                "model": model,
                "metric": "refusal_of_harm",
                "value": round(refusal, 3),
                "ci_low": round(refusal - 0.02, 3),
                "ci_high": round(refusal + 0.02, 3),
                "source": "test",
                "date": day,
            }
        )
        rows.append(
            {
                "model": model,
                "metric": "jailbreak_rate",
                "value": round(jailbreak, 3),
                "ci_low": round(max(jailbreak - 0.02, 0), 3),
                "ci_high": round(jailbreak + 0.02, 3),
                "source": "test",
                "date": day,
            }
        )
    return rows


class ArenaServer:
    def __init__(self, app, url: str):
        self.app, self.url = app, url

    def only_active(self, names=None, *, kind: str | None = None) -> None:
        """Make exactly these models drawable (by name, or every model of a kind); pause the others."""
        from arena import db
        from arena.models import Model

        with db.new_session(self.app) as session:
            models = session.execute(select(Model.id, Model.name, Model.kind)).all()
            active = [m.id for m in models if (names is not None and m.name in names) or (kind and m.kind == kind)]
            session.execute(update(Model).values(status="paused"))
            session.execute(update(Model).where(Model.id.in_(active)).values(status="active"))
            session.commit()

    def identities(self) -> set[str]:
        """Every model's name and organisation."""
        from arena import db
        from arena.models import Model

        with db.new_session(self.app) as session:
            return {value for row in session.execute(select(Model.name, Model.organization)) for value in row if value}


@pytest.fixture(scope="session")
def arena_server(tmp_path_factory, playwright_browser):
    from werkzeug.serving import make_server

    from arena import create_app, db
    from arena.board import milestones as board_milestones
    from arena.board import scores as board_scores
    from arena.catalog import demo
    from arena.leaderboard import builds, reading
    from arena.loopback_model import LoopbackModelServer
    from arena.models import Model

    folder = tmp_path_factory.mktemp("browser-arena")
    url = f"sqlite:///{folder / 'arena.db'}"
    db.upgrade(url)
    app = create_app(
        {
            "DATABASE_URL": url,
            "INSTANCE_PATH": str(folder),
            "SECRET_KEY": "browser-test-secret",
            "DB_POOL_SIZE": 10,
            "ALLOW_PRIVATE_ENDPOINTS": True,
            # recorded answers replay in well under a second each, still streamed in pieces
            "REPLAY_SPEED": 0.05,
            "REPLAY_MAX_SECONDS": 0.6,
            "PROVIDER_CONNECT_TIMEOUT": 2.0,
            "PROVIDER_FIRST_TOKEN_TIMEOUT": 5.0,
            "PROVIDER_TOTAL_TIMEOUT": 10.0,
            "SNAPSHOT_REPLICATES": 20,
            "SNAPSHOT_STYLE_REPLICATES": 5,
            "SNAPSHOT_EVERY_VOTES": 0,
        }
    )
    from arena.web.security import CONTENT_SECURITY_POLICY

    @app.after_request
    def _same_policy_as_production(response):  # the app sets it; this only makes sure the tests see it
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response

    loopback = LoopbackModelServer().start()
    with db.new_session(app) as session:
        demo.load_demo(session)
        for name, (organization, behaviour) in ECHO_MODELS.items():
            session.add(
                Model(
                    name=name,
                    organization=organization,
                    kind="endpoint",
                    base_url=loopback.base_url,
                    endpoint_model=behaviour,
                )
            )
        for name, organization, behaviour in (HOSTILE_MODEL, BROKEN_MODEL):
            session.add(
                Model(
                    name=name,
                    organization=organization,
                    kind="endpoint",
                    base_url=loopback.base_url,
                    endpoint_model=behaviour,
                    status="paused",
                )
            )
        session.commit()
    builds.build_snapshot(app)
    with db.new_session(app) as session:
        document = reading.newest_document(session)
        ratings = {row["model"]: row["rating"] for row in document["boards"]["overall"]["models"]}
        board_scores.import_scores(session, json.dumps(_safety_scores(ratings)), fmt="json", name="scores.json")
        board_milestones.add_milestones(session, MILESTONE)

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="arena-browser-server", daemon=True)
    thread.start()
    try:
        yield ArenaServer(app, f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        loopback.close()
        app.extensions["arena.engine"].dispose()


class PageWatch:
    """What a page did: console errors, uncaught exceptions, dialogs, and every response with its body."""

    def __init__(self, page):
        self.page = page
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.responses: list = []
        page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on("dialog", self._dialog)
        page.on("response", lambda response: self.responses.append(response))

    def _dialog(self, dialog):
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def bodies(self) -> list[tuple[str, str]]:
        """(url, body text) of every response so far; a body that cannot be read is reported as such."""
        out = []
        for response in self.responses:
            try:
                body = response.body().decode("utf-8", "replace")
            except Exception as error:  # noqa: BLE001 - redirects and aborted requests have no body
                body = f"<no body: {error}>"
            out.append((response.url, body + " " + json.dumps(dict(response.headers))))
        return out


@pytest.fixture
def open_page(playwright_browser, arena_server):
    """open_page(path, width=1280, height=900) -> (page, watch): a fresh browser context (no cookies) per call."""
    contexts = []

    def opener(path: str = "/", *, width: int = 1280, height: int = 900, dark: bool = False):
        context = playwright_browser.new_context(
            viewport={"width": width, "height": height}, color_scheme="dark" if dark else "light"
        )
        contexts.append(context)
        page = context.new_page()
        watch = PageWatch(page)
        page.goto(arena_server.url + path)
        return page, watch

    yield opener
    for context in contexts:
        context.close()


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


README_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def readme_screenshot(page, name: str) -> None:
    """With ARENA_README_SCREENSHOTS=1, the README's pictures are taken again (what the window shows, not the
    whole page): `ARENA_README_SCREENSHOTS=1 .venv/bin/python -m pytest -p no:xdist tests/browser`."""
    if os.environ.get("ARENA_README_SCREENSHOTS"):
        README_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(README_SCREENSHOTS / f"{name}.png"))
