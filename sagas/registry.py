"""Registered tasks: Python callables a deployment exposes to saga steps by name.

    from sagas.registry import saga_task

    @saga_task("billing.invoice")
    def invoice(args: dict, ctx: TaskContext) -> dict: ...

Deployments list the modules holding them in `SAGA_TASK_MODULES`; the API and the worker
import the same modules, so the API can reject an unknown name before anything is written.
A task raises `sagas.errors.StepError` to say whether a failure is retryable or uncertain.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sagas.errors import ConfigurationError


@dataclass(frozen=True)
class TaskContext:
    saga_id: str
    step: str
    phase: str  # "action" or "compensation"
    attempt: int
    idempotency_key: str
    correlation_id: str
    traceparent: str = ""  # the saga's trace context (W3C), "" for none: sagas/tracing.py


TaskFunction = Callable[[dict[str, Any], TaskContext], Any]

_REGISTRY: dict[str, TaskFunction] = {}


def saga_task(name: str) -> Callable[[TaskFunction], TaskFunction]:
    """Register `fn` under `name`; registering a second function under one name is an error."""

    def decorate(fn: TaskFunction) -> TaskFunction:
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not fn:
            raise ConfigurationError(f"saga task {name!r} is registered twice")
        _REGISTRY[name] = fn
        return fn

    return decorate


def get_task(name: str) -> TaskFunction | None:
    return _REGISTRY.get(name)


def registered_names() -> list[str]:
    return sorted(_REGISTRY)


def load_task_modules(modules: Iterable[str]) -> None:
    """Import the deployment's task modules (and the built-ins) so their decorators run."""
    importlib.import_module("sagas.builtin_tasks")
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigurationError(f"SAGA_TASK_MODULES: cannot import {module!r}: {exc}") from exc
