"""Examples in the OpenAPI document: request bodies that the API accepts, and answers as it
gives them (tests/test_openapi.py checks each against its schema, and starts every workflow
example against the demo services).

The workflows and their payload examples come from `workflow_examples()` only, which reads
what `sagas.templates` offers: a payload schema's first JSON Schema `examples` entry when it
has one, else the demo payload below (the demo services' seed data: docs/local-run.md).
"""

from __future__ import annotations

import copy
from typing import Any

from sagas.model import SagaStatus
from sagas.templates import builtin_workflows, list_templates

# Payloads that run to COMPLETED against the demo services (demo/services.py seeds usr_demo,
# ws_demo, appDemoBase with the table Contacts, webhook whDemo). Record ids of the demo
# change at every start, so webhook_processing's example is accepted and then compensated.
DEMO_PAYLOADS: dict[str, dict[str, Any]] = {
    "user_registration": {"email": "grace@example.com", "name": "Grace Hopper"},
    "workspace_creation": {
        "owner_id": "usr_demo",
        "name": "Research",
        "airtable_base_id": "appDemoBase",
    },
    "data_synchronization": {
        "base_id": "appDemoBase",
        "table": "Contacts",
        "fields": ["Name", "Email"],
        "operations": ["trim", "lowercase"],
        "requested_by": "usr_demo",
    },
    "ai_analysis": {
        "workspace_id": "ws_demo",
        "base_id": "appDemoBase",
        "table": "Contacts",
        "analysis_type": "summary",
        "requested_by": "usr_demo",
    },
    "webhook_processing": {
        "webhook_id": "whDemo",
        "event_id": "evt-1",
        "changes": [{"id": "rec0001", "fields": {"Name": "Ada King"}}],
    },
}


def workflow_examples() -> dict[str, dict[str, Any]]:
    """Every predefined workflow's name -> an example payload (in `list_templates` order)."""
    found: dict[str, dict[str, Any]] = {}
    for template in list_templates():
        schema = template.get("payload_schema") or {}
        given = schema.get("examples")
        if isinstance(given, list) and given and isinstance(given[0], dict):
            found[template["name"]] = copy.deepcopy(given[0])
        else:
            found[template["name"]] = copy.deepcopy(DEMO_PAYLOADS.get(template["name"], {}))
    return found


def workflow_names() -> list[str]:
    """The names the workflow path parameter may take."""
    return list(workflow_examples())


SAGA_ID = "e647017d-0273-4fd8-8b9f-4c8b8fae4054"
_AT = "2026-11-28T16:27:11.204Z"


def _step(name: str, output: Any, compensation: bool) -> dict[str, Any]:
    return {
        "name": name,
        "status": "COMPLETED",
        "attempts": 1,
        "started_at": _AT,
        "finished_at": _AT,
        "output": output,
        "error": None,
        "uncertain": False,
        "retry_pending": False,
        "compensation": (
            {"status": "PENDING", "attempts": 0, "error": None, "resolved_by_hand": False}
            if compensation
            else None
        ),
    }


def saga_example() -> dict[str, Any]:
    return {
        "saga_id": SAGA_ID,
        "saga_type": "user_registration",
        "status": "COMPLETED",
        "version": 9,
        "correlation_id": SAGA_ID,
        "payload": {
            "email": "grace@example.com",
            "name": "Grace Hopper",
            "plan": "free",
            "workspace_name": "My workspace",
        },
        "current_step": None,
        "created_at": _AT,
        "updated_at": _AT,
        "deadline_at": "2026-11-28T17:27:11.204Z",
        "finished_at": _AT,
        "failure": None,
        "compensation_failure": None,
        "steps": [
            _step("create_account", {"id": "usr_1f3a"}, True),
            _step("create_default_workspace", {"id": "ws_8c21"}, True),
            _step("send_welcome_notification", {"id": "ntf_55d0"}, False),
        ],
        "rerun_of": None,
        "reruns": [],
        "webhook": None,
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "workflow": {"name": "user_registration", "version": 1},
    }


_ERRORS = {
    400: ("Bad Request", "malformed JSON body: Expecting value: line 1 column 1 (char 0)"),
    401: (
        "Unauthorized",
        "missing or invalid API key: send `X-API-Key: <key>` or `Authorization: Bearer <key>`",
    ),
    403: ("Forbidden", "the key 'dashboard' has the role 'reader'; this request needs 'admin'"),
    404: ("Not Found", f"saga {SAGA_ID!r} not found"),
    409: ("Conflict", "the saga is COMPENSATED: nothing to compensate"),
    413: ("Request Entity Too Large", "The data value transmitted exceeds the capacity limit."),
    415: (
        "Unsupported Media Type",
        "a request body must be JSON: send it with `Content-Type: application/json`",
    ),
    422: ("Unprocessable Entity", "invalid payload.email: is required"),
    503: ("Service Unavailable", "the state store (Redis) is unreachable; try again shortly"),
}


def error_example(code: int) -> dict[str, Any]:
    status, message = _ERRORS.get(code, ("Error", "see message"))
    body: dict[str, Any] = {"code": code, "status": status, "message": message}
    if code == 422:
        body["errors"] = {"json": {"payload.email": ["is required"]}}
    if code == 409:
        body["saga_status"] = "COMPENSATED"
    return body


def request_examples(operation_id: str) -> dict[str, dict[str, Any]]:
    """Named examples (`{name: {"summary", "value"}}`) of an operation's request body."""
    reason = {"reason": "the customer asked to cancel (ticket 4711)"}
    if operation_id == "start_workflow":
        return {
            name: {"summary": name, "value": {"payload": payload}}
            for name, payload in workflow_examples().items()
        }
    if operation_id == "start_saga":
        return {
            "http_and_task": {
                "summary": "an HTTP step with its compensation, then a registered task",
                "value": {
                    "saga_type": "order",
                    "payload": {"email": "grace@example.com"},
                    "steps": [
                        {
                            "name": "create_account",
                            "action": {
                                "service": "auth",
                                "method": "POST",
                                "path": "/users",
                                "body": {"email": "{{payload.email}}"},
                            },
                            "compensation": {
                                "service": "auth",
                                "method": "DELETE",
                                "path": "/users/{{steps.create_account.output.id}}",
                            },
                        },
                        {"name": "noop", "action": {"task": "builtin.noop", "args": {"a": 1}}},
                    ],
                },
            }
        }
    if operation_id == "publish_event":
        return {
            "trigger": {
                "summary": "a trigger: starts webhook_processing once per event_id",
                "value": {
                    "event_id": "whDemo-evt-2",
                    "data": DEMO_PAYLOADS["webhook_processing"] | {"event_id": "evt-2"},
                },
            },
            "reply": {
                "summary": "a reply to an event step",
                "value": {
                    "saga_id": SAGA_ID,
                    "step": "run_analysis",
                    "data": {"analysis_id": "an_1", "summary": "three contacts"},
                },
            },
        }
    if operation_id == "compensate_saga":
        return {"manual": {"summary": "undo a completed saga", "value": reason}}
    if operation_id == "rerun_saga":
        return {
            "same_payload": {"summary": "run it again", "value": reason},
            "new_payload": {
                "summary": "run it again with another payload",
                "value": reason | {"payload": DEMO_PAYLOADS["user_registration"]},
            },
        }
    if operation_id in ("register_workflow", "lint_workflow"):
        return {"document": {"summary": "a workflow document", "value": workflow_document()}}
    if operation_id == "plan_workflow":
        return {
            "fail_at": {
                "summary": "what runs and what is undone if create_default_workspace fails",
                "value": {"fail_at": "create_default_workspace"},
            }
        }
    if operation_id == "create_schedule":
        return {
            "cron": {
                "summary": "weekdays at 9:00 in Berlin",
                "value": {
                    "workflow": "user_registration",
                    "cron": "0 9 * * 1-5",
                    "timezone": "Europe/Berlin",
                    "payload": DEMO_PAYLOADS["user_registration"],
                },
            },
            "interval": {
                "summary": "every 10 minutes, missed firings run once",
                "value": {
                    "workflow": "user_registration",
                    "interval_seconds": 600,
                    "catch_up": "run_once",
                    "payload": DEMO_PAYLOADS["user_registration"],
                },
            },
        }
    if operation_id == "update_schedule":
        return {"cron": {"summary": "another cron expression", "value": {"cron": "30 8 * * *"}}}
    if operation_id in ("cancel_saga", "resolve_step", "skip_step", "retry_step"):
        return {"reason": {"summary": "a reason, kept in the history", "value": reason}}
    return {}


def workflow_document() -> dict[str, Any]:
    """A workflow document (docs/workflows.md): the built-in user_registration's."""
    return next(w for w in builtin_workflows() if w.name == "user_registration").content()


def _registered(document: dict[str, Any]) -> dict[str, Any]:
    at = "2026-12-08T02:22:26.590Z"
    version = {"version": 1, "registered_at": at, "source": "builtin", "digest": "7796be41" * 8}
    return {
        **document,
        "version": 1,
        "latest_version": 1,
        "retired": False,
        "registered_at": at,
        "source": "builtin",
        "versions": [version],
    }


SCHEDULE_EXAMPLE = {
    "catch_up": "skip",
    "correlation_id": "schedule:sch_458cbfa5efbb4006",
    "created_at": "2026-12-08T02:22:26.601Z",
    "cron": "0 9 * * 1-5",
    "fired": 0,
    "interval_seconds": None,
    "last_error": None,
    "last_fire_time": None,
    "last_saga_id": None,
    "next_fire_times": [
        "2026-12-08T09:00:00+01:00",
        "2026-12-09T09:00:00+01:00",
        "2026-12-10T09:00:00+01:00",
        "2026-12-11T09:00:00+01:00",
        "2026-12-14T09:00:00+01:00",
    ],
    "paused": False,
    "payload": {"email": "trial@example.com", "name": "Daily trial"},
    "schedule_id": "sch_458cbfa5efbb4006",
    "skipped": 0,
    "timezone": "Europe/Berlin",
    "version": None,
    "workflow": "user_registration",
}
LINT_EXAMPLE = {
    "errors": [],
    "ok": True,
    "warnings": [
        {
            "field": "steps[3].compensation",
            "message": (
                "step 'welcome' has no compensation: its effect stands when the saga is "
                "compensated after it completed (by hand, or a deadline)"
            ),
            "rule": "no-compensation",
        },
        {
            "field": "timeout_seconds",
            "message": (
                "the step timeouts add up to 930 s, above the saga's 600 s: slow steps "
                "can time the saga out"
            ),
            "rule": "step-timeouts-above-saga",
        },
    ],
    "workflow": "trial_signup",
}
PLAN_EXAMPLE = {
    "compensate": [
        {
            "call": "auth DELETE /workspaces/{{steps.create_workspace.output.id}}",
            "step": "create_workspace",
        },
        {"call": "auth DELETE /users/{{steps.create_account.output.id}}", "step": "create_account"},
    ],
    "effects_that_stand": [],
    "fail_at": "reserve_quota",
    "final_status": "COMPENSATED",
    "note": (
        "a plan: nothing was called. A compensation that fails stops the saga "
        "in COMPENSATION_FAILED, and the older undos wait for a person "
        "(docs/operations.md)"
    ),
    "run": [
        {"call": "auth POST /users", "outcome": "COMPLETED", "step": "create_account"},
        {
            "call": "auth POST /users/{{steps.create_account.output.id}}/workspaces",
            "outcome": "COMPLETED",
            "step": "create_workspace",
        },
        {
            "call": "auth POST /workspaces/{{steps.create_workspace.output.id}}/quota-reservations",
            "outcome": "FAILED",
            "step": "reserve_quota",
        },
    ],
    "skipped": ["welcome"],
    "uncertain": False,
    "version": 1,
    "workflow": "trial_signup",
}


def schema_examples() -> dict[str, Any]:
    """Component schema name -> an example of it (Swagger UI shows them for the answers)."""
    saga = saga_example()
    return {
        "Saga": saga,
        "Step": saga["steps"][0],
        "Failure": {
            "step": "grant_permissions",
            "reason": "error",
            "message": 'auth: HTTP 422 UNPROCESSABLE ENTITY: {"error": "demo failure requested"}',
        },
        "Error": error_example(404),
        "Published": {"event_id": "whDemo-evt-2", "matched_sagas": [SAGA_ID]},
        "SagaPage": {"items": [saga], "total": 1, "page": 1, "page_size": 50},
        "Steps": {"saga_id": SAGA_ID, "steps": saga["steps"]},
        "History": {
            "saga_id": SAGA_ID,
            "history": [
                {"at": _AT, "event": "created", "version": 1, "status": "RUNNING"},
                {
                    "at": _AT,
                    "event": "step_completed",
                    "version": 3,
                    "status": "RUNNING",
                    "step": "create_account",
                },
                {"at": _AT, "event": "saga_completed", "version": 9, "status": "COMPLETED"},
            ],
        },
        "Actions": {
            "saga_id": SAGA_ID,
            "status": "COMPLETED",
            "version": 9,
            "actions": [
                {
                    "action": "compensate",
                    "description": "undo every step that may have taken effect, newest first",
                    "step": None,
                    "step_number": None,
                }
            ],
        },
        "Templates": {
            "templates": [
                {
                    **w.template(),
                    "version": 1,
                    "triggers": list(w.triggers),
                    "timeout_seconds": w.timeout_seconds,
                }
                for w in builtin_workflows()
            ]
        },
        "Workflow": _registered(workflow_document()),
        "Lint": LINT_EXAMPLE,
        "Plan": PLAN_EXAMPLE,
        "Schedule": SCHEDULE_EXAMPLE,
        "ScheduleList": {"schedules": [SCHEDULE_EXAMPLE]},
        "DeadLetters": {
            "items": [
                {
                    "id": f"saga_{SAGA_ID}_compensated",
                    "saga_id": SAGA_ID,
                    "status": "COMPENSATED",
                    "service": "notification",
                    "path": "/hooks/sagas",
                    "attempts": 14,
                    "last_error": "HTTP 503",
                    "last_status_code": 503,
                    "created_at": _AT,
                    "dead_at": "2026-11-29T16:27:11.204Z",
                    "retries": 0,
                }
            ]
        },
        "Retried": {"id": f"saga_{SAGA_ID}_compensated", "status": "pending"},
        "Info": {
            "name": "saga-orchestrator",
            "version": "0.1.0",
            "patterns": ["orchestration", "choreography"],
            "links": {"docs": "/docs", "openapi": "/openapi.json", "health": "/health/"},
        },
        "Health": {
            "status": "healthy",
            "version": "0.1.0",
            "redis": "healthy",
            "workers": "healthy",
            "workers_alive": 1,
            "active_sagas": 0,
            "pending_sagas": 0,
            "compensation_failed_sagas": 0,
            "components": {
                "redis": {"status": "healthy", "reachable": True},
                "workers": {"status": "healthy", "alive": 1, "names": ["celery@host"]},
                "beat": {"status": "healthy", "lag_seconds": 2.1, "sweeps": 40},
            },
        },
        "Entries": {
            "items": [
                {
                    "id": "1795885955774-0",
                    "type": "ai.analysis_completed",
                    "saga_id": SAGA_ID,
                    "step": "run_analysis",
                    "data": '{"id": "job_42"}',
                    "event_id": "1795885955774-0",
                    "outcome": f"{SAGA_ID}:late",
                }
            ]
        },
        "Metrics": {
            "sagas": {
                "by_status": {status.value: 0 for status in SagaStatus} | {"COMPLETED": 1},
                "active": 0,
                "pending": 0,
                "started": {"user_registration": 1},
                "finished": {"user_registration": {"COMPLETED": 1}},
                "finished_again": {},
            },
            "steps": {"completed": 3},
            "compensations": {},
            "webhooks": {"queued": 1, "delivered": 1},
            "durations": {"COMPLETED": {"sum_seconds": 0.21, "count": 1}},
        },
    }
