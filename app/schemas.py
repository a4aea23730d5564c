"""Schemas shared by several blueprints: the saga document, errors and the start headers.

Answer schemas mark `required` every field the API always sends (a generated client then
types them as plain values, not "maybe unset"); a field that may be absent is not.
"""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, fields, validate

from sagas.definition import CORRELATION_ID_PATTERN, CORRELATION_ID_RULE, MAX_CORRELATION_ID
from sagas.model import SagaStatus, StepStatus

STATUSES = [s.value for s in SagaStatus]
STEP_STATUSES = [s.value for s in StepStatus]


class FailureSchema(Schema):
    step = fields.String(
        allow_none=True,
        metadata={"description": "the step at fault; absent when the saga as a whole failed"},
    )
    reason = fields.String(
        validate=validate.OneOf(["error", "timeout", "manual", "cancelled"]), required=True
    )
    message = fields.String(required=True)


class CompensationSchema(Schema):
    status = fields.String(
        metadata={
            "description": "PENDING, COMPENSATING, COMPENSATED, COMPENSATION_FAILED "
            "or SKIPPED (nothing to undo)"
        },
        required=True,
    )
    attempts = fields.Integer(required=True)
    error = fields.String(allow_none=True, required=True)
    resolved_by_hand = fields.Boolean(
        metadata={"description": "a person undid it outside and said so (POST .../resolve)"},
        required=True,
    )


class StepSchema(Schema):
    name = fields.String(required=True)
    status = fields.String(validate=validate.OneOf(STEP_STATUSES), required=True)
    attempts = fields.Integer(required=True)
    started_at = fields.String(allow_none=True, metadata={"format": "date-time"}, required=True)
    finished_at = fields.String(allow_none=True, metadata={"format": "date-time"}, required=True)
    output = fields.Raw(
        allow_none=True, metadata={"description": "the step's JSON output"}, required=True
    )
    error = fields.String(allow_none=True, required=True)
    uncertain = fields.Boolean(
        metadata={"description": "an attempt may have taken effect without a success seen"},
        required=True,
    )
    retry_pending = fields.Boolean(
        metadata={"description": "waiting out a retry countdown (POST .../retry: now)"},
        required=True,
    )
    compensation = fields.Nested(
        CompensationSchema,
        allow_none=True,
        metadata={"description": "null when the step defines no compensation"},
        required=True,
    )


class SagaSchema(Schema):
    saga_id = fields.String(required=True)
    saga_type = fields.String(required=True)
    status = fields.String(validate=validate.OneOf(STATUSES), required=True)
    version = fields.Integer(
        metadata={"description": "bumped by every state transition"}, required=True
    )
    correlation_id = fields.String(required=True)
    payload = fields.Dict(required=True)
    current_step = fields.String(allow_none=True, required=True)
    created_at = fields.String(metadata={"format": "date-time"}, required=True)
    updated_at = fields.String(metadata={"format": "date-time"}, required=True)
    deadline_at = fields.String(metadata={"format": "date-time"}, required=True)
    finished_at = fields.String(allow_none=True, metadata={"format": "date-time"}, required=True)
    failure = fields.Nested(FailureSchema, allow_none=True, required=True)
    compensation_failure = fields.Nested(
        FailureSchema,
        allow_none=True,
        metadata={"description": "the undo that could not be done (COMPENSATION_FAILED)"},
        required=True,
    )
    steps = fields.List(fields.Nested(StepSchema), required=True)
    rerun_of = fields.String(
        allow_none=True,
        metadata={"description": "the saga this one runs again, or null"},
        required=True,
    )
    reruns = fields.List(
        fields.String(),
        metadata={"description": "the sagas that ran this one again"},
        required=True,
    )
    webhook = fields.Dict(
        allow_none=True,
        required=True,
        metadata={"description": "the completion webhook {service, path}, or null"},
    )
    trace_id = fields.String(
        allow_none=True,
        required=True,
        metadata={
            "description": "the saga's OpenTelemetry trace id (32 hex digits): the start "
            "request's trace, or the caller's `traceparent`; null when neither existed "
            "(docs/observability.md)"
        },
    )
    workflow = fields.Dict(
        allow_none=True,
        required=True,
        metadata={"description": "{name, version}: the registered workflow it runs, or null"},
    )


class ErrorSchema(Schema):
    """Every error answer (4xx, 5xx)."""

    code = fields.Integer(required=True, metadata={"description": "the HTTP status code"})
    status = fields.String(required=True, metadata={"description": "its name"})
    message = fields.String(required=True, metadata={"description": "what went wrong"})
    errors = fields.Dict(
        metadata={
            "description": "per location (json, query, headers, path), the fields at fault "
            "as flat paths (`payload.email`, `steps[1].action.path`) -> problems"
        }
    )
    saga_status = fields.String(
        metadata={"description": "409 on a saga: its status, which does not allow the request"}
    )
    saga_id = fields.String(
        metadata={"description": "409 on an Idempotency-Key: the saga it was first used for"}
    )


class StartHeadersSchema(Schema):
    class Meta:
        unknown = "exclude"

    idempotency_key = fields.String(
        data_key="Idempotency-Key",
        validate=validate.Length(min=1, max=255),
        metadata={
            "description": "the same key (per API key) returns the saga created the "
            "first time, for SAGA_IDEMPOTENCY_TTL_SECONDS; with another body: 409"
        },
    )


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


def correlation_id_field(description: str) -> Any:
    """A correlation id in a request body: it becomes the X-Correlation-Id header of every
    call, so printable ASCII only (the engine checks the same rule)."""
    return fields.String(
        allow_none=True,
        validate=[
            validate.Length(min=1, max=MAX_CORRELATION_ID),
            validate.Regexp(CORRELATION_ID_PATTERN, error=CORRELATION_ID_RULE),
        ],
        metadata={"description": description},
    )
