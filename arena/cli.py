"""The operator's commands: `arena ...` (console script) and the same under `flask --app arena ...`.

    arena db upgrade | downgrade [REV] | current
    arena demo load [--if-empty]
    arena labs create NAME | list | rotate-key NAME
    arena models list [--lab NAME] | add-endpoint ... | pause NAME | resume NAME | retire NAME | weight NAME W
    arena sampling show [--json]                          the sampling policy, its settings, each model's share
    arena answers import MODEL FILE.jsonl
    arena battles import FILE [--source NAME]
    arena votes export [--out FILE] [--format jsonl|csv]
    arena audit list [--lab NAME] [--model ID] [--limit N] [--json]
    arena export ARCHIVE | import ARCHIVE [--replace]     the whole arena, between databases (arena.transfer)

What these commands change in labs and models (labs create and rotate-key, models add-endpoint, pause, resume,
retire and weight, answers import, battles import) is recorded in the audit log with the actor "operator", in
the transaction of the change itself.

Every failure is reported as `error: ...` on stderr with exit status 1, or 2 when the input was at fault
(a bad argument, an unknown name, a file that does not validate); never a traceback. Imports validate the
whole file first and store all of it or nothing.
"""
from __future__ import annotations

import csv
import functools
import io
import json
import math
import os
import re
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click
from alembic.util.exc import CommandError as AlembicCommandError
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext
from sqlalchemy import insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, aliased

from arena import db, demo, labs
from arena.answer_style import style_counts
from arena.models import Battle, Model, Prompt, RecordedAnswer, Vote

BAD_INPUT, FAILURE = 2, 1


class CommandError(click.ClickException):
    """Printed as `error: <message>` (one line per detail first, if any) on stderr; exit 1, or 2 for bad input."""

    def __init__(self, message: str, exit_code: int = FAILURE, details: list[str] | None = None):
        super().__init__(message)
        self.exit_code, self.details = exit_code, details or []

    def show(self, file=None) -> None:
        for detail in self.details:
            click.echo(f"error: {detail}", err=True)
        click.echo(f"error: {self.format_message()}", err=True)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _database_message(error: SQLAlchemyError) -> str:
    lines = str(getattr(error, "orig", None) or error).strip().splitlines()
    reason = lines[0] if lines else ""
    lowered = reason.lower()
    if "no such table" in lowered or ("relation" in lowered and "does not exist" in lowered):
        return "the database has no arena schema yet; run 'arena db upgrade' first"
    return f"database error: {_one_line(reason) or type(error).__name__}"


def reports_errors(f):
    """Turn every exception of a command into one `error:` line and an exit status (see CommandError)."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except click.ClickException:
            raise
        except (ValueError, LookupError, AlembicCommandError) as e:
            raise CommandError(_one_line(e), BAD_INPUT) from None
        except SQLAlchemyError as e:
            raise CommandError(_database_message(e)) from None
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            raise CommandError(f"{where}{e.strerror or e}") from None
        except Exception as e:  # noqa: BLE001 - an operator gets one line, not a traceback
            raise CommandError(f"unexpected {type(e).__name__}: {_one_line(e)}") from None

    return wrapper


class _Group(AppGroup):
    """A command group whose usage errors are one `error:` line too, also under `flask --app arena`."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CommandError:
            raise
        except click.UsageError as e:
            path = e.ctx.command_path if e.ctx is not None else ctx.command_path
            raise CommandError(f"{_one_line(e.format_message())} (see '{path} --help')", e.exit_code) from None


def _session() -> Session:
    return db.new_session(current_app)


def _table(headers: list[str], rows: list[list]) -> None:
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for display
        return "<database>"


# ------------------------------------------------------------------------------------------------ db

db_cli = _Group("db", help="Schema migrations (Alembic).")


@db_cli.command("upgrade")
@click.argument("revision", default="head")
@reports_errors
def db_upgrade(revision: str) -> None:
    """Apply migrations up to REVISION (default: head)."""
    url = current_app.config["DATABASE_URL"]
    db.upgrade(url, revision)
    click.echo(f"database {_safe_url(url)} is at revision {_current_revision() or 'base'}")


@db_cli.command("downgrade")
@click.argument("revision", default="-1")
@reports_errors
def db_downgrade(revision: str) -> None:
    """Undo migrations down to REVISION (default: -1, one step back; 'base' removes every table)."""
    url = current_app.config["DATABASE_URL"]
    db.downgrade(url, revision)
    click.echo(f"database {_safe_url(url)} is at revision {_current_revision() or 'base (no tables)'}")


@db_cli.command("current")
@reports_errors
def db_current() -> None:
    """Show the database's revision and the newest one in migrations/."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(db.alembic_config(current_app.config["DATABASE_URL"])).get_current_head()
    current = _current_revision()
    state = "up to date" if current == head else "run 'arena db upgrade'"
    click.echo(f"current: {current or 'none (empty database)'}")
    click.echo(f"head: {head} ({state})")


def _current_revision() -> str | None:
    from alembic.migration import MigrationContext

    with current_app.extensions["arena.engine"].connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


# ------------------------------------------------------------------------------------------------ demo

demo_cli = _Group("demo", help="The embedded LLMFAO demo data.")


@demo_cli.command("load")
@click.option("--if-empty", is_flag=True, help="Load only when the database has no model (for start-up scripts).")
@reports_errors
def demo_load(if_empty: bool) -> None:
    """Load the LLMFAO models, prompts, answers and crowd votes (one transaction)."""
    with _session() as session:
        if if_empty and not demo.database_is_empty(session):
            what = "the demo is already loaded" if demo.demo_is_loaded(session) else "the database has models"
            click.echo(f"{what}; nothing loaded")
            return
        started = time.perf_counter()
        counts = demo.load_demo(session)
    click.echo(f"loaded the LLMFAO demo in {time.perf_counter() - started:.1f} s: {counts['models']} models, "
               f"{counts['prompts']} prompts, {counts['answers']} recorded answers, "
               f"{counts['battles']} battles with {counts['votes']} votes")


# ------------------------------------------------------------------------------------------------ labs

labs_cli = _Group("labs", help="Labs and their API keys.")


@labs_cli.command("create")
@click.argument("name")
@reports_errors
def labs_create(name: str) -> None:
    """Create a lab; its API key is printed once, as the last line."""
    with _session() as session:
        lab, key = labs.create_lab(session, name, actor=labs.OPERATOR)
        click.echo(f"created lab {lab.name!r}")
    click.echo("its API key, shown this once (only a hash is stored):")
    click.echo(key)


@labs_cli.command("list")
@reports_errors
def labs_list() -> None:
    """Labs with their active key prefixes and model counts."""
    with _session() as session:
        rows = []
        for lab in labs.list_labs(session):
            active = labs.active_keys(lab)
            rows.append([lab.name, _when(lab.created_at), ", ".join(k.prefix + "…" for k in active) or "-",
                         len(lab.models)])
    if rows:
        _table(["NAME", "CREATED", "ACTIVE KEYS", "MODELS"], rows)
    else:
        click.echo("no labs")


@labs_cli.command("rotate-key")
@click.argument("name")
@reports_errors
def labs_rotate_key(name: str) -> None:
    """Revoke a lab's keys now and print its new key once, as the last line."""
    with _session() as session:
        lab = labs.lab_by_name(session, name)
        revoked = len(labs.active_keys(lab))
        key = labs.rotate_key(session, lab, actor=labs.OPERATOR)
    click.echo(f"revoked {revoked} key(s) of lab {name!r}; the new API key, shown this once:")
    click.echo(key)


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "-"


# ------------------------------------------------------------------------------------------------ models

models_cli = _Group("models", help="The models in the arena.")


@models_cli.command("list")
@click.option("--lab", "lab_name", help="Only this lab's models.")
@reports_errors
def models_list(lab_name: str | None) -> None:
    """Models with organization, kind, status and sampling weight."""
    with _session() as session:
        lab = labs.lab_by_name(session, lab_name) if lab_name else None
        rows = [[m.name, m.organization or "-", m.kind, m.status, f"{m.sampling_weight:g}"]
                for m in labs.list_models(session, lab)]
    if rows:
        _table(["NAME", "ORGANIZATION", "KIND", "STATUS", "WEIGHT"], rows)
    else:
        click.echo("no models")


@models_cli.command("add-endpoint")
@click.option("--name", required=True, help="The model's public name.")
@click.option("--organization", required=True, help="Who made it.")
@click.option("--base-url", required=True, help="OpenAI-compatible base URL, e.g. https://host/v1.")
@click.option("--model", "endpoint_model", required=True, help="The model identifier the endpoint expects.")
@click.option("--api-key", envvar="ARENA_ENDPOINT_API_KEY", show_envvar=True,
              help="The endpoint's key, stored encrypted (the variable keeps it out of shell history).")
@click.option("--lab", "lab_name", help="The lab that owns the model.")
@click.option("--system-prompt", help="A system prompt sent before each conversation.")
@reports_errors
def models_add_endpoint(name, organization, base_url, endpoint_model, api_key, lab_name, system_prompt) -> None:
    """Register an OpenAI-compatible endpoint as a model (it is not called now)."""
    with _session() as session:
        lab = labs.lab_by_name(session, lab_name) if lab_name else None
        model = labs.add_endpoint_model(session, secret_key=current_app.config["SECRET_KEY"], name=name,
                                        organization=organization, base_url=base_url,
                                        endpoint_model=endpoint_model, api_key=api_key, lab=lab,
                                        system_prompt=system_prompt, actor=labs.OPERATOR)
        key_note = "key stored encrypted" if model.endpoint_key_encrypted else "no API key"
        click.echo(f"added endpoint model {model.name!r}: {model.base_url} model {model.endpoint_model!r} "
                   f"({key_note})")


def _status_command(action: str):
    @models_cli.command(action, help=f"{action.capitalize()} a model.")
    @click.argument("name")
    @reports_errors
    def command(name: str) -> None:
        with _session() as session:
            model = labs.change_status(session, labs.model_by_name(session, name), action, actor=labs.OPERATOR)
            click.echo(f"model {model.name!r} is {model.status}")

    return command


models_pause, models_resume, models_retire = (_status_command(a) for a in ("pause", "resume", "retire"))


@models_cli.command("weight")
@click.argument("name")
@click.argument("weight", type=float)
@reports_errors
def models_weight(name: str, weight: float) -> None:
    """Set a model's published sampling weight W >= 0 (pairs are drawn in proportion to w_a * w_b)."""
    with _session() as session:
        model = labs.set_sampling_weight(session, labs.model_by_name(session, name), weight, actor=labs.OPERATOR)
        click.echo(f"model {model.name!r} has sampling weight {model.sampling_weight:g}")


@models_cli.command("identity")
@click.argument("name")
@click.option("--alias", "aliases", multiple=True, help="Add an alias (repeatable).")
@click.option("--family", "families", multiple=True, help="Add a model family, e.g. Llama (repeatable).")
@click.option("--remove-alias", "remove_aliases", multiple=True, help="Remove an alias (repeatable).")
@click.option("--remove-family", "remove_families", multiple=True, help="Remove a family (repeatable).")
@reports_errors
def models_identity(name, aliases, families, remove_aliases, remove_families) -> None:
    """Show or change the names a model's answers must not reveal it by (besides its name and organization).

    The next snapshot re-checks every stored answer against them: votes on answers naming one are left out
    (rule identity_leak), in earlier battles too."""
    from arena import integrity

    with _session() as session:
        model = labs.model_by_name(session, name)
        changed = integrity.set_identity_labels(session, model, add_aliases=aliases, add_families=families,
                                                remove_aliases=remove_aliases, remove_families=remove_families,
                                                actor=labs.OPERATOR, lab_id=model.lab_id)
        session.commit()
        asked = aliases or families or remove_aliases or remove_families
        note = " (unchanged)" if asked and not changed else ""
        click.echo(f"model {model.name!r}: aliases {list(model.aliases or [])}, "
                   f"families {list(model.families or [])}{note}")


# ------------------------------------------------------------------------------------------------ sampling

sampling_cli = _Group("sampling", help="The sampling policy (ARENA_SAMPLING_POLICY): which pair answers a battle.")


@sampling_cli.command("show")
@click.option("--json", "as_json", is_flag=True, help="The same JSON as GET /api/v1/sampling.")
@reports_errors
def sampling_show(as_json: bool) -> None:
    """The policy, its rule and settings, and each active model's weight, counted votes and share of battles."""
    from arena import sampling

    sampling.SamplingSettings.from_config(current_app.config)  # a bad setting: its one line, exit status 2
    with _session() as session:
        published = sampling.published(current_app._get_current_object(), session)
    if as_json:
        click.echo(json.dumps(published, indent=2))
        return
    click.echo(f"policy: {published['policy']} ({published['rule']})")
    click.echo(f"settings: {json.dumps(published['settings'], sort_keys=True)}")
    click.echo(f"fit: snapshot {published['snapshot'] or '(none yet)'} and the votes since, read at "
               f"{published['refreshed_at']}")
    rows = [[m["model"], m["organization"] or "-", m["kind"], f"{m['weight']:g}", m["votes"],
             f"{m['share']:.4f}", ("failing: %(failed)d of %(calls)d calls" % m["failing"]) if m["failing"] else
             ("provisional" if m["provisional"] else "")] for m in published["models"]]
    _table(["model", "organization", "kind", "weight", "votes", "share", "note"], rows)
    click.echo("weights: arena models weight NAME W (0: never drawn)")


# ------------------------------------------------------------------------------------------------ answers

answers_cli = _Group("answers", help="Recorded answers to the prompt set.")


@answers_cli.command("import")
@click.argument("model_name", metavar="MODEL")
@click.argument("path", metavar="FILE.jsonl", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@reports_errors
def answers_import(model_name: str, path: Path) -> None:
    """Import a recorded model's answers: JSON Lines of {"prompt_id", "answer", "duration_ms"?}, all or none."""
    with _session() as session:
        model = labs.model_by_name(session, model_name)
        if model.kind != "recorded":
            raise ValueError(f"model {model.name!r} is an endpoint model; only recorded models take answers")
        rows, problems, lines = _validate_answers(session, model, path)
        if problems:
            raise CommandError(f"{path}: nothing imported: {len(problems)} of {lines} line(s) failed", BAD_INPUT,
                               [f"{path}:{number}: {reason}" for number, reason in problems])
        if not rows:
            raise ValueError(f"{path}: no answers in the file")
        # a bulk insert skips the ORM's listener that counts each answer's style
        session.execute(insert(RecordedAnswer), [{**row, **style_counts(row["text"])} for row in rows])
        labs.record_action(session, "answers.import", actor=labs.OPERATOR, lab_id=model.lab_id, model_id=model.id,
                           details={"name": model.name, "answers": len(rows), "file": path.name})
        session.commit()
    click.echo(f"imported {len(rows)} recorded answer(s) for {model_name!r}")


def _validate_answers(session: Session, model: Model, path: Path) -> tuple[list[dict], list[tuple[int, str]], int]:
    prompts = set(session.scalars(select(Prompt.id)))
    answered = set(session.scalars(select(RecordedAnswer.prompt_id).where(RecordedAnswer.model_id == model.id)))
    seen: dict[int, int] = {}
    rows, problems, count = [], [], 0
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            count += 1
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append((number, f"not valid JSON ({e.msg})"))
                continue
            reason = labs.answer_problem(record, prompts, answered, seen)
            if reason:
                problems.append((number, reason))
                continue
            seen[record["prompt_id"]] = number
            rows.append({"model_id": model.id, "prompt_id": record["prompt_id"], "text": record["answer"],
                         "duration_ms": None if record.get("duration_ms") is None else float(record["duration_ms"])})
    return rows, problems, count


# ------------------------------------------------------------------------------------------------ battles

battles_cli = _Group("battles", help="Historical battles.")
_SOURCE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")
# Outcome code (ranking.data: A_WINS, B_WINS, TIE, TIE_BOTHBAD) -> Vote.winner.
_WINNER_OF_OUTCOME = ("a", "b", "tie", "bothbad")
_VOTER_MAX = 64


@battles_cli.command("import")
@click.argument("path", metavar="FILE", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--source", default="import", show_default=True,
              help="Name recorded with each battle and vote, and prefixed to voters (not 'arena').")
@reports_errors
def battles_import(path: Path, source: str) -> None:
    """Import a FastChat battle file (JSON, JSON Lines or CSV) as voted battles of existing models."""
    from ranking.data import read_battles

    if not _SOURCE_NAME.fullmatch(source) or source == "arena":
        raise ValueError(f"--source {source!r} must be 1-32 of a-z 0-9 _ . - and not 'arena' "
                         "(which marks votes cast here)")
    battles = read_battles(path)  # BattleFileError (a ValueError) names the file and line
    with _session() as session:
        # added first, so that import_battles' one commit stores it with the battles (or neither)
        labs.record_action(session, "battles.import", actor=labs.OPERATOR,
                           details={"file": path.name, "sha256": battles.sha256, "source": source,
                                    "battles": len(battles.outcome)})
        count = import_battles(session, battles, source=source)
    click.echo(f"imported {count} battle(s) with their votes from {path} as source {source!r}")


def import_battles(session: Session, battles, *, source: str) -> int:
    """Store encoded battles (ranking.data.Battles) as voted battles with their votes, in one transaction.

    Battle ids derive from the file's sha256 and the row, so importing the same file twice is refused.
    A row's tstamp becomes its battle's and vote's time; rows without one get the import time (kept in file
    order by microsecond steps). Categories are not stored: a battle's category is its prompt's, and these
    battles have no prompt.
    """
    ids = dict(session.execute(select(Model.name, Model.id).where(Model.name.in_(battles.models))).all())
    unknown = [name for name in battles.models if name not in ids]
    if unknown:
        raise LookupError(f"unknown model(s), add them first: {', '.join(unknown)}")
    a, b, outcome = battles.model_a.tolist(), battles.model_b.tolist(), battles.outcome.tolist()
    same = [i + 1 for i in range(len(a)) if a[i] == b[i]]
    if same:
        raise ValueError(f"battle(s) {_first(same)} put a model against itself")
    voters = [f"{source}:{v}" for v in battles.voters]
    too_long = [v for v in voters if len(v) > _VOTER_MAX]
    if too_long:
        raise ValueError(f"voter name(s) longer than {_VOTER_MAX - len(source) - 1} characters: {too_long[0]!r}")
    prefix = f"imp-{battles.sha256[:12]}-" if battles.sha256 else f"imp-{os.urandom(6).hex()}-"
    if session.scalars(select(Battle.id).where(Battle.id.startswith(prefix)).limit(1)).first() is not None:
        raise ValueError("this battle file was already imported (its battles exist)")
    now = datetime.now(timezone.utc)
    voter_codes, stamps = battles.voter.tolist(), battles.tstamp.tolist()
    battle_rows, vote_rows = [], []
    for i in range(len(a)):
        try:
            at = (datetime.fromtimestamp(stamps[i], timezone.utc) if math.isfinite(stamps[i])
                  else now + timedelta(microseconds=i))
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"battle {i + 1}: tstamp {stamps[i]} is out of range") from None
        battle_id = f"{prefix}{i + 1}"
        voter = voters[voter_codes[i]] if voter_codes[i] >= 0 else None
        battle_rows.append({"id": battle_id, "prompt_id": None, "prompt_text": "",
                            "model_a_id": ids[battles.models[a[i]]], "model_b_id": ids[battles.models[b[i]]],
                            "state": "voted", "flagged": False, "voter": voter, "source": source,
                            "sampling_policy": "imported", "created_at": at})
        vote_rows.append({"battle_id": battle_id, "winner": _WINNER_OF_OUTCOME[outcome[i]], "voter": voter,
                          "source": source, "created_at": at})
    try:
        session.execute(insert(Battle), battle_rows)
        session.execute(insert(Vote), vote_rows)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return len(battle_rows)


def _first(numbers: list[int], shown: int = 10) -> str:
    text = ", ".join(map(str, numbers[:shown]))
    return text + (f" and {len(numbers) - shown} more" if len(numbers) > shown else "")


# ------------------------------------------------------------------------------------------------ votes

votes_cli = _Group("votes", help="The votes as cast.")
_FASTCHAT_WINNER = {"a": "model_a", "b": "model_b", "tie": "tie", "bothbad": "tie (bothbad)"}
EXPORT_FIELDS = ("model_a", "model_b", "winner", "tstamp", "judge", "category", "battle_id", "source", "flagged",
                 "state")


@votes_cli.command("export")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path),
              help="File to write (default: standard output). Written whole or not at all.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]),
              help="JSON Lines (default) or CSV; a --out name ending in .csv picks CSV.")
@reports_errors
def votes_export(out: Path | None, fmt: str | None) -> None:
    """Every vote with its battle, oldest first, in FastChat battle format (readable by `python -m ranking`)."""
    fmt = fmt or ("csv" if out is not None and out.suffix.lower() == ".csv" else "jsonl")
    with _session() as session:
        if out is None:
            try:
                export_votes(session, sys.stdout, fmt)
                sys.stdout.flush()
            except BrokenPipeError:  # the reader stopped early (`| head`): not an error
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return
        else:
            count = _write_atomically(out, lambda f: export_votes(session, f, fmt))
    if out is not None:
        click.echo(f"wrote {count} vote(s) to {out}")


def _write_atomically(path: Path, write) -> int:
    handle, temporary = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as f:
            count = write(f)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    return count


def vote_records(session: Session):
    """One FastChat-format dict per vote (plus battle_id, source, flagged, state), ordered by vote time."""
    model_a, model_b = aliased(Model), aliased(Model)
    statement = (select(model_a.name, model_b.name, Vote.winner, Vote.created_at, Vote.voter, Prompt.category,
                        Battle.id, Battle.source, Battle.flagged, Battle.state)
                 .join(Battle, Vote.battle_id == Battle.id)
                 .join(model_a, Battle.model_a_id == model_a.id)
                 .join(model_b, Battle.model_b_id == model_b.id)
                 .outerjoin(Prompt, Battle.prompt_id == Prompt.id)
                 .order_by(Vote.created_at, Vote.id)
                 .execution_options(yield_per=5000))
    for a, b, winner, at, voter, category, battle_id, source, flagged, state in session.execute(statement):
        if at.tzinfo is None:  # SQLite keeps no zone; everything is stored in UTC
            at = at.replace(tzinfo=timezone.utc)
        record = {"model_a": a, "model_b": b, "winner": _FASTCHAT_WINNER[winner], "tstamp": at.timestamp()}
        if voter:
            record["judge"] = voter
        if category:
            record["category"] = category
        record.update(battle_id=battle_id, source=source, flagged=bool(flagged), state=state)
        yield record


def export_votes(session: Session, out: io.TextIOBase, fmt: str) -> int:
    count = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS, lineterminator="\n")
        writer.writeheader()
        for record in vote_records(session):
            record["flagged"] = "true" if record["flagged"] else "false"
            writer.writerow(record)
            count += 1
    else:
        for record in vote_records(session):
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


# ------------------------------------------------------------------------------------------------ audit

audit_cli = _Group("audit", help="The append-only log of lab and operator actions.")


@audit_cli.command("list")
@click.option("--lab", "lab_name", help="Only actions of this lab or on it (the operator's included).")
@click.option("--model", "model_id", type=int, help="Only actions on this model id.")
@click.option("--limit", type=click.IntRange(1, 100000), default=50, show_default=True, help="Newest N events.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line instead of a table.")
@reports_errors
def audit_list(lab_name: str | None, model_id: int | None, limit: int, as_json: bool) -> None:
    """Lab and operator actions, newest first: when, who (a lab and its key, or the operator), on which lab,
    what, on which model, details."""
    from arena.lab_actions import audit_events

    with _session() as session:
        lab = labs.lab_by_name(session, lab_name) if lab_name else None
        events = audit_events(session, lab=lab, model_id=model_id, limit=limit)
        lab_names = {known.id: known.name for known in labs.list_labs(session)}
    if as_json:
        for e in events:
            at = e.created_at if e.created_at.tzinfo else e.created_at.replace(tzinfo=timezone.utc)
            click.echo(json.dumps({"id": e.id, "at": at.isoformat(), "actor": e.actor,
                                   "lab": lab_names.get(e.lab_id), "key": e.key_prefix, "action": e.action,
                                   "model_id": e.model_id, "details": e.details}, ensure_ascii=False))
        return
    rows = [[_when(e.created_at), e.actor, (e.key_prefix + "…") if e.key_prefix else "-",
             lab_names.get(e.lab_id, "-"), e.action, e.model_id if e.model_id is not None else "-",
             json.dumps(e.details, ensure_ascii=False)]
            for e in events]
    if rows:
        _table(["WHEN (UTC)", "ACTOR", "KEY", "LAB", "ACTION", "MODEL", "DETAILS"], rows)
    else:
        click.echo("no audit events")


# ------------------------------------------------------------------------------------------------ whole arena

@click.command("export")
@with_appcontext
@click.argument("archive", type=click.Path(dir_okay=False, path_type=Path))
@reports_errors
def arena_export(archive: Path) -> None:
    """Write the whole arena (every table, ids kept) to ARCHIVE, a tar that `arena import` loads (arena.transfer)."""
    from arena import transfer

    result = transfer.export_arena(current_app.extensions["arena.engine"], archive)
    click.echo(f"wrote {result.rows} rows of {len(result.tables)} tables (schema revision {result.schema_revision}) "
               f"to {archive} in {result.seconds:.1f} s")


@click.command("import")
@with_appcontext
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="Delete everything in the database first (same transaction).")
@reports_errors
def arena_import(archive: Path, replace: bool) -> None:
    """Load an `arena export` archive into an empty database, ids kept, all of it or nothing."""
    from arena import transfer

    from alembic.script import ScriptDirectory

    result = transfer.import_arena(current_app.extensions["arena.engine"], archive, replace=replace)
    head = ScriptDirectory.from_config(db.alembic_config(current_app.config["DATABASE_URL"])).get_current_head()
    click.echo(f"imported {result.rows} rows of {len(result.tables)} tables (schema revision "
               f"{result.schema_revision}) in {result.seconds:.1f} s"
               + ("" if result.schema_revision == head else f"; run 'arena db upgrade' to bring it to {head}"))


# ------------------------------------------------------------------------------------------------ wiring

if __name__ == "__main__":
    # `python -m arena.cli`: run the module as the package knows it. Run as __main__ this file is a second copy
    # of arena.cli, and the command modules below import arena.cli's helpers, which would import them again
    # half-initialised.
    from arena.cli import main as _main

    sys.exit(_main())

from arena import leaderboard_cli  # noqa: E402  (its commands use the helpers above)
from arena import board_cli  # noqa: E402  (the milestone board's commands, on the same helpers)

GROUPS = (db_cli, demo_cli, labs_cli, models_cli, sampling_cli, answers_cli, battles_cli, votes_cli, audit_cli,
          *leaderboard_cli.GROUPS, *board_cli.GROUPS, arena_export, arena_import)


@click.group("arena", help="Operate an arena: database, demo data, labs, models, imports and exports.")
def cli() -> None:
    pass


for _group in GROUPS:
    cli.add_command(_group)


def register_commands(app: Flask) -> None:
    """The same commands under `flask --app arena ...`."""
    for group in GROUPS:
        app.cli.add_command(group)


def main(argv: list[str] | None = None) -> int:
    """The `arena` console script: build the app from the environment (ARENA_*) and run one command."""
    try:
        from arena import create_app

        app = create_app()
    except Exception as e:  # noqa: BLE001 - a bad setting is one line too
        click.echo(f"error: cannot start: {_one_line(e)}", err=True)
        return FAILURE
    with app.app_context():
        try:
            result = cli.main(args=argv, prog_name="arena", standalone_mode=False)
        except CommandError as e:
            e.show()
            return e.exit_code
        except click.UsageError as e:
            hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
            click.echo(f"error: {_one_line(e.format_message())}{hint}", err=True)
            return e.exit_code
        except click.ClickException as e:
            click.echo(f"error: {_one_line(e.format_message())}", err=True)
            return e.exit_code
        except click.exceptions.Abort:
            click.echo("error: aborted", err=True)
            return FAILURE
        finally:
            app.extensions["arena.engine"].dispose()
    return result if isinstance(result, int) else 0

