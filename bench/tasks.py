"""The substrate's side of the benchmark: plain Celery no-op tasks, chained like a saga's."""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import shared_task

_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["REDIS_URL"])
    return _client


@shared_task(name="bench.noop")
def noop(*args: Any) -> None:
    """A plain chain's step: does nothing, like `builtin.noop`."""


@shared_task(name="bench.done")
def done(counter: str, marker: str) -> None:
    """The chain's last step: counts it, and publishes its end like a saga's."""
    pipe = _redis().pipeline()
    pipe.incr(counter)
    pipe.publish("bench:done", marker)  # as a saga's end is published (lua/lib.lua finish)
    pipe.execute()
