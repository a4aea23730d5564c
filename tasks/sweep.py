"""The beat-driven sweep (`SAGA_SWEEP_INTERVAL_SECONDS`): a thin wrapper over the engine."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from tasks.runtime import engine


@shared_task(name="saga.sweep", ignore_result=True)
def sweep() -> dict[str, Any]:
    return engine().sweep().as_dict()
