"""`/webhooks`: completion webhooks that could not be delivered (dead letters), and sending
one again (the `operator` role). Delivery itself is the engine's (sagas/webhooks.py)."""

from __future__ import annotations

from typing import Any

from flask import g
from flask.views import MethodView
from flask_smorest import abort
from marshmallow import fields, validate

from app.auth import OPERATOR, requires
from app.blueprints.sagas import engine
from app.extensions import Blueprint
from app.schemas import StrictSchema
from sagas.errors import WebhookNotDead, WebhookNotFound

blp = Blueprint(
    "webhooks",
    __name__,
    url_prefix="/webhooks",
    description="Completion webhooks: dead letters (docs/observability.md)",
)


class DeadLetterSchema(StrictSchema):
    id = fields.String(required=True, metadata={"description": "the webhook-id it is sent with"})
    saga_id = fields.String(required=True)
    status = fields.String(required=True, metadata={"description": "the final status it announces"})
    service = fields.String(required=True)
    path = fields.String(required=True)
    attempts = fields.Integer(required=True)
    last_error = fields.String(required=True, allow_none=True)
    last_status_code = fields.Integer(required=True, allow_none=True)
    created_at = fields.String(required=True, metadata={"format": "date-time"})
    dead_at = fields.String(required=True, allow_none=True, metadata={"format": "date-time"})
    retries = fields.Integer(required=True, metadata={"description": "times a person resent it"})


class DeadLettersSchema(StrictSchema):
    items = fields.List(fields.Nested(DeadLetterSchema), required=True)


class LimitSchema(StrictSchema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))


class RetriedSchema(StrictSchema):
    id = fields.String(required=True)
    status = fields.String(
        required=True, metadata={"description": "pending: it is being sent again"}
    )


@blp.route("/dead-letters")
class DeadLetters(MethodView):
    @blp.arguments(LimitSchema, location="query")
    @blp.response(200, DeadLettersSchema)
    def get(self, args: dict[str, Any]) -> Any:
        """Webhooks not delivered within SAGA_WEBHOOK_MAX_SECONDS, newest first"""
        return {"items": engine().webhooks.dead_letters(args["limit"])}


@blp.route("/dead-letters/<webhook_id>/retry")
class RetryDeadLetter(MethodView):
    @blp.response(202, RetriedSchema)
    @blp.alt_response(404, description="no such webhook (or delivered already)")
    @blp.alt_response(409, description="not a dead letter: it is still being retried")
    @requires(OPERATOR)
    def post(self, webhook_id: str) -> Any:
        """Send a dead letter again: same webhook-id and body, a fresh retry window"""
        try:
            engine().webhooks.retry(webhook_id, g.principal.name)
        except WebhookNotFound as exc:
            abort(404, message=str(exc))
        except WebhookNotDead as exc:
            abort(409, message=str(exc))
        return {"id": webhook_id, "status": "pending"}
