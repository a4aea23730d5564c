"""The five predefined workflows: definitions the engine accepts, payload validation naming
the field, and the demo failure flag."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from sagas.definition import parse_definition
from sagas.errors import InvalidPayload, UnknownWorkflow
from sagas.placeholders import iter_references
from sagas.settings import DEFAULT_SEED_SERVICES, Settings
from sagas.templates import build_definition, list_templates

SETTINGS = Settings(
    services={name: url for name, (_var, url) in DEFAULT_SEED_SERVICES.items()},
)

WORKFLOWS = [
    "user_registration",
    "workspace_creation",
    "data_synchronization",
    "ai_analysis",
    "webhook_processing",
]

# The smallest valid payload of each workflow: only its required fields.
PAYLOADS: dict[str, dict[str, Any]] = {
    "user_registration": {"email": "ada@example.com", "name": "Ada Lovelace"},
    "workspace_creation": {
        "owner_id": "usr_1",
        "name": "Research",
        "airtable_base_id": "appDemoBase",
    },
    "data_synchronization": {
        "base_id": "appDemoBase",
        "table": "Contacts",
        "fields": ["Email"],
        "operations": ["trim", "lowercase"],
        "requested_by": "usr_1",
    },
    "ai_analysis": {
        "workspace_id": "ws_1",
        "base_id": "appDemoBase",
        "table": "Contacts",
        "analysis_type": "summary",
        "requested_by": "usr_1",
    },
    "webhook_processing": {
        "webhook_id": "whDemo",
        "event_id": "evt-1",
        "changes": [{"id": "rec1", "fields": {"Status": "done"}}],
    },
}


# Event steps (choreography) and the service that consumes their command.
EVENT_SERVICES = {"ai.analysis_requested": "notification"}


def template(name: str) -> dict[str, Any]:
    return next(t for t in list_templates() if t["name"] == name)


def carried(action: dict[str, Any]) -> dict[str, Any]:
    """What an action sends: an HTTP call's body, an event step's command data."""
    return action["data"] if "event" in action else action["body"]  # type: ignore[no-any-return]


def test_list_templates_has_the_five_workflows_in_the_documented_shape() -> None:
    """list_templates() lists the five workflows, each with name, description, steps and an
    object payload schema whose required fields it names."""
    templates = list_templates()
    assert [t["name"] for t in templates] == WORKFLOWS
    for t in templates:
        assert set(t) == {"name", "description", "steps", "payload_schema"}
        assert "fail_at" in t["description"] and "demo_fail" in t["description"]
        assert t["steps"] and all({"name", "action"} <= set(step) for step in t["steps"])
        schema = t["payload_schema"]
        assert schema["type"] == "object"
        assert set(schema["required"]) == set(PAYLOADS[t["name"]])
        assert schema["properties"]["fail_at"]["enum"] == [s["name"] for s in t["steps"]]
        assert "fail_at" not in schema["required"]


def test_list_templates_returns_copies() -> None:
    """Changing what list_templates() returned changes neither later answers nor definitions."""
    first = list_templates()
    first[0]["steps"].clear()
    first[0]["payload_schema"]["required"].append("nothing")
    assert list_templates()[0]["steps"]
    assert "nothing" not in list_templates()[0]["payload_schema"]["required"]
    build_definition("user_registration", PAYLOADS["user_registration"])


@pytest.mark.parametrize("workflow", WORKFLOWS)
def test_every_definition_parses_with_the_seed_services(workflow: str) -> None:
    """build_definition's output is accepted by parse_definition with only auth, airtable and
    notification registered, and its steps are the template's, in order."""
    data = build_definition(workflow, PAYLOADS[workflow], correlation_id="req-1")
    parsed = parse_definition(data, SETTINGS)
    assert parsed.saga_type == workflow
    assert parsed.correlation_id == "req-1"
    assert [s.name for s in parsed.steps] == [s["name"] for s in template(workflow)["steps"]]
    assert {s.action.kind for s in parsed.steps} <= {"http", "event"}
    http = [s.action for s in parsed.steps if s.action.kind == "http"]
    assert {a.spec["service"] for a in http} <= set(DEFAULT_SEED_SERVICES)
    events = [s.action.spec["event"] for s in parsed.steps if s.action.kind == "event"]
    assert events == (["ai.analysis_requested"] if workflow == "ai_analysis" else [])
    assert "correlation_id" not in build_definition(workflow, PAYLOADS[workflow])


@pytest.mark.parametrize("workflow", WORKFLOWS)
def test_every_changing_step_has_a_compensation_on_the_same_service(workflow: str) -> None:
    """Each step but the notifications has an HTTP compensation on its own service (for an
    event step, the service consuming its command); every action carries a JSON body (an
    event step, JSON data) and no step carries demo_fail without fail_at."""
    for step in build_definition(workflow, PAYLOADS[workflow])["steps"]:
        action, compensation = step["action"], step.get("compensation")
        assert isinstance(carried(action), dict)
        assert "demo_fail" not in carried(action)
        if "event" in action:
            assert compensation is not None, step["name"]
            assert compensation["service"] == EVENT_SERVICES[action["event"]]
        elif action["path"] == "/notifications":
            assert compensation is None
        else:
            assert compensation is not None, step["name"]
            assert compensation["service"] == action["service"]


def test_compensations_use_the_created_ids() -> None:
    """A compensation that undoes a creation names the created id from the step's output."""
    steps = template("user_registration")["steps"]
    assert steps[0]["compensation"]["path"] == "/users/{{steps.create_account.output.id}}"
    assert (
        steps[1]["compensation"]["path"]
        == "/workspaces/{{steps.create_default_workspace.output.id}}"
    )
    for name in WORKFLOWS:
        for step in template(name)["steps"]:
            if step.get("compensation"):
                refs = {r.step for r in iter_references(step["compensation"]) if r.step}
                assert step["name"] in refs, (name, step["name"])


def test_optional_fields_get_their_defaults_and_extra_fields_are_kept() -> None:
    """Missing optional fields get the schema's defaults; given values and extra fields stay."""
    data = build_definition("user_registration", {**PAYLOADS["user_registration"], "ref": 7})
    assert data["payload"] == {
        "email": "ada@example.com",
        "name": "Ada Lovelace",
        "plan": "free",
        "workspace_name": "My workspace",
        "ref": 7,
    }
    data = build_definition(
        "workspace_creation", {**PAYLOADS["workspace_creation"], "members": ["usr_2"]}
    )
    assert data["payload"]["members"] == ["usr_2"]
    assert data["payload"]["member_role"] == "editor"


def test_build_definition_does_not_change_the_callers_payload() -> None:
    """The payload passed in is left as it was (defaults go into a copy)."""
    payload = copy.deepcopy(PAYLOADS["ai_analysis"])
    build_definition("ai_analysis", payload)
    assert payload == PAYLOADS["ai_analysis"]


@pytest.mark.parametrize("workflow", WORKFLOWS)
def test_missing_required_field_is_an_invalid_payload_naming_it(workflow: str) -> None:
    """Leaving out any required field raises InvalidPayload with field payload.<field>."""
    for field in PAYLOADS[workflow]:
        payload = {k: v for k, v in PAYLOADS[workflow].items() if k != field}
        with pytest.raises(InvalidPayload) as caught:
            build_definition(workflow, payload)
        assert caught.value.field == f"payload.{field}"
        assert caught.value.message == "is required"


@pytest.mark.parametrize(
    ("workflow", "field", "value"),
    [
        ("user_registration", "name", 42),
        ("user_registration", "email", ["ada@example.com"]),
        ("workspace_creation", "members", "usr_2"),
        ("data_synchronization", "fields", "Email"),
        ("ai_analysis", "units", "1000"),
        ("webhook_processing", "changes", {"id": "rec1"}),
    ],
)
def test_wrong_type_is_an_invalid_payload_naming_the_field(
    workflow: str, field: str, value: Any
) -> None:
    """A field of the wrong JSON type raises InvalidPayload naming payload.<field>."""
    with pytest.raises(InvalidPayload) as caught:
        build_definition(workflow, {**PAYLOADS[workflow], field: value})
    assert caught.value.field == f"payload.{field}"
    assert "type" in caught.value.message


@pytest.mark.parametrize(
    ("workflow", "change", "field"),
    [
        ("user_registration", {"email": "not-an-email"}, "payload.email"),
        ("user_registration", {"plan": "gold"}, "payload.plan"),
        ("workspace_creation", {"airtable_base_id": "base-1"}, "payload.airtable_base_id"),
        ("data_synchronization", {"operations": ["reverse"]}, "payload.operations[0]"),
        ("ai_analysis", {"units": 0}, "payload.units"),
        (
            "webhook_processing",
            {"changes": [{"id": "rec1", "fields": {}}, {"fields": {}}]},
            "payload.changes[1].id",
        ),
    ],
)
def test_values_outside_the_schema_are_invalid_payloads(
    workflow: str, change: dict[str, Any], field: str
) -> None:
    """Formats, enums, patterns, bounds and nested items are checked, naming the deep field."""
    with pytest.raises(InvalidPayload) as caught:
        build_definition(workflow, {**PAYLOADS[workflow], **change})
    assert caught.value.field == field


@pytest.mark.parametrize("payload", [[], "x", None, 3])
def test_a_payload_that_is_not_an_object_is_invalid(payload: Any) -> None:
    """A payload that is not a JSON object raises InvalidPayload with field `payload`."""
    with pytest.raises(InvalidPayload) as caught:
        build_definition("user_registration", payload)
    assert caught.value.field == "payload"


def test_unknown_workflow_raises_unknown_workflow() -> None:
    """An unknown workflow name raises UnknownWorkflow carrying the name."""
    with pytest.raises(UnknownWorkflow) as caught:
        build_definition("order_checkout", {})
    assert caught.value.name == "order_checkout"


@pytest.mark.parametrize("workflow", WORKFLOWS)
def test_fail_at_marks_exactly_that_step(workflow: str) -> None:
    """fail_at adds "demo_fail": true to that step's action body (an event step's data) and
    to no other body."""
    names = [s["name"] for s in template(workflow)["steps"]]
    for name in names:
        data = build_definition(workflow, {**PAYLOADS[workflow], "fail_at": name})
        parse_definition(data, SETTINGS)
        marked = [s["name"] for s in data["steps"] if carried(s["action"]).get("demo_fail")]
        assert marked == [name]
        assert all(
            "demo_fail" not in (s.get("compensation") or {}).get("body", {}) for s in data["steps"]
        )
        assert carried(data["steps"][names.index(name)]["action"])["demo_fail"] is True


def test_fail_at_does_not_leak_into_later_definitions() -> None:
    """A definition built with fail_at leaves the template and later definitions unmarked."""
    build_definition("ai_analysis", {**PAYLOADS["ai_analysis"], "fail_at": "run_analysis"})
    data = build_definition("ai_analysis", PAYLOADS["ai_analysis"])
    assert not any("demo_fail" in carried(s["action"]) for s in data["steps"])
    assert not any("demo_fail" in carried(s["action"]) for s in template("ai_analysis")["steps"])


def test_run_analysis_is_an_event_step() -> None:
    """ai_analysis's run_analysis publishes ai.analysis_requested with what its HTTP body
    carried, awaits ai.analysis_completed or ai.analysis_failed, and is undone over HTTP by
    deleting the job named in its reply; fail_at puts demo_fail in its data (no body)."""
    step = next(s for s in template("ai_analysis")["steps"] if s["name"] == "run_analysis")
    assert step["action"] == {
        "event": "ai.analysis_requested",
        "await": {"success": "ai.analysis_completed", "failure": "ai.analysis_failed"},
        "data": {
            "workspace_id": "{{payload.workspace_id}}",
            "base_id": "{{payload.base_id}}",
            "table": "{{payload.table}}",
            "analysis_type": "{{payload.analysis_type}}",
            "prompt": "{{payload.prompt}}",
            "max_units": "{{payload.units}}",
            "quota_reservation_id": "{{steps.reserve_quota.output.id}}",
        },
    }
    assert step["compensation"] == {
        "service": "notification",
        "method": "DELETE",
        "path": "/ai/jobs/{{steps.run_analysis.output.id}}",
    }
    data = build_definition("ai_analysis", {**PAYLOADS["ai_analysis"], "fail_at": "run_analysis"})
    parsed = parse_definition(data, SETTINGS)
    action = next(s.action for s in parsed.steps if s.name == "run_analysis")
    assert action.kind == "event"
    assert action.spec["data"]["demo_fail"] is True
    assert "body" not in action.spec
    assert "ai.analysis_requested" in template("ai_analysis")["description"]


def test_unknown_fail_at_is_an_invalid_payload() -> None:
    """A fail_at that names no step of the workflow raises InvalidPayload on payload.fail_at."""
    with pytest.raises(InvalidPayload) as caught:
        build_definition(
            "user_registration", {**PAYLOADS["user_registration"], "fail_at": "write_back"}
        )
    assert caught.value.field == "payload.fail_at"
    with pytest.raises(InvalidPayload) as caught:
        build_definition("user_registration", {**PAYLOADS["user_registration"], "fail_at": 1})
    assert caught.value.field == "payload.fail_at"


@pytest.mark.parametrize(
    ("workflow", "field"),
    [
        ("workspace_creation", "owner_id"),
        ("data_synchronization", "table"),
        ("ai_analysis", "workspace_id"),
        ("ai_analysis", "table"),
        ("ai_analysis", "results_table"),
        ("webhook_processing", "webhook_id"),
    ],
)
@pytest.mark.parametrize("value", [".", ".."])
def test_ids_used_in_paths_cannot_be_dot_segments(workflow: str, field: str, value: str) -> None:
    """An id or table name that fills a path segment cannot be '.' or '..'."""
    with pytest.raises(InvalidPayload) as caught:
        build_definition(workflow, {**PAYLOADS[workflow], field: value})
    assert caught.value.field == f"payload.{field}"


@pytest.mark.parametrize("value", ["...", ".hidden", "a.b", "v1.2", "..x"])
def test_ids_with_dots_that_are_not_dot_segments_are_fine(value: str) -> None:
    """Dots inside an id are allowed: only a whole '.' or '..' is refused."""
    definition = build_definition("ai_analysis", {**PAYLOADS["ai_analysis"], "workspace_id": value})
    assert parse_definition(definition, SETTINGS).payload["workspace_id"] == value


@pytest.mark.parametrize("workflow", WORKFLOWS)
def test_every_payload_field_in_a_path_refuses_dot_segments(workflow: str) -> None:
    """Every payload field that fills a path segment of a template refuses '..' (so no field
    was forgotten in the list above)."""
    in_paths = {
        ref.path[0]
        for step in template(workflow)["steps"]
        for action in (step["action"], step.get("compensation") or {})
        for ref in iter_references(action.get("path", "").split("?")[0])
        if ref.root == "payload"
    }
    for field in in_paths:
        with pytest.raises(InvalidPayload):
            build_definition(workflow, {**PAYLOADS[workflow], field: ".."})
