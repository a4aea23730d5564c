"""Real services for the tests: Redis, a Celery worker subprocess, HTTP stubs.

Redis: `REDIS_URL` if it answers, else a `redis-server` started on a free port. Every key of
this run starts with a fresh prefix (store and kombu alike) and is deleted at the end, so the
run never touches data that is not its own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from demo.services import DemoServices, start_in_threads
from sagas.settings import default_sweep_queue
from tests.stubs import StubService

ROOT = Path(__file__).resolve().parent.parent
FINAL = {"COMPLETED", "COMPENSATED", "COMPENSATION_FAILED"}


def stop_process(
    proc: subprocess.Popen[bytes], timeout: float = 20, signum: int = signal.SIGTERM
) -> int:
    """Ask a process to stop, SIGKILL it if it does not within `timeout`, and always reap it
    (a Popen dropped while its child runs is a ResourceWarning, which the suite treats as an
    error). Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signum)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis_server(
    workdir: Path, *extra: str, port: int | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server of the test's own (on `port`, or a free one); returns (process, url).
    `extra` options follow the defaults (no snapshots, noeviction) and override them."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run `make test`, which installs it")
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(workdir),
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            if redis.Redis.from_url(url).ping():
                return proc, url
        except redis.ConnectionError:
            time.sleep(0.05)
    stop_process(proc, 0)
    pytest.fail("redis-server did not start")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        yield url
        return
    except (redis.ConnectionError, redis.TimeoutError):
        pass
    proc, url = start_redis_server(tmp_path_factory.mktemp("redis"))
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def prefix(redis_url: str) -> Iterator[str]:
    prefix = f"test-{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        client.delete(key)


@pytest.fixture(scope="session")
def stub() -> Iterator[StubService]:
    service = StubService().start()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def demo(redis_url: str, prefix: str) -> Iterator[DemoServices]:
    """The demo auth, airtable and notification services, on free ports; the notification
    service also consumes this run's commands stream (and replies on its events stream)."""
    services = start_in_threads(
        ports={"auth": 0, "airtable": 0, "notification": 0},
        redis_url=redis_url,
        key_prefix=prefix,
    )
    yield services
    services.stop()


@pytest.fixture(scope="session")
def service_env(
    redis_url: str, prefix: str, stub: StubService, demo: DemoServices
) -> dict[str, str]:
    """The environment every component of this run shares (test process and worker)."""
    env = {
        "REDIS_URL": redis_url,
        "SAGA_KEY_PREFIX": prefix,
        "SAGA_QUEUE": f"{prefix}sagas",
        "SAGA_SERVICES": json.dumps({"svc": stub.url, "inventory": stub.url, "payments": stub.url}),
        "SAGA_TASK_MODULES": "tests.registered_tasks",
        "SAGA_RETRY_BACKOFF_SECONDS": "0.05",
        "SAGA_RETRY_MAX_BACKOFF_SECONDS": "0.2",
        "COMPENSATION_TIMEOUT_SECONDS": "3",
        "SAGA_STEP_TIMEOUT_SECONDS": "20",
        "SAGA_MAX_OUTPUT_BYTES": "4096",
        "SAGA_REDRIVE_AFTER_SECONDS": "1",
        "SAGA_ATTEMPT_GRACE_SECONDS": "2",
        "AUTH_SERVICE_URL": demo.urls["auth"],
        "AIRTABLE_CONNECTOR_URL": demo.urls["airtable"],
        "NOTIFICATION_SERVICE_URL": demo.urls["notification"],
    }
    os.environ.update(env)  # the test process builds its own engine from the same settings
    return env


def worker_command(
    queue: str,
    *,
    pool: str = "prefork",
    concurrency: int = 3,
    loglevel: str = "INFO",
    include: tuple[str, ...] = (),
) -> list[str]:
    """The Celery worker command line the tests and benchmarks run: it consumes the steps'
    queue and the sweep's (`<queue>.sweep`, as celeryconfig routes it for that queue)."""
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "wsgi:celery_app",
        "worker",
        "-Q",
        f"{queue},{default_sweep_queue(queue)}",
        "-P",
        pool,
        "-c",
        str(concurrency),
        "--without-gossip",
        "--without-mingle",
        "--loglevel",
        loglevel,
    ]
    for module in include:
        argv += ["--include", module]
    return argv


class Worker:
    def __init__(self, env: dict[str, str], log_path: Path, concurrency: int = 3) -> None:
        self.log_path = log_path
        self.env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        self.concurrency = concurrency
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.proc = self._spawn(log)
        deadline = time.time() + 30
        while time.time() < deadline:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                if b"ready." in f.read():
                    return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"worker did not start: {self.log_path.read_text()[-3000:]}")

    def _spawn(self, log: Any) -> subprocess.Popen[bytes]:
        argv = worker_command(self.env["SAGA_QUEUE"], concurrency=self.concurrency)
        argv += ["-n", f"test-{uuid.uuid4().hex[:6]}@%h"]
        return subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc)


@pytest.fixture(scope="session")
def worker(
    service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    w = Worker(service_env, tmp_path_factory.mktemp("worker") / "worker.log").start()
    yield w
    w.stop()
    # Celery swallows an errback's exception after logging it: that is a lost failure record.
    swallowed = [
        line
        for line in w.log_path.read_text().splitlines()
        if "Errback" in line and "raised an exception" in line
    ]
    assert not swallowed, swallowed[:3]


@pytest.fixture(scope="session")
def engine(service_env: dict[str, str]) -> Any:
    """An engine in the test process, sending work to the worker through the real broker."""
    import wsgi  # noqa: F401  (the Celery app, configured from service_env)
    from sagas.settings import Settings
    from tasks.runtime import build_engine

    return build_engine(Settings.from_env())


@pytest.fixture()
def consumer(engine: Any, worker: Worker) -> Iterator[None]:
    """The event consumer, in a thread, for the test's duration (its Redis client has no
    socket timeout). Only tests that ask for it have replies applied."""
    from sagas.events import run_consumer

    stop = threading.Event()
    thread = threading.Thread(target=run_consumer, args=(engine, "test-consumer", stop, 100))
    thread.start()
    yield
    stop.set()
    thread.join(5)


@pytest.fixture()
def run(engine: Any, worker: Worker) -> Any:
    """Start a saga and wait for it to reach a final status; returns the document."""

    def run_saga(definition: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
        saga = engine.start(definition).saga
        return wait_final(engine, saga["saga_id"], timeout)

    return run_saga


def wait_final(
    engine: Any, saga_id: str, timeout: float = 30, statuses: set[str] = FINAL
) -> dict[str, Any]:
    deadline = time.time() + timeout
    while True:
        saga = engine.get(saga_id)
        if saga["status"] in statuses:
            return dict(saga)
        if time.time() > deadline:
            raise AssertionError(f"saga still {saga['status']} after {timeout} s: {saga}")
        time.sleep(0.02)


def sweep_until(
    engine: Any, saga_id: str, statuses: set[str], timeout: float = 15
) -> dict[str, Any]:
    """Run the sweep (as beat would, every 0.1 s) until the saga is in one of `statuses`."""
    deadline = time.time() + timeout
    while True:
        engine.sweep()
        saga = engine.get(saga_id)
        if saga["status"] in statuses:
            return dict(saga)
        assert time.time() < deadline, saga
        time.sleep(0.1)
