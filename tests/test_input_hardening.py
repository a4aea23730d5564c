"""Hostile and pathological input at the API's door: a clear 4xx with a JSON body naming the
field, never a 500 and never a half-written saga; a Redis that refuses work is a 503.

The app runs in-process (Flask test client) over the real engine and Redis; the Redis
failures use a redis-server of the test's own (full under noeviction, or busy with a script).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.jsonbody import MAX_JSON_DEPTH
from tests.conftest import start_redis_server
from tests.stubs import StubService

KEY = "hardening-key"
FINAL_4XX = {400, 413, 422}


@pytest.fixture(scope="module")
def app(engine: Any) -> Flask:
    return create_app({"API_KEYS": [KEY], "TESTING": True}, engine=engine)


@pytest.fixture()
def client(app: Flask) -> FlaskClient:
    c = app.test_client()
    c.environ_base["HTTP_X_API_KEY"] = KEY
    return c


def saga_count(client: FlaskClient) -> int:
    store = client.application.extensions["saga_engine"].store
    return int(store.redis.zcard(store.keys.all))


def post_raw(client: FlaskClient, path: str, text: str) -> Any:
    return client.post(path, data=text.encode(), headers={"Content-Type": "application/json"})


def refused(response: Any, status: int | set[int] = 422, field: str | None = None) -> Any:
    """Assert a JSON error body of the documented shape; return it."""
    allowed = {status} if isinstance(status, int) else status
    assert response.status_code in allowed, (response.status_code, response.get_data()[:500])
    body = response.get_json()
    assert body["code"] == response.status_code and body["status"] and body["message"]
    if field is not None:
        assert field in body["errors"]["json"], body
        assert field in body["message"], body
    return body


def a_definition(path: str, payload: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "saga_type": "hardening",
        "payload": payload,
        "steps": [
            {"name": "a", "action": {"task": "builtin.noop", "args": {}}},
            {
                "name": "b",
                "action": {"service": "svc", "method": "DELETE", "path": path},
            },
        ],
        **extra,
    }


AI_PAYLOAD = {
    "workspace_id": "ws_1",
    "base_id": "appDemoBase",
    "table": "Contacts",
    "analysis_type": "summary",
    "requested_by": "usr_1",
}


# --- 1. a value cannot walk the called service's paths ------------------------------------
@pytest.mark.parametrize(
    ("path", "payload", "field"),
    [
        ("/ok/invoices/{{payload.id}}", {"id": ".."}, "payload.id"),
        ("/ok/invoices/{{payload.id}}", {"id": "."}, "payload.id"),
        ("/ok/invoices/{{payload.id}}", {"id": ""}, "payload.id"),
        ("/ok/invoices/.{{payload.id}}", {"id": "."}, "payload.id"),
        ("/ok/invoices/%2e{{payload.id}}/x", {"id": "."}, "payload.id"),
        ("/ok/a/{{payload.o.ids.1}}/b", {"o": {"ids": ["x", ".."]}}, "payload.o.ids[1]"),
    ],
)
def test_a_payload_value_making_a_dot_segment_is_422_at_saga_start(
    client: FlaskClient, stub: StubService, path: str, payload: dict[str, Any], field: str
) -> None:
    """A payload value that would render a '.', '..' or empty path segment is 422 naming it."""
    before, calls = saga_count(client), len(stub.ledger)
    refused(client.post("/saga/start", json=a_definition(path, payload)), 422, field)
    assert saga_count(client) == before and len(stub.ledger) == calls


def test_a_correlation_id_making_a_dot_segment_is_422(client: FlaskClient) -> None:
    """`{{saga.correlation_id}}` in a path with correlation id '..' is 422 naming it."""
    body = a_definition("/ok/by-corr/{{saga.correlation_id}}", {}, correlation_id="..")
    before = saga_count(client)
    refused(client.post("/saga/start", json=body), 422, "correlation_id")
    assert saga_count(client) == before


@pytest.mark.parametrize("path", ["/ok/%2e%2e/admin", "/ok/%2E/x", "/ok/.%2e"])
def test_a_percent_encoded_dot_segment_in_a_path_is_422(client: FlaskClient, path: str) -> None:
    """A literal '%2e%2e' segment in a definition's path is 422 naming the path."""
    refused(client.post("/saga/start", json=a_definition(path, {})), 422, "steps[1].action.path")


@pytest.mark.parametrize(
    ("field", "value"),
    [("workspace_id", ".."), ("workspace_id", "."), ("table", ".."), ("results_table", ".")],
)
def test_a_workflow_id_making_a_dot_segment_is_422(
    client: FlaskClient, field: str, value: str
) -> None:
    """POST /workflows/ai_analysis/start with workspace_id '..' (or a '.' table) is 422."""
    before = saga_count(client)
    response = client.post(
        "/workflows/ai_analysis/start", json={"payload": {**AI_PAYLOAD, field: value}}
    )
    refused(response, 422, f"payload.{field}")
    assert saga_count(client) == before


# --- 2. what cannot be sent later is refused now ------------------------------------------
BAD_CORRELATION_IDS = ["café", " padded", "padded ", "tab\there", "del\x7f", "😀", "a" * 201]


def _with_correlation(endpoint: str, value: str) -> tuple[str, dict[str, Any]]:
    if endpoint == "saga":
        return "/saga/start", a_definition("/ok/x", {}, correlation_id=value)
    if endpoint == "workflow":
        return "/workflows/ai_analysis/start", {"payload": AI_PAYLOAD, "correlation_id": value}
    return "/events/order.paid", {"correlation_id": value, "data": {}}


@pytest.mark.parametrize("value", BAD_CORRELATION_IDS)
@pytest.mark.parametrize("endpoint", ["saga", "workflow", "event"])
def test_a_correlation_id_that_cannot_be_a_header_is_422(
    client: FlaskClient, endpoint: str, value: str
) -> None:
    """A correlation id that is not 1-200 printable ASCII characters (no edge spaces) is 422."""
    path, body = _with_correlation(endpoint, value)
    before = saga_count(client)
    refused(client.post(path, json=body), 422, "correlation_id")
    assert saga_count(client) == before


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/saga/start", a_definition("/ok/x", {"x": "\ud800"}), "payload.x"),
        ("/saga/start", a_definition("/ok/x", {"ok": {"\udc00k": 1}}), "payload.ok.\\udc00k"),
        ("/saga/start", a_definition("/ok/x", {"l": ["a", "\udfff"]}), "payload.l[1]"),
        (
            "/saga/start",
            {**a_definition("/ok/x", {}), "saga_type": "t\ud800"},
            "saga_type",
        ),
        (
            "/workflows/ai_analysis/start",
            {"payload": {**AI_PAYLOAD, "prompt": "hi \ud83d"}},
            "payload.prompt",
        ),
        ("/events/order.paid", {"data": {"x": "\ud800"}}, "data.x"),
        ("/events/order.paid", {"data": {"\ud800": 1}}, "data.\\ud800"),
    ],
)
def test_a_lone_surrogate_anywhere_in_a_body_is_refused_naming_the_field(
    client: FlaskClient, path: str, body: dict[str, Any], field: str
) -> None:
    """A JSON string "\\ud800" (not encodable as UTF-8), value or key, is 422 naming it."""
    text = json.dumps(body)  # ensure_ascii: the surrogate travels as the escape \\ud800
    assert "\\ud" in text
    before = saga_count(client)
    refused(post_raw(client, path, text), 422, field)
    assert saga_count(client) == before


# --- 3. malformed and pathological JSON ---------------------------------------------------
def _saga_with_payload(payload_json: str) -> str:
    steps = json.dumps(a_definition("/ok/x", {})["steps"])
    return f'{{"saga_type": "hardening", "payload": {payload_json}, "steps": {steps}}}'


def _nested(depth: int, leaf: str = "1") -> str:
    return '{"a": ' * depth + leaf + "}" * depth


DEEP_FIELD = "payload" + ".a" * (MAX_JSON_DEPTH - 1)


@pytest.mark.parametrize(
    ("path", "text", "status", "field"),
    [
        ("/saga/start", _saga_with_payload(_nested(1000)), {400, 422}, None),
        ("/saga/start", _saga_with_payload(_nested(MAX_JSON_DEPTH + 5)), 422, DEEP_FIELD),
        ("/saga/start", _saga_with_payload('{"n": ' + "7" * 5000 + "}"), 422, "payload.n"),
        ("/saga/start", _saga_with_payload('{"n": ' + "7" * 400 + "}"), 422, "payload.n"),
        ("/saga/start", _saga_with_payload('{"n": NaN}'), 422, "payload.n"),
        ("/saga/start", _saga_with_payload('{"n": Infinity}'), 422, "payload.n"),
        ("/saga/start", _saga_with_payload('{"n": [-Infinity]}'), 422, "payload.n[0]"),
        ("/saga/start", _saga_with_payload('{"n": 1e999}'), 422, "payload.n"),
        ("/saga/start", _saga_with_payload('{"n": -1E+400}'), 422, "payload.n"),
        ("/saga/start", '{"saga_type": "x", "payload": {"a": 1}', 400, None),
        ("/saga/start", '{"saga_type": "\\ud800', 400, None),
        ("/events/order.paid", '{"data": ' + "[" * 5000 + "]" * 5000 + "}", {400, 422}, None),
        ("/events/order.paid", '{"data": {"x": ' + "[" * 100 + "]" * 100 + "}}", 422, None),
        ("/events/order.paid", '{"data": {"x": NaN}}', 422, "data.x"),
        ("/events/order.paid", '{"data": {"x": 1' + "0" * 5000 + "}}", 422, "data.x"),
        (
            "/workflows/ai_analysis/start",
            '{"payload": {"units": 1e999}}',
            422,
            "payload.units",
        ),
        ("/saga/x/compensate", '{"reason": ' + "[" * 3000 + "]" * 3000 + "}", {400, 422}, None),
    ],
    ids=[
        "payload-1000-deep",
        "payload-past-the-limit",
        "int-5000-digits",
        "int-beyond-double",
        "nan",
        "infinity",
        "minus-infinity",
        "1e999",
        "-1E+400",
        "truncated",
        "unterminated-string",
        "event-data-5000-deep",
        "event-data-100-deep",
        "event-nan",
        "event-int-5001-digits",
        "workflow-1e999",
        "compensate-3000-deep",
    ],
)
def test_pathological_json_gets_a_4xx_naming_the_field_never_a_500(
    client: FlaskClient, path: str, text: str, status: int | set[int], field: str | None
) -> None:
    """Deep nesting, huge or non-finite numbers and broken JSON get 400/422, never a 500."""
    before = saga_count(client)
    refused(post_raw(client, path, text), status, field)
    assert saga_count(client) == before


def test_nesting_up_to_the_limit_is_accepted(client: FlaskClient) -> None:
    """A body exactly MAX_JSON_DEPTH levels deep passes the JSON door (then the schema)."""
    # The body is level 1, "payload" level 2: the payload's innermost object sits at the limit.
    text = _saga_with_payload(_nested(MAX_JSON_DEPTH - 1))
    response = post_raw(client, "/saga/x/compensate", text)  # no such saga: past the parser
    assert response.status_code == 422  # unknown fields of the compensate body, not depth
    assert "saga_type" in response.get_json()["errors"]["json"]
    refused(post_raw(client, "/saga/x/compensate", _nested(MAX_JSON_DEPTH + 1)), 422)


# --- 4. a Redis that refuses work is a 503 ------------------------------------------------
def _engine_on(url: str) -> Any:
    from sagas.settings import Settings
    from tasks.runtime import build_engine

    return build_engine(
        Settings(
            redis_url=url,
            key_prefix=f"hardening-{uuid.uuid4().hex[:8]}:",
            services={"svc": "http://127.0.0.1:1"},
        )
    )


@pytest.fixture()
def full_redis(tmp_path: Path) -> Iterator[tuple[FlaskClient, redis.Redis]]:
    """An app over a redis-server (noeviction) whose memory is used up: filled with 3 MB,
    then given a maxmemory of 1 MB, so even a small write is refused."""
    proc, url = start_redis_server(tmp_path / "redis")
    try:
        filler = redis.Redis.from_url(url)
        for i in range(30):
            filler.set(f"fill:{i}", b"x" * 100_000)
        filler.config_set("maxmemory", "1mb")
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            filler.set("probe", "x")
        c = create_app({"API_KEYS": [KEY]}, engine=_engine_on(url)).test_client()
        c.environ_base["HTTP_X_API_KEY"] = KEY
        yield c, filler
    finally:
        proc.terminate()
        proc.wait(10)


def test_redis_out_of_memory_is_503_with_retry_after(
    full_redis: tuple[FlaskClient, redis.Redis], caplog: pytest.LogCaptureFixture
) -> None:
    """Redis at maxmemory (noeviction): POST /saga/start is 503 with Retry-After, nothing is
    half-written, and reads still work."""
    client, filler = full_redis
    response = client.post("/saga/start", json=a_definition("/ok/x", {"n": 1}))
    body = refused(response, 503)
    assert int(response.headers["Retry-After"]) > 0
    assert "Redis" in body["message"] and "memory" in body["message"]
    assert not [k for k in filler.scan_iter("hardening-*")], "a saga was half-written"
    assert any(r.levelno == logging.ERROR and r.name == "app.errors" for r in caplog.records)
    event = client.post("/events/order.paid", json={"data": {"x": 1}})
    assert refused(event, 503) and event.headers["Retry-After"]
    assert client.get("/saga/nope/status").status_code == 404


@pytest.fixture()
def busy_redis(tmp_path: Path) -> Iterator[FlaskClient]:
    """An app over a redis-server busy running a script (past busy-reply-threshold)."""
    proc, url = start_redis_server(tmp_path / "redis", "--busy-reply-threshold", "50")
    stopper = redis.Redis.from_url(url)
    runner = threading.Thread(
        target=lambda: _swallow(redis.Redis.from_url(url).eval, "while true do end", 0)
    )
    try:
        c = create_app({"API_KEYS": [KEY]}, engine=_engine_on(url)).test_client()
        c.environ_base["HTTP_X_API_KEY"] = KEY
        runner.start()
        deadline = time.time() + 10
        while True:
            try:
                stopper.ping()
            except redis.exceptions.ResponseError as exc:
                assert str(exc).startswith("BUSY"), exc
                break
            assert time.time() < deadline, "redis never became busy"
            time.sleep(0.02)
        yield c
    finally:
        _swallow(stopper.script_kill)
        runner.join(10)
        proc.terminate()
        proc.wait(10)


def _swallow(call: Any, *args: Any) -> None:
    with contextlib.suppress(redis.exceptions.RedisError):
        call(*args)


def test_redis_busy_with_a_script_is_503_with_retry_after(busy_redis: FlaskClient) -> None:
    """Redis answering BUSY (a script over busy-reply-threshold): 503 with Retry-After."""
    for response in (
        busy_redis.get("/saga/x/status"),
        busy_redis.post("/saga/start", json=a_definition("/ok/x", {})),
    ):
        body = refused(response, 503)
        assert int(response.headers["Retry-After"]) > 0
        assert "busy" in body["message"]


def test_redis_unreachable_503_has_retry_after() -> None:
    """Redis unreachable: 503 with a Retry-After header."""
    dead = _engine_on("redis://127.0.0.1:1/0")
    dead.store.redis.connection_pool.connection_kwargs.update(socket_connect_timeout=0.2)
    dead.store.redis.set_retry(None)
    c = create_app({"API_KEYS": [KEY]}, engine=dead).test_client()
    response = c.get("/saga/x/status", headers={"X-API-Key": KEY})
    refused(response, 503)
    assert int(response.headers["Retry-After"]) > 0


@pytest.fixture()
def wrong_type_app(engine: Any) -> Iterator[tuple[FlaskClient, str]]:
    """An app whose saga key holds a string (a corrupted store: WRONGTYPE on read)."""
    saga_id = f"wrongtype-{uuid.uuid4().hex[:8]}"
    key = engine.store.keys.saga(saga_id)
    engine.store.redis.set(key, "not a hash")
    c = create_app({"API_KEYS": [KEY]}, engine=engine).test_client()
    c.environ_base["HTTP_X_API_KEY"] = KEY
    yield c, saga_id
    engine.store.redis.delete(key)


def test_a_redis_programming_error_is_a_logged_500_not_a_503(
    wrong_type_app: tuple[FlaskClient, str], caplog: pytest.LogCaptureFixture
) -> None:
    """WRONGTYPE is a bug, not an outage: 500 (JSON), logged at ERROR with the traceback."""
    client, saga_id = wrong_type_app
    response = client.get(f"/saga/{saga_id}/status")
    refused(response, 500)
    assert "Retry-After" not in response.headers
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
    assert any("WRONGTYPE" in str(r.exc_info[1]) for r in errors if r.exc_info)
