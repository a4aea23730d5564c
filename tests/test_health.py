"""GET /health/ sees every component: a deployment of its own (key prefix, queue, a real
worker; beat and the events consumer started or not) shows each one's status and evidence,
and /metrics/prometheus the same figures as gauges."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from app.blueprints.health import current_health
from sagas.settings import Settings
from tasks.runtime import build_engine
from tests.conftest import Worker
from tests.stubs import StubService

KEY = "health-key"
COMPONENTS = {"redis", "workers", "beat", "events", "queues", "timers"}


class Deployment:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.engine = build_engine(Settings.from_env(env))
        self.app = create_app({"API_KEYS": [KEY], "TESTING": True}, engine=self.engine)
        self.client = self.app.test_client()

    def health(self) -> tuple[dict[str, Any], int]:
        response = self.client.get("/health/")
        return response.get_json(), response.status_code

    def component(self, name: str) -> dict[str, Any]:
        return self.health()[0]["components"][name]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def deployment(
    redis_url: str,
    service_env: dict[str, str],
    stub: StubService,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    """A worker of its own (steps and sweep queues), no beat, no events consumer."""
    prefix = f"health-{uuid.uuid4().hex[:8]}:"
    env = {
        "REDIS_URL": redis_url,
        "SAGA_KEY_PREFIX": prefix,
        "SAGA_QUEUE": f"{prefix}q",
        # The broker prefix of this process's Celery app, which sends this engine's tasks.
        "SAGA_BROKER_KEY_PREFIX": f"{service_env['SAGA_KEY_PREFIX']}kombu:",
        "SAGA_SERVICES": f'{{"svc": "{stub.url}"}}',
        "SAGA_SWEEP_INTERVAL_SECONDS": "0.3",
    }
    worker = Worker(env, tmp_path_factory.mktemp("health") / "worker.log", concurrency=2)
    worker.start()
    dep = Deployment(env)
    try:
        deadline = time.time() + 15
        while dep.health()[1] != 200:  # the worker's first heartbeat
            assert time.time() < deadline, dep.health()
            time.sleep(0.1)
        yield dep
    finally:
        worker.stop()
        r = dep.engine.store.redis
        for key in r.scan_iter(match=f"{prefix}*", count=1000):
            r.delete(key)


def test_workers_without_beat_is_degraded_until_a_sweep_completes(deployment: Deployment) -> None:
    """A worker but no beat: 200, `degraded`, beat degraded with its reason (the old fields
    unchanged); after a sweep, beat is healthy with a small lag, and so is the deployment."""
    body, code = deployment.health()
    assert code == 200
    assert body["status"] == "degraded"
    assert set(body["components"]) == COMPONENTS
    beat = body["components"]["beat"]
    assert beat["status"] == "degraded"
    assert beat["last_sweep_at"] is None and beat["lag_seconds"] is None
    assert "no sweep recorded yet" in beat["reason"]
    assert body["redis"] == "healthy" and body["workers"] == "healthy"
    assert body["workers_alive"] == 1 == body["components"]["workers"]["alive"]
    for field in ("active_sagas", "pending_sagas", "compensation_failed_sagas"):
        assert body[field] == 0
    assert body["version"]

    deployment.engine.sweep()
    body, code = deployment.health()
    assert (code, body["status"]) == (200, "healthy"), body
    beat = body["components"]["beat"]
    assert beat["status"] == "healthy"
    assert 0 <= beat["lag_seconds"] < 2 and beat["sweeps"] >= 1
    assert beat["last_sweep_at"].endswith("Z")
    with deployment.app.test_request_context():
        same, status = current_health()
    assert status == 200 and same["components"]["beat"]["status"] == "healthy"

    # A sweep older than the limit (3 intervals, at least 10 s): degraded again.
    store = deployment.engine.store
    store.redis.hset(store.keys.sweep, "at", store.now_ms() - 12_000)
    beat = deployment.component("beat")
    assert beat["status"] == "degraded" and beat["lag_seconds"] >= 12, beat
    assert "no sweep for" in beat["reason"]


def test_beat_drives_the_sweep_through_its_own_queue(
    deployment: Deployment, tmp_path: Path
) -> None:
    """With `saga-orchestrator beat` running, the worker runs the sweep from `<queue>.sweep`:
    beat turns healthy, the sweep count grows."""
    before = deployment.component("beat")["sweeps"]
    cli = str(Path(sys.executable).parent / "saga-orchestrator")
    with (tmp_path / "beat.log").open("wb") as log:
        beat = subprocess.Popen(
            [cli, "beat", "--schedule", str(tmp_path / "schedule")],
            env={**os.environ, **deployment.env},
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.time() + 20
        while (component := deployment.component("beat"))["sweeps"] < before + 3:
            assert time.time() < deadline, component
            time.sleep(0.1)
    finally:
        beat.terminate()
        beat.wait(10)
    assert component["status"] == "healthy" and component["lag_seconds"] < 2
    assert deployment.component("queues")["depths"][deployment.engine.settings.sweep_queue] == 0


def test_waiting_event_step_without_consumer_is_degraded(deployment: Deployment) -> None:
    """An event step WAITING and no events consumer: events degraded (and the deployment);
    a consumer that beats makes it healthy, and its reply completes the saga."""
    from sagas.events import run_consumer

    engine = deployment.engine
    sid = engine.start(
        {
            "saga_type": "health_events",
            "steps": [
                {
                    "name": "reserve",
                    "action": {"event": "stock.reserve", "await": {"success": "stock.reserved"}},
                }
            ],
        }
    ).saga["saga_id"]
    deadline = time.time() + 10
    while engine.get(sid)["steps"][0]["status"] != "WAITING":
        assert time.time() < deadline, engine.get(sid)
        time.sleep(0.02)
    engine.sweep()  # beat healthy: only the events component is wrong
    body, code = deployment.health()
    events = body["components"]["events"]
    assert code == 200 and body["status"] == "degraded", body
    assert events["status"] == "degraded"
    assert events["consumers"] == 0 and events["waiting_event_steps"] == 1
    assert events["oldest_wait_seconds"] is not None
    assert "saga-orchestrator events" in events["reason"]

    stop = threading.Event()
    thread = threading.Thread(target=run_consumer, args=(engine, "health-consumer", stop, 100))
    thread.start()
    try:
        deadline = time.time() + 10
        while (events := deployment.component("events"))["status"] != "healthy":
            assert time.time() < deadline, events
            time.sleep(0.05)
        assert events["consumers"] == 1 and events["names"] == ["health-consumer"]
        engine.events.publish("stock.reserved", sid, None, {"reservation": "R-9"})
        deadline = time.time() + 10
        while engine.get(sid)["status"] != "COMPLETED":
            assert time.time() < deadline, engine.get(sid)
            time.sleep(0.05)
        events = deployment.component("events")
        assert (events["waiting_event_steps"], events["pending"], events["lag"]) == (0, 0, 0)
    finally:
        stop.set()
        thread.join(5)


def test_an_overdue_timer_is_degraded_until_the_sweep_acts(deployment: Deployment) -> None:
    """A timer due 20 s ago (the sweep is not keeping up): timers degraded with how overdue;
    the sweep acts on it (here: drops it, its saga is gone) and timers are healthy."""
    store = deployment.engine.store
    store.redis.zadd(store.keys.timers, {f"saga|{uuid.uuid4()}": store.now_ms() - 20_000})
    timers = deployment.component("timers")
    assert timers["status"] == "degraded" and timers["due"] == 1
    assert 20 <= timers["oldest_overdue_seconds"] < 25
    deployment.engine.sweep()
    timers = deployment.component("timers")
    assert (timers["status"], timers["due"], timers["oldest_overdue_seconds"]) == ("healthy", 0, 0)


def test_queue_depths_and_the_gauges(deployment: Deployment) -> None:
    """Messages that no worker takes: the queue depth shows them (read where kombu keeps
    them), sweeps piling up make queues degraded, and /metrics/prometheus has every gauge."""
    import wsgi

    idle = f"{deployment.env['SAGA_KEY_PREFIX']}idle"
    other = Deployment({**deployment.env, "SAGA_QUEUE": idle})
    assert other.engine.settings.sweep_queue == f"{idle}.sweep"
    for _ in range(3):
        wsgi.celery_app.send_task("health.probe", queue=idle)
    for _ in range(5):
        wsgi.celery_app.send_task("saga.sweep", queue=f"{idle}.sweep")
    queues = other.component("queues")
    assert queues["depths"] == {idle: 3, f"{idle}.sweep": 5}
    assert queues["status"] == "degraded" and "no worker consumes" in queues["reason"]

    other.engine.sweep()
    text = other.client.get("/metrics/prometheus", headers={"X-API-Key": KEY}).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("saga_queue_depth", (("queue", idle),))] == 3
    assert samples[("saga_queue_depth", (("queue", f"{idle}.sweep"),))] == 5
    assert 0 <= samples[("saga_sweep_lag_seconds", ())] < 2
    assert samples[("saga_sweeps_total", ())] >= 1
    assert samples[("saga_workers_alive", ())] == 1
    for name in (
        "saga_events_consumers",
        "saga_events_pending",
        "saga_events_lag",
        "saga_events_waiting_steps",
        "saga_oldest_due_timer_seconds",
        "saga_timers_due",
        "saga_queue_unacked",
    ):
        assert samples[(name, ())] >= 0, name
    healthy = {
        labels[0][1]: value
        for (name, labels), value in samples.items()
        if name == "saga_component_healthy"
    }
    assert set(healthy) == COMPONENTS
    assert healthy["queues"] == 0 and healthy["workers"] == 1 and healthy["beat"] == 1
    r = other.engine.store.redis
    for queue in (idle, f"{idle}.sweep"):
        r.delete(f"{other.engine.settings.broker_key_prefix}{queue}")


def test_unreachable_redis_is_unhealthy_with_the_old_fields(app_without_redis: Flask) -> None:
    """Redis unreachable: 503, every component that could not be read left out."""
    response = app_without_redis.test_client().get("/health/")
    body = response.get_json()
    assert response.status_code == 503
    assert (body["status"], body["redis"], body["workers"]) == (
        "unhealthy",
        "unreachable",
        "unknown",
    )
    assert body["workers_alive"] == 0
    assert body["components"]["redis"]["status"] == "unhealthy"
    assert body["components"]["redis"]["reachable"] is False


@pytest.fixture()
def app_without_redis() -> Flask:
    dead = build_engine(Settings(redis_url="redis://127.0.0.1:1/0"))
    dead.store.redis.connection_pool.connection_kwargs.update(socket_connect_timeout=0.2)
    dead.store.redis.set_retry(None)  # type: ignore[arg-type]
    return create_app({"API_KEYS": [KEY]}, engine=dead)
