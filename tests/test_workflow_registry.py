"""Workflows a team owns (issue 13): versioned documents in the registry over the real Redis,
sagas started from them by the real worker, roles, lint and plan over HTTP."""

from __future__ import annotations

import copy
import time
import uuid
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app

ADMIN_KEY, READER_KEY = "wf-admin-key", "wf-reader-key"


@pytest.fixture(scope="module")
def app(engine: Any, worker: Any) -> Flask:
    return create_app(
        {"API_KEYS": [f"ops:admin:{ADMIN_KEY}", f"dash:reader:{READER_KEY}"], "TESTING": True},
        engine=engine,
    )


@pytest.fixture()
def client(app: Flask) -> FlaskClient:
    c = app.test_client()
    c.environ_base["HTTP_X_API_KEY"] = ADMIN_KEY
    return c


def document(**extra: Any) -> dict[str, Any]:
    """A team's workflow over the stub service: reserve, charge, notify."""
    return {
        "description": "reserve stock, charge, tell the customer",
        "payload_schema": {
            "type": "object",
            "required": ["order_id"],
            "properties": {
                "order_id": {"type": "string", "minLength": 1, "pattern": "^[a-z0-9-]+$"},
                "amount": {"type": "integer", "minimum": 1, "default": 10},
            },
        },
        "steps": [
            {
                "name": "reserve",
                "action": {"service": "svc", "path": "/ok/reserve/{{payload.order_id}}"},
                "compensation": {
                    "service": "svc",
                    "method": "DELETE",
                    "path": "/ok/reservations/{{steps.reserve.output.id}}",
                },
            },
            {
                "name": "charge",
                "action": {
                    "service": "svc",
                    "path": "/ok/charge",
                    "body": {"amount": "{{payload.amount}}"},
                },
                "compensation": {"service": "svc", "path": "/ok/refund"},
            },
            {
                "name": "notify",
                "action": {"service": "svc", "path": "/ok/notify"},
                "compensation": "none",
            },
        ],
        "examples": [{"name": "small", "payload": {"order_id": "o-1"}}],
        **extra,
    }


def unique() -> str:
    return f"orders_{uuid.uuid4().hex[:8]}"


def wait_status(client: FlaskClient, saga_id: str, *statuses: str) -> dict[str, Any]:
    deadline = time.time() + 20
    while True:
        doc = client.get(f"/saga/{saga_id}/status").get_json()
        if doc["status"] in statuses:
            return doc  # type: ignore[no-any-return]
        assert time.time() < deadline, doc
        time.sleep(0.05)


def test_register_version_and_start_records_the_version(client: FlaskClient) -> None:
    """PUT registers v1 (201), the same content again is a no-op (200, still v1), a change
    is v2; v1 stays readable unchanged; a saga records the version it runs, and a saga
    started from v1 keeps v1's steps after v2 exists."""
    name = unique()
    first = client.put(f"/workflows/{name}", json=document())
    assert first.status_code == 201, first.get_json()
    assert first.get_json()["version"] == 1
    again = client.put(f"/workflows/{name}", json=document())
    assert again.status_code == 200 and again.get_json()["version"] == 1
    old = client.post(f"/workflows/{name}/start", json={"payload": {"order_id": "o-7"}})
    assert old.status_code == 202, old.get_json()
    assert old.get_json()["workflow"] == {"name": name, "version": 1}

    changed = document()
    changed["steps"][2]["action"]["path"] = "/ok/notify-v2"
    second = client.put(f"/workflows/{name}", json=changed)
    assert second.status_code == 201 and second.get_json()["version"] == 2
    latest = client.get(f"/workflows/{name}").get_json()
    assert latest["version"] == 2 and [v["version"] for v in latest["versions"]] == [1, 2]
    v1 = client.get(f"/workflows/{name}/versions/1").get_json()
    assert v1["steps"][2]["action"]["path"] == "/ok/notify"
    assert client.get(f"/workflows/{name}/versions/3").status_code == 404

    done = wait_status(client, old.get_json()["saga_id"], "COMPLETED")
    assert done["workflow"] == {"name": name, "version": 1}
    new = client.post(f"/workflows/{name}/start", json={"payload": {"order_id": "o-8"}})
    assert new.get_json()["workflow"] == {"name": name, "version": 2}
    assert new.get_json()["payload"]["amount"] == 10  # the default filled in
    pinned = client.post(
        f"/workflows/{name}/start", json={"payload": {"order_id": "o-9"}, "version": 1}
    )
    assert pinned.get_json()["workflow"] == {"name": name, "version": 1}
    listed = client.get("/workflows/templates").get_json()["templates"]
    assert [t["name"] for t in listed][:5] == [
        "user_registration",
        "workspace_creation",
        "data_synchronization",
        "ai_analysis",
        "webhook_processing",
    ]
    mine = next(t for t in listed if t["name"] == name)
    assert mine["version"] == 2 and "compensation" not in mine["steps"][2]


def test_retire_stops_new_starts_but_not_running_sagas(client: FlaskClient) -> None:
    """DELETE retires: starts get 409, a saga already running completes, the versions stay
    readable; PUT brings the workflow back without a new version."""
    name = unique()
    slow = document()
    slow["steps"][2]["action"]["path"] = "/slow/1/notify"
    assert client.put(f"/workflows/{name}", json=slow).status_code == 201
    running = client.post(f"/workflows/{name}/start", json={"payload": {"order_id": "o-1"}})
    retired = client.delete(f"/workflows/{name}")
    assert retired.status_code == 200 and retired.get_json()["retired"] is True
    refused = client.post(f"/workflows/{name}/start", json={"payload": {"order_id": "o-2"}})
    assert refused.status_code == 409 and "retired" in refused.get_json()["message"]
    assert name not in [
        t["name"] for t in client.get("/workflows/templates").get_json()["templates"]
    ]
    assert (
        wait_status(client, running.get_json()["saga_id"], "COMPLETED")["workflow"]["version"] == 1
    )
    back = client.put(f"/workflows/{name}", json=slow)
    assert back.status_code == 200 and back.get_json()["retired"] is False
    assert back.get_json()["version"] == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d["steps"][1].pop("compensation"), "steps[1].compensation"),
        (lambda d: d["steps"][0]["action"].update(service="billing"), "steps[0].action.service"),
        (lambda d: d["payload_schema"].update(type="array"), "payload_schema.type"),
        (
            lambda d: d["payload_schema"]["properties"]["order_id"].update(pattern="("),
            "payload_schema",
        ),
        (
            lambda d: d["steps"][0]["action"].update(path="/ok/{{payload.customer}}"),
            "steps[0].action",
        ),
        (
            lambda d: d["steps"][0]["compensation"].update(path="/ok/x/{{steps.charge.output.id}}"),
            "steps[0].compensation",
        ),
        (lambda d: d["examples"][0]["payload"].pop("order_id"), "examples[0].payload.order_id"),
        (
            lambda d: d.update(timeout_seconds=5, steps=[{**d["steps"][0], "timeout_seconds": 9}]),
            "steps[0].timeout_seconds",
        ),
    ],
)
def test_registration_refuses_with_the_field_and_writes_nothing(
    client: FlaskClient, change: Any, field: str
) -> None:
    name = unique()
    bad = copy.deepcopy(document())
    change(bad)
    answer = client.put(f"/workflows/{name}", json=bad)
    assert answer.status_code == 422, answer.get_json()
    assert field in answer.get_json()["errors"]["json"], answer.get_json()
    assert client.get(f"/workflows/{name}").status_code == 404


def test_bad_bodies_and_roles(client: FlaskClient, app: Flask) -> None:
    name = unique()
    assert client.put(f"/workflows/{name}", json={**document(), "name": "other"}).status_code == 422
    assert client.put(f"/workflows/{name}", json={**document(), "extra": 1}).status_code == 422
    assert client.put(f"/workflows/{name}", data="x: 1", content_type="text/yaml").status_code in (
        400,
        415,
        422,
    )
    reader = app.test_client()
    reader.environ_base["HTTP_X_API_KEY"] = READER_KEY
    assert reader.put(f"/workflows/{name}", json=document()).status_code == 403
    assert client.put(f"/workflows/{name}", json=document()).status_code == 201
    assert reader.delete(f"/workflows/{name}").status_code == 403
    assert reader.get(f"/workflows/{name}").status_code == 200
    assert reader.post(f"/workflows/{name}/lint", json=document()).status_code == 200
    assert client.get("/workflows/no_such_workflow").status_code == 404
    reserved = client.put("/workflows/templates", json=document())
    assert reserved.status_code == 422 and "name" in reserved.get_json()["errors"]["json"]


def test_lint_over_http_reports_warnings_and_errors(client: FlaskClient) -> None:
    name = unique()
    report = client.post(f"/workflows/{name}/lint", json=document()).get_json()
    assert report["ok"] is True
    assert [w["rule"] for w in report["warnings"]] == ["no-compensation"]
    assert report["warnings"][0]["field"] == "steps[2].compensation"
    bad = document()
    bad["steps"][0]["compensation"]["path"] = "/ok/x/{{steps.charge.output.id}}"
    report = client.post(f"/workflows/{name}/lint", json=bad).get_json()
    assert report["ok"] is False
    assert report["errors"][0]["rule"] == "output-of-later-step"
    assert client.get(f"/workflows/{name}").status_code == 404  # lint registers nothing


def test_plan_over_http_for_a_registered_workflow(client: FlaskClient) -> None:
    name = unique()
    assert client.put(f"/workflows/{name}", json=document()).status_code == 201
    plan = client.post(f"/workflows/{name}/plan", json={"fail_at": "notify"}).get_json()
    assert [r["step"] for r in plan["run"]] == ["reserve", "charge", "notify"]
    assert plan["run"][-1]["outcome"] == "FAILED"
    assert [c["step"] for c in plan["compensate"]] == ["charge", "reserve"]
    assert plan["compensate"][1]["call"].startswith("svc DELETE /ok/reservations/")
    assert plan["version"] == 1 and plan["final_status"] == "COMPENSATED"
    bad = client.post(f"/workflows/{name}/plan", json={"fail_at": "nope"})
    assert bad.status_code == 422 and "fail_at" in bad.get_json()["errors"]["json"]


def test_a_team_workflow_with_a_trigger_starts_from_its_event(
    client: FlaskClient, engine: Any, consumer: None
) -> None:
    """A registered workflow's `triggers` start it from `POST /events/{type}` (the events
    consumer runs); once retired, the event starts nothing."""
    name = unique()
    event_type = f"orders.placed-{uuid.uuid4().hex[:6]}"
    assert client.put(f"/workflows/{name}", json=document(triggers=[event_type])).status_code == 201
    answer = client.post(f"/events/{event_type}", json={"data": {"order_id": "o-42"}})
    assert answer.status_code == 202, answer.get_json()
    (saga_id,) = answer.get_json()["matched_sagas"]
    deadline = time.time() + 15
    while not engine.store.redis.exists(engine.store.keys.saga(saga_id)):
        assert time.time() < deadline, "the trigger started nothing"
        time.sleep(0.05)
    saga = wait_status(client, saga_id, "COMPLETED")
    assert saga["workflow"] == {"name": name, "version": 1}
    assert saga["payload"] == {"order_id": "o-42", "amount": 10}
    client.delete(f"/workflows/{name}")
    later = client.post(f"/events/{event_type}", json={"data": {"order_id": "o-43"}})
    assert later.get_json()["matched_sagas"] == []
