"""The agent's log lines: UTC timestamps, one line per event, as text for a person or JSON for a log
pipeline (``log-format``).

Text: ``2026-12-02T03:25:13.123Z WARNING agent.reconcile.enforce: message key=value …``. JSON: one
object per line with ``time`` (RFC 3339, UTC, milliseconds), ``level``, ``logger``, ``message``, the
structured fields a call passes (``extra={"device": …, "code": …, "errno": …}``: see
:data:`FIELDS`) and, for an exception, ``exception`` (its type and message) and ``traceback``, in
the same line. Nothing else writes to stderr once logging is configured, so a log pipeline reading
the container's stderr gets only these lines.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Final, TextIO

LEVELS: Final = ("debug", "info", "warning", "error")
FORMATS: Final = ("text", "json")
# Structured fields a log call may pass in ``extra``; each appears in JSON (and as key=value in text).
FIELDS: Final = ("device", "port", "code", "errno", "path", "node", "resource", "stage", "action")


def _timestamp(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in FIELDS if getattr(record, name, None) is not None}


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info and record.exc_info[1] is not None:
            err = record.exc_info[1]
            data["exception"] = f"{type(err).__name__}: {err}"
            data["traceback"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``<UTC time> <LEVEL> <logger>: <message> key=value …`` (a traceback follows on its own lines)."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        line = f"{line} {fields}" if fields else line
        if record.exc_info and record.exc_info[1] is not None:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


def configure(level: str = "info", fmt: str = "text", *, stream: TextIO | None = None) -> None:
    """Send every log record at ``level`` and above to ``stream`` (stderr) in ``fmt``, replacing any
    handler configured before (the CLI calls this once, after the configuration is loaded)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # warnings.warn() from a library becomes a log line, not raw stderr
