"""The OpenAPI document as a client generator needs it (openapi-python-client, Swagger UI).

flask-smorest and apispec build the document from the views' schemas; two plugins finish it:

- `ContractMarshmallowPlugin`: a nullable nested object is `{nullable: true, allOf: [$ref]}`
  (apispec writes `anyOf: [{type: object, nullable: true}, $ref]`, which generators read as
  "an untyped dict or the model");
- `ContractPlugin`, for every operation: its `operationId` (`OPERATION_IDS`), `security: []`
  where no key is needed (`app.auth.PUBLIC`), a 404 wherever the path names a saga, the
  error schema on every 4xx that lacks one, and examples of request bodies
  (`app.examples`).

`finish(spec)` then adds what the views cannot say: `/openapi.json` and `/docs` as public
operations, and examples of the main response schemas.
"""

from __future__ import annotations

from typing import Any

from apispec import APISpec, BasePlugin
from apispec.ext.marshmallow import MarshmallowPlugin, OpenAPIConverter
from marshmallow import fields
from werkzeug.routing import Rule

from app import examples

# (method, path) -> operationId: the names a generated client's functions get. A route
# missing here gets `<method>_<path words>` (tests/test_openapi.py says which one lacks).
OPERATION_IDS: dict[tuple[str, str], str] = {
    ("get", "/"): "get_service_info",
    ("get", "/health/"): "get_health",
    ("get", "/openapi.json"): "get_openapi_document",
    ("get", "/docs"): "get_api_docs_page",
    ("post", "/saga/start"): "start_saga",
    ("get", "/saga"): "list_sagas",
    ("get", "/saga/{saga_id}/status"): "get_saga",
    ("get", "/saga/{saga_id}/steps"): "get_saga_steps",
    ("get", "/saga/{saga_id}/history"): "get_saga_history",
    ("post", "/saga/{saga_id}/compensate"): "compensate_saga",
    ("delete", "/saga/{saga_id}"): "delete_saga",
    ("get", "/saga/{saga_id}/actions"): "get_saga_actions",
    ("post", "/saga/{saga_id}/cancel"): "cancel_saga",
    ("post", "/saga/{saga_id}/steps/{step}/resolve"): "resolve_step",
    ("post", "/saga/{saga_id}/steps/{step}/skip"): "skip_step",
    ("post", "/saga/{saga_id}/steps/{step}/retry"): "retry_step",
    ("post", "/saga/{saga_id}/rerun"): "rerun_saga",
    ("get", "/workflows/templates"): "list_workflow_templates",
    ("post", "/workflows/{workflow}/start"): "start_workflow",
    ("post", "/events/{event_type}"): "publish_event",
    ("get", "/events/unmatched"): "list_unmatched_events",
    ("get", "/events/dead-letters"): "list_dead_letter_events",
    ("put", "/workflows/{name}"): "register_workflow",
    ("get", "/workflows/{name}"): "get_workflow",
    ("delete", "/workflows/{name}"): "retire_workflow",
    ("get", "/workflows/{name}/versions/{version}"): "get_workflow_version",
    ("post", "/workflows/{name}/lint"): "lint_workflow",
    ("post", "/workflows/{name}/plan"): "plan_workflow",
    ("post", "/schedules"): "create_schedule",
    ("get", "/schedules"): "list_schedules",
    ("get", "/schedules/{schedule_id}"): "get_schedule",
    ("patch", "/schedules/{schedule_id}"): "update_schedule",
    ("delete", "/schedules/{schedule_id}"): "delete_schedule",
    ("post", "/schedules/{schedule_id}/pause"): "pause_schedule",
    ("post", "/schedules/{schedule_id}/resume"): "resume_schedule",
    ("get", "/webhooks/dead-letters"): "list_webhook_dead_letters",
    ("post", "/webhooks/dead-letters/{webhook_id}/retry"): "retry_webhook_dead_letter",
    ("get", "/metrics"): "get_metrics",
    ("get", "/metrics/prometheus"): "get_prometheus_metrics",
}
# Operations that need no API key (app.auth lets these through).
PUBLIC_OPERATIONS = {("get", "/"), ("get", "/health/"), ("get", "/openapi.json"), ("get", "/docs")}
ERROR_REF = {"$ref": "#/components/schemas/Error"}
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def operation_id(method: str, path: str) -> str:
    """The operationId of an operation: from `OPERATION_IDS`, else made from the path."""
    known = OPERATION_IDS.get((method, path))
    if known:
        return known
    words = [w.strip("{}").replace("-", "_").replace(".", "_") for w in path.split("/") if w]
    return "_".join([method, *words]) if words else method


class ContractConverter(OpenAPIConverter):  # type: ignore[misc]
    def field2nullable(self, field: fields.Field, ret: dict[str, Any]) -> dict[str, Any]:
        version = self.openapi_version
        if field.allow_none and (version.major, version.minor) == (3, 0):
            if "$ref" in ret:
                return {"nullable": True, "allOf": [{"$ref": ret.pop("$ref")}]}
            if "allOf" in ret:  # a $ref with a description of its own
                return {"nullable": True, "allOf": ret.pop("allOf")}
        return super().field2nullable(field, ret)  # type: ignore[no-any-return]


class ContractMarshmallowPlugin(MarshmallowPlugin):  # type: ignore[misc]
    Converter = ContractConverter


class ContractPlugin(BasePlugin):  # type: ignore[misc]
    def operation_helper(
        self, path: str | None = None, operations: dict[str, Any] | None = None, **_: Any
    ) -> None:
        if path is None or not operations:
            return
        for method, operation in operations.items():
            if method not in METHODS:
                continue
            complete_operation(method, path, operation)


def complete_operation(method: str, path: str, operation: dict[str, Any]) -> None:
    operation_id_ = operation_id(method, path)
    operation["operationId"] = operation_id_
    if (method, path) in PUBLIC_OPERATIONS:
        operation["security"] = []
    responses = {str(code): answer for code, answer in operation.get("responses", {}).items()}
    operation["responses"] = responses
    if "{saga_id}" in path:
        responses.setdefault("404", {"description": "no saga with this id"})
    for code, response in responses.items():
        if not (code.isdigit() and int(code) >= 400 and isinstance(response, dict)):
            continue
        if "$ref" not in response:
            content = response.setdefault("content", {"application/json": {"schema": ERROR_REF}})
            for media in content.values():
                if media.get("schema") == ERROR_REF:
                    media.setdefault("example", examples.error_example(int(code)))
    body = operation.get("requestBody")
    if body:
        media = body.get("content", {}).get("application/json")
        if media is not None:
            named = examples.request_examples(operation_id_)
            if named:
                media["examples"] = named


def finish(spec: APISpec) -> None:
    """What the views do not describe: the documentation's own routes, response examples."""
    for path, media, summary in (
        ("/openapi.json", "application/json", "This OpenAPI document"),
        ("/docs", "text/html", "Swagger UI over this document (works offline)"),
    ):
        operation: dict[str, Any] = {
            "summary": summary,
            "tags": ["health"],
            "responses": {"200": {"description": "OK", "content": {media: {"schema": {}}}}},
        }
        if media == "application/json":
            operation["responses"]["200"]["content"][media]["schema"] = {"type": "object"}
        else:
            operation["responses"]["200"]["content"][media]["schema"] = {"type": "string"}
        spec.path(rule=Rule(path), operations={"get": operation})  # ContractPlugin completes it
    schemas = spec.components.schemas
    for name, example in examples.schema_examples().items():
        if name in schemas:
            schemas[name]["example"] = example
