"""Traces across processes: gunicorn (`saga-orchestrator api`) and a Celery worker, each a
real process exporting OTLP over HTTP to a receiver in this test, and a stub service that
records the `traceparent` of every call it gets. One saga is one trace: the API's span, every
step and compensation attempt, the HTTP calls, and what the services received."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import ROOT, Worker, free_port, stop_process, wait_final
from tests.otlp import OtlpReceiver
from tests.stubs import StubService

KEY = "trace-key"
CLI = str(Path(sys.executable).parent / "saga-orchestrator")
FINAL = ("COMPLETED", "COMPENSATED", "COMPENSATION_FAILED")
SERVER, CLIENT = 2, 3  # OTLP span kinds


@pytest.fixture(scope="module")
def traced(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    prefix = f"trace-{uuid.uuid4().hex[:8]}:"
    receiver = OtlpReceiver().start()
    stub = StubService().start()
    logs = tmp_path_factory.mktemp("tracing")
    port = free_port()
    env = {
        "PYTHONPATH": str(ROOT),
        "REDIS_URL": redis_url,
        "SAGA_KEY_PREFIX": prefix,
        "SAGA_QUEUE": f"{prefix}sagas",
        "SAGA_API_KEYS": KEY,
        "SAGA_SERVICES": f'{{"svc": "{stub.url}"}}',
        "SAGA_RETRY_BACKOFF_SECONDS": "0.05",
        "SAGA_RETRY_MAX_BACKOFF_SECONDS": "0.2",
        "WEB_CONCURRENCY": "1",
        "SAGA_SWEEP_INTERVAL_SECONDS": "0.5",
        "SAGA_REDRIVE_AFTER_SECONDS": "1",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: spans reach the receiver promptly
    }
    full = {**os.environ, **env}
    full.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with (logs / "api.log").open("wb") as out:
        api = subprocess.Popen(
            [CLI, "api", "--bind", f"127.0.0.1:{port}"],
            cwd=ROOT,
            env=full,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    with (logs / "beat.log").open("wb") as out:
        beat = subprocess.Popen(
            [CLI, "beat", "--schedule", str(logs / "beat-schedule")],
            cwd=ROOT,
            env=full,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    worker = Worker(env, logs / "worker.log", concurrency=2)
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": KEY}, timeout=10
    )
    try:
        worker.start()
        deadline = time.time() + 30
        while True:
            try:
                if client.get("/health/").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, (logs / "api.log").read_text()[-3000:]
            time.sleep(0.1)
        yield {
            "client": client,
            "receiver": receiver,
            "stub": stub,
            "logs": logs,
            "prefix": prefix,
            "redis_url": redis_url,
        }
    finally:
        client.close()
        stop_process(beat)
        worker.stop()
        stop_process(api)
        stub.stop()
        receiver.stop()
        r = redis.Redis.from_url(redis_url)
        for key in r.scan_iter(match=f"{prefix}*", count=1000):
            r.delete(key)


def http_step(name: str, path: str, undo: str | None = None) -> dict[str, Any]:
    step: dict[str, Any] = {
        "name": name,
        "action": {"service": "svc", "method": "POST", "path": path},
        "retry": {"max_attempts": 3, "backoff_seconds": 0.05},
    }
    if undo:
        step["compensation"] = {"service": "svc", "method": "DELETE", "path": undo}
    return step


def finish(client: httpx.Client, saga_id: str) -> dict[str, Any]:
    deadline = time.time() + 30
    while True:
        doc: dict[str, Any] = client.get(f"/saga/{saga_id}/status").json()
        if doc["status"] in FINAL:
            return doc
        assert time.time() < deadline, doc
        time.sleep(0.05)


def ancestors(span: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> list[str]:
    """The span ids above `span`, nearest first, as far as the received spans go."""
    chain = []
    parent = span["parent_id"]
    while parent:
        chain.append(parent)
        parent = by_id[parent]["parent_id"] if parent in by_id else None
    return chain


def test_one_trace_joins_api_steps_retries_compensation_and_services(
    traced: dict[str, Any],
) -> None:
    client, receiver, stub = traced["client"], traced["receiver"], traced["stub"]
    caller_trace, caller_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    tag = uuid.uuid4().hex[:8]
    response = client.post(
        "/saga/start",
        json={
            "saga_type": "traced",
            "steps": [
                http_step("reserve", f"/ok/{tag}/reserve", undo=f"/ok/{tag}/release"),
                http_step("charge", f"/flaky/1/503/{tag}/charge"),  # fails once, then 200
                http_step("ship", f"/status/400/{tag}/ship"),  # fails for good: undo
            ],
        },
        headers={"traceparent": f"00-{caller_trace}-{caller_span}-01"},
    )
    assert response.status_code == 202, response.text
    saga_id = response.json()["saga_id"]
    assert response.json()["trace_id"] == caller_trace  # the saga joined the caller's trace
    assert finish(client, saga_id)["status"] == "COMPENSATED"

    def complete(spans: list[dict[str, Any]]) -> bool:
        """Both processes' spans are in: they export independently."""
        mine = [s for s in spans if s["trace_id"] == caller_trace]
        return (
            len([s for s in mine if s["attributes"].get("saga.id") == saga_id]) >= 5
            and len([s for s in mine if s["kind"] == CLIENT]) >= 5
            and any(s["kind"] == SERVER for s in mine)
        )

    spans = [s for s in receiver.wait_for(complete) if s["trace_id"] == caller_trace]
    by_id = {s["span_id"]: s for s in spans}
    api = [s for s in spans if s["kind"] == SERVER and s["service"] == "saga-api"]
    assert [s["name"] for s in api] == ["POST /saga/start"]
    assert api[0]["parent_id"] == caller_span  # the caller's span is the API span's parent

    attempts = sorted(
        (s for s in spans if "saga.attempt" in s["attributes"]), key=lambda s: s["start"]
    )
    seen = [
        (s["name"], s["attributes"]["saga.attempt"], s["attributes"]["saga.outcome"])
        for s in attempts
    ]
    assert seen == [
        ("step reserve", 1, "completed"),
        ("step charge", 1, "retry"),  # the retry is visible as an attempt of its own
        ("step charge", 2, "completed"),
        ("step ship", 1, "failed"),
        ("compensate reserve", 1, "completed"),
    ], seen
    for span in attempts:
        attributes = span["attributes"]
        assert attributes["saga.id"] == saga_id and attributes["saga.type"] == "traced"
        assert span["service"] == "saga-worker"
        # every attempt descends from the API's span (through the Celery spans that ran it)
        assert api[0]["span_id"] in ancestors(span, by_id), (span["name"], ancestors(span, by_id))

    # Every call the service received carries the trace, and its parent is the client span
    # of the attempt that made it.
    calls = [c for c in stub.ledger if c.saga_id == saga_id]
    assert len(calls) == 5 and all(c.traceparent for c in calls)
    for call in calls:
        _, trace_hex, parent_hex, _ = call.traceparent.split("-")
        assert trace_hex == caller_trace
        client_span = by_id[parent_hex]
        assert client_span["kind"] == CLIENT
        attempt = by_id[client_span["parent_id"]]
        assert attempt["attributes"]["saga.step"] in call.path.replace("release", "reserve")


def test_a_compensation_asked_for_later_joins_the_sagas_trace(traced: dict[str, Any]) -> None:
    """The compensation is enqueued by another request, in a trace of its own: the saga's
    stored trace context (not Celery's headers) puts its attempts in the saga's trace, with
    a span there linked to that request."""
    client, receiver = traced["client"], traced["receiver"]
    tag = uuid.uuid4().hex[:8]
    started = client.post(
        "/saga/start",
        json={
            "saga_type": "traced_later",
            "steps": [http_step("book", f"/ok/{tag}/book", undo=f"/ok/{tag}/unbook")],
        },
    )
    saga_id, saga_trace = started.json()["saga_id"], started.json()["trace_id"]
    assert saga_trace and len(saga_trace) == 32
    assert finish(client, saga_id)["status"] == "COMPLETED"
    other_trace = uuid.uuid4().hex
    asked = client.post(
        f"/saga/{saga_id}/compensate",
        json={"reason": "customer cancelled"},
        headers={"traceparent": f"00-{other_trace}-{uuid.uuid4().hex[:16]}-01"},
    )
    assert asked.status_code == 202, asked.text
    assert finish(client, saga_id)["status"] == "COMPENSATED"

    def undone(spans: list[dict[str, Any]]) -> bool:
        """The worker's attempt and the API's spans are in (they export independently)."""
        names = {s["name"] for s in spans if s["trace_id"] == saga_trace}
        theirs = [s for s in spans if s["trace_id"] == other_trace and s["kind"] == SERVER]
        return {"compensate book", "compensation requested"} <= names and bool(theirs)

    spans = receiver.wait_for(undone)
    ours = {s["span_id"]: s for s in spans if s["trace_id"] == saga_trace}
    undo = next(s for s in ours.values() if s["name"] == "compensate book")
    assert undo["attributes"]["saga.outcome"] == "completed"
    requested = next(s for s in ours.values() if s["name"] == "compensation requested")
    assert requested["span_id"] in ancestors(undo, ours)
    request_span = next(s for s in spans if s["trace_id"] == other_trace and s["kind"] == SERVER)
    assert requested["links"] == [request_span["span_id"]]
    # the request's own trace holds no attempt of the saga
    assert not [
        s for s in spans if s["trace_id"] == other_trace and "saga.attempt" in s["attributes"]
    ]


def test_a_sweeps_redrive_is_a_span_of_the_sagas_trace(traced: dict[str, Any]) -> None:
    """A saga written whose steps were never enqueued (a crash between the write and the
    publish): beat's sweep, in a trace of its own, re-drives it; the re-drive is a span in the
    saga's trace, and the attempts it caused are below it."""
    from dataclasses import replace

    from sagas.definition import parse_definition
    from sagas.settings import Settings
    from sagas.store import RedisStore, connect

    receiver, stub = traced["receiver"], traced["stub"]
    settings = replace(Settings.from_env(), services={"svc": stub.url})
    store = RedisStore(connect(traced["redis_url"]), traced["prefix"], redrive_after_seconds=1)
    tag, saga_id = uuid.uuid4().hex[:8], str(uuid.uuid4())
    saga_trace, parent = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    definition = parse_definition(
        {"saga_type": "lost_traced", "steps": [http_step("a", f"/ok/{tag}/a")]}, settings
    )
    created = store.create(saga_id, definition, saga_id, traceparent=f"00-{saga_trace}-{parent}-01")
    assert created.code == "created"

    def redriven(spans: list[dict[str, Any]]) -> bool:
        names = {s["name"] for s in spans if s["trace_id"] == saga_trace}
        return {"step a", "sweep next: redrive_steps"} <= names

    spans = receiver.wait_for(redriven, timeout=30)
    ours = {s["span_id"]: s for s in spans if s["trace_id"] == saga_trace}
    sweep = [s for s in ours.values() if s["name"] == "sweep next: redrive_steps"]
    assert len(sweep) == 1 and sweep[0]["parent_id"] == parent
    assert sweep[0]["attributes"]["saga.id"] == saga_id
    attempt = next(s for s in ours.values() if s["name"] == "step a")
    assert sweep[0]["span_id"] in ancestors(attempt, ours)
    assert attempt["attributes"]["saga.outcome"] == "completed"
    # the sweep's own trace is never started (QuietRoots): no sweep span has no parent
    assert not [s for s in spans if s["name"] == "run/saga.sweep" and not s["parent_id"]]
    store.redis.close()


def test_without_tracing_a_callers_traceparent_still_reaches_the_services(
    engine: Any, worker: Any, stub: StubService
) -> None:
    """Tracing off (the session's worker exports nothing): the saga keeps the context it was
    started in and passes it on to every call unchanged; a saga started outside any trace
    sends none."""
    from opentelemetry import context as otel_context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    tag = uuid.uuid4().hex[:8]
    definition = {"saga_type": "untraced", "steps": [http_step("a", f"/ok/{tag}/a")]}
    caller = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
    token = otel_context.attach(TraceContextTextMapPropagator().extract({"traceparent": caller}))
    try:
        joined = engine.start(definition).saga
    finally:
        otel_context.detach(token)
    alone = engine.start(definition).saga
    assert joined["trace_id"] == caller.split("-")[1] and alone["trace_id"] is None
    for saga in (joined, alone):
        assert wait_final(engine, saga["saga_id"])["status"] == "COMPLETED"
    received = {c.saga_id: c.traceparent for c in stub.ledger if tag in c.path}
    assert received == {joined["saga_id"]: caller, alone["saga_id"]: None}


def test_an_event_steps_command_carries_the_sagas_traceparent(engine: Any, worker: Any) -> None:
    """The command an event step publishes names the trace (docs/events.md), so a service
    consuming the stream can continue it; a saga without a trace publishes none."""
    from opentelemetry import context as otel_context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from tests.test_events import command_for, definition

    caller = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
    token = otel_context.attach(TraceContextTextMapPropagator().extract({"traceparent": caller}))
    try:
        traced = engine.start(definition()).saga
    finally:
        otel_context.detach(token)
    untraced = engine.start(definition()).saga
    assert command_for(engine, traced["saga_id"])["traceparent"] == caller
    assert "traceparent" not in command_for(engine, untraced["saga_id"])
    for saga in (traced, untraced):
        engine.compensate(saga["saga_id"], "test over")


def test_the_standard_variables_turn_tracing_on_and_off() -> None:
    from sagas import tracing

    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert not tracing.wanted({})
    assert not tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": ""})
    assert tracing.wanted(endpoint)
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing.wanted({**endpoint, "OTEL_SDK_DISABLED": "true"})
    assert not tracing.wanted({**endpoint, "OTEL_TRACES_EXPORTER": "none"})


def test_off_builds_no_span() -> None:
    """This test process never configured tracing: an attempt gets no span object at all,
    and the global provider is still the API's placeholder (no SDK installed)."""
    from opentelemetry import trace

    from sagas import tracing

    assert not tracing.enabled()
    with tracing.attempt("step x", "00-" + "1" * 32 + "-" + "2" * 16 + "-01", {}) as span:
        assert span is None
    assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"
