"""One log format: every process the project starts (gunicorn, worker, beat, the events
consumer, Flower, the demo services), each a real process started the way the Procfile
starts it, writes JSON lines with the same fields; SAGA_LOG_FORMAT=console makes them
readable lines; an empty sweep writes nothing at INFO."""

from __future__ import annotations

import json
import os
import signal
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

from tests.conftest import ROOT, free_port, stop_process

CLI = str(Path(sys.executable).parent / "saga-orchestrator")
FIELDS = ("time", "level", "logger", "message", "saga_id", "correlation_id", "trace_id", "step")
# Celery prints its shutdown notices with print(), not through logging (celery/apps/worker.py).
CELERY_PRINTS = ("worker: Warm shutdown (MainProcess)",)
KEY = "log-key"


def wait_for(check: Any, what: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while not check():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def processes(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Every component, run through `saga-orchestrator`, with a prefix and ports of its own;
    stopped with SIGTERM (as honcho does) before the test reads what each wrote."""
    prefix = f"logs-{uuid.uuid4().hex[:8]}:"
    logs = tmp_path_factory.mktemp("logs")
    ports = {k: free_port() for k in ("api", "flower", "auth", "airtable", "notification")}
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "REDIS_URL": redis_url,
        "SAGA_KEY_PREFIX": prefix,
        "SAGA_QUEUE": f"{prefix}sagas",
        "SAGA_API_KEYS": KEY,
        "FLOWER_BASIC_AUTH": "admin:log-test-password",
        "SAGA_SWEEP_INTERVAL_SECONDS": "0.5",
        "WEB_CONCURRENCY": "1",
        **{
            f"{kind.upper()}_{suffix}": f"http://127.0.0.1:{ports[kind]}"
            for kind, suffix in (
                ("auth", "SERVICE_URL"),
                ("airtable", "CONNECTOR_URL"),
                ("notification", "SERVICE_URL"),
            )
        },
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop("SAGA_LOG_FORMAT", None)
    commands = {
        "api": ["api", "--bind", f"127.0.0.1:{ports['api']}"],
        "worker": ["worker", "--loglevel", "INFO", "-c", "1", "--without-gossip"],
        "beat": ["beat", "--loglevel", "INFO", "--schedule", str(logs / "beat-schedule")],
        "events": ["events"],
        "flower": ["flower", f"--port={ports['flower']}", "--address=127.0.0.1"],
        "demo": [
            "demo-services",
            "--auth-port",
            str(ports["auth"]),
            "--airtable-port",
            str(ports["airtable"]),
            "--notification-port",
            str(ports["notification"]),
        ],
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, argv in commands.items():
            with (logs / f"{name}.log").open("wb") as out:
                procs[name] = subprocess.Popen(
                    [CLI, *argv], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
                )
        api = httpx.Client(base_url=f"http://127.0.0.1:{ports['api']}", timeout=5)

        def api_answers() -> bool:
            try:
                return api.get("/", headers={"X-API-Key": KEY}).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(api_answers, "the API")
        started = api.post(
            "/workflows/user_registration/start",
            headers={"X-API-Key": KEY},
            json={"payload": {"email": f"{uuid.uuid4().hex[:8]}@example.com", "name": "Ada"}},
        )
        assert started.status_code == 202, started.text
        saga_id = started.json()["saga_id"]
        wait_for(
            lambda: (
                api.get(f"/saga/{saga_id}/status", headers={"X-API-Key": KEY}).json()["status"]
                == "COMPLETED"
            ),
            "the saga",
        )
        flower = httpx.get(
            f"http://127.0.0.1:{ports['flower']}/healthcheck", auth=("admin", "log-test-password")
        )
        assert flower.status_code == 200
        client = redis.Redis.from_url(redis_url)
        before = int(client.hget(f"{prefix}sweep", "count") or 0)
        wait_for(lambda: int(client.hget(f"{prefix}sweep", "count") or 0) >= before + 4, "sweeps")
        api.close()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            stop_process(proc)
        r = redis.Redis.from_url(redis_url)
        for key in r.scan_iter(match=f"{prefix}*", count=1000):
            r.delete(key)
    yield {"logs": logs, "saga_id": saga_id}


def lines_of(path: Path) -> list[dict[str, Any]]:
    out = []
    for raw in path.read_text().splitlines():
        if not raw.strip() or raw.strip() in CELERY_PRINTS:
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            raise AssertionError(f"{path.name}: not a JSON line: {raw!r}") from None
        assert isinstance(line, dict), raw
        out.append(line)
    return out


@pytest.mark.parametrize("name", ["api", "worker", "beat", "events", "flower", "demo"])
def test_every_process_writes_json_lines_with_the_same_fields(
    processes: dict[str, Any], name: str
) -> None:
    lines = lines_of(processes["logs"] / f"{name}.log")
    assert lines, f"{name} wrote nothing"
    for line in lines:
        assert list(line)[: len(FIELDS)] == list(FIELDS), line
        assert line["time"].endswith("Z") and "T" in line["time"], line
        assert line["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), line


def test_lines_about_the_saga_carry_its_ids(processes: dict[str, Any]) -> None:
    logs, saga_id = processes["logs"], processes["saga_id"]
    api = lines_of(logs / "api.log")
    assert any(line["logger"] == "gunicorn.access" for line in api)  # the access log too
    assert any(line["logger"] == "gunicorn.error" for line in api)
    started = [line for line in api if line["message"] == "saga started"]
    assert [line["saga_id"] for line in started] == [saga_id]
    worker = [line for line in lines_of(logs / "worker.log") if line["saga_id"] == saga_id]
    steps = {line["step"] for line in worker if line["step"]}
    assert {"create_account", "create_default_workspace", "send_welcome_notification"} <= steps
    assert all(line["correlation_id"] == saga_id for line in worker)
    demo = [line for line in lines_of(logs / "demo.log") if line["saga_id"] == saga_id]
    assert demo and all(line["step"] for line in demo)


def test_an_empty_sweep_logs_nothing_at_info(processes: dict[str, Any]) -> None:
    logs = processes["logs"]
    for name in ("worker", "beat"):
        sweepy = [
            line
            for line in lines_of(logs / f"{name}.log")
            if "sweep" in line["message"] and line["level"] in ("DEBUG", "INFO")
        ]
        assert not sweepy, sweepy[:3]


def test_console_format_is_readable_lines(tmp_path: Path) -> None:
    env = {**os.environ, "SAGA_LOG_FORMAT": "console", "PYTHONPATH": str(ROOT)}
    ports = [str(free_port()) for _ in range(3)]
    out = tmp_path / "demo.log"
    with out.open("wb") as log:
        proc = subprocess.Popen(
            [
                CLI,
                "demo-services",
                "--auth-port",
                ports[0],
                "--airtable-port",
                ports[1],
                "--notification-port",
                ports[2],
            ],
            env={k: v for k, v in env.items() if k != "REDIS_URL"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: "notification" in out.read_text(), "the demo services")
    finally:
        stop_process(proc)
    first = out.read_text().splitlines()[0]
    assert not first.startswith("{")
    assert " INFO    demo.services: demo auth service on http://127.0.0.1:" in first, first
