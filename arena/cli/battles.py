"""`arena battles import` and `arena votes export`: battle files in and out (arena.battles.imports, .exports)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from arena.battles.exports import export_votes
from arena.battles.imports import import_battles
from arena.catalog.audit import OPERATOR
from arena.cli.common import Group, reports_errors, session, write_atomically

battles_cli = Group("battles", help="Historical battles.")
votes_cli = Group("votes", help="The votes as cast.")


@battles_cli.command("import")
@click.argument("path", metavar="FILE", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--source",
    default="import",
    show_default=True,
    help="Name recorded with each battle and vote, and prefixed to voters (not 'arena').",
)
@reports_errors
def battles_import(path: Path, source: str) -> None:
    """Import a FastChat battle file (JSON, JSON Lines or CSV) as voted battles of existing models."""
    from ranking.data import read_battles  # numpy and the file readers only: no JAX is loaded

    battles = read_battles(path)  # BattleFileError (a ValueError) names the file and line
    with session() as s:
        count = import_battles(s, OPERATOR, battles, source=source, file_name=path.name)
    click.echo(f"imported {count} battle(s) with their votes from {path} as source {source!r}")


@votes_cli.command("export")
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write (default: standard output). Written whole or not at all.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    help="JSON Lines (default) or CSV; a --out name ending in .csv picks CSV.",
)
@reports_errors
def votes_export(out: Path | None, fmt: str | None) -> None:
    """Every vote with its battle, oldest first, in FastChat battle format (readable by `python -m ranking`)."""
    fmt = fmt or ("csv" if out is not None and out.suffix.lower() == ".csv" else "jsonl")
    with session() as s:
        if out is None:
            try:
                export_votes(s, sys.stdout, fmt)
                sys.stdout.flush()
            except BrokenPipeError:  # the reader stopped early (`| head`): not an error
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return
        count = write_atomically(out, lambda f: export_votes(s, f, fmt))
    click.echo(f"wrote {count} vote(s) to {out}")


GROUPS = (battles_cli, votes_cli)
