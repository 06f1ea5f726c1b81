"""Structured JSON logs that cannot carry patient data or tokens.

Only fields on an allow-list are written: a log call that passes anything else
in `extra` simply loses it. Messages are fixed strings chosen by the code, never
built from request content.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

ALLOWED_FIELDS = (
    "hookInstance",
    "service",
    "path",
    "method",
    "status",
    "duration_ms",
    "sources",
    "resources",
    "gaps",
    "cards",
    "stored",
    "error_type",
    "resource_type",
    "problem",  # a trial file's lint message: file, line, criterion and fix; never patient data
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.msg if isinstance(record.msg, str) else "log",
        }
        for key in ALLOWED_FIELDS:
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info and record.exc_info[0] is not None:
            out["error_type"] = record.exc_info[0].__name__  # never the message: it may quote input
        return json.dumps(out, default=str)


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("trial_matcher")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


class ServerFormatter(JsonFormatter):
    """uvicorn's own lines (start-up, addresses, pids, shutdown) as the same JSON, with their arguments: uvicorn
    builds them from its configuration, never from a request (a bad request is "Invalid HTTP request received."
    alone); an exception keeps only its type, as above."""

    def format(self, record: logging.LogRecord) -> str:
        line = json.loads(super().format(record))
        line["msg"] = record.getMessage() if isinstance(record.msg, str) else "log"
        return json.dumps(line, default=str)


def server_log_config(level: str = "INFO") -> dict:
    """uvicorn's log configuration: its own loggers write JSON lines to stderr like the service's, so a log
    collector reads one format (uvicorn's default wrote plain text lines). Its access log stays off: the
    service logs requests itself, without query strings."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.ServerFormatter"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn.access": {"handlers": [], "propagate": False},
        },
    }
