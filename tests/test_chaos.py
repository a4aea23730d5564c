"""Fault injection (`make chaos`): whatever happens, every saga ends COMPLETED, COMPENSATED or
visibly COMPENSATION_FAILED, and the invariants of `tests.chaos.check_invariants` hold.
Each test prints its figures (run with -s, as `make chaos` does)."""

from __future__ import annotations

import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.chaos import Figures, Stack, check_invariants
from tests.conftest import start_redis_server
from tests.stubs import StubService

pytestmark = pytest.mark.chaos


def act(path: str, method: str = "POST") -> dict[str, Any]:
    return {"service": "svc", "method": method, "path": path}


def saga(kind: str, slow: float = 0.05, last: str | None = None) -> dict[str, Any]:
    """Three steps on an idempotent service, each with its undo."""
    names = ["a", "b", "c"]
    steps = []
    for name in names:
        path = f"/idem/slow/{slow}/{name}" if name != "c" or last is None else last
        steps.append(
            {
                "name": name,
                "action": act(path),
                "compensation": act(f"/idem/ok/undo/{name}", "DELETE"),
            }
        )
    return {"saga_type": kind, "steps": steps}


@pytest.fixture()
def stack_factory(redis_url: str, stub: StubService, tmp_path: Path) -> Any:
    stacks: list[Stack] = []

    def make(url: str | None = None, **kw: Any) -> Stack:
        stack = Stack(url or redis_url, stub, tmp_path, **kw).start()
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()


def test_workers_killed_at_random(stack_factory: Any, stub: StubService) -> None:
    """250 concurrent sagas while pool processes are SIGKILLed at random moments and whole
    workers are killed and restarted."""
    stack = stack_factory(workers=2, concurrency=3)
    rng = random.Random(11)
    figures = Figures()
    started = time.time()
    ids: list[str] = []
    stop = threading.Event()

    def killer() -> None:
        while not stop.wait(rng.uniform(0.2, 0.6)):
            if rng.random() < 0.15:
                stack.kill_and_restart_worker(rng)
                figures.faults["worker SIGKILL + restart"] += 1
            elif stack.kill_pool_process(rng):
                figures.faults["pool process SIGKILL"] += 1

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        for k in range(250):
            ids.append(
                stack.start_saga(saga("killed", last="/idem/status/422/c" if k % 5 == 0 else None))
            )
        time.sleep(8)
    finally:
        stop.set()
        thread.join()
    docs = stack.wait_final(ids, timeout=180)
    figures.sagas, figures.seconds = len(ids), time.time() - started
    check_invariants(docs, stub, figures)
    figures.show("workers killed")
    assert figures.faults["pool process SIGKILL"] >= 5
    assert figures.outcomes["COMPENSATED"] >= 50  # every fifth saga fails at its last step


def test_redis_restarted_mid_run(stack_factory: Any, stub: StubService, tmp_path: Path) -> None:
    """Redis (AOF everysec, our own on a free port) SIGKILLed and restarted mid-run."""
    data = tmp_path / "redis"
    aof = ("--appendonly", "yes", "--appendfsync", "everysec")
    server, url = start_redis_server(data, *aof)
    port = int(url.rsplit(":", 1)[1].split("/")[0])

    figures = Figures()
    started = time.time()
    try:
        stack = stack_factory(url, workers=1, concurrency=3)
        ids = [stack.start_saga(saga("redis-restart", slow=0.2)) for _ in range(60)]
        time.sleep(1.5)
        server.kill()
        server.wait()
        figures.faults["redis SIGKILL"] += 1
        time.sleep(1)
        server, _ = start_redis_server(data, *aof, port=port)  # same port, same AOF
        figures.faults["redis restart"] += 1
        ids += [stack.start_saga(saga("redis-restart", slow=0.2)) for _ in range(40)]
        docs = stack.wait_final(ids, timeout=180)
        figures.sagas, figures.seconds = len(ids), time.time() - started
        check_invariants(docs, stub, figures)
        figures.show("redis restarted")
    finally:
        server.terminate()
        server.wait(10)


def test_two_beats_at_once(stack_factory: Any, stub: StubService) -> None:
    """Two beat processes: sagas whose messages were lost are each re-driven, and each step
    takes effect once."""
    from sagas.definition import parse_definition
    from sagas.settings import Settings

    stack = stack_factory(workers=1, beats=2)
    settings = Settings.from_env(stack.env)
    figures = Figures()
    started = time.time()
    ids = []
    for _ in range(40):
        saga_id = str(uuid.uuid4())
        definition = parse_definition(saga("two-beats"), settings)
        assert stack.store.create(saga_id, definition, saga_id).code == "created"
        ids.append(saga_id)  # written, never dispatched: only a sweep can start it
    figures.faults["lost dispatch"] = len(ids)
    docs = stack.wait_final(ids, timeout=90)
    figures.sagas, figures.seconds = len(ids), time.time() - started
    check_invariants(docs, stub, figures)
    # Sweeps that completed (recorded in Redis: the worker logs no line per sweep).
    figures.faults["sweeps completed"] = int(
        stack.store.redis.hget(stack.store.keys.sweep, "count") or 0
    )
    figures.show("two beats")
    assert figures.outcomes["COMPLETED"] == len(ids)


def test_manual_compensation_races_step_completion(stack_factory: Any, stub: StubService) -> None:
    """POST /compensate at a random moment around the last step's completion, 200 times:
    exactly one outcome each, and whatever took effect is undone."""
    stack = stack_factory(workers=1, concurrency=4)
    rng = random.Random(5)
    figures = Figures()
    started = time.time()
    ids: list[str] = []
    for _ in range(10):
        batch = [stack.start_saga(saga("race", slow=0.02)) for _ in range(20)]
        time.sleep(rng.uniform(0.0, 0.3))
        for saga_id in batch:
            response = stack.client.post(f"/saga/{saga_id}/compensate", json={"reason": "race"})
            assert response.status_code in (202, 409), response.text
            figures.faults[f"compensate -> {response.status_code}"] += 1
        ids += batch
    docs = stack.wait_final(ids, timeout=120)
    figures.sagas, figures.seconds = len(ids), time.time() - started
    check_invariants(docs, stub, figures)
    figures.show("compensation races completion")
    assert figures.outcomes["COMPENSATED"] == len(ids)


def test_downstream_down_longer_than_the_retry_budget(
    stack_factory: Any, stub: StubService
) -> None:
    """A service down past every retry: the step fails and the undo cannot be done
    (COMPENSATION_FAILED, visible); service back: retried compensations complete."""
    stack = stack_factory(workers=1, COMPENSATION_TIMEOUT_SECONDS="3")
    switch = f"down{uuid.uuid4().hex[:6]}"
    stub.down.add(switch)
    figures = Figures()
    started = time.time()
    definition = {
        "saga_type": "down",
        "steps": [
            {
                "name": "a",
                "action": act("/idem/ok/a"),
                "compensation": act(f"/idem/switch/{switch}/undo-a", "DELETE"),
            },
            {"name": "b", "action": act(f"/idem/switch/{switch}/b")},
        ],
    }
    ids = [stack.start_saga(definition) for _ in range(20)]
    docs = stack.wait_final(ids, timeout=90)
    assert {d["status"] for d in docs.values()} == {"COMPENSATION_FAILED"}
    figures.faults["service down"] = 1
    stub.down.discard(switch)
    for saga_id in ids:
        assert stack.client.post(f"/saga/{saga_id}/compensate").status_code == 202
    docs = stack.wait_final(ids, timeout=60)
    deadline = time.time() + 60
    while any(d["status"] != "COMPENSATED" for d in docs.values()):
        assert time.time() < deadline
        time.sleep(0.2)
        docs = {i: dict(stack.store.get(i)) for i in ids}
    figures.sagas, figures.seconds = len(ids), time.time() - started
    check_invariants(docs, stub, figures)
    figures.show("downstream down, then back")


def test_hanging_step_is_compensated_on_time(stack_factory: Any, stub: StubService) -> None:
    """A step that hangs past its timeout: the saga is fenced on time, and the hanging attempt
    is killed by its hard time limit (timeout 2 s + 1 s grace) before anything is undone;
    it never reports, and the completed step is undone."""
    stack = stack_factory(workers=1, concurrency=4, SAGA_ATTEMPT_GRACE_SECONDS="1")
    figures = Figures()
    started = time.time()
    definition = {
        "saga_type": "hang",
        "steps": [
            {
                "name": "a",
                "action": act("/idem/ok/a"),
                "compensation": act("/idem/ok/undo/a", "DELETE"),
            },
            {
                "name": "b",
                "action": {"task": "test.sleep", "args": {"seconds": 6}},
                "timeout_seconds": 2,
            },
        ],
    }
    ids = [stack.start_saga(definition) for _ in range(3)]
    docs = stack.wait_final(ids, timeout=20)
    elapsed = time.time() - started
    assert elapsed < 6, elapsed  # timeout 2 s + grace 1 s + sweep interval 0.5 s + slack
    time.sleep(4)  # the hanging steps would have returned by now, had they not been killed
    for saga_id in ids:
        doc = stack.store.get(saga_id)
        assert doc["status"] == "COMPENSATED" and doc["steps"][1]["status"] == "FAILED"
        assert doc["steps"][1]["uncertain"] and doc["steps"][1]["output"] is None
        assert doc["failure"]["reason"] == "timeout"
        undo = [c for c in stub.calls(saga_id) if c.path == "/idem/ok/undo/a"]
        assert undo and undo[0].at - started >= 3 - 0.5  # not before the hard limit
    killed = (stack.tmp / "worker0.log").read_text().count("Hard time limit")
    assert killed == len(ids)
    figures.faults["hanging steps"] = len(ids)
    figures.faults["killed at their hard time limit"] = killed
    figures.sagas, figures.seconds = len(ids), elapsed
    check_invariants(docs, stub, figures)
    figures.show("hanging step")
