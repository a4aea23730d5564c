"""Repair actions end to end: a real Celery worker runs what a person's action sets going, and a
real HTTP service records what was called, in which order."""

from __future__ import annotations

import time
from typing import Any

from tests.conftest import wait_final
from tests.stubs import StubService

WHO = "oncall"


def definition(stub: StubService, tag: str, **overrides: Any) -> dict[str, Any]:
    steps = [
        {
            "name": "reserve",
            "action": {"service": "svc", "method": "POST", "path": f"/ok/reserve/{tag}"},
            "compensation": {"service": "svc", "method": "POST", "path": f"/ok/release/{tag}"},
        },
        {
            "name": "charge",
            "action": {"service": "svc", "method": "POST", "path": f"/ok/charge/{tag}"},
            "compensation": {
                "service": "svc",
                "method": "POST",
                "path": f"/status/422/refund/{tag}",
            },
        },
        {
            "name": "ship",
            "action": {"service": "svc", "method": "POST", "path": f"/status/409/ship/{tag}"},
        },
    ]
    return {"saga_type": "repair_e2e", "steps": steps, **overrides}


def paths(stub: StubService, saga_id: str) -> list[str]:
    return [c.path for c in stub.calls(saga_id)]


def test_resolving_a_failed_undo_runs_the_older_undo_for_real(
    engine: Any, worker: Any, stub: StubService
) -> None:
    sid = engine.start(definition(stub, "r1")).saga["saga_id"]
    saga = wait_final(engine, sid, statuses={"COMPENSATION_FAILED"})
    assert saga["compensation_failure"]["step"] == "charge"
    assert not any("release" in p for p in paths(stub, sid))  # reserve's undo waits
    engine.repairs.resolve(sid, "charge", "refunded by hand, ticket OPS-1", WHO)
    saga = wait_final(engine, sid)
    assert saga["status"] == "COMPENSATED"
    assert saga["steps"][1]["compensation"]["resolved_by_hand"] is True
    assert saga["steps"][0]["compensation"]["status"] == "COMPENSATED"
    assert paths(stub, sid)[-1] == "/ok/release/r1"  # the older undo ran, last
    events = [h["event"] for h in engine.history(sid)]
    assert events.index("compensation_resolved") < events.index("step_compensated")


def test_retry_now_skips_a_long_countdown(engine: Any, worker: Any, stub: StubService) -> None:
    """A step failing with 503 waits 30 s before its next attempt; once its service is back,
    a person's retry makes the attempt at once and the saga completes in seconds."""
    stub.down.add("pay-e2e")
    steps = [
        {
            "name": "pay",
            "action": {"service": "svc", "method": "POST", "path": "/switch/pay-e2e/x"},
            "retry": {"max_attempts": 3, "backoff_seconds": 30, "max_backoff_seconds": 30},
            "timeout_seconds": 120,
        }
    ]
    sid = engine.start({"saga_type": "retry_e2e", "steps": steps}).saga["saga_id"]
    deadline = time.time() + 15
    while not engine.get(sid)["steps"][0]["retry_pending"]:
        assert time.time() < deadline, engine.get(sid)
        time.sleep(0.05)
    stub.down.discard("pay-e2e")
    asked = time.time()
    engine.repairs.retry(sid, 1, "the PSP is back", WHO)
    saga = wait_final(engine, sid, timeout=20)
    assert saga["status"] == "COMPLETED"
    assert time.time() - asked < 10, "the attempt waited out the countdown"
    assert saga["steps"][0]["attempts"] == 2
    assert [c.status for c in stub.calls(sid)] == [503, 200]
