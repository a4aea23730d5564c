"""The guarantee under the interleavings that once broke it, end to end: real workers, real
Redis (through a fault-injecting proxy where the wire must fail), the stub's ledger as the
judge of what took effect and in which order.

Each `test_break_<n>_...` is the regression test of one confirmed break (docs/reliability.md,
"Interleavings that once broke the guarantee"); each failed on the code before its fix.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sagas.definition import parse_definition
from sagas.errors import StoreUnreachable
from sagas.settings import Settings
from tasks.runtime import build_engine
from tests.conftest import Worker, sweep_until, wait_final
from tests.faultproxy import FaultProxy
from tests.stubs import Call, StubService


def http(path: str, method: str = "POST", **extra: Any) -> dict[str, Any]:
    return {"service": "svc", "method": method, "path": path, **extra}


def step(name: str, path: str, undo: str | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "action": http(path), **extra}
    if undo:
        out["compensation"] = http(undo, "DELETE")
    return out


def acted(stub: StubService, saga_id: str, name: str) -> list[Call]:
    return stub.effect_calls(f"{saga_id}:{name}:action")


def undone(stub: StubService, saga_id: str, name: str) -> list[Call]:
    return stub.effect_calls(f"{saga_id}:{name}:compensation")


def assert_undone_after_done(stub: StubService, saga_id: str, name: str) -> None:
    """Step `name` took effect once and was undone once, the undo arriving after the effect."""
    do, undo = acted(stub, saga_id, name), undone(stub, saga_id, name)
    assert len(do) == 1 and len(undo) == 1, (do, undo)
    assert undo[0].at >= do[0].done, f"undo at {undo[0].at}, effect done at {do[0].done}"


def wait_for_call(stub: StubService, saga_id: str, path: str, timeout: float = 10) -> None:
    deadline = time.time() + timeout
    while not [c for c in stub.calls(saga_id) if c.path == path]:
        assert time.time() < deadline, f"{path} never called"
        time.sleep(0.01)


# --- break 1 -------------------------------------------------------------------------------
def test_break_1_killed_mid_step_then_compensated_by_hand_undoes_the_step(
    engine: Any, worker: Worker, stub: StubService
) -> None:
    """A step's call is sent, its pool process is SIGKILLed, then compensation is asked for:
    the redelivered execution finds the attempt vanished, so the step is uncertain and is
    undone after its effect."""
    saga = engine.start(
        {
            "saga_type": "break1",
            "steps": [
                step("a", "/idem/ok/a", undo="/idem/ok/undo/a"),
                step("b", "/idem/slow/0.3/b", undo="/idem/ok/undo/b"),
                step("c", "/idem/ok/c", undo="/idem/ok/undo/c"),
            ],
        }
    ).saga
    sid = saga["saga_id"]
    wait_for_call(stub, sid, "/idem/slow/0.3/b")
    assert worker.proc is not None
    children = subprocess.run(
        ["pgrep", "-P", str(worker.proc.pid)], capture_output=True, text=True
    ).stdout.split()
    for pid in children:
        os.kill(int(pid), signal.SIGKILL)
    engine.compensate(sid, "cancelled by the customer")
    saga = wait_final(engine, sid, timeout=30)
    assert saga["status"] == "COMPENSATED", saga
    b = saga["steps"][1]
    assert b["uncertain"] and b["compensation"]["status"] == "COMPENSATED", b
    assert_undone_after_done(stub, sid, "b")
    assert_undone_after_done(stub, sid, "a")
    assert not acted(stub, sid, "c")


# --- break 2 -------------------------------------------------------------------------------
def test_break_2_saga_deadline_never_undoes_an_attempt_still_in_flight(
    engine: Any, worker: Worker, stub: StubService
) -> None:
    """The saga's deadline passes while a step's attempt is in flight (its effect lands after
    3 s): the saga is fenced at once, but the step is undone only after its effect."""
    saga = engine.start(
        {
            "saga_type": "break2",
            "timeout_seconds": 2,
            "steps": [
                step("a", "/idem/ok/a", undo="/idem/ok/undo/a"),
                {
                    "name": "b",
                    "action": {
                        "task": "test.act_after",
                        "args": {"seconds": 3, "url": f"{stub.url}/idem/ok/effect/b"},
                    },
                    "compensation": http("/idem/ok/undo/b", "DELETE"),
                },
            ],
        }
    ).saga
    sid = saga["saga_id"]
    saga = sweep_until(engine, sid, {"COMPENSATED", "COMPENSATION_FAILED"}, timeout=20)
    assert saga["status"] == "COMPENSATED", saga
    assert saga["failure"]["reason"] == "timeout"
    assert_undone_after_done(stub, sid, "b")
    assert_undone_after_done(stub, sid, "a")
    order = [(h["event"], h.get("step")) for h in engine.history(sid)]
    assert order.index(("saga_timed_out", "b")) < order.index(("step_completed", "b")), order


def test_break_2_an_attempt_past_its_hard_time_limit_is_killed_before_its_undo(
    engine: Any, worker: Worker, stub: StubService
) -> None:
    """An attempt that ignores every deadline is killed by its Celery hard time limit (step
    timeout + SAGA_ATTEMPT_GRACE_SECONDS): it never takes effect, and the undo runs after."""
    started = time.time()
    saga = engine.start(
        {
            "saga_type": "break2-hung",
            "timeout_seconds": 2,
            "steps": [
                {
                    "name": "b",
                    "action": {
                        "task": "test.act_after",
                        "args": {"seconds": 30, "url": f"{stub.url}/idem/ok/effect/b"},
                    },
                    "compensation": http("/idem/ok/undo/b", "DELETE"),
                }
            ],
        }
    ).saga
    sid = saga["saga_id"]
    saga = sweep_until(engine, sid, {"COMPENSATED", "COMPENSATION_FAILED"}, timeout=20)
    assert saga["status"] == "COMPENSATED", saga
    assert saga["steps"][0]["uncertain"]
    undo = undone(stub, sid, "b")
    assert len(undo) == 1
    assert undo[0].at - started >= 2 + 2 - 0.5  # not before the hard limit: 2 s + 2 s grace
    time.sleep(1)
    assert not acted(stub, sid, "b")
    assert "Hard time limit" in worker.log_path.read_text()


# --- faults on the wire: a worker whose Redis is behind a proxy ----------------------------
@pytest.fixture()
def wire(
    service_env: dict[str, str], redis_url: str, tmp_path: Path
) -> Iterator[tuple[FaultProxy, Any, Worker]]:
    """A proxy to this run's Redis, a worker (own queue) that reaches Redis only through it,
    and an engine in the test process that sends work to that worker."""
    proxy = FaultProxy.to(redis_url).start()
    queue = f"{service_env['SAGA_QUEUE']}-wire-{uuid.uuid4().hex[:6]}"
    env = {**service_env, "REDIS_URL": proxy.url(redis_url), "SAGA_QUEUE": queue}
    worker = Worker(env, tmp_path / "wire-worker.log", concurrency=2).start()
    engine = build_engine(Settings.from_env({**os.environ, "SAGA_QUEUE": queue}))
    yield proxy, engine, worker
    worker.stop()
    proxy.stop()
    swallowed = [
        line for line in worker.log_path.read_text().splitlines() if "raised an exception" in line
    ]
    assert not swallowed, swallowed[:3]


def script_call(engine: Any, name: str, saga_id: str) -> Any:
    """A proxy match: the EVALSHA of transition `name` for this saga."""
    sha = engine.store._scripts[name].sha.encode()
    key = engine.store.keys.saga(saga_id).encode()

    def match(args: list[bytes]) -> bool:
        return len(args) > 3 and args[0].upper() == b"EVALSHA" and args[1] == sha and key in args

    return match


def test_break_3_lost_reply_to_step_begin_is_the_same_attempt(
    wire: tuple[FaultProxy, Any, Worker], stub: StubService
) -> None:
    """The reply to step_begin is lost on the wire: the resent call is recognised as the same
    call, so the step's only attempt is not burned and the saga completes."""
    proxy, engine, _ = wire
    sid = str(uuid.uuid4())
    proxy.drop_next_reply(script_call(engine, "step_begin", sid))
    engine.start(
        {
            "saga_type": "break3",
            "steps": [step("a", "/idem/ok/a", retry={"max_attempts": 1})],
        },
        saga_id=sid,
    )
    saga = wait_final(engine, sid)
    assert proxy.counts["dropped_replies"] == 1
    assert saga["status"] == "COMPLETED", saga
    assert saga["steps"][0]["attempts"] == 1 and not saga["steps"][0]["uncertain"]
    assert len(acted(stub, sid, "a")) == 1


@pytest.mark.parametrize("fault", ["drop_next_request", "drop_next_reply"])
def test_break_4_failure_record_lost_on_the_wire_keeps_its_certainty(
    wire: tuple[FaultProxy, Any, Worker], stub: StubService, fault: str
) -> None:
    """The recording of an answered failure (HTTP 422) is lost on the wire, request or reply:
    it is resent, the step stays FAILED and certain (not undone), and the completed step's
    undo starts at once, not after a deadline or a re-drive timer."""
    proxy, engine, _ = wire
    sid = str(uuid.uuid4())
    getattr(proxy, fault)(script_call(engine, "step_fail", sid))
    started = time.time()
    engine.start(
        {
            "saga_type": "break4",
            "steps": [
                step("a", "/idem/ok/a", undo="/idem/ok/undo/a"),
                step("b", "/idem/status/422/b", undo="/idem/ok/undo/b", timeout_seconds=15),
            ],
        },
        saga_id=sid,
    )
    saga = wait_final(engine, sid)
    assert sum(proxy.counts.values()) >= 1
    assert saga["status"] == "COMPENSATED", saga
    b = saga["steps"][1]
    assert b["status"] == "FAILED" and not b["uncertain"], b
    assert b["compensation"]["status"] == "SKIPPED"
    assert "422" in b["error"]
    assert_undone_after_done(stub, sid, "a")
    assert not undone(stub, sid, "b")
    assert time.time() - started < 8  # no wait for the 15 s step deadline


def test_break_4_failure_carried_over_a_retry_when_redis_stays_away(
    service_env: dict[str, str], redis_url: str, stub: StubService
) -> None:
    """Redis is unreachable past the client's retries when an answered failure must be
    recorded: the execution raises with the transition as data, and replaying it later
    records the failure once, certain."""
    with FaultProxy.to(redis_url) as proxy:
        env = {**os.environ, "REDIS_URL": proxy.url(redis_url), "SAGA_REDIS_RETRIES": "0"}
        engine = build_engine(Settings.from_env(env))
        definition = parse_definition(
            {"saga_type": "break4-carry", "steps": [step("a", "/idem/status/422/a")]},
            engine.settings,
        )
        sid = str(uuid.uuid4())
        assert engine.store.create(sid, definition, sid).code == "created"
        proxy.drop_next_request(script_call(engine, "step_fail", sid))
        with pytest.raises(StoreUnreachable) as raised:
            engine.executions.run_step(sid, 0, "L", sid, time_limit=30)
        pending = raised.value.pending
        assert pending["op"] == "fail" and pending["uncertain"] is False
        assert engine.get(sid)["steps"][0]["status"] == "RUNNING"  # nothing recorded yet
        with pytest.raises(Exception, match="HTTP 422"):
            engine.executions.run_step(sid, 0, "L", sid, pending=pending)
        with pytest.raises(Exception, match="HTTP 422"):  # a second replay changes nothing
            engine.executions.run_step(sid, 0, "L", sid, pending=pending)
        saga = engine.get(sid)
        assert saga["status"] == "COMPENSATED"
        assert saga["steps"][0]["status"] == "FAILED" and not saga["steps"][0]["uncertain"]
        assert [h["event"] for h in engine.history(sid)].count("step_failed") == 1
        assert len(stub.calls(sid)) == 1  # the replay made no second call


# --- break 9 -------------------------------------------------------------------------------
def test_break_9_compensation_after_the_sweep_freed_a_lease_starts_at_once(
    engine: Any, worker: Worker, stub: StubService
) -> None:
    """An attempt failed, its retry message is late, the sweep freed the lease; then
    compensation is asked for: the step (no attempt in flight) is settled at once and the
    undo runs, instead of the saga waiting out the step's deadline in COMPENSATING."""
    definition = parse_definition(
        {
            "saga_type": "break9",
            "steps": [
                step("a", "/idem/ok/a", undo="/idem/ok/undo/a"),
                step("b", "/idem/ok/b", undo="/idem/ok/undo/b", timeout_seconds=20),
            ],
        },
        engine.settings,
    )
    sid = str(uuid.uuid4())
    store = engine.store
    store.create(sid, definition, sid)
    engine.dispatch_steps(sid, [0], sid)
    wait_for_call(stub, sid, "/idem/ok/a")
    while engine.get(sid)["steps"][0]["status"] != "COMPLETED":
        time.sleep(0.02)
    assert store.step_begin(sid, 1, "late-retry").code == "run"
    assert store.step_retry(sid, 1, "late-retry", 1, "HTTP 503", False, 0).code == "ok"
    time.sleep(1.1)  # SAGA_REDRIVE_AFTER_SECONDS=1: the retry is overdue
    assert store.sweep(f"step|{sid}|1").code == "redrive_steps"  # the lease is freed
    started = time.time()
    engine.compensate(sid, "give up")
    saga = sweep_until(engine, sid, {"COMPENSATED", "COMPENSATION_FAILED"}, timeout=10)
    assert saga["status"] == "COMPENSATED", saga
    assert time.time() - started < 5
    assert saga["steps"][1]["status"] == "FAILED" and not saga["steps"][1]["uncertain"]
    assert_undone_after_done(stub, sid, "a")
    assert not undone(stub, sid, "b")


# --- break 5 -------------------------------------------------------------------------------
def two_event_steps(stub_fail_at_c: bool = True) -> dict[str, Any]:
    """Steps a and b both await `stock.reserved`; c fails, so b and a are undone by the id
    their own reply gave them."""

    def event_step(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "action": {
                "event": "stock.reserve_requested",
                "await": {"success": "stock.reserved", "failure": "stock.rejected"},
            },
            "compensation": http(
                f"/idem/ok/undo/{{{{steps.{name}.output.reservation}}}}", "DELETE"
            ),
        }

    return {
        "saga_type": "break5",
        "steps": [event_step("a"), event_step("b"), step("c", "/idem/status/422/c")],
    }


def reply(engine: Any, saga_id: str, step_name: str | None, reservation: str) -> None:
    fields = {
        "type": "stock.reserved",
        "saga_id": saga_id,
        "data": f'{{"reservation": "{reservation}"}}',
    }
    if step_name:
        fields["step"] = step_name
    engine.store.append(engine.store.keys.events, fields, 1000)


def wait_step(engine: Any, saga_id: str, index: int, status: str) -> None:
    deadline = time.time() + 10
    while engine.get(saga_id)["steps"][index]["status"] != status:
        assert time.time() < deadline, engine.get(saga_id)
        time.sleep(0.02)


def test_break_5_a_resent_reply_never_settles_another_step(
    engine: Any, consumer: None, stub: StubService
) -> None:
    """Two steps await the same reply type. The service resends its reply to step a while
    step b waits: the resent reply is refused, b is settled by its own reply only, and each
    step is undone by its own output."""
    sid = engine.start(two_event_steps()).saga["saga_id"]
    wait_step(engine, sid, 0, "WAITING")
    reply(engine, sid, "a", "R-a")
    wait_step(engine, sid, 1, "WAITING")
    reply(engine, sid, "a", "R-a")  # the service resends a's reply (docs/events.md asks it to)
    time.sleep(0.5)
    assert engine.get(sid)["steps"][1]["status"] == "WAITING"
    reply(engine, sid, "b", "R-b")
    saga = wait_final(engine, sid)
    assert saga["status"] == "COMPENSATED", saga
    assert [s["output"] for s in saga["steps"][:2]] == [
        {"reservation": "R-a"},
        {"reservation": "R-b"},
    ]
    undos = [c.path for c in stub.calls(sid) if c.method == "DELETE"]
    assert undos == ["/idem/ok/undo/R-b", "/idem/ok/undo/R-a"]
    refused = [e for e in engine.events.unmatched(100) if e.get("saga_id") == sid]
    assert [e["step"] for e in refused] == ["a"] and "late" in refused[0]["outcome"]


def test_break_5_a_reply_that_names_no_step_is_refused_when_several_could_match(
    engine: Any, consumer: None
) -> None:
    """A reply without `step`, for a type that two steps await, is ambiguous: it settles
    nothing and is kept for a person (unmatched), instead of settling the wrong step."""
    sid = engine.start(two_event_steps()).saga["saga_id"]
    wait_step(engine, sid, 0, "WAITING")
    reply(engine, sid, None, "R-?")
    deadline = time.time() + 5
    while not [e for e in engine.events.unmatched(100) if e.get("saga_id") == sid]:
        assert time.time() < deadline
        time.sleep(0.02)
    assert engine.get(sid)["steps"][0]["status"] == "WAITING"
    refused = [e for e in engine.events.unmatched(100) if e.get("saga_id") == sid]
    assert "ambiguous" in refused[0]["outcome"]
    engine.compensate(sid, "done testing")


def test_a_worker_whose_pool_cannot_kill_an_attempt_says_so(
    service_env: dict[str, str], worker: Worker, tmp_path: Path
) -> None:
    """Attempt bounds are Celery hard time limits: a solo worker warns at start that its pool
    does not enforce them; the prefork worker of this run does not warn."""
    from tests.conftest import ROOT, worker_command

    log = tmp_path / "solo.log"
    env = {**os.environ, **service_env, "PYTHONPATH": str(ROOT)}
    argv = worker_command(f"{service_env['SAGA_QUEUE']}-solo", pool="solo", concurrency=1)
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 30
        while b"ready." not in log.read_bytes():
            assert time.time() < deadline and proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(20)
    assert "does not enforce hard time limits" in log.read_text()
    assert "does not enforce hard time limits" not in worker.log_path.read_text()
