"""Domain errors of the engine turned into HTTP answers, in one place."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sagas.errors import (
    IdempotencyConflict,
    InvalidTransition,
    SagaNotFound,
    UnknownStep,
    UnknownWorkflow,
    ValidationFailed,
    WorkflowRetired,
)
from sagas.schedules import ScheduleNotFound

log = logging.getLogger("app.errors")

STATUS_NAMES = {
    404: "Not Found",
    409: "Conflict",
    422: "Unprocessable Entity",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
RETRY_AFTER_SECONDS = 5  # the Retry-After of a 503: Redis unreachable, full or busy
# Redis refusing work for a while (an operator or time fixes it), by the reply's error code;
# any other error reply (WRONGTYPE, a Lua error, ERR ...) is a bug.
TRANSIENT = {
    "OOM": "the state store (Redis) is out of memory (maxmemory reached)",
    "BUSY": "the state store (Redis) is busy running a script",
    "LOADING": "the state store (Redis) is loading its data",
    "READONLY": "the state store (Redis) is a read-only replica (failover in progress?)",
    "MISCONF": "the state store (Redis) refuses writes: it cannot persist to disk",
    "MASTERDOWN": "the state store (Redis) has lost its primary",
    "NOREPLICAS": "the state store (Redis) lacks the replicas it needs for writes",
    "TRYAGAIN": "the state store (Redis) asks to try again",
    "CLUSTERDOWN": "the state store (Redis) cluster is down",
}


def _error(
    code: int, message: str, headers: dict[str, str] | None = None, **extra: object
) -> ResponseReturnValue:
    body = {"code": code, "status": STATUS_NAMES[code], "message": message, **extra}
    return jsonify(body), code, headers or {}


def _unavailable(message: str) -> ResponseReturnValue:
    return _error(503, f"{message}; try again shortly", {"Retry-After": str(RETRY_AFTER_SECONDS)})


def transient_reason(exc: ResponseError) -> str | None:
    """What a Redis error reply says about an outage, or None when it is not one."""
    if isinstance(exc, OutOfMemoryError):
        return TRANSIENT["OOM"]
    if isinstance(exc, ReadOnlyError):
        return TRANSIENT["READONLY"]
    code = getattr(exc, "status_code", None) or str(exc).split(" ", 1)[0]
    return TRANSIENT.get(str(code))


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ValidationFailed)
    def invalid(exc: ValidationFailed) -> ResponseReturnValue:
        return _error(
            422, f"invalid {exc.field}: {exc.message}", errors={"json": {exc.field: [exc.message]}}
        )

    @app.errorhandler(SagaNotFound)
    def not_found(exc: SagaNotFound) -> ResponseReturnValue:
        return _error(404, str(exc))

    @app.errorhandler(UnknownStep)
    def unknown_step(exc: UnknownStep) -> ResponseReturnValue:
        return _error(404, str(exc))

    @app.errorhandler(UnknownWorkflow)
    def unknown_workflow(exc: UnknownWorkflow) -> ResponseReturnValue:
        return _error(404, str(exc))

    @app.errorhandler(ScheduleNotFound)
    def schedule_not_found(exc: ScheduleNotFound) -> ResponseReturnValue:
        return _error(404, str(exc))

    @app.errorhandler(WorkflowRetired)
    def retired(exc: WorkflowRetired) -> ResponseReturnValue:
        return _error(409, str(exc), workflow=exc.name)

    @app.errorhandler(InvalidTransition)
    def conflict(exc: InvalidTransition) -> ResponseReturnValue:
        return _error(409, exc.message, saga_status=exc.status)

    @app.errorhandler(IdempotencyConflict)
    def idempotency_conflict(exc: IdempotencyConflict) -> ResponseReturnValue:
        return _error(409, str(exc), saga_id=exc.saga_id)

    @app.errorhandler(RedisConnectionError)
    @app.errorhandler(RedisTimeoutError)
    def store_down(exc: Exception) -> ResponseReturnValue:
        log.error("state store unreachable: %s", exc)
        return _unavailable("the state store (Redis) is unreachable")

    @app.errorhandler(ResponseError)
    def store_refused(exc: ResponseError) -> ResponseReturnValue:
        reason = transient_reason(exc)
        if reason is not None:
            log.error("state store refused the request: %s (%s)", reason, exc)
            return _unavailable(reason)
        # Not an outage: a bug (a wrong command, a Lua error, a key of the wrong type).
        log.error("unexpected Redis error reply: %s", exc, exc_info=exc)
        return _error(500, "internal error: unexpected answer from the state store (Redis)")
