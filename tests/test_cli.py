"""The `saga-orchestrator` command as users run it: a real subprocess of the installed script.

The API test starts `saga-orchestrator api` (gunicorn) against this run's Redis and worker and
drives it with the client commands; the Flower test checks its basic auth and that it sees the
worker's tasks.
"""

from __future__ import annotations

import base64
import json
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

from tests.conftest import ROOT, free_port, stop_process

CLI = Path(sys.executable).parent / "saga-orchestrator"
COMMANDS = [
    "api",
    "worker",
    "beat",
    "events",
    "flower",
    "demo-services",
    "start",
    "status",
    "list",
    "compensate",
    "actions",
    "history",
    "resolve",
    "skip",
    "retry",
    "cancel",
    "rerun",
]
KEY = "cli-test-key"


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        cwd=cwd,
    )


def spawn(
    *args: str, env: dict[str, str], log: Path, cwd: Path = ROOT, drop: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    full_env = {k: v for k, v in os.environ.items() if k not in drop}
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(CLI), *args],
            env={**full_env, "PYTHONPATH": str(ROOT), **env},
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    pytest.fail(f"{url} did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


# --- without any service -------------------------------------------------------------------
@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help(command: str | None) -> None:
    result = cli(*([command] if command else []), "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: saga-orchestrator")
    if command is None:
        for name in COMMANDS:
            assert name in result.stdout


def test_the_package_imports_only_click_until_a_command_runs() -> None:
    """`--help` and the component commands start fast: importing `saga_cli` loads neither
    the HTTP client, nor rich, nor the service (see its docstring); `python -m` runs it."""
    heavy = ("httpx", "rich", "flask", "celery", "redis", "sagas", "app", "wsgi")
    code = f"import sys, saga_cli; print(sorted(set({heavy!r}) & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    as_module = subprocess.run(
        [sys.executable, "-m", "saga_cli", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert as_module.returncode == 0, as_module.stderr
    assert "rerun" in as_module.stdout


def test_flower_refuses_to_start_without_credentials() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}
    result = subprocess.run(
        [str(CLI), "flower"], capture_output=True, text=True, env=env, timeout=30, cwd=ROOT
    )
    assert result.returncode != 0
    assert "FLOWER_BASIC_AUTH" in result.stderr
    assert "--no-auth" in result.stderr


@pytest.mark.parametrize("credentials", ["admin", ":Very-Secret", "admin:", "admin:ok,bob"])
def test_flower_rejects_malformed_credentials_without_echoing_them(credentials: str) -> None:
    result = cli("flower", env={"FLOWER_BASIC_AUTH": credentials})
    assert result.returncode != 0
    assert "FLOWER_BASIC_AUTH must be `user:password`" in result.stderr
    assert "Very-Secret" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["status", "some-id"],
        ["status", "some-id", "--watch"],
        ["list", "--json"],
        ["compensate", "some-id", "--reason", "test"],
        ["resolve", "some-id", "1", "--reason", "test"],
        ["history", "some-id"],
        ["start", "user_registration", "--payload", '{"email": "a@example.com"}'],
    ],
)
def test_client_names_the_url_it_cannot_reach(args: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = cli(*args, "--url", url, "--api-key", KEY)
    assert result.returncode == 1, result.stderr
    assert f"cannot reach the saga API at {url}" in result.stderr
    assert "Traceback" not in result.stderr


def test_client_takes_url_and_key_from_the_environment() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = cli("list", env={"SAGA_URL": url + "/", "SAGA_API_KEY": KEY})
    assert result.returncode == 1
    assert f"cannot reach the saga API at {url}" in result.stderr


def test_start_usage_errors() -> None:
    both = cli("start", "user_registration", "--definition", "-")
    assert both.returncode == 2
    assert "either a WORKFLOW name or --definition" in both.stderr
    bad_json = cli("start", "user_registration", "--payload", "{nope")
    assert bad_json.returncode == 2
    assert "not valid JSON" in bad_json.stderr


def test_api_prepares_the_prometheus_directory(tmp_path: Path) -> None:
    """Stale metric files of an earlier run are wiped before gunicorn starts (`--version`
    makes gunicorn exit right after); other files are left alone; a missing one is made."""
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "counter_123.db").write_bytes(b"stale")
    (metrics / "README").write_text("not ours")
    result = cli("api", "--version", env={"PROMETHEUS_MULTIPROC_DIR": str(metrics)})
    assert result.returncode == 0, result.stderr
    assert "gunicorn" in result.stdout + result.stderr
    assert sorted(p.name for p in metrics.iterdir()) == ["README"]

    missing = tmp_path / "new" / "metrics"
    result = cli("api", "--version", env={"PROMETHEUS_MULTIPROC_DIR": str(missing)})
    assert result.returncode == 0, result.stderr
    assert missing.is_dir()

    # Unset: a fresh temporary directory, removed again although gunicorn never started.
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    result = subprocess.run(
        [str(CLI), "api", "--version"],
        capture_output=True,
        text=True,
        env={**env, "TMPDIR": str(tmp)},
        timeout=30,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert list(tmp.iterdir()) == []


def test_api_checks_its_configuration_before_it_binds() -> None:
    """Without API keys, or with a malformed variable, `api` fails with one clear line and
    exit code 1, before gunicorn says "Listening at" (each worker used to dump a traceback)."""
    port = str(free_port())
    base = {
        k: v for k, v in os.environ.items() if k not in ("SAGA_API_KEYS", "SAGA_ALLOW_ANONYMOUS")
    }
    for extra, expected in (
        ({}, "SAGA_API_KEYS is empty"),
        ({"SAGA_API_KEYS": "k", "SAGA_RETRY_ATTEMPTS": "x"}, "SAGA_RETRY_ATTEMPTS='x'"),
        ({"SAGA_API_KEYS": "ops:boss:k"}, "role 'boss'"),
    ):
        result = subprocess.run(
            [str(CLI), "api", "--bind", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            env={**base, **extra},
            timeout=30,
            cwd=ROOT,
        )
        assert result.returncode == 1, result.stderr
        lines = (result.stdout + result.stderr).strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: cannot start the API:"), lines
        assert expected in lines[0]
        assert "Listening at" not in result.stderr and "Traceback" not in result.stderr


def test_gunicorn_workers_freeze_what_they_loaded() -> None:
    """After loading the app, a gunicorn worker moves its objects out of the collector's
    reach, so that full collections do not stall requests (gunicorn.conf.py)."""
    import gc
    import runpy

    config = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert gc.get_freeze_count() == 0
    try:
        config["post_worker_init"](None)
        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()


# --- components --------------------------------------------------------------------------------
def test_demo_services_serve_and_stop_on_sigterm(tmp_path: Path) -> None:
    ports = {"auth": free_port(), "airtable": free_port(), "notification": free_port()}
    log = tmp_path / "demo.log"
    proc = spawn(
        "demo-services",
        *(part for kind, port in ports.items() for part in (f"--{kind}-port", str(port))),
        env={},
        log=log,
    )
    try:
        for port in ports.values():
            wait_http(f"http://127.0.0.1:{port}/", proc, log)
    finally:
        assert stop_process(proc, 15) == 0, log.read_text()


def test_beat_keeps_its_schedule_in_redis(service_env: dict[str, str], tmp_path: Path) -> None:
    """celery-redbeat: the sweep's entry is in Redis under this run's prefix, no file."""
    import redis

    log = tmp_path / "beat.log"
    proc = spawn("beat", "--loglevel", "INFO", env=service_env, log=log, cwd=tmp_path)
    try:
        deadline = time.time() + 20
        while "beat: Starting..." not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.time() < deadline, log.read_text()
            time.sleep(0.05)
    finally:
        stop_process(proc, 15)
    client = redis.Redis.from_url(service_env["REDIS_URL"], decode_responses=True)
    entries = client.zrange(f"{service_env['SAGA_KEY_PREFIX']}redbeat::schedule", 0, -1)
    client.close()
    assert f"{service_env['SAGA_KEY_PREFIX']}redbeat:saga-sweep" in entries, (
        entries,
        log.read_text(),
    )
    assert not list(tmp_path.glob("**/celerybeat-schedule*"))


def test_flower_requires_its_credentials_and_sees_the_tasks(
    service_env: dict[str, str], worker: Any, engine: Any, tmp_path: Path
) -> None:
    port, password = free_port(), uuid.uuid4().hex
    log = tmp_path / "flower.log"
    env = {**service_env, "FLOWER_BASIC_AUTH": f"ops:{password}", "FLOWER_ADDRESS": "127.0.0.1"}
    proc = spawn("flower", f"--port={port}", env=env, log=log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/healthcheck", proc, log)
        assert httpx.get(f"{base}/api/tasks").status_code == 401
        wrong = httpx.get(f"{base}/api/tasks", auth=("ops", "wrong"))
        assert wrong.status_code == 401
        # Task events are broadcast: Flower sees only those sent after its receiver has
        # subscribed, which /healthcheck does not wait for. Keep starting sagas until it does.
        started: list[str] = []
        deadline = time.time() + 20
        while True:
            started.append(
                engine.start(
                    {
                        "saga_type": "cli_flower",
                        "steps": [{"name": "s", "action": {"task": "builtin.noop", "args": {}}}],
                    }
                ).saga["saga_id"]
            )
            time.sleep(0.5)
            tasks = httpx.get(f"{base}/api/tasks", auth=("ops", password)).json()
            seen = " ".join(str(task.get("args")) for task in tasks.values())
            if any(saga_id in seen for saga_id in started):
                break
            assert time.time() < deadline, tasks
    finally:
        stop_process(proc, 15)
    text = log.read_text()
    assert password not in text
    assert base64.b64encode(f"ops:{password}".encode()).decode() not in text


# --- against the API ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def api_url(service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`saga-orchestrator api` on a free port, with this run's Redis and worker."""
    workdir = tmp_path_factory.mktemp("api")
    port = free_port()
    log = workdir / "api.log"
    # No PROMETHEUS_MULTIPROC_DIR: the command makes a temporary one (in TMPDIR), as in
    # `make run`, and gunicorn removes it at exit.
    env = {**service_env, "SAGA_API_KEYS": KEY, "TMPDIR": str(workdir), "WEB_CONCURRENCY": "2"}
    proc = spawn(
        "api", "--bind", f"127.0.0.1:{port}", env=env, log=log, drop=("PROMETHEUS_MULTIPROC_DIR",)
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health/", proc, log)
    except BaseException:
        stop_process(proc, 15)
        raise
    yield url
    assert stop_process(proc, 15) == 0, log.read_text()[-3000:]
    # The metrics directory the command created for this run is gone with it.
    assert not list(workdir.glob("saga-prometheus-*")), list(workdir.iterdir())
    # gunicorn's access log on stdout, in the project's JSON lines
    access = [
        json.loads(line) for line in log.read_text().splitlines() if "gunicorn.access" in line
    ]
    assert any(a["method"] == "GET" and a["path"] == "/health/" for a in access), access[:3]


def test_client_drives_a_saga_through_the_api(api_url: str, worker: Any, tmp_path: Path) -> None:
    correlation = f"cli-{uuid.uuid4().hex[:8]}"
    definition = tmp_path / "saga.json"
    definition.write_text(
        json.dumps(
            {
                "saga_type": "cli_test",
                "payload": {"n": 1},
                "steps": [
                    {
                        "name": "noop",
                        "action": {"task": "builtin.noop", "args": {"n": "{{payload.n}}"}},
                        "compensation": {"task": "builtin.noop", "args": {}},
                    }
                ],
            }
        )
    )
    common = ["--url", api_url, "--api-key", KEY]

    started = cli(
        "start", "--definition", str(definition), "--correlation-id", correlation, "--json", *common
    )
    assert started.returncode == 0, started.stderr
    saga_id = json.loads(started.stdout)["saga_id"]

    watched = cli(
        "status", saga_id, "--watch", "--json", "--interval", "0.05", "--timeout", "20", *common
    )
    assert watched.returncode == 0, watched.stderr
    final = json.loads(watched.stdout.splitlines()[-1])
    assert final["status"] == "COMPLETED"
    assert final["steps"][0]["output"] == {"n": 1}

    listed = cli("list", "--correlation-id", correlation, "--json", *common)
    assert listed.returncode == 0, listed.stderr
    assert [item["saga_id"] for item in json.loads(listed.stdout)["items"]] == [saga_id]

    table = cli("status", saga_id, *common)
    assert table.returncode == 0, table.stderr
    assert saga_id in table.stdout and "COMPLETED" in table.stdout and "noop" in table.stdout

    compensated = cli("compensate", saga_id, "--reason", "cli test", "--json", *common)
    assert compensated.returncode == 0, compensated.stderr
    assert json.loads(compensated.stdout)["status"] in ("COMPENSATING", "COMPENSATED")
    watched = cli("status", saga_id, "--watch", "--interval", "0.05", "--timeout", "20", *common)
    assert watched.returncode == 0, watched.stderr
    assert "COMPENSATED" in watched.stdout and "cli test" in watched.stdout

    again = cli("compensate", saga_id, *common)  # already compensated: 409, shown readably
    assert again.returncode == 1
    assert "409" in again.stderr and "Traceback" not in again.stderr


def test_client_shows_api_errors_readably(api_url: str) -> None:
    unknown = cli("status", "no-such-saga", "--url", api_url, "--api-key", KEY)
    assert unknown.returncode == 1
    assert f"GET {api_url}/saga/no-such-saga/status answered 404" in unknown.stderr

    no_key = cli("list", "--url", api_url, env={"SAGA_API_KEY": ""})
    assert no_key.returncode == 1
    assert "401" in no_key.stderr and "--api-key" in no_key.stderr

    invalid = cli("list", "--page-size", "501", "--url", api_url, "--api-key", KEY)
    assert invalid.returncode == 1
    assert "422" in invalid.stderr and "page_size" in invalid.stderr
