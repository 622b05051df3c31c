"""What every command shares: one `error:` line and an exit status for any failure, the command groups, the
database session, tables and atomic writes."""

from __future__ import annotations

import functools
import os
import tempfile
from datetime import datetime
from pathlib import Path

import click
from alembic.util.exc import CommandError as AlembicCommandError
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from arena import db
from arena.errors import ArenaError

BAD_INPUT, FAILURE = 2, 1
MAX_DETAILS = 200  # problems shown one per line; the rest are counted


class CommandError(click.ClickException):
    """Printed as `error: <message>` (one line per detail first, if any) on stderr; exit 1, or 2 for bad input."""

    def __init__(self, message: str, exit_code: int = FAILURE, details: list[str] | None = None):
        super().__init__(message)
        self.exit_code, self.details = exit_code, details or []

    def show(self, file=None) -> None:
        for detail in self.details:
            click.echo(f"error: {detail}", err=True)
        click.echo(f"error: {self.format_message()}", err=True)


def one_line(text) -> str:
    return " ".join(str(text).split())


def _database_message(error: SQLAlchemyError) -> str:
    lines = str(getattr(error, "orig", None) or error).strip().splitlines()
    reason = lines[0] if lines else ""
    lowered = reason.lower()
    if "no such table" in lowered or ("relation" in lowered and "does not exist" in lowered):
        return "the database has no arena schema yet; run 'arena db upgrade' first"
    return f"database error: {one_line(reason) or type(error).__name__}"


def detail_lines(error: ArenaError, prefix: str = "") -> list[str]:
    """A domain error's per-line or per-record problems, one short line each (at most MAX_DETAILS, then a count)."""
    details = error.details or {}
    lines = []
    for item in details.get("lines") or ():
        lines.append(f"{prefix}{item['line']}: {item['error']}")
    for item in details.get("problems") or ():
        lines.append(f"{prefix}{item['where']}: {item['message']}" if isinstance(item, dict) else f"{prefix}{item}")
    if len(lines) > MAX_DETAILS:
        lines = lines[:MAX_DETAILS] + [f"{prefix}... and {len(lines) - MAX_DETAILS} more problem(s)"]
    return [one_line(line) for line in lines]


def reports_errors(f):
    """Turn every exception of a command into one `error:` line and an exit status (see CommandError): the
    domain's refusals (arena.errors) and bad input are status 2, anything else 1; never a traceback."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except click.ClickException:
            raise
        except ArenaError as e:
            raise CommandError(one_line(e.message), BAD_INPUT, detail_lines(e)) from None
        except (ValueError, LookupError, AlembicCommandError) as e:
            raise CommandError(one_line(e), BAD_INPUT) from None
        except SQLAlchemyError as e:
            raise CommandError(_database_message(e)) from None
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            raise CommandError(f"{where}{e.strerror or e}") from None
        except Exception as e:  # noqa: BLE001 - an operator gets one line, not a traceback
            raise CommandError(f"unexpected {type(e).__name__}: {one_line(e)}") from None

    return wrapper


class Group(AppGroup):
    """A command group whose usage errors are one `error:` line too, also under `flask --app arena`."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CommandError:
            raise
        except click.UsageError as e:
            path = e.ctx.command_path if e.ctx is not None else ctx.command_path
            raise CommandError(f"{one_line(e.format_message())} (see '{path} --help')", e.exit_code) from None


def session() -> Session:
    return db.new_session(current_app)


def table(headers: list[str], rows: list[list]) -> None:
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "-"


def safe_url(url: str) -> str:
    """A database URL fit to print: its password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for display
        return "<database>"


def write_atomically(path: Path, write) -> int:
    """Write a file whole or not at all: `write(f)` fills a temporary file beside it, renamed over `path`."""
    handle, temporary = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as f:
            count = write(f)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    return count
