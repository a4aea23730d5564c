"""Thin Celery tasks over the engine in `sagas/`: decode ids, call the engine, let Celery
handle retries and acks. `create_celery_app()` builds the Celery app from `celeryconfig`."""

from __future__ import annotations

from celery import Celery


def create_celery_app() -> Celery:
    app = Celery("saga_orchestrator")
    app.config_from_object("celeryconfig")
    app.set_default()
    return app
