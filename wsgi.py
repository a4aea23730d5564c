"""Process entry points: `gunicorn wsgi:app` (the API) and `celery -A wsgi:celery_app`.

`app` is built on first access, so a Celery worker importing this module for `celery_app`
does not build the API (nor need its API keys).
"""

from __future__ import annotations

from typing import Any

import tasks.runtime
from tasks import create_celery_app

celery_app = create_celery_app()


def __getattr__(name: str) -> Any:
    if name == "app":
        from app import create_app
        from sagas.settings import Settings

        # The API enqueues the steps: its Celery messages carry the trace too (a gunicorn
        # worker builds the app after the fork, so the exporter's thread is its own).
        tasks.runtime.start_tracing("saga-api")
        try:
            api = create_app(engine=tasks.runtime.build_engine(Settings.from_env()))
        except AttributeError as exc:  # gunicorn would report it as "no attribute 'app'"
            raise RuntimeError(f"cannot build the API: {exc!r}") from exc
        globals()["app"] = api
        return api
    raise AttributeError(name)
