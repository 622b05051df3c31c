"""`arena export` / `arena import`: a whole arena moves between SQLite and PostgreSQL with every row and id kept,
all of it or nothing, and its published snapshot still verifies on the other side."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import tarfile
from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from arena import create_app, db, transfer
from arena.catalog import audit, labs
from arena.catalog.audit import OPERATOR
from arena.egress.secrets import encrypt_secret
from arena.leaderboard import builds, voters
from arena.models import AuditEvent, Battle, EndpointCheck, Message, Milestone, Model, SafetyScore, Vote
from arena.settings import settings_of
from ranking.cli import main as ranking_main
from tests.arena.conftest import POSTGRES_URL, gen_prompt, gen_recorded_model, reset_postgres

SECRET = "transfer-test-secret"
REPLICATES = 20


def _app(url, folder):
    folder.mkdir(parents=True, exist_ok=True)
    return create_app(
        {
            "DATABASE_URL": url,
            "INSTANCE_PATH": str(folder),
            "TESTING": True,
            "SECRET_KEY": SECRET,
            "DB_POOL_SIZE": 3,
            "SNAPSHOT_REPLICATES": REPLICATES,
            "SNAPSHOT_STYLE_REPLICATES": REPLICATES,
            "SNAPSHOT_EVERY_VOTES": 0,
            "PROVISIONAL_VOTES": 5,
            "SIGNING_KEY_FILE": str(folder.parent / "signing_key.pem"),
        }
    )


@pytest.fixture
def apps(tmp_path):
    """A factory of apps on fresh databases ("sqlite" files, or the one PostgreSQL test database), disposed after."""
    made = []

    def make(kind: str, *, migrate: bool = True):
        if kind == "postgresql":
            if not POSTGRES_URL:
                pytest.skip("no PostgreSQL (set ARENA_TEST_DATABASE_URL)")
            reset_postgres(POSTGRES_URL)
            url = POSTGRES_URL
        else:
            url = f"sqlite:///{tmp_path / f'arena{len(made)}.db'}"
        if migrate:
            db.upgrade(url)
        application = _app(url, tmp_path / f"instance{len(made)}")
        made.append(application)
        return application

    yield make
    for application in made:
        application.extensions["arena.engine"].dispose()


def populate(app) -> None:
    """A small arena with rows in every table: what makes a round trip hard (zones, bytes, JSON, unicode, NULLs)."""
    with db.new_session(app) as session:
        lab, _key = labs.create_lab(session, OPERATOR, "Lab Ünïcode")
        labs.rotate_key(session, OPERATOR, lab)
        prompt = gen_prompt(session, text="Pourquoi le ciel est-il bleu ? 🌤", category="knowledge")
        other = gen_prompt(session, text="Write a haiku", category="creativity")
        names = ["Alpha", "Beta", "Gamma", "Delta"]
        # (answers never name their model: an answer that does is an identity leak, its vote not counted)
        models = [
            gen_recorded_model(
                session, name, "Org", {prompt.id: f"## Answer {n}\n- **bold** answer", other.id: f"haiku {n}"}
            )
            for n, name in enumerate(names)
        ]
        endpoint = Model(
            name="Endpoint",
            organization="Lab Ünïcode",
            kind="endpoint",
            lab_id=lab.id,
            base_url="http://127.0.0.1:8100/v1",
            endpoint_model="echo",
            endpoint_key_encrypted=encrypt_secret(SECRET, "sk-secret"),
            system_prompt="Be brief.",
            sampling_params={"temperature": 0.7, "stop": ["\n\n"]},
            aliases=["endpt", "EP"],
            sampling_weight=0.25,
            status="paused",
        )
        session.add(endpoint)
        session.flush()
        audit.record_action(
            session,
            audit.Actor(lab.name, lab.id),
            "model.create",
            lab_id=lab.id,
            model_id=endpoint.id,
            details={"name": endpoint.name, "nested": {"list": [1, 2.5, None, "ü"]}},
        )
        base = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
        outcomes = ["a", "b", "tie", "bothbad", "a", "a"]
        number = 0
        for i, first in enumerate(models):
            for second in models[i + 1 :]:
                for k, winner in enumerate(outcomes):
                    number += 1
                    battle = Battle(
                        id=f"battle{number:04d}",
                        prompt_id=(prompt.id, other.id, None)[k % 3],
                        prompt_text="Pourquoi le ciel est-il bleu ? 🌤",
                        model_a_id=first.id,
                        model_b_id=second.id,
                        state="voted",
                        voter=f"voter{k % 4}",
                        address_hash="ab" * 32,
                        created_at=base + timedelta(minutes=number),
                        flagged=number == 3,
                        flag_reason="named itself" if number == 3 else None,
                    )
                    session.add(battle)
                    session.flush()
                    for side, model in (("a", first), ("b", second)):
                        session.add(Message(battle_id=battle.id, side=side, role="user", content=battle.prompt_text))
                        session.add(
                            Message(
                                battle_id=battle.id,
                                side=side,
                                role="assistant",
                                complete=True,
                                content=f"# Answer {model.id}\n1. **x**",
                                first_token_ms=12.5,
                                duration_ms=250.0,
                                created_at=base + timedelta(minutes=number),
                            )
                        )
                    session.add(
                        Vote(
                            battle_id=battle.id,
                            winner=winner,
                            voter=battle.voter,
                            created_at=base + timedelta(minutes=number, seconds=30),
                        )
                    )
        session.add(
            Battle(
                id="voided",
                prompt_text="?",
                model_a_id=models[0].id,
                model_b_id=models[1].id,
                state="void",
                void_reason="provider timed out",
            )
        )
        session.add(
            EndpointCheck(
                model_id=endpoint.id, ok=False, error_kind="timeout", error="no answer in 10 s", duration_ms=math.inf
            )
        )
        session.add(EndpointCheck(model_id=endpoint.id, ok=True, duration_ms=None))
        session.commit()
        voters.set_voter_exclusion(session, SECRET, "voter3", "votes only for Delta", lifted=False)
        session.add(
            SafetyScore(
                model_id=models[0].id,
                metric="refusal_of_harm",
                value=0.93,
                ci_low=0.9,
                ci_high=None,
                source="lab report",
                measured_on=date(2026, 2, 1),
            )
        )
        session.add(
            Milestone(
                name="Safe enough",
                definition={
                    "board": "overall",
                    "safety": [{"metric": "refusal_of_harm", "at_least": 0.9}],
                    "capability": {"min_rating": 900},
                },
            )
        )
        session.commit()
    assert builds.build_snapshot(app) is not None


def table_rows(app) -> dict[str, list[dict]]:
    with app.extensions["arena.engine"].connect() as connection:
        return {table.name: list(transfer.iter_rows(connection, table)) for table in transfer.tables()}


def verify_snapshot(app, folder) -> None:
    """Download snapshot 1 through the API and check it with `python -m ranking verify`, as a reader would."""
    client = app.test_client()
    folder.mkdir(exist_ok=True)
    paths = [folder / "snapshot.json", folder / "battles.jsonl", folder / "key.pem"]
    for path, url in zip(
        paths,
        (
            "/api/v1/leaderboard/snapshots/1",
            "/api/v1/leaderboard/snapshots/1/battles",
            "/api/v1/leaderboard/public-key",
        ),
    ):
        response = client.get(url)
        assert response.status_code == 200, (url, response.data[:300])
        path.write_bytes(response.data)
    assert ranking_main(["verify", *map(str, paths[:2]), "--public-key", str(paths[2])]) == 0


def populated_archive(apps, path):
    """A populated SQLite arena (every table holds rows), exported to `path`; returns its app."""
    source = apps("sqlite")
    populate(source)
    transfer.export_arena(source.extensions["arena.engine"], path)
    return source


def test_sqlite_to_postgresql_and_back_keeps_every_row_and_the_snapshot_verifies(apps, tmp_path, capsys):
    source = apps("sqlite")
    populate(source)
    before = table_rows(source)
    assert all(before[table.name] for table in transfer.tables()), [n for n, rows in before.items() if not rows]

    first = transfer.export_arena(source.extensions["arena.engine"], tmp_path / "one.tar")
    middle = apps("postgresql", migrate=False)  # an empty database: migrated to the archive's revision
    transfer.import_arena(middle.extensions["arena.engine"], tmp_path / "one.tar")
    assert table_rows(middle) == before

    transfer.export_arena(middle.extensions["arena.engine"], tmp_path / "two.tar")
    final = apps("sqlite")
    result = transfer.import_arena(final.extensions["arena.engine"], tmp_path / "two.tar")
    assert table_rows(final) == before
    assert result.rows == first.rows == sum(map(len, before.values()))
    assert dict(result.tables)["votes"] == 36 and dict(result.tables)["audit_log"] >= 3

    verify_snapshot(middle, tmp_path / "on-postgresql")
    verify_snapshot(final, tmp_path / "back-on-sqlite")
    out = capsys.readouterr().out
    assert out.count("snapshot 1: verified") == 2

    # PostgreSQL's sequences moved past the imported ids: the arena goes on adding rows there.
    with db.new_session(middle) as session:
        newest_vote = session.scalar(select(func.max(Vote.id)))
        battle = Battle(id="after-import", prompt_text="?", model_a_id=1, model_b_id=2, state="voted")
        session.add(battle)
        session.flush()
        vote = Vote(battle_id=battle.id, winner="a")
        event = audit.record_action(session, OPERATOR, "lab.note")
        session.add(vote)
        session.commit()
        assert vote.id == newest_vote + 1
        assert event.id == max(row["id"] for row in before["audit_log"]) + 1
    assert builds.build_snapshot(middle).version == 2  # and builds the next snapshot under the same key


def test_a_sqlite_round_trip_keeps_every_row(apps, tmp_path, monkeypatch):
    monkeypatch.setattr(transfer, "BATCH_ROWS", 7)  # many batches per table, and a last one part full
    source = populated_archive(apps, tmp_path / "arena.tar")
    target = apps("sqlite", migrate=False)
    transfer.import_arena(target.extensions["arena.engine"], tmp_path / "arena.tar")
    assert table_rows(target) == table_rows(source)
    verify_snapshot(target, tmp_path / "check")


def _rewritten(archive_path, name, members: dict[str, bytes]):
    """A copy of the archive with some members' bytes replaced, everything else (and the order) as it was."""
    with tarfile.open(archive_path) as archive:
        originals = [(member, archive.extractfile(member).read()) for member in archive.getmembers()]
    copy = archive_path.with_name(name)
    with tarfile.open(copy, "w") as archive:
        for member, data in originals:
            data = members.get(member.name, data)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return copy


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_an_import_that_fails_anywhere_leaves_the_target_as_it_was(apps, tmp_path, kind):
    archive = tmp_path / "arena.tar"
    populated_archive(apps, archive)
    target = apps(kind)
    engine = target.extensions["arena.engine"]
    empty = {table.name: [] for table in transfer.tables()}

    # A second vote on a battle that has one, as the archive's last votes row: the votes table is loaded after
    # most others, so a failure there comes when those are already inserted.
    with tarfile.open(archive) as opened:
        manifest = json.loads(opened.extractfile("manifest.json").read())
        lines = gzip.decompress(opened.extractfile("tables/votes.jsonl.gz").read()).splitlines()
    extra = {**json.loads(lines[-1]), "id": 10_000}
    votes = gzip.compress(b"\n".join([*lines, json.dumps(extra).encode()]) + b"\n")

    damaged = _rewritten(archive, "damaged.tar", {"tables/votes.jsonl.gz": votes})
    with pytest.raises(transfer.TransferError, match="SHA-256 does not match"):
        transfer.import_arena(engine, damaged)
    assert table_rows(target) == empty

    entry = next(entry for entry in manifest["tables"] if entry["name"] == "votes")
    entry.update(sha256=hashlib.sha256(votes).hexdigest(), rows=len(lines) + 1)
    refused = _rewritten(
        archive, "refused.tar", {"tables/votes.jsonl.gz": votes, "manifest.json": json.dumps(manifest).encode()}
    )
    with pytest.raises(IntegrityError):
        transfer.import_arena(engine, refused)
    assert table_rows(target) == empty


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_non_empty_target_is_refused_unless_replaced(apps, tmp_path, kind):
    archive = tmp_path / "arena.tar"
    source = populated_archive(apps, archive)
    target = apps(kind)
    with db.new_session(target) as session:
        labs.create_lab(session, OPERATOR, "Someone else")  # a lab, its key and an audit event
    engine = target.extensions["arena.engine"]
    with pytest.raises(transfer.TransferError, match="not empty .*labs: 1 rows.*--replace"):
        transfer.import_arena(engine, archive)
    assert [row["name"] for row in table_rows(target)["labs"]] == ["Someone else"]

    transfer.import_arena(engine, archive, replace=True)
    assert table_rows(target) == table_rows(source)
    # the audit log is append-only again once the replace is done
    with pytest.raises(Exception, match="append-only|audit"):
        with engine.begin() as connection:
            connection.execute(AuditEvent.__table__.delete())


def test_an_archive_at_another_schema_revision_is_refused(apps, tmp_path):
    source = apps("sqlite")
    archive = tmp_path / "arena.tar"
    transfer.export_arena(source.extensions["arena.engine"], archive)
    target = apps("sqlite", migrate=False)
    db.upgrade(settings_of(target).sqlalchemy_url, "0001")
    with pytest.raises(transfer.TransferError, match="archive is at schema revision .* database at 0001"):
        transfer.import_arena(target.extensions["arena.engine"], archive)


def test_the_commands_say_what_they_did_and_fail_in_one_line(apps, tmp_path):
    source = apps("sqlite")
    populate(source)
    archive = tmp_path / "arena.tar"
    target = apps("sqlite", migrate=False)

    def invoke(app, *args, code=0) -> str:
        result = app.test_cli_runner().invoke(args=list(args))
        assert result.exit_code == code and "Traceback" not in result.output, result.output
        return result.output

    assert f"rows of {len(transfer.tables())} tables" in invoke(source, "export", str(archive))
    assert "imported" in invoke(target, "import", str(archive))
    assert invoke(target, "import", str(archive), code=2).startswith("error: the database is not empty")
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all")
    assert "not an arena export" in invoke(target, "import", str(tmp_path / "junk.tar"), "--replace", code=2)
    with db.new_session(target) as session:
        assert session.scalar(select(func.count()).select_from(Vote)) == 36  # the refused imports changed nothing
