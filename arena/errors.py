"""The arena's one error dialect, and the one place that turns it into HTTP answers and command-line lines.

Domain code (arena.battles, arena.catalog, arena.leaderboard, arena.board, arena.egress) raises the errors below:
each has a stable machine-readable `code`, a `message` for a person, and optionally `details` (per field or per
line). It knows nothing of HTTP. This module alone maps each kind to its HTTP status and the one JSON body,
{"error": {"code", "message", "details"?}}, and the command line prints the same error as one `error:` line with
exit status 2 (arena.cli.common).
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from arena import metrics

log = logging.getLogger(__name__)


class ArenaError(Exception):
    """A refusal a client or operator can act on. Subclasses say which kind; `code` says exactly what."""

    def __init__(self, code: str, message: str, *, details: dict | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.code, self.message, self.details, self.retry_after = code, message, details, retry_after


class BadRequest(ArenaError):
    """The input is malformed or breaks a rule of its own (a bad field, a missing part, a bad setting)."""


class Refused(ArenaError):
    """Well-formed, but not allowed for this caller (a failed vote proof, a write from another site)."""


class NotFound(ArenaError):
    """No such thing, or one the caller may not see (another lab's model answers exactly like a missing one)."""


class Conflict(ArenaError):
    """The request contradicts the current state (already voted, a name taken, a retired model)."""


class TooLarge(ArenaError):
    """The input is larger than the arena takes."""


class Rejected(ArenaError):
    """Checked and refused on its content: an endpoint that failed its check, an upload with bad lines."""


class RateLimited(ArenaError):
    """Over a rate limit; `retry_after` says in how many seconds to try again."""


class Unavailable(ArenaError):
    """The arena cannot serve this now (not enough models, a setting that stops new battles)."""


HTTP_STATUS: dict[type[ArenaError], int] = {
    BadRequest: 400,
    Refused: 403,
    NotFound: 404,
    Conflict: 409,
    TooLarge: 413,
    Rejected: 422,
    RateLimited: 429,
    Unavailable: 503,
}


def http_status(error: ArenaError) -> int:
    """The HTTP status of a domain error: its kind's, looked up along its class's ancestry."""
    for kind in type(error).__mro__:
        if kind in HTTP_STATUS:
            return HTTP_STATUS[kind]
    return 400


def error_body(code: str, message: str, details: dict | None = None) -> dict:
    error = {"code": code, "message": message}
    if details:
        error["details"] = details
    return {"error": error}


def one_line(error: BaseException) -> str:
    """An error as one short line: a database error's driver message without SQLAlchemy's SQL and parameters,
    anything else with its whitespace collapsed."""
    return " ".join(str(getattr(error, "orig", None) or error).split())[:300]


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def init_app(app: Flask) -> None:
    @app.errorhandler(ArenaError)
    def _domain_error(error: ArenaError):
        headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else {}
        return jsonify(error_body(error.code, error.message, error.details)), http_status(error), headers

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException):
        if not _wants_json():
            return error
        return jsonify(error_body(http_error_code(error), error.description or error.name)), error.code

    @app.errorhandler(Exception)
    def _unexpected(error: Exception):
        # Never a stack trace or SQL to a client: the details go to the log only.
        if isinstance(error, (DBAPIError, PoolTimeout)):
            metrics.DATABASE_ERRORS.labels("other").inc()
        log.exception("unhandled error on %s %s", request.method, request.path)
        if _wants_json():
            return jsonify(error_body("internal_error", "something went wrong on our side")), 500
        return "Something went wrong on our side.", 500

    @app.errorhandler(DBAPIError)
    @app.errorhandler(PoolTimeout)
    def _database_error(error: Exception):
        if not database_unavailable(error):
            return _unexpected(error)
        # One line, not a traceback: while the database is away every request lands here.
        metrics.DATABASE_ERRORS.labels("unavailable").inc()
        log.warning("database unavailable on %s %s: %s", request.method, request.path, one_line(error))
        headers = {"Retry-After": str(DATABASE_RETRY_AFTER_S)}
        if _wants_json():
            return (
                jsonify(
                    error_body(
                        "database_unavailable", "the arena's database is unavailable for the moment; try again shortly"
                    )
                ),
                503,
                headers,
            )
        return "The arena's database is unavailable for the moment; try again shortly.", 503, headers


def http_error_code(error: HTTPException) -> str:
    """werkzeug's HTTP errors (404 for an unknown route, 413 over the body limit) as an error code."""
    return (error.name or "error").lower().replace(" ", "_")


DATABASE_RETRY_AFTER_S = 2


def database_unavailable(error: BaseException) -> bool:
    """Whether a database error means "not reachable or overloaded right now" (503) rather than a bug (500).

    A lost connection (server restarted, network cut: SQLAlchemy marks it invalidated and the pool refills
    after), a refused new connection, a pool with no free connection within its timeout, and SQLite's locked
    or unopenable file. SQLite also raises OperationalError for a missing table or bad SQL: those stay 500s.
    """
    if isinstance(error, PoolTimeout):
        return True
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    if not isinstance(error, OperationalError):
        return False
    message = str(error.orig).lower()
    return not any(bug in message for bug in ("no such table", "no such column", "syntax error"))
