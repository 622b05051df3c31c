"""Leaderboard snapshots: built once from the counted votes, signed, stored, served without recomputing, and
reproduced exactly by anyone with `python -m ranking verify` / `fit` on the published battle file."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import orjson
import pytest
from sqlalchemy import func, select, update

from arena.catalog import demo, labs
from arena.catalog.audit import OPERATOR
from arena.leaderboard import builds, locks, reading, voters
from arena.models import Battle, Message, Model, Snapshot, Vote
from arena.settings import override, settings_of
from ranking.cli import main as ranking_main
from tests.arena.conftest import gen_prompt, gen_recorded_model

REPLICATES = 20  # enough for intervals and tiers to exist; the numbers' quality is tested in tests/ranking


@pytest.fixture
def demo_app(app, session):
    override(app, SNAPSHOT_REPLICATES=REPLICATES, SNAPSHOT_STYLE_REPLICATES=REPLICATES, SNAPSHOT_EVERY_VOTES=0)
    demo.load_demo(session)
    return app


def build(app, **kwargs) -> dict:
    built = builds.build_snapshot(app, **kwargs)
    assert built is not None
    return reading.published_document(built)


def export(client, version, folder):
    """Download a snapshot and its battle file through the API, as a board member would."""
    document = client.get(f"/api/v1/leaderboard/snapshots/{version}")
    battles = client.get(f"/api/v1/leaderboard/snapshots/{version}/battles")
    key = client.get("/api/v1/leaderboard/public-key")
    assert document.status_code == battles.status_code == key.status_code == 200
    assert battles.mimetype == "application/jsonl" and key.mimetype == "application/x-pem-file"
    paths = folder / "snapshot.json", folder / "battles.jsonl", folder / "key.pem"
    for path, response in zip(paths, (document, battles, key)):
        path.write_bytes(response.data)
    return paths


@pytest.mark.parametrize("style_replicates", [0, REPLICATES])  # the style board's sandwich (default), bootstrap
def test_a_demo_snapshot_is_reproduced_exactly_from_its_published_battle_file(
    demo_app, client, tmp_path, capsys, style_replicates
):
    override(demo_app, SNAPSHOT_STYLE_REPLICATES=style_replicates)
    document = build(demo_app)
    assert document["version"] == 1 and document["votes"]["counted"] == 8931
    assert document["attribution"].startswith("Prompts and answers from the Crowdsourced LLM Benchmark")
    assert set(document["boards"]["categories"]) == {"creativity", "instruct", "knowledge", "reflexion"}
    style_board = document["boards"]["style"]
    assert style_board["style_coefficients"]  # the demo's recorded answers give lengths
    assert style_board["interval_method"].startswith("sandwich" if style_replicates == 0 else "bootstrap")
    snapshot_path, battles_path, key_path = export(client, 1, tmp_path)

    assert ranking_main(["verify", str(snapshot_path), str(battles_path), "--public-key", str(key_path)]) == 0
    out = capsys.readouterr().out
    assert "signature: ok" in out and "valid under the given public key" in out
    assert out.count("reproduced exactly") == 6 and "snapshot 1: verified" in out

    # and with the plain `fit` command a reader would type, from the board's own options
    overall = document["boards"]["overall"]
    options = overall["options"]
    assert (
        ranking_main(
            [
                "fit",
                str(battles_path),
                "--bootstrap",
                str(options["replicates"]),
                "--seed",
                str(options["seed"]),
                "--format",
                "json",
                "--no-progress",
            ]
        )
        == 0
    )
    fitted = json.loads(capsys.readouterr().out)
    assert fitted["input"]["sha256"] == document["battle_file"]["sha256"]
    published = {row["model"]: row for row in overall["models"]}
    for row in fitted["models"]:
        for field in ("rating", "ci_low", "ci_high", "rank_ub", "tier", "battles"):
            assert row[field] == published[row["model"]][field], (row["model"], field)
    assert len(fitted["models"]) == len(published) == 59


def test_verify_rejects_a_tampered_battle_file_a_tampered_snapshot_and_another_key(demo_app, client, tmp_path, capsys):
    build(demo_app)
    snapshot_path, battles_path, key_path = export(client, 1, tmp_path)
    original = battles_path.read_bytes()

    lines = original.decode().splitlines(keepends=True)
    first = json.loads(lines[0])
    first["winner"] = "model_b" if first["winner"] != "model_b" else "model_a"
    battles_path.write_text(json.dumps(first) + "\n" + "".join(lines[1:]))
    assert (
        ranking_main(
            ["verify", str(snapshot_path), str(battles_path), "--public-key", str(key_path), "--board", "overall"]
        )
        == 1
    )
    out = capsys.readouterr().out
    assert "battle file: FAILED" in out and "board overall: FAILED" in out and "NOT verified" in out

    battles_path.write_bytes(original)
    tampered = json.loads(snapshot_path.read_bytes())
    tampered["boards"]["overall"]["models"][0]["rating"] += 0.5
    snapshot_path.write_text(json.dumps(tampered))
    assert (
        ranking_main(
            ["verify", str(snapshot_path), str(battles_path), "--public-key", str(key_path), "--board", "overall"]
        )
        == 1
    )
    out = capsys.readouterr().out
    assert "signature: FAILED" in out and "board overall: FAILED" in out
    assert f"{tampered['boards']['overall']['models'][0]['model']}: rating published" in out

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    other = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp_path / "other.pem").write_bytes(other)
    snapshot_path.write_bytes(client.get("/api/v1/leaderboard/snapshots/1").data)
    assert (
        ranking_main(
            [
                "verify",
                str(snapshot_path),
                str(battles_path),
                "--public-key",
                str(tmp_path / "other.pem"),
                "--no-recompute",
            ]
        )
        == 1
    )
    assert "signature: FAILED" in capsys.readouterr().out

    (tmp_path / "not.json").write_text("{")
    assert ranking_main(["verify", str(tmp_path / "not.json"), str(battles_path)]) == 2
    assert "not a JSON document" in capsys.readouterr().err


def test_reading_never_recomputes(demo_app, client, monkeypatch):
    build(demo_app)

    def forbidden(*args, **kwargs):
        raise AssertionError("a read recomputed the leaderboard")

    import ranking.leaderboard

    monkeypatch.setattr(builds, "_build", forbidden)
    monkeypatch.setattr(builds, "build_snapshot", forbidden)
    monkeypatch.setattr(ranking.leaderboard, "rank_battles", forbidden)
    for url in (
        "/api/v1/leaderboard",
        "/api/v1/leaderboard?category=knowledge",
        "/api/v1/leaderboard?style=true",
        "/api/v1/leaderboard/snapshots",
        "/api/v1/leaderboard/snapshots/1",
        "/api/v1/leaderboard/snapshots/1?format=csv",
        "/api/v1/leaderboard/snapshots/1/battles",
        "/api/v1/leaderboard/snapshots/1/votes",
        "/api/v1/leaderboard/public-key?format=json",
    ):
        response = client.get(url)
        assert response.status_code == 200, (url, response.data[:200])
    board = client.get("/api/v1/leaderboard").get_json()
    assert board["version"] == 1 and board["board"] == "overall" and len(board["models"]) == 59
    assert board["categories"] == ["creativity", "instruct", "knowledge", "reflexion"] and board["style_available"]
    assert len(board["unrated"]) == 70 - 59  # every registered model is listed, rated or not
    csv_rows = client.get("/api/v1/leaderboard/snapshots/1?format=csv").data.decode().splitlines()
    assert csv_rows[0].startswith("version,board,rank_ub,tier,model") and len(csv_rows) == 1 + 6 * 59


def test_leaderboard_errors_have_the_one_json_shape(app, client, demo_app):
    assert client.get("/api/v1/leaderboard").status_code == 404
    assert client.get("/api/v1/leaderboard").get_json()["error"]["code"] == "no_snapshot"
    build(demo_app)
    cases = {
        "/api/v1/leaderboard?category=cooking": (404, "category_not_found"),
        "/api/v1/leaderboard?style=maybe": (400, "invalid_parameter"),
        "/api/v1/leaderboard?style=true&category=knowledge": (400, "invalid_parameter"),
        "/api/v1/leaderboard/snapshots/2": (404, "snapshot_not_found"),
        "/api/v1/leaderboard/snapshots/2/battles": (404, "snapshot_not_found"),
        "/api/v1/leaderboard/snapshots/99999999999": (404, "snapshot_not_found"),  # beyond a 32-bit id
        "/api/v1/leaderboard/snapshots/1?format=xml": (400, "invalid_parameter"),
        "/api/v1/leaderboard/public-key?format=der": (400, "invalid_parameter"),
    }
    for url, (status, code) in cases.items():
        response = client.get(url)
        assert (response.status_code, response.get_json()["error"]["code"]) == (status, code), url


def _vote_directly(session, model_a, model_b, winner, *, voter, prompt_id=None, state="voted", flagged=False):
    """A battle and its vote as the service stores them (state and flag as given), without streaming."""
    battle = Battle(
        id=f"b{session.scalar(select(func.count()).select_from(Battle))}-{voter}",
        prompt_id=prompt_id,
        prompt_text="?",
        model_a_id=model_a.id,
        model_b_id=model_b.id,
        state=state,
        flagged=flagged,
        voter=voter,
    )
    session.add(battle)
    session.flush()
    session.add(Vote(battle_id=battle.id, winner=winner, voter=voter))
    session.commit()
    return battle


def test_counting_rules_leave_votes_out_with_their_reason_and_keep_them_in_the_vote_file(app, client, session):
    override(
        app,
        SNAPSHOT_REPLICATES=REPLICATES,
        SNAPSHOT_STYLE_REPLICATES=REPLICATES,
        SNAPSHOT_EVERY_VOTES=0,
        PROVISIONAL_VOTES=5,
    )
    prompt = gen_prompt(session)
    # answers that do not name their model (one-letter names: "answer A" would be an identity leak)
    a, b, c = (gen_recorded_model(session, name, "Org", {prompt.id: f"answer {i}"}) for i, name in enumerate("ABC"))
    for i in range(4):
        _vote_directly(session, a, b, "a", voter="honest", prompt_id=prompt.id)
        _vote_directly(session, b, c, "a", voter="honest", prompt_id=prompt.id)
        _vote_directly(session, a, c, "tie", voter="honest", prompt_id=prompt.id)
    _vote_directly(session, c, a, "a", voter="honest", flagged=True)
    _vote_directly(session, c, a, "a", voter="honest", state="void")
    for _ in range(3):
        _vote_directly(session, c, b, "a", voter="rigger")
    voters.set_voter_exclusion(session, "test-secret", "rigger", "votes only for C", lifted=False)
    session.execute(update(Model).where(Model.id == c.id).values(status="retired"))
    unrated = gen_recorded_model(session, "D", "Org", {})
    session.commit()

    document = build(app)
    assert document["votes"]["considered"] == 17 and document["votes"]["counted"] == 12
    assert {rule: n for rule, n in document["votes"]["excluded"].items() if n} == {
        "void_battle": 1,
        "flagged_battle": 1,
        "excluded_voter": 3,
    }
    rows = {row["model"]: row for row in document["boards"]["overall"]["models"]}
    assert set(rows) == {"A", "B", "C"} and rows["C"]["retired"] and rows["C"]["status"] == "retired"
    assert rows["A"]["battles"] == 8 and rows["A"]["provisional"] is False
    assert {m["model"]: m["rated"] for m in document["models"]} == {"A": True, "B": True, "C": True, "D": False}
    # each model's votes as this snapshot counted them, by rule (a lab's model status reads these)
    assert {m["model"]: m["votes"] for m in document["models"]} == {
        "A": {"counted": 8, "excluded": {"flagged_battle": 1, "void_battle": 1}},
        "B": {"counted": 8, "excluded": {"excluded_voter": 3}},
        "C": {"counted": 8, "excluded": {"flagged_battle": 1, "void_battle": 1, "excluded_voter": 3}},
        "D": {"counted": 0, "excluded": {}},
    }
    assert unrated.name not in rows

    battle_lines = client.get("/api/v1/leaderboard/snapshots/1/battles").data.decode().splitlines()
    vote_lines = [
        json.loads(line) for line in client.get("/api/v1/leaderboard/snapshots/1/votes").data.decode().splitlines()
    ]
    assert len(battle_lines) == 12 and len(vote_lines) == 17
    reasons = [line["excluded"] for line in vote_lines if not line["counted"]]
    assert sorted(reasons) == ["excluded_voter"] * 3 + ["flagged_battle", "void_battle"]
    # each vote line is the battle's line with the vote's fields around it, byte for byte as orjson writes it
    raw_votes = client.get("/api/v1/leaderboard/snapshots/1/votes").data.splitlines(keepends=True)
    assert raw_votes == [orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE) for line in vote_lines]
    assert [list(line)[:4] for line in vote_lines] == [["vote", "model_a", "model_b", "winner"]] * 17
    assert [list(line)[-3:] for line in vote_lines] == [["source", "counted", "excluded"]] * 17
    assert [
        {k: v for k, v in line.items() if k not in ("vote", "source", "counted", "excluded")}
        for line in vote_lines
        if line["counted"]
    ] == [json.loads(line) for line in battle_lines]
    judges = {line["judge"] for line in vote_lines}
    assert len(judges) == 2 and not {"honest", "rigger"} & judges  # pseudonymised, still told apart
    assert all("answer" not in line for line in battle_lines)

    # the exclusion is lifted by a later decision, never deleted
    rigger = next(line["judge"] for line in vote_lines if line["excluded"] == "excluded_voter")
    voters.set_voter_exclusion(session, "test-secret", rigger, "appeal upheld", lifted=True)
    assert build(app)["votes"]["counted"] == 15
    assert len(voters.voter_exclusions(session)) == 2


def test_a_battle_played_in_the_arena_carries_its_answers_style(app, client, session):
    override(app, SNAPSHOT_REPLICATES=REPLICATES, SNAPSHOT_STYLE_REPLICATES=REPLICATES, SNAPSHOT_EVERY_VOTES=0)
    prompt = gen_prompt(session)
    gen_recorded_model(session, "Plain", "Org", {prompt.id: "Short answer."})
    gen_recorded_model(session, "Fancy", "Org", {prompt.id: "# Title\n\n- **one**\n- two\n\nA longer answer."})
    created = client.post("/api/v1/battles", json={"prompt_id": prompt.id}).get_json()
    client.get(created["stream"]).data  # read to the end: the answers are stored when both are done
    assert client.post(f"/api/v1/battles/{created['id']}/vote", json={"winner": "a"}).status_code == 200
    answers = session.scalars(select(Message).where(Message.role == "assistant")).all()
    counts = {m.content: (m.tokens, m.header_count, m.list_count, m.bold_count) for m in answers}
    # tokens: "#", "Title", "-", "*", "*", "one", "*", "*", "-", "two", "A", "longer", "answer", "."
    assert counts == {"Short answer.": (3, 0, 0, 0), "# Title\n\n- **one**\n- two\n\nA longer answer.": (14, 1, 2, 1)}
    build(app)
    line = json.loads(client.get("/api/v1/leaderboard/snapshots/1/battles").data)
    fancy_side = "a" if line["model_a"] == "Fancy" else "b"
    assert line["conv_metadata"][f"header_count_{fancy_side}"] == 1
    assert line["conv_metadata"][f"sum_assistant_{fancy_side}_tokens"] == 14


def test_a_build_waits_for_nobody_and_never_runs_twice_at_once(demo_app, session):
    """While one build holds the lock (here, the test), another returns at once and stores nothing; the
    lock is the database's (PostgreSQL) or the file system's (SQLite), so it holds across processes."""
    engine = demo_app.extensions["arena.engine"]
    with locks.try_exclusive(engine, builds.LOCK_NAME) as held:
        assert held
        assert builds.build_snapshot(demo_app) is None
        with locks.try_exclusive(engine, builds.LOCK_NAME) as again:
            assert not again
    assert session.scalar(select(func.count()).select_from(Snapshot)) == 0
    assert build(demo_app)["version"] == 1


def test_two_workers_asking_at_once_make_one_snapshot(demo_app, session, tmp_path):
    """Two `arena snapshot --if-due` processes started together (as two gunicorn workers' automatic builds
    would be): exactly one new snapshot."""
    env = {
        **os.environ,
        "ARENA_DATABASE_URL": settings_of(demo_app).sqlalchemy_url,
        "ARENA_INSTANCE_PATH": settings_of(demo_app).instance_path,
        "ARENA_SECRET_KEY": "test-secret",
        "ARENA_SNAPSHOT_REPLICATES": "2",
        "ARENA_SNAPSHOT_STYLE_REPLICATES": "2",
        "ARENA_SNAPSHOT_EVERY_VOTES": "100",
    }
    arena = os.path.join(os.path.dirname(sys.executable), "arena")
    workers = [
        subprocess.Popen(
            [arena, "snapshot", "--if-due"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    assert session.scalar(select(func.count()).select_from(Snapshot)) == 1
    said = " ".join(out for out, _ in outputs)
    assert said.count("snapshot 1:") == 1
    assert "being built right now" in said or "not enough new counted votes" in said


def test_the_leaderboard_answers_match_the_openapi_document(demo_app):
    """With a snapshot published, every leaderboard route's success answers what the document promises."""
    import schemathesis

    from tests.arena.test_openapi import CHECKS

    build(demo_app)
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", demo_app)
    by_label = {result.ok().label: result.ok() for result in schema.get_all_operations()}
    cases = [
        ("GET /api/v1/leaderboard", {}, {}),
        ("GET /api/v1/leaderboard", {}, {"category": "knowledge"}),
        ("GET /api/v1/leaderboard", {}, {"style": "true"}),
        ("GET /api/v1/leaderboard/snapshots", {}, {}),
        ("GET /api/v1/leaderboard/snapshots/{version}", {"version": 1}, {}),
        ("GET /api/v1/leaderboard/snapshots/{version}", {"version": 1}, {"format": "csv"}),
        ("GET /api/v1/leaderboard/snapshots/{version}/battles", {"version": 1}, {}),
        ("GET /api/v1/leaderboard/snapshots/{version}/votes", {"version": 1}, {}),
        ("GET /api/v1/leaderboard/public-key", {}, {"format": "json"}),
        ("GET /api/v1/leaderboard/public-key", {}, {}),
    ]
    for label, path_parameters, query in cases:
        case = by_label[label].Case(path_parameters=path_parameters, query=query)
        response = case.call()
        assert response.status_code == 200, (label, query, response.text[:200])
        case.validate_response(response, checks=CHECKS)


def test_a_lab_reads_its_models_rating_from_the_newest_snapshot(demo_app, client, session):

    lab, key = labs.create_lab(session, OPERATOR, "Rated Lab")
    session.execute(update(Model).where(Model.name.in_(["GPT 4", "Claude v1"])).values(lab_id=lab.id))
    session.commit()
    unrated = client.post(
        "/api/v1/models",
        json={"name": "New recorded", "organization": "R", "kind": "recorded"},
        headers={"Authorization": f"Bearer {key}"},
    ).get_json()
    auth = {"Authorization": f"Bearer {key}"}
    before = {m["name"]: m["leaderboard"] for m in client.get("/api/v1/models", headers=auth).get_json()["models"]}
    assert before["GPT 4"]["rating"] is None and "No leaderboard snapshot" in before["GPT 4"]["note"]

    document = build(demo_app)
    row = next(r for r in document["boards"]["overall"]["models"] if r["model"] == "GPT 4")
    gpt4 = session.scalar(select(Model.id).where(Model.name == "GPT 4"))
    status = client.get(f"/api/v1/models/{gpt4}", headers=auth).get_json()
    assert status["leaderboard"] == {
        "rating": row["rating"],
        "interval": [row["ci_low"], row["ci_high"]],
        "rank": row["rank_ub"],
        "tier": row["tier"],
        "provisional": row["provisional"],
        "snapshot": "1",
        "counted_votes": row["battles"],
        "excluded_votes": {},
        "note": status["leaderboard"]["note"],
    }
    assert status["votes"]["counted"] == row["battles"]
    new = client.get(f"/api/v1/models/{unrated['id']}", headers=auth).get_json()["leaderboard"]
    assert new["rating"] is None and new["snapshot"] == "1" and "does not rank this model" in new["note"]
    assert (new["counted_votes"], new["excluded_votes"]) == (0, {})

    # an operator's exclusion of a voter shows in the lab's vote counts at once, with its reason
    voter = session.scalar(select(Vote.voter).join(Battle).where(Battle.model_a_id == gpt4).limit(1))
    cast = session.scalar(
        select(func.count())
        .select_from(Vote)
        .join(Battle)
        .where(Vote.voter == voter, (Battle.model_a_id == gpt4) | (Battle.model_b_id == gpt4))
    )
    voters.set_voter_exclusion(session, "test-secret", voter, "test", lifted=False)
    votes = client.get(f"/api/v1/models/{gpt4}", headers=auth).get_json()["votes"]
    assert votes["excluded_by_reason"]["voter_excluded"] == cast >= 1
    assert votes["counted"] == row["battles"] - cast
