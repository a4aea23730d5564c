"""The repair commands of `saga-orchestrator` as users run them: the installed script, a
real subprocess, against the real API over HTTP.

The API runs in this process under werkzeug's HTTP server on 127.0.0.1, over an engine on
the real Redis whose dispatcher only records (tests/test_repair.py): the test builds each
state with store calls, as a worker would make them, and the CLI acts on it.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from werkzeug.serving import make_server

from app import create_app
from sagas.engine import SagaEngine
from tests.conftest import ROOT, free_port
from tests.test_cli import CLI
from tests.test_repair import compensation_failed, fail, make_engine, recorder, start

OPERATOR, READER = "op-secret", "read-secret"
KEYS = [f"oncall:operator:{OPERATOR}", f"viewer:reader:{READER}"]


@contextmanager
def serve(engine: SagaEngine) -> Iterator[str]:
    """The API over `engine` on a free port of 127.0.0.1; yields its URL."""
    app = create_app({"API_KEYS": KEYS, "TESTING": True}, engine=engine)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@dataclass
class Api:
    url: str
    engine: SagaEngine

    def run(
        self, *args: str, key: str = OPERATOR, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`saga-orchestrator ARGS --url URL --api-key KEY`."""
        return run(*args, "--url", self.url, "--api-key", key, stdin=stdin)


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SAGA_URL", "SAGA_API_KEY")}
    return subprocess.run(
        [str(CLI), *args],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=30,
        cwd=ROOT,
    )


@pytest.fixture()
def api(redis_url: str, prefix: str) -> Iterator[Api]:
    engine = make_engine(redis_url, prefix)
    with serve(engine) as url:
        yield Api(url, engine)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    return result.stdout


def refused(result: subprocess.CompletedProcess[str], code: int, words: str) -> str:
    """The API's refusal: exit code 1, its message on one line on stderr, nothing on stdout."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: POST ") or lines[0].startswith("Error: GET "), lines
    assert f"answered {code}" in lines[0] and words in lines[0], lines[0]
    return lines[0]


# --- usage: no API needed ----------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["resolve", "sid", "s1"],
        ["skip", "sid", "1"],
        ["retry", "sid", "s0"],
        ["cancel", "sid"],
        ["rerun", "sid"],
    ],
)
def test_actions_require_a_reason(args: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # never called
    missing = run(*args, "--url", url)
    assert missing.returncode == 2
    assert "Missing option '--reason'" in missing.stderr
    blank = run(*args, "--reason", "  ", "--url", url)
    assert blank.returncode == 2
    assert "say why" in blank.stderr and "cannot reach" not in blank.stderr


def test_rerun_payload_usage_errors(tmp_path: Any) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    both = run("rerun", "sid", "--reason", "x", "--payload", "{}", "--payload-file", "-")
    assert both.returncode == 2 and "--payload or --payload-file" in both.stderr
    bad = run("rerun", "sid", "--reason", "x", "--payload", "[1]", "--url", url)
    assert bad.returncode == 2 and "must be a JSON object" in bad.stderr
    broken = tmp_path / "p.json"
    broken.write_text("{nope")
    result = run("rerun", "sid", "--reason", "x", "--payload-file", str(broken), "--url", url)
    assert result.returncode == 2 and "not valid JSON" in result.stderr


# --- actions and history ----------------------------------------------------------------
def test_actions_lists_what_the_state_allows_with_step_numbers(api: Api) -> None:
    sid = compensation_failed(api.engine)
    table = ok(api.run("actions", sid, key=READER))
    assert f"Saga {sid} is COMPENSATION_FAILED" in table
    rows = {tuple(line.split()[:3]) for line in table.splitlines()}
    assert ("resolve", "2", "s1") in rows and ("skip", "1", "s0") in rows
    assert any(line.split()[:1] == ["rerun"] for line in table.splitlines())
    assert "cancel" not in table
    assert f"saga-orchestrator compensate {sid} --reason TEXT" in table  # the first, as example

    data = json.loads(ok(api.run("actions", sid, "--json", key=READER)))
    assert data["status"] == "COMPENSATION_FAILED"
    assert {"action": "resolve", "step": "s1", "step_number": 2} in [
        {k: a[k] for k in ("action", "step", "step_number")} for a in data["actions"]
    ]

    settled = start(api.engine)
    assert api.engine.store.step_begin(settled, 0, "t0").code == "run"
    api.engine.compensate(settled, "stop")  # fenced: s0's attempt is in flight
    assert "no repair action is allowed now" in ok(api.run("actions", settled, key=READER))
    refused(api.run("actions", "no-such-saga", key=READER), 404, "not found")


def test_history_shows_who_acted_and_why(api: Api) -> None:
    sid = compensation_failed(api.engine)
    ok(api.run("resolve", sid, "s1", "--reason", "refunded in the PSP console"))
    table = ok(api.run("history", sid, key=READER))
    header = table.splitlines()[0].split()
    assert header == ["time", "event", "saga", "status", "step", "actor", "message"]
    row = next(line for line in table.splitlines() if "compensation_resolved" in line)
    assert row.split()[2:6] == ["compensation_resolved", "COMPENSATING", "s1", "oncall"], row
    assert row.rstrip().endswith("refunded in the PSP console")
    assert "compensation_failed" in table and "undo refused" in table

    data = json.loads(ok(api.run("history", sid, "--json", key=READER)))
    entry = next(h for h in data["history"] if h["event"] == "compensation_resolved")
    assert entry["actor"] == "oncall" and entry["message"] == "refunded in the PSP console"
    refused(api.run("history", "no-such-saga", key=READER), 404, "not found")


# --- the actions, allowed and refused ----------------------------------------------------
def test_resolve_by_name_then_refused_once_settled(api: Api) -> None:
    sid = compensation_failed(api.engine)
    out = ok(api.run("resolve", sid, "s1", "--reason", "refunded by hand"))
    assert f"Step 2 (s1) of saga {sid}: compensation counted as done by hand." in out
    assert "The saga is COMPENSATING." in out and f"status {sid} --watch" in out
    assert recorder(api.engine).compensations == [[0]]  # the older undo goes on
    line = refused(api.run("resolve", sid, "s1", "--reason", "again"), 409, "cannot resolve")
    assert "the saga is COMPENSATING" in line


def test_skip_by_number_json_and_refusals(api: Api) -> None:
    sid = compensation_failed(api.engine)
    saga = json.loads(ok(api.run("skip", sid, "1", "--reason", "nothing upstream", "--json")))
    assert saga["saga_id"] == sid and saga["status"] == "COMPENSATION_FAILED"
    assert saga["steps"][0]["compensation"]["status"] == "SKIPPED"
    refused(api.run("skip", sid, "3", "--reason", "x"), 409, "its compensation is SKIPPED")
    refused(api.run("skip", sid, "nope", "--reason", "x"), 404, "has no step 'nope'")
    refused(api.run("skip", sid, "9", "--reason", "x"), 404, "has no step '9'")
    refused(api.run("skip", "no-such-saga", "1", "--reason", "x"), 404, "not found")
    long = refused(api.run("skip", sid, "2", "--reason", "x" * 1001), 422, "reason")
    assert "json.reason" not in long  # the message names the field; no second copy


def test_a_reader_key_is_refused(api: Api) -> None:
    sid = compensation_failed(api.engine)
    version = api.engine.get(sid)["version"]
    for args in (["resolve", sid, "s1"], ["compensate", sid], ["rerun", sid]):
        line = refused(api.run(*args, "--reason", "x", key=READER), 403, "needs 'operator'")
        assert "'viewer'" in line
    assert api.engine.get(sid)["version"] == version


def test_retry_makes_the_next_attempt_now(api: Api) -> None:
    sid = start(api.engine)
    assert api.engine.store.step_begin(sid, 0, "t0").code == "run"
    refused(api.run("retry", sid, "s0", "--reason", "x"), 409, "cannot retry step 's0'")
    assert api.engine.store.step_retry(sid, 0, "t0", 1, "503", False, 60_000).code == "ok"
    out = ok(api.run("retry", sid, "1", "--reason", "the service is back"))
    assert f"Step 1 (s0) of saga {sid}: next attempt sent now. The saga is RUNNING." in out
    assert recorder(api.engine).steps[-1] == [0, 1, 2]
    refused(api.run("retry", sid, "s1", "--reason", "x"), 409, "cannot retry step 's1'")


def test_cancel_a_pending_saga_only(redis_url: str, prefix: str) -> None:
    engine = make_engine(redis_url, prefix, max_running=1)
    running, waiting = start(engine), start(engine)
    with serve(engine) as url:
        api = Api(url, engine)
        refused(api.run("cancel", running, "--reason", "x"), 409, "only a PENDING saga")
        out = ok(api.run("cancel", waiting, "--reason", "the customer withdrew"))
    assert f"Saga {waiting} cancelled: the saga is COMPENSATED." in out
    assert "--watch" not in out  # final: nothing to watch
    assert engine.get(waiting)["status"] == "COMPENSATED"
    assert engine.get(running)["status"] == "RUNNING"


def test_rerun_prints_the_new_saga_and_its_link(api: Api, tmp_path: Any) -> None:
    sid = start(api.engine)
    refused(api.run("rerun", sid, "--reason", "x"), 409, "cannot rerun: the saga is RUNNING")
    fail(api.engine, sid, 0)
    out = ok(api.run("rerun", sid, "--reason", "typo", "--payload", '{"email": "b@x.io"}'))
    new = api.engine.get(sid)["reruns"][0]
    assert f"Saga {sid} rerun as saga {new} (rerun of {sid})." in out
    assert "rerun of" in out.split("\n", 1)[1]  # in the saga's view too
    assert api.engine.get(new)["payload"] == {"email": "b@x.io"}

    again = api.run(
        "rerun", sid, "--reason", "again", "--payload-file", "-", "--json", stdin='{"n": 2}'
    )
    second = json.loads(ok(again))
    assert second["rerun_of"] == sid and second["payload"] == {"n": 2}
    assert api.engine.get(sid)["reruns"] == [new, second["saga_id"]]
    entry = [h for h in api.engine.history(sid) if h["event"] == "rerun_started"][-1]
    assert entry["actor"] == "oncall" and entry["data"]["rerun"] == second["saga_id"]


def test_compensate_has_the_same_conventions(api: Api) -> None:
    sid = compensation_failed(api.engine)
    out = ok(api.run("compensate", sid, "--reason", "the PSP is back"))
    assert out.startswith("Compensation requested: the saga is COMPENSATING.")
    assert recorder(api.engine).compensations == [[1, 0]]
    refused(api.run("compensate", sid, "--reason", "again"), 409, "COMPENSATING")
    entry = [h for h in api.engine.history(sid) if h["event"] == "compensation_requested"][-1]
    assert (entry["actor"], entry["message"]) == ("oncall", "the PSP is back")
