"""Process entry points: `celery -A wsgi:celery_app worker` (the API app joins in issue 3)."""

from __future__ import annotations

import tasks.runtime  # noqa: F401  (connects the logging signal before the worker starts)
from tasks import create_celery_app

celery_app = create_celery_app()
