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
