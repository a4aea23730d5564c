"""The sweep: deadlines, lost messages, stuck compensations, admission control, retention.

Lost messages are made by writing state without sending its Celery message (as a crash
between a commit and its publish, or a Redis restart without AOF, would); the sweep runs in
the test process over the real worker, exactly as the beat-driven task would.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from sagas.definition import parse_definition
from sagas.settings import Settings
from tasks.runtime import build_engine
from tests.conftest import Worker, sweep_until, wait_final
from tests.stubs import StubService


def http(path: str, method: str = "POST") -> dict[str, Any]:
    return {"service": "svc", "method": method, "path": path}


def test_saga_deadline_fences_on_time_and_undoes_the_hanging_step_after_it_ends(
    engine: Any, worker: Worker, stub: StubService
) -> None:
    """A step hanging past the saga's deadline: the saga is fenced on time (COMPENSATING,
    reason timeout, no later step starts), and the undo waits for the hanging attempt to end;
    its result is recorded and undone, newest first."""
    started = time.time()
    saga = engine.start(
        {
            "saga_type": "hang",
            "timeout_seconds": 1,
            "steps": [
                {
                    "name": "a",
                    "action": http("/ok/a"),
                    "compensation": http("/ok/undo/a", "DELETE"),
                },
                {
                    "name": "b",
                    "action": {"task": "test.sleep", "args": {"seconds": 2}},
                    "compensation": http("/ok/undo/b", "DELETE"),
                },
                {"name": "c", "action": http("/ok/c")},
            ],
        }
    ).saga
    sid = saga["saga_id"]
    fenced = sweep_until(engine, sid, {"COMPENSATING"})
    assert time.time() - started < 1.8  # deadline 1 s, sweeps every 0.1 s here
    assert fenced["failure"]["reason"] == "timeout"
    assert fenced["steps"][1]["status"] == "RUNNING"  # in flight: nothing undone yet
    assert not [c for c in stub.calls(sid) if c.method == "DELETE"]
    saga = sweep_until(engine, sid, {"COMPENSATED"})
    assert time.time() - started >= 2
    assert saga["steps"][1]["status"] == "COMPENSATED"
    assert saga["steps"][1]["output"] == {"slept": 2}
    assert saga["steps"][2]["status"] == "SKIPPED"
    assert [c.path for c in stub.calls(sid) if c.method == "DELETE"] == ["/ok/undo/b", "/ok/undo/a"]
    assert "/ok/c" not in [c.path for c in stub.calls(sid)]


def test_lost_chain_message_is_redriven(engine: Any, worker: Worker, stub: StubService) -> None:
    """A saga written but never dispatched (crash between commit and publish) is started by
    the sweep once it shows no sign of life; each step runs once."""
    definition = parse_definition(
        {
            "saga_type": "lost",
            "steps": [
                {"name": "a", "action": http("/ok/a")},
                {"name": "b", "action": http("/ok/b")},
            ],
        },
        engine.settings,
    )
    sid = str(uuid.uuid4())
    assert engine.store.create(sid, definition, sid).code == "created"
    time.sleep(1.1)  # SAGA_REDRIVE_AFTER_SECONDS=1 in the tests
    saga = sweep_until(engine, sid, {"COMPLETED"})
    assert [c.path for c in stub.calls(sid)] == ["/ok/a", "/ok/b"]
    assert "steps_redriven" in [h["event"] for h in engine.history(sid)]
    assert saga["steps"][0]["attempts"] == 1


def test_lost_retry_message_is_redriven_under_the_same_key(
    engine: Any, worker: Worker, stub: StubService
) -> None:
    """An attempt failed and its retry message was lost: the sweep re-drives the step under
    the same idempotency key, as the next attempt."""
    definition = parse_definition(
        {"saga_type": "lost-retry", "steps": [{"name": "a", "action": http("/ok/a")}]},
        engine.settings,
    )
    sid = str(uuid.uuid4())
    store = engine.store
    store.create(sid, definition, sid)
    assert store.step_begin(sid, 0, "gone").code == "run"
    assert store.step_retry(sid, 0, "gone", 1, "HTTP 503", False, 0).code == "ok"
    time.sleep(1.1)
    saga = sweep_until(engine, sid, {"COMPLETED"})
    assert saga["steps"][0]["attempts"] == 2
    assert [c.idempotency_key for c in stub.calls(sid)] == [f"{sid}:a:action"]


def test_lost_compensation_is_redriven(
    engine: Any, worker: Worker, run: Any, stub: StubService
) -> None:
    """Compensation recorded but its chain never sent: the sweep sends it."""
    saga = run(
        {
            "saga_type": "lost-comp",
            "steps": [
                {
                    "name": "a",
                    "action": http("/ok/a"),
                    "compensation": http("/ok/undo/a", "DELETE"),
                },
                {
                    "name": "b",
                    "action": http("/ok/b"),
                    "compensation": http("/ok/undo/b", "DELETE"),
                },
            ],
        }
    )
    sid = saga["saga_id"]
    assert engine.store.compensate(sid, "by hand", None).values == ["1", "0"]  # not sent
    time.sleep(1.1)
    sweep_until(engine, sid, {"COMPENSATED"})
    assert [c.path for c in stub.calls(sid) if c.method == "DELETE"] == ["/ok/undo/b", "/ok/undo/a"]


def test_compensation_past_its_deadline_fails_visibly(engine: Any, worker: Worker) -> None:
    """A compensation that hangs past COMPENSATION_TIMEOUT_SECONDS (3 s here) ends the saga
    COMPENSATION_FAILED, naming the step."""
    saga = engine.start(
        {
            "saga_type": "comp-hang",
            "steps": [
                {
                    "name": "a",
                    "action": {"task": "builtin.noop", "args": {}},
                    "compensation": {"task": "test.sleep", "args": {"seconds": 6}},
                },
                {"name": "b", "action": http("/status/400/b")},
            ],
        }
    ).saga
    saga = sweep_until(engine, saga["saga_id"], {"COMPENSATION_FAILED"})
    assert saga["compensation_failure"]["step"] == "a"
    assert "COMPENSATION_TIMEOUT_SECONDS" in saga["steps"][0]["compensation"]["error"]


def test_sweeps_never_act_twice(engine: Any, worker: Worker, stub: StubService) -> None:
    """A held lock makes a second sweep skip; and two sweeps racing on the same due timers
    (lock or not) act on each exactly once."""
    token = engine.store.lock("sweep", 5000)
    assert token is not None
    try:
        assert engine.sweep().skipped
    finally:
        engine.store.unlock("sweep", token)
    definition = parse_definition(
        {"saga_type": "race-sweep", "steps": [{"name": "a", "action": http("/ok/a")}]},
        engine.settings,
    )
    ids = [str(uuid.uuid4()) for _ in range(20)]
    for sid in ids:
        engine.store.create(sid, definition, sid)
    time.sleep(1.1)
    answers: list[str] = []
    barrier = threading.Barrier(2)

    def racer() -> None:
        barrier.wait()
        for sid in ids:
            answers.append(engine.store.sweep(f"next|{sid}").code)

    threads = [threading.Thread(target=racer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers.count("redrive_steps") == 20 and answers.count("none") == 20
    for sid in ids:  # re-drive them for real; each runs once
        sweep_until(engine, sid, {"COMPLETED"})
        assert len(stub.calls(sid)) == 1


def test_retention_deletes_finished_sagas_only(engine: Any, run: Any) -> None:
    """Finished sagas older than SAGA_RETENTION_SECONDS are deleted with their index entries;
    unfinished ones are kept."""
    from sagas.errors import SagaNotFound

    done = run(
        {
            "saga_type": "retained",
            "steps": [{"name": "a", "action": {"task": "builtin.noop", "args": {}}}],
        }
    )["saga_id"]
    stuck = engine.start(
        {
            "saga_type": "retained",
            "steps": [{"name": "a", "action": {"task": "test.sleep", "args": {"seconds": 2}}}],
        }
    ).saga
    time.sleep(1.1)
    short = build_engine(
        Settings.from_env().__class__(**{**vars(engine.settings), "retention_seconds": 1})
    )
    report = short.sweep()
    assert report.expired >= 1
    with pytest.raises(SagaNotFound):
        engine.get(done)
    assert engine.store.redis.zscore(engine.store.keys.all, done) is None
    assert engine.get(stuck["saga_id"])["status"] in ("RUNNING", "COMPLETED")


def test_admission_control_keeps_running_sagas_under_the_limit(
    redis_url: str, stub: StubService, tmp_path: Any, service_env: dict[str, str], engine: Any
) -> None:
    """With MAX_CONCURRENT_SAGAS=2, extra sagas wait PENDING and start in arrival order as
    slots free; never more than 2 RUN; a PENDING saga can be cancelled."""
    prefix = f"adm-{uuid.uuid4().hex[:8]}:"
    # Its own store prefix and limit; the broker key prefix of this process's Celery app.
    env = {
        "REDIS_URL": redis_url,
        "SAGA_KEY_PREFIX": prefix,
        "SAGA_QUEUE": f"{prefix}q",
        "SAGA_BROKER_KEY_PREFIX": f"{service_env['SAGA_KEY_PREFIX']}kombu:",
        "MAX_CONCURRENT_SAGAS": "2",
        "SAGA_SERVICES": f'{{"svc": "{stub.url}"}}',
        "SAGA_REDRIVE_AFTER_SECONDS": "1",
    }
    settings = Settings.from_env(env)
    eng = build_engine(settings)
    w = Worker(env, tmp_path / "worker.log", concurrency=4).start()
    try:
        ids = [
            eng.start(
                {"saga_type": "adm", "steps": [{"name": "a", "action": http("/slow/0.4/a")}]}
            ).saga["saga_id"]
            for _ in range(6)
        ]
        statuses = [eng.get(i)["status"] for i in ids]
        assert statuses == ["RUNNING", "RUNNING"] + ["PENDING"] * 4
        assert eng.compensate(ids[-1], "not needed")["status"] == "COMPENSATED"
        peak = 0
        deadline = time.time() + 20
        while any(eng.get(i)["status"] not in ("COMPLETED", "COMPENSATED") for i in ids):
            peak = max(peak, eng.counts()["RUNNING"])
            assert time.time() < deadline, [(eng.get(i)["status"], eng.history(i)) for i in ids]
            time.sleep(0.02)
        assert peak <= 2
        # FIFO admission (when they then start may interleave by milliseconds across workers)
        admitted = [
            next(h["at"] for h in eng.history(i) if h["event"] == "admitted") for i in ids[2:5]
        ]
        assert admitted == sorted(admitted)
        assert stub.calls(ids[-1]) == []
    finally:
        w.stop()
        for key in eng.store.redis.scan_iter(match=f"{prefix}*", count=1000):
            eng.store.redis.delete(key)


def test_beat_drives_the_sweep(
    engine: Any, worker: Worker, service_env: dict[str, str], stub: StubService, tmp_path: Any
) -> None:
    """`saga-orchestrator beat` schedules the sweep and the worker runs it (from the sweep's
    own queue): a saga whose message was lost completes with nobody calling the sweep by
    hand. Neither the worker nor beat logs a line per sweep."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    definition = parse_definition(
        {"saga_type": "beat", "steps": [{"name": "a", "action": http("/ok/a")}]}, engine.settings
    )
    sid = str(uuid.uuid4())
    engine.store.create(sid, definition, sid)
    sweeps = int(engine.store.redis.hget(engine.store.keys.sweep, "count") or 0)
    cli = str(Path(sys.executable).parent / "saga-orchestrator")
    env = {**os.environ, **service_env, "SAGA_SWEEP_INTERVAL_SECONDS": "0.5"}
    with (tmp_path / "beat.log").open("wb") as log:
        beat = subprocess.Popen(
            [cli, "beat", "--loglevel", "INFO", "--schedule", str(tmp_path / "schedule")],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        saga = wait_final(engine, sid, timeout=20)
    finally:
        beat.terminate()
        beat.wait(10)
    assert saga["status"] == "COMPLETED"
    assert int(engine.store.redis.hget(engine.store.keys.sweep, "count")) > sweeps
    assert "Task saga.sweep" not in worker.log_path.read_text()  # received, succeeded
    # Beat may fire other tests' schedules (same prefix): each such firing keeps its line.
    assert "(saga.sweep)" not in (tmp_path / "beat.log").read_text()
