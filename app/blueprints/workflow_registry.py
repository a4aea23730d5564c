"""`/workflows/{name}`: the workflow registry (register a version, read, retire), and the
linter and the plan over a document or a registered workflow (sagas/catalog.py,
sagas/lint.py; docs/workflows.md). Registering and retiring need an `admin` key; reading,
linting and planning a `reader` key."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import fields, validate

from app.auth import ADMIN, READER, requires
from app.blueprints.sagas import engine
from app.extensions import Blueprint
from app.schemas import StrictSchema
from sagas.errors import InvalidWorkflow
from sagas.lint import lint, plan
from sagas.workflow import RESERVED_NAMES, parse_workflow

blp = Blueprint(
    "workflow_registry",
    __name__,
    url_prefix="/workflows",
    description="Workflows a team owns: versioned documents, lint and plan",
)


class WorkflowDocumentSchema(StrictSchema):
    """A workflow document (docs/workflows.md); the engine checks its meaning."""

    name = fields.String(metadata={"description": "optional here: the path names it"})
    description = fields.String()
    payload_schema = fields.Dict(required=True, metadata={"description": "a JSON Schema"})
    steps = fields.List(fields.Dict(), required=True)
    timeout_seconds = fields.Float(allow_none=True)
    webhook = fields.Dict(
        allow_none=True,
        metadata={"description": "{service, path} of its sagas' completion webhook; null: none"},
    )
    triggers = fields.List(fields.String())
    demo_fail_at = fields.Boolean()
    examples = fields.List(fields.Dict())


class VersionSchema(StrictSchema):
    version = fields.Integer()
    registered_at = fields.String(allow_none=True, metadata={"format": "date-time"})
    source = fields.String(allow_none=True, metadata={"description": "api, builtin, file:..."})
    digest = fields.String(allow_none=True)


class WorkflowSchema(WorkflowDocumentSchema):
    version = fields.Integer(metadata={"description": "the version shown"})
    latest_version = fields.Integer()
    retired = fields.Boolean(metadata={"description": "no new starts"})
    registered_at = fields.String(allow_none=True, metadata={"format": "date-time"})
    source = fields.String(allow_none=True)
    versions = fields.List(fields.Nested(VersionSchema))


class FindingSchema(StrictSchema):
    rule = fields.String()
    field = fields.String()
    message = fields.String()


class LintSchema(StrictSchema):
    workflow = fields.String(allow_none=True)
    ok = fields.Boolean(metadata={"description": "no errors"})
    errors = fields.List(fields.Nested(FindingSchema))
    warnings = fields.List(fields.Nested(FindingSchema))


class PlanRequestSchema(StrictSchema):
    fail_at = fields.String(
        allow_none=True, metadata={"description": "the step that fails (null: none)"}
    )
    uncertain = fields.Boolean(
        load_default=False, metadata={"description": "the failed step may have taken effect"}
    )
    version = fields.Integer(strict=True, validate=validate.Range(min=1))
    workflow = fields.Nested(
        WorkflowDocumentSchema,
        metadata={"description": "a document to plan instead of the registered workflow"},
    )


class PlanEntrySchema(StrictSchema):
    step = fields.String()
    call = fields.String()
    outcome = fields.String()
    why = fields.String()


class PlanSchema(StrictSchema):
    workflow = fields.String()
    version = fields.Integer(allow_none=True)
    fail_at = fields.String(allow_none=True)
    uncertain = fields.Boolean()
    run = fields.List(fields.Nested(PlanEntrySchema))
    compensate = fields.List(fields.Nested(PlanEntrySchema))
    effects_that_stand = fields.List(fields.Nested(PlanEntrySchema))
    skipped = fields.List(fields.String())
    final_status = fields.String()
    note = fields.String()


def _named(name: str, document: dict[str, Any]) -> dict[str, Any]:
    if document.get("name", name) != name:
        raise InvalidWorkflow("name", f"{document['name']!r} differs from the path's {name!r}")
    return {**document, "name": name}


# `templates` is reserved (GET /workflows/templates lists them all): not a workflow's name.
NAME_PARAMETER = {
    "in": "path",
    "name": "name",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "not": {"enum": sorted(RESERVED_NAMES)}},
    "description": "a workflow's name (its saga type)",
}


@blp.route("/<name>", parameters=[NAME_PARAMETER])
class WorkflowResource(MethodView):
    @blp.response(200, WorkflowSchema)
    def get(self, name: str) -> Any:
        """A workflow's latest version, whether it is retired, and its versions"""
        return engine().workflows.describe(name)

    @blp.arguments(WorkflowDocumentSchema)
    @blp.response(201, WorkflowSchema)
    @blp.alt_response(200, schema=WorkflowSchema, description="same content: no new version")
    @blp.alt_response(422, description="the document is refused: `errors` names the field")
    @requires(ADMIN)
    def put(self, document: dict[str, Any], name: str) -> Any:
        """Register a new version (when the content differs from the latest; a retired
        workflow is brought back)"""
        registered = engine().workflows.register(_named(name, document))
        return engine().workflows.describe(name), 201 if registered.created else 200

    @blp.response(200, WorkflowSchema)
    @requires(ADMIN)
    def delete(self, name: str) -> Any:
        """Retire the workflow: no new starts; running sagas and old versions unaffected"""
        engine().workflows.retire(name)
        return engine().workflows.describe(name)


@blp.route("/<name>/versions/<int:version>", parameters=[NAME_PARAMETER])
class WorkflowVersion(MethodView):
    @blp.response(200, WorkflowSchema)
    def get(self, name: str, version: int) -> Any:
        """One version of a workflow (versions never change)"""
        return engine().workflows.describe(name, version)


@blp.route("/<name>/lint", parameters=[NAME_PARAMETER])
class LintWorkflow(MethodView):
    @blp.arguments(WorkflowDocumentSchema)
    @blp.response(200, LintSchema)
    @requires(READER)
    def post(self, document: dict[str, Any], name: str) -> Any:
        """Lint a document without registering it: errors and warnings, each with its rule
        and field (200 either way; `ok` is false when there are errors)"""
        return lint(_named(name, document), engine().settings).as_dict()


@blp.route("/<name>/plan", parameters=[NAME_PARAMETER])
class PlanWorkflow(MethodView):
    @blp.arguments(PlanRequestSchema)
    @blp.response(200, PlanSchema)
    @requires(READER)
    def post(self, body: dict[str, Any], name: str) -> Any:
        """What would run and what would be compensated, in order, if `fail_at` failed:
        for the registered workflow (or `version`), or for the `workflow` document given.
        Calls nothing."""
        if "workflow" in body:
            workflow = parse_workflow(_named(name, body["workflow"]))
        else:
            workflow = engine().workflows.get(name, body.get("version"))
        return plan(workflow, engine().settings, body.get("fail_at"), uncertain=body["uncertain"])
