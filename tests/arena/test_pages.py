"""The pages through Flask's test client (the browser tests in tests/browser drive them in Chromium): what each page
shows from the stored snapshots (and that it never builds one), that the arena page names no model, that every
page keeps to the Content-Security-Policy (no inline script, style or handler), and the charts' numbers."""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from sqlalchemy import select

from arena.catalog import demo
from arena.catalog.identity import Identity, identity_leak
from arena.leaderboard import builds, reading
from arena.models import Model
from arena.settings import override
from arena.web import charts
from tests.arena.conftest import gen_endpoint_model, gen_prompt, gen_recorded_model

REPLICATES = 20  # snapshot bootstrap replicates: the pages show intervals, their quality is tested in tests/ranking
PAGES = ("/", "/leaderboard", "/board", "/about")


class _Audit(HTMLParser):
    """Everything in a page that the CSP (contracts §3) would block or that would break it."""

    def __init__(self):
        super().__init__()
        self.problems: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        for name, _ in attrs:
            if name.startswith("on"):
                self.problems.append(f"<{tag} {name}=...>: an inline handler")
            if name == "style":
                self.problems.append(f"<{tag} style=...>: an inline style")
        if tag == "style":
            self.problems.append("<style>: an inline style sheet")
        if tag == "script":
            self._in_script = attributes.get("type") != "application/json"
            if "src" in attributes:
                self.scripts.append(attributes["src"])
                if not attributes["src"].startswith("/static/"):
                    self.problems.append(f"script from {attributes['src']}")
        for name in ("src", "href"):
            value = attributes.get(name) or ""
            if tag in ("img", "link", "script") and re.match(r"(https?:)?//", value):
                self.problems.append(f"<{tag} {name}={value}>: fetched from another site")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.problems.append("inline script code")


def audit(html: str) -> _Audit:
    parser = _Audit()
    parser.feed(html)
    return parser


@pytest.fixture
def demo_app(app, session):
    override(app, SNAPSHOT_REPLICATES=REPLICATES, SNAPSHOT_STYLE_REPLICATES=REPLICATES, SNAPSHOT_EVERY_VOTES=0)
    demo.load_demo(session)
    return app


def test_every_page_answers_before_any_snapshot_is_published(client, session):
    gen_prompt(session, "What is a <b>monad</b>?", category="code")
    for path in PAGES:
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.mimetype == "text/html"
        assert audit(response.get_data(as_text=True)).problems == [], path
    assert "No leaderboard has been published yet" in client.get("/leaderboard").get_data(as_text=True)
    assert "No leaderboard has been published yet" in client.get("/board").get_data(as_text=True)
    arena = client.get("/").get_data(as_text=True)
    assert "What is a &lt;b&gt;monad&lt;/b&gt;?" in arena and "<b>monad" not in arena  # escaped
    assert '<optgroup label="code">' in arena


def test_an_unknown_model_or_board_is_a_404_page_not_a_json_error(client, session):
    response = client.get("/models/Nobody")
    assert response.status_code == 404 and response.mimetype == "text/html"
    assert "The arena has no model called “Nobody”." in response.get_data(as_text=True)


def test_the_pages_read_the_stored_snapshot_and_never_build_one(demo_app, client, session, monkeypatch):
    retired = session.scalars(select(Model).where(Model.name == "GPT 4")).one()
    retired.status = "retired"  # stays on the board, marked
    session.commit()
    built = builds.build_snapshot(demo_app)
    document = reading.published_document(built)

    def forbidden(*args, **kwargs):
        raise AssertionError("a page built a snapshot")

    monkeypatch.setattr(builds, "build_snapshot", forbidden)
    page = client.get("/leaderboard").get_data(as_text=True)
    rows = document["boards"]["overall"]["models"]
    assert f'data-snapshot-version="{document["version"]}"' in page
    assert document["signature"]["key_id"] in page and document["battle_file"]["sha256"] in page
    assert f'href="{document["battle_file"]["download"]}" download' in page
    assert page.count('<tr>\n        <td class="num" data-sort=') == len(rows)
    assert page.count('class="dot') == len(rows)  # one dot per model on the rating chart
    assert "provisional</span>" in page
    assert re.search(r'GPT 4</a>.*?<span class="mark retired">retired</span>', page, re.S)
    assert audit(page).problems == [] and audit(page).scripts == ["/static/js/leaderboard.js"]
    assert client.get(document["battle_file"]["download"]).status_code == 200

    category = sorted(document["boards"]["categories"])[0]
    by_category = client.get(f"/leaderboard?category={category}").get_data(as_text=True)
    assert f"category:{category}" in by_category
    assert by_category.count('class="dot') == len(document["boards"]["categories"][category]["models"])
    assert client.get("/leaderboard?category=no-such-category").status_code == 404
    assert "style" in client.get("/leaderboard?style=1").get_data(as_text=True)

    top = rows[0]["model"]
    model_page = client.get(f"/models/{top}").get_data(as_text=True)
    assert f"In snapshot {document['version']}" in model_page and "Rating history" in model_page
    assert audit(model_page).problems == []
    for path in PAGES:
        assert audit(client.get(path).get_data(as_text=True)).problems == [], path


def test_the_arena_page_names_no_model_and_no_organisation(demo_app, client, session):
    gen_endpoint_model(session, "Zebra Reasoner", "Stripe Labs", "http://127.0.0.1:9/v1")
    builds.build_snapshot(demo_app)
    models = session.execute(select(Model.name, Model.organization)).all()
    page = client.get("/")
    assert page.status_code == 200
    text = " ".join(_text_and_attributes(page.get_data(as_text=True)))
    revealed = {found for name, organization in models if (found := identity_leak(text, Identity(name, organization)))}
    assert revealed == set()
    assert 'type="module" src="/static/js/arena.js"' in page.get_data(as_text=True)


def _text_and_attributes(html: str) -> list[str]:
    parts: list[str] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            parts.extend(value for _, value in attrs if value)

        def handle_data(self, data):
            parts.append(data)

    Collect().feed(html)
    return parts


def test_a_models_page_shows_its_rating_in_every_snapshot(app, client, session):
    override(app, SNAPSHOT_REPLICATES=REPLICATES, SNAPSHOT_STYLE_REPLICATES=REPLICATES, SNAPSHOT_EVERY_VOTES=0)
    from tests.arena.test_board import add_votes, games_between, gen_models

    ids = gen_models(session, "Alpha", "Beta", "Gamma")
    add_votes(session, ids, games_between("Alpha", "Beta", 20, 14) + games_between("Beta", "Gamma", 20, 12))
    first = reading.published_document(builds.build_snapshot(app))
    add_votes(session, ids, games_between("Alpha", "Gamma", 20, 18))
    second = reading.published_document(builds.build_snapshot(app))
    page = client.get("/models/Alpha").get_data(as_text=True)
    for document in (first, second):
        row = next(r for r in document["boards"]["overall"]["models"] if r["model"] == "Alpha")
        assert f'<td class="num">{document["version"]}</td>' in page
        assert f"{row['rating']:.1f}" in page
    assert page.count('class="dot"') == 2 and 'class="trend"' in page  # the history chart: two points, one line
    assert "Snapshot 2 does not rate" not in page


def test_battle_details_say_whether_follow_ups_are_possible_without_naming_anyone(app, client, session, loopback):
    prompt = gen_prompt(session)
    gen_recorded_model(session, "Recorded One", "Org One", {prompt.id: "an answer"})
    gen_recorded_model(session, "Recorded Two", "Org Two", {prompt.id: "another answer"})
    recorded = client.post("/api/v1/battles", json={"prompt_id": prompt.id}).get_json()
    assert client.get(f"/api/v1/battles/{recorded['id']}").get_json()["follow_up"] is False

    gen_endpoint_model(session, "Live One", "Org Three", loopback.base_url)
    gen_endpoint_model(session, "Live Two", "Org Four", loopback.base_url)
    live = client.post("/api/v1/battles", json={"prompt": "Hello?"}).get_json()
    body = client.get(f"/api/v1/battles/{live['id']}").get_json()
    assert body["follow_up"] is True and "models" not in body


# ------------------------------------------------------------------------------------------------ charts


def test_predicted_win_rate_is_the_elo_scale_bradley_terry_probability():
    assert charts.predicted_win_rate(1000, 1000) == 0.5
    assert math.isclose(charts.predicted_win_rate(1400, 1000), 10 / 11, rel_tol=1e-12)
    assert math.isclose(charts.predicted_win_rate(1000, 1400) + charts.predicted_win_rate(1400, 1000), 1.0)


def test_cell_text_keeps_aa_contrast_on_every_heatmap_colour():
    def luminance(hex_colour):
        channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    for p in [i / 100 for i in range(101)]:
        fill, ink = charts._diverging(p)
        light, dark = sorted((luminance(fill), luminance(ink)), reverse=True)
        assert (light + 0.05) / (dark + 0.05) >= 4.5, (p, fill, ink)


def test_charts_escape_names_use_no_inline_style_and_mark_unbounded_intervals():
    rows = [
        {
            "model": "<script>x</script>",
            "rating": 1100.0,
            "ci_low": 1050.0,
            "ci_high": None,
            "battles": 40,
            "provisional": True,
        },
        {"model": "Plain", "rating": 950.0, "ci_low": 900.0, "ci_high": 990.0, "battles": 400, "provisional": False},
    ]
    for svg in (
        charts.rating_chart(rows),
        charts.win_rate_heatmap(rows),
        charts.history_chart([{"version": 1, **rows[1]}, {"version": 2, **rows[0]}]),
        charts.capability_safety_scatter(
            [
                {
                    "model": "<i>m</i>",
                    "rating": 1000.0,
                    "ci_low": None,
                    "ci_high": 1010.0,
                    "value": 0.9,
                    "value_low": 0.85,
                    "value_high": None,
                    "met": True,
                }
            ],
            metric="refusal",
            safety_lines=[charts.Threshold(0.8, "M: >= 0.8", "above")],
            capability_lines=[charts.Threshold(990.0, "M: capability", "right")],
            flagged=True,
        ),
    ):
        text = str(svg)
        assert "<script>" not in text and "<i>" not in text and "style=" not in text
        assert text.startswith("<svg") and 'role="img"' in text and "<title" in text and "<desc" in text
    rating = str(charts.rating_chart(rows))
    assert rating.count('class="open"') == 1  # the one unbounded interval end is an arrow
    assert 'class="dot provisional"' in rating and rating.count("<circle") == 2
    scatter = str(charts.capability_safety_scatter([], metric="x", flagged=True))
    assert "flagged: tracks capability" in scatter


# ------------------------------------------------------------------------------------------------ colours

CSS = Path(__file__).resolve().parents[2] / "static" / "css" / "arena.css"
# (text, background) pairs the stylesheet puts together; WCAG AA asks 4.5:1 of body text.
TEXT_ON = [
    ("text", "bg"),
    ("text", "surface"),
    ("text", "band"),
    ("muted", "bg"),
    ("muted", "surface"),
    ("muted", "band"),
    ("link", "bg"),
    ("link", "band"),
    ("link", "good-soft"),
    ("text", "good-soft"),
    ("accent-text", "accent"),
    ("bad", "bg"),
    ("bad", "bad-soft"),
    ("good", "bg"),
    ("warn", "bg"),
    ("accent", "bg"),
]


def _schemes() -> dict[str, dict[str, str]]:
    css = CSS.read_text()
    light = css[css.index(":root {") :]
    dark = css[css.index("@media (prefers-color-scheme: dark)") :]
    return {
        name: dict(re.findall(r"--([a-z-]+):\s*(#[0-9a-fA-F]{6})", block[: block.index("}")]))
        for name, block in (("light", light), ("dark", dark))
    }


def _contrast(one: str, two: str) -> float:
    def luminance(colour):
        channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    light, dark = sorted((luminance(one), luminance(two)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_text_colour_passes_wcag_aa_on_the_backgrounds_it_is_used_on(scheme):
    colours = _schemes()[scheme]
    for text, background in TEXT_ON:
        ratio = _contrast(colours[text], colours[background])
        assert ratio >= 4.5, f"{scheme}: --{text} on --{background} is {ratio:.2f}:1"
