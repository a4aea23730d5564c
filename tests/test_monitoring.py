"""What a Celery monitor (Flower) sees, from the task events of the real worker: each step
and compensation by its saga's type and step name, and no trace of the sweep, which runs from
a queue of its own and logs no line when it finds nothing to do."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Worker
from tests.stubs import StubService


class Events:
    """The task events of this run's broker, captured in a thread (as Flower receives them)."""

    def __init__(self) -> None:
        import wsgi

        self.app = wsgi.celery_app
        self.seen: list[dict[str, Any]] = []
        self.receiver: Any = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.app.connection_for_read() as connection:
            self.receiver = self.app.events.Receiver(connection, handlers={"*": self.seen.append})
            self.receiver.capture(limit=None, timeout=None, wakeup=False)

    def start(self) -> Events:
        self.thread.start()
        deadline = time.time() + 15
        while not self.seen:  # a worker heartbeat (every 2 s): the receiver is listening
            assert time.time() < deadline, "no event received from the worker"
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.receiver is not None:
            self.receiver.should_stop = True
        self.thread.join(5)

    def of_tasks(self, *types: str) -> list[dict[str, Any]]:
        return [e for e in list(self.seen) if e["type"] in types]


@pytest.fixture()
def events(worker: Worker) -> Iterator[Events]:
    captured = Events().start()
    yield captured
    captured.stop()


def test_flower_sees_each_execution_by_saga_type_and_step(
    run: Any, events: Events, stub: StubService
) -> None:
    """Every task-received event (the one that carries the name Flower shows) names the step
    or the undo: `monitored/b` (twice: its retry keeps the name), `monitored/a (undo)`."""
    saga = run(
        {
            "saga_type": "monitored",
            "steps": [
                {
                    "name": "a",
                    "action": {"service": "svc", "path": "/ok/a"},
                    "compensation": {"service": "svc", "method": "DELETE", "path": "/ok/undo/a"},
                },
                {"name": "b", "action": {"service": "svc", "path": "/flaky/1/503/b"}},
                {"name": "c", "action": {"service": "svc", "path": "/status/400/c"}},
            ],
        }
    )
    assert saga["status"] == "COMPENSATED"
    deadline = time.time() + 5
    while True:
        received = [
            e["name"] for e in events.of_tasks("task-received") if saga["saga_id"] in e["args"]
        ]
        if len(received) >= 5 or time.time() > deadline:
            break
        time.sleep(0.05)
    assert received == [
        "monitored/a",
        "monitored/b",
        "monitored/b",
        "monitored/c",
        "monitored/a (undo)",
    ], received


def test_the_sweep_has_its_own_queue_and_no_events_nor_log_lines(
    engine: Any, worker: Worker, events: Events, service_env: dict[str, str], tmp_path: Path
) -> None:
    """`saga.sweep` is routed to `<queue>.sweep`, which the worker consumes; neither the worker
    (task-received, -started, -succeeded) nor beat (task-sent) sends an event for it, and the
    worker logs no "Task saga.sweep" line. Every completed sweep is counted in Redis."""
    from tasks.sweep import sweep

    assert engine.settings.sweep_queue == f"{service_env['SAGA_QUEUE']}.sweep"
    route = events.app.amqp.router.route({}, "saga.sweep")
    assert route["queue"].name == engine.settings.sweep_queue
    count = int(engine.store.redis.hget(engine.store.keys.sweep, "count") or 0)

    by_hand = sweep.apply_async().id
    cli = str(Path(sys.executable).parent / "saga-orchestrator")
    env = {**os.environ, **service_env, "SAGA_SWEEP_INTERVAL_SECONDS": "0.3"}
    with (tmp_path / "beat.log").open("wb") as log:
        beat = subprocess.Popen(
            [cli, "beat", "--loglevel", "INFO", "--schedule", str(tmp_path / "schedule")],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.time() + 20
        while int(engine.store.redis.hget(engine.store.keys.sweep, "count") or 0) < count + 4:
            assert time.time() < deadline, "the worker ran no sweep from its queue"
            time.sleep(0.1)
    finally:
        beat.terminate()
        beat.wait(10)
    time.sleep(0.5)  # events in flight
    about_sweeps = [
        e
        for e in events.seen
        if (e.get("name") == "saga.sweep" or e.get("uuid") == by_hand)
        # the test process sent by_hand itself: its own task-sent event is not beat's
        and not (e.get("uuid") == by_hand and e["type"] == "task-sent")
    ]
    assert about_sweeps == []
    assert events.of_tasks("worker-heartbeat")  # the receiver was listening all along
    assert "Task saga.sweep" not in worker.log_path.read_text()
    # Beat may fire other tests' schedules (same prefix): each such firing keeps its line.
    assert "(saga.sweep)" not in (tmp_path / "beat.log").read_text()
