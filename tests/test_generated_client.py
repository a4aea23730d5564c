"""A client generated from the live /openapi.json by openapi-python-client (used as is, as a
user would) runs workflows to the end against a real worker, with typed answers: the saga's
status an enum, `failure` a `Failure` model (`s.failure.reason`), errors an `Error`."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from werkzeug.serving import make_server

from app import create_app

KEY = "generated-client-key"
PACKAGE = "saga_api_client"
FINAL = {"COMPLETED", "COMPENSATED", "COMPENSATION_FAILED"}


@pytest.fixture(scope="module")
def api_url(engine: Any, worker: Any) -> Iterator[str]:
    app = create_app({"API_KEYS": [KEY], "TESTING": True}, engine=engine)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def client_package(api_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The generated package, imported from a temporary directory."""
    where = tmp_path_factory.mktemp("generated")
    spec = where / "openapi.json"
    spec.write_bytes(httpx.get(f"{api_url}/openapi.json", timeout=10).content)
    bin_dir = Path(sys.executable).parent  # the generator and ruff (it formats the code)
    done = subprocess.run(
        [
            str(bin_dir / "openapi-python-client"),
            "generate",
            "--path",
            str(spec),
            "--meta",
            "none",
            "--fail-on-warning",
            "--output-path",
            str(where / PACKAGE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Warning" not in output, output  # nothing skipped: every schema was understood
    sys.path.insert(0, str(where))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(where))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def wait(get_saga: Any, client: Any, saga_id: str, timeout: float = 30) -> Any:
    deadline = time.time() + timeout
    while True:
        saga = get_saga.sync(saga_id=saga_id, client=client)
        if saga.status.value in FINAL or time.time() > deadline:
            return saga
        time.sleep(0.05)


def test_a_generated_client_runs_workflows_with_typed_answers(
    client_package: Any, api_url: str
) -> None:
    pkg = client_package
    get_saga = importlib.import_module(f"{PACKAGE}.api.saga.get_saga")
    start_workflow = importlib.import_module(f"{PACKAGE}.api.workflows.start_workflow")
    get_service_info = importlib.import_module(f"{PACKAGE}.api.health.get_service_info")
    models = importlib.import_module(f"{PACKAGE}.models")
    client = pkg.AuthenticatedClient(
        base_url=api_url, token=KEY, prefix="", auth_header_name="X-API-Key"
    )

    # No key needed for the service's address: a plain Client works.
    info = get_service_info.sync(client=pkg.Client(base_url=api_url))
    assert isinstance(info, models.Info) and info.name == "saga-orchestrator"

    email = f"gen-{uuid.uuid4().hex[:8]}@example.com"
    body = models.WorkflowStart(
        payload=models.WorkflowStartPayload.from_dict({"email": email, "name": "Gen Client"})
    )
    started = start_workflow.sync("user_registration", client=client, body=body)
    assert isinstance(started, models.Saga), started
    done = wait(get_saga, client, started.saga_id)
    assert done.status == models.SagaStatus.COMPLETED
    assert done.failure is None and done.compensation_failure is None
    assert [type(s) for s in done.steps] == [models.Step] * 3
    assert done.steps[0].status == models.StepStatus.COMPLETED
    assert isinstance(done.steps[0].compensation, models.Compensation)
    assert done.steps[2].compensation is None  # the email has nothing to undo
    assert done.finished_at is not None and done.finished_at.tzinfo is not None

    failing = models.WorkflowStart(
        payload=models.WorkflowStartPayload.from_dict(
            {
                "owner_id": "usr_demo",
                "name": "Doomed",
                "airtable_base_id": "appDemoBase",
                "fail_at": "grant_permissions",
            }
        )
    )
    started = start_workflow.sync("workspace_creation", client=client, body=failing)
    undone = wait(get_saga, client, started.saga_id)
    assert undone.status == models.SagaStatus.COMPENSATED
    assert isinstance(undone.failure, models.Failure)
    assert undone.failure.reason == models.FailureReason.ERROR
    assert undone.failure.step == "grant_permissions"
    assert "demo failure" in undone.failure.message

    missing = get_saga.sync_detailed(saga_id="no-such-saga", client=client)
    assert missing.status_code == 404
    assert isinstance(missing.parsed, models.Error) and missing.parsed.code == 404
