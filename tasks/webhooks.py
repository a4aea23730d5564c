"""Completion webhooks: one delivery attempt of an outbox entry (sagas/webhooks.py does the
work). Acked late like every task: a worker killed mid-send leaves the message to be
redelivered, and the entry is due again once its claim ends, so the sweep sends it too if
the message is lost. A failed attempt enqueues the next one with its backoff countdown."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tasks.runtime import engine

WEBHOOK_TASK = "saga.webhook"


@shared_task(
    name=WEBHOOK_TASK,
    bind=True,
    ignore_result=True,
    default_retry_delay=1,
    max_retries=100,
    autoretry_for=(RedisConnectionError, RedisTimeoutError),
    retry_backoff=1,
    retry_backoff_max=60,
    retry_jitter=True,
)
def deliver_webhook(self: Task, webhook_id: str) -> dict[str, Any]:
    attempt = engine().webhooks.deliver(webhook_id, self.request.id)
    return {"outcome": attempt.outcome, "status_code": attempt.status_code}
