"""`arena labs`: labs and their API keys, through the same functions as the labs' API (arena.catalog.labs)."""

from __future__ import annotations

import click

from arena.catalog import labs
from arena.catalog.audit import OPERATOR
from arena.cli.common import Group, reports_errors, session, table, when

labs_cli = Group("labs", help="Labs and their API keys.")


@labs_cli.command("create")
@click.argument("name")
@reports_errors
def labs_create(name: str) -> None:
    """Create a lab; its API key is printed once, as the last line."""
    with session() as s:
        lab, key = labs.create_lab(s, OPERATOR, name)
        click.echo(f"created lab {lab.name!r}")
    click.echo("its API key, shown this once (only a hash is stored):")
    click.echo(key)


@labs_cli.command("list")
@reports_errors
def labs_list() -> None:
    """Labs with their active key prefixes and model counts."""
    with session() as s:
        rows = [
            [
                lab.name,
                when(lab.created_at),
                ", ".join(k.prefix + "…" for k in labs.active_keys(lab)) or "-",
                len(lab.models),
            ]
            for lab in labs.list_labs(s)
        ]
    if rows:
        table(["NAME", "CREATED", "ACTIVE KEYS", "MODELS"], rows)
    else:
        click.echo("no labs")


@labs_cli.command("rotate-key")
@click.argument("name")
@reports_errors
def labs_rotate_key(name: str) -> None:
    """Revoke a lab's keys now and print its new key once, as the last line."""
    with session() as s:
        key, revoked = labs.rotate_key(s, OPERATOR, labs.lab_by_name(s, name))
    click.echo(f"revoked {revoked} key(s) of lab {name!r}; the new API key, shown this once:")
    click.echo(key)


GROUPS = (labs_cli,)
