"""`/saga/{id}/...`: what a person may do to a saga, and doing it (the `operator` role).

Every action takes a required `reason`, is one fenced transition in the engine
(sagas/repair.py), and is recorded in the saga's history with the API key's name. A state
that does not allow it answers 409 with the reason; docs/operations.md has the table.
"""

from __future__ import annotations

from typing import Any

from flask import g
from flask.views import MethodView
from marshmallow import fields, validate

from app.auth import OPERATOR, requires
from app.blueprints.sagas import engine
from app.extensions import Blueprint
from app.schemas import SagaSchema, StrictSchema
from sagas.repair import MAX_REASON, allowed

blp = Blueprint(
    "repair",
    __name__,
    url_prefix="/saga",
    description="Repair: cancel, resolve or skip an undo, retry now, rerun (audited)",
)

STEP_PARAMETER = {
    "in": "path",
    "name": "step",
    "required": True,
    "schema": {"type": "string"},
    "description": "the step's name, or its number counted from 1",
}


class ReasonSchema(StrictSchema):
    reason = fields.String(
        required=True,
        validate=validate.Length(min=1, max=MAX_REASON),
        metadata={"description": "why: kept in the saga's history with your key's name"},
    )


class RerunSchema(ReasonSchema):
    payload = fields.Dict(
        metadata={"description": "the new saga's payload (default: the original's)"}
    )


class AllowedSchema(StrictSchema):
    action = fields.String(
        validate=validate.OneOf(["compensate", "cancel", "resolve", "skip", "retry", "rerun"]),
        required=True,
    )
    description = fields.String(required=True)
    step = fields.String(
        allow_none=True, metadata={"description": "null: the whole saga"}, required=True
    )
    step_number = fields.Integer(allow_none=True, metadata={"description": "from 1"}, required=True)


class ActionsSchema(StrictSchema):
    saga_id = fields.String(required=True)
    status = fields.String(required=True)
    version = fields.Integer(required=True)
    actions = fields.List(fields.Nested(AllowedSchema), required=True)


@blp.route("/<saga_id>/actions")
class SagaActions(MethodView):
    @blp.response(200, ActionsSchema)
    @blp.alt_response(404, description="no such saga")
    def get(self, saga_id: str) -> Any:
        """The repair actions the saga's state allows now"""
        record = engine().get(saga_id)
        return {
            "saga_id": saga_id,
            "status": record["status"],
            "version": record["version"],
            "actions": [a.as_dict() for a in allowed(record)],
        }


@blp.route("/<saga_id>/cancel")
class CancelSaga(MethodView):
    @blp.arguments(ReasonSchema)
    @blp.response(200, SagaSchema)
    @blp.alt_response(404, description="no such saga")
    @blp.alt_response(409, description="the saga is not PENDING")
    @requires(OPERATOR)
    def post(self, body: dict[str, Any], saga_id: str) -> Any:
        """Cancel a PENDING saga (it never started: COMPENSATED, every step SKIPPED)"""
        return engine().repairs.cancel(saga_id, body["reason"], g.principal.name)


@blp.route("/<saga_id>/steps/<step>/resolve", parameters=[STEP_PARAMETER])
class ResolveStep(MethodView):
    @blp.arguments(ReasonSchema)
    @blp.response(202, SagaSchema)
    @blp.alt_response(404, description="no such saga or step")
    @blp.alt_response(409, description="the step's compensation is not failed or pending")
    @requires(OPERATOR)
    def post(self, body: dict[str, Any], saga_id: str, step: str) -> Any:
        """Count the step's compensation as done by hand, then continue the older undos"""
        return engine().repairs.resolve(saga_id, step, body["reason"], g.principal.name)


@blp.route("/<saga_id>/steps/<step>/skip", parameters=[STEP_PARAMETER])
class SkipStep(MethodView):
    @blp.arguments(ReasonSchema)
    @blp.response(202, SagaSchema)
    @blp.alt_response(404, description="no such saga or step")
    @blp.alt_response(409, description="the step's compensation is not failed or pending")
    @requires(OPERATOR)
    def post(self, body: dict[str, Any], saga_id: str, step: str) -> Any:
        """Skip the step's compensation (nothing to undo), then continue the older undos"""
        return engine().repairs.skip(saga_id, step, body["reason"], g.principal.name)


@blp.route("/<saga_id>/steps/<step>/retry", parameters=[STEP_PARAMETER])
class RetryStep(MethodView):
    @blp.arguments(ReasonSchema)
    @blp.response(202, SagaSchema)
    @blp.alt_response(404, description="no such saga or step")
    @blp.alt_response(409, description="the step is not waiting out a retry countdown")
    @requires(OPERATOR)
    def post(self, body: dict[str, Any], saga_id: str, step: str) -> Any:
        """Make the step's next attempt now instead of after its retry countdown"""
        return engine().repairs.retry(saga_id, step, body["reason"], g.principal.name)


@blp.route("/<saga_id>/rerun")
class RerunSaga(MethodView):
    @blp.arguments(RerunSchema)
    @blp.response(202, SagaSchema)
    @blp.alt_response(404, description="no such saga")
    @blp.alt_response(409, description="the saga is not COMPENSATED or COMPENSATION_FAILED")
    @requires(OPERATOR)
    def post(self, body: dict[str, Any], saga_id: str) -> Any:
        """Run a compensated saga again as a new saga (linked), optionally with a new payload"""
        return engine().repairs.rerun(
            saga_id, body["reason"], g.principal.name, body.get("payload")
        )
