"""`arena audit list`: the append-only log of lab and operator actions (arena.catalog.audit)."""

from __future__ import annotations

import json
from datetime import timezone

import click

from arena.catalog import labs
from arena.catalog.audit import audit_events
from arena.cli.common import Group, reports_errors, session, table, when

audit_cli = Group("audit", help="The append-only log of lab and operator actions.")


@audit_cli.command("list")
@click.option("--lab", "lab_name", help="Only actions of this lab or on it (the operator's included).")
@click.option("--model", "model_id", type=int, help="Only actions on this model id.")
@click.option("--limit", type=click.IntRange(1, 100000), default=50, show_default=True, help="Newest N events.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line instead of a table.")
@reports_errors
def audit_list(lab_name: str | None, model_id: int | None, limit: int, as_json: bool) -> None:
    """Lab and operator actions, newest first: when, who (a lab and its key, or the operator), on which lab,
    what, on which model, details."""
    with session() as s:
        lab = labs.lab_by_name(s, lab_name) if lab_name else None
        events = audit_events(s, lab=lab, model_id=model_id, limit=limit)
        lab_names = {known.id: known.name for known in labs.list_labs(s)}
    if as_json:
        for e in events:
            at = e.created_at if e.created_at.tzinfo else e.created_at.replace(tzinfo=timezone.utc)
            click.echo(
                json.dumps(
                    {
                        "id": e.id,
                        "at": at.isoformat(),
                        "actor": e.actor,
                        "lab": lab_names.get(e.lab_id),
                        "key": e.key_prefix,
                        "action": e.action,
                        "model_id": e.model_id,
                        "details": e.details,
                    },
                    ensure_ascii=False,
                )
            )
        return
    rows = [
        [
            when(e.created_at),
            e.actor,
            (e.key_prefix + "…") if e.key_prefix else "-",
            lab_names.get(e.lab_id, "-"),
            e.action,
            e.model_id if e.model_id is not None else "-",
            json.dumps(e.details, ensure_ascii=False),
        ]
        for e in events
    ]
    if rows:
        table(["WHEN (UTC)", "ACTOR", "KEY", "LAB", "ACTION", "MODEL", "DETAILS"], rows)
    else:
        click.echo("no audit events")


GROUPS = (audit_cli,)
