"""`arena answers import`: a recorded model's answers, through the labs' own upload (arena.catalog.answers)."""

from __future__ import annotations

from pathlib import Path

import click

from arena.catalog import answers, registry
from arena.catalog.audit import OPERATOR
from arena.cli.common import BAD_INPUT, CommandError, Group, detail_lines, reports_errors, session
from arena.errors import Rejected

answers_cli = Group("answers", help="Recorded answers to the prompt set.")


@answers_cli.command("import")
@click.argument("model_name", metavar="MODEL")
@click.argument("path", metavar="FILE.jsonl", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@reports_errors
def answers_import(model_name: str, path: Path) -> None:
    """Import a recorded model's answers: JSON Lines of {"prompt_id", "answer", "duration_ms"?}, all or none."""
    with session() as s:
        model = registry.model_by_name(s, model_name)
        try:
            count = answers.import_answers(s, OPERATOR, model, path.read_bytes(), file_name=path.name)
        except Rejected as e:
            failed, total = e.details["failed"], e.details["total"]
            raise CommandError(
                f"{path}: nothing imported: {failed} of {total} line(s) failed", BAD_INPUT, detail_lines(e, f"{path}:")
            ) from None
    click.echo(f"imported {count} recorded answer(s) for {model_name!r}")


GROUPS = (answers_cli,)
