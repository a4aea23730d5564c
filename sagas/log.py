"""Structured JSON logs with the saga's correlation id on every line.

`bound(saga_id=..., correlation_id=..., step=...)` (or `push`/`pop`) sets the context for
the code that follows; a logging filter copies it onto each record and the JSON formatter
writes it.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pythonjsonlogger.json import JsonFormatter

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


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            setattr(record, key, value)
        return True


def configure_logging(level: str = "INFO", *filters: logging.Filter) -> None:
    """JSON lines on stderr for the root logger; calling it again changes nothing."""
    root = logging.getLogger()
    if any(getattr(h, "_saga_json", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    handler.addFilter(ContextFilter())
    for extra in filters:
        handler.addFilter(extra)
    handler._saga_json = True  # type: ignore[attr-defined]
    root.handlers[:] = [handler]
    root.setLevel(level)
