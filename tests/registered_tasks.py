"""Registered tasks the tests' worker loads through SAGA_TASK_MODULES."""

from __future__ import annotations

from typing import Any

from sagas.errors import StepError
from sagas.registry import TaskContext, saga_task


@saga_task("test.fail")
def fail(args: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    raise StepError(args.get("message", "scripted failure"))


@saga_task("test.sleep")
def sleep(args: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Hang for `seconds` (a step or compensation that ignores its deadline)."""
    import time

    time.sleep(float(args.get("seconds", 1)))
    return {"slept": args.get("seconds", 1)}


@saga_task("test.act_after")
def act_after(args: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Hang for `seconds`, then take effect: POST `url` with the step's idempotency key (a
    slow step whose effect lands at the end, or never if it is killed first)."""
    import time

    import httpx

    time.sleep(float(args["seconds"]))
    headers = {"Idempotency-Key": ctx.idempotency_key, "X-Saga-Id": ctx.saga_id}
    response = httpx.post(args["url"], headers=headers, json={}, timeout=10)
    return {"effect": response.json()}
