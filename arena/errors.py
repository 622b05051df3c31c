"""One error type and one JSON error shape for the whole API: {"error": {"code": ..., "message": ...}}."""
from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error a client can act on; `code` is a stable machine-readable name."""

    def __init__(self, status: int, code: str, message: str, *, details: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


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
        return jsonify(error_body(error.code, error.message, error.details)), error.status

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
