"""Statuses and the records the store returns."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, TypedDict


class SagaStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    COMPENSATING = "COMPENSATING"
    COMPENSATED = "COMPENSATED"
    COMPENSATION_FAILED = "COMPENSATION_FAILED"


class StepStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    WAITING = "WAITING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    COMPENSATING = "COMPENSATING"
    COMPENSATED = "COMPENSATED"
    COMPENSATION_FAILED = "COMPENSATION_FAILED"


class FailureReason(StrEnum):
    ERROR = "error"
    TIMEOUT = "timeout"
    MANUAL = "manual"
    CANCELLED = "cancelled"


FINAL_STATUSES = frozenset({SagaStatus.COMPLETED, SagaStatus.COMPENSATED})


class CompensationRecord(TypedDict):
    status: str  # PENDING, COMPENSATING, COMPENSATED, COMPENSATION_FAILED, SKIPPED
    attempts: int
    error: str | None
    resolved_by_hand: bool  # a person counted it as done (sagas/repair.py)


class StepRecord(TypedDict):
    name: str
    status: str
    attempts: int
    started_at: str | None  # ISO-8601 UTC
    finished_at: str | None
    output: Any
    error: str | None
    uncertain: bool  # an attempt may have taken effect without a success being seen
    retry_pending: bool  # waiting out a retry countdown (no attempt in flight)
    compensation: CompensationRecord | None  # None when the step defines no compensation


class Failure(TypedDict):
    step: str | None
    reason: str
    message: str


class SagaRecord(TypedDict):
    saga_id: str
    saga_type: str
    status: str
    version: int
    correlation_id: str
    payload: dict[str, Any]
    current_step: str | None
    created_at: str
    updated_at: str
    deadline_at: str
    finished_at: str | None
    failure: Failure | None
    compensation_failure: Failure | None
    steps: list[StepRecord]
    rerun_of: str | None  # the saga this one reruns (sagas/repair.py)
    workflow: dict[str, Any] | None  # {name, version}: the registered workflow it runs
    reruns: list[str]  # the sagas that rerun this one, oldest first
    webhook: dict[str, str] | None  # the completion webhook {service, path} (sagas/webhooks.py)
    trace_id: str | None  # the saga's OpenTelemetry trace (sagas/tracing.py)
