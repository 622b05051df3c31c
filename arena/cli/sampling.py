"""`arena sampling show`: the published sampling policy (arena.leaderboard.sampling)."""

from __future__ import annotations

import json

import click
from flask import current_app

from arena.cli.common import Group, reports_errors, session, table
from arena.leaderboard import sampling

sampling_cli = Group("sampling", help="The sampling policy (ARENA_SAMPLING_POLICY): which pair answers a battle.")


@sampling_cli.command("show")
@click.option("--json", "as_json", is_flag=True, help="The same JSON as GET /api/v1/sampling.")
@reports_errors
def sampling_show(as_json: bool) -> None:
    """The policy, its rule and settings, and each active model's weight, counted votes and share of battles."""
    with session() as s:
        published = sampling.published(current_app._get_current_object(), s)
    if as_json:
        click.echo(json.dumps(published, indent=2))
        return
    click.echo(f"policy: {published['policy']} ({published['rule']})")
    click.echo(f"settings: {json.dumps(published['settings'], sort_keys=True)}")
    click.echo(
        f"fit: snapshot {published['snapshot'] or '(none yet)'} and the votes since, read at "
        f"{published['refreshed_at']}"
    )
    rows = [
        [
            m["model"],
            m["organization"] or "-",
            m["kind"],
            f"{m['weight']:g}",
            m["votes"],
            f"{m['share']:.4f}",
            ("failing: %(failed)d of %(calls)d calls" % m["failing"])
            if m["failing"]
            else ("provisional" if m["provisional"] else ""),
        ]
        for m in published["models"]
    ]
    table(["model", "organization", "kind", "weight", "votes", "share", "note"], rows)
    click.echo("weights: arena models weight NAME W (0: never drawn)")


GROUPS = (sampling_cli,)
