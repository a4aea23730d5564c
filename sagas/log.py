"""Structured JSON logs with the saga's correlation id on every line.

`bound(saga_id=..., correlation_id=..., step=...)` sets the context for the code inside it;
a logging filter copies the context onto each record, and the JSON formatter writes it.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pythonjsonlogger.json import JsonFormatter

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("saga_log",
                                                                           default={})
FIELDS = ("saga_id", "correlation_id", "step", "phase", "attempt")


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Add `fields` to every log record emitted inside the block."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items()
                                              if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            setattr(record, key, value)
        return True


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr for the root logger; idempotent."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_saga_json", False):
            return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
    ))
    handler.addFilter(ContextFilter())
    handler._saga_json = True  # type: ignore[attr-defined]
    root.handlers[:] = [handler]
    root.setLevel(level)
