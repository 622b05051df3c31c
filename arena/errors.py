"""One error type and one JSON error shape for the whole API: {"error": {"code": ..., "message": ...}}."""
from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from sqlalchemy.exc import DBAPIError, OperationalError, TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error a client can act on; `code` is a stable machine-readable name."""

    def __init__(self, status: int, code: str, message: str, *, details: dict | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details
        self.headers = headers  # e.g. Retry-After on a 429


def error_body(code: str, message: str, details: dict | None = None) -> dict:
    error = {"code": code, "message": message}
    if details:
        error["details"] = details
    return {"error": error}


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def init_app(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(error: ApiError):
        return jsonify(error_body(error.code, error.message, error.details)), error.status, error.headers or {}

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException):
        if not _wants_json():
            return error
        code = (error.name or "error").lower().replace(" ", "_")
        return jsonify(error_body(code, error.description or error.name)), error.code

    @app.errorhandler(Exception)
    def _unexpected(error: Exception):
        # Never a stack trace or SQL to a client: the details go to the log only.
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
        log.warning("database unavailable on %s %s: %s", request.method, request.path, one_line(error))
        headers = {"Retry-After": str(DATABASE_RETRY_AFTER_S)}
        if _wants_json():
            return jsonify(error_body("database_unavailable", "the arena's database is unavailable for the "
                                      "moment; try again shortly")), 503, headers
        return "The arena's database is unavailable for the moment; try again shortly.", 503, headers


DATABASE_RETRY_AFTER_S = 2


def one_line(error: BaseException) -> str:
    """A database error as one short log line: the driver's message, without SQLAlchemy's SQL and parameters."""
    return " ".join(str(getattr(error, "orig", None) or error).split())[:300]


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
