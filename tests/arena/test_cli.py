"""The operator's commands, run as `flask --app arena ...` (the app's CLI runner) and as the `arena` script
(`arena.cli.main`), on a fresh database per test (SQLite, and PostgreSQL when configured)."""

import csv
import hashlib
import json
import os
import subprocess
import sys
from datetime import timezone
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from arena import cli
from arena.catalog import labs
from arena.catalog.audit import OPERATOR
from arena.egress.secrets import SecretDecryptionError, decrypt_secret, encrypt_secret
from arena.errors import BadRequest, Conflict
from arena.models import ApiKey, AuditEvent, Battle, Lab, Model, RecordedAnswer, Vote
from arena.settings import override, settings_of
from ranking.data import read_battles
from tests.arena.conftest import gen_endpoint_model, gen_prompt, gen_recorded_model

REPO = Path(__file__).resolve().parents[2]
SECRET = "test-secret"  # the conftest app's SECRET_KEY


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def invoke(runner, *args, code=0):
    result = runner.invoke(args=list(args))
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    if code:
        assert_one_error_line(result.stderr)
    return result


def assert_one_error_line(stderr: str):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr


def count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def write(path: Path, lines) -> Path:
    """JSON Lines; a string item is written as it is (for blank and broken lines)."""
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


# ------------------------------------------------------------------------------------------------ db


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    from arena.db import alembic_config

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def test_db_current_downgrade_and_upgrade(runner, session):
    assert f"current: {head_revision()}" in invoke(runner, "db", "current").stdout
    assert "up to date" in invoke(runner, "db", "current").stdout
    invoke(runner, "db", "downgrade", "base")
    out = invoke(runner, "db", "current").stdout
    assert "current: none" in out and "run 'arena db upgrade'" in out
    invoke(runner, "labs", "list", code=1)  # no tables now: a one-line hint, not a traceback
    invoke(runner, "db", "upgrade")
    assert f"current: {head_revision()}" in invoke(runner, "db", "current").stdout
    assert "no labs" in invoke(runner, "labs", "list").stdout


def test_db_downgrade_to_an_unknown_revision_is_bad_input(runner):
    result = invoke(runner, "db", "downgrade", "nonsense", code=2)
    assert "nonsense" in result.stderr


# ------------------------------------------------------------------------------------------------ labs


def test_a_new_labs_key_is_shown_once_as_the_last_line_and_only_its_hash_is_stored(runner, session):
    result = invoke(runner, "labs", "create", "Acme Labs")
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("arena_") and len(key) >= 40
    stored = session.scalars(select(ApiKey)).one()
    assert stored.key_hash == hashlib.sha256(key.encode()).hexdigest() == labs.hash_key(key)
    assert key.startswith(stored.prefix) and len(stored.prefix) < len(key) // 2
    assert labs.authenticate(session, key).name == "Acme Labs"
    listing = invoke(runner, "labs", "list").stdout
    assert "Acme Labs" in listing and stored.prefix in listing and key not in listing


def test_a_duplicate_lab_name_is_refused(runner, session):
    invoke(runner, "labs", "create", "Acme")
    result = invoke(runner, "labs", "create", "Acme", code=2)
    assert "already exists" in result.stderr
    assert count(session, Lab) == 1 and count(session, ApiKey) == 1
    with pytest.raises(Conflict, match="already exists"):
        labs.create_lab(session, OPERATOR, "  Acme ")
    with pytest.raises(BadRequest, match="empty"):
        labs.create_lab(session, OPERATOR, "   ")


def test_rotating_a_key_revokes_the_old_one_at_once(runner, session):
    old = invoke(runner, "labs", "create", "Acme").stdout.strip().splitlines()[-1]
    result = invoke(runner, "labs", "rotate-key", "Acme")
    new = result.stdout.strip().splitlines()[-1]
    assert new != old and new.startswith("arena_") and "revoked 1 key" in result.stdout
    assert labs.authenticate(session, old) is None
    assert labs.authenticate(session, new).name == "Acme"
    keys = session.scalars(select(ApiKey).order_by(ApiKey.id)).all()
    assert [k.revoked_at is not None for k in keys] == [True, False]
    invoke(runner, "labs", "rotate-key", "Nobody", code=2)


def test_authenticate_refuses_unknown_malformed_and_other_labs_keys(session):
    acme, acme_key = labs.create_lab(session, OPERATOR, "Acme")
    other, other_key = labs.create_lab(session, OPERATOR, "Other")
    assert labs.authenticate(session, acme_key).id == acme.id
    assert labs.authenticate(session, other_key).id == other.id
    for bad in (None, "", acme_key[:-1], acme_key + "x", "arena_" + "A" * 43, labs.hash_key(acme_key)):
        assert labs.authenticate(session, bad) is None
    labs.rotate_key(session, OPERATOR, acme)
    assert labs.authenticate(session, acme_key) is None
    assert labs.authenticate(session, other_key).id == other.id  # rotation touches only that lab


# ------------------------------------------------------------------------------------------------ models


@pytest.fixture
def private_endpoints(app):
    """The operator allows loopback endpoints (ARENA_ALLOW_PRIVATE_ENDPOINTS), as for the labs' API tests."""
    override(app, ALLOW_PRIVATE_ENDPOINTS=True, ENDPOINT_CHECK_TIMEOUT=2.0)


def test_add_endpoint_stores_the_key_encrypted_and_never_prints_it(runner, session, loopback, private_endpoints):
    invoke(runner, "labs", "create", "Acme")
    result = invoke(
        runner,
        "models",
        "add-endpoint",
        "--name",
        "Acme Chat",
        "--organization",
        "Acme",
        "--base-url",
        loopback.base_url + "/",
        "--model",
        "echo",
        "--api-key",
        "sk-very-secret",
        "--lab",
        "Acme",
        "--system-prompt",
        "Be brief.",
    )
    assert "sk-very-secret" not in result.stdout + result.stderr
    model = session.scalars(select(Model)).one()
    assert (model.kind, model.status, model.base_url, model.endpoint_model, model.system_prompt, model.lab.name) == (
        "endpoint",
        "active",
        loopback.base_url,
        "echo",
        "Be brief.",
        "Acme",
    )
    assert "sk-very-secret" not in model.endpoint_key_encrypted
    assert decrypt_secret(SECRET, model.endpoint_key_encrypted) == "sk-very-secret"
    listing = invoke(runner, "models", "list", "--lab", "Acme").stdout
    assert "Acme Chat" in listing and "endpoint" in listing


def test_add_endpoint_without_a_key_stores_none(runner, session, loopback, private_endpoints):
    invoke(
        runner,
        "models",
        "add-endpoint",
        "--name",
        "Open",
        "--organization",
        "Org",
        "--base-url",
        loopback.base_url,
        "--model",
        "echo",
    )
    assert session.scalars(select(Model)).one().endpoint_key_encrypted is None


def test_the_operators_endpoint_gets_the_labs_checks(app, runner, session, loopback):
    """One path for both: the command refuses what the labs' API refuses (a loopback host unless the operator
    allows it, an endpoint that fails its one real request), with one line, and stores nothing."""
    args = ["models", "add-endpoint", "--name", "Open", "--organization", "Org", "--model"]
    refused = invoke(runner, *args, "echo", "--base-url", loopback.base_url, code=2)
    assert "ARENA_ALLOW_PRIVATE_ENDPOINTS" in refused.stderr
    override(app, ALLOW_PRIVATE_ENDPOINTS=True, ENDPOINT_CHECK_TIMEOUT=1.0)
    failing = invoke(runner, *args, "http-500", "--base-url", loopback.base_url, code=2)
    assert "500" in failing.stderr
    assert count(session, Model) == 0
    assert [e.action for e in session.scalars(select(AuditEvent))] == []


@pytest.mark.parametrize(
    "url, reason",
    [
        ("https://user:pass@api.acme.test/v1", "user name or password"),
        ("https://token@api.acme.test/v1", "user name or password"),
        ("ftp://api.acme.test/v1", "http:// or https://"),
        ("api.acme.test/v1", "http:// or https://"),
        ("https:///v1", "no host"),
        ("https://api.acme.test:99999/v1", "not a valid URL"),
    ],
)
def test_add_endpoint_refuses_bad_base_urls_and_stores_nothing(runner, session, url, reason):
    result = invoke(
        runner,
        "models",
        "add-endpoint",
        "--name",
        "M",
        "--organization",
        "O",
        "--base-url",
        url,
        "--model",
        "m",
        "--api-key",
        "k",
        code=2,
    )
    assert reason in result.stderr
    assert count(session, Model) == 0


def test_add_endpoint_refuses_a_taken_name_and_an_unknown_lab(runner, session):
    gen_recorded_model(session, "Taken", "Org", {})
    args = ["models", "add-endpoint", "--organization", "O", "--base-url", "https://x.test", "--model", "m"]
    assert "already exists" in invoke(runner, *args, "--name", "Taken", code=2).stderr
    assert "no lab named 'Ghost'" in invoke(runner, *args, "--name", "New", "--lab", "Ghost", code=2).stderr
    assert count(session, Model) == 1


def test_models_list_filters_by_lab_and_shows_status_and_weight(runner, session):
    lab, _ = labs.create_lab(session, OPERATOR, "Acme")
    gen_endpoint_model(session, "Acme Chat", "Acme", "https://x.test", lab_id=lab.id)
    gen_recorded_model(session, "Old Model", "Elsewhere", {})
    invoke(runner, "models", "weight", "Old Model", "0.25")
    invoke(runner, "models", "pause", "Old Model")
    everything = invoke(runner, "models", "list").stdout.splitlines()
    assert everything[0].split() == ["NAME", "ORGANIZATION", "KIND", "STATUS", "WEIGHT"]
    old = next(line for line in everything if line.startswith("Old Model"))
    assert old.split()[-4:] == ["Elsewhere", "recorded", "paused", "0.25"]
    only_acme = invoke(runner, "models", "list", "--lab", "Acme").stdout
    assert "Acme Chat" in only_acme and "Old Model" not in only_acme
    invoke(runner, "models", "list", "--lab", "Ghost", code=2)


def test_pause_resume_retire_and_retired_is_final(runner, session):
    model = gen_recorded_model(session, "M1", "Org", {})
    for action, status in (("pause", "paused"), ("resume", "active"), ("retire", "retired")):
        assert f"is {status}" in invoke(runner, "models", action, "M1").stdout
        session.refresh(model)
        assert model.status == status
    assert "retired" in invoke(runner, "models", "resume", "M1", code=2).stderr
    assert "retired" in invoke(runner, "models", "pause", "M1", code=2).stderr
    session.refresh(model)
    assert model.status == "retired"
    invoke(runner, "models", "pause", "Nobody", code=2)


def test_weight_must_be_a_finite_number_at_least_zero(runner, session):
    model = gen_recorded_model(session, "M1", "Org", {})
    invoke(runner, "models", "weight", "M1", "0")
    session.refresh(model)
    assert model.sampling_weight == 0.0
    for bad in ("nan", "inf", "abc"):
        invoke(runner, "models", "weight", "M1", bad, code=2)
    invoke(runner, "models", "weight", "M1", "--", "-1", code=2)
    session.refresh(model)
    assert model.sampling_weight == 0.0


# ------------------------------------------------------------------------------------------------ audit


def test_the_operators_changes_to_labs_and_models_are_in_the_audit_log(
    runner, session, tmp_path, loopback, private_endpoints
):
    """Each command that changes a lab or a model records itself (actor "operator") with the change; a refused
    command records nothing, and no key appears in the log."""
    first_key = invoke(runner, "labs", "create", "Acme").stdout.strip().splitlines()[-1]
    new_key = invoke(runner, "labs", "rotate-key", "Acme").stdout.strip().splitlines()[-1]
    invoke(
        runner,
        "models",
        "add-endpoint",
        "--name",
        "Acme Chat",
        "--organization",
        "Acme",
        "--base-url",
        loopback.base_url,
        "--model",
        "echo",
        "--api-key",
        "sk-very-secret",
        "--lab",
        "Acme",
    )
    for command in (["pause", "Acme Chat"], ["resume", "Acme Chat"], ["weight", "Acme Chat", "0.5"]):
        invoke(runner, "models", *command)
    prompt = gen_prompt(session)
    gen_recorded_model(session, "Alpha", "Org", {})
    gen_recorded_model(session, "Beta", "Org", {})
    invoke(
        runner,
        "answers",
        "import",
        "Alpha",
        str(write(tmp_path / "a.jsonl", [{"prompt_id": prompt.id, "answer": "One."}])),
    )
    invoke(runner, "battles", "import", str(write(tmp_path / "b.jsonl", BATTLES[:1])), "--source", "lmsys")
    invoke(runner, "models", "retire", "Acme Chat")
    refused = [
        ("labs", "create", "Acme"),
        ("labs", "rotate-key", "Nobody"),
        ("models", "resume", "Acme Chat"),
        ("models", "weight", "Alpha", "nan"),
        ("battles", "import", str(tmp_path / "b.jsonl")),
    ]
    for args in refused:
        invoke(runner, *args, code=2)

    acme = session.scalars(select(Lab)).one()
    chat, alpha = (session.scalars(select(Model).where(Model.name == n)).one() for n in ("Acme Chat", "Alpha"))
    events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
    assert [(e.action, e.lab_id, e.model_id) for e in events] == [
        ("lab.create", acme.id, None),
        ("key.rotate", acme.id, None),
        ("model.create", acme.id, chat.id),
        ("model.pause", acme.id, chat.id),
        ("model.resume", acme.id, chat.id),
        ("model.weight", acme.id, chat.id),
        ("answers.import", None, alpha.id),
        ("battles.import", None, None),
        ("model.retire", acme.id, chat.id),
    ]
    assert {(e.actor, e.key_prefix) for e in events} == {("operator", None)}
    details = {e.action: e.details for e in events}
    assert details["key.rotate"] == {"lab": "Acme", "revoked": 1}
    assert details["model.create"]["base_url"] == loopback.base_url and details["model.create"]["api_key"] == "set"
    assert details["model.weight"]["sampling_weight"] == {"from": 1.0, "to": 0.5}
    assert details["model.retire"]["status"] == {"from": "active", "to": "retired"}
    assert details["answers.import"]["answers"] == 1 and details["battles.import"]["battles"] == 1
    logged = json.dumps([e.details for e in events])
    assert "sk-very-secret" not in logged and first_key not in logged and new_key not in logged

    listing = invoke(runner, "audit", "list", "--lab", "Acme", "--json").stdout.splitlines()
    assert [json.loads(line)["action"] for line in listing] == [
        "model.retire",
        "model.weight",
        "model.resume",
        "model.pause",
        "model.create",
        "key.rotate",
        "lab.create",
    ]
    assert {(json.loads(line)["actor"], json.loads(line)["lab"]) for line in listing} == {("operator", "Acme")}


# ------------------------------------------------------------------------------------------------ answers


@pytest.fixture
def two_prompts(session):
    return gen_prompt(session, "First?"), gen_prompt(session, "Second?", category="code")


def test_answers_import_stores_every_line(runner, session, two_prompts, tmp_path):
    first, second = two_prompts
    model = gen_recorded_model(session, "Rec", "Org", {})
    path = write(
        tmp_path / "answers.jsonl",
        [
            {"prompt_id": first.id, "answer": "One.", "duration_ms": 1500},
            "",
            {"prompt_id": second.id, "answer": "Two."},
        ],
    )
    assert "imported 2" in invoke(runner, "answers", "import", "Rec", str(path)).stdout
    stored = {
        (a.prompt_id, a.text, a.duration_ms)
        for a in session.scalars(select(RecordedAnswer).where(RecordedAnswer.model_id == model.id))
    }
    assert stored == {(first.id, "One.", 1500.0), (second.id, "Two.", None)}


def test_answers_import_reports_every_bad_line_and_stores_nothing(runner, session, two_prompts, tmp_path):
    first, second = two_prompts
    gen_recorded_model(session, "Rec", "Org", {})
    path = write(
        tmp_path / "answers.jsonl",
        [
            {"prompt_id": first.id, "answer": "fine"},  # 1 good
            {"prompt_id": 9999, "answer": "x"},  # 2 no such prompt
            "{not json",  # 3
            {"prompt_id": first.id, "answer": "again"},  # 4 duplicate of line 1
            {"prompt_id": second.id, "answer": "  "},  # 5 empty answer
            {"prompt_id": second.id, "answer": "x", "duration": 3},  # 6 unknown field
            {"prompt_id": second.id, "answer": "x", "duration_ms": -5},  # 7 negative duration
            {"prompt_id": "1", "answer": "x"},  # 8 prompt_id not an integer
            [1, 2],  # 9 not an object
        ],
    )
    result = runner.invoke(args=["answers", "import", "Rec", str(path)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert all(line.startswith("error: ") for line in lines) and "Traceback" not in result.stderr
    failing = [int(line.split(f"{path}:")[1].split(":")[0]) for line in lines[:-1]]
    assert failing == [2, 3, 4, 5, 6, 7, 8, 9]
    assert "also on line 1" in lines[2] and "duration" in lines[4]
    assert "nothing imported" in lines[-1] and "8 of 9" in lines[-1]
    assert count(session, RecordedAnswer) == 0


def test_answers_import_refuses_existing_answers_endpoint_models_and_missing_files(
    runner, session, two_prompts, tmp_path
):
    first, _ = two_prompts
    gen_recorded_model(session, "Rec", "Org", {first.id: "already"})
    gen_endpoint_model(session, "Live", "Org", "https://x.test")
    path = write(tmp_path / "answers.jsonl", [{"prompt_id": first.id, "answer": "new"}])
    assert "already has an answer" in runner.invoke(args=["answers", "import", "Rec", str(path)]).stderr
    assert "endpoint model" in invoke(runner, "answers", "import", "Live", str(path), code=2).stderr
    invoke(runner, "answers", "import", "Ghost", str(path), code=2)
    invoke(runner, "answers", "import", "Rec", str(tmp_path / "missing.jsonl"), code=2)
    assert (
        "no answers"
        in invoke(runner, "answers", "import", "Rec", str(write(tmp_path / "e.jsonl", [""])), code=2).stderr
    )
    assert [a.text for a in session.scalars(select(RecordedAnswer))] == ["already"]


def test_answers_import_refuses_a_retired_model_as_the_labs_upload_does(runner, session, two_prompts, tmp_path):
    """The command and the labs' upload are one path (arena.catalog.answers): a retired model's answers are what
    its votes rated, so neither adds any; the refusal is one line and nothing is stored."""
    first, _ = two_prompts
    gen_recorded_model(session, "Old", "Org", {})
    invoke(runner, "models", "retire", "Old")
    path = write(tmp_path / "answers.jsonl", [{"prompt_id": first.id, "answer": "late"}])
    assert "retired" in invoke(runner, "answers", "import", "Old", str(path), code=2).stderr
    assert count(session, RecordedAnswer) == 0
    assert [e.action for e in session.scalars(select(AuditEvent).order_by(AuditEvent.id))] == ["model.retire"]


# ------------------------------------------------------------------------------------------------ battles


@pytest.fixture
def three_models(session):
    return [gen_recorded_model(session, name, "Org", {}) for name in ("Alpha", "Beta", "Gamma")]


BATTLES = [
    {"model_a": "Alpha", "model_b": "Beta", "winner": "model_a", "tstamp": 1_700_000_000.5, "judge": "u1"},
    {"model_a": "Gamma", "model_b": "Alpha", "winner": "model_b", "tstamp": 1_700_000_100.0, "judge": "u2"},
    {"model_a": "Beta", "model_b": "Gamma", "winner": "tie", "tstamp": 1_700_000_200.0, "judge": "u1"},
    {"model_a": "Alpha", "model_b": "Gamma", "winner": "tie (bothbad)", "tstamp": 1_700_000_300.0},
]


def test_battles_import_stores_voted_battles_with_their_votes(runner, session, three_models, tmp_path):
    path = write(tmp_path / "battles.jsonl", BATTLES)
    assert "imported 4" in invoke(runner, "battles", "import", str(path), "--source", "lmsys").stdout
    battles = session.scalars(select(Battle).order_by(Battle.created_at)).all()
    assert [(b.model_a.name, b.model_b.name, b.vote.winner) for b in battles] == [
        ("Alpha", "Beta", "a"),
        ("Gamma", "Alpha", "b"),
        ("Beta", "Gamma", "tie"),
        ("Alpha", "Gamma", "bothbad"),
    ]
    assert {b.state for b in battles} == {"voted"} and {b.source for b in battles} == {"lmsys"}
    assert {b.vote.source for b in battles} == {"lmsys"}
    assert [b.voter for b in battles] == ["lmsys:u1", "lmsys:u2", "lmsys:u1", None]
    assert [b.vote.voter for b in battles] == [b.voter for b in battles]
    first = battles[0].vote.created_at
    assert first.replace(tzinfo=first.tzinfo or timezone.utc).timestamp() == pytest.approx(1_700_000_000.5)


def test_battles_import_with_unknown_models_names_them_and_stores_nothing(runner, session, three_models, tmp_path):
    path = write(
        tmp_path / "battles.jsonl",
        BATTLES
        + [
            {"model_a": "Alpha", "model_b": "Zeta", "winner": "tie"},
            {"model_a": "Omega", "model_b": "Beta", "winner": "tie"},
        ],
    )
    result = invoke(runner, "battles", "import", str(path), code=2)
    assert "Zeta" in result.stderr and "Omega" in result.stderr and "Alpha" not in result.stderr
    assert count(session, Battle) == 0 and count(session, Vote) == 0


def test_battles_import_refuses_the_same_file_twice_and_bad_files(runner, session, three_models, tmp_path):
    path = write(tmp_path / "battles.jsonl", BATTLES)
    invoke(runner, "battles", "import", str(path))
    assert "already imported" in invoke(runner, "battles", "import", str(path), code=2).stderr
    assert count(session, Battle) == 4
    bad = write(tmp_path / "bad.jsonl", BATTLES[:2] + [{"model_a": "Alpha", "model_b": "Beta", "winner": "A"}])
    assert f"{bad}:3" in invoke(runner, "battles", "import", str(bad), code=2).stderr
    self_battle = write(tmp_path / "self.jsonl", [{"model_a": "Alpha", "model_b": "Alpha", "winner": "tie"}])
    invoke(runner, "battles", "import", str(self_battle), code=2)
    assert "'arena'" in invoke(runner, "battles", "import", str(path), "--source", "arena", code=2).stderr
    invoke(runner, "battles", "import", str(path), "--source", "Bad Name!", code=2)
    invoke(runner, "battles", "import", str(tmp_path / "missing.jsonl"), code=2)
    assert count(session, Battle) == 4 and count(session, Vote) == 4


# ------------------------------------------------------------------------------------------------ votes export


def test_votes_export_reads_back_with_the_ranking_reader(runner, session, three_models, tmp_path):
    invoke(runner, "battles", "import", str(write(tmp_path / "battles.jsonl", BATTLES)), "--source", "lmsys")
    original = read_battles(tmp_path / "battles.jsonl")
    for fmt, name in (("jsonl", "votes.jsonl"), ("csv", "votes.csv")):
        out = tmp_path / name
        assert "wrote 4 vote(s)" in invoke(runner, "votes", "export", "--out", str(out), "--format", fmt).stdout
        back = read_battles(out)
        assert back.models == original.models
        np.testing.assert_array_equal(back.model_a, original.model_a)
        np.testing.assert_array_equal(back.model_b, original.model_b)
        np.testing.assert_array_equal(back.outcome, original.outcome)
        np.testing.assert_array_equal(back.tstamp, original.tstamp)
        assert [back.voters[v] if v >= 0 else None for v in back.voter] == ["lmsys:u1", "lmsys:u2", "lmsys:u1", None]
    records = [json.loads(line) for line in (tmp_path / "votes.jsonl").read_text().splitlines()]
    assert set(records[0]) == {
        "model_a",
        "model_b",
        "winner",
        "tstamp",
        "judge",
        "battle_id",
        "source",
        "flagged",
        "state",
    }
    assert (records[0]["source"], records[0]["flagged"], records[0]["state"]) == ("lmsys", False, "voted")
    rows = list(csv.DictReader((tmp_path / "votes.csv").open()))
    assert [r["battle_id"] for r in rows] == [r["battle_id"] for r in records]
    assert rows[0]["flagged"] == "false" and rows[3]["judge"] == ""


def test_votes_export_to_standard_output_carries_category_and_flag(runner, session, tmp_path):
    prompt = gen_prompt(session, "Write a sort.", category="code")
    alpha = gen_recorded_model(session, "Alpha", "Org", {prompt.id: "a"})
    beta = gen_recorded_model(session, "Beta", "Org", {prompt.id: "b"})
    session.add(
        Battle(
            id="b1",
            prompt_id=prompt.id,
            prompt_text=prompt.text,
            model_a_id=alpha.id,
            model_b_id=beta.id,
            state="voted",
            flagged=True,
            flag_reason="names itself",
            voter="v",
        )
    )
    session.add(Vote(battle_id="b1", winner="b", voter="v"))
    session.commit()
    result = invoke(runner, "votes", "export")
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert record["category"] == "code" and record["flagged"] is True and record["winner"] == "model_b"
    assert record["battle_id"] == "b1" and record["source"] == "arena" and record["judge"] == "v"
    out = tmp_path / "one.csv"  # the .csv name picks the format
    invoke(runner, "votes", "export", "--out", str(out))
    assert read_battles(out).categories == ("code",)


def test_votes_export_of_an_empty_database_and_a_bad_destination(runner, tmp_path):
    assert invoke(runner, "votes", "export").stdout == ""
    invoke(runner, "votes", "export", "--out", str(tmp_path / "missing-dir" / "v.jsonl"), code=1)
    assert not (tmp_path / "missing-dir").exists()
    invoke(runner, "votes", "export", "--format", "xml", code=2)


# ------------------------------------------------------------------------------------------------ crypto


def test_endpoint_keys_encrypt_with_a_fresh_nonce_and_need_the_same_secret_key():
    first, second = encrypt_secret("app secret", "sk-123"), encrypt_secret("app secret", "sk-123")
    assert first != second and "sk-123" not in first
    assert decrypt_secret("app secret", first) == decrypt_secret("app secret", second) == "sk-123"
    with pytest.raises(SecretDecryptionError, match="another SECRET_KEY"):
        decrypt_secret("other secret", first)
    tampered = first[:-2] + ("A" if first[-2] != "A" else "B") + first[-1]
    with pytest.raises(SecretDecryptionError):
        decrypt_secret("app secret", tampered)
    for damaged in ("", "sk-123", "v1:", "v1:!!!", "v1:" + "A" * 10):
        with pytest.raises(SecretDecryptionError):
            decrypt_secret("app secret", damaged)
    with pytest.raises(ValueError):
        encrypt_secret("", "sk-123")
    assert decrypt_secret("k", encrypt_secret("k", "ключ 🔑")) == "ключ 🔑"


# ------------------------------------------------------------------------------------------------ the script


@pytest.fixture
def script_env(app, monkeypatch, tmp_path):
    """The `arena` script builds its own app from ARENA_* variables: point them at the test database."""
    monkeypatch.setenv("ARENA_DATABASE_URL", settings_of(app).sqlalchemy_url)
    monkeypatch.setenv("ARENA_INSTANCE_PATH", str(tmp_path))
    monkeypatch.setenv("ARENA_SECRET_KEY", SECRET)
    return dict(os.environ, PYTHONPATH=str(REPO))


def test_the_arena_script_runs_commands_and_reports_errors_in_one_line(script_env, session, capsys):
    assert cli.main(["labs", "create", "Scripted"]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    assert labs.authenticate(session, key).name == "Scripted"
    assert cli.main(["labs", "create", "Scripted"]) == 2
    assert_one_error_line(capsys.readouterr().err)
    for argv in (["labs", "create"], ["nonsense"], ["models", "weight", "x", "y"], ["labs", "list", "--bad"]):
        assert cli.main(argv) == 2
        assert_one_error_line(capsys.readouterr().err)
    assert cli.main(["--help"]) == 0
    assert "labs" in capsys.readouterr().out


def test_python_dash_m_arena_cli_is_the_script(script_env):
    created = subprocess.run(
        [sys.executable, "-m", "arena.cli", "labs", "create", "Subprocess Lab"],
        env=script_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip().splitlines()[-1].startswith("arena_")
    failed = subprocess.run(
        [sys.executable, "-m", "arena.cli", "models", "retire", "Nobody"],
        env=script_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode == 2 and failed.stdout == ""
    assert_one_error_line(failed.stderr)


def test_a_database_without_the_schema_gets_a_hint_not_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ARENA_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    monkeypatch.setenv("ARENA_INSTANCE_PATH", str(tmp_path))
    monkeypatch.setenv("ARENA_SECRET_KEY", SECRET)
    assert cli.main(["models", "list"]) == 1
    err = capsys.readouterr().err
    assert_one_error_line(err)
    assert "arena db upgrade" in err
