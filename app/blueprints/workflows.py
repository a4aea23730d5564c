"""`/workflows`: the five predefined workflows (templates) and starting them."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import fields

from app.blueprints.sagas import engine, idempotency, started
from app.examples import workflow_names
from app.extensions import Blueprint
from app.schemas import SagaSchema, StartHeadersSchema, StrictSchema, correlation_id_field
from sagas.templates import list_templates

blp = Blueprint(
    "workflows",
    __name__,
    url_prefix="/workflows",
    description="Predefined workflows over the auth, airtable and notification services",
)


class TemplateSchema(StrictSchema):
    name = fields.String(required=True)
    description = fields.String(required=True)
    steps = fields.List(fields.Dict(), required=True)
    payload_schema = fields.Dict(
        metadata={"description": "JSON Schema of the payload"}, required=True
    )


class TemplatesSchema(StrictSchema):
    templates = fields.List(fields.Nested(TemplateSchema), required=True)


class WorkflowStartSchema(StrictSchema):
    payload = fields.Dict(load_default=dict)
    correlation_id = correlation_id_field("default: the saga id")


@blp.route("/templates")
class Templates(MethodView):
    @blp.response(200, TemplatesSchema)
    def get(self) -> Any:
        """The predefined workflows with their steps and payload schemas"""
        return {"templates": list_templates()}


WORKFLOW_PARAMETER = {
    "in": "path",
    "name": "workflow",
    "required": True,
    "schema": {"type": "string", "enum": workflow_names()},
    "description": "a predefined workflow (GET /workflows/templates)",
}


@blp.route("/<workflow>/start", parameters=[WORKFLOW_PARAMETER])
class StartWorkflow(MethodView):
    @blp.arguments(StartHeadersSchema, location="headers")
    @blp.arguments(WorkflowStartSchema)
    @blp.response(202, SagaSchema)
    @blp.alt_response(200, schema=SagaSchema, description="an earlier saga, same key")
    @blp.alt_response(404, description="unknown workflow")
    @blp.alt_response(409, description="Idempotency-Key used with another body")
    def post(self, headers: dict[str, Any], body: dict[str, Any], workflow: str) -> Any:
        """Start a predefined workflow"""
        return started(
            engine().start_workflow(
                workflow,
                body["payload"],
                body.get("correlation_id"),
                idempotency=idempotency(headers, body),
            )
        )
