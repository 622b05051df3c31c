"""The integrity rules as the snapshot builder applies them: each leaves its planted votes out with its reason,
spares the honest voters, is counted and described in the snapshot with its settings, and a snapshot built with
the rules on is still reproduced exactly by `python -m ranking verify` from its published battle file."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from sqlalchemy import insert, select, update

from arena.catalog import identity, labs
from arena.catalog.audit import OPERATOR
from arena.catalog.identity import Identity, identity_leak
from arena.errors import BadRequest
from arena.leaderboard import builds, integrity, reading, voters
from arena.models import Battle, Message, Model, Vote
from arena.settings import Settings, override, settings_of
from ranking.cli import main as ranking_main
from tests.arena.conftest import gen_prompt, gen_recorded_model
from tests.arena.test_snapshots import export

REPLICATES = 20
MODELS = 8
DAY0 = datetime(2026, 11, 2, tzinfo=timezone.utc)


class Arena:
    """Battles and votes written in bulk, as the service stores them (no streaming)."""

    def __init__(self, session, prompt, models):
        self.session, self.prompt, self.models = session, prompt, models
        self.battles, self.votes = [], []

    def vote(self, a: int, b: int, winner: str, voter: str, at: datetime, *, prompt_id="set", text="?"):
        battle_id = f"t{len(self.battles)}"
        self.battles.append(
            {
                "id": battle_id,
                "prompt_id": self.prompt.id if prompt_id == "set" else prompt_id,
                "prompt_text": text,
                "model_a_id": self.models[a].id,
                "model_b_id": self.models[b].id,
                "state": "voted",
                "flagged": False,
                "voter": voter,
                "created_at": at,
            }
        )
        self.votes.append({"battle_id": battle_id, "winner": winner, "voter": voter, "created_at": at})
        return battle_id

    def store(self):
        self.session.execute(insert(Battle), self.battles)
        self.session.execute(insert(Vote), self.votes)
        self.session.commit()


@pytest.fixture
def arena(app, session):
    override(
        app,
        SNAPSHOT_REPLICATES=REPLICATES,
        SNAPSHOT_STYLE_REPLICATES=REPLICATES,
        SNAPSHOT_EVERY_VOTES=0,
        PROVISIONAL_VOTES=5,
        VOTER_DAILY_CAP=40,
        REPEATED_PROMPT_VOTES=20,
    )
    prompt = gen_prompt(session, "Explain tides.")
    models = [
        gen_recorded_model(session, f"Model {i}", f"Org {i}", {prompt.id: "Tides come from the moon."})
        for i in range(MODELS)
    ]
    return Arena(session, prompt, models)


def honest_votes(arena: Arena, rng, *, voters=150, per_voter=20, strength=None):
    """Votes drawn from Bradley-Terry with known strengths, spread over ten days."""
    strength = np.linspace(1.2, -1.2, MODELS) if strength is None else strength
    for voter in range(voters):
        for _ in range(per_voter):
            a, b = rng.choice(MODELS, 2, replace=False)
            p = 1 / (1 + np.exp(strength[b] - strength[a]))
            winner = "tie" if rng.random() < 0.1 else ("a" if rng.random() < p else "b")
            at = DAY0 + timedelta(days=int(rng.integers(0, 10)), seconds=int(rng.integers(0, 86000)))
            arena.vote(a, b, winner, f"honest-{voter}", at)


def build(app) -> dict:
    return reading.published_document(builds.build_snapshot(app))


def vote_file(client, version=1) -> list[dict]:
    return [
        json.loads(line)
        for line in client.get(f"/api/v1/leaderboard/snapshots/{version}/votes").data.decode().splitlines()
    ]


def test_each_rule_leaves_its_planted_votes_out_and_the_snapshot_records_counts_and_settings(
    app, client, session, arena, tmp_path, capsys
):
    rng = np.random.default_rng(7)
    honest_votes(arena, rng)
    # a voter pushing model 6 (second weakest): 80 votes for it over two days, under the daily cap
    for i in range(80):
        other = int(rng.choice([m for m in range(MODELS) if m != 6]))
        at = DAY0 + timedelta(days=3 + i % 2, seconds=60 * i)
        arena.vote(6, other, "a", "rigger", at) if i % 2 else arena.vote(other, 6, "b", "rigger", at)
    # an eager but honest-looking voter: 60 votes in one day, 20 over the cap of 40
    for i in range(60):
        a, b = rng.choice(MODELS, 2, replace=False)
        arena.vote(int(a), int(b), "a" if a < b else "b", "eager", DAY0 + timedelta(days=5, seconds=60 * i))
    # one greeting typed 30 times (free text, no prompt of the set): counts as 20 votes in all
    for i in range(30):
        a, b = rng.choice(MODELS, 2, replace=False)
        arena.vote(
            int(a),
            int(b),
            "a" if a < b else "b",
            f"greeter-{i}",
            DAY0 + timedelta(days=6, seconds=i),
            prompt_id=None,
            text="  Hi ",
        )
    # a streamed battle whose answer names an alias registered only after the vote
    leaked = arena.vote(0, 1, "a", "honest-0", DAY0 + timedelta(days=7), prompt_id=None, text="Who are you?")
    arena.store()
    session.add_all(
        [
            Message(
                battle_id=leaked, side="a", role="assistant", content="I'm Zephyr-Prime, by the way.", complete=True
            ),
            Message(battle_id=leaked, side="b", role="assistant", content="An assistant.", complete=True),
        ]
    )
    session.execute(update(Model).where(Model.id == arena.models[0].id).values(aliases=["zephyr prime"]))
    session.commit()

    document = build(app)
    lines = vote_file(client)
    by_voter: dict[str, list] = {}
    for line in lines:
        by_voter.setdefault(line["judge"], []).append(line)
    reasons = [line["excluded"] for line in lines]
    counts = {rule: reasons.count(rule) for rule, _ in builds.COUNTING_RULES}
    assert document["votes"]["excluded"] == counts  # one count per rule, every rule listed
    assert document["votes"]["counted"] == reasons.count(None) == len(lines) - sum(counts.values())

    # the rigger: all left out, by one of the statistical rules
    pseudonym = voters.pseudonymiser("test-secret")
    rigger = by_voter[pseudonym("rigger")]
    assert all(line["excluded"] in ("sequential_test", "improbable_votes", "concentrated_influence") for line in rigger)
    # the daily cap: the eager voter's 41st to 60th votes of that day
    eager = by_voter[pseudonym("eager")]
    assert [line["excluded"] for line in eager] == [None] * 40 + ["daily_cap"] * 20
    # the identity leak found at this build, though the battle was never flagged
    assert counts["identity_leak"] == 1 and counts["flagged_battle"] == 0
    # honest voters spared
    honest = [line for voter in range(150) for line in by_voter[pseudonym(f"honest-{voter}")]]
    assert sum(line["excluded"] not in (None, "identity_leak") for line in honest) / len(honest) < 0.02

    # settings and counts recorded: what was filtered, and how to redo it
    report = document["integrity"]
    assert report["settings"] == integrity.IntegritySettings.from_settings(settings_of(app))._asdict()
    assert report["settings"]["daily_cap"] == 40 and report["settings"]["repeated_prompt_votes"] == 20
    for rule, _ in integrity.RULES:
        assert report["rules"][rule]["excluded"] == counts[rule]
    assert report["rules"]["concentrated_influence"]["z_threshold"] > 3
    assert [rule["name"] for rule in document["counting_rules"]][-len(integrity.RULES) :] == [
        rule for rule, _ in integrity.RULES
    ]

    # the repeated greeting's counted votes weigh 20 in all, written in the battle file
    greetings = [line for i in range(30) for line in by_voter[pseudonym(f"greeter-{i}")] if line["counted"]]
    assert len(greetings) == 30 and sum(line["weight"] for line in greetings) == pytest.approx(20)
    assert report["repeated_prompts"]["votes_down_weighted"] == 30

    # and `python -m ranking verify` reproduces every board from the published battle file, weights included
    snapshot_path, battles_path, key_path = export(client, 1, tmp_path)
    assert sum('"weight":' in line for line in battles_path.read_text().splitlines()) == 30
    assert ranking_main(["verify", str(snapshot_path), str(battles_path), "--public-key", str(key_path)]) == 0
    assert "snapshot 1: verified" in capsys.readouterr().out


def test_rules_off_leave_only_the_builders_own_rules(app, client, arena):
    rng = np.random.default_rng(8)
    honest_votes(arena, rng, voters=20, per_voter=10)
    for i in range(60):
        arena.vote(0, 1, "b", "eager", DAY0 + timedelta(days=1, seconds=i))
    arena.store()
    override(app, INTEGRITY_RULES=False)
    document = build(app)
    assert document["integrity"]["enabled"] is False and document["votes"]["counted"] == 260
    assert not any(document["votes"]["excluded"].values())


def test_a_family_registered_later_applies_to_old_imported_battles(app, client, session, arena):
    """Battles shown recorded answers are checked on those answers at each build."""
    rng = np.random.default_rng(9)
    honest_votes(arena, rng, voters=10, per_voter=10)
    arena.store()
    first = build(app)
    assert first["votes"]["excluded"]["identity_leak"] == 0
    from arena.models import RecordedAnswer

    session.execute(
        update(RecordedAnswer)
        .where(RecordedAnswer.model_id == arena.models[3].id)
        .values(text="As a Zephyr model, I think tides come from the moon.")
    )
    session.execute(update(Model).where(Model.id == arena.models[3].id).values(families=["Zephyr"]))
    session.commit()
    second = build(app)
    involving = sum(1 for b in arena.battles if arena.models[3].id in (b["model_a_id"], b["model_b_id"]))
    assert second["votes"]["excluded"]["identity_leak"] == involving > 0


def test_identity_leak_matches_families_and_aliases_case_and_spacing_insensitively():
    model = Identity("Foo 7B Chat", "Foo Labs", aliases=("foo-7b",), families=("FooLM", "Llama"))
    assert identity_leak("I am FOOLM, nice to meet you", model) == "FooLM"
    assert identity_leak("built on  llama weights", model) == "Llama"
    assert identity_leak("call me Foo 7b", model) == "foo-7b"
    assert identity_leak("a llamas' world", model) is None  # whole words only
    assert identity_leak("nothing to see", model) is None


def test_identity_labels_are_cleaned_and_checked():
    assert identity.clean_labels([" Zephyr  Prime ", "zephyr prime", "ZP-1"], "aliases") == ["Zephyr Prime", "ZP-1"]
    for bad in ("Zephyr", [1], [""], ["---"], ["x" * 201]):
        with pytest.raises(BadRequest):
            identity.clean_labels(bad, "families")


def test_labs_register_and_add_aliases_and_families_but_never_remove_them(client, session):
    from tests.arena.test_lab_api import bearer

    lab, key = labs.create_lab(session, OPERATOR, "Zephyr Lab")
    created = client.post(
        "/api/v1/models",
        headers=bearer(key),
        json={
            "name": "Zephyr 2",
            "organization": "Zephyr Lab",
            "kind": "recorded",
            "aliases": [" zephyr-2 ", "Zephyr-2"],
            "families": ["Zephyr"],
        },
    )
    assert created.status_code == 201, created.json
    assert created.json["aliases"] == ["zephyr-2"] and created.json["families"] == ["Zephyr"]
    model_id = created.json["id"]
    patched = client.patch(
        f"/api/v1/models/{model_id}", headers=bearer(key), json={"aliases": ["ZP2"], "families": ["zephyr", "Breeze"]}
    )
    assert patched.status_code == 200, patched.json
    assert patched.json["aliases"] == ["zephyr-2", "ZP2"] and patched.json["families"] == ["Zephyr", "Breeze"]
    for bad in ({"aliases": "Zephyr"}, {"families": ["---"]}, {"aliases": [None]}):
        response = client.patch(f"/api/v1/models/{model_id}", headers=bearer(key), json=bad)
        assert response.status_code in (400, 422) and "error" in response.json
    model = session.get(Model, model_id)
    session.refresh(model)
    assert model.families == ["Zephyr", "Breeze"]


def test_operators_change_identity_labels_from_the_command_line(app, session):
    from arena.models import AuditEvent

    model = gen_recorded_model(session, "Gale 1", "Gale Inc", {})
    runner = app.test_cli_runner()
    result = runner.invoke(args=["models", "identity", "Gale 1", "--family", "Gale", "--alias", "g1"])
    assert result.exit_code == 0 and "families ['Gale']" in result.output, result.output
    result = runner.invoke(args=["models", "identity", "Gale 1", "--remove-alias", "G1"])
    assert result.exit_code == 0 and "aliases []" in result.output
    session.refresh(model)
    assert model.aliases == [] and model.families == ["Gale"]
    actions = session.scalars(select(AuditEvent.action).where(AuditEvent.model_id == model.id)).all()
    assert actions == ["model.identity", "model.identity"]
    bad = runner.invoke(args=["models", "identity", "Gale 1", "--family", "***"])
    assert bad.exit_code != 0 and "error" in bad.output


def test_apply_rules_catches_many_identities_that_drag_the_fit_along():
    """100 identities with 10 votes each for one model: each alone looks like chance against a fit they
    dragged along; against a fit without the suspects they are a group."""
    from ranking.data import A_WINS, B_WINS, TIE

    rng = np.random.default_rng(11)
    models, n, voters = 12, 20000, 1000
    strength = np.sort(rng.normal(0, 0.6, models))[::-1]
    a = rng.integers(0, models, n)
    b = (a + rng.integers(1, models, n)) % models
    p = 1 / (1 + np.exp(strength[b] - strength[a]))
    o = np.where(rng.random(n) < 0.1, TIE, np.where(rng.random(n) < p, A_WINS, B_WINS))
    v = rng.integers(0, voters, n)
    target, sybils = 6, 100
    other = (target + rng.integers(1, models, sybils * 10)) % models
    a, b = np.r_[a, np.full(sybils * 10, target)], np.r_[b, other]
    o = np.r_[o, np.full(sybils * 10, A_WINS)].astype(np.int8)
    v = np.r_[v, voters + np.repeat(np.arange(sybils), 10)]
    table = integrity.VoteTable(
        a, b, o, v, np.zeros(a.size, np.int64), np.full(a.size, -1), np.zeros(a.size, bool), [None] * a.size
    )
    defaults = integrity.IntegritySettings.from_settings(Settings())
    result = integrity.apply_rules(table, models, voters + sybils, defaults)
    reason = np.array(result.reason, object)
    assert (reason[n:] == "concentrated_influence").mean() > 0.8
    assert (reason[:n] != None).mean() < 0.02  # noqa: E711 - elementwise


def test_imported_votes_are_not_capped_tested_or_down_weighted(app, client, session, arena):
    """`arena battles import` stores no prompt text and its voters' votes were collected elsewhere."""
    for i in range(120):
        arena.vote(i % MODELS, (i + 1) % MODELS, "a", "importer", DAY0 + timedelta(seconds=i), prompt_id=None, text="")
    arena.store()
    session.execute(update(Vote).values(source="fastchat"))
    session.commit()
    document = build(app)
    assert document["votes"]["counted"] == 120 and document["integrity"]["votes_tested"] == 0
    assert document["integrity"]["repeated_prompts"]["votes_down_weighted"] == 0


def test_a_streamed_answer_naming_a_registered_family_flags_its_battle(client, session, loopback):
    from tests.arena.conftest import gen_endpoint_model
    from tests.arena.test_battles import run_battle

    gen_endpoint_model(
        session, "Gust 3", "Gust Inc", loopback.base_url, behaviour="leak:I am a GUSTLM model", families=["GustLM"]
    )
    gen_endpoint_model(session, "Quiet Model", "Quiet Org", loopback.base_url)
    battle_id, _, _, events = run_battle(client, prompt="Who made you?")
    assert events[-1][1]["state"] == "ready"
    battle = session.get(Battle, battle_id)
    assert battle.flagged and "GustLM" in battle.flag_reason
