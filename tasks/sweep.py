"""The beat-driven sweep (`SAGA_SWEEP_INTERVAL_SECONDS`): a thin wrapper over the engine.

It runs every few seconds and usually finds nothing to do, so it stays out of the way: its
own queue (`SAGA_SWEEP_QUEUE`, celeryconfig `task_routes`), no task events (`send_events`:
Flower's task list shows sagas, not sweeps), and Celery's INFO lines about it ("received",
"succeeded") are dropped by `tasks.runtime.QuietSweepFilter`. The engine logs a sweep that
acted; every sweep that completes is recorded in Redis (`GET /health/`, component `beat`).
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from tasks.runtime import SWEEP_TASK, engine


@shared_task(name=SWEEP_TASK, ignore_result=True, send_events=False)
def sweep() -> dict[str, Any]:
    return engine().sweep().as_dict()
