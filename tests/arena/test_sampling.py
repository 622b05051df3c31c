"""The sampling policy in the service (arena.leaderboard.sampling): battles drawn by the configured rule from the
stored fit,
never a paused, failing or unable model, the policy recorded with each battle and snapshot, and published.

Tolerances: long-run draws are compared with the published shares by a chi-square test at p > 1e-3 with a
fixed seed (see tests/ranking/test_sampling.py for the rules themselves).
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from scipy import stats
from sqlalchemy import select

from arena import create_app
from arena.battles import pairing
from arena.errors import ArenaError
from arena.leaderboard import builds, reading, sampling
from arena.models import Battle, EndpointCheck, Message, Model, Vote
from arena.settings import SettingsError, override, settings_of
from arena.web.openapi import SamplingOut
from tests.arena.conftest import gen_endpoint_model, gen_prompt, gen_recorded_model

P_MIN = 1e-3
STRENGTHS = {"Alpha": 1.2, "Beta": 0.6, "Gamma": 0.0, "Delta": -0.6, "Epsilon": -1.2}


@pytest.fixture
def arena(app, session):
    """Five recorded models answering one prompt, and a sixth that has no answer to it."""
    override(
        app, SNAPSHOT_REPLICATES=20, SNAPSHOT_STYLE_REPLICATES=20, SNAPSHOT_EVERY_VOTES=0, SAMPLING_REFRESH_SECONDS=0.0
    )
    prompt = gen_prompt(session)
    other = gen_prompt(session, text="Another question")
    models = {
        name: gen_recorded_model(session, name, f"{name} Lab", {prompt.id: f"{name} says", other.id: "x"})
        for name in STRENGTHS
    }
    models["Mute"] = gen_recorded_model(session, "Mute", "Mute Lab", {other.id: "only this one"})
    return prompt, models


def add_votes(session, models: dict, n: int, *, seed: int = 0) -> None:
    """n voted battles between random pairs of the named models, outcomes from STRENGTHS (Bradley-Terry)."""
    rng = np.random.default_rng(seed)
    names = list(STRENGTHS)
    now = datetime.now(timezone.utc)
    for k in range(n):
        a, b = rng.choice(len(names), 2, replace=False)
        p = 1 / (1 + np.exp(STRENGTHS[names[b]] - STRENGTHS[names[a]]))
        battle = Battle(
            id=f"b{seed}-{k}",
            prompt_text="q",
            model_a_id=models[names[a]].id,
            model_b_id=models[names[b]].id,
            state="voted",
            voter=f"voter{k % 7}",
            created_at=now,
        )
        session.add(battle)
        session.add(Vote(battle_id=battle.id, winner="a" if rng.random() < p else "b", voter=battle.voter))
    session.commit()


def battle_pairs(client, session, prompt, n: int) -> list[tuple[str, str, str]]:
    out = []
    for _ in range(n):
        response = client.post("/api/v1/battles", json={"prompt_id": prompt.id})
        assert response.status_code == 201, response.get_json()
        battle = session.get(Battle, response.get_json()["id"])
        out.append((battle.model_a.name, battle.model_b.name, battle.sampling_policy))
    return out


@pytest.mark.parametrize("policy", ["uniform", "weighted", "new_model_boost", "active"])
def test_each_policy_draws_its_battles_and_records_itself(app, client, session, arena, policy):
    """Battles through the API: two different models that can answer, never Mute, the policy recorded."""
    prompt, models = arena
    override(app, SAMPLING_POLICY=policy)
    add_votes(session, models, 200)
    builds.build_snapshot(app)
    for a, b, recorded in battle_pairs(client, session, prompt, 30):
        assert a != b and "Mute" not in (a, b) and recorded == policy


def test_long_run_shares_match_the_published_ones(app, client, session, arena):
    """The active policy on a real snapshot: draws (through the service's choose_pair) follow the shares that
    GET /sampling publishes, and every model keeps at least the floor's share."""
    prompt, models = arena
    override(app, SAMPLING_POLICY="active")
    add_votes(session, models, 300)
    builds.build_snapshot(app)
    del models["Mute"]
    session.get(Model, models["Beta"].id).sampling_weight = 2.0
    session.commit()
    published = client.get("/api/v1/sampling").get_json()
    assert published["policy"] == "active" and published["snapshot"] == 1
    share = {row["model"]: row["share"] for row in published["models"]}
    assert share["Mute"] > 0  # it answers other prompts: published shares are for a prompt all can answer
    state = sampling.policy_state(app, session)
    candidates = pairing.eligible_models(session, prompt.id)
    assert {c.id for c in candidates} == {m.id for m in models.values()}
    rng = random.Random(7)
    draws = 20_000
    sides = Counter()
    for _ in range(draws):
        a, b = sampling.choose_pair(state, candidates, rng)
        sides[a.id] += 1
        sides[b.id] += 1
    # the published shares include Mute; for this prompt the rule is the same over the five that answer it
    weights = np.array([c.sampling_weight for c in candidates])
    index = [state.position[c.id] for c in candidates]
    from ranking import sampling as rule_math

    expected = rule_math.model_shares(
        rule_math.pair_probabilities(
            state.settings.rule, weights, votes=state.votes[index], odds=state.odds[np.ix_(index, index)]
        )
    )
    observed = [sides[c.id] for c in candidates]
    assert stats.chisquare(observed, expected * 2 * draws).pvalue > P_MIN
    weighted = weights * (weights.sum() - weights) / (weights * (weights.sum() - weights)).sum()
    assert (expected >= state.settings.active_floor * weighted - 1e-12).all()


def test_paused_and_failing_models_are_never_picked(app, client, session, arena, loopback):
    prompt, models = arena
    models["Alpha"].status = "paused"
    session.commit()
    broken = gen_endpoint_model(session, "Broken", "B Lab", loopback.base_url)
    fine = gen_endpoint_model(session, "Fine", "F Lab", loopback.base_url)
    now = datetime.now(timezone.utc)
    # Broken: 3 of its 4 answers in battles in the window failed (and a failed health check)
    for k in range(4):
        battle = Battle(
            id=f"f{k}",
            prompt_text="q",
            model_a_id=broken.id,
            model_b_id=fine.id,
            state="void",
            created_at=now - timedelta(seconds=30),
        )
        session.add(battle)
        session.flush()
        session.add_all(
            [
                Message(
                    battle_id=battle.id,
                    side="a",
                    role="assistant",
                    content="",
                    complete=k == 0,
                    error=None if k == 0 else "timeout",
                ),
                Message(battle_id=battle.id, side="b", role="assistant", content="ok", complete=True),
            ]
        )
    session.add(EndpointCheck(model_id=broken.id, ok=False, error="refused", created_at=now))
    session.commit()
    state = sampling.policy_state(app, session)
    assert state.failing == {broken.id: (4, 5)}
    published = {row["model"]: row for row in client.get("/api/v1/sampling").get_json()["models"]}
    assert published["Broken"]["failing"] == {"failed": 4, "calls": 5} and published["Broken"]["share"] == 0
    assert published["Fine"]["failing"] is None and "Alpha" not in published  # paused: not an active model
    for a, b, _ in battle_pairs(client, session, prompt, 40):
        assert {"Alpha", "Broken", "Mute"}.isdisjoint({a, b})
    # free text: only endpoint models answer, and Broken is failing: one left, no battle
    response = client.post("/api/v1/battles", json={"prompt": "hello"})
    assert response.status_code == 503 and response.get_json()["error"]["code"] == "no_models"
    # its failures age out of the window: it is tried again
    override(app, SAMPLING_FAILING_SECONDS=10.0)
    assert broken.id not in sampling.policy_state(app, session).failing


def test_active_never_pairs_a_model_with_itself_or_one_that_cannot_answer(app, session, arena):
    """Even when one model's uncertainty dwarfs every other's (a new model), the pair is two models that can
    answer, and the new one is in most battles."""
    prompt, models = arena
    override(app, SAMPLING_POLICY="active")
    add_votes(session, models, 300)
    builds.build_snapshot(app)
    newcomer = gen_recorded_model(session, "Newcomer", "N Lab", {prompt.id: "new answer"})
    state = sampling.policy_state(app, session, known=(newcomer.id,))
    assert newcomer.id in state.position and state.votes[state.position[newcomer.id]] == 0
    candidates = pairing.eligible_models(session, prompt.id)
    rng = random.Random(3)
    seen = Counter()
    for _ in range(2000):
        a, b = sampling.choose_pair(state, candidates, rng)
        assert a.id != b.id and {a.id, b.id} <= {c.id for c in candidates}
        seen[newcomer.id in (a.id, b.id)] += 1
    assert seen[True] > 0.8 * 2000
    with pytest.raises(ArenaError):
        sampling.choose_pair(state, candidates[:1], rng)


def test_the_fit_refreshes_with_votes_since_the_snapshot(app, session, arena):
    """Between snapshots the counted votes since update the counts (and the new_model_boost's view of who is
    provisional); a new snapshot replaces them."""
    prompt, models = arena
    override(app, SAMPLING_POLICY="new_model_boost", PROVISIONAL_VOTES=100)
    add_votes(session, models, 100)
    builds.build_snapshot(app)
    before = sampling.policy_state(app, session)
    assert before.snapshot == 1 and before.votes.sum() == 200
    add_votes(session, models, 150, seed=1)
    after = sampling.policy_state(app, session)
    assert after.snapshot == 1 and after.votes.sum() == 500
    for model in models.values():  # each model's counted votes, by a plain count
        involved = (Battle.model_a_id == model.id) | (Battle.model_b_id == model.id)
        count = len(session.scalars(select(Vote.id).join(Battle, Vote.battle_id == Battle.id).where(involved)).all())
        assert after.votes[after.position[model.id]] == count
    builds.build_snapshot(app)
    rebuilt = sampling.policy_state(app, session)
    assert rebuilt.snapshot == 2 and rebuilt.votes.sum() == 500


def test_the_state_is_cached_between_refreshes(app, session, arena):
    override(app, SAMPLING_REFRESH_SECONDS=3600.0)
    first = sampling.policy_state(app, session)
    assert sampling.policy_state(app, session) is first
    newcomer = gen_recorded_model(session, "Newcomer", "N Lab", {arena[0].id: "hi"})
    assert sampling.policy_state(app, session, known=(newcomer.id,)) is not first  # an unknown model: read again


def test_the_snapshot_and_the_endpoint_publish_the_policy(app, client, session, arena):
    prompt, models = arena
    override(app, SAMPLING_POLICY="new_model_boost", SAMPLING_BOOST=4.0)
    add_votes(session, models, 100)
    document = reading.published_document(builds.build_snapshot(app))
    assert document["sampling"]["policy"] == "new_model_boost"
    assert document["sampling"]["settings"]["boost"] == 4.0
    assert document["sampling"]["settings"]["provisional_votes"] == 300
    assert document["sampling"]["rule"].startswith("as weighted")
    assert document["sampling"]["weights"]["Alpha"] == 1.0
    body = client.get("/api/v1/sampling").get_json()
    SamplingOut.model_validate(body)  # the documented shape
    assert (body["policy"], body["snapshot"]) == ("new_model_boost", 1)
    rows = {row["model"]: row for row in body["models"]}
    board = {row["model"]: row for row in document["boards"]["overall"]["models"]}
    assert rows["Alpha"]["votes"] == board["Alpha"]["battles"] > 0 and rows["Alpha"]["provisional"]
    assert sum(row["share"] for row in body["models"]) == pytest.approx(1.0, abs=1e-5)


def test_an_unknown_policy_stops_the_arena_before_it_starts(monkeypatch, app):
    """Checked once, at start (arena.settings): never first found by a battle, and the running app is unchanged."""
    with pytest.raises(
        SettingsError,
        match="ARENA_SAMPLING_POLICY: Input should be 'uniform', 'weighted', "
        "'new_model_boost' or 'active' \\(got 'favourites'\\)",
    ):
        override(app, SAMPLING_POLICY="favourites")
    assert settings_of(app).sampling_policy == "weighted"
    monkeypatch.setenv("ARENA_SAMPLING_POLICY", "favourites")
    with pytest.raises(SettingsError, match="ARENA_SAMPLING_POLICY"):
        create_app()


def test_operators_see_the_policy_on_the_command_line(app, session, arena):
    prompt, models = arena
    override(app, SAMPLING_POLICY="active")
    models["Beta"].sampling_weight = 0.0
    session.commit()
    runner = app.test_cli_runner()
    shown = runner.invoke(args=["sampling", "show"])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0].startswith("policy: active (") and "floor" in lines[1]
    assert any(line.startswith("Beta ") and " 0.0000 " in line for line in lines)  # weight 0: no share
    as_json = runner.invoke(args=["sampling", "show", "--json"])
    assert as_json.exit_code == 0
    import json

    assert {m["model"] for m in json.loads(as_json.output)["models"]} == set(models)


def test_votes_since_are_read_incrementally(app, session, arena):
    """A refresh on the same snapshot reads only the votes after those it read; a new snapshot starts afresh."""
    prompt, models = arena
    add_votes(session, models, 60)
    builds.build_snapshot(app)
    add_votes(session, models, 30, seed=1)
    first = sampling.policy_state(app, session)
    assert sum(n for _, n in first.since.values()) == 30
    add_votes(session, models, 20, seed=2)
    second = sampling.build_state(session, first.settings, previous=first)
    assert second.read_up_to > first.read_up_to and sum(n for _, n in second.since.values()) == 50
    assert second.votes.sum() == 2 * 110
    fresh = sampling.build_state(session, first.settings)  # the same counts, read from the snapshot's cut
    assert fresh.since == second.since and np.array_equal(fresh.votes, second.votes)
