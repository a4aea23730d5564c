"""One log format for every process: JSON lines with the saga's ids on every line.

Every line has `time` (ISO 8601, UTC), `level`, `logger`, `message`, `saga_id`,
`correlation_id`, `trace_id` and `step` (null when unknown), then whatever the call adds
(`extra=`). `SAGA_LOG_FORMAT=console` writes the same records as readable lines instead
(`make run`). `bound(saga_id=..., correlation_id=..., step=...)` (or `push`/`pop`) sets the
context for the code that follows; a logging filter copies it onto each record, and the
trace id of the span being recorded when the context names none (docs/observability.md).
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from sagas.tracing import current_trace_id

Fields = dict[str, Any]
_context: contextvars.ContextVar[Fields | None] = contextvars.ContextVar("saga_log", default=None)


def push(**fields: Any) -> contextvars.Token[Fields | None]:
    """Add `fields` (None values left out) to every later log record until `pop(token)`."""
    new = {key: value for key, value in fields.items() if value is not None}
    return _context.set({**(_context.get() or {}), **new})


def pop(token: contextvars.Token[Fields | None]) -> None:
    _context.reset(token)


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Add `fields` to every log record emitted inside the block."""
    token = push(**fields)
    try:
        yield
    finally:
        pop(token)


# The fields every line carries, null when unknown.
CONTEXT_FIELDS = ("saga_id", "correlation_id", "trace_id", "step")
FORMATS = ("json", "console")


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            setattr(record, key, value)
        for key in CONTEXT_FIELDS:
            if getattr(record, key, None) is None:
                setattr(record, key, None)
        if record.trace_id is None:  # type: ignore[attr-defined]
            record.trace_id = current_trace_id()
        return True


def _iso_time(record: logging.LogRecord) -> str:
    stamp = datetime.fromtimestamp(record.created, UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonLines(JsonFormatter):
    """The JSON line: the fixed fields first, `extra=` fields after them."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s "
            + " ".join(f"%({f})s" for f in CONTEXT_FIELDS),
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _iso_time(record)


class ConsoleLines(logging.Formatter):
    """A readable line: time, level, logger, message, then the saga's ids that are known."""

    def format(self, record: logging.LogRecord) -> str:
        ids = [
            f"{name}={getattr(record, key)}"
            for key, name in (("saga_id", "saga"), ("step", "step"), ("trace_id", "trace"))
            if getattr(record, key, None)
        ]
        line = f"{_iso_time(record)[11:23]} {record.levelname:<7} {record.name}: "
        line += record.getMessage() + (f"  [{' '.join(ids)}]" if ids else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def log_format() -> str:
    """SAGA_LOG_FORMAT: `json` (default) or `console`."""
    value = (os.environ.get("SAGA_LOG_FORMAT") or "json").strip().lower()
    return value if value in FORMATS else "json"


def formatter() -> logging.Formatter:
    """The formatter of this process's format (SAGA_LOG_FORMAT)."""
    return ConsoleLines() if log_format() == "console" else JsonLines()


def handler(stream: Any = None, *filters: logging.Filter) -> logging.Handler:
    """A stream handler (stderr by default) writing this process's format, with the saga
    context on every record."""
    out = logging.StreamHandler(stream or sys.stderr)
    out.setFormatter(formatter())
    out.addFilter(ContextFilter())
    for extra in filters:
        out.addFilter(extra)
    return out


def configure_logging(level: str = "INFO", *filters: logging.Filter) -> None:
    """This process's format on stderr for the root logger, Python warnings included;
    calling it again changes nothing."""
    root = logging.getLogger()
    if any(getattr(h, "_saga_json", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter())
    handler.addFilter(ContextFilter())
    for extra in filters:
        handler.addFilter(extra)
    handler._saga_json = True  # type: ignore[attr-defined]
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)  # a warning is a line of the same format (py.warnings)
    raw = os.environ.get("SAGA_LOG_FORMAT")
    if raw and raw.strip().lower() not in FORMATS:
        logging.getLogger("sagas.log").warning(
            "SAGA_LOG_FORMAT=%r is neither json nor console: writing json", raw
        )
