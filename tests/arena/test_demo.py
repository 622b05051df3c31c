"""The embedded LLMFAO demo: loaded whole, exactly as the data files say, once, or not at all."""

import csv
import json
import shutil

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from arena.catalog import demo
from arena.models import AuditEvent, Battle, Model, Prompt, RecordedAnswer, Vote
from ranking.data import read_battles
from tests.arena.conftest import gen_prompt, gen_recorded_model

DATA = demo.DEMO_DATA
CROWD = DATA / "crowd-comparisons.csv"
TABLES = (Model, Prompt, RecordedAnswer, Battle, Vote)


def jsonl(name):
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def counts(session):
    return {table.__tablename__: session.scalar(select(func.count()).select_from(table)) for table in TABLES}


EMPTY = {"models": 0, "prompts": 0, "recorded_answers": 0, "battles": 0, "votes": 0}


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def load(runner, *flags):
    result = runner.invoke(args=["demo", "load", *flags])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def test_the_demo_loads_every_model_prompt_answer_and_vote(runner, session):
    out = load(runner)
    assert "70 models, 19 prompts, 1133 recorded answers, 8931 battles with 8931 votes" in out
    assert counts(session) == {"models": 70, "prompts": 19, "recorded_answers": 1133, "battles": 8931, "votes": 8931}
    assert demo.demo_counts(session) == {"models": 70, "prompts": 19, "answers": 1133, "battles": 8931, "votes": 8931}
    event = session.scalars(select(AuditEvent)).one()  # the load is on the operators' record
    assert (event.actor, event.action, event.details["votes"], event.details["models"]) == (
        "operator",
        "demo.load",
        8931,
        70,
    )

    models = {m.name: m for m in session.scalars(select(Model))}
    assert {(r["name"], r["org"]) for r in jsonl("models.jsonl")} == {(m.name, m.organization) for m in models.values()}
    assert {(m.kind, m.status, m.source, m.sampling_weight) for m in models.values()} == {
        ("recorded", "active", "llmfao", 1.0)
    }

    prompts = {p.id: p for p in session.scalars(select(Prompt))}
    assert {r["id"]: (r["text"], r["type"], r["slug"]) for r in jsonl("prompts.jsonl")} == {
        i: (p.text, p.category, p.slug) for i, p in prompts.items()
    }  # the data set's ids are ours

    name_of = {r["id"]: r["name"] for r in jsonl("models.jsonl")}
    expected = sorted((name_of[r["model"]], r["prompt"], r["result"], r["duration"]) for r in jsonl("results.jsonl"))
    stored = sorted(
        session.execute(
            select(Model.name, RecordedAnswer.prompt_id, RecordedAnswer.text, RecordedAnswer.duration_ms).join(Model)
        ).all()
    )
    assert [tuple(row) for row in stored] == expected


def test_every_crowd_vote_is_one_voted_battle_in_file_order(runner, session):
    load(runner)
    rows = list(csv.DictReader(CROWD.open()))
    prompt_text = {r["id"]: r["text"] for r in jsonl("prompts.jsonl")}
    battles = session.scalars(select(Battle).options(selectinload(Battle.vote)).order_by(Battle.created_at)).all()
    assert len(battles) == len(rows)
    winner = {"left": "a", "right": "b", "tie": "tie"}
    for number, (row, battle) in enumerate(zip(rows, battles), 1):
        assert battle.id == f"llmfao-{number}"
        assert (battle.model_a.name, battle.model_b.name) == (row["left"], row["right"])
        assert battle.prompt_id == int(row["prompt"]) and battle.prompt_text == prompt_text[int(row["prompt"])]
        assert (battle.state, battle.source, battle.flagged) == ("voted", "llmfao", False)
        assert battle.voter == battle.vote.voter == f"llmfao:{row['worker']}"
        assert (battle.vote.winner, battle.vote.source) == (winner[row["winner"]], "llmfao")
        assert battle.vote.created_at > battle.created_at


def test_the_votes_export_equals_the_crowd_file_row_by_row(runner, session, tmp_path):
    load(runner)
    out = tmp_path / "votes.jsonl"
    result = runner.invoke(args=["votes", "export", "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    exported, crowd = read_battles(out), read_battles(CROWD)  # the reader knows LLMFAO's own CSV
    assert len(exported.outcome) == len(crowd.outcome) == 8931
    names = np.array(exported.models, dtype=object)
    crowd_names = np.array(crowd.models, dtype=object)
    np.testing.assert_array_equal(names[exported.model_a], crowd_names[crowd.model_a])
    np.testing.assert_array_equal(names[exported.model_b], crowd_names[crowd.model_b])
    np.testing.assert_array_equal(exported.outcome, crowd.outcome)
    voters = np.array(exported.voters, dtype=object)[exported.voter]
    crowd_voters = np.array(crowd.voters, dtype=object)[crowd.voter]
    np.testing.assert_array_equal(voters, ["llmfao:" + v for v in crowd_voters])
    assert np.all(np.diff(exported.tstamp) > 0)  # synthetic times keep the file order
    prompt_type = {r["id"]: r["type"] for r in jsonl("prompts.jsonl")}
    categories = np.array(exported.categories, dtype=object)[exported.category]
    np.testing.assert_array_equal(categories, [prompt_type[int(r["prompt"])] for r in csv.DictReader(CROWD.open())])


def test_if_empty_loads_once(runner, session):
    assert "loaded the LLMFAO demo" in load(runner, "--if-empty")
    assert "nothing loaded" in load(runner, "--if-empty")
    assert counts(session)["battles"] == 8931 and counts(session)["models"] == 70


def test_if_empty_leaves_a_database_with_models_alone(runner, session):
    gen_recorded_model(session, "Our Own", "Us", {})
    assert "the database has models; nothing loaded" in load(runner, "--if-empty")
    assert not demo.demo_is_loaded(session) and not demo.database_is_empty(session)
    assert counts(session)["models"] == 1


def test_loading_twice_without_if_empty_is_refused(runner, session):
    load(runner)
    result = runner.invoke(args=["demo", "load"])
    assert result.exit_code == 2 and result.stderr.strip() == "error: the LLMFAO demo is already loaded"
    assert counts(session)["votes"] == 8931


def test_a_failure_mid_load_leaves_nothing(runner, session, monkeypatch):
    def fail(*_args, **_kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(demo, "_insert_votes", fail)  # models, prompts, answers and battles are in by then
    result = runner.invoke(args=["demo", "load"])
    assert result.exit_code == 1 and "disk full" in result.stderr and "Traceback" not in result.stderr
    assert counts(session) == EMPTY
    assert demo.database_is_empty(session) and not demo.demo_is_loaded(session)
    monkeypatch.undo()
    load(runner)  # and a later load works
    assert counts(session)["votes"] == 8931


def test_inconsistent_data_files_are_named_and_nothing_is_stored(session, tmp_path):
    broken = tmp_path / "llmfao"
    shutil.copytree(DATA, broken)
    lines = (broken / "crowd-comparisons.csv").read_text().splitlines()
    lines[5000] = (
        lines[5000].replace(",left,", ",sideways,").replace(",right,", ",sideways,").replace(",tie,", ",sideways,")
    )
    (broken / "crowd-comparisons.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(demo.DemoDataError, match=r"crowd-comparisons\.csv:5001: winner"):
        demo.load_demo(session, broken)
    assert counts(session) == EMPTY


def test_taken_names_or_prompt_ids_are_refused_before_anything_is_written(session):
    gen_recorded_model(session, "Claude v2", "Anthropic", {})
    with pytest.raises(ValueError, match="Claude v2"):
        demo.load_demo(session)
    assert counts(session)["models"] == 1 and counts(session)["battles"] == 0


def test_new_prompts_after_the_demo_get_new_ids(session):
    demo.load_demo(session)
    highest = max(r["id"] for r in jsonl("prompts.jsonl"))
    assert gen_prompt(session, "A new question?").id > highest  # PostgreSQL's sequence was moved past them


def test_the_demo_reads_only_the_data_in_the_repository():
    assert DATA == demo.ROOT / "data" / "llmfao" and DATA.is_dir()
    assert "shared" not in DATA.resolve().parts
    data = demo.read_demo()
    assert (len(data.models), len(data.prompts), len(data.answers), len(data.votes)) == (70, 19, 1133, 8931)
