"""Blind battles end to end through the JSON API: recorded answers, loopback endpoint models, votes, anonymity."""

import itertools
import json
import random
import threading
import time
from collections import Counter
from contextlib import contextmanager
from datetime import timedelta

import pytest
from scipy import stats
from sqlalchemy import event as sql_events
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError

from arena import db
from arena.battles import lifecycle, pairing, streaming
from arena.catalog import identity
from arena.errors import ArenaError
from arena.models import Battle, Message, Model, Vote, utcnow
from arena.settings import override, settings_of
from tests.arena.conftest import gen_endpoint_model, gen_prompt, gen_recorded_model


def parse_sse(body: bytes) -> list[tuple[str, dict]]:
    events = []
    for block in body.decode().split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith(":")]
        if not lines:
            continue
        event = next(line[7:] for line in lines if line.startswith("event: "))
        data = json.loads(next(line[6:] for line in lines if line.startswith("data: ")))
        events.append((event, data))
    return events


def texts(events) -> dict:
    out = {"a": "", "b": ""}
    for event, data in events:
        if event == "delta":
            out[data["side"]] += data["text"]
    return out


def assert_anonymous(body: bytes, *models):
    """No name, organisation or database id of any model may appear before the vote."""
    lowered = body.decode().lower()
    for model in models:
        assert model.name.lower() not in lowered
        assert model.organization.lower() not in lowered
    assert '"model' not in lowered and "model_a" not in lowered and "organization" not in lowered


@pytest.fixture
def recorded_pair(session):
    prompt = gen_prompt(session)
    alpha = gen_recorded_model(session, "Alpha Model", "Alpha Org", {prompt.id: "Rayleigh scattering, mostly."})
    beta = gen_recorded_model(session, "Beta Model", "Beta Org", {prompt.id: "Because blue light scatters more."})
    return prompt, alpha, beta


def run_battle(client, **body):
    created = client.post("/api/v1/battles", json=body)
    assert created.status_code == 201, created.get_json()
    battle_id = created.get_json()["id"]
    stream = client.get(f"/api/v1/battles/{battle_id}/stream")
    assert stream.status_code == 200 and stream.mimetype == "text/event-stream"
    return battle_id, created, stream, parse_sse(stream.data)


def test_a_whole_battle_on_recorded_answers(client, session, recorded_pair):
    prompt, alpha, beta = recorded_pair
    battle_id, created, stream, events = run_battle(client, prompt_id=prompt.id)
    assert created.get_json()["prompt"] == prompt.text and len(battle_id) >= 20
    for body in (created.data, stream.data, client.get(f"/api/v1/battles/{battle_id}").data):
        assert_anonymous(body, alpha, beta)
    kinds = [e for e, _ in events]
    assert kinds.count("done") == 2 and kinds[-1] == "end" and events[-1][1] == {"state": "ready"}
    answers = texts(events)
    assert sorted(answers.values()) == sorted(["Rayleigh scattering, mostly.", "Because blue light scatters more."])

    voted = client.post(f"/api/v1/battles/{battle_id}/vote", json={"winner": "a"})
    assert voted.status_code == 200
    revealed = voted.get_json()["models"]
    by_name = {"Alpha Model": "Rayleigh scattering, mostly.", "Beta Model": "Because blue light scatters more."}
    assert answers["a"] == by_name[revealed["a"]["model"]] and answers["b"] == by_name[revealed["b"]["model"]]
    assert {revealed["a"]["organization"], revealed["b"]["organization"]} == {"Alpha Org", "Beta Org"}
    battle = session.get(Battle, battle_id)
    session.refresh(battle)
    assert battle.state == "voted" and battle.vote.winner == "a" and battle.voter is not None
    assert battle.address_hash and "127.0.0.1" not in battle.address_hash


def test_vote_rules_leave_nothing_changed(app, client, session, recorded_pair):
    prompt, _, _ = recorded_pair
    created = client.post("/api/v1/battles", json={"prompt_id": prompt.id}).get_json()
    url = f"/api/v1/battles/{created['id']}/vote"
    early = client.post(url, json={"winner": "a"})
    assert early.status_code == 409 and early.get_json()["error"]["code"] == "battle_not_ready"
    client.get(f"/api/v1/battles/{created['id']}/stream").data
    for bad in ({"winner": "c"}, {"winner": None}, {}, [], "a"):
        response = client.post(url, json=bad)
        assert response.status_code == 400 and set(response.get_json()) == {"error"}
    not_json = client.post(url, data="winner=a", content_type="application/x-www-form-urlencoded")
    assert not_json.status_code == 400
    stranger = app.test_client().post(url, json={"winner": "a"})
    assert stranger.status_code == 404 and stranger.get_json()["error"]["code"] == "battle_not_found"
    assert session.scalar(select(func.count()).select_from(Vote)) == 0
    assert client.post(url, json={"winner": "tie"}).status_code == 200
    second = client.post(url, json={"winner": "b"})
    assert second.status_code == 409 and second.get_json()["error"]["code"] == "already_voted"
    votes = session.scalars(select(Vote)).all()
    assert [v.winner for v in votes] == ["tie"]
    missing = client.post("/api/v1/battles/nope/vote", json={"winner": "a"})
    assert missing.status_code == 404


def test_a_typed_prompt_needs_endpoint_models(client, recorded_pair):
    response = client.post("/api/v1/battles", json={"prompt": "Write a haiku."})
    assert response.status_code == 503 and response.get_json()["error"]["code"] == "no_models"
    for bad in (
        {},
        {"prompt": ""},
        {"prompt": "  \n"},
        {"prompt": "x", "prompt_id": 1},
        {"prompt_id": "1"},
        {"prompt": 5},
        {"prompt": None},
        {"prompt_id": True},
    ):
        refused = client.post("/api/v1/battles", json=bad)
        assert (refused.status_code, refused.get_json()["error"]["code"]) == (400, "invalid_request"), bad
    assert client.post("/api/v1/battles", json={"prompt_id": 999}).status_code == 404
    # An id no column can hold is outside the document's range (1..2^31-1): refused as invalid, never looked up
    for beyond in (2**31, 2**63, -1, 0):
        response = client.post("/api/v1/battles", json={"prompt_id": beyond})
        assert (response.status_code, response.get_json()["error"]["code"]) == (400, "invalid_request")
        assert "prompt_id" in response.get_json()["error"]["details"]
    exactly_one = client.post("/api/v1/battles", json={}).get_json()["error"]["details"]
    assert "exactly one" in " ".join(exactly_one.values())
    deep = client.post("/api/v1/battles", data="[" * 100_000, content_type="application/json")
    assert (deep.status_code, deep.get_json()["error"]["code"]) == (400, "invalid_json")


def test_prompts_are_listed(client, recorded_pair):
    prompt, _, _ = recorded_pair
    body = client.get("/api/v1/prompts").get_json()
    assert body["prompts"] == [{"id": prompt.id, "text": prompt.text, "category": "knowledge"}]


def test_a_whole_battle_against_loopback_endpoints_with_a_follow_up(client, session, loopback):
    one = gen_endpoint_model(session, "Echo One", "Org One", loopback.base_url)
    two = gen_endpoint_model(session, "Echo Two", "Org Two", loopback.base_url, behaviour="slow:0.3")
    battle_id, created, stream, events = run_battle(client, prompt="Tell me about tides.")
    assert_anonymous(created.data + stream.data, one, two)
    assert events[-1][1]["state"] == "ready"
    first = texts(events)
    assert all("tides" in text for text in first.values())

    follow = client.post(f"/api/v1/battles/{battle_id}/turns", json={"prompt": "And the moon?"})
    assert follow.status_code == 201
    second = parse_sse(client.get(f"/api/v1/battles/{battle_id}/stream").data)
    assert second[-1][1]["state"] == "ready" and all("moon" in t for t in texts(second).values())
    # each model saw its own conversation: its own first answer, never the other side's
    last_requests = [r for r in loopback.requests if len(r["messages"]) == 3]
    assert len(last_requests) == 2
    seen = sorted(r["messages"][1]["content"] for r in last_requests)
    assert seen == sorted(first.values())
    voted = client.post(f"/api/v1/battles/{battle_id}/vote", json={"winner": "bothbad"}).get_json()
    assert {voted["models"]["a"]["model"], voted["models"]["b"]["model"]} == {"Echo One", "Echo Two"}


@pytest.mark.parametrize("behaviour", ["error-mid", "never", "http-500", "garbage", "empty"])
def test_a_failing_provider_voids_the_battle_and_names_nobody(client, session, loopback, behaviour):
    good = gen_endpoint_model(session, "Good Model", "Good Org", loopback.base_url)
    bad = gen_endpoint_model(session, "Bad Model", "Bad Org", loopback.base_url, behaviour=behaviour)
    battle_id, created, stream, events = run_battle(client, prompt="Hello there")
    assert_anonymous(stream.data, good, bad)
    errors = [data for event, data in events if event == "error"]
    assert len(errors) == 1 and "could not be completed" in errors[0]["message"]
    assert events[-1] == ("end", {"state": "void"})
    response = client.post(f"/api/v1/battles/{battle_id}/vote", json={"winner": "a"})
    assert response.status_code == 409 and response.get_json()["error"]["code"] == "battle_void"
    battle = session.get(Battle, battle_id)
    answers = session.scalars(select(Message).where(Message.battle_id == battle_id, Message.role == "assistant")).all()
    assert battle.state == "void" and len(answers) == 2  # the answers are stored either way
    assert sum(1 for m in answers if m.error) == 1


def test_an_answer_naming_its_model_is_flagged(client, session, loopback):
    gen_endpoint_model(
        session, "Honest Model", "Acme Labs", loopback.base_url, behaviour="leak:I was made by ACME-labs"
    )
    gen_endpoint_model(session, "Quiet Model", "Quiet Org", loopback.base_url)
    battle_id, _, _, events = run_battle(client, prompt="Who made you?")
    assert events[-1][1]["state"] == "ready"
    assert client.post(f"/api/v1/battles/{battle_id}/vote", json={"winner": "a"}).status_code == 200
    battle = session.get(Battle, battle_id)
    assert battle.flagged and "Acme Labs" in battle.flag_reason


def test_reloading_the_stream_replays_the_stored_answers(client, recorded_pair):
    prompt, _, _ = recorded_pair
    battle_id, _, _, events = run_battle(client, prompt_id=prompt.id)
    again = parse_sse(client.get(f"/api/v1/battles/{battle_id}/stream").data)
    assert texts(again) == texts(events) and again[-1] == ("end", {"state": "ready"})


def test_sampling_uses_published_weights(client, session):
    prompt = gen_prompt(session)
    heavy = gen_recorded_model(session, "Heavy", "H", {prompt.id: "h"})
    gen_recorded_model(session, "Light", "L", {prompt.id: "l"})
    zero = gen_recorded_model(session, "Zero", "Z", {prompt.id: "z"})
    heavy.sampling_weight, zero.sampling_weight = 3.0, 0.0
    session.commit()
    counts = {"Heavy": 0, "Light": 0, "Zero": 0}
    for _ in range(40):
        battle = session.get(Battle, client.post("/api/v1/battles", json={"prompt_id": prompt.id}).get_json()["id"])
        counts[battle.model_a.name] += 1
        counts[battle.model_b.name] += 1
    assert counts["Zero"] == 0 and counts["Heavy"] == counts["Light"] == 40  # only one pair is possible
    published = client.get("/api/v1/sampling").get_json()["models"]
    assert {m["model"]: m["weight"] for m in published} == {"Heavy": 3.0, "Light": 1.0, "Zero": 0.0}


def test_empty_recordings_are_never_drawn(client, session):
    prompt = gen_prompt(session)
    gen_recorded_model(session, "Speaks", "S", {prompt.id: "words"})
    gen_recorded_model(session, "Speaks Too", "T", {prompt.id: "\u3000\n  more words\u00a0"})
    gen_recorded_model(session, "Silent", "U", {prompt.id: "  \n"})
    gen_recorded_model(session, "Unicode Silent", "V", {prompt.id: "\u00a0\u2003\u3000\t\u2029"})
    for _ in range(15):
        battle = session.get(Battle, client.post("/api/v1/battles", json={"prompt_id": prompt.id}).get_json()["id"])
        assert {battle.model_a.name, battle.model_b.name} == {"Speaks", "Speaks Too"}
    # the database's test is Python's str.strip(), whatever the whitespace
    assert [m.id for m in pairing.eligible_models(session, prompt.id)] == [
        m.id for m in session.scalars(select(Model).order_by(Model.id)) if m.name.startswith("Speaks")
    ]


def test_a_lab_endpoint_is_checked_again_at_battle_time(client, session, loopback):
    """A lab's endpoint that now points at a loopback address is refused when private endpoints are off."""
    from arena.models import Lab

    lab = Lab(name="Some Lab")
    session.add(lab)
    session.commit()
    gen_endpoint_model(session, "Lab Model", "Some Lab", loopback.base_url, lab_id=lab.id)
    gen_endpoint_model(session, "Operator Model", "Operator", loopback.base_url)
    battle_id, _, stream, events = run_battle(client, prompt="Hi")
    assert events[-1] == ("end", {"state": "void"}) and b"127.0.0.1" not in stream.data
    assert "refused" in session.get(Battle, battle_id).void_reason
    assert len(loopback.requests) == 1  # only the operator's model was called


# ------------------------------------------------------------------------------------------------ cost


@contextmanager
def statements(app):
    """The SQL statements and commits the app's engine runs inside the block (from every thread)."""
    seen = {"sql": [], "commits": 0}

    def on_statement(_conn, _cursor, statement, _params, _context, _executemany):
        seen["sql"].append(statement.split(None, 1)[0].upper())

    def on_commit(_conn):
        seen["commits"] += 1

    engine = app.extensions["arena.engine"]
    sql_events.listen(engine, "before_cursor_execute", on_statement)
    sql_events.listen(engine, "commit", on_commit)
    try:
        yield seen
    finally:
        sql_events.remove(engine, "before_cursor_execute", on_statement)
        sql_events.remove(engine, "commit", on_commit)


def test_a_battle_costs_few_statements(app, client, session, recorded_pair):
    """Creating, streaming and voting: 4, 5 and 2 statements, one transaction each (the stream's two: claiming
    the battle, then storing both answers). A regression here is a regression of the service's throughput."""
    prompt, _, _ = recorded_pair
    for i in range(20):  # models that cannot answer this prompt cost nothing more
        gen_recorded_model(session, f"Other {i}", "O", {})
    override(app, SNAPSHOT_EVERY_VOTES=0)  # the automatic snapshot check has its own queries, counted elsewhere
    from arena.leaderboard import sampling

    sampling.policy_state(app, session)  # read once per process every few seconds (tests/arena/test_sampling.py)
    with statements(app) as created:
        battle_id = client.post("/api/v1/battles", json={"prompt_id": prompt.id}).get_json()["id"]
    assert created == {"sql": ["SELECT", "SELECT", "INSERT", "INSERT"], "commits": 1}
    with statements(app) as streamed:
        assert parse_sse(client.get(f"/api/v1/battles/{battle_id}/stream").data)[-1] == ("end", {"state": "ready"})
    # the battle with its models; claim it; both recordings; then, when both are told, both answers and the state
    assert streamed == {"sql": ["SELECT", "UPDATE", "SELECT", "INSERT", "UPDATE"], "commits": 2}
    with statements(app) as voted:
        assert client.post(f"/api/v1/battles/{battle_id}/vote", json={"winner": "b"}).status_code == 200
    assert voted == {"sql": ["UPDATE", "INSERT"], "commits": 1}  # the UPDATE closes the battle and reveals it
    with statements(app) as again:
        assert client.post(f"/api/v1/battles/{battle_id}/vote", json={"winner": "a"}).status_code == 409
    assert again == {"sql": ["UPDATE", "SELECT"], "commits": 0}  # no row to close, then why not


def test_of_two_racing_votes_exactly_one_counts(app, client, session, recorded_pair):
    prompt, alpha, beta = recorded_pair
    battle_id, _, _, _ = run_battle(client, prompt_id=prompt.id)
    voter = session.get(Battle, battle_id).voter
    start, outcomes = threading.Barrier(2), []

    def cast(winner):
        with db.new_session(app) as own:
            start.wait()
            try:
                outcomes.append(lifecycle.vote(own, battle_id, winner, voter=voter, address=None))
            except ArenaError as error:
                outcomes.append(error.code)

    threads = [threading.Thread(target=cast, args=(w,)) for w in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    revealed = [o for o in outcomes if isinstance(o, dict)]
    assert len(revealed) == 1 and [o for o in outcomes if isinstance(o, str)] == ["already_voted"]
    assert {revealed[0]["a"]["model"], revealed[0]["b"]["model"]} == {alpha.name, beta.name}
    assert session.scalar(select(func.count()).select_from(Vote)) == 1


def test_a_loaded_battle_takes_a_vote_by_the_same_rules(app, client, session, recorded_pair):
    """cast_vote, for callers that hold the battle (operators' tools): the vote and the closed battle, once."""
    prompt, _, _ = recorded_pair
    battle_id, _, _, _ = run_battle(client, prompt_id=prompt.id)
    battle = session.get(Battle, battle_id)
    lifecycle.cast_vote(session, battle, "tie", voter=battle.voter, address=None)
    with pytest.raises(ArenaError, match="already has a vote"):
        lifecycle.cast_vote(session, battle, "a", voter=battle.voter, address=None)  # its state was read as ready
    session.expire_all()
    assert session.get(Battle, battle_id).state == "voted"
    assert [(v.battle_id, v.winner) for v in session.scalars(select(Vote))] == [(battle_id, "tie")]


def test_a_follow_up_read_before_a_vote_never_reopens_the_battle(app, client, session, loopback):
    """The follow-up read the battle as ready; a vote lands before it writes: the battle stays voted, no turn is
    added, and the follow-up is refused as not ready."""
    gen_endpoint_model(session, "Echo One", "Org One", loopback.base_url)
    gen_endpoint_model(session, "Echo Two", "Org Two", loopback.base_url)
    battle_id, _, _, events = run_battle(client, prompt="Tell me about tides.")
    assert events[-1][1]["state"] == "ready"
    with db.new_session(app) as stale:
        battle = lifecycle.own_battle(stale, battle_id, session.get(Battle, battle_id).voter)
        battle.messages  # loaded now, as the view does before it writes
        assert client.post(f"/api/v1/battles/{battle_id}/vote", json={"winner": "a"}).status_code == 200
        with pytest.raises(ArenaError, match="only when both answers are complete"):
            lifecycle.add_turn(stale, battle, "And the moon?")
    session.expire_all()
    assert session.get(Battle, battle_id).state == "voted"
    assert (
        session.scalar(
            select(func.count()).select_from(Message).where(Message.battle_id == battle_id, Message.role == "user")
        )
        == 2
    )


def test_pairs_are_drawn_with_odds_proportional_to_the_product_of_weights():
    """pick_pair against the brute-force distribution over all pairs: P({i, j}) = w_i w_j / sum over pairs."""
    models = [pairing.Candidate(id=i, sampling_weight=w) for i, w in enumerate([1.0, 2.0, 3.0, 0.5, 1.0])]
    pairs = list(itertools.combinations(range(len(models)), 2))
    odds = [models[i].sampling_weight * models[j].sampling_weight for i, j in pairs]
    expected = [o / sum(odds) for o in odds]
    rng = random.Random(20240611)
    draws = 20_000
    counts, first_side = Counter(), Counter()
    for _ in range(draws):
        a, b = pairing.pick_pair(models, rng)
        assert a.id != b.id
        counts[(min(a.id, b.id), max(a.id, b.id))] += 1
        first_side[a.id < b.id] += 1
    observed = [counts[p] for p in pairs]
    assert stats.chisquare(observed, [e * draws for e in expected]).pvalue > 1e-3
    assert stats.binomtest(first_side[True], draws).pvalue > 1e-3  # the sides are shuffled
    with pytest.raises(ArenaError):
        pairing.pick_pair(models[:1], rng)


def test_queued_events_go_out_in_one_write():
    """What has arrived while the last write went out is sent together: a fast answer is not one write a word."""
    run = streaming.BattleRun(None, "some-battle", turn=0, identities={}, flagged=False)
    for word in ("Hello", " there", "!"):
        run.events.put(("delta", "a", word))
    run.events.put(("done", "a", ""))
    run.events.put(("error", "b", ""))
    run.events.put(("end", None, "void"))
    writes = list(streaming._forward(run))
    assert len(writes) == 2 and writes[0].startswith(":")
    assert parse_sse(writes[1].encode()) == [
        ("delta", {"side": "a", "text": "Hello"}),
        ("delta", {"side": "a", "text": " there"}),
        ("delta", {"side": "a", "text": "!"}),
        ("done", {"side": "a"}),
        ("error", {"side": "b", "message": streaming.NEUTRAL_FAILURE}),
        ("end", {"state": "void"}),
    ]


def test_a_battle_voided_while_it_streams_stays_void(app, client, session, recorded_pair):
    """An operator's change voids the model's streaming battles; answers arriving after that are stored, flag
    included, and do not bring the battle back to ready."""
    prompt, alpha, beta = recorded_pair
    battle_id = client.post("/api/v1/battles", json={"prompt_id": prompt.id}).get_json()["id"]
    session.execute(update(Battle).where(Battle.id == battle_id).values(state="void", void_reason="changed"))
    session.commit()
    run = streaming.BattleRun(
        app,
        battle_id,
        turn=0,
        flagged=False,
        identities={"a": identity.Identity.of(alpha), "b": identity.Identity.of(beta)},
    )
    run.results["a"].text, run.results["b"].text = ["I am Alpha Model."], ["Blue light scatters."]
    assert run._store() == "void"
    session.expire_all()
    battle = session.get(Battle, battle_id)
    assert battle.state == "void" and battle.void_reason == "changed"
    assert battle.flagged and "Alpha Model" in battle.flag_reason
    answers = [m.content for m in battle.messages if m.role == "assistant"]
    assert answers == ["I am Alpha Model.", "Blue light scatters."]


def test_a_stream_ends_even_when_its_answers_cannot_be_stored(app, client, recorded_pair, monkeypatch):
    prompt, _, _ = recorded_pair
    battle_id = client.post("/api/v1/battles", json={"prompt_id": prompt.id}).get_json()["id"]

    def broken_store(self):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(streaming.BattleRun, "_store", broken_store)
    events = parse_sse(client.get(f"/api/v1/battles/{battle_id}/stream").data)
    assert events[-1] == ("end", {"state": "void"})
    assert_anonymous(json.dumps(events).encode(), *recorded_pair[1:])


def test_answers_are_stored_once_the_database_is_back(app, client, session, recorded_pair, monkeypatch):
    """A database restart while a battle streams: storing is tried again for a few seconds, and the battle ends
    ready with both answers once the database answers; an error that is a bug is not retried."""
    prompt, _, _ = recorded_pair
    store, tries = streaming.BattleRun._store, []

    def store_after_a_restart(self):
        tries.append(time.monotonic())
        if len(tries) <= 2:
            raise OperationalError("INSERT", {}, Exception("server closed the connection unexpectedly"))
        return store(self)

    monkeypatch.setattr(streaming, "STORE_RETRY_DELAYS_S", (0.05, 0.05, 0.05))
    monkeypatch.setattr(streaming.BattleRun, "_store", store_after_a_restart)
    battle_id, _, _, events = run_battle(client, prompt_id=prompt.id)
    assert events[-1] == ("end", {"state": "ready"}) and len(tries) == 3
    session.expire_all()
    battle = session.get(Battle, battle_id)
    assert battle.state == "ready" and len([m for m in battle.messages if m.role == "assistant"]) == 2

    tries.clear()
    monkeypatch.setattr(streaming.BattleRun, "_store", lambda self: tries.append(1) / 0)
    _, _, _, events = run_battle(client, prompt_id=prompt.id)
    assert events[-1] == ("end", {"state": "void"}) and len(tries) == 1


def test_a_battle_left_streaming_past_the_deadline_is_voided_on_its_next_read(app, client, session, recorded_pair):
    """A stream lost with its worker leaves the battle `streaming`: within the deadline a second reader is told
    it is being streamed (409); past it, the read voids the battle and tells the voter in neutral words."""
    prompt, _, _ = recorded_pair
    battle_id = client.post("/api/v1/battles", json={"prompt_id": prompt.id}).get_json()["id"]
    session.execute(update(Battle).where(Battle.id == battle_id).values(state="streaming", stream_started_at=utcnow()))
    session.commit()
    refused = client.get(f"/api/v1/battles/{battle_id}/stream")
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "already_streaming"

    deadline = streaming.stream_deadline_s(settings_of(app))
    assert deadline >= settings_of(app).provider_total_timeout
    long_ago = utcnow() - timedelta(seconds=deadline + 1)
    session.execute(update(Battle).where(Battle.id == battle_id).values(stream_started_at=long_ago))
    session.commit()
    events = parse_sse(client.get(f"/api/v1/battles/{battle_id}/stream").data)
    assert events[-1] == ("end", {"state": "void"})
    assert [kind for kind, _ in events] == ["error", "error", "end"]
    assert_anonymous(json.dumps(events).encode(), *recorded_pair[1:])
    session.expire_all()
    battle = session.get(Battle, battle_id)
    assert battle.state == "void" and "interrupted" in battle.void_reason
    vote = client.post(f"/api/v1/battles/{battle_id}/vote", json={"winner": "a"})
    assert vote.status_code == 409


def test_a_stream_records_when_it_began(client, session, recorded_pair):
    prompt, _, _ = recorded_pair
    before = utcnow()
    battle_id, _, _, events = run_battle(client, prompt_id=prompt.id)
    assert events[-1] == ("end", {"state": "ready"})
    started = session.get(Battle, battle_id).stream_started_at
    assert started is not None and started.replace(tzinfo=None) >= before.replace(tzinfo=None, microsecond=0)
