"""Tasks every deployment has, for demos, tests and benchmarks."""

from __future__ import annotations

from typing import Any

from sagas.registry import TaskContext, saga_task


@saga_task("builtin.noop")
def noop(args: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Do nothing; the output is the arguments, so later steps can refer to them."""
    return dict(args)
