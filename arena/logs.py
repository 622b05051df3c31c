"""Logs: one line per record on stderr, as text or, with ARENA_LOG_FORMAT=json, as one JSON object per line
for a log pipeline (Loki, Elasticsearch, CloudWatch) to index without parsing.

`configure` sets up a process's root logger (the web workers in wsgi.py, the builder, `arena serve`);
`gunicorn_logger` (gunicorn.conf.py's logger_class) gives gunicorn's own error and access logs the same format,
so that every line a deployment writes reads one way. An access record's fields (method, path, status,
duration...) are JSON fields of their own, not one preformatted string.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from gunicorn.glogging import Logger as _GunicornLogger

TEXT_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"
# The attributes every LogRecord has: anything else on a record came from `extra=` and is written as a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
# gunicorn's access-log atoms (gunicorn.glogging.Logger.atoms) and the field each becomes.
_ACCESS_FIELDS = {
    "h": "remote",
    "m": "method",
    "U": "path",
    "q": "query",
    "H": "protocol",
    "s": "status",
    "B": "bytes",
    "L": "duration_s",
    "f": "referer",
    "a": "user_agent",
}


class JsonFormatter(logging.Formatter):
    """A record as one JSON object: time (UTC, ISO 8601), level, logger, message, pid, and the exception's
    traceback as one string field, so a multi-line traceback stays one record."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
        }
        if record.name == "gunicorn.access" and isinstance(record.args, dict):
            entry["message"] = "request"
            atoms = record.args
            entry.update({field: atoms.get(atom) for atom, field in _ACCESS_FIELDS.items() if atom in atoms})
            for field, kind in (("status", int), ("bytes", int), ("duration_s", float)):
                try:
                    entry[field] = kind(entry[field])
                except (KeyError, TypeError, ValueError):  # absent, or gunicorn's "-" for no body
                    pass
        else:
            entry["message"] = record.getMessage()
        entry.update(
            {key: value for key, value in vars(record).items() if key not in _STANDARD and not key.startswith("_")}
        )
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure(log_format: str, *, level: int = logging.INFO) -> None:
    """This process's root logger: one stderr handler in the chosen format (replacing any set before)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def gunicorn_logger(log_format: str) -> type[_GunicornLogger]:
    """gunicorn's logger class (gunicorn.conf.py's logger_class), its error and access logs in `log_format`."""

    class GunicornLogger(_GunicornLogger):
        def setup(self, cfg) -> None:
            super().setup(cfg)
            # The error log as the arena's own lines; the access log keeps gunicorn's text line unless JSON.
            logs = (self.error_log, self.access_log) if log_format == "json" else (self.error_log,)
            for log in logs:
                for handler in log.handlers:
                    handler.setFormatter(formatter(log_format))

    return GunicornLogger
