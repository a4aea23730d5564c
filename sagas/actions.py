"""Running one attempt of an action or compensation: an HTTP call or a registered task.

The outcome is a JSON output, or a `StepError` saying whether the failure is retryable and
whether the attempt may have taken effect (uncertain).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from datetime import UTC
from typing import Any
from urllib.parse import urlsplit

import httpx

from sagas import tracing
from sagas.errors import StepError
from sagas.registry import TaskContext, get_task

RETRYABLE_STATUS = frozenset({408, 425, 429})
MAX_ERROR_BODY = 500


class ActionExecutor:
    """Runs rendered actions. One per process: it owns the HTTP connection pool."""

    def __init__(self, services: Mapping[str, str], client: httpx.Client | None = None):
        self.services = dict(services)
        self.client = client or httpx.Client(
            follow_redirects=False, limits=httpx.Limits(max_connections=50)
        )

    def run(self, spec: Mapping[str, Any], ctx: TaskContext, timeout_seconds: float) -> Any:
        """Run one attempt of `spec` (already rendered) and return its output."""
        kind = spec["kind"]
        if kind == "http":
            return self._http(spec, ctx, timeout_seconds)
        if kind == "task":
            return self._task(spec, ctx)
        raise StepError(f"actions of kind {kind!r} cannot run here")

    def _task(self, spec: Mapping[str, Any], ctx: TaskContext) -> Any:
        fn = get_task(spec["task"])
        if fn is None:
            raise StepError(
                f"registered task {spec['task']!r} is not loaded in this worker", retryable=True
            )
        return fn(dict(spec.get("args") or {}), ctx)

    def _http(self, spec: Mapping[str, Any], ctx: TaskContext, timeout_seconds: float) -> Any:
        base = self.services.get(spec["service"])
        if base is None:
            raise StepError(
                f"service {spec['service']!r} is not registered in this worker", retryable=True
            )
        url = base + spec["path"]
        _check_origin(base, url)
        headers = {
            "Idempotency-Key": ctx.idempotency_key,
            "X-Saga-Id": ctx.saga_id,
            "X-Correlation-Id": ctx.correlation_id,
        }
        # W3C trace context: the attempt's span (the httpx instrumentation then puts its
        # client span's), or the saga's stored context when this process records nothing.
        tracing.inject(headers, ctx.traceparent)
        timeout = httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, 5.0))
        kwargs: dict[str, Any] = {"headers": headers, "timeout": timeout}
        if "body" in spec:
            kwargs["json"] = spec["body"]
        try:
            response = self.client.request(spec["method"], url, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # Nothing was sent: the service cannot have acted.
            raise StepError(f"{spec['service']}: cannot connect: {exc!r}", retryable=True) from exc
        except httpx.TransportError as exc:
            # Sent, but no answer (timeout or dropped connection): it may have acted.
            raise StepError(
                f"{spec['service']}: no answer: {exc!r}", retryable=True, uncertain=True
            ) from exc
        return _outcome(spec["service"], response)


def _outcome(service: str, response: httpx.Response) -> Any:
    status = response.status_code
    if 200 <= status < 300:
        if not response.content:
            return {}
        try:
            return response.json()
        except ValueError:
            return {"text": response.text[:MAX_ERROR_BODY]}
    detail = response.text[:MAX_ERROR_BODY]
    message = f"{service}: HTTP {status} {response.reason_phrase}: {detail}".rstrip(": ")
    if status in RETRYABLE_STATUS or status >= 500:
        raise StepError(
            message, retryable=True, retry_after=_retry_after(response.headers.get("Retry-After"))
        )
    raise StepError(message)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - time.time())


def _check_origin(base: str, url: str) -> None:
    """The rendered URL must keep the registered service's scheme, host and port."""
    want, got = urlsplit(base), urlsplit(url)
    if (want.scheme, want.hostname, want.port) != (got.scheme, got.hostname, got.port):
        raise StepError(f"rendered URL leaves the registered service: {url!r}")
