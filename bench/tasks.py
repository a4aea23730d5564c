"""The substrate's side of the benchmark: plain Celery tasks, chained like a saga's steps."""

from __future__ import annotations

import os
from typing import Any

import httpx
import redis
from celery import shared_task

DONE_CHANNEL = "bench:done"

_client: redis.Redis | None = None
_http: httpx.Client | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["REDIS_URL"])
    return _client


def _http_client() -> httpx.Client:
    """One keep-alive client per process, built after the fork, as the engine's executor."""
    global _http
    if _http is None:
        _http = httpx.Client(follow_redirects=False, limits=httpx.Limits(max_connections=50))
    return _http


def _finish(marker: str) -> None:
    """Publish the chain's end, as a saga's finishing transition does (lua/lib.lua)."""
    _redis().publish(DONE_CHANNEL, marker)


@shared_task(name="bench.noop")
def noop(*args: Any) -> None:
    """A plain chain's step: does nothing, like `builtin.noop`."""


@shared_task(name="bench.done")
def done(marker: str) -> None:
    """The no-op chain's last step: publishes its end."""
    _finish(marker)


@shared_task(name="bench.http")
def http(url: str, body: dict[str, Any], key: str, marker: str | None = None) -> None:
    """A plain chain's HTTP step: the request a saga's HTTP step sends (JSON body, the same
    headers), its answer checked and decoded as the engine does. The last step of a chain
    (`marker` given) also publishes the chain's end."""
    headers = {"Idempotency-Key": key, "X-Saga-Id": key, "X-Correlation-Id": key}
    response = _http_client().post(url, json=body, headers=headers, timeout=30)
    response.raise_for_status()
    response.json()
    if marker is not None:
        _finish(marker)
