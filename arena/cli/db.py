"""`arena db`: schema migrations (Alembic)."""

from __future__ import annotations

import click
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import current_app

from arena import db
from arena.cli.common import Group, reports_errors, safe_url
from arena.settings import current

db_cli = Group("db", help="Schema migrations (Alembic).")


@db_cli.command("upgrade")
@click.argument("revision", default="head")
@reports_errors
def db_upgrade(revision: str) -> None:
    """Apply migrations up to REVISION (default: head)."""
    url = current().sqlalchemy_url
    db.upgrade(url, revision)
    click.echo(f"database {safe_url(url)} is at revision {current_revision() or 'base'}")


@db_cli.command("downgrade")
@click.argument("revision", default="-1")
@reports_errors
def db_downgrade(revision: str) -> None:
    """Undo migrations down to REVISION (default: -1, one step back; 'base' removes every table)."""
    url = current().sqlalchemy_url
    db.downgrade(url, revision)
    click.echo(f"database {safe_url(url)} is at revision {current_revision() or 'base (no tables)'}")


@db_cli.command("current")
@reports_errors
def db_current() -> None:
    """Show the database's revision and the newest one in migrations/."""
    head = head_revision()
    current = current_revision()
    state = "up to date" if current == head else "run 'arena db upgrade'"
    click.echo(f"current: {current or 'none (empty database)'}")
    click.echo(f"head: {head} ({state})")


def head_revision() -> str | None:
    """The newest revision in migrations/."""
    return ScriptDirectory.from_config(db.alembic_config(current().sqlalchemy_url)).get_current_head()


def current_revision() -> str | None:
    with current_app.extensions["arena.engine"].connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


GROUPS = (db_cli,)
