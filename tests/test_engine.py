"""The engine end to end: real Redis, a real Celery worker, a real HTTP stub with a ledger."""

from __future__ import annotations

import json
import random
import time
import uuid
from typing import Any

import pytest

from tests.conftest import wait_final
from tests.stubs import StubService


def http(path: str, method: str = "POST", body: Any = None) -> dict[str, Any]:
    action: dict[str, Any] = {"service": "svc", "method": method, "path": path}
    if body is not None:
        action["body"] = body
    return action


def step(name: str, path: str, undo: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "action": http(path),
        "compensation": http(undo, "DELETE") if undo else None,
        **extra,
    }


def test_three_step_http_saga_completes_with_outputs_flowing(run: Any, stub: StubService) -> None:
    """A three-step saga completes; step 1's output reaches step 2; every call is keyed."""
    saga = run(
        {
            "saga_type": "user_registration",
            "payload": {"email": "ada@example.com"},
            "correlation_id": "req-9f2",
            "steps": [
                {
                    "name": "create_user",
                    "action": http("/ok/users", body={"email": "{{payload.email}}"}),
                },
                {
                    "name": "create_workspace",
                    "action": http(
                        "/ok/users/{{steps.create_user.output.id}}/workspaces",
                        body={
                            "owner": "{{steps.create_user.output.id}}",
                            "label": "ws of {{payload.email}}",
                        },
                    ),
                },
                {"name": "notify", "action": http("/ok/notify", body={"saga": "{{saga.id}}"})},
            ],
        }
    )
    sid = saga["saga_id"]
    assert saga["status"] == "COMPLETED"
    assert saga["finished_at"] is not None and saga["failure"] is None
    calls = stub.calls(sid)
    user_id = saga["steps"][0]["output"]["id"]
    assert [c.path for c in calls] == ["/ok/users", f"/ok/users/{user_id}/workspaces", "/ok/notify"]
    assert calls[0].body == {"email": "ada@example.com"}
    assert calls[1].body == {"owner": user_id, "label": "ws of ada@example.com"}
    assert calls[2].body == {"saga": sid}
    assert [c.idempotency_key for c in calls] == [
        f"{sid}:create_user:action",
        f"{sid}:create_workspace:action",
        f"{sid}:notify:action",
    ]
    assert {c.correlation_id for c in calls} == {"req-9f2"}
    assert [s["status"] for s in saga["steps"]] == ["COMPLETED"] * 3
    assert [s["attempts"] for s in saga["steps"]] == [1, 1, 1]


def test_every_worker_log_line_of_a_saga_carries_its_correlation_id(run: Any, worker: Any) -> None:
    """Worker logs are JSON; each line about a saga (ours and Celery's) has its ids."""
    saga = run(
        {
            "saga_type": "logged",
            "correlation_id": "corr-log-1",
            "steps": [
                step("a", "/ok/a", undo="/ok/undo/a"),
                step("b", "/flaky/1/503/b"),
                step("c", "/status/400/c"),
            ],
        }
    )
    assert saga["status"] == "COMPENSATED"
    time.sleep(0.3)  # the worker writes its last lines after the state changed
    lines = [
        json.loads(line)
        for line in worker.log_path.read_text().splitlines()
        if saga["saga_id"] in line
    ]
    assert len(lines) >= 8
    assert all(line["correlation_id"] == "corr-log-1" for line in lines), lines
    messages = [line["message"] for line in lines]
    assert "step completed" in messages
    assert "compensation completed" in messages
    assert any(m.startswith("step failed: svc: HTTP 400") for m in messages)
    # Celery names the task by its shadow name (tasks/dispatcher.py): saga type and step.
    assert any(m.startswith("Task logged/b[") and "retry" in m for m in messages)


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_failure_at_step_k_compensates_completed_steps_in_reverse(
    k: int, run: Any, stub: StubService
) -> None:
    """A step failing at position k undoes exactly steps 0..k-1, newest first, each once."""
    names = ["a", "b", "c", "d"]
    steps = [
        step(n, "/status/422/x" if i == k else f"/ok/{n}", undo=f"/ok/undo/{n}")
        for i, n in enumerate(names)
    ]
    saga = run({"saga_type": "four", "steps": steps})
    sid = saga["saga_id"]
    assert saga["status"] == "COMPENSATED"
    assert saga["failure"]["step"] == names[k]
    assert saga["failure"]["reason"] == "error"
    assert "422" in saga["failure"]["message"]
    undo_calls = [c for c in stub.calls(sid) if c.method == "DELETE"]
    assert [c.path for c in undo_calls] == [f"/ok/undo/{n}" for n in reversed(names[:k])]
    assert [c.idempotency_key for c in undo_calls] == [
        f"{sid}:{n}:compensation" for n in reversed(names[:k])
    ]
    statuses = [s["status"] for s in saga["steps"]]
    assert statuses == ["COMPENSATED"] * k + ["FAILED"] + ["SKIPPED"] * (3 - k)
    comp = [s["compensation"]["status"] for s in saga["steps"]]
    assert comp == ["COMPENSATED"] * k + ["SKIPPED"] * (4 - k)


def test_retryable_errors_are_retried_then_succeed(run: Any, stub: StubService) -> None:
    """Two 503s then a 200: the saga completes with attempts == 3, one idempotency key."""
    saga = run({"saga_type": "flaky", "steps": [step("s", "/flaky/2/503/x")]})
    assert saga["status"] == "COMPLETED"
    assert saga["steps"][0]["attempts"] == 3
    calls = stub.calls(saga["saga_id"])
    assert [c.status for c in calls] == [503, 503, 200]
    assert len({c.idempotency_key for c in calls}) == 1


def test_client_error_fails_at_once_without_retry(run: Any, stub: StubService) -> None:
    """A 400 fails the step on its first attempt."""
    saga = run({"saga_type": "bad", "steps": [step("s", "/status/400/x")]})
    assert saga["status"] == "COMPENSATED"
    assert saga["steps"][0]["status"] == "FAILED"
    assert saga["steps"][0]["attempts"] == 1
    assert len(stub.calls(saga["saga_id"])) == 1


def test_retries_are_bounded_by_max_attempts(run: Any, stub: StubService) -> None:
    """A service that keeps answering 503 is tried max_attempts times, then compensated."""
    saga = run(
        {
            "saga_type": "down",
            "steps": [
                step("a", "/ok/a", undo="/ok/undo/a"),
                step("b", "/status/503/x", retry={"max_attempts": 4, "backoff_seconds": 0.01}),
            ],
        }
    )
    assert saga["status"] == "COMPENSATED"
    assert saga["steps"][1]["attempts"] == 4
    assert "after 4 attempts" in saga["failure"]["message"]
    assert [c.path for c in stub.calls(saga["saga_id"])] == [
        "/ok/a",
        *["/status/503/x"] * 4,
        "/ok/undo/a",
    ]


def test_compensation_failing_then_retried_by_hand(
    engine: Any, run: Any, stub: StubService
) -> None:
    """An undo that keeps failing ends COMPENSATION_FAILED; once the service is back, retrying
    the compensation ends COMPENSATED, and the earlier undo runs only after it."""
    switch = f"sw{uuid.uuid4().hex[:8]}"
    stub.down.add(switch)
    saga = run(
        {
            "saga_type": "undo-down",
            "steps": [
                step("a", "/ok/a", undo="/ok/undo/a"),
                step("b", "/ok/b", undo=f"/switch/{switch}/undo-b"),
                step("c", "/status/409/x"),
            ],
        }
    )
    sid = saga["saga_id"]
    assert saga["status"] == "COMPENSATION_FAILED"
    b, a = saga["steps"][1], saga["steps"][0]
    assert b["status"] == "COMPENSATION_FAILED"
    assert b["compensation"]["status"] == "COMPENSATION_FAILED"
    assert "503" in b["compensation"]["error"]
    assert b["compensation"]["attempts"] > 1
    assert saga["compensation_failure"]["step"] == "b"
    assert a["compensation"]["status"] == "PENDING"  # not silently dropped, not run early
    assert not [c for c in stub.calls(sid) if c.path == "/ok/undo/a"]

    stub.down.discard(switch)
    assert engine.compensate(sid)["status"] == "COMPENSATING"
    saga = wait_final(engine, sid)
    assert saga["status"] == "COMPENSATED"
    assert [s["status"] for s in saga["steps"]] == ["COMPENSATED", "COMPENSATED", "FAILED"]
    undo_paths = [c.path for c in stub.calls(sid) if c.method == "DELETE" and c.status == 200]
    assert undo_paths == [f"/switch/{switch}/undo-b", "/ok/undo/a"]


def test_uncertain_step_is_compensated(run: Any, stub: StubService) -> None:
    """A step whose call timed out (it may have acted) is undone with the rest."""
    saga = run(
        {
            "saga_type": "hang",
            "steps": [
                step("a", "/ok/a", undo="/ok/undo/a"),
                step(
                    "b",
                    "/slow/3/b",
                    undo="/ok/undo/b",
                    timeout_seconds=1,
                    retry={"max_attempts": 1},
                ),
            ],
        }
    )
    assert saga["status"] == "COMPENSATED"
    assert saga["steps"][1]["uncertain"] is True
    assert saga["failure"]["step"] == "b"
    undo = [c.path for c in stub.calls(saga["saga_id"]) if c.method == "DELETE"]
    assert undo == ["/ok/undo/b", "/ok/undo/a"]


def test_uncertain_step_whose_undo_needs_its_output_awaits_a_person(run: Any) -> None:
    """An uncertain step whose compensation needs its missing output: COMPENSATION_FAILED,
    naming the step."""
    saga = run(
        {
            "saga_type": "hang",
            "steps": [
                step(
                    "b",
                    "/slow/3/b",
                    undo="/ok/undo/{{steps.b.output.id}}",
                    timeout_seconds=1,
                    retry={"max_attempts": 1},
                ),
            ],
        }
    )
    assert saga["status"] == "COMPENSATION_FAILED"
    assert saga["compensation_failure"]["step"] == "b"
    assert "steps.b.output.id" in saga["steps"][0]["compensation"]["error"]
    assert "step 'b' left no output" in saga["steps"][0]["compensation"]["error"]


def test_missing_output_placeholder_fails_before_any_call(run: Any, stub: StubService) -> None:
    """A placeholder without a value at run time fails the step, naming it, with no call."""
    saga = run(
        {
            "saga_type": "gap",
            "steps": [
                step("a", "/ok/a", undo="/ok/undo/a"),
                {"name": "b", "action": http("/ok/b", body={"x": "{{steps.a.output.nothing}}"})},
            ],
        }
    )
    assert saga["status"] == "COMPENSATED"
    assert "steps.a.output.nothing" in saga["steps"][1]["error"]
    assert [c.path for c in stub.calls(saga["saga_id"])] == ["/ok/a", "/ok/undo/a"]


def test_registered_tasks_run_as_steps(run: Any) -> None:
    """builtin.noop returns its rendered args; a registered task's error fails the step."""
    saga = run(
        {
            "saga_type": "tasks",
            "payload": {"n": 7},
            "steps": [
                {"name": "a", "action": {"task": "builtin.noop", "args": {"n": "{{payload.n}}"}}},
                {
                    "name": "b",
                    "action": {"task": "builtin.noop", "args": {"from_a": "{{steps.a.output.n}}"}},
                },
            ],
        }
    )
    assert saga["status"] == "COMPLETED"
    assert saga["steps"][1]["output"] == {"from_a": 7}
    saga = run(
        {
            "saga_type": "tasks",
            "steps": [
                {
                    "name": "a",
                    "action": {"task": "builtin.noop", "args": {}},
                    "compensation": {"task": "builtin.noop", "args": {}},
                },
                {"name": "b", "action": {"task": "test.fail", "args": {"message": "no quota"}}},
            ],
        }
    )
    assert saga["status"] == "COMPENSATED"
    assert saga["failure"]["message"] == "no quota"


def test_oversized_output_is_stored_as_a_stub(run: Any) -> None:
    """An output above SAGA_MAX_OUTPUT_BYTES completes the step with a stub saying so."""
    saga = run(
        {
            "saga_type": "big",
            "steps": [
                {"name": "a", "action": {"task": "builtin.noop", "args": {"blob": "x" * 5000}}}
            ],
        }
    )
    assert saga["status"] == "COMPLETED"
    assert saga["steps"][0]["output"] == {"truncated": True, "size_bytes": 5011}


def test_manual_compensation_of_completed_saga(engine: Any, run: Any, stub: StubService) -> None:
    """Compensating a COMPLETED saga undoes every step; a second request is refused (409)."""
    from sagas.errors import InvalidTransition

    saga = run(
        {
            "saga_type": "undo-all",
            "steps": [
                step("a", "/ok/a", undo="/ok/undo/a"),
                step("b", "/ok/b"),
                step("c", "/ok/c", undo="/ok/undo/c"),
            ],
        }
    )
    sid = saga["saga_id"]
    assert saga["status"] == "COMPLETED"
    engine.compensate(sid, "customer cancelled")
    saga = wait_final(engine, sid)
    assert saga["status"] == "COMPENSATED"
    assert saga["failure"] == {"step": None, "reason": "manual", "message": "customer cancelled"}
    assert [s["status"] for s in saga["steps"]] == ["COMPENSATED", "COMPLETED", "COMPENSATED"]
    assert [c.path for c in stub.calls(sid) if c.method == "DELETE"] == ["/ok/undo/c", "/ok/undo/a"]
    with pytest.raises(InvalidTransition):
        engine.compensate(sid)


def test_duplicate_chain_delivery_runs_each_step_once(
    engine: Any, worker: Any, stub: StubService
) -> None:
    """The whole chain delivered twice: every step's action is still called once."""
    saga = engine.start(
        {"saga_type": "dup", "steps": [step(n, f"/slow/0.05/{n}") for n in ("a", "b", "c")]}
    ).saga
    sid = saga["saga_id"]
    engine.dispatch_steps(sid, range(3), sid)
    saga = wait_final(engine, sid)
    time.sleep(0.5)  # let the duplicate chain finish being refused
    assert saga["status"] == "COMPLETED"
    assert sorted(c.path for c in stub.calls(sid)) == [
        "/slow/0.05/a",
        "/slow/0.05/b",
        "/slow/0.05/c",
    ]


def test_manual_compensation_racing_the_last_step(
    engine: Any, worker: Any, stub: StubService
) -> None:
    """Compensation requested at random moments around the last step: always one outcome,
    COMPENSATED, and every step whose action was called is undone exactly once."""
    rng = random.Random(7)
    for _ in range(20):
        saga = engine.start(
            {
                "saga_type": "race",
                "steps": [
                    step("a", "/ok/a", undo="/ok/undo/a"),
                    step("b", "/slow/0.1/b", undo="/ok/undo/b"),
                ],
            }
        ).saga
        sid = saga["saga_id"]
        time.sleep(rng.uniform(0, 0.25))
        engine.compensate(sid, "race")
        saga = wait_final(engine, sid)
        assert saga["status"] == "COMPENSATED", saga
        calls = stub.calls(sid)
        for name, path in (("a", "/ok/a"), ("b", "/slow/0.1/b")):
            acted = [c for c in calls if c.path == path]
            undone = [c for c in calls if c.path == f"/ok/undo/{name}"]
            assert len(acted) <= 1
            assert len(undone) == len(acted), (name, saga)


def test_killed_worker_mid_step_re_runs_the_step_under_the_same_key(
    engine: Any, worker: Any, stub: StubService
) -> None:
    """SIGKILL of the pool process running a step: the step runs again with the same
    idempotency key, its first attempt counted, and the saga completes."""
    import os
    import signal
    import subprocess

    saga = engine.start(
        {
            "saga_type": "killed",
            "steps": [step("a", "/ok/a"), step("b", "/slow/1.5/b"), step("c", "/ok/c")],
        }
    ).saga
    sid = saga["saga_id"]
    deadline = time.time() + 10
    while not [c for c in stub.ledger if c.saga_id == sid and c.path == "/slow/1.5/b"]:
        assert time.time() < deadline, "step b never started"
        time.sleep(0.01)
    children = subprocess.run(
        ["pgrep", "-P", str(worker.proc.pid)], capture_output=True, text=True
    ).stdout.split()
    assert children
    for pid in children:
        os.kill(int(pid), signal.SIGKILL)
    saga = wait_final(engine, sid, timeout=30)
    assert saga["status"] == "COMPLETED"
    assert saga["steps"][1]["attempts"] == 2, engine.store.history(sid)
    b_calls = [c for c in stub.calls(sid) if c.path == "/slow/1.5/b"]
    assert len(b_calls) == 2
    assert {c.idempotency_key for c in b_calls} == {f"{sid}:b:action"}
    assert [c.path for c in stub.calls(sid)].count("/ok/c") == 1
