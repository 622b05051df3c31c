"""`arena demo load`: the embedded LLMFAO data set (arena.catalog.demo)."""

from __future__ import annotations

import time

import click

from arena.catalog import demo
from arena.cli.common import Group, reports_errors, session

demo_cli = Group("demo", help="The embedded LLMFAO demo data.")


@demo_cli.command("load")
@click.option("--if-empty", is_flag=True, help="Load only when the database has no model (for start-up scripts).")
@reports_errors
def demo_load(if_empty: bool) -> None:
    """Load the LLMFAO models, prompts, answers and crowd votes (one transaction)."""
    with session() as s:
        if if_empty and not demo.database_is_empty(s):
            what = "the demo is already loaded" if demo.demo_is_loaded(s) else "the database has models"
            click.echo(f"{what}; nothing loaded")
            return
        started = time.perf_counter()
        counts = demo.load_demo(s)
    click.echo(
        f"loaded the LLMFAO demo in {time.perf_counter() - started:.1f} s: {counts['models']} models, "
        f"{counts['prompts']} prompts, {counts['answers']} recorded answers, "
        f"{counts['battles']} battles with {counts['votes']} votes"
    )


GROUPS = (demo_cli,)
