"""What a new user hit on a first run (issue 14, "What a new user hit"), each fixed and held:
a resent trigger event, a body without its Content-Type, the addresses a person types, and
the Prometheus content type. The local run's items are in tests/test_local_run.py."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from flask import Flask

from app import create_app

KEY = "first-use-key"
H = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def app(engine: Any) -> Flask:
    return create_app({"API_KEYS": [KEY], "TESTING": True}, engine=engine)


def webhook(event_id: str) -> dict[str, Any]:
    return {
        "webhook_id": "whDemo",
        "event_id": event_id,
        "changes": [{"id": "recUnknown", "fields": {"Name": "Ada"}}],
    }


def sagas_of_type(engine: Any, saga_type: str) -> int:
    return int(engine.store.redis.zcard(engine.store.keys.saga_type(saga_type)))


# --- 2. a resent event starts no second saga ----------------------------------------------
@pytest.mark.parametrize("named_by", ["header", "field"])
def test_a_resent_trigger_event_starts_one_saga(
    app: Flask, engine: Any, consumer: None, demo: Any, named_by: str
) -> None:
    """The sender names the event (Idempotency-Key or event_id); sending it again, as a
    retry would, answers the same saga id and starts nothing more."""
    c = app.test_client()
    name = f"delivery-{uuid.uuid4().hex[:8]}"
    body: dict[str, Any] = {"data": webhook("evt-a")}
    headers = dict(H)
    if named_by == "header":
        headers["Idempotency-Key"] = name
    else:
        body["event_id"] = name
    before = sagas_of_type(engine, "webhook_processing")
    first = c.post("/events/airtable.webhook_received", json=body, headers=headers)
    assert first.status_code == 202, first.get_json()
    assert first.get_json()["event_id"] == name
    (saga_id,) = first.get_json()["matched_sagas"]
    deadline = time.time() + 10
    while not engine.store.redis.exists(engine.store.keys.saga(saga_id)):
        assert time.time() < deadline, "the trigger started nothing"
        time.sleep(0.02)
    again = c.post("/events/airtable.webhook_received", json=body, headers=headers)
    assert again.get_json()["matched_sagas"] == [saga_id]
    time.sleep(1.0)  # the consumer applies the second entry (it is consumed within ms)
    assert engine.store.redis.xlen(engine.store.keys.events) >= 2
    assert sagas_of_type(engine, "webhook_processing") == before + 1


def test_unnamed_events_are_distinct_and_a_name_conflict_is_refused(app: Flask) -> None:
    c = app.test_client()
    body = {"data": webhook("evt-b")}
    one = c.post("/events/airtable.webhook_received", json=body, headers=H).get_json()
    two = c.post("/events/airtable.webhook_received", json=body, headers=H).get_json()
    assert one["matched_sagas"] != two["matched_sagas"]  # two POSTs, two events
    named = c.post(
        "/events/airtable.webhook_received",
        json={**body, "event_id": "a"},
        headers={**H, "Idempotency-Key": "b"},
    )
    assert named.status_code == 422
    assert named.get_json()["errors"]["json"] == {
        "event_id": ["differs from the Idempotency-Key header"]
    }
    bad = c.post(
        "/events/airtable.webhook_received", json={**body, "event_id": "has space"}, headers=H
    )
    assert bad.status_code == 422 and "event_id" in bad.get_json()["message"]


# --- 3. a JSON body without its Content-Type: 415, not "payload.email is required" -------
def test_a_body_without_json_content_type_gets_415(app: Flask, engine: Any) -> None:
    c = app.test_client()
    before = sagas_of_type(engine, "user_registration")
    raw = '{"payload": {"email": "ada@example.com", "name": "Ada Lovelace"}}'
    for content_type in ("application/x-www-form-urlencoded", "text/plain", None):
        headers = dict(H)
        if content_type:
            headers["Content-Type"] = content_type
        answer = c.post("/workflows/user_registration/start", data=raw, headers=headers)
        assert answer.status_code == 415, (content_type, answer.get_json())
        body = answer.get_json()
        assert body["code"] == 415 and "Content-Type: application/json" in body["message"]
        assert (content_type or "no Content-Type") in body["message"]
    assert sagas_of_type(engine, "user_registration") == before
    # No body at all stays fine where a body is optional.
    assert c.post("/saga/nope/compensate", headers=H).status_code == 404
    ok = c.post(
        "/workflows/user_registration/start",
        data=raw,
        headers={**H, "Content-Type": "application/json; charset=utf-8"},
    )
    assert ok.status_code == 202


# --- 4. the addresses a person types ----------------------------------------------------
def test_health_without_slash_docs_with_slash_and_root_in_a_browser(app: Flask) -> None:
    c = app.test_client()
    health = c.get("/health")
    assert health.status_code == 308 and health.headers["Location"].endswith("/health/")
    assert c.get("/health", follow_redirects=True).status_code in (200, 503)
    docs = c.get("/docs/")
    assert docs.status_code == 308 and docs.headers["Location"].endswith("/docs")
    assert b"swagger-ui" in c.get("/docs/", follow_redirects=True).data
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    page = c.get("/", headers={"Accept": browser})
    assert page.status_code == 302 and page.headers["Location"].endswith("/docs")
    info = c.get("/")  # curl, or a client: the service's JSON, no key needed
    assert info.status_code == 200 and info.get_json()["links"]["health"] == "/health/"
    # A redirect lets nothing else through without a key.
    assert c.get("/saga/").status_code in (401, 404)
    assert c.get("/saga").status_code == 401


# --- 8. one charset in the Prometheus content type ---------------------------------------
def test_prometheus_content_type_has_one_charset(app: Flask) -> None:
    answer = app.test_client().get("/metrics/prometheus", headers=H)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
