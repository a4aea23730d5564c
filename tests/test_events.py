"""Choreography over real Redis streams with a real worker: event steps, replies, early,
late, duplicate, unmatched and poison events, reclaiming a dead consumer's entries, and
event-triggered sagas."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from sagas.definition import parse_definition
from sagas.events import GROUP, EventBus
from sagas.settings import Settings
from tasks.runtime import build_engine
from tests.conftest import wait_final
from tests.stubs import StubService


def definition(**step_b: Any) -> dict[str, Any]:
    return {
        "saga_type": "choreo",
        "payload": {"order": "o-17"},
        "steps": [
            {
                "name": "a",
                "action": {"service": "svc", "path": "/ok/a"},
                "compensation": {"service": "svc", "method": "DELETE", "path": "/ok/undo/a"},
            },
            {
                "name": "b",
                "action": {
                    "event": "inventory.reserve_requested",
                    "await": {"success": "inventory.reserved", "failure": "inventory.rejected"},
                    "data": {"order": "{{payload.order}}"},
                },
                "compensation": {"service": "svc", "method": "DELETE", "path": "/ok/undo/b"},
                **step_b,
            },
            {
                "name": "c",
                "action": {
                    "service": "svc",
                    "path": "/ok/c",
                    "body": {"reservation": "{{steps.b.output.reservation}}"},
                },
            },
        ],
    }


def command_for(engine: Any, saga_id: str, timeout: float = 10) -> dict[str, Any]:
    """Wait for the command an event step published (as a service consuming it would)."""
    deadline = time.time() + timeout
    while True:
        for entry in engine.store.read_stream(engine.store.keys.commands, 200):
            if entry["saga_id"] == saga_id:
                return entry  # type: ignore[no-any-return]
        assert time.time() < deadline, "no command published"
        time.sleep(0.02)


def wait_status(engine: Any, saga_id: str, status: str, timeout: float = 10) -> None:
    deadline = time.time() + timeout
    while engine.get(saga_id)["status"] != status:
        assert time.time() < deadline, engine.get(saga_id)
        time.sleep(0.02)


def test_mixed_http_and_event_steps_complete(
    engine: Any, consumer: None, stub: StubService
) -> None:
    """The event step publishes its command, waits, and the reply's data becomes its output,
    which the next HTTP step uses."""
    sid = engine.start(definition()).saga["saga_id"]
    command = command_for(engine, sid)
    assert command["type"] == "inventory.reserve_requested"
    assert command["idempotency_key"] == f"{sid}:b:action"
    assert command["reply_success"] == "inventory.reserved"
    assert json.loads(command["data"]) == {"order": "o-17"}
    wait_status(engine, sid, "RUNNING")
    published = engine.events.publish("inventory.reserved", sid, None, {"reservation": "R-1"})
    assert published.matched == [sid]
    saga = wait_final(engine, sid)
    assert saga["status"] == "COMPLETED"
    assert saga["steps"][1]["output"] == {"reservation": "R-1"}
    assert [c.body for c in stub.calls(sid) if c.path == "/ok/c"] == [{"reservation": "R-1"}]


def test_reply_found_by_correlation_id(engine: Any, consumer: None) -> None:
    """A reply may name the correlation id instead of the saga: the one it was given, or,
    for a saga given none, its own id (which stands in for one and is not indexed)."""
    given = f"order-{uuid.uuid4()}"
    with_corr = engine.start({**definition(), "correlation_id": given}).saga["saga_id"]
    without = engine.start(definition()).saga["saga_id"]
    for sid, corr in ((with_corr, given), (without, without)):
        command_for(engine, sid)
        wait_status(engine, sid, "RUNNING")
        published = engine.events.publish("inventory.reserved", None, corr, {"reservation": "R"})
        assert published.matched == [sid]
        assert wait_final(engine, sid)["status"] == "COMPLETED"


def test_failure_event_compensates(engine: Any, consumer: None, stub: StubService) -> None:
    """A failure event fails the step (it did not take effect) and compensates the rest."""
    sid = engine.start(definition()).saga["saga_id"]
    command_for(engine, sid)
    engine.events.publish("inventory.rejected", sid, None, {"why": "out of stock"})
    saga = wait_final(engine, sid)
    assert saga["status"] == "COMPENSATED"
    assert saga["steps"][1]["status"] == "FAILED" and not saga["steps"][1]["uncertain"]
    assert "out of stock" in saga["failure"]["message"]
    assert [c.path for c in stub.calls(sid) if c.method == "DELETE"] == ["/ok/undo/a"]


def test_event_step_times_out_and_the_late_event_is_refused(
    engine: Any, consumer: None, stub: StubService
) -> None:
    """No reply within the step's timeout: compensated (the service may have acted, so the
    step is undone too); the reply that comes later changes nothing."""
    sid = engine.start(definition(timeout_seconds=1)).saga["saga_id"]
    command_for(engine, sid)
    deadline = time.time() + 10
    while engine.get(sid)["status"] != "COMPENSATED":
        engine.sweep()
        assert time.time() < deadline
        time.sleep(0.1)
    saga = engine.get(sid)
    assert saga["failure"]["reason"] == "timeout" and saga["steps"][1]["uncertain"]
    assert [c.path for c in stub.calls(sid) if c.method == "DELETE"] == ["/ok/undo/b", "/ok/undo/a"]
    late = engine.events.publish("inventory.reserved", sid, None, {"reservation": "R-9"})
    assert late.matched == [sid]  # it is for this saga, but the consumer refuses it
    time.sleep(0.5)
    assert engine.get(sid)["steps"][1]["output"] is None
    assert engine.get(sid)["status"] == "COMPENSATED"


def test_early_reply_while_the_command_is_published_is_kept(engine: Any) -> None:
    """A reply that arrives after the step began but before it waits (a fast service) is kept
    on the step and applied the moment it waits."""
    store = engine.store
    d = definition()
    d["steps"] = d["steps"][1:2]  # the event step alone
    sid = str(uuid.uuid4())
    assert store.create(sid, parse_definition(d, engine.settings), sid).code == "created"
    assert store.step_begin(sid, 0, "L").code == "run"
    early = store.event(sid, "inventory.reserved", '{"reservation":"R-early"}', "1-1", "b")
    assert early.code == "early"
    assert store.step_wait(sid, 0, "L", 1).code == "saga_completed"
    assert engine.get(sid)["steps"][0]["output"] == {"reservation": "R-early"}


def test_reply_before_the_step_started_is_refused(engine: Any, consumer: None) -> None:
    """A reply for a step whose command was not sent yet cannot be its reply: it is refused
    (kept in the unmatched stream), and the step waits for its real reply."""
    slow = definition()
    slow["steps"][0]["action"]["path"] = "/slow/0.5/a"
    sid = engine.start(slow).saga["saga_id"]
    engine.events.publish("inventory.reserved", sid, None, {"reservation": "R-early"})
    wait_status_of_step(engine, sid, 1, "WAITING")
    assert engine.get(sid)["steps"][1]["output"] is None
    engine.events.publish("inventory.reserved", sid, None, {"reservation": "R-real"})
    saga = wait_final(engine, sid)
    assert saga["status"] == "COMPLETED"
    assert saga["steps"][1]["output"] == {"reservation": "R-real"}
    refused = [e for e in engine.events.unmatched(50) if e.get("saga_id") == sid]
    assert len(refused) == 1 and "late" in refused[0]["outcome"]


def wait_status_of_step(engine: Any, saga_id: str, index: int, status: str) -> None:
    deadline = time.time() + 10
    while engine.get(saga_id)["steps"][index]["status"] != status:
        assert time.time() < deadline, engine.get(saga_id)
        time.sleep(0.02)


def test_duplicate_events_change_nothing(engine: Any, consumer: None) -> None:
    """The same entry applied twice, and a second reply of the same type: one outcome."""
    sid = engine.start(definition()).saga["saga_id"]
    command_for(engine, sid)
    wait_status(engine, sid, "RUNNING")
    first = engine.events.publish("inventory.reserved", sid, None, {"reservation": "R-1"})
    saga = wait_final(engine, sid)
    version = saga["version"]
    fields = {"type": "inventory.reserved", "saga_id": sid, "data": '{"reservation": "R-2"}'}
    assert engine.events.handle(first.event_id, fields) == [f"{sid}:duplicate"]
    engine.events.publish("inventory.reserved", sid, None, {"reservation": "R-3"})
    time.sleep(0.5)
    saga = engine.get(sid)
    assert saga["steps"][1]["output"] == {"reservation": "R-1"}
    assert saga["version"] == version


def test_event_for_an_unknown_saga_is_kept_as_unmatched(engine: Any, consumer: None) -> None:
    """An event for no known saga matches nothing and is stored in the unmatched stream."""
    ghost = str(uuid.uuid4())
    published = engine.events.publish("inventory.reserved", ghost, None, {"x": 1})
    assert published.matched == []
    deadline = time.time() + 5
    while not [
        e
        for e in engine.store.read_stream(engine.store.keys.unmatched, 100)
        if e["event_id"] == published.event_id
    ]:
        assert time.time() < deadline
        time.sleep(0.05)


def test_dead_consumer_entry_is_reclaimed_and_applied_once(engine: Any, worker: Any) -> None:
    """An entry read by a consumer that died before acknowledging is reclaimed by the sweep
    and applied once."""
    quick = build_engine(Settings(**{**vars(engine.settings), "event_reclaim_idle_seconds": 0.1}))
    bus: EventBus = quick.events
    bus.ensure_group()
    sid = quick.start(definition()).saga["saga_id"]
    command_for(quick, sid)
    wait_status(quick, sid, "RUNNING")
    published = bus.publish("inventory.reserved", sid, None, {"reservation": "R-7"})
    r = quick.store.redis
    # "doomed" reads the entry (and older ones) and dies without acknowledging.
    r.xreadgroup(GROUP, "doomed", {quick.store.keys.events: ">"}, count=1000)
    pending = {
        p["message_id"]
        for p in r.xpending_range(
            quick.store.keys.events, GROUP, "-", "+", 1000, consumername="doomed"
        )
    }
    assert published.event_id in pending
    time.sleep(0.2)
    applied, _ = bus.reclaim()
    assert applied >= 1
    saga = wait_final(quick, sid)
    assert saga["status"] == "COMPLETED"
    assert saga["steps"][1]["output"] == {"reservation": "R-7"}
    assert [h["event"] for h in quick.history(sid)].count("step_completed") == 2  # a, b once
    assert published.event_id not in {
        p["message_id"] for p in r.xpending_range(quick.store.keys.events, GROUP, "-", "+", 1000)
    }


def test_poison_event_goes_to_the_dead_letters(engine: Any, worker: Any) -> None:
    """An entry that cannot be applied stays pending, and after SAGA_EVENT_MAX_DELIVERIES
    deliveries lands in the dead-letter stream."""
    quick = build_engine(
        Settings(
            **{
                **vars(engine.settings),
                "event_reclaim_idle_seconds": 0.01,
                "event_max_deliveries": 3,
            }
        )
    )
    bus = quick.events
    bus.ensure_group()
    keys = quick.store.keys
    poison = quick.store.redis.xadd(
        keys.events, {"type": "x.y", "saga_id": "s", "data": "{not json"}
    )
    quick.store.redis.xreadgroup(GROUP, "doomed", {keys.events: ">"}, count=1000)
    dead = 0
    for _ in range(6):
        time.sleep(0.05)
        dead += bus.reclaim()[1]
    letters = quick.store.read_stream(keys.dead, 100)
    assert poison in [e["event_id"] for e in letters]
    assert dead >= 1


def test_trigger_event_starts_a_workflow_once(engine: Any, consumer: None, demo: Any) -> None:
    """An event that a template declares as its trigger starts that workflow; the same event
    applied again does not start a second one."""
    data = {
        "webhook_id": "whDemo",
        "event_id": f"evt-{uuid.uuid4().hex[:6]}",
        "changes": [{"id": "recUnknown", "fields": {"Name": "Ada"}}],
    }
    published = engine.events.publish("airtable.webhook_received", None, None, data)
    assert len(published.matched) == 1
    saga_id = published.matched[0]  # known before the consumer starts it
    deadline = time.time() + 10
    while not engine.store.redis.exists(engine.store.keys.saga(saga_id)):
        assert time.time() < deadline, "the trigger started nothing"
        time.sleep(0.02)
    saga = wait_final(engine, saga_id)  # how it ends depends on the demo data: not the point
    assert saga["saga_type"] == "webhook_processing"
    assert saga["payload"]["event_id"] == data["event_id"]
    fields = {"type": "airtable.webhook_received", "data": json.dumps(data)}
    before = engine.store.redis.zcard(engine.store.keys.saga_type("webhook_processing"))
    engine.events.handle(published.event_id, fields)
    assert engine.store.redis.zcard(engine.store.keys.saga_type("webhook_processing")) == before


def test_trigger_with_an_invalid_payload_is_recorded_not_retried(
    engine: Any, consumer: None
) -> None:
    """A trigger event whose data does not fit the workflow's payload schema starts nothing
    and is kept in the unmatched stream with the reason (retrying could not help)."""
    published = engine.events.publish("airtable.webhook_received", None, None, {"x": 1})
    deadline = time.time() + 5
    while True:
        entries = [
            e
            for e in engine.store.read_stream(engine.store.keys.unmatched, 100)
            if e["event_id"] == published.event_id
        ]
        if entries:
            break
        assert time.time() < deadline
        time.sleep(0.05)
    assert "invalid" in entries[0]["outcome"] and "payload" in entries[0]["outcome"]


def test_reply_data_above_the_output_limit_is_stored_as_a_stub(engine: Any) -> None:
    """A success reply's data becomes the step's output: above SAGA_MAX_OUTPUT_BYTES it is
    stored as a stub saying so, like any output."""
    store = engine.store
    d = definition()
    d["steps"] = d["steps"][1:2]
    sid = str(uuid.uuid4())
    assert store.create(sid, parse_definition(d, engine.settings), sid).code == "created"
    assert store.step_begin(sid, 0, "L").code == "run"
    assert store.step_wait(sid, 0, "L", 1).code == "waiting"
    big = json.dumps({"blob": "x" * 10_000})
    fields = {"type": "inventory.reserved", "saga_id": sid, "step": "b", "data": big}
    assert engine.events.handle("9-1", fields) == [f"{sid}:saga_completed"]
    output = engine.get(sid)["steps"][0]["output"]
    assert output == {
        "truncated": True,
        "size_bytes": len(json.dumps({"blob": "x" * 10_000}, separators=(",", ":"))),
    }
