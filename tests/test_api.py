"""The REST API of docs/api.md: every endpoint row, its error cases and the auth rules.

The app runs in-process (Flask test client) over the real engine, Redis and Celery worker.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from sagas.errors import ConfigurationError
from tests.stubs import StubService

KEY, OTHER_KEY = "test-key-1", "test-key-2"


@pytest.fixture(scope="module")
def app(engine: Any, worker: Any) -> Flask:
    return create_app(
        {"API_KEYS": [KEY, OTHER_KEY], "TESTING": True, "MAX_CONTENT_LENGTH": 64 * 1024},
        engine=engine,
    )


@pytest.fixture()
def client(app: Flask) -> FlaskClient:
    c = app.test_client()
    c.environ_base["HTTP_X_API_KEY"] = KEY
    return c


def definition(saga_type: str = "api", **extra: Any) -> dict[str, Any]:
    return {
        "saga_type": saga_type,
        "payload": {"n": 1},
        "steps": [
            {
                "name": "a",
                "action": {"service": "svc", "path": "/ok/a"},
                "compensation": {"service": "svc", "method": "DELETE", "path": "/ok/undo/a"},
            },
            {"name": "b", "action": {"task": "builtin.noop", "args": {"n": "{{payload.n}}"}}},
        ],
        **extra,
    }


def start(client: FlaskClient, body: dict[str, Any] | None = None, **kw: Any) -> Any:
    response = client.post("/saga/start", json=body or definition(), **kw)
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def wait_status(client: FlaskClient, saga_id: str, *statuses: str) -> dict[str, Any]:
    deadline = time.time() + 20
    while True:
        doc = client.get(f"/saga/{saga_id}/status").get_json()
        if doc["status"] in statuses:
            return doc  # type: ignore[no-any-return]
        assert time.time() < deadline, doc
        time.sleep(0.02)


# --- authentication ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/saga"),
        ("POST", "/saga/start"),
        ("GET", "/saga/x/status"),
        ("GET", "/saga/x/steps"),
        ("POST", "/saga/x/compensate"),
        ("DELETE", "/saga/x"),
        ("GET", "/workflows/templates"),
        ("POST", "/workflows/user_registration/start"),
        ("GET", "/metrics"),
        ("GET", "/metrics/prometheus"),
        ("POST", "/events/some.event"),
        ("GET", "/events/unmatched"),
        ("GET", "/events/dead-letters"),
    ],
)
def test_every_endpoint_but_health_and_docs_needs_a_key(app: Flask, method: str, path: str) -> None:
    """No key or a wrong key gets 401 with a JSON body, and nothing happens."""
    c = app.test_client()
    for headers in (
        {},
        {"X-API-Key": "wrong"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {KEY}"},
    ):
        response = c.open(path, method=method, headers=headers, json={})
        assert response.status_code == 401
        assert response.get_json()["code"] == 401
        assert "API key" in response.get_json()["message"]


def test_both_key_headers_are_accepted(app: Flask) -> None:
    """`X-API-Key` and `Authorization: Bearer` both work, for any configured key."""
    c = app.test_client()
    assert c.get("/saga", headers={"X-API-Key": KEY}).status_code == 200
    assert c.get("/saga", headers={"Authorization": f"Bearer {OTHER_KEY}"}).status_code == 200


def test_health_openapi_and_docs_are_open(app: Flask) -> None:
    """GET /, /health/, /openapi.json and /docs (with its assets) need no key."""
    c = app.test_client()
    assert c.get("/").get_json()["links"]["docs"] == "/docs"
    assert c.get("/health/").status_code in (200, 503)
    assert c.get("/openapi.json").status_code == 200
    page = c.get("/docs")
    assert page.status_code == 200
    assert b"/docs/static/swagger-ui-bundle.js" in page.data
    assert b"cdn" not in page.data.lower()
    with c.get("/docs/static/swagger-ui-bundle.js") as asset:
        assert asset.status_code == 200 and len(asset.data) > 100_000


def test_closed_by_default(engine: Any) -> None:
    """Without keys the API refuses to start, unless anonymous access is switched on."""
    with pytest.raises(ConfigurationError, match="SAGA_API_KEYS"):
        create_app({"API_KEYS": [], "ALLOW_ANONYMOUS": False}, engine=engine)
    anonymous = create_app({"API_KEYS": [], "ALLOW_ANONYMOUS": True}, engine=engine)
    assert anonymous.test_client().get("/").status_code == 200


# --- service info and health ---------------------------------------------------------------
def test_root_gives_service_info(client: FlaskClient) -> None:
    """GET / names the service, its version, patterns and links."""
    body = client.get("/").get_json()
    assert body["name"] == "saga-orchestrator"
    assert body["patterns"] == ["orchestration", "choreography"]
    assert body["links"]["docs"] == "/docs"


def test_health_with_a_live_worker(client: FlaskClient, engine: Any) -> None:
    """With Redis up and a worker heartbeat, health is 200 and counts sagas; with a recent
    sweep (beat) the beat component is healthy (tests/test_health.py has every component)."""
    engine.sweep()
    deadline = time.time() + 10
    while (response := client.get("/health/")).status_code != 200:
        assert time.time() < deadline, response.get_json()
        time.sleep(0.2)
    body = response.get_json()
    # healthy, or degraded by what earlier tests of this run left (an event step waiting)
    assert body["status"] in ("healthy", "degraded")
    assert body["redis"] == "healthy" and body["workers"] == "healthy"
    assert body["workers_alive"] >= 1
    assert isinstance(body["active_sagas"], int) and isinstance(body["pending_sagas"], int)
    components = body["components"]
    assert {"redis", "workers", "beat", "events", "queues", "timers"} == set(components)
    assert components["workers"]["status"] == components["beat"]["status"] == "healthy"


def test_health_is_503_without_workers_or_redis(redis_url: str) -> None:
    """No worker heartbeat: 503 naming the workers; Redis unreachable: 503 naming Redis."""
    from sagas.settings import Settings
    from tasks.runtime import build_engine

    lonely = build_engine(Settings(redis_url=redis_url, key_prefix=f"lonely-{uuid.uuid4()}:"))
    body = create_app({"API_KEYS": [KEY]}, engine=lonely).test_client().get("/health/")
    assert body.status_code == 503
    assert body.get_json()["workers"] == "no worker heartbeat"
    assert body.get_json()["status"] == "unhealthy"
    assert body.get_json()["components"]["workers"]["status"] == "unhealthy"
    dead = build_engine(Settings(redis_url="redis://127.0.0.1:1/0"))
    dead.store.redis.connection_pool.connection_kwargs.update(socket_connect_timeout=0.2)
    dead.store.redis.set_retry(None)  # type: ignore[arg-type]
    c = create_app({"API_KEYS": [KEY]}, engine=dead).test_client()
    body = c.get("/health/")
    assert body.status_code == 503
    assert body.get_json()["redis"] == "unreachable"
    assert body.get_json()["components"]["redis"]["status"] == "unhealthy"
    other = c.get("/saga/x/status", headers={"X-API-Key": KEY})
    assert other.status_code == 503
    assert "Redis" in other.get_json()["message"]


# --- starting sagas --------------------------------------------------------------------------
def test_start_returns_202_and_the_document(client: FlaskClient) -> None:
    """POST /saga/start answers 202 with the saga document; the saga completes."""
    doc = start(client, definition(correlation_id="req-api-1"))
    assert doc["status"] == "RUNNING"
    assert doc["correlation_id"] == "req-api-1"
    assert [s["name"] for s in doc["steps"]] == ["a", "b"]
    assert set(doc) >= {
        "saga_id",
        "saga_type",
        "status",
        "payload",
        "current_step",
        "created_at",
        "updated_at",
        "deadline_at",
        "finished_at",
        "failure",
        "steps",
    }
    done = wait_status(client, doc["saga_id"], "COMPLETED")
    assert done["steps"][1]["output"] == {"n": 1}
    assert done["finished_at"] is not None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"steps": []}, "saga_type"),
        ({"saga_type": "x"}, "steps"),
        ({**definition(), "extra": 1}, "extra"),
        (
            {
                **definition(),
                "steps": [
                    {"name": "a", "action": {"service": "svc", "path": "/x"}, "compensaton": {}}
                ],
            },
            "steps[0].compensaton",
        ),
        (
            {
                **definition(),
                "steps": [
                    {"name": "a", "action": {"service": "svc", "path": "/x", "method": "TRACE"}}
                ],
            },
            "steps[0].action.method",
        ),
        (
            {
                **definition(),
                "steps": [{"name": "a", "action": {"service": "elsewhere", "path": "/x"}}],
            },
            "steps[0].action.service",
        ),
        (
            {
                **definition(),
                "steps": [{"name": "a", "action": {"service": "svc", "path": "//evil.example/"}}],
            },
            "steps[0].action.path",
        ),
        ({**definition(), "payload": []}, "payload"),
    ],
)
def test_invalid_definition_is_422_naming_the_field(
    client: FlaskClient, body: Any, field: str
) -> None:
    """Invalid definitions get 422 with the flat field path, and write nothing."""
    store = client.application.extensions["saga_engine"].store
    before = store.redis.zcard(store.keys.all)
    response = client.post("/saga/start", json=body)
    assert response.status_code == 422, response.get_json()
    payload = response.get_json()
    assert payload["code"] == 422 and payload["status"] == "Unprocessable Entity"
    assert field in payload["errors"]["json"], payload
    assert store.redis.zcard(store.keys.all) == before


def test_malformed_json_is_400_and_large_bodies_413(client: FlaskClient) -> None:
    """Broken JSON: 400 with a message; a body above the limit: 413 with a JSON body."""
    response = client.post(
        "/saga/start", data="{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.get_json()["message"]
    big = definition(payload={"blob": "x" * 70_000})
    response = client.post("/saga/start", json=big)
    assert response.status_code == 413
    assert response.get_json()["code"] == 413


def test_idempotency_key_returns_the_first_saga(client: FlaskClient) -> None:
    """The same key and body return the first saga (200); another body gets 409; another
    API key has its own key space."""
    key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    first = start(client, headers=key)
    again = client.post("/saga/start", json=definition(), headers=key)
    assert again.status_code == 200
    assert again.get_json()["saga_id"] == first["saga_id"]
    other = client.post("/saga/start", json=definition("other"), headers=key)
    assert other.status_code == 409
    assert other.get_json()["saga_id"] == first["saga_id"]
    theirs = client.post("/saga/start", json=definition(), headers={**key, "X-API-Key": OTHER_KEY})
    assert theirs.status_code == 202
    assert theirs.get_json()["saga_id"] != first["saga_id"]


def test_concurrent_repeats_of_an_idempotency_key_start_one_saga(app: Flask) -> None:
    """Ten concurrent requests with one key: one 202, nine 200, all the same saga."""
    key = f"k-{uuid.uuid4()}"
    answers: list[Any] = []
    barrier = threading.Barrier(10)

    def post() -> None:
        c = app.test_client()
        barrier.wait()
        answers.append(
            c.post(
                "/saga/start",
                json=definition("idem"),
                headers={"X-API-Key": KEY, "Idempotency-Key": key},
            )
        )

    threads = [threading.Thread(target=post) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a.status_code for a in answers) == [200] * 9 + [202]
    assert len({a.get_json()["saga_id"] for a in answers}) == 1


def test_an_idempotency_key_is_released_with_its_deleted_saga(client: FlaskClient) -> None:
    """After its saga is deleted, a repeat of an Idempotency-Key starts a new saga (202)
    instead of pointing at a saga that no longer exists (404)."""
    key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    first = start(client, headers=key)
    wait_status(client, first["saga_id"], "COMPLETED")
    assert client.delete(f"/saga/{first['saga_id']}").status_code == 204
    again = client.post("/saga/start", json=definition(), headers=key)
    assert again.status_code == 202, again.get_json()
    assert again.get_json()["saga_id"] != first["saga_id"]


# --- reading, compensating, deleting ---------------------------------------------------------
def test_status_and_steps_and_404(client: FlaskClient) -> None:
    """GET status and steps of a saga; an unknown id is 404 with a JSON body."""
    doc = start(client)
    steps = client.get(f"/saga/{doc['saga_id']}/steps").get_json()
    assert steps["saga_id"] == doc["saga_id"]
    assert [s["name"] for s in steps["steps"]] == ["a", "b"]
    for path in ("/status", "/steps", "/history"):
        response = client.get(f"/saga/{uuid.uuid4()}{path}")
        assert response.status_code == 404
        assert response.get_json()["code"] == 404


def test_history_lists_transitions(client: FlaskClient) -> None:
    """GET /saga/{id}/history lists every transition with increasing versions."""
    doc = start(client)
    wait_status(client, doc["saga_id"], "COMPLETED")
    history = client.get(f"/saga/{doc['saga_id']}/history").get_json()["history"]
    assert history[0]["event"] == "created" and history[-1]["event"] == "saga_completed"
    assert [h["version"] for h in history] == sorted(h["version"] for h in history)


def test_compensate_then_409_and_delete_rules(client: FlaskClient, stub: StubService) -> None:
    """Compensating a completed saga: 202, then COMPENSATED; again: 409. DELETE of a running
    saga: 409; of a finished one: 204, then 404."""
    slow = definition(steps=[{"name": "s", "action": {"service": "svc", "path": "/slow/1/x"}}])
    running = start(client, slow)
    response = client.delete(f"/saga/{running['saga_id']}")
    assert response.status_code == 409
    assert response.get_json()["saga_status"] == "RUNNING"

    doc = start(client)
    wait_status(client, doc["saga_id"], "COMPLETED")
    response = client.post(f"/saga/{doc['saga_id']}/compensate", json={"reason": "refund"})
    assert response.status_code == 202
    assert response.get_json()["status"] == "COMPENSATING"
    done = wait_status(client, doc["saga_id"], "COMPENSATED")
    assert done["failure"] == {"step": None, "reason": "manual", "message": "refund"}
    assert client.post(f"/saga/{doc['saga_id']}/compensate").status_code == 409
    assert client.post(f"/saga/{uuid.uuid4()}/compensate").status_code == 404
    assert client.delete(f"/saga/{doc['saga_id']}").status_code == 204
    assert client.get(f"/saga/{doc['saga_id']}/status").status_code == 404
    assert client.delete(f"/saga/{doc['saga_id']}").status_code == 404


def test_list_filters_and_pagination(client: FlaskClient) -> None:
    """GET /saga filters by status, type, correlation id and time (AND), newest first,
    paginated with total; bad filters are 422."""
    saga_type = f"list-{uuid.uuid4().hex[:6]}"
    corr = f"c-{uuid.uuid4().hex[:6]}"
    ids = [
        start(client, definition(saga_type, correlation_id=corr if i % 2 else None))["saga_id"]
        for i in range(5)
    ]
    for saga_id in ids:
        wait_status(client, saga_id, "COMPLETED")
    page = client.get(f"/saga?saga_type={saga_type}&page_size=2").get_json()
    assert page["total"] == 5 and page["page"] == 1 and page["page_size"] == 2
    assert [s["saga_id"] for s in page["items"]] == ids[::-1][:2]
    page3 = client.get(f"/saga?saga_type={saga_type}&page_size=2&page=3").get_json()
    assert [s["saga_id"] for s in page3["items"]] == [ids[0]]
    both = client.get(f"/saga?saga_type={saga_type}&correlation_id={corr}&status=COMPLETED")
    assert {s["saga_id"] for s in both.get_json()["items"]} == {ids[1], ids[3]}
    none = client.get(f"/saga?saga_type={saga_type}&status=COMPENSATED").get_json()
    assert none["total"] == 0
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert (
        client.get(
            "/saga", query_string={"saga_type": saga_type, "created_after": future}
        ).get_json()["total"]
        == 0
    )
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert (
        client.get(
            "/saga",
            query_string={"saga_type": saga_type, "created_after": past, "created_before": future},
        ).get_json()["total"]
        == 5
    )
    for bad in ("status=DONE", "page_size=501", "page=0", "created_after=yesterday"):
        response = client.get(f"/saga?{bad}")
        assert response.status_code == 422, bad
        assert bad.split("=")[0] in response.get_json()["errors"]["query"]


# --- workflows -----------------------------------------------------------------------------
def test_templates_and_workflow_start_errors(client: FlaskClient) -> None:
    """Five templates with payload schemas; unknown workflow 404; a missing required field
    422 naming it."""
    templates = client.get("/workflows/templates").get_json()["templates"]
    assert {t["name"] for t in templates} == {
        "user_registration",
        "workspace_creation",
        "data_synchronization",
        "ai_analysis",
        "webhook_processing",
    }
    assert all(t["payload_schema"] and t["steps"] for t in templates)
    assert client.post("/workflows/nope/start", json={"payload": {}}).status_code == 404
    response = client.post("/workflows/user_registration/start", json={"payload": {}})
    assert response.status_code == 422
    assert any(f.startswith("payload.") for f in response.get_json()["errors"]["json"])


# --- metrics -------------------------------------------------------------------------------
def test_metrics_json_and_prometheus_match_the_sagas_run(client: FlaskClient) -> None:
    """Saga counters in /metrics and /metrics/prometheus match what this test ran; the
    Prometheus text parses and has HTTP request metrics too."""
    saga_type = f"metrics-{uuid.uuid4().hex[:6]}"
    ok = [start(client, definition(saga_type))["saga_id"] for _ in range(3)]
    bad = definition(saga_type)
    bad["steps"][1] = {"name": "b", "action": {"service": "svc", "path": "/status/400/x"}}
    failed = start(client, bad)["saga_id"]
    for saga_id in ok:
        wait_status(client, saga_id, "COMPLETED")
    wait_status(client, failed, "COMPENSATED")

    body = client.get("/metrics").get_json()
    assert body["sagas"]["started"][saga_type] == 4
    assert body["sagas"]["finished"][saga_type] == {"COMPLETED": 3, "COMPENSATED": 1}
    assert set(body["sagas"]["by_status"]) == {
        "PENDING",
        "RUNNING",
        "COMPLETED",
        "COMPENSATING",
        "COMPENSATED",
        "COMPENSATION_FAILED",
    }

    text = client.get("/metrics/prometheus").get_data(as_text=True)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("saga_started_total", (("saga_type", saga_type),))] == 4
    assert (
        samples[("saga_finished_total", (("saga_type", saga_type), ("status", "COMPLETED")))] == 3
    )
    assert (
        samples[("saga_finished_total", (("saga_type", saga_type), ("status", "COMPENSATED")))] == 1
    )
    assert samples[("saga_duration_seconds_count", (("status", "COMPLETED"),))] >= 3
    assert any(name.startswith("flask_http_request") for name, _ in samples)
    assert ("saga_active", ()) in samples


def test_openapi_documents_every_contract_path(client: FlaskClient) -> None:
    """/openapi.json describes every endpoint of docs/api.md with its methods."""
    spec = json.loads(client.get("/openapi.json").data)
    paths = {p: set(ops) for p, ops in spec["paths"].items()}
    expected = {
        "/": {"get"},
        "/health/": {"get"},
        "/saga/start": {"post"},
        "/saga/{saga_id}/status": {"get"},
        "/saga/{saga_id}/steps": {"get"},
        "/saga/{saga_id}/compensate": {"post"},
        "/saga/{saga_id}": {"delete"},
        "/saga": {"get"},
        "/workflows/templates": {"get"},
        "/workflows/{workflow}/start": {"post"},
        "/metrics": {"get"},
        "/metrics/prometheus": {"get"},
        "/events/{event_type}": {"post"},
    }
    for path, methods in expected.items():
        assert methods <= paths.get(path, set()), path


def test_events_endpoints(client: FlaskClient) -> None:
    """POST /events/{type} answers 202 with the event id and the sagas it matches; a bad type
    or body is 422 naming the field; the unmatched and dead-letter streams are listed."""
    doc = start(client)
    response = client.post("/events/order.paid", json={"saga_id": doc["saga_id"], "data": {}})
    assert response.status_code == 202
    body = response.get_json()
    assert body["event_id"] and body["matched_sagas"] == []  # no step of it awaits order.paid
    bad = client.post("/events/bad type!", json={})
    assert bad.status_code == 422 and "event_type" in bad.get_json()["errors"]["path"]
    bad = client.post("/events/x.y", json={"data": [1]})
    assert bad.status_code == 422 and "data" in bad.get_json()["errors"]["json"]
    for path in ("/events/unmatched", "/events/dead-letters?limit=5"):
        listing = client.get(path)
        assert listing.status_code == 200 and isinstance(listing.get_json()["items"], list)
