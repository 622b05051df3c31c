"""`arena export` and `arena import`: the whole arena between databases (arena.transfer)."""

from __future__ import annotations

from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from arena import transfer
from arena.cli.common import reports_errors
from arena.cli.db import head_revision


@click.command("export")
@with_appcontext
@click.argument("archive", type=click.Path(dir_okay=False, path_type=Path))
@reports_errors
def arena_export(archive: Path) -> None:
    """Write the whole arena (every table, ids kept) to ARCHIVE, a tar that `arena import` loads (arena.transfer)."""
    result = transfer.export_arena(current_app.extensions["arena.engine"], archive)
    click.echo(
        f"wrote {result.rows} rows of {len(result.tables)} tables (schema revision {result.schema_revision}) "
        f"to {archive} in {result.seconds:.1f} s"
    )


@click.command("import")
@with_appcontext
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="Delete everything in the database first (same transaction).")
@reports_errors
def arena_import(archive: Path, replace: bool) -> None:
    """Load an `arena export` archive into an empty database, ids kept, all of it or nothing."""
    result = transfer.import_arena(current_app.extensions["arena.engine"], archive, replace=replace)
    head = head_revision()
    click.echo(
        f"imported {result.rows} rows of {len(result.tables)} tables (schema revision "
        f"{result.schema_revision}) in {result.seconds:.1f} s"
        + ("" if result.schema_revision == head else f"; run 'arena db upgrade' to bring it to {head}")
    )


GROUPS = (arena_export, arena_import)
