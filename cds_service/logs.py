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
        return json.dumps(self.fields(record), default=str)

    def fields(self, record: logging.LogRecord) -> dict:
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
        return out


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("trial_matcher")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    # the HTTP client's own request lines name the URL ("GET .../Patient/<id>"): never below WARNING, whatever
    # a host process sets up for the root logger (gunicorn, logging.basicConfig at INFO)
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


# uvicorn's lines built from its configuration alone, whose arguments (pids, the address it listens on, counts)
# are written out; any other line keeps its fixed text without them: a refused WebSocket upgrade's line, say,
# carries the request's path and query string
_CONFIG_LINES = (
    "Started server process",
    "Finished server process",
    "Uvicorn running on",
    "Maximum request limit of",
    "Cancel %s running task(s)",
)


class ServerFormatter(JsonFormatter):
    """uvicorn's own lines as the same JSON. Arguments only in _CONFIG_LINES; a socket error (a port in use)
    by its text, which names the address; a traceback handed over as the message (a start-up that failed)
    by its exception type alone, as an exception is above (its text may hold a database URL's password)."""

    def fields(self, record: logging.LogRecord) -> dict:
        line = super().fields(record)
        msg = record.msg
        if isinstance(msg, OSError):
            line["msg"] = f"{type(msg).__name__}: {msg}"
        elif not isinstance(msg, str):
            line["msg"], line["error_type"] = "error", type(msg).__name__
        elif "\n" in msg:  # a formatted traceback: its last line is "Type: text"
            last = msg.strip().splitlines()[-1]
            line["msg"], line["error_type"] = "failed with a traceback", last.split(":", 1)[0].strip()[:100]
        elif msg.startswith(_CONFIG_LINES):
            line["msg"] = record.getMessage()
        return line


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
