"""The five predefined workflows (CONTRACT.md "The five predefined workflows").

Each template is a saga over the registered services `auth` (the platform service: users,
workspaces, permissions, quotas), `airtable` (the Airtable gateway: bases, tables, records,
exports, webhooks) and `notification` (the automation services: notifications, data
transformations, AI jobs). `build_definition` validates a payload against the template's
JSON Schema and returns a definition in the `POST /saga/start` format.

Payload fields that a template marks optional and uses in a step have a `default` in the
schema; `build_definition` fills them in, so every `{{payload.x}}` placeholder has a value.

Steps are HTTP calls, except `ai_analysis`'s `run_analysis`, an event step: it publishes
the command `ai.analysis_requested` to `<prefix>stream:commands` and waits for
`ai.analysis_completed` (its data, the job, is the step's output) or `ai.analysis_failed`.

Demo failures: every payload schema accepts an optional `fail_at` naming one of the
workflow's steps. `build_definition` then adds `"demo_fail": true` to that step's action
body (to the command's `data` for an event step); the demo services (`demo/services.py`)
answer such a request with HTTP 422, or such a command with the failure event, so the saga
compensates the steps before it. Real services ignore an unknown field or reject it; either
way the step fails without effect.

This module is part of the engine layer: it imports neither Flask nor Celery.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema_rs

from sagas.errors import InvalidPayload, UnknownWorkflow

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
MAX_MESSAGE = 300  # characters of a validator message kept in an InvalidPayload

_DEMO_NOTE = (
    " Demo: set payload.fail_at to one of the step names and that step's action carries "
    '"demo_fail": true, which the demo services answer with HTTP 422 '
    '{"error": "demo failure requested"}; the saga then compensates the steps before it.'
)
_EVENT_DEMO_NOTE = (
    " Demo: set payload.fail_at to one of the step names and that step's action carries "
    '"demo_fail": true (in its body, or in the data of an event step\'s command), which the '
    'demo services answer with HTTP 422 {"error": "demo failure requested"} (or with the '
    "failure event, data the same); the saga then compensates the steps before it."
)

# Ids and table names fill path segments: no '/', and not a dot segment ('.' or '..', which
# HTTP clients resolve: /workspaces/../x is /x). Written without lookahead, for any validator.
_SEGMENT = r"^([^/.][^/]*|\.[^/.][^/]*|\.\.[^/]+)$"
_ID = {"type": "string", "minLength": 1, "maxLength": 100, "pattern": _SEGMENT}
_BASE_ID = {
    "type": "string",
    "pattern": "^app[A-Za-z0-9]{3,30}$",
    "description": "an Airtable base id, e.g. appDemoBase",
}
_TABLE = {
    "type": "string",
    "minLength": 1,
    "maxLength": 100,
    "pattern": _SEGMENT,
    "description": "a table name of the base",
}


def _call(
    service: str, method: str, path: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    action: dict[str, Any] = {"service": service, "method": method, "path": path}
    if body is not None:
        action["body"] = body
    return action


def _event(event: str, success: str, failure: str, data: dict[str, Any]) -> dict[str, Any]:
    """An event step's action: publish the command `event`, await `success` or `failure`."""
    return {"event": event, "await": {"success": success, "failure": failure}, "data": data}


def _step(
    name: str, action: dict[str, Any], compensation: dict[str, Any] | None = None
) -> dict[str, Any]:
    step: dict[str, Any] = {"name": name, "action": action}
    if compensation is not None:
        step["compensation"] = compensation
    return step


def _out(step: str, field: str = "id") -> str:
    return f"{{{{steps.{step}.output.{field}}}}}"


def _p(field: str) -> str:
    return f"{{{{payload.{field}}}}}"


def _schema(
    required: Mapping[str, Any], optional: Mapping[str, Any], steps: list[dict[str, Any]]
) -> dict[str, Any]:
    properties = {**required, **optional}
    properties["fail_at"] = {
        "type": "string",
        "enum": [step["name"] for step in steps],
        "description": "demo only: the step whose service is asked to fail "
        "(HTTP 422, or the failure event for an event step)",
    }
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "type": "object",
        "required": list(required),
        "properties": properties,
        "additionalProperties": True,
    }


# --- user_registration --------------------------------------------------------------------
_USER_REGISTRATION_STEPS = [
    _step(
        "create_account",
        _call(
            "auth",
            "POST",
            "/users",
            {"email": _p("email"), "name": _p("name"), "plan": _p("plan")},
        ),
        _call("auth", "DELETE", f"/users/{_out('create_account')}"),
    ),
    _step(
        "create_default_workspace",
        _call(
            "auth",
            "POST",
            f"/users/{_out('create_account')}/workspaces",
            {"name": _p("workspace_name"), "default": True, "plan": _p("plan")},
        ),
        _call("auth", "DELETE", f"/workspaces/{_out('create_default_workspace')}"),
    ),
    _step(
        "send_welcome_notification",
        _call(
            "notification",
            "POST",
            "/notifications",
            {
                "channel": "email",
                "to": _p("email"),
                "template": "welcome",
                "data": {
                    "name": _p("name"),
                    "user_id": _out("create_account"),
                    "workspace_id": _out("create_default_workspace"),
                },
            },
        ),
    ),
]

# --- workspace_creation -------------------------------------------------------------------
_WORKSPACE_CREATION_STEPS = [
    _step(
        "create_workspace",
        _call(
            "auth",
            "POST",
            f"/users/{_p('owner_id')}/workspaces",
            {"name": _p("name"), "default": False, "plan": _p("plan")},
        ),
        _call("auth", "DELETE", f"/workspaces/{_out('create_workspace')}"),
    ),
    _step(
        "link_airtable_base",
        _call(
            "airtable",
            "POST",
            f"/bases/{_p('airtable_base_id')}/links",
            {"workspace_id": _out("create_workspace")},
        ),
        _call(
            "airtable",
            "DELETE",
            f"/bases/{_p('airtable_base_id')}/links/{_out('link_airtable_base')}",
        ),
    ),
    _step(
        "grant_permissions",
        _call(
            "auth",
            "POST",
            f"/workspaces/{_out('create_workspace')}/permissions",
            {
                "owner_id": _p("owner_id"),
                "members": _p("members"),
                "member_role": _p("member_role"),
            },
        ),
        _call(
            "auth",
            "DELETE",
            f"/workspaces/{_out('create_workspace')}/permissions/{_out('grant_permissions')}",
        ),
    ),
    _step(
        "notify_owner",
        _call(
            "notification",
            "POST",
            "/notifications",
            {
                "channel": "in_app",
                "to": _p("owner_id"),
                "template": "workspace_created",
                "data": {
                    "workspace_id": _out("create_workspace"),
                    "workspace_name": _p("name"),
                    "base_id": _p("airtable_base_id"),
                    "members": _p("members"),
                },
            },
        ),
    ),
]

# --- data_synchronization -----------------------------------------------------------------
_TABLE_PATH = f"/bases/{_p('base_id')}/tables/{_p('table')}"
_DATA_SYNCHRONIZATION_STEPS = [
    _step(
        "fetch_records",
        _call(
            "airtable",
            "POST",
            f"{_TABLE_PATH}/exports",
            {"fields": _p("fields"), "max_records": _p("max_records")},
        ),
        _call("airtable", "DELETE", f"/bases/{_p('base_id')}/exports/{_out('fetch_records')}"),
    ),
    _step(
        "transform_records",
        _call(
            "notification",
            "POST",
            "/transformations",
            {
                "export_id": _out("fetch_records"),
                "records": _out("fetch_records", "records"),
                "fields": _p("fields"),
                "operations": _p("operations"),
            },
        ),
        _call("notification", "DELETE", f"/transformations/{_out('transform_records')}"),
    ),
    _step(
        "write_back",
        _call(
            "airtable",
            "POST",
            f"{_TABLE_PATH}/batches",
            {
                "records": _out("transform_records", "records"),
                "source": _out("transform_records"),
            },
        ),
        _call(
            "airtable",
            "POST",
            f"/bases/{_p('base_id')}/batches/{_out('write_back')}/revert",
            {},
        ),
    ),
    _step(
        "notify_sync_completed",
        _call(
            "notification",
            "POST",
            "/notifications",
            {
                "channel": "in_app",
                "to": _p("requested_by"),
                "template": "sync_completed",
                "data": {
                    "base_id": _p("base_id"),
                    "table": _p("table"),
                    "batch_id": _out("write_back"),
                    "updated": _out("write_back", "updated"),
                },
            },
        ),
    ),
]

# --- ai_analysis --------------------------------------------------------------------------
_RESULTS_PATH = f"/bases/{_p('base_id')}/tables/{_p('results_table')}/records"
_AI_ANALYSIS_STEPS = [
    _step(
        "reserve_quota",
        _call(
            "auth",
            "POST",
            f"/workspaces/{_p('workspace_id')}/quota-reservations",
            {"units": _p("units"), "purpose": "ai_analysis"},
        ),
        _call(
            "auth",
            "DELETE",
            f"/workspaces/{_p('workspace_id')}/quota-reservations/{_out('reserve_quota')}",
        ),
    ),
    _step(
        "run_analysis",
        _event(
            "ai.analysis_requested",
            "ai.analysis_completed",
            "ai.analysis_failed",
            {
                "workspace_id": _p("workspace_id"),
                "base_id": _p("base_id"),
                "table": _p("table"),
                "analysis_type": _p("analysis_type"),
                "prompt": _p("prompt"),
                "max_units": _p("units"),
                "quota_reservation_id": _out("reserve_quota"),
            },
        ),
        _call("notification", "DELETE", f"/ai/jobs/{_out('run_analysis')}"),
    ),
    _step(
        "store_results",
        _call(
            "airtable",
            "POST",
            _RESULTS_PATH,
            {
                "fields": {
                    "Job": _out("run_analysis"),
                    "Analysis": _p("analysis_type"),
                    "Source table": _p("table"),
                    "Summary": _out("run_analysis", "result.summary"),
                }
            },
        ),
        _call("airtable", "DELETE", f"{_RESULTS_PATH}/{_out('store_results')}"),
    ),
    _step(
        "notify_results",
        _call(
            "notification",
            "POST",
            "/notifications",
            {
                "channel": "in_app",
                "to": _p("requested_by"),
                "template": "analysis_ready",
                "data": {
                    "job_id": _out("run_analysis"),
                    "record_id": _out("store_results"),
                    "summary": _out("run_analysis", "result.summary"),
                },
            },
        ),
    ),
]

# --- webhook_processing -------------------------------------------------------------------
_WEBHOOK_PROCESSING_STEPS = [
    _step(
        "validate_webhook",
        _call(
            "airtable",
            "POST",
            f"/webhooks/{_p('webhook_id')}/deliveries",
            {"event_id": _p("event_id"), "changes": _p("changes")},
        ),
        _call(
            "airtable",
            "DELETE",
            f"/webhooks/{_p('webhook_id')}/deliveries/{_out('validate_webhook')}",
        ),
    ),
    _step(
        "apply_changes",
        _call(
            "airtable",
            "POST",
            f"/bases/{_out('validate_webhook', 'base_id')}"
            f"/tables/{_out('validate_webhook', 'table')}/batches",
            {"records": _p("changes"), "source": _out("validate_webhook")},
        ),
        _call(
            "airtable",
            "POST",
            f"/bases/{_out('validate_webhook', 'base_id')}/batches/{_out('apply_changes')}/revert",
            {},
        ),
    ),
    _step(
        "acknowledge",
        _call(
            "notification",
            "POST",
            "/notifications",
            {
                "channel": "webhook",
                "to": _out("validate_webhook", "callback_url"),
                "template": "webhook_ack",
                "data": {
                    "event_id": _p("event_id"),
                    "delivery_id": _out("validate_webhook"),
                    "batch_id": _out("apply_changes"),
                    "updated": _out("apply_changes", "updated"),
                },
            },
        ),
    ),
]


@dataclass(frozen=True)
class _Template:
    name: str
    description: str
    steps: list[dict[str, Any]]
    payload_schema: dict[str, Any]
    # The completion webhook of its sagas ({"service", "path"}, sagas/webhooks.py); None:
    # the deployment's SAGA_WEBHOOK, if set.
    webhook: dict[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        return copy.deepcopy(
            {
                "name": self.name,
                "description": self.description,
                "steps": self.steps,
                "payload_schema": self.payload_schema,
            }
        )


_TEMPLATE_LIST = [
    _Template(
        "user_registration",
        "Register a user: create the account in auth, create the user's default workspace "
        "in auth, send a welcome email. Undo deletes the workspace, then the account; the "
        "email needs no undo." + _DEMO_NOTE,
        _USER_REGISTRATION_STEPS,
        _schema(
            {
                "email": {"type": "string", "format": "email", "maxLength": 254},
                "name": {"type": "string", "minLength": 1, "maxLength": 200},
            },
            {
                "plan": {"type": "string", "enum": ["free", "pro", "team"], "default": "free"},
                "workspace_name": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 200,
                    "default": "My workspace",
                },
            },
            _USER_REGISTRATION_STEPS,
        ),
    ),
    _Template(
        "workspace_creation",
        "Create a workspace for an existing user: create it in auth, link an Airtable base "
        "to it in the gateway, grant the owner and the members their permissions in auth, "
        "notify the owner in the app. Undo revokes the permissions, unlinks the base, then "
        "deletes the workspace." + _DEMO_NOTE,
        _WORKSPACE_CREATION_STEPS,
        _schema(
            {
                "owner_id": {**_ID, "description": "the auth user id of the owner"},
                "name": {"type": "string", "minLength": 1, "maxLength": 200},
                "airtable_base_id": _BASE_ID,
            },
            {
                "plan": {"type": "string", "enum": ["free", "pro", "team"], "default": "free"},
                "members": {
                    "type": "array",
                    "items": _ID,
                    "uniqueItems": True,
                    "maxItems": 100,
                    "default": [],
                    "description": "auth user ids that get member_role",
                },
                "member_role": {
                    "type": "string",
                    "enum": ["viewer", "editor", "admin"],
                    "default": "editor",
                },
            },
            _WORKSPACE_CREATION_STEPS,
        ),
    ),
    _Template(
        "data_synchronization",
        "Synchronise an Airtable table: export up to max_records records from the gateway, "
        "transform the chosen fields in the automation services, write the changed records "
        "back through the gateway as one batch, notify the requester. Undo reverts the "
        "batch, then discards the transformation and the export. Records travel through "
        "step outputs, so keep a run below SAGA_MAX_OUTPUT_BYTES." + _DEMO_NOTE,
        _DATA_SYNCHRONIZATION_STEPS,
        _schema(
            {
                "base_id": _BASE_ID,
                "table": _TABLE,
                "fields": {
                    "type": "array",
                    "items": {"type": "string", "minLength": 1},
                    "minItems": 1,
                    "uniqueItems": True,
                    "description": "the fields to transform",
                },
                "operations": {
                    "type": "array",
                    "items": {
                        "type": "string",
                        "enum": ["trim", "lowercase", "uppercase", "titlecase"],
                    },
                    "minItems": 1,
                    "description": "applied in order to each string value of the fields",
                },
                "requested_by": {**_ID, "description": "the auth user id to notify"},
            },
            {
                "max_records": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 1000,
                    "default": 100,
                },
            },
            _DATA_SYNCHRONIZATION_STEPS,
        ),
    ),
    _Template(
        "ai_analysis",
        "Run an AI analysis of an Airtable table: reserve quota units for the workspace in "
        "auth; run the analysis job in the automation services by choreography (an event "
        "step: the command ai.analysis_requested goes to the commands stream and the saga "
        "waits for ai.analysis_completed, whose data is the job, or ai.analysis_failed; "
        "the `events` consumer must run); store its summary as a record in the results "
        "table; notify the requester. Undo deletes the stored record, discards the job "
        "(HTTP DELETE on the automation services) and releases the quota reservation."
        + _EVENT_DEMO_NOTE,
        _AI_ANALYSIS_STEPS,
        _schema(
            {
                "workspace_id": {**_ID, "description": "the auth workspace id"},
                "base_id": _BASE_ID,
                "table": _TABLE,
                "analysis_type": {
                    "type": "string",
                    "enum": ["summary", "sentiment", "classification"],
                },
                "requested_by": {**_ID, "description": "the auth user id to notify"},
            },
            {
                "units": {"type": "integer", "minimum": 1, "maximum": 100000, "default": 1000},
                "results_table": {**_TABLE, "default": "AI Results"},
                "prompt": {"type": "string", "maxLength": 2000, "default": ""},
            },
            _AI_ANALYSIS_STEPS,
        ),
    ),
    _Template(
        "webhook_processing",
        "Process an incoming webhook registered in the Airtable gateway: validate the "
        "delivery (known webhook, event not seen before) and record it, apply its record "
        "changes to the webhook's table as one batch, acknowledge to the sender's callback "
        "through the automation services. Undo reverts the batch, then releases the "
        "delivery so the event can be delivered again." + _DEMO_NOTE,
        _WEBHOOK_PROCESSING_STEPS,
        _schema(
            {
                "webhook_id": {**_ID, "description": "the gateway's webhook id"},
                "event_id": {"type": "string", "minLength": 1, "maxLength": 200},
                "changes": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 100,
                    "items": {
                        "type": "object",
                        "required": ["id", "fields"],
                        "properties": {"id": _ID, "fields": {"type": "object"}},
                    },
                    "description": "record updates: [{id, fields}]",
                },
            },
            {},
            _WEBHOOK_PROCESSING_STEPS,
        ),
    ),
]
_TEMPLATES = {template.name: template for template in _TEMPLATE_LIST}
_VALIDATORS = {
    template.name: jsonschema_rs.Draft202012Validator(
        template.payload_schema, validate_formats=True
    )
    for template in _TEMPLATE_LIST
}


def template_names() -> frozenset[str]:
    """The names of the predefined workflows."""
    return frozenset(_TEMPLATES)


def list_templates() -> list[dict[str, Any]]:
    """The five workflows for `GET /workflows/templates`: name, description, steps (with
    placeholders, as in a `POST /saga/start` definition) and payload JSON Schema. Copies."""
    return [template.to_json() for template in _TEMPLATE_LIST]


def build_definition(
    workflow: str, payload: Mapping[str, Any], correlation_id: str | None = None
) -> dict[str, Any]:
    """The saga definition (`POST /saga/start` format) of `workflow` for `payload`.

    The payload is validated against the template's JSON Schema and optional fields get
    their defaults. With `fail_at`, that step's action body (an event step's `data`)
    carries `"demo_fail": true`.
    Raises `UnknownWorkflow` for an unknown name and `InvalidPayload` (field such as
    `payload.email`, or `payload` itself) for a payload that does not match.
    """
    template = _TEMPLATES.get(workflow)
    if template is None:
        raise UnknownWorkflow(workflow)
    if not isinstance(payload, Mapping):
        raise InvalidPayload("payload", "must be a JSON object")
    data = copy.deepcopy(dict(payload))
    _validate(workflow, data)
    for key, schema in template.payload_schema["properties"].items():
        if key not in data and "default" in schema:
            data[key] = copy.deepcopy(schema["default"])
    steps = copy.deepcopy(template.steps)
    fail_at = data.get("fail_at")
    if fail_at is not None:
        for step in steps:
            if step["name"] == fail_at:
                action = step["action"]
                action["data" if "event" in action else "body"]["demo_fail"] = True
    definition: dict[str, Any] = {"saga_type": workflow, "payload": data, "steps": steps}
    if template.webhook is not None:
        definition["webhook"] = dict(template.webhook)
    if correlation_id is not None:
        definition["correlation_id"] = correlation_id
    return definition


def _validate(workflow: str, payload: dict[str, Any]) -> None:
    error = next(_VALIDATORS[workflow].iter_errors(payload), None)
    if error is None:
        return
    field = "payload" + "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.instance_path
    )
    kind = error.kind
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.Required):
        raise InvalidPayload(f"{field}.{kind.property}", "is required")
    message = error.message
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    raise InvalidPayload(field, message)


# Event types that start a workflow by themselves (choreography): the event's data is the
# payload. POST /events/airtable.webhook_received {"data": {...}} starts webhook_processing.
TRIGGERS: dict[str, tuple[str, ...]] = {"webhook_processing": ("airtable.webhook_received",)}


def triggered_by(event_type: str) -> list[str]:
    """The workflows that an event of `event_type` (with no saga or correlation id) starts."""
    return [name for name, types in TRIGGERS.items() if event_type in types]
