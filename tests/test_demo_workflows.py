"""The five predefined workflows end to end: real worker, real Redis, the demo services.

Each case seeds data of its own in the demo services (unique users, bases, webhooks) and
reads back only the part of the services' state its saga can touch (its footprint), so
sagas of other tests cannot disturb the comparison.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from demo.services import DemoServices
from sagas.templates import build_definition, list_templates
from tests.conftest import ROOT, free_port, stop_process

WORKFLOWS = [t["name"] for t in list_templates()]
CONTACTS = [
    {"Name": "  ada lovelace", "Email": " ADA@Example.com "},
    {"Name": "grace hopper", "Email": "grace@example.com"},
]


@dataclass
class Case:
    """A workflow's payload over freshly seeded demo data, and the state its saga touches."""

    payload: dict[str, Any]
    footprint: Callable[[], dict[str, Any]]
    seeded: dict[str, str]


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def case(workflow: str, demo: DemoServices) -> Case:
    auth, airtable = demo.auth, demo.airtable

    def of(kind: str, collection: str, **match: Any) -> list[dict[str, Any]]:
        items = demo.state(kind)[collection].values()
        return [i for i in items if all(i.get(k) == v for k, v in match.items())]

    def table(base_id: str, name: str) -> dict[str, Any]:
        return dict(demo.state("airtable")["bases"][base_id]["tables"][name])

    if workflow == "user_registration":
        email = f"{unique('user-')}@example.com"

        def user_registration() -> dict[str, Any]:
            users = of("auth", "users", email=email)
            return {
                "users": users,
                "workspaces": [
                    w for u in users for w in of("auth", "workspaces", owner_id=u["id"])
                ],
                "notifications": of("notification", "notifications", to=email),
            }

        return Case({"email": email, "name": "Ada Lovelace"}, user_registration, {})

    if workflow == "workspace_creation":
        owner = auth.add_user(f"{unique('owner-')}@example.com", "Owner")
        member = auth.add_user(f"{unique('member-')}@example.com", "Member")
        base = airtable.add_base("CRM", {"Contacts": CONTACTS})

        def workspace_creation() -> dict[str, Any]:
            workspaces = of("auth", "workspaces", owner_id=owner)
            return {
                "workspaces": workspaces,
                "links": of("airtable", "links", base_id=base),
                "permissions": [
                    p for w in workspaces for p in of("auth", "permissions", workspace_id=w["id"])
                ],
                "notifications": of("notification", "notifications", to=owner),
            }

        payload = {
            "owner_id": owner,
            "name": "Research",
            "airtable_base_id": base,
            "members": [member],
        }
        return Case(payload, workspace_creation, {"owner": owner, "member": member, "base": base})

    if workflow == "data_synchronization":
        user = auth.add_user(f"{unique('sync-')}@example.com", "Syncer")
        base = airtable.add_base("CRM", {"Contacts": CONTACTS})

        def data_synchronization() -> dict[str, Any]:
            exports = of("airtable", "exports", base_id=base)
            return {
                "records": table(base, "Contacts"),
                "exports": exports,
                "transformations": [
                    t
                    for e in exports
                    for t in of("notification", "transformations", export_id=e["id"])
                ],
                "batches": of("airtable", "batches", base_id=base),
                "notifications": of("notification", "notifications", to=user),
            }

        payload = {
            "base_id": base,
            "table": "Contacts",
            "fields": ["Email"],
            "operations": ["trim", "lowercase"],
            "requested_by": user,
        }
        return Case(payload, data_synchronization, {"user": user, "base": base})

    if workflow == "ai_analysis":
        user = auth.add_user(f"{unique('ai-')}@example.com", "Analyst")
        workspace = auth.add_workspace(user, "Analytics")
        base = airtable.add_base("CRM", {"Contacts": CONTACTS, "AI Results": []})

        def ai_analysis() -> dict[str, Any]:
            return {
                "reservations": of("auth", "quota_reservations", workspace_id=workspace),
                "jobs": of("notification", "ai_jobs", workspace_id=workspace),
                "results": table(base, "AI Results"),
                "notifications": of("notification", "notifications", to=user),
            }

        payload = {
            "workspace_id": workspace,
            "base_id": base,
            "table": "Contacts",
            "analysis_type": "sentiment",
            "requested_by": user,
            "units": 250,
        }
        return Case(payload, ai_analysis, {"user": user, "workspace": workspace, "base": base})

    assert workflow == "webhook_processing"
    base = airtable.add_base("Tasks", {"Tasks": [{"Title": "write", "Status": "todo"}]})
    callback = f"https://hooks.example.com/{unique('cb-')}"
    webhook = airtable.add_webhook(base, "Tasks", callback)
    record = next(iter(table(base, "Tasks")))

    def webhook_processing() -> dict[str, Any]:
        return {
            "records": table(base, "Tasks"),
            "deliveries": of("airtable", "deliveries", webhook_id=webhook),
            "batches": of("airtable", "batches", base_id=base),
            "notifications": of("notification", "notifications", to=callback),
        }

    payload = {
        "webhook_id": webhook,
        "event_id": unique("evt-"),
        "changes": [{"id": record, "fields": {"Status": "done"}}],
    }
    return Case(
        payload,
        webhook_processing,
        {"base": base, "webhook": webhook, "record": record, "callback": callback},
    )


def last_changing_step(workflow: str) -> str:
    steps = next(t for t in list_templates() if t["name"] == workflow)["steps"]
    return [s["name"] for s in steps if s.get("compensation")][-1]


def outputs(saga: dict[str, Any]) -> dict[str, Any]:
    return {s["name"]: s["output"] for s in saga["steps"]}


def test_user_registration_completes(run: Any, demo: DemoServices) -> None:
    """user_registration creates the account and its default workspace and sends the welcome
    email about them."""
    c = case("user_registration", demo)
    saga = run(build_definition("user_registration", c.payload))
    assert saga["status"] == "COMPLETED", saga
    out = outputs(saga)
    state = c.footprint()
    [user] = state["users"]
    assert user["id"] == out["create_account"]["id"]
    assert (user["name"], user["plan"]) == ("Ada Lovelace", "free")
    [workspace] = state["workspaces"]
    assert workspace["id"] == out["create_default_workspace"]["id"]
    assert (workspace["name"], workspace["default"]) == ("My workspace", True)
    [mail] = state["notifications"]
    assert (mail["channel"], mail["template"]) == ("email", "welcome")
    assert mail["data"] == {
        "name": "Ada Lovelace",
        "user_id": user["id"],
        "workspace_id": workspace["id"],
    }


def test_workspace_creation_completes(run: Any, demo: DemoServices) -> None:
    """workspace_creation creates the workspace, links the base to it, grants the owner and
    the member, and notifies the owner."""
    c = case("workspace_creation", demo)
    saga = run(build_definition("workspace_creation", c.payload))
    assert saga["status"] == "COMPLETED", saga
    state = c.footprint()
    [workspace] = state["workspaces"]
    assert (workspace["name"], workspace["default"]) == ("Research", False)
    [link] = state["links"]
    assert link["workspace_id"] == workspace["id"]
    [permission] = state["permissions"]
    assert permission["grants"] == [
        {"user_id": c.seeded["owner"], "role": "owner"},
        {"user_id": c.seeded["member"], "role": "editor"},
    ]
    [note] = state["notifications"]
    assert (note["channel"], note["template"]) == ("in_app", "workspace_created")
    assert note["data"]["workspace_id"] == workspace["id"]


def test_data_synchronization_completes(run: Any, demo: DemoServices) -> None:
    """data_synchronization exports the table, transforms the chosen field, writes the
    changed records back as one batch and notifies the requester."""
    c = case("data_synchronization", demo)
    saga = run(build_definition("data_synchronization", c.payload))
    assert saga["status"] == "COMPLETED", saga
    state = c.footprint()
    fields = [r["fields"] for r in state["records"].values()]
    assert fields == [
        {"Name": "  ada lovelace", "Email": "ada@example.com"},
        {"Name": "grace hopper", "Email": "grace@example.com"},
    ]
    [export] = state["exports"]
    assert len(export["records"]) == 2
    [transformation] = state["transformations"]
    assert len(transformation["records"]) == 1  # only the record that changed
    [batch] = state["batches"]
    assert batch["source"] == transformation["id"]
    [note] = state["notifications"]
    assert note["template"] == "sync_completed"
    assert note["data"]["updated"] == 1 and note["data"]["batch_id"] == batch["id"]


def stream_entries(engine: Any, stream: str, **match: str) -> list[dict[str, Any]]:
    """The entries of `stream` (oldest first) whose fields have the values `match`."""
    entries = reversed(engine.store.read_stream(stream, 1000))
    return [e for e in entries if all(e.get(k) == v for k, v in match.items())]


def wait_entries(
    engine: Any, stream: str, count: int, timeout: float = 10, **match: str
) -> list[dict[str, Any]]:
    """Wait until `stream` holds `count` entries matching `match`; returns them."""
    deadline = time.time() + timeout
    while True:
        found = stream_entries(engine, stream, **match)
        if len(found) >= count:
            return found
        assert time.time() < deadline, f"{len(found)} of {count} entries {match} in {stream}"
        time.sleep(0.02)


def test_ai_analysis_completes(run: Any, engine: Any, consumer: None, demo: DemoServices) -> None:
    """ai_analysis reserves the quota, runs the job by choreography (the notification
    service consumes the command and replies with the job), stores its summary as a record
    and notifies the requester."""
    c = case("ai_analysis", demo)
    saga = run(build_definition("ai_analysis", c.payload, correlation_id="corr-ai-1"))
    assert saga["status"] == "COMPLETED", saga
    state = c.footprint()
    [reservation] = state["reservations"]
    assert (reservation["units"], reservation["purpose"]) == (250, "ai_analysis")
    [job] = state["jobs"]
    assert job["quota_reservation_id"] == reservation["id"]
    assert job["analysis_type"] == "sentiment"
    assert outputs(saga)["run_analysis"] == job  # the reply's data is the step's output
    keys = engine.store.keys
    [command] = stream_entries(engine, keys.commands, saga_id=saga["saga_id"])
    assert command["type"] == "ai.analysis_requested"
    assert json.loads(command["data"]) == {
        "workspace_id": c.seeded["workspace"],
        "base_id": c.seeded["base"],
        "table": "Contacts",
        "analysis_type": "sentiment",
        "prompt": "",
        "max_units": 250,
        "quota_reservation_id": reservation["id"],
    }
    [reply] = stream_entries(engine, keys.events, saga_id=saga["saga_id"])
    assert (reply["type"], reply["correlation_id"]) == ("ai.analysis_completed", "corr-ai-1")
    assert reply["step"] == "run_analysis"  # the step whose command it answers
    assert json.loads(reply["data"]) == job
    [record] = state["results"].values()
    assert record["fields"]["Job"] == job["id"]
    assert record["fields"]["Summary"] == job["result"]["summary"]
    [note] = state["notifications"]
    assert note["template"] == "analysis_ready"
    assert note["data"]["record_id"] == record["id"]


def test_webhook_processing_completes(run: Any, demo: DemoServices) -> None:
    """webhook_processing records the delivery, applies its changes to the webhook's table
    and acknowledges to the sender's callback."""
    c = case("webhook_processing", demo)
    saga = run(build_definition("webhook_processing", c.payload))
    assert saga["status"] == "COMPLETED", saga
    state = c.footprint()
    [delivery] = state["deliveries"]
    assert delivery["event_id"] == c.payload["event_id"]
    assert state["records"][c.seeded["record"]]["fields"] == {"Title": "write", "Status": "done"}
    [batch] = state["batches"]
    assert batch["source"] == delivery["id"]
    [ack] = state["notifications"]
    assert (ack["channel"], ack["template"]) == ("webhook", "webhook_ack")
    assert ack["data"]["delivery_id"] == delivery["id"] and ack["data"]["updated"] == 1


@pytest.mark.parametrize("workflow", WORKFLOWS)
def test_failure_at_the_last_changing_step_undoes_every_effect(
    workflow: str, run: Any, demo: DemoServices, request: pytest.FixtureRequest
) -> None:
    """With fail_at on the last step that has a compensation, the demo service answers 422,
    the saga ends COMPENSATED and the services hold exactly what they held before (for
    ai_analysis that includes the job its event step had the notification service create)."""
    if workflow == "ai_analysis":
        request.getfixturevalue("consumer")  # run_analysis waits for its reply event
    c = case(workflow, demo)
    fail_at = last_changing_step(workflow)
    before = c.footprint()
    saga = run(build_definition(workflow, {**c.payload, "fail_at": fail_at}))
    assert saga["status"] == "COMPENSATED", saga
    assert saga["failure"]["step"] == fail_at
    assert saga["failure"]["reason"] == "error"
    assert "422" in saga["failure"]["message"]
    assert "demo failure requested" in saga["failure"]["message"]
    names = [s["name"] for s in saga["steps"]]
    k = names.index(fail_at)
    assert [s["status"] for s in saga["steps"]] == (
        ["COMPENSATED"] * k + ["FAILED"] + ["SKIPPED"] * (len(names) - k - 1)
    )
    assert c.footprint() == before


def test_ai_analysis_failure_event_compensates_the_quota(
    run: Any, engine: Any, consumer: None, demo: DemoServices
) -> None:
    """fail_at run_analysis: the command carries demo_fail, the notification service
    creates no job and replies ai.analysis_failed; run_analysis is FAILED (certainly: it
    had no effect, so it is not compensated) and the quota reservation is released."""
    c = case("ai_analysis", demo)
    before = c.footprint()
    saga = run(build_definition("ai_analysis", {**c.payload, "fail_at": "run_analysis"}))
    assert saga["status"] == "COMPENSATED", saga
    assert [s["status"] for s in saga["steps"]] == ["COMPENSATED", "FAILED", "SKIPPED", "SKIPPED"]
    assert not saga["steps"][1]["uncertain"]
    assert saga["steps"][1]["output"] is None
    assert (saga["failure"]["step"], saga["failure"]["reason"]) == ("run_analysis", "error")
    assert saga["failure"]["message"].startswith("failure event ai.analysis_failed")
    assert "demo failure requested" in saga["failure"]["message"]
    keys = engine.store.keys
    [command] = stream_entries(engine, keys.commands, saga_id=saga["saga_id"])
    assert json.loads(command["data"])["demo_fail"] is True
    [reply] = stream_entries(engine, keys.events, saga_id=saga["saga_id"])
    assert reply["type"] == "ai.analysis_failed"
    assert json.loads(reply["data"]) == {"error": "demo failure requested"}
    assert c.footprint() == before  # no job, no reservation left


def test_ai_analysis_command_is_consumed_once_per_idempotency_key(
    run: Any, engine: Any, consumer: None, demo: DemoServices, caplog: pytest.LogCaptureFixture
) -> None:
    """The same command delivered again (same idempotency key) creates no second job: the
    first reply is published again, and the saga is unchanged. Another key is another job.
    Every command is acknowledged in the demo-automation group once answered."""
    caplog.set_level(logging.INFO, logger="demo.services")
    c = case("ai_analysis", demo)
    saga = run(build_definition("ai_analysis", c.payload))
    assert saga["status"] == "COMPLETED", saga
    keys, r = engine.store.keys, engine.store.redis
    sid = saga["saga_id"]
    [command] = stream_entries(engine, keys.commands, saga_id=sid)
    assert command["idempotency_key"] == f"{sid}:run_analysis:action"
    fields = {k: v for k, v in command.items() if k != "id"}
    again = r.xadd(keys.commands, fields)
    first, replayed = wait_entries(engine, keys.events, 2, saga_id=sid)
    assert replayed["type"] == first["type"] == "ai.analysis_completed"
    assert json.loads(replayed["data"]) == json.loads(first["data"])
    [job] = c.footprint()["jobs"]
    assert job["id"] == json.loads(first["data"])["id"]
    time.sleep(0.3)  # the orchestrator's consumer refuses the repeated reply
    assert engine.get(sid)["version"] == saga["version"]
    assert outputs(engine.get(sid))["run_analysis"] == job

    other = r.xadd(keys.commands, {**fields, "idempotency_key": f"{sid}:other_step:action"})
    wait_entries(engine, keys.events, 3, saga_id=sid)
    assert len(c.footprint()["jobs"]) == 2

    def unacknowledged() -> set[str]:
        pending = r.xpending_range(keys.commands, "demo-automation", "-", "+", 1000)
        return {command["id"], again, other} & {p["message_id"] for p in pending}

    deadline = time.time() + 5  # the XACK follows the reply's XADD: wait for it
    while unacknowledged() and time.time() < deadline:
        time.sleep(0.02)
    assert not unacknowledged()

    def handled() -> list[str]:
        return [
            rec.getMessage()
            for rec in caplog.records
            if hasattr(rec, "command") and getattr(rec, "saga_id", None) == sid
        ]

    deadline = time.time() + 5  # the line is written just after the reply: wait for it
    while len(handled()) < 3 and time.time() < deadline:
        time.sleep(0.02)
    assert len(handled()) == 3  # one line per command
    assert ["idempotent replay" in line for line in handled()] == [False, True, False]


def test_demo_calls_are_logged_with_the_sagas_correlation_id(
    run: Any, demo: DemoServices, caplog: pytest.LogCaptureFixture
) -> None:
    """Each request a saga makes is logged once by the demo service, with its status and the
    saga's X-Correlation-Id."""
    caplog.set_level(logging.INFO, logger="demo.services")
    c = case("user_registration", demo)
    saga = run(build_definition("user_registration", c.payload, correlation_id="corr-demo-7"))
    assert saga["status"] == "COMPLETED"
    lines = [
        r
        for r in caplog.records
        if r.name == "demo.services" and getattr(r, "correlation_id", None) == "corr-demo-7"
    ]
    assert [(r.service, r.method, r.status) for r in lines] == [
        ("auth", "POST", 201),
        ("auth", "POST", 201),
        ("notification", "POST", 201),
    ]
    assert all("correlation_id=corr-demo-7" in r.getMessage() for r in lines)


def saga_key(saga_id: str, step: str, op: str = "action") -> dict[str, str]:
    return {"Idempotency-Key": f"{saga_id}:{step}:{op}", "X-Saga-Id": saga_id}


def test_demo_service_honours_idempotency_keys(demo: DemoServices) -> None:
    """A repeated Idempotency-Key gets the first answer and acts once; the compensation's
    key is another operation, which acts."""
    url, sid = demo.urls["auth"], str(uuid.uuid4())
    email = f"{unique('idem-')}@example.com"
    body = {"email": email, "name": "Idem"}
    with httpx.Client() as client:
        first = client.post(f"{url}/users", json=body, headers=saga_key(sid, "create_account"))
        again = client.post(f"{url}/users", json=body, headers=saga_key(sid, "create_account"))
        other = client.post(f"{url}/users", json=body)  # no key: a new request
        user_id = first.json()["id"]
        gone = client.delete(
            f"{url}/users/{user_id}", headers=saga_key(sid, "create_account", "compensation")
        )
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert other.status_code == 409  # the email is taken
    assert gone.status_code == 200 and gone.json() == {"id": user_id, "deleted": True}
    assert [u for u in demo.state("auth")["users"].values() if u["email"] == email] == []


@pytest.mark.parametrize("kind", ["auth", "airtable"])
def test_demo_late_action_after_its_compensation_creates_nothing(
    kind: str, demo: DemoServices, caplog: pytest.LogCaptureFixture
) -> None:
    """A compensation that reaches the service before its action (the orchestrator gave
    up on the action) answers 200 and does nothing; the action arriving afterwards answers
    409 and creates nothing; both repeat the same answers."""
    caplog.set_level(logging.INFO, logger="demo.services")
    sid, url = str(uuid.uuid4()), demo.urls[kind]
    if kind == "auth":
        owner = demo.auth.add_user(f"{unique('late-')}@example.com", "Late")
        action = ("POST", f"/users/{owner}/workspaces", {"name": "Late"}, "create_workspace")
        undo_path = "/workspaces/ws_never_created"
    else:
        base = demo.airtable.add_base("CRM", {"Contacts": CONTACTS})
        action = ("POST", f"/bases/{base}/links", {"workspace_id": "ws_late"}, "link_base")
        undo_path = f"/bases/{base}/links/lnk_never_created"
    method, path, body, step = action
    before = demo.state(kind)
    with httpx.Client(base_url=url) as client:
        undos = [
            client.delete(undo_path, headers=saga_key(sid, step, "compensation")) for _ in "ab"
        ]
        lates = [client.request(method, path, json=body, headers=saga_key(sid, step)) for _ in "ab"]
    assert [r.status_code for r in undos] == [200, 200]
    assert undos[0].json()["barrier"] == "null_compensation"
    assert [r.status_code for r in lates] == [409, 409]
    assert lates[0].json()["barrier"] == "cancelled"
    assert demo.state(kind) == before
    notes = [r.barrier for r in caplog.records if getattr(r, "saga_id", None) == sid]
    assert notes == ["null compensation"] * 2 + ["cancelled: the step was compensated before"] * 2


def test_demo_error_answers_are_not_remembered(demo: DemoServices) -> None:
    """An error answer had no effect, so it is not remembered: its compensation is a null
    one, and a malformed key gets 400."""
    sid, url = str(uuid.uuid4()), demo.urls["auth"]
    before = demo.state("auth")
    with httpx.Client(base_url=url) as client:
        failed = client.post(
            "/users",
            json={"email": "x@example.com", "name": "X", "demo_fail": True},
            headers=saga_key(sid, "create_account"),
        )
        undo = client.delete(
            "/users/usr_none", headers=saga_key(sid, "create_account", "compensation")
        )
        malformed = client.post("/users", json={}, headers={"Idempotency-Key": "key-1"})
    assert failed.status_code == 422
    assert undo.status_code == 200 and undo.json()["barrier"] == "null_compensation"
    assert malformed.status_code == 400 and "key-1" in malformed.json()["error"]
    assert demo.state("auth") == before


def test_demo_command_after_its_compensation_creates_no_job(
    engine: Any, demo: DemoServices
) -> None:
    """A command of the commands stream arriving after its step's compensation reached the
    notification service creates no job and is answered with the failure event, carrying
    the command's step."""
    sid = str(uuid.uuid4())
    keys, r = engine.store.keys, engine.store.redis
    before = demo.state("notification")["ai_jobs"]
    undo = httpx.delete(
        f"{demo.urls['notification']}/ai/jobs/job_never_created",
        headers=saga_key(sid, "run_analysis", "compensation"),
    )
    assert undo.status_code == 200 and undo.json()["barrier"] == "null_compensation"
    data = {
        "workspace_id": "ws_demo",
        "base_id": "appDemoBase",
        "table": "Contacts",
        "analysis_type": "summary",
        "max_units": 10,
        "quota_reservation_id": "qr_x",
    }
    r.xadd(
        keys.commands,
        {
            "type": "ai.analysis_requested",
            "saga_id": sid,
            "step": "run_analysis",
            "correlation_id": sid,
            "idempotency_key": f"{sid}:run_analysis:action",
            "reply_success": "ai.analysis_completed",
            "reply_failure": "ai.analysis_failed",
            "data": json.dumps(data),
        },
    )
    [reply] = wait_entries(engine, keys.events, 1, saga_id=sid)
    assert (reply["type"], reply["step"]) == ("ai.analysis_failed", "run_analysis")
    assert json.loads(reply["data"])["barrier"] == "cancelled"
    assert demo.state("notification")["ai_jobs"] == before


def test_demo_service_answers_404_for_unknown_ids_and_422_for_demo_fail(
    demo: DemoServices,
) -> None:
    """Unknown ids get 404; a body with demo_fail gets 422 and changes nothing."""
    before = demo.state("notification")
    with httpx.Client() as client:
        missing = [
            client.delete(f"{demo.urls['auth']}/workspaces/ws_missing"),
            client.post(f"{demo.urls['airtable']}/bases/appMissing/links", json={}),
            client.delete(f"{demo.urls['notification']}/ai/jobs/job_missing"),
        ]
        failed = client.post(
            f"{demo.urls['notification']}/notifications",
            json={"channel": "email", "to": "x@example.com", "template": "t", "demo_fail": True},
        )
    assert [r.status_code for r in missing] == [404, 404, 404]
    assert failed.status_code == 422
    assert failed.json() == {"error": "demo failure requested"}
    assert demo.state("notification") == before


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_serve_answers_until_a_signal_then_exits_cleanly(signum: int) -> None:
    """serve() answers on the ports it is given and returns normally on SIGINT or SIGTERM."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from demo.services import serve; serve(ports={{'notification': {port}}})",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 20
        while True:
            try:
                answer = httpx.delete(f"http://127.0.0.1:{port}/transformations/trf_x")
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.time() < deadline, "serve() did not start"
                time.sleep(0.05)
        assert answer.status_code == 404
        proc.send_signal(signum)
        assert proc.wait(10) == 0
    finally:
        stop_process(proc, 0)
