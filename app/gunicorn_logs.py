"""gunicorn's access and error logs in the project's format (sagas/log.py: JSON lines, or
console lines with SAGA_LOG_FORMAT=console): `logger_class` in gunicorn.conf.py.

An access line's message is gunicorn's `access_log_format`; its fields are added as data
(`method`, `path`, `status`, `duration_ms`, `remote_addr`, `bytes`), and `trace_id` comes
from the response's `traceresponse` header (the request's trace, app/tracing.py), since
gunicorn writes the line after the request's context is gone.
"""

from __future__ import annotations

import logging
from typing import Any

from gunicorn.glogging import Logger

from sagas.log import ContextFilter, formatter
from sagas.tracing import trace_id


class AccessFields(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        atoms = record.args
        if not isinstance(atoms, dict) and not hasattr(atoms, "__getitem__"):
            return True
        try:
            get: Any = atoms.__getitem__  # gunicorn's SafeAtoms
            record.method, record.path = get("m"), get("U")
            record.status, record.duration_ms = int(get("s")), get("M")
            record.remote_addr, record.bytes = get("h"), get("B")
            traced = trace_id(get("{traceresponse}o"))
        except (KeyError, TypeError, ValueError):
            return True
        if traced:
            record.trace_id = traced
        return True


class SagaLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger with every handler it sets up writing the project's format."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log, extra in ((self.error_log, None), (self.access_log, AccessFields())):
            for handler in log.handlers:
                handler.setFormatter(formatter())
                handler.filters[:] = [f for f in (extra, ContextFilter()) if f is not None]
