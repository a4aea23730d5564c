"""`/workflows`: the registered workflows as templates, and starting them (the registry's
own endpoints: app/blueprints/workflow_registry.py)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import fields, validate

from app.blueprints.sagas import engine, idempotency, started
from app.examples import workflow_names
from app.extensions import Blueprint
from app.schemas import SagaSchema, StartHeadersSchema, StrictSchema, correlation_id_field

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


class WorkflowTemplateSchema(TemplateSchema):
    version = fields.Integer(required=True, metadata={"description": "the version listed"})
    triggers = fields.List(
        fields.String(), required=True, metadata={"description": "event types that start it"}
    )
    timeout_seconds = fields.Float(
        allow_none=True,
        required=True,
        metadata={"description": "the saga deadline; null: SAGA_TIMEOUT_SECONDS"},
    )


class TemplatesSchema(StrictSchema):
    templates = fields.List(fields.Nested(WorkflowTemplateSchema), required=True)


class WorkflowStartSchema(StrictSchema):
    payload = fields.Dict(load_default=dict)
    correlation_id = correlation_id_field("default: the saga id")
    version = fields.Integer(
        strict=True,
        validate=validate.Range(min=1),
        metadata={"description": "a registered version (default: the latest)"},
    )


@blp.route("/templates")
class Templates(MethodView):
    @blp.response(200, TemplatesSchema)
    def get(self) -> Any:
        """The registered workflows (not retired; the built-in five first), latest versions,
        with their steps and payload schemas"""
        listed = [
            {
                **w.template(),
                "version": w.version,
                "triggers": list(w.triggers),
                "timeout_seconds": w.timeout_seconds,
            }
            for w in engine().workflows.active()
        ]
        return {"templates": listed}


WORKFLOW_PARAMETER = {
    "in": "path",
    "name": "workflow",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
    # Not an enum: teams register workflows of their own at run time (PUT /workflows/{name}).
    "examples": {name: {"value": name} for name in workflow_names()},
    "description": "a registered workflow (GET /workflows/templates): one of the built-in "
    f"ones ({', '.join(workflow_names())}) or a team's own",
}


@blp.route("/<workflow>/start", parameters=[WORKFLOW_PARAMETER])
class StartWorkflow(MethodView):
    @blp.arguments(StartHeadersSchema, location="headers")
    @blp.arguments(WorkflowStartSchema)
    @blp.response(202, SagaSchema)
    @blp.alt_response(200, schema=SagaSchema, description="an earlier saga, same key")
    @blp.alt_response(404, description="unknown workflow or version")
    @blp.alt_response(409, description="Idempotency-Key used with another body, or retired")
    def post(self, headers: dict[str, Any], body: dict[str, Any], workflow: str) -> Any:
        """Start a registered workflow (its latest version unless `version` is given)"""
        return started(
            engine().start_workflow(
                workflow,
                body["payload"],
                body.get("correlation_id"),
                idempotency=idempotency(headers, body),
                version=body.get("version"),
            )
        )
