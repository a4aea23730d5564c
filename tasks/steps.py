"""The four tasks of a saga: a step, a compensation, and the errback of each chain.

A task is a thin wrapper: it calls the engine and turns its answer into Celery terms
(continue, stop the chain, retry later). Errbacks run inline in the worker that ran the
failed task: they only record the failure and enqueue the compensation. Every task takes
(saga_id, step index, correlation id); `tasks.runtime` binds them to the log context.
"""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sagas.engine import Continue, Outcome, Retry
from sagas.errors import CompensationFailed, StepFailed
from tasks.runtime import engine

# Redis unreachable mid-task: retry the whole execution later (the step is idempotent).
# default_retry_delay is what `task_retry_on_worker_lost` waits after a killed worker before
# the re-run (Celery's default is 180 s); our own retries always pass a countdown.
INFRA_RETRY: dict[str, Any] = {
    "default_retry_delay": 1,
    "autoretry_for": (RedisConnectionError, RedisTimeoutError),
    "retry_backoff": 1,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 100,
}


def _follow(task: Task, outcome: Outcome) -> None:
    if isinstance(outcome, Retry):
        raise task.retry(countdown=outcome.countdown, max_retries=None)
    if not isinstance(outcome, Continue):
        task.request.chain = None  # stop the rest of the chain (celery/celery#3550)


@shared_task(bind=True, name="saga.step", throws=(StepFailed,), **INFRA_RETRY)
def run_step(self: Task, saga_id: str, index: int, correlation_id: str) -> None:
    _follow(self, engine().run_step(saga_id, index, self.request.id))


@shared_task(bind=True, name="saga.compensation", throws=(CompensationFailed,), **INFRA_RETRY)
def run_compensation(self: Task, saga_id: str, index: int, correlation_id: str) -> None:
    _follow(self, engine().run_compensation(saga_id, index, self.request.id))


@shared_task(name="saga.step_error")
def on_step_error(request: Any, exc: BaseException, traceback: Any) -> None:
    saga_id, index, correlation_id = request.args
    engine().step_failed(saga_id, int(index), request.id, correlation_id, exc)


@shared_task(name="saga.compensation_error")
def on_compensation_error(request: Any, exc: BaseException, traceback: Any) -> None:
    saga_id, index, _ = request.args
    engine().compensation_failed(saga_id, int(index), request.id, exc)
