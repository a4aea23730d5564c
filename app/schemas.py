"""Schemas shared by several blueprints: the saga document and the start headers."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, fields, validate

from sagas.definition import CORRELATION_ID_PATTERN, CORRELATION_ID_RULE, MAX_CORRELATION_ID
from sagas.model import SagaStatus, StepStatus

STATUSES = [s.value for s in SagaStatus]
STEP_STATUSES = [s.value for s in StepStatus]


class FailureSchema(Schema):
    step = fields.String(allow_none=True, metadata={"description": "the step, or null"})
    reason = fields.String(validate=validate.OneOf(["error", "timeout", "manual", "cancelled"]))
    message = fields.String()


class CompensationSchema(Schema):
    status = fields.String(
        metadata={
            "description": "PENDING, COMPENSATING, COMPENSATED, COMPENSATION_FAILED "
            "or SKIPPED (nothing to undo)"
        }
    )
    attempts = fields.Integer()
    error = fields.String(allow_none=True)
    resolved_by_hand = fields.Boolean(
        metadata={"description": "a person undid it outside and said so (POST .../resolve)"}
    )


class StepSchema(Schema):
    name = fields.String()
    status = fields.String(validate=validate.OneOf(STEP_STATUSES))
    attempts = fields.Integer()
    started_at = fields.String(allow_none=True, metadata={"format": "date-time"})
    finished_at = fields.String(allow_none=True, metadata={"format": "date-time"})
    output = fields.Raw(allow_none=True, metadata={"description": "the step's JSON output"})
    error = fields.String(allow_none=True)
    uncertain = fields.Boolean(
        metadata={"description": "an attempt may have taken effect without a success seen"}
    )
    retry_pending = fields.Boolean(
        metadata={"description": "waiting out a retry countdown (POST .../retry: now)"}
    )
    compensation = fields.Nested(
        CompensationSchema,
        allow_none=True,
        metadata={"description": "null when the step defines no compensation"},
    )


class SagaSchema(Schema):
    saga_id = fields.String()
    saga_type = fields.String()
    status = fields.String(validate=validate.OneOf(STATUSES))
    version = fields.Integer(metadata={"description": "bumped by every state transition"})
    correlation_id = fields.String()
    payload = fields.Dict()
    current_step = fields.String(allow_none=True)
    created_at = fields.String(metadata={"format": "date-time"})
    updated_at = fields.String(metadata={"format": "date-time"})
    deadline_at = fields.String(metadata={"format": "date-time"})
    finished_at = fields.String(allow_none=True, metadata={"format": "date-time"})
    failure = fields.Nested(FailureSchema, allow_none=True)
    compensation_failure = fields.Nested(
        FailureSchema,
        allow_none=True,
        metadata={"description": "the undo that could not be done (COMPENSATION_FAILED)"},
    )
    steps = fields.List(fields.Nested(StepSchema))
    rerun_of = fields.String(
        allow_none=True, metadata={"description": "the saga this one runs again, or null"}
    )
    reruns = fields.List(
        fields.String(), metadata={"description": "the sagas that ran this one again"}
    )
    workflow = fields.Dict(
        allow_none=True,
        metadata={"description": "{name, version}: the registered workflow it runs, or null"},
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
