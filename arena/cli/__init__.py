"""The operator's commands: `arena ...` (console script) and the same under `flask --app arena ...`.

    arena db upgrade | downgrade [REV] | current                           arena.cli.db
    arena demo load [--if-empty]                                          arena.cli.demo
    arena labs create NAME | list | rotate-key NAME                       arena.cli.labs
    arena models list [--lab NAME] | add-endpoint ... | pause NAME | resume NAME | retire NAME | weight NAME W
                 | identity NAME [--alias A] [--family F] ...             arena.cli.models
    arena sampling show [--json]                                          arena.cli.sampling
    arena answers import MODEL FILE.jsonl                                 arena.cli.answers
    arena battles import FILE [--source NAME]; arena votes export [--out FILE] [--format jsonl|csv]
                                                                          arena.cli.battles
    arena audit list [--lab NAME] [--model ID] [--limit N] [--json]       arena.cli.audit
    arena snapshot [--if-due | --if-none] | list | export V | public-key; arena voters exclude | include | list
                                                                          arena.cli.leaderboard
    arena safety import | list; arena milestones add | list | evaluate; arena board export
                                                                          arena.cli.board
    arena export ARCHIVE | import ARCHIVE [--replace]                     arena.cli.transfer
    arena serve (gunicorn and the builder, supervised); arena builder    arena.cli.serve

Each command parses its arguments and calls the same domain function as the API (arena.catalog, arena.battles,
arena.leaderboard, arena.board), with the actor "operator": what changes labs and models is recorded in the
audit log in the transaction of the change itself.

Every failure is reported as `error: ...` on stderr with exit status 1, or 2 when the input was at fault
(a domain refusal, a bad argument, an unknown name, a file that does not validate); never a traceback.
Imports validate the whole file first and store all of it or nothing.
"""

from __future__ import annotations

import click
from flask import Flask

from arena.app import build_app
from arena.cli import answers, audit, battles, board, db, demo, labs, leaderboard, models, sampling, serve, transfer
from arena.cli.common import BAD_INPUT, FAILURE, CommandError, one_line
from arena.settings import SettingsError

GROUPS = (
    *db.GROUPS,
    *demo.GROUPS,
    *labs.GROUPS,
    *models.GROUPS,
    *sampling.GROUPS,
    *answers.GROUPS,
    *battles.GROUPS,
    *audit.GROUPS,
    *leaderboard.GROUPS,
    *board.GROUPS,
    *transfer.GROUPS,
    *serve.GROUPS,
)


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
        app = build_app()
    except SettingsError as e:  # a bad ARENA_* value: the operator's input, named in one line
        click.echo(f"error: {e}", err=True)
        return BAD_INPUT
    except Exception as e:  # noqa: BLE001 - anything else that stops the start is one line too
        click.echo(f"error: cannot start: {one_line(e)}", err=True)
        return FAILURE
    with app.app_context():
        try:
            result = cli.main(args=argv, prog_name="arena", standalone_mode=False)
        except CommandError as e:
            e.show()
            return e.exit_code
        except click.UsageError as e:
            hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
            click.echo(f"error: {one_line(e.format_message())}{hint}", err=True)
            return e.exit_code
        except click.ClickException as e:
            click.echo(f"error: {one_line(e.format_message())}", err=True)
            return e.exit_code
        except click.exceptions.Abort:
            click.echo("error: aborted", err=True)
            return FAILURE
        finally:
            app.extensions["arena.engine"].dispose()
    return result if isinstance(result, int) else 0
