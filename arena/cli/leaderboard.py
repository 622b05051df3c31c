"""`arena snapshot` and `arena voters`: the leaderboard's snapshots and the voters it leaves out.

arena snapshot [--if-due | --if-none]       build, sign and store a new snapshot
arena snapshot list | export VERSION [--dir D] | public-key
arena voters exclude VOTER --reason TEXT | include VOTER --reason TEXT | list
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
from flask import current_app

from arena.cli.common import BAD_INPUT, CommandError, Group, reports_errors, session, table, when
from arena.leaderboard import builds, reading, signing, voters
from arena.settings import current


@click.group(
    "snapshot",
    cls=Group,
    invoke_without_command=True,
    help="Build a new leaderboard snapshot (no subcommand), or list, export and check them.",
)
@click.option("--if-due", is_flag=True, help="Only if ARENA_SNAPSHOT_EVERY_VOTES new counted votes arrived.")
@click.option("--if-none", is_flag=True, help="Only if no snapshot exists yet (for start-up scripts).")
@click.pass_context
@reports_errors
def snapshot_cli(ctx: click.Context, if_due: bool, if_none: bool) -> None:
    if ctx.invoked_subcommand is not None:
        if if_due or if_none:
            raise CommandError("--if-due and --if-none go with 'arena snapshot' alone", BAD_INPUT)
        return
    started = time.perf_counter()
    timings: list = []
    try:
        built = builds.build_snapshot(current_app, only_if_due=if_due, if_none=if_none, timings=timings)
    except ValueError as error:
        raise CommandError(str(error), BAD_INPUT) from None
    if built is None:
        if if_none or if_due:
            click.echo(
                "nothing to do: "
                + ("a snapshot exists already" if if_none else "not enough new counted votes since the newest snapshot")
            )
        else:
            click.echo("another snapshot is being built right now; nothing started")
        return
    document = reading.published_document(built)
    votes = document["votes"]
    click.echo(
        f"snapshot {built.version}: {votes['counted']} counted votes, "
        f"{votes['considered'] - votes['counted']} excluded, "
        f"{len(document['boards']['overall']['models'])} rated models, "
        f"{len(document['boards']['categories'])} categories"
        f"{', style-controlled board' if document['boards']['style'] else ''}; "
        f"built in {time.perf_counter() - started:.1f} s"
    )
    click.echo(f"battle file sha256 {built.battle_file_sha256}; signed with key {built.key_id}")


@snapshot_cli.command("list")
@reports_errors
def snapshot_list() -> None:
    """Every snapshot, newest first."""
    with session() as s:
        rows = [
            [
                row.version,
                when(row.created_at),
                row.votes_counted,
                row.votes_excluded,
                row.battle_file_sha256[:16] + "…",
                row.code_version,
            ]
            for row in s.execute(reading.snapshot_index())
        ]
    if rows:
        table(["VERSION", "CREATED (UTC)", "COUNTED", "EXCLUDED", "BATTLE FILE", "CODE"], rows)
    else:
        click.echo("no snapshots yet; build one with 'arena snapshot'")


@snapshot_cli.command("export")
@click.argument("version", type=int)
@click.option(
    "--dir",
    "folder",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where to write snapshot-V.json, snapshot-V-battles.jsonl and snapshot-V-votes.jsonl.",
)
@reports_errors
def snapshot_export(version: int, folder: str) -> None:
    """Write a snapshot's signed document and both of its files, ready for `python -m ranking verify`."""
    with session() as s:
        stored = reading.get_snapshot(s, version)
        if stored is None:
            raise CommandError(f"there is no snapshot {version}", BAD_INPUT)
        files = {kind: reading.snapshot_file(s, version, kind) for kind in ("battles", "votes")}
        document = reading.published_document(stored)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"snapshot-{version}.json").write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")
    for kind, data in files.items():
        (out / f"snapshot-{version}-{kind}.jsonl").write_bytes(data)
    click.echo(f"wrote {out / f'snapshot-{version}.json'} and its battle and vote files; check them with:")
    click.echo(
        f"python -m ranking verify {out / f'snapshot-{version}.json'} "
        f"{out / f'snapshot-{version}-battles.jsonl'} --public-key PUBLIC_KEY.pem"
    )


@snapshot_cli.command("public-key")
@reports_errors
def snapshot_public_key() -> None:
    """Print the PEM public key that signs snapshots (the one served at /api/v1/leaderboard/public-key)."""
    click.echo(signing.public_key_pem(current()), nl=False)


# ------------------------------------------------------------------------------------------------ voters

voters_cli = Group("voters", help="Voters whose votes the leaderboard leaves out (nothing is deleted).")


@voters_cli.command("exclude")
@click.argument("voter")
@click.option("--reason", required=True, help="Why; published with every snapshot's vote file.")
@reports_errors
def voters_exclude(voter: str, reason: str) -> None:
    """Leave VOTER's votes out of the next snapshots (VOTER: the id, or the pseudonym of a vote file)."""
    with session() as s:
        resolved = voters.set_voter_exclusion(s, current().secret_key, voter, reason, lifted=False)
    click.echo(f"voter {resolved} excluded from the next snapshot on")


@voters_cli.command("include")
@click.argument("voter")
@click.option("--reason", required=True, help="Why the exclusion is lifted.")
@reports_errors
def voters_include(voter: str, reason: str) -> None:
    """Lift an exclusion: VOTER's votes count again from the next snapshot on."""
    with session() as s:
        resolved = voters.set_voter_exclusion(s, current().secret_key, voter, reason, lifted=True)
    click.echo(f"voter {resolved}'s votes count again from the next snapshot on")


@voters_cli.command("list")
@reports_errors
def voters_list() -> None:
    """Every exclusion decision, oldest first."""
    with session() as s:
        rows = [
            [when(row.created_at), row.voter, "lifted" if row.lifted else "excluded", row.actor, row.reason]
            for row in voters.voter_exclusions(s)
        ]
    if rows:
        table(["WHEN (UTC)", "VOTER", "DECISION", "BY", "REASON"], rows)
    else:
        click.echo("no voter has been excluded")


GROUPS = (snapshot_cli, voters_cli)
