"""The repair actions over HTTP: roles, allowed and refused states, clear errors, the audit.

The app runs in-process over an engine on the real Redis whose dispatcher only records (the
executions are played by the test with store calls, as in tests/test_repair.py)."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.auth import parse_keys
from sagas.engine import SagaEngine
from sagas.errors import ConfigurationError
from tests.test_repair import compensation_failed, fail, make_engine, start

ADMIN, OPERATOR, READER, LEGACY = "adm-secret", "op-secret", "read-secret", "plain-key"
KEYS = [f"root:admin:{ADMIN}", f"oncall:operator:{OPERATOR}", f"viewer:reader:{READER}", LEGACY]


@pytest.fixture()
def engine(redis_url: str, prefix: str) -> SagaEngine:
    return make_engine(redis_url, prefix)


@pytest.fixture()
def app(engine: SagaEngine) -> Flask:
    return create_app({"API_KEYS": KEYS, "TESTING": True}, engine=engine)


@pytest.fixture()
def http(app: Flask) -> FlaskClient:
    return app.test_client()


def post(http: FlaskClient, path: str, key: str, **body: Any) -> Any:
    return http.post(path, json=body, headers={"X-API-Key": key})


def test_key_entries_parse_names_roles_and_bare_keys() -> None:
    keys = parse_keys(KEYS)
    assert [(k.principal.name, k.principal.role) for k in keys[:3]] == [
        ("root", "admin"),
        ("oncall", "operator"),
        ("viewer", "reader"),
    ]
    legacy = keys[3].principal
    assert legacy.role == "admin" and legacy.name.startswith("key-") and LEGACY not in legacy.name
    assert "secret" not in repr(keys)
    with pytest.raises(ConfigurationError, match="role 'boss'"):
        parse_keys(["x:boss:k"])
    with pytest.raises(ConfigurationError, match="name 'a' twice"):
        parse_keys(["a:admin:k1", "a:reader:k2"])
    with pytest.raises(ConfigurationError, match="entry 1") as refused:
        parse_keys(["bad name:admin:k"])
    assert "k" not in str(refused.value).split(":")[-1]  # the secret is never echoed


def test_roles_reader_reads_operator_repairs_admin_does_all(
    http: FlaskClient, engine: SagaEngine
) -> None:
    sid = compensation_failed(engine)
    for key in (READER, OPERATOR, ADMIN, LEGACY):
        assert http.get(f"/saga/{sid}/status", headers={"X-API-Key": key}).status_code == 200
    refused = post(http, f"/saga/{sid}/steps/s1/resolve", READER, reason="x")
    assert refused.status_code == 403
    assert "viewer" in refused.get_json()["message"] and "operator" in refused.get_json()["message"]
    assert post(http, f"/saga/{sid}/compensate", READER, reason="x").status_code == 403
    # An operator repairs, but neither starts nor deletes sagas.
    definition = {"saga_type": "t", "steps": [{"name": "a", "action": {"task": "builtin.noop"}}]}
    assert (
        http.post("/saga/start", json=definition, headers={"X-API-Key": OPERATOR}).status_code
        == 403
    )
    assert http.delete(f"/saga/{sid}", headers={"X-API-Key": OPERATOR}).status_code == 403
    answer = post(http, f"/saga/{sid}/steps/s1/resolve", OPERATOR, reason="refunded by hand")
    assert answer.status_code == 202, answer.get_json()
    assert answer.get_json()["status"] == "COMPENSATING"
    history = http.get(f"/saga/{sid}/history", headers={"X-API-Key": READER}).get_json()
    entry = next(h for h in history["history"] if h["event"] == "compensation_resolved")
    assert entry["actor"] == "oncall" and entry["message"] == "refunded by hand"


def test_actions_endpoint_lists_what_the_state_allows(
    http: FlaskClient, engine: SagaEngine
) -> None:
    sid = compensation_failed(engine)
    body = http.get(f"/saga/{sid}/actions", headers={"X-API-Key": READER}).get_json()
    assert body["status"] == "COMPENSATION_FAILED"
    listed = {(a["action"], a["step"], a["step_number"]) for a in body["actions"]}
    assert ("resolve", "s1", 2) in listed and ("skip", "s0", 1) in listed
    assert ("compensate", None, None) in listed and ("rerun", None, None) in listed
    assert not any(a == "cancel" for a, _, _ in listed)


@pytest.mark.parametrize(
    "path, body, code, words",
    [
        ("/saga/{sid}/steps/s1/resolve", {}, 422, "reason"),
        ("/saga/{sid}/steps/s1/resolve", {"reason": ""}, 422, "reason"),
        ("/saga/{sid}/steps/s1/resolve", {"reason": "x" * 1001}, 422, "reason"),
        ("/saga/{sid}/steps/s1/resolve", {"reason": "x", "extra": 1}, 422, "extra"),
        ("/saga/{sid}/steps/nope/resolve", {"reason": "x"}, 404, "no step 'nope'"),
        ("/saga/{sid}/steps/9/skip", {"reason": "x"}, 404, "no step '9'"),
        ("/saga/missing/steps/s1/skip", {"reason": "x"}, 404, "not found"),
        ("/saga/{sid}/steps/s2/skip", {"reason": "x"}, 409, "SKIPPED"),
        ("/saga/{sid}/steps/s1/retry", {"reason": "x"}, 409, "not running"),
        ("/saga/{sid}/cancel", {"reason": "x"}, 409, "only a PENDING saga"),
        ("/saga/{sid}/rerun", {"reason": "x", "payload": []}, 422, "payload"),
    ],
)
def test_refusals_are_clear_json_and_change_nothing(
    http: FlaskClient, engine: SagaEngine, path: str, body: dict[str, Any], code: int, words: str
) -> None:
    sid = compensation_failed(engine)
    version = engine.get(sid)["version"]
    answer = post(http, path.format(sid=sid), OPERATOR, **body)
    assert answer.status_code == code, answer.get_json()
    assert words in str(answer.get_json()), answer.get_json()
    assert engine.get(sid)["version"] == version


def test_rerun_over_http_links_both_sagas(http: FlaskClient, engine: SagaEngine) -> None:
    sid = start(engine)
    fail(engine, sid, 0)
    answer = post(http, f"/saga/{sid}/rerun", OPERATOR, reason="fixed", payload={"email": "b@x.io"})
    assert answer.status_code == 202, answer.get_json()
    new = answer.get_json()
    assert new["rerun_of"] == sid and new["payload"] == {"email": "b@x.io"}
    old = http.get(f"/saga/{sid}/status", headers={"X-API-Key": READER}).get_json()
    assert old["reruns"] == [new["saga_id"]]
    again = post(http, f"/saga/{new['saga_id']}/rerun", OPERATOR, reason="x")
    assert again.status_code == 409 and "RUNNING" in again.get_json()["message"]


def test_compensate_keeps_its_contract_and_records_the_actor(
    http: FlaskClient, engine: SagaEngine
) -> None:
    sid = start(engine)
    answer = http.post(f"/saga/{sid}/compensate", headers={"X-API-Key": LEGACY})  # no body
    assert answer.status_code == 202
    entry = next(h for h in engine.history(sid) if h["event"] == "compensation_requested")
    assert entry["message"] == "manual request" and entry["actor"].startswith("key-")
