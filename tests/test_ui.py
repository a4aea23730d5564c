"""The operator dashboard (`app/ui`) through Flask's test client, over the real store.

The engine is test_repair's: its dispatcher only records what would be enqueued, and the test
plays the executions, so each saga is exactly in the state an action needs. Every action is
taken through the dashboard's forms (CSRF token included), allowed and refused; logging in
and out, the reader role, the session's limits and the escaping of attacker-controlled text.
"""

from __future__ import annotations

import hashlib
import html
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.ui import derived_secret, present
from sagas import overview
from sagas.engine import SagaEngine
from tests.test_repair import (
    _compensated,
    _retry_pending,
    compensation_failed,
    complete,
    fail,
    make_engine,
    recorder,
    start,
)

ROOT = Path(__file__).resolve().parent.parent
OPERATOR_KEY, READER_KEY, ADMIN_KEY = "op-secret-1", "rd-secret-2", "ad-secret-3"
KEYS = [
    f"olivia:operator:{OPERATOR_KEY}",
    f"rita:reader:{READER_KEY}",
    f"ada:admin:{ADMIN_KEY}",
]
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture()
def engine(redis_url: str, prefix: str) -> SagaEngine:
    return make_engine(redis_url, prefix)


def make_app(engine: SagaEngine, **config: Any) -> Flask:
    return create_app({"API_KEYS": KEYS, "TESTING": True, **config}, engine=engine)


@pytest.fixture()
def app(engine: SagaEngine) -> Flask:
    return make_app(engine)


def token(client: FlaskClient, path: str = "/ui/login") -> str:
    page = client.get(path)
    found = TOKEN.search(page.get_data(as_text=True))
    assert found, (page.status_code, page.get_data(as_text=True)[:500])
    return found.group(1)


def login(app: Flask, key: str = OPERATOR_KEY) -> FlaskClient:
    client = app.test_client()
    answer = client.post("/ui/login", data={"key": key, "csrf_token": token(client)})
    assert answer.status_code == 302, answer.get_data(as_text=True)
    return client


def post(client: FlaskClient, path: str, page: str, **data: str) -> Any:
    """Submit a form of `page` (its CSRF token) to `path`."""
    return client.post(path, data={"csrf_token": token(client, page), **data})


def act(client: FlaskClient, sid: str, action: str, step: int | None = None, **data: str) -> Any:
    path = f"/ui/sagas/{sid}/{action}" if step is None else f"/ui/sagas/{sid}/steps/{step}/{action}"
    return post(client, path, f"/ui/sagas/{sid}", **data)


def text(response: Any) -> str:
    return str(response.get_data(as_text=True))


def refusal(response: Any) -> str:
    found = re.search(r'id="refusal">([^<]*)<', text(response))
    assert found, text(response)[:2000]
    return html.unescape(found.group(1))


def history(engine: SagaEngine, sid: str, event: str) -> dict[str, Any]:
    return [h for h in engine.history(sid) if h["event"] == event][-1]


# --- logging in and out --------------------------------------------------------------------
def test_pages_need_a_login_and_a_wrong_key_is_refused(app: Flask) -> None:
    client = app.test_client()
    for path in ("/ui/", "/ui/sagas", "/ui/sagas/nope"):
        answer = client.get(path)
        assert answer.status_code == 302
        assert answer.headers["Location"].startswith("/ui/login?next=")
    live = client.get("/ui/overview/live", headers={"HX-Request": "true"})
    assert live.status_code == 401 and live.headers["HX-Redirect"].startswith("/ui/login")
    answer = client.post("/ui/login", data={"key": "wrong", "csrf_token": token(client)})
    assert answer.status_code == 401
    assert "That key is not valid" in text(answer)
    assert client.get("/ui/").status_code == 302  # still not logged in


def test_login_keeps_a_fingerprint_in_a_strict_cookie_and_logout_ends_it(app: Flask) -> None:
    client = app.test_client()
    answer = client.post(
        "/ui/login",
        data={"key": OPERATOR_KEY, "csrf_token": token(client), "next": "/ui/sagas?page=2"},
    )
    assert answer.status_code == 302 and answer.headers["Location"] == "/ui/sagas?page=2"
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith("saga_ui_session=")
    for attribute in ("HttpOnly", "SameSite=Lax", "Path=/ui", "Expires="):
        assert attribute in cookie, cookie
    assert "Secure" not in cookie  # SAGA_UI_SECURE_COOKIE is off by default
    with client.session_transaction("/ui/") as session:
        assert session["fp"] == hashlib.sha256(OPERATOR_KEY.encode()).hexdigest()
        assert OPERATOR_KEY not in str(dict(session))
    page = client.get("/ui/")
    assert page.status_code == 200 and "olivia" in text(page) and "operator" in text(page)
    answer = post(client, "/ui/logout", "/ui/")
    assert answer.status_code == 302 and answer.headers["Location"] == "/ui/login"
    assert client.get("/ui/").status_code == 302


@pytest.mark.parametrize("target", ["//evil.example/ui/", "https://evil.example/ui/", "/saga"])
def test_login_goes_back_to_dashboard_pages_only(app: Flask, target: str) -> None:
    client = app.test_client()
    data = {"key": OPERATOR_KEY, "csrf_token": token(client), "next": target}
    assert client.post("/ui/login", data=data).headers["Location"] == "/ui/"


def test_removing_a_key_ends_its_sessions_and_sessions_expire(engine: SagaEngine) -> None:
    app = make_app(engine, SECRET_KEY="fixed for this test")
    client = login(app)
    assert client.get("/ui/").status_code == 200
    # The same secret, the operator's key no longer configured (a restart with new keys).
    without = make_app(engine, SECRET_KEY="fixed for this test", API_KEYS=KEYS[1:])
    cookie = client.get_cookie("saga_ui_session", path="/ui")
    assert cookie is not None
    other = without.test_client()
    other.set_cookie("saga_ui_session", cookie.value, path="/ui")
    assert other.get("/ui/").status_code == 302
    # Past the session's lifetime since login (SAGA_UI_SESSION_HOURS, 8 by default).
    with client.session_transaction("/ui/") as session:
        session["at"] = time.time() - 8 * 3600 - 5
    assert client.get("/ui/").status_code == 302


def test_session_settings(engine: SagaEngine) -> None:
    secure = make_app(engine, UI_SECURE_COOKIE=True, UI_SESSION_HOURS=1)
    client = secure.test_client()
    answer = client.post(
        "/ui/login",
        data={"key": OPERATOR_KEY, "csrf_token": token(client)},
        base_url="https://localhost",
        headers={"Referer": "https://localhost/ui/login"},  # Flask-WTF checks it over HTTPS
    )
    assert answer.status_code == 302, text(answer)
    assert "Secure" in answer.headers["Set-Cookie"]
    assert secure.config["PERMANENT_SESSION_LIFETIME"] == timedelta(hours=1)
    # Without SAGA_SECRET_KEY every worker derives the same secret from the same keys; other
    # keys give another secret (everyone logs in again), and a set secret wins.
    assert make_app(engine).secret_key == make_app(engine).secret_key == derived_secret(KEYS)
    assert make_app(engine, API_KEYS=KEYS[:2]).secret_key != derived_secret(KEYS)
    assert make_app(engine, SECRET_KEY="s3cret").secret_key == "s3cret"
    assert derived_secret(KEYS) != hashlib.sha256(OPERATOR_KEY.encode()).hexdigest()


# --- CSRF and roles --------------------------------------------------------------------------
def test_a_post_without_the_csrf_token_is_refused_and_the_json_api_needs_none(
    app: Flask, engine: SagaEngine
) -> None:
    sid = compensation_failed(engine)
    client = login(app)
    before = engine.get(sid)["version"]
    for data in ({"reason": "x"}, {"reason": "x", "csrf_token": "forged"}):
        answer = client.post(f"/ui/sagas/{sid}/compensate", data=data)
        assert answer.status_code == 400
        assert "The form was refused" in text(answer)
    anonymous = app.test_client()
    assert anonymous.post("/ui/login", data={"key": OPERATOR_KEY}).status_code == 400
    assert engine.get(sid)["version"] == before
    api = app.test_client().post(
        f"/saga/{sid}/compensate", json={"reason": "api"}, headers={"X-API-Key": OPERATOR_KEY}
    )
    assert api.status_code == 202, api.get_json()


def test_a_reader_sees_no_buttons_and_its_posts_are_refused(app: Flask, engine: SagaEngine) -> None:
    sid = compensation_failed(engine)
    client = login(app, READER_KEY)
    page = text(client.get(f"/ui/sagas/{sid}"))
    assert 'action="/ui/sagas/' not in page
    assert "may look, not act" in page
    before = engine.get(sid)["version"]
    for action, step in (("compensate", None), ("rerun", None), ("resolve", 2), ("skip", 2)):
        answer = act(client, sid, action, step, reason="I am only a reader")
        assert answer.status_code == 403, action
        assert "it may look, not act" in refusal(answer)
    assert engine.get(sid)["version"] == before
    admin = login(app, ADMIN_KEY)
    assert 'action="/ui/sagas/' in text(admin.get(f"/ui/sagas/{sid}"))


# --- each action through the dashboard -----------------------------------------------------
def test_compensate_allowed_and_refused(app: Flask, engine: SagaEngine) -> None:
    client = login(app)
    sid = compensation_failed(engine)
    answer = act(client, sid, "compensate", reason="the PSP is back")
    assert answer.status_code == 303 and answer.headers["Location"] == f"/ui/sagas/{sid}"
    assert "Compensation requested." in text(client.get(f"/ui/sagas/{sid}"))
    entry = history(engine, sid, "compensation_requested")
    assert (entry["actor"], entry["message"]) == ("olivia", "the PSP is back")
    assert recorder(engine).compensations == [[1, 0]]
    done = _compensated(engine)
    answer = act(client, done, "compensate", reason="again")
    assert answer.status_code == 409
    assert refusal(answer) == "Refused: cannot compensate: the saga is already COMPENSATED"
    assert "again" in text(answer)  # the reason typed is kept in the form


def test_cancel_allowed_and_refused(app: Flask, redis_url: str, prefix: str) -> None:
    engine = make_engine(redis_url, prefix, max_running=1)
    client = login(make_app(engine))
    running, waiting = start(engine), start(engine)
    answer = act(client, running, "cancel", reason="why")
    assert answer.status_code == 409 and "only a PENDING saga" in refusal(answer)
    answer = act(client, waiting, "cancel", reason="the customer withdrew")
    assert answer.status_code == 303
    assert engine.get(waiting)["status"] == "COMPENSATED"
    assert history(engine, waiting, "saga_cancelled")["actor"] == "olivia"


def test_resolve_allowed_and_refused(app: Flask, engine: SagaEngine) -> None:
    client = login(app)
    sid = compensation_failed(engine)
    page = text(client.get(f"/ui/sagas/{sid}"))
    assert f'action="/ui/sagas/{sid}/steps/2/resolve"' in page
    answer = act(client, sid, "resolve", 2, reason="refunded by hand")
    assert answer.status_code == 303
    saga = engine.get(sid)
    assert saga["status"] == "COMPENSATING"
    assert saga["steps"][1]["compensation"]["resolved_by_hand"] is True
    assert recorder(engine).compensations == [[0]]  # the older undo goes on
    assert "counts as done by hand" in text(client.get(f"/ui/sagas/{sid}"))
    answer = act(client, sid, "resolve", 2, reason="twice")
    assert answer.status_code == 409
    assert "its compensation is COMPENSATED" in refusal(answer)
    running = start(engine)
    assert act(client, running, "resolve", 1, reason="x").status_code == 409


def test_skip_allowed_and_refused(app: Flask, engine: SagaEngine) -> None:
    client = login(app)
    sid = compensation_failed(engine)
    answer = act(client, sid, "skip", 3, reason="s2 failed for certain")
    assert answer.status_code == 409 and "SKIPPED" in refusal(answer)
    answer = act(client, sid, "skip", 2, reason="the account was closed anyway")
    assert answer.status_code == 303
    assert engine.get(sid)["steps"][1]["compensation"]["status"] == "SKIPPED"
    assert history(engine, sid, "compensation_skipped")["actor"] == "olivia"


def test_retry_allowed_and_refused(app: Flask, engine: SagaEngine) -> None:
    client = login(app)
    sid = _retry_pending(engine)
    page = text(client.get(f"/ui/sagas/{sid}"))
    assert "waiting to retry" in page
    answer = act(client, sid, "retry", 2, reason="why")
    assert answer.status_code == 409 and "cannot retry step 's1'" in refusal(answer)
    answer = act(client, sid, "retry", 1, reason="the service is back")
    assert answer.status_code == 303
    assert recorder(engine).steps[-1] == [0, 1, 2]
    assert history(engine, sid, "step_retry_requested")["actor"] == "olivia"


def test_rerun_with_an_edited_payload_allowed_and_refused(app: Flask, engine: SagaEngine) -> None:
    client = login(app)
    running = start(engine)
    answer = act(client, running, "rerun", reason="why")
    assert answer.status_code == 409 and "cannot rerun" in refusal(answer)
    sid = start(engine)
    fail(engine, sid, 0)
    page = text(client.get(f"/ui/sagas/{sid}"))
    assert "ada@example.com" in page and 'name="payload"' in page
    for payload, problem in (
        ("{not json", "Invalid payload: not valid JSON"),
        ("[1, 2]", "Invalid payload: must be a JSON object"),
        ('{"n": NaN}', "Invalid payload.n: NaN is not a number JSON allows"),
    ):
        answer = act(client, sid, "rerun", reason="typo", payload=payload)
        assert answer.status_code == 422 and refusal(answer).startswith(problem), payload
        assert engine.get(sid)["reruns"] == []
    answer = act(client, sid, "rerun", reason="typo", payload='{"email": "ada@example.org"}')
    assert answer.status_code == 303
    new = engine.get(sid)["reruns"][0]
    assert answer.headers["Location"] == f"/ui/sagas/{new}"
    assert engine.get(new)["payload"] == {"email": "ada@example.org"}
    page = text(client.get(f"/ui/sagas/{new}"))
    assert f'href="/ui/sagas/{sid}"' in page  # rerun_of, linked
    assert "payload_patch" in page and "ada@example.org" in page  # the history's data
    assert f'href="/ui/sagas/{new}"' in text(client.get(f"/ui/sagas/{sid}"))  # reruns


def test_a_reason_is_required_and_unknown_things_are_404(app: Flask, engine: SagaEngine) -> None:
    client = login(app)
    sid = compensation_failed(engine)
    answer = act(client, sid, "resolve", 2, reason="   ")
    assert answer.status_code == 422
    assert refusal(answer).startswith("Invalid reason: is required")
    answer = act(client, sid, "skip", 9, reason="x")
    assert answer.status_code == 404 and "has no step '9'" in refusal(answer)
    assert client.get("/ui/sagas/no-such-saga").status_code == 404
    assert act(client, sid, "delete", reason="x").status_code == 404  # not an action here


# --- what the pages show -------------------------------------------------------------------
def test_attacker_controlled_text_is_escaped_everywhere(app: Flask, engine: SagaEngine) -> None:
    evil = "<script>alert(1)</script>"
    client = login(app)
    sid = start(engine, payload={"email": evil, "note": '"><img src=x onerror=alert(2)>'})
    complete(engine, sid, 0)
    assert act(client, sid, "compensate", reason=f"because {evil}").status_code == 303
    failed = start(engine)
    assert engine.store.step_begin(failed, 0, "t0").code == "run"
    engine.store.step_fail(failed, 0, "t0", f"upstream said {evil}", False, "error")
    for path in (f"/ui/sagas/{sid}", f"/ui/sagas/{failed}", "/ui/sagas", "/ui/"):
        page = text(client.get(path))
        assert "<script>alert" not in page and "<img src=x" not in page, path
    page = text(client.get(f"/ui/sagas/{sid}"))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # shown, as text
    assert "because &lt;script&gt;" in page  # the reason, in the history
    assert "upstream said &lt;script&gt;" in text(client.get(f"/ui/sagas/{failed}"))
    assert "upstream said &lt;script&gt;" in text(client.get("/ui/sagas"))


def test_pages_carry_a_content_security_policy(app: Flask, engine: SagaEngine) -> None:
    client = login(app)
    sid = compensation_failed(engine)
    for path in ("/ui/", "/ui/sagas", f"/ui/sagas/{sid}", "/ui/login"):
        answer = client.get(path)
        policy = answer.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy, path
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert answer.headers["Cache-Control"] == "no-store"
        assert "<script>" not in text(answer) and " style=" not in text(answer), path
    api = app.test_client().get("/saga", headers={"X-API-Key": READER_KEY})
    assert "Content-Security-Policy" not in api.headers


def test_the_saga_page_shows_the_timeline_history_definition_and_payload(
    app: Flask, engine: SagaEngine
) -> None:
    client = login(app)
    sid = compensation_failed(engine)
    page = text(client.get(f"/ui/sagas/{sid}"))
    assert "Needs a person" in page and "undo refused" in page
    assert page.count('class="step st-') == 3
    for part in ("COMPENSATION_FAILED", "boom", "compensation_failed", "/undo/1", "/do/2"):
        assert part in page, part
    assert "data-poll" not in page  # COMPENSATION_FAILED waits for a person: no refresh
    assert "left to undo" in page and "undo failed" in page


def test_the_live_part_answers_204_until_the_saga_changes(app: Flask, engine: SagaEngine) -> None:
    client = login(app)
    sid = start(engine)
    page = text(client.get(f"/ui/sagas/{sid}"))
    assert f'hx-get="/ui/sagas/{sid}/live?v=1"' in page
    hx = {"HX-Request": "true"}
    assert client.get(f"/ui/sagas/{sid}/live?v=1", headers=hx).status_code == 204
    complete(engine, sid, 0)
    live = client.get(f"/ui/sagas/{sid}/live?v=1", headers=hx)
    assert live.status_code == 200
    assert f"/live?v={engine.get(sid)['version']}" in text(live)
    for i in (1, 2):
        complete(engine, sid, i)
    final = text(client.get(f"/ui/sagas/{sid}/live?v=1", headers=hx))
    assert 'data-status="COMPLETED"' in final and "hx-trigger" not in final  # stops polling
    assert client.get("/ui/sagas/gone/live?v=1", headers=hx).status_code == 286


def test_the_overview_shows_what_needs_a_person_counts_and_the_oldest(
    app: Flask, engine: SagaEngine
) -> None:
    client = login(app)
    failed = compensation_failed(engine)
    running = start(engine)
    page = text(client.get("/ui/"))
    assert f'href="/ui/sagas/{failed}"' in page  # needs a person, with a link
    assert f'href="/ui/sagas/{running}"' in page  # among the oldest RUNNING
    assert "Health" in page and "redis" in page
    assert client.get("/ui/overview/live", headers={"HX-Request": "true"}).status_code == 200
    by_type = overview.counts_by_type(engine.store)
    assert by_type["repairable"]["COMPENSATION_FAILED"] == 1
    assert by_type["repairable"]["RUNNING"] == 1
    minutes = overview.created_per_minute(engine.store, 5)
    assert len(minutes) == 6 and sum(m.created for m in minutes) == 2
    oldest = overview.oldest(engine.store, "RUNNING", 5)
    assert [s["saga_id"] for s in oldest] == [running]


def test_the_list_filters_and_pages_like_the_api(app: Flask, engine: SagaEngine) -> None:
    client = login(app)
    failed = compensation_failed(engine)
    ids = []
    for _ in range(3):  # each in a millisecond of its own: the pages below order by creation
        ids.append(start(engine))
        time.sleep(0.003)
    page = text(client.get("/ui/sagas?status=COMPENSATION_FAILED"))
    assert failed in page and not any(i in page for i in ids)
    page = text(client.get("/ui/sagas?status=RUNNING&page_size=2"))
    assert "1\N{EN DASH}2 of 3" in page and ids[2] in page and ids[1] in page and ids[0] not in page
    assert "page 1 of 2" in page
    page = text(client.get("/ui/sagas?status=RUNNING&page_size=2&page=2"))
    assert ids[0] in page and "3\N{EN DASH}3 of 3" in page
    corr = engine.get(ids[1])["correlation_id"]
    page = text(client.get(f"/ui/sagas?correlation_id={corr}"))
    assert ids[1] in page and ids[0] not in page
    page = text(client.get("/ui/sagas?saga_type=repairable&status=RUNNING"))
    assert all(i in page for i in ids)
    created = datetime.fromisoformat(engine.get(ids[1])["created_at"].replace("Z", "+00:00"))
    after = (created - timedelta(milliseconds=1)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    page = text(client.get(f"/ui/sagas?status=RUNNING&created_after={after}"))
    assert ids[1] in page and ids[2] in page and ids[0] not in page
    page = text(client.get("/ui/sagas?status=NOPE&created_before=yesterday"))
    assert "The filters were not applied" in page and "status: must be one of" in page
    assert "created_before: not a date" in page
    rows = client.get("/ui/sagas/rows?status=RUNNING", headers={"HX-Request": "true"})
    assert rows.status_code == 200 and 'id="rows"' in text(rows) and "<html" not in text(rows)


def test_htmx_is_served_by_the_app_as_vendored(app: Flask) -> None:
    note = (ROOT / "app/ui/static/VENDORED.md").read_text()
    digest = re.search(r"`([0-9a-f]{64})`", note)
    assert digest and "2.0.11" in note
    client = app.test_client()  # static files need no login
    with client.get("/ui/static/htmx.min.js") as served:
        assert served.status_code == 200
        assert hashlib.sha256(served.get_data()).hexdigest() == digest.group(1)
    with client.get("/ui/static/ui.css") as css:
        assert css.status_code == 200


def test_long_runs_of_retry_entries_are_folded_and_none_is_lost() -> None:
    def entry(event: str, step: str | None = "s1", **extra: Any) -> dict[str, Any]:
        return {"event": event, "step": step, **extra}

    retries = [entry("compensation_attempt"), entry("compensation_retry")] * 10
    entries = [entry("created", None), *retries, entry("compensation_failed")]
    folded = present.fold_history(entries)
    folds = [item for item in folded if isinstance(item, present.Fold)]
    assert len(folds) == 1 and len(folds[0].entries) == 20 - 2 * present.FOLD_KEEP
    assert len(folded) == 1 + 2 * present.FOLD_KEEP + 1 + 1
    shown = [
        e for item in folded for e in (item.entries if isinstance(item, present.Fold) else [item])
    ]
    assert shown == entries  # in order, all of them
    by_person = [entry("step_retry", actor="olivia")] * 8  # a person's entries stay in view
    assert present.fold_history(by_person) == by_person


def test_the_saga_page_shows_the_trace_a_caller_started_it_in(app: Flask) -> None:
    """A `traceparent` on POST /saga/start (tracing off here: the caller's context is kept)
    becomes the saga's `trace_id`, in the document and on its page."""
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    api = app.test_client()
    started = api.post(
        "/saga/start",
        json={
            "saga_type": "traced_ui",
            "steps": [{"name": "a", "action": {"service": "svc", "path": "/ok/a"}}],
        },
        headers={"X-API-Key": ADMIN_KEY, "traceparent": f"00-{trace}-00f067aa0ba902b7-01"},
    )
    assert started.status_code == 202, started.get_json()
    sid = started.get_json()["saga_id"]
    assert started.get_json()["trace_id"] == trace
    untraced = api.post(
        "/saga/start",
        json={
            "saga_type": "untraced_ui",
            "steps": [{"name": "a", "action": {"service": "svc", "path": "/ok/a"}}],
        },
        headers={"X-API-Key": ADMIN_KEY, "traceparent": "not-a-traceparent"},
    )
    assert untraced.status_code == 202 and untraced.get_json()["trace_id"] is None
    page = text(login(app).get(f"/ui/sagas/{sid}"))
    assert f'<dt>trace id</dt><dd class="mono">{trace}</dd>' in page
