"""Schedules (issue 13): fire times in a time zone, the at-most-once claim of a fire time,
the catch-up policy, the API, and real Celery beat processes (celery-redbeat) with the real
worker: a schedule fires, a paused one does not, two beats fire once, a beat killed and
restarted does not fire a time twice."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from sagas.schedules import Spec, due_fire_time, next_fire_times
from sagas.store import ListQuery
from tests.conftest import stop_process
from tests.test_cli import spawn

KEY = "schedule-admin-key"


def spec(**extra: Any) -> Spec:
    base: dict[str, Any] = {
        "workflow": "w",
        "version": None,
        "cron": None,
        "timezone": "UTC",
        "interval_seconds": None,
        "payload": {},
        "catch_up": "skip",
        "anchor_ms": 0,
    }
    return Spec(**{**base, **extra})


def test_cron_fire_times_follow_the_time_zone_across_dst() -> None:
    """09:00 in Paris is 08:00 UTC before the spring change and 07:00 UTC after it."""
    paris = spec(cron="0 9 * * *", timezone="Europe/Paris")
    after = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)
    times = [t.astimezone(UTC).hour for t in next_fire_times(paris, after)]
    assert times == [8, 7, 7, 7, 7]
    assert next_fire_times(paris, after)[0].tzinfo == ZoneInfo("Europe/Paris")
    at = datetime(2026, 3, 30, 7, 0, 30, tzinfo=UTC)
    assert due_fire_time(paris, at) == datetime(2026, 3, 30, 7, 0, tzinfo=UTC)


def test_interval_fire_times_start_one_interval_after_creation() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    every = spec(interval_seconds=10, anchor_ms=int(start.timestamp() * 1000))
    assert due_fire_time(every, start + timedelta(seconds=9)) is None
    assert due_fire_time(every, start + timedelta(seconds=25)) == start + timedelta(seconds=20)
    nxt = next_fire_times(every, start + timedelta(seconds=25))
    assert [(t - start).total_seconds() for t in nxt] == [30, 40, 50, 60, 70]


# --- the engine and the API ------------------------------------------------------------------
@pytest.fixture(scope="module")
def app(engine: Any, worker: Any) -> Flask:
    return create_app({"API_KEYS": [KEY], "TESTING": True}, engine=engine)


@pytest.fixture()
def client(app: Flask) -> FlaskClient:
    c = app.test_client()
    c.environ_base["HTTP_X_API_KEY"] = KEY
    return c


@pytest.fixture(autouse=True)
def _no_schedule_outlives_its_test(app: Flask) -> Any:
    """Schedules share the session's key prefix: one left behind would fire in every later
    test's beat. Each test's are deleted after it."""
    yield
    c = app.test_client()
    c.environ_base["HTTP_X_API_KEY"] = KEY
    for left in c.get("/schedules").get_json()["schedules"]:
        c.delete(f"/schedules/{left['schedule_id']}")


@pytest.fixture(scope="module")
def workflow(app: Flask) -> str:
    """A team's workflow: one registered task step (fast)."""
    name = f"tick_{uuid.uuid4().hex[:8]}"
    c = app.test_client()
    c.environ_base["HTTP_X_API_KEY"] = KEY
    doc = {
        "payload_schema": {
            "type": "object",
            "required": ["n"],
            "properties": {"n": {"type": "integer"}},
        },
        "steps": [
            {
                "name": "tick",
                "action": {"task": "builtin.noop", "args": {"n": "{{payload.n}}"}},
                "compensation": "none",
            }
        ],
        "examples": [{"name": "one", "payload": {"n": 1}}],
    }
    assert c.put(f"/workflows/{name}", json=doc).status_code == 201
    return name


def sagas_of(engine: Any, schedule_id: str) -> list[dict[str, Any]]:
    _, items = engine.find(ListQuery(correlation_id=f"schedule:{schedule_id}", page_size=500))
    return items  # type: ignore[no-any-return]


def test_schedule_api_and_bad_input(client: FlaskClient, workflow: str) -> None:
    created = client.post(
        "/schedules",
        json={"workflow": workflow, "cron": "30 8 * * 1-5", "timezone": "Europe/Paris",
              "payload": {"n": 3}},
    )  # fmt: skip
    assert created.status_code == 201, created.get_json()
    doc = created.get_json()
    assert len(doc["next_fire_times"]) == 5 and doc["next_fire_times"][0].endswith(
        ("+01:00", "+02:00")
    )
    assert "T08:30:00" in doc["next_fire_times"][0]
    sid = doc["schedule_id"]
    assert client.get(f"/schedules/{sid}").get_json()["cron"] == "30 8 * * 1-5"
    assert sid in [s["schedule_id"] for s in client.get("/schedules").get_json()["schedules"]]
    paused = client.post(f"/schedules/{sid}/pause").get_json()
    assert paused["paused"] is True
    assert client.post(f"/schedules/{sid}/resume").get_json()["paused"] is False
    patched = client.patch(f"/schedules/{sid}", json={"interval_seconds": 3600})
    assert patched.status_code == 200 and patched.get_json()["cron"] is None
    for body, field in [
        ({"workflow": workflow, "cron": "61 * * * *", "payload": {"n": 1}}, "cron"),
        ({"workflow": workflow, "cron": "* * * * *", "timezone": "Mars/Base"}, "timezone"),
        ({"workflow": workflow, "payload": {"n": 1}}, "cron"),
        ({"workflow": workflow, "cron": "* * * * *", "payload": {"n": "x"}}, "payload.n"),
        ({"workflow": workflow, "interval_seconds": 0.1, "payload": {"n": 1}}, "interval_seconds"),
        ({"workflow": workflow, "cron": "* * * * *", "catch_up": "all"}, "catch_up"),
    ]:
        answer = client.post("/schedules", json=body)
        assert answer.status_code == 422, (body, answer.get_json())
        assert field in answer.get_json()["errors"]["json"], (body, answer.get_json())
    missing = client.post("/schedules", json={"workflow": "nope", "cron": "* * * * *"})
    assert missing.status_code == 404
    assert client.delete(f"/schedules/{sid}").status_code == 204
    assert client.get(f"/schedules/{sid}").status_code == 404


def test_a_fire_time_starts_once_and_missed_ones_follow_the_policy(
    engine: Any, workflow: str, client: FlaskClient
) -> None:
    """Ticks (called here with a chosen clock): the same fire time twice starts one saga;
    a fire time found 5 minutes late is skipped under `skip` and run once under
    `run_once`; a paused schedule starts nothing."""
    schedules = engine.schedules
    skip = schedules.create({"workflow": workflow, "cron": "0 * * * *", "payload": {"n": 1}})
    late = schedules.create(
        {"workflow": workflow, "cron": "0 * * * *", "payload": {"n": 2}, "catch_up": "run_once"}
    )
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    on_time = hour + timedelta(seconds=2)
    assert schedules.fire(skip["schedule_id"], on_time) == "started"
    assert schedules.fire(skip["schedule_id"], on_time + timedelta(seconds=30)) == "done"
    (saga,) = sagas_of(engine, skip["schedule_id"])
    assert saga["workflow"]["name"] == workflow
    assert schedules.fire(late["schedule_id"], hour + timedelta(minutes=5)) == "started"
    assert schedules.fire(late["schedule_id"], hour + timedelta(minutes=6)) == "done"
    nxt = hour + timedelta(hours=1, minutes=5)
    assert schedules.fire(skip["schedule_id"], nxt) == "skipped"
    assert schedules.fire(skip["schedule_id"], nxt + timedelta(seconds=1)) == "done"
    assert len(sagas_of(engine, skip["schedule_id"])) == 1
    assert schedules.get(skip["schedule_id"])["skipped"] == 1
    stats = engine.stats()
    assert stats["schedules|skipped"] >= 1 and stats["schedules|started"] >= 2
    prometheus = client.get("/metrics/prometheus").get_data(as_text=True)
    assert 'saga_schedule_firings_total{outcome="skipped"}' in prometheus
    schedules.pause(late["schedule_id"], True)
    assert schedules.fire(late["schedule_id"], hour + timedelta(hours=1)) == "paused"
    assert len(sagas_of(engine, late["schedule_id"])) == 1
    for s in (skip, late):
        schedules.delete(s["schedule_id"])


# --- real beat processes -----------------------------------------------------------------------
def beat(env: dict[str, str], tmp_path: Path, name: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / f"{name}.log"
    proc = spawn("beat", "--loglevel", "INFO", env=env, log=log, cwd=tmp_path)
    return proc, log


@pytest.fixture()
def beat_env(service_env: dict[str, str]) -> dict[str, str]:
    return {**service_env, "SAGA_BEAT_LOCK_SECONDS": "6"}


def fire_times_started(engine: Any, schedule_id: str) -> list[str]:
    return sorted(s["saga_id"] for s in sagas_of(engine, schedule_id))


def test_beat_fires_a_schedule_and_not_a_paused_one(
    engine: Any, workflow: str, beat_env: dict[str, str], tmp_path: Path
) -> None:
    schedules = engine.schedules
    live = schedules.create({"workflow": workflow, "interval_seconds": 2, "payload": {"n": 1}})
    paused = schedules.create({"workflow": workflow, "interval_seconds": 2, "payload": {"n": 2}})
    schedules.pause(paused["schedule_id"], True)
    proc, log = beat(beat_env, tmp_path, "beat")
    try:
        deadline = time.time() + 30
        while len(sagas_of(engine, live["schedule_id"])) < 3:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
    finally:
        stop_process(proc, 15)
    assert sagas_of(engine, paused["schedule_id"]) == []
    doc = schedules.get(live["schedule_id"])
    assert doc["fired"] >= 3 and doc["last_saga_id"]
    for s in (live, paused):
        schedules.delete(s["schedule_id"])


def test_two_beats_fire_each_time_once_and_a_restarted_beat_does_not_double_fire(
    engine: Any, workflow: str, beat_env: dict[str, str], tmp_path: Path
) -> None:
    """Two beats run at once, then the one ticking is SIGKILLed and a new one starts: the
    sagas started are at most one per fire time (one per 2 s since the schedule began),
    and each fire time that started has exactly one saga."""
    schedules = engine.schedules
    created = schedules.create({"workflow": workflow, "interval_seconds": 2, "payload": {"n": 5}})
    sid = created["schedule_id"]
    began = time.time()
    first, log1 = beat(beat_env, tmp_path, "beat1")
    second, log2 = beat(beat_env, tmp_path, "beat2")
    third = None
    try:
        time.sleep(9)
        assert first.poll() is None and second.poll() is None
        ticking = first if "Sending due task schedule:" in log1.read_text() else second
        os.kill(ticking.pid, signal.SIGKILL)
        ticking.wait(10)
        third, _ = beat(beat_env, tmp_path, "beat3")
        time.sleep(14)  # the lock (6 s) expires, another beat takes over
    finally:
        for proc in (first, second, third):
            if proc is not None and proc.poll() is None:
                stop_process(proc, 15)
    elapsed = time.time() - began
    started = sagas_of(engine, sid)
    assert len(started) <= int(elapsed / 2) + 1, (len(started), elapsed)
    assert len(started) >= 6, (len(started), log1.read_text()[-2000:], log2.read_text()[-2000:])
    assert len({s["saga_id"] for s in started}) == len(started)
    assert schedules.get(sid)["fired"] == len(started)
    both = log1.read_text() + log2.read_text()
    assert "Sending due task schedule:" in both
    schedules.delete(sid)


def test_a_process_that_never_saved_an_entry_deletes_a_schedule(
    service_env: dict[str, str], client: FlaskClient, workflow: str
) -> None:
    """A schedule created through one gunicorn worker and deleted through another: the
    second process has not read redbeat's settings yet (it answered 500 before)."""
    import sys

    body = {"workflow": workflow, "interval_seconds": 3600, "payload": {"n": 1}}
    created = client.post("/schedules", json=body)
    assert created.status_code == 201, created.get_json()
    sid = created.get_json()["schedule_id"]
    code = (
        "import wsgi; from sagas.settings import Settings; from tasks.runtime import "
        f"build_engine; build_engine(Settings.from_env()).schedules.delete({sid!r})"
    )
    env = {**os.environ, **service_env}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert client.get(f"/schedules/{sid}").status_code == 404
