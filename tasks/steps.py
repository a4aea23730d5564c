"""The four tasks of a saga: a step, a compensation, and the errback of each chain.

A task is a thin wrapper: it calls the engine and turns its answer into Celery terms
(continue, stop the chain, retry later). When Redis cannot be reached, the engine raises
`StoreUnreachable` with the transition it could not make; the task retries later carrying
it (`pending`), and the engine replays exactly that call (same call id: it acts once).
Errbacks run inline in the worker that ran the failed task; they record only what the
engine did not (a killed execution, a bug). Every task takes (saga_id, step index,
correlation id); `tasks.runtime` binds them to the log context.
"""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sagas.errors import CompensationFailed, StepFailed, StoreUnreachable
from sagas.execution import Continue, Outcome, Retry
from tasks.runtime import engine

# default_retry_delay is what `task_retry_on_worker_lost` waits after a killed worker before
# the re-run (Celery's default is 180 s); our own retries always pass a countdown.
# max_retries bounds the re-runs of a task that kills its worker every time
# (task_retry_on_worker_lost); the step's own attempts are bounded by the store. A Redis
# error outside a transition (reading a definition, publishing a command, admitting the
# next saga) re-runs the task: every transition it repeats is fenced or recognised.
TASK_OPTIONS: dict[str, Any] = {
    "bind": True,
    "default_retry_delay": 1,
    "max_retries": 100,
    "autoretry_for": (RedisConnectionError, RedisTimeoutError),
    "retry_backoff": 1,
    "retry_backoff_max": 60,
    "retry_jitter": True,
}
# Redis unreachable (after the client's own retries): replay the pending call after this.
UNREACHABLE_RETRY_SECONDS = (1, 2, 5, 10, 20, 30)
UNREACHABLE_MAX_RETRIES = 200


def _follow(task: Task, outcome: Outcome) -> None:
    if isinstance(outcome, Retry):
        # The next attempt: nothing pending any more.
        raise task.retry(kwargs={}, countdown=outcome.countdown, max_retries=None)
    if not isinstance(outcome, Continue):
        task.request.chain = None  # stop the rest of the chain (celery/celery#3550)


def _replay_later(task: Task, exc: StoreUnreachable) -> Exception:
    delays = UNREACHABLE_RETRY_SECONDS
    countdown = delays[min(task.request.retries, len(delays) - 1)]
    return task.retry(  # type: ignore[no-any-return]
        exc=exc,
        kwargs={"pending": exc.pending},
        countdown=countdown,
        max_retries=UNREACHABLE_MAX_RETRIES,
    )


def _time_limit(task: Task) -> float | None:
    limits = task.request.timelimit or (None, None)
    return float(limits[0]) if limits[0] else None


@shared_task(name="saga.step", throws=(StepFailed,), **TASK_OPTIONS)
def run_step(
    self: Task, saga_id: str, index: int, correlation_id: str, pending: Any = None
) -> None:
    try:
        outcome = engine().executions.run_step(
            saga_id,
            index,
            self.request.id,
            correlation_id,
            time_limit=_time_limit(self),
            pending=pending,
        )
    except StoreUnreachable as exc:
        raise _replay_later(self, exc) from exc
    _follow(self, outcome)


@shared_task(name="saga.compensation", throws=(CompensationFailed,), **TASK_OPTIONS)
def run_compensation(
    self: Task, saga_id: str, index: int, correlation_id: str, pending: Any = None
) -> None:
    try:
        outcome = engine().executions.run_compensation(
            saga_id, index, self.request.id, correlation_id, pending=pending
        )
    except StoreUnreachable as exc:
        raise _replay_later(self, exc) from exc
    _follow(self, outcome)


@shared_task(name="saga.step_error")
def on_step_error(request: Any, exc: BaseException, traceback: Any) -> None:
    saga_id, index, correlation_id = request.args[:3]
    engine().executions.step_failed(saga_id, int(index), request.id, correlation_id, exc)


@shared_task(name="saga.compensation_error")
def on_compensation_error(request: Any, exc: BaseException, traceback: Any) -> None:
    saga_id, index, _ = request.args[:3]
    engine().executions.compensation_failed(saga_id, int(index), request.id, exc)
