"""Domain errors of the engine turned into HTTP answers, in one place."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sagas.errors import (
    IdempotencyConflict,
    InvalidTransition,
    SagaNotFound,
    UnknownWorkflow,
    ValidationFailed,
)

log = logging.getLogger("app.errors")

STATUS_NAMES = {
    404: "Not Found",
    409: "Conflict",
    422: "Unprocessable Entity",
    503: "Service Unavailable",
}


def _error(code: int, message: str, **extra: object) -> ResponseReturnValue:
    return jsonify({"code": code, "status": STATUS_NAMES[code], "message": message, **extra}), code


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ValidationFailed)
    def invalid(exc: ValidationFailed) -> ResponseReturnValue:
        return _error(
            422, f"invalid {exc.field}: {exc.message}", errors={"json": {exc.field: [exc.message]}}
        )

    @app.errorhandler(SagaNotFound)
    def not_found(exc: SagaNotFound) -> ResponseReturnValue:
        return _error(404, str(exc))

    @app.errorhandler(UnknownWorkflow)
    def unknown_workflow(exc: UnknownWorkflow) -> ResponseReturnValue:
        return _error(404, str(exc))

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
        return _error(503, "the state store (Redis) is unreachable; try again shortly")
