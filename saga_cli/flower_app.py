"""The Celery app as Flower loads it (`saga-orchestrator flower`): the project's logging is
set up first (sagas/log.py), so tornado finds a handler on the root logger and adds none of
its own; Flower's lines are then in the same format as every other process's."""

from __future__ import annotations

from sagas.log import configure_logging

configure_logging()

from wsgi import celery_app  # noqa: E402

__all__ = ["celery_app"]
