"""`/saga`: start, read, list, compensate and delete sagas."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC
from typing import Any

from flask import current_app, g, request
from flask.views import MethodView
from marshmallow import fields, validate, validates_schema
from marshmallow.exceptions import ValidationError

from app.auth import OPERATOR, requires
from app.extensions import Blueprint
from app.schemas import (
    STATUSES,
    SagaSchema,
    StartHeadersSchema,
    StepSchema,
    StrictSchema,
    correlation_id_field,
)
from sagas.engine import SagaEngine, Started
from sagas.store import Idempotency, ListQuery

blp = Blueprint("saga", __name__, url_prefix="/saga", description="Sagas: start, watch, undo")


def engine() -> SagaEngine:
    return current_app.extensions["saga_engine"]  # type: ignore[no-any-return]


# --- the definition (marshmallow checks shapes; the engine checks meaning) ----------------
class RetrySchema(StrictSchema):
    max_attempts = fields.Integer(strict=True, metadata={"description": "all attempts"})
    backoff_seconds = fields.Float()
    max_backoff_seconds = fields.Float()


class ActionSchema(StrictSchema):
    """Exactly one of `service` (HTTP call), `task` (registered task) or `event`."""

    service = fields.String(metadata={"description": "a registered service's name"})
    method = fields.String(validate=validate.OneOf(["GET", "POST", "PUT", "PATCH", "DELETE"]))
    path = fields.String(metadata={"description": "starts with '/'; may hold placeholders"})
    body = fields.Raw(metadata={"description": "JSON body; placeholders are substituted"})
    task = fields.String(metadata={"description": "a registered task's name"})
    args = fields.Dict()
    event = fields.String(metadata={"description": "event steps: not enabled yet"})
    await_ = fields.Dict(data_key="await", attribute="await")


class WebhookTargetSchema(StrictSchema):
    """A registered service and a fixed path on it: never a URL."""

    service = fields.String(metadata={"description": "a registered service's name"})
    path = fields.String(metadata={"description": "starts with '/'; no placeholders"})


class StepDefinitionSchema(StrictSchema):
    name = fields.String(required=True)
    action = fields.Nested(ActionSchema, required=True)
    compensation = fields.Nested(ActionSchema, allow_none=True)
    timeout_seconds = fields.Float(metadata={"description": "deadline of all attempts"})
    retry = fields.Nested(RetrySchema)


class SagaDefinitionSchema(StrictSchema):
    saga_type = fields.String(required=True)
    payload = fields.Dict(load_default=dict)
    correlation_id = correlation_id_field("default: the saga id")
    timeout_seconds = fields.Float()
    steps = fields.List(fields.Nested(StepDefinitionSchema), required=True)
    webhook = fields.Nested(
        WebhookTargetSchema,
        allow_none=True,
        metadata={"description": "completion webhook (default: SAGA_WEBHOOK); null: none"},
    )


class CompensateSchema(StrictSchema):
    reason = fields.String(validate=validate.Length(max=1000))


class ListArgsSchema(StrictSchema):
    status = fields.String(validate=validate.OneOf(STATUSES))
    saga_type = fields.String(validate=validate.Length(min=1, max=100))
    correlation_id = fields.String(validate=validate.Length(min=1, max=200))
    created_after = fields.AwareDateTime(default_timezone=UTC)
    created_before = fields.AwareDateTime(default_timezone=UTC)
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=1_000_000))
    page_size = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))

    @validates_schema
    def _ordered(self, data: dict[str, Any], **_: Any) -> None:
        after, before = data.get("created_after"), data.get("created_before")
        if after and before and after >= before:
            raise ValidationError("must be before created_before", "created_after")


class SagaPageSchema(StrictSchema):
    items = fields.List(fields.Nested(SagaSchema), required=True)
    total = fields.Integer(
        metadata={
            "description": "the sagas matching the filters. Exact, except with correlation_id "
            "and status or saga_type together when more than 10,000 sagas were created in the "
            "time range under that correlation id and also under that status/type: then an "
            "upper bound (the matches found among the newest 10,000 or more read, plus those "
            "left unread); paging up to it, or until a short page, misses none"
        },
        required=True,
    )
    page = fields.Integer(required=True)
    page_size = fields.Integer(required=True)


class StepsSchema(StrictSchema):
    saga_id = fields.String(required=True)
    steps = fields.List(fields.Nested(StepSchema), required=True)


class HistoryEntrySchema(StrictSchema):
    at = fields.String(metadata={"format": "date-time"}, required=True)
    event = fields.String(required=True)
    version = fields.Integer(required=True)
    status = fields.String()
    step = fields.String()
    message = fields.String()
    actor = fields.String(metadata={"description": "who acted (an API key's name), if a person"})
    data = fields.Dict(metadata={"description": "what a person's action changed, if anything"})


class HistorySchema(StrictSchema):
    saga_id = fields.String(required=True)
    history = fields.List(fields.Nested(HistoryEntrySchema), required=True)


def idempotency(headers: dict[str, Any], body: Any) -> Idempotency | None:
    """The claim of an `Idempotency-Key` header, scoped to the caller's API key."""
    key = headers.get("idempotency_key")
    if key is None:
        return None
    canonical = json.dumps([request.path, body], sort_keys=True, separators=(",", ":"))
    return Idempotency(
        scope=g.client,
        key=key,
        fingerprint=hashlib.sha256(canonical.encode()).hexdigest(),
        ttl_seconds=current_app.config["IDEMPOTENCY_TTL_SECONDS"],
    )


def started(result: Started) -> tuple[Any, int]:
    """202 for a new saga; 200 when an Idempotency-Key returned an earlier one."""
    return result.saga, 202 if result.created else 200


@blp.route("/start")
class StartSaga(MethodView):
    @blp.arguments(StartHeadersSchema, location="headers")
    @blp.arguments(SagaDefinitionSchema)
    @blp.response(202, SagaSchema)
    @blp.alt_response(200, schema=SagaSchema, description="an earlier saga, same key")
    @blp.alt_response(409, description="Idempotency-Key used with another body")
    @blp.alt_response(413, description="body above SAGA_MAX_BODY_BYTES")
    def post(self, headers: dict[str, Any], definition: dict[str, Any]) -> Any:
        """Start a saga from its definition"""
        return started(engine().start(definition, idempotency=idempotency(headers, definition)))


@blp.route("/<saga_id>/status")
class SagaStatus(MethodView):
    @blp.response(200, SagaSchema)
    def get(self, saga_id: str) -> Any:
        """The saga document"""
        return engine().get(saga_id)


@blp.route("/<saga_id>/steps")
class SagaSteps(MethodView):
    @blp.response(200, StepsSchema)
    def get(self, saga_id: str) -> Any:
        """The saga's steps"""
        return {"saga_id": saga_id, "steps": engine().get(saga_id)["steps"]}


@blp.route("/<saga_id>/history")
class SagaHistory(MethodView):
    @blp.response(200, HistorySchema)
    def get(self, saga_id: str) -> Any:
        """Every state transition of the saga, oldest first"""
        return {"saga_id": saga_id, "history": engine().history(saga_id)}


@blp.route("/<saga_id>/compensate")
class CompensateSaga(MethodView):
    @blp.arguments(CompensateSchema, required=False)
    @blp.response(202, SagaSchema)
    @blp.alt_response(409, description="already compensating or compensated")
    @requires(OPERATOR)
    def post(self, body: dict[str, Any], saga_id: str) -> Any:
        """Compensate (undo) the saga, retry a failed compensation, or cancel a pending saga"""
        reason = (body or {}).get("reason") or "manual request"
        return engine().repairs.compensate(saga_id, reason, g.principal.name)


@blp.route("/<saga_id>")
class Saga(MethodView):
    @blp.response(204)
    @blp.alt_response(409, description="the saga is not COMPLETED or COMPENSATED")
    def delete(self, saga_id: str) -> None:
        """Delete a finished saga (COMPLETED or COMPENSATED only)"""
        engine().delete(saga_id)


@blp.route("")
class Sagas(MethodView):
    @blp.arguments(ListArgsSchema, location="query")
    @blp.response(200, SagaPageSchema)
    def get(self, args: dict[str, Any]) -> Any:
        """List sagas, newest first; filters combine with AND"""

        def ms(key: str) -> int | None:
            value = args.get(key)
            return None if value is None else int(value.timestamp() * 1000)

        query = ListQuery(
            status=args.get("status"),
            saga_type=args.get("saga_type"),
            correlation_id=args.get("correlation_id"),
            created_after=ms("created_after"),
            created_before=ms("created_before"),
            page=args["page"],
            page_size=args["page_size"],
        )
        total, items = engine().find(query)
        return {"items": items, "total": total, "page": query.page, "page_size": query.page_size}
