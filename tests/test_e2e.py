"""End to end through HTTP only: gunicorn (`saga-orchestrator api`), a Celery worker and
the demo services (`saga-orchestrator demo-services`), each a real process, on free ports."""

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
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, Worker, free_port, stop_process

KEY = "e2e-key"
CLI = str(Path(sys.executable).parent / "saga-orchestrator")


def wait_until(check: Any, what: str, timeout: float = 30) -> Any:
    deadline = time.time() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except httpx.HTTPError:
            pass
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """API, worker and demo services with a key prefix and queue of their own."""
    prefix = f"e2e-{uuid.uuid4().hex[:8]}:"
    ports = {kind: free_port() for kind in ("auth", "airtable", "notification", "api")}
    logs = tmp_path_factory.mktemp("e2e")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "REDIS_URL": redis_url,
        "SAGA_KEY_PREFIX": prefix,
        "SAGA_QUEUE": f"{prefix}sagas",
        "SAGA_API_KEYS": KEY,
        "AUTH_SERVICE_URL": f"http://127.0.0.1:{ports['auth']}",
        "AIRTABLE_CONNECTOR_URL": f"http://127.0.0.1:{ports['airtable']}",
        "NOTIFICATION_SERVICE_URL": f"http://127.0.0.1:{ports['notification']}",
        "WEB_CONCURRENCY": "2",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the api command makes a fresh one
    procs = []
    with (logs / "demo.log").open("wb") as out:
        procs.append(
            subprocess.Popen(
                [
                    CLI,
                    "demo-services",
                    "--auth-port",
                    str(ports["auth"]),
                    "--airtable-port",
                    str(ports["airtable"]),
                    "--notification-port",
                    str(ports["notification"]),
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        )
    with (logs / "api.log").open("wb") as out:
        procs.append(
            subprocess.Popen(
                [CLI, "api", "--bind", f"127.0.0.1:{ports['api']}"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        )
    worker = Worker(
        {
            k: env[k]
            for k in (
                "REDIS_URL",
                "SAGA_KEY_PREFIX",
                "SAGA_QUEUE",
                "AUTH_SERVICE_URL",
                "AIRTABLE_CONNECTOR_URL",
                "NOTIFICATION_SERVICE_URL",
            )
        },
        logs / "worker.log",
        concurrency=2,
    )
    try:
        worker.start()
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{ports['api']}", headers={"X-API-Key": KEY}, timeout=10
        )
        wait_until(lambda: client.get("/health/").status_code == 200, "a healthy API")
        yield {"client": client, "logs": logs}
        client.close()
    finally:
        worker.stop()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            stop_process(proc)
        r = redis.Redis.from_url(redis_url)
        for key in r.scan_iter(match=f"{prefix}*", count=1000):
            r.delete(key)


def run_workflow(client: httpx.Client, name: str, payload: dict[str, Any]) -> dict[str, Any]:
    response = client.post(
        f"/workflows/{name}/start",
        json={"payload": payload},
        headers={"Idempotency-Key": str(uuid.uuid4())},
    )
    assert response.status_code == 202, response.text
    saga_id = response.json()["saga_id"]

    def final() -> dict[str, Any] | None:
        doc: dict[str, Any] = client.get(f"/saga/{saga_id}/status").json()
        done = doc["status"] in ("COMPLETED", "COMPENSATED", "COMPENSATION_FAILED")
        return doc if done else None

    return wait_until(final, f"{name} to finish")  # type: ignore[no-any-return]


def test_workflows_complete_and_compensate_over_http(stack: dict[str, Any]) -> None:
    """user_registration completes; workspace_creation made to fail at its third step is
    compensated; the Prometheus text counts both and the HTTP requests of gunicorn."""
    client = stack["client"]
    done = run_workflow(
        client, "user_registration", {"email": f"{uuid.uuid4().hex[:8]}@example.com", "name": "Ada"}
    )
    assert done["status"] == "COMPLETED", done
    assert done["steps"][0]["output"]["id"]

    undone = run_workflow(
        client,
        "workspace_creation",
        {
            "owner_id": "usr_demo",
            "name": "Team space",
            "airtable_base_id": "appDemoBase",
            "fail_at": "grant_permissions",
        },
    )
    assert undone["status"] == "COMPENSATED", undone
    assert undone["failure"]["step"] == "grant_permissions"
    assert [s["status"] for s in undone["steps"]] == [
        "COMPENSATED",
        "COMPENSATED",
        "FAILED",
        "SKIPPED",
    ]

    text = client.get("/metrics/prometheus").text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert (
        samples[
            ("saga_finished_total", (("saga_type", "user_registration"), ("status", "COMPLETED")))
        ]
        == 1
    )
    assert (
        samples[
            (
                "saga_finished_total",
                (("saga_type", "workspace_creation"), ("status", "COMPENSATED")),
            )
        ]
        == 1
    )
    requests = [v for (name, labels), v in samples.items() if name == "flask_http_request_total"]
    assert sum(requests) >= 4  # counted across the gunicorn workers (multiprocess mode)


@pytest.mark.parametrize(("switch", "shown"), [("0", "OFF"), ("1", "ON")])
def test_a_worker_sends_task_events_as_saga_task_events_says(
    service_env: dict[str, str], tmp_path: Path, switch: str, shown: str
) -> None:
    """SAGA_TASK_EVENTS reaches a real worker through celeryconfig (its banner says what it
    does); a queue of its own, so that it takes no other test's work."""
    env = {**service_env, "SAGA_QUEUE": f"{service_env['SAGA_QUEUE']}-events{switch}"}
    worker = Worker({**env, "SAGA_TASK_EVENTS": switch}, tmp_path / "worker.log", 1).start()
    try:
        assert f"task events: {shown}" in worker.log_path.read_text()
    finally:
        worker.stop()
