"""Completion webhooks end to end: a real worker subprocess sends them through the real
broker to a real receiver on 127.0.0.1 (tests/webhook_receiver.py), which verifies each one
with the standardwebhooks library's verifier.

These tests run their own engine and workers, on key prefixes and queues of their own under
this run's prefix, with a service `hooks` (the receiver) and its signing secrets."""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app import create_app
from sagas.engine import SagaEngine
from sagas.errors import ConfigurationError, InvalidDefinition, WebhookNotDead, WebhookNotFound
from sagas.settings import Settings
from tests.conftest import Worker, wait_final, worker_command
from tests.webhook_receiver import WebhookReceiver


def secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


NEW, OLD, OTHER = secret(), secret(), secret()
OPERATOR, READER = "op-webhooks", "read-webhooks"
KEYS = [f"oncall:operator:{OPERATOR}", f"viewer:reader:{READER}"]


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    # It knows both secrets of the rotation, and one that signs nothing.
    r = WebhookReceiver([NEW, OLD, OTHER]).start()
    yield r
    r.stop()


def hooks_env(service_env: dict[str, str], receiver: WebhookReceiver, name: str) -> dict[str, str]:
    prefix = service_env["SAGA_KEY_PREFIX"]
    return {
        **service_env,
        "SAGA_KEY_PREFIX": f"{prefix}{name}:",
        # The test process's Celery app sends with the run's broker prefix: share it.
        "SAGA_BROKER_KEY_PREFIX": f"{prefix}kombu:",
        "SAGA_QUEUE": f"{prefix}{name}",
        "SAGA_SERVICES": json.dumps(
            {**json.loads(service_env["SAGA_SERVICES"]), "hooks": receiver.url}
        ),
        # Rotation: the new secret first, the old one still signing.
        "SAGA_WEBHOOK_SECRETS": json.dumps({"hooks": [NEW, OLD]}),
        "SAGA_WEBHOOK_TIMEOUT_SECONDS": "2",
        "SAGA_WEBHOOK_BACKOFF_SECONDS": "0.1",
        "SAGA_WEBHOOK_MAX_BACKOFF_SECONDS": "0.3",
        "SAGA_WEBHOOK_MAX_SECONDS": "2",
    }


def make_engine(env: dict[str, str]) -> SagaEngine:
    import wsgi  # noqa: F401  (the Celery app the dispatcher sends with)
    from tasks.runtime import build_engine

    return build_engine(Settings.from_env(env))


@pytest.fixture(scope="module")
def env(service_env: dict[str, str], receiver: WebhookReceiver) -> dict[str, str]:
    return hooks_env(service_env, receiver, "wh")


@pytest.fixture(scope="module")
def hooks_worker(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    w = Worker(env, tmp_path_factory.mktemp("whworker") / "worker.log", concurrency=2).start()
    yield w
    w.stop()


@pytest.fixture(scope="module")
def engine(env: dict[str, str], hooks_worker: Worker) -> SagaEngine:
    return make_engine(env)


def saga(path: str, *, fail: bool = False, webhook: Any = "default") -> dict[str, Any]:
    steps: list[dict[str, Any]] = [
        {
            "name": "reserve",
            "action": {"task": "builtin.noop", "args": {"n": 1}},
            "compensation": {"task": "builtin.noop", "args": {}},
        }
    ]
    if fail:
        steps.append(
            {"name": "charge", "action": {"task": "test.fail"}, "retry": {"max_attempts": 1}}
        )
    definition: dict[str, Any] = {"saga_type": "order", "correlation_id": "ord-7", "steps": steps}
    definition["webhook"] = {"service": "hooks", "path": path} if webhook == "default" else webhook
    return definition


def start(engine: SagaEngine, definition: dict[str, Any]) -> str:
    return str(engine.start(definition).saga["saga_id"])


def test_a_completed_saga_posts_its_signed_summary(
    engine: SagaEngine, receiver: WebhookReceiver
) -> None:
    saga_id = start(engine, saga("/ok/orders"))
    done = wait_final(engine, saga_id)
    assert done["status"] == "COMPLETED"
    assert done["webhook"] == {"service": "hooks", "path": "/ok/orders"}
    [got] = receiver.wait(saga_id)
    assert got.path == "/ok/orders"
    assert got.webhook_id == f"saga_{saga_id}_completed"
    assert got.headers["content-type"] == "application/json"
    # The library's verifier accepts it (and parses the body).
    payload = Webhook(NEW).verify(got.body, got.headers)
    assert payload["type"] == "saga.completed"
    data = payload["data"]
    assert data["saga_id"] == saga_id and data["status"] == "COMPLETED"
    assert data["saga_type"] == "order" and data["correlation_id"] == "ord-7"
    assert data["version"] == done["version"] and data["failure"] is None
    assert data["finished_at"] == done["finished_at"] == payload["timestamp"]
    assert [(s["name"], s["status"]) for s in data["steps"]] == [("reserve", "COMPLETED")]
    assert data["steps"][0]["compensation"]["status"] == "PENDING"
    assert "payload" not in data and "output" not in data["steps"][0]
    # Delivered: the outbox is empty again, and the counters say so.
    deadline = time.time() + 5
    while engine.webhooks.counts()["pending"] and time.time() < deadline:
        time.sleep(0.05)
    assert engine.webhooks.counts() == {"pending": 0, "dead_letters": 0}
    assert engine.stats()["webhooks|delivered"] >= 1


def test_rotation_both_secrets_verify_and_a_tampered_body_does_not(
    engine: SagaEngine, receiver: WebhookReceiver
) -> None:
    saga_id = start(engine, saga("/ok/rotation"))
    [got] = receiver.wait(saga_id)
    # Two signatures, one per secret: a receiver holding either one verifies.
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    assert got.verified_by == [NEW, OLD]
    assert got.errors == {OTHER: "No matching signature found"}
    for key in (NEW, OLD):
        Webhook(key).verify(got.body, got.headers)
    tampered = got.body.replace(b'"COMPLETED"', b'"COMPENSATED"', 1)
    assert tampered != got.body
    for key in (NEW, OLD):
        with pytest.raises(WebhookVerificationError, match="No matching signature"):
            Webhook(key).verify(tampered, got.headers)
    with pytest.raises(WebhookVerificationError):  # another id under the same signature
        Webhook(NEW).verify(got.body, {**got.headers, "webhook-id": "saga_x_completed"})
    stamp = str(int(got.headers["webhook-timestamp"]) + 1)
    with pytest.raises(WebhookVerificationError):  # another time under the same signature
        Webhook(NEW).verify(got.body, {**got.headers, "webhook-timestamp": stamp})


def test_a_compensated_saga_and_each_final_status_gets_its_own_webhook(
    engine: SagaEngine, receiver: WebhookReceiver
) -> None:
    saga_id = start(engine, saga("/ok/failing", fail=True))
    assert wait_final(engine, saga_id)["status"] == "COMPENSATED"
    [got] = receiver.wait(saga_id)
    assert got.webhook_id == f"saga_{saga_id}_compensated"
    data = Webhook(OLD).verify(got.body, got.headers)["data"]
    assert data["status"] == "COMPENSATED"
    assert data["failure"]["step"] == "charge" and data["failure"]["reason"] == "error"
    steps = {s["name"]: s for s in data["steps"]}
    assert steps["reserve"]["compensation"]["status"] == "COMPENSATED"
    assert steps["charge"]["status"] == "FAILED"

    # A COMPLETED saga compensated later: two deliveries, each with its own id.
    saga_id = start(engine, saga("/ok/twice"))
    wait_final(engine, saga_id)
    receiver.wait(saga_id)
    engine.compensate(saga_id, "the customer cancelled")
    assert wait_final(engine, saga_id, statuses={"COMPENSATED"})["status"] == "COMPENSATED"
    first, second = receiver.wait(saga_id, 2)
    assert first.webhook_id == f"saga_{saga_id}_completed"
    assert second.webhook_id == f"saga_{saga_id}_compensated"
    one = json.loads(first.body)["data"]
    two = json.loads(second.body)["data"]
    assert (one["status"], two["status"]) == ("COMPLETED", "COMPENSATED")
    assert two["version"] > one["version"]  # receivers order deliveries by version
    assert two["failure"]["reason"] == "manual"


def test_no_webhook_when_the_definition_names_none(
    engine: SagaEngine, receiver: WebhookReceiver
) -> None:
    saga_id = start(engine, saga("/ok/none", webhook=None))
    assert wait_final(engine, saga_id)["webhook"] is None
    time.sleep(0.5)
    assert receiver.of(saga_id) == []


def test_503s_are_retried_with_the_same_id_and_body(
    engine: SagaEngine, receiver: WebhookReceiver
) -> None:
    saga_id = start(engine, saga("/fail/2/orders"))
    got = receiver.wait(saga_id)
    assert [r.status for r in got] == [503, 503, 200]
    assert {r.webhook_id for r in got} == {f"saga_{saga_id}_completed"}
    assert len({r.body for r in got}) == 1  # byte for byte: receivers de-duplicate by id
    assert all(r.verified_by == [NEW, OLD] for r in got)
    gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
    assert all(gap >= 0.05 for gap in gaps), gaps  # backoff: 0.1 s doubling, equal jitter


def test_a_receivers_retry_after_is_honoured(engine: SagaEngine, receiver: WebhookReceiver) -> None:
    saga_id = start(engine, saga("/busy/1/orders"))
    first, second = receiver.wait(saga_id)
    assert (first.status, second.status) == (429, 200)
    # Retry-After: 1, capped by SAGA_WEBHOOK_MAX_BACKOFF_SECONDS (0.3 here); the backoff
    # alone would wait 0.05-0.1 s.
    assert second.at - first.at >= 0.29


def test_dead_letter_listed_then_retried_from_the_api(
    engine: SagaEngine, receiver: WebhookReceiver
) -> None:
    receiver.down.set()
    try:
        saga_id = start(engine, saga("/down/orders"))
        webhook_id = f"saga_{saga_id}_completed"
        http = create_app({"API_KEYS": KEYS, "TESTING": True}, engine=engine).test_client()
        deadline = time.time() + 15
        while True:
            items = http.get("/webhooks/dead-letters", headers={"X-API-Key": READER}).get_json()
            dead = [i for i in items["items"] if i["id"] == webhook_id]
            if dead:
                break
            assert time.time() < deadline, receiver.of(saga_id)
            time.sleep(0.1)
        [letter] = dead
        attempts = len(receiver.of(saga_id))
        assert letter["attempts"] == attempts >= 2
        assert letter["saga_id"] == saga_id and letter["status"] == "COMPLETED"
        assert (letter["service"], letter["path"]) == ("hooks", "/down/orders")
        assert letter["last_error"] == "HTTP 503" and letter["last_status_code"] == 503
        assert NEW not in json.dumps(items) and OLD not in json.dumps(items)
        assert engine.stats()["webhooks|dead"] >= 1
        metrics = http.get("/metrics/prometheus", headers={"X-API-Key": READER}).text
        assert "saga_webhooks_dead_letters" in metrics
        assert 'saga_webhooks_total{outcome="dead"}' in metrics

        url = f"/webhooks/dead-letters/{webhook_id}/retry"
        assert http.post(url, headers={"X-API-Key": READER}).status_code == 403
        missing = http.post(
            "/webhooks/dead-letters/saga_nope_completed/retry", headers={"X-API-Key": OPERATOR}
        )
        assert missing.status_code == 404 and "not found" in missing.get_json()["message"]
    finally:
        receiver.down.clear()
    answer = http.post(url, headers={"X-API-Key": OPERATOR})
    assert answer.status_code == 202, answer.get_json()
    assert answer.get_json() == {"id": webhook_id, "status": "pending"}
    got = receiver.wait(saga_id)
    assert got[-1].status == 200 and got[-1].webhook_id == webhook_id
    assert len({r.body for r in got}) == 1
    assert Webhook(NEW).verify(got[-1].body, got[-1].headers)["data"]["saga_id"] == saga_id
    items = http.get("/webhooks/dead-letters", headers={"X-API-Key": READER}).get_json()
    assert webhook_id not in [i["id"] for i in items["items"]]
    with pytest.raises(WebhookNotFound):  # delivered: gone from the outbox
        engine.webhooks.retry(webhook_id)


def test_a_send_lost_after_the_transition_is_sent_by_the_sweep(
    engine: SagaEngine, receiver: WebhookReceiver
) -> None:
    """The process dies between the Lua transition (the outbox entry is written) and the
    enqueue of the send: here the enqueue is dropped. The sweep sends it once it is due.
    (The transition runs in this process: compensating a COMPLETED saga with nothing to undo
    makes it COMPENSATED at once.)"""
    definition = saga("/ok/lost")
    del definition["steps"][0]["compensation"]
    saga_id = start(engine, definition)
    wait_final(engine, saga_id)
    receiver.wait(saga_id)
    dispatcher = engine.dispatcher
    lost: list[str] = []

    class Dropping:
        def __getattr__(self, name: str) -> Any:
            return getattr(dispatcher, name)

        def send_webhook(self, webhook_id: str, countdown: float, time_limit: float) -> None:
            lost.append(webhook_id)

    engine.dispatcher = Dropping()  # type: ignore[assignment]
    try:
        assert engine.compensate(saga_id, "undo")["status"] == "COMPENSATED"
    finally:
        engine.dispatcher = dispatcher
    webhook_id = f"saga_{saga_id}_compensated"
    assert lost == [webhook_id]
    assert engine.webhooks.counts()["pending"] >= 1
    time.sleep(0.5)
    assert len(receiver.of(saga_id)) == 1  # the COMPLETED one only
    # Due one claim lease (2 s timeout + 2 s grace) after the transition.
    deadline = time.time() + 15
    redriven = 0
    while len(receiver.of(saga_id)) < 2:
        redriven += engine.sweep().webhooks_redriven
        assert time.time() < deadline
        time.sleep(0.2)
    assert redriven == 1
    got = receiver.wait(saga_id, 2)[1]
    assert got.webhook_id == webhook_id and got.verified_by == [NEW, OLD]


class SoloWorker(Worker):
    """One process: a SIGKILL ends the send in flight with it."""

    def _spawn(self, log: Any) -> Any:
        import subprocess

        argv = worker_command(self.env["SAGA_QUEUE"], pool="solo")
        argv += ["-n", f"test-{uuid.uuid4().hex[:6]}@%h"]
        return subprocess.Popen(
            argv, cwd=self.env["PYTHONPATH"], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )


def test_redelivered_after_the_worker_is_killed_mid_send(
    service_env: dict[str, str], receiver: WebhookReceiver, tmp_path: Path
) -> None:
    env = hooks_env(service_env, receiver, "whkill")
    log = tmp_path / "worker.log"
    first = SoloWorker(env, log).start()
    engine = make_engine(env)
    receiver.release.clear()
    receiver.holding.clear()
    try:
        saga_id = start(engine, saga("/hold/orders"))
        assert receiver.holding.wait(20), log.read_text()[-2000:]
        assert first.proc is not None
        first.proc.send_signal(signal.SIGKILL)  # mid-send: the receiver holds the request
        first.proc.wait(10)
    finally:
        receiver.release.set()
        first.stop()
    webhook_id = f"saga_{saga_id}_completed"
    assert engine.webhooks.counts()["pending"] == 1  # nothing recorded: still in the outbox
    second = SoloWorker(env, log).start()
    try:
        deadline = time.time() + 20
        while len(receiver.of(saga_id)) < 2:
            engine.sweep()  # as beat would: the claim ends, the entry is sent again
            assert time.time() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        got = receiver.wait(saga_id, 2)
    finally:
        second.stop()
    assert [r.webhook_id for r in got] == [webhook_id, webhook_id]
    assert got[0].body == got[1].body
    assert all(r.verified_by == [NEW, OLD] for r in got)
    deadline = time.time() + 5
    while engine.webhooks.counts()["pending"] and time.time() < deadline:
        time.sleep(0.05)
    assert engine.webhooks.counts()["pending"] == 0


# --- validation and configuration (no worker) ---------------------------------------------
def settings_with(**env: str) -> Settings:
    base = {
        "SAGA_SERVICES": json.dumps({"hooks": "http://127.0.0.1:9", "plain": "http://127.0.0.1:9"}),
        "SAGA_WEBHOOK_SECRETS": json.dumps({"hooks": [NEW]}),
    }
    return Settings.from_env({**base, **env})


@pytest.mark.parametrize(
    ("webhook", "field", "words"),
    [
        ("http://evil.example/x", "webhook", "JSON object"),
        ({"url": "http://evil.example/x"}, "webhook.url", "no URL"),
        ({"path": "/x"}, "webhook.service", "registered service"),
        ({"service": "nope", "path": "/x"}, "webhook.service", "no registered service"),
        ({"service": "plain", "path": "/x"}, "webhook.service", "no signing secret"),
        ({"service": "hooks"}, "webhook.path", "starting with '/'"),
        ({"service": "hooks", "path": "//evil.example/x"}, "webhook.path", "single '/'"),
        ({"service": "hooks", "path": "/a/../admin"}, "webhook.path", "dot segments"),
        ({"service": "hooks", "path": "/x?to=http://evil"}, "webhook.path", "no query"),
        ({"service": "hooks", "path": "/{{payload.x}}"}, "webhook.path", "no placeholders"),
    ],
)
def test_a_bad_webhook_is_refused_naming_the_field(webhook: Any, field: str, words: str) -> None:
    from sagas.definition import parse_definition

    definition = {"saga_type": "t", "steps": [{"name": "a", "action": {"task": "builtin.noop"}}]}
    with pytest.raises(InvalidDefinition) as caught:
        parse_definition({**definition, "webhook": webhook}, settings_with())
    assert caught.value.field == field and words in caught.value.message


def test_over_http_a_bad_webhook_is_a_422_and_writes_nothing(env: dict[str, str]) -> None:
    engine = make_engine(env)
    http = create_app({"API_KEYS": [f"root:admin:{OPERATOR}"], "TESTING": True}, engine=engine)
    before = engine.counts()
    answer = http.test_client().post(
        "/saga/start",
        headers={"X-API-Key": OPERATOR},
        json={**saga("/x"), "webhook": {"service": "nope", "path": "/x"}},
    )
    assert answer.status_code == 422
    assert "webhook.service" in answer.get_json()["errors"]["json"]
    answer = http.test_client().post(
        "/saga/start",
        headers={"X-API-Key": OPERATOR},
        json={**saga("/x"), "webhook": {"service": "hooks", "url": "http://evil"}},
    )
    assert answer.status_code == 422 and "url" in json.dumps(answer.get_json())
    assert engine.counts() == before


def test_the_deployment_default_applies_and_a_bad_one_stops_the_engine(
    env: dict[str, str],
) -> None:
    from sagas.definition import parse_definition

    settings = settings_with(SAGA_WEBHOOK=json.dumps({"service": "hooks", "path": "/all"}))
    definition = {"saga_type": "t", "steps": [{"name": "a", "action": {"task": "builtin.noop"}}]}
    parsed = parse_definition(definition, settings)
    assert parsed.webhook is not None and parsed.webhook.to_json() == {
        "service": "hooks",
        "path": "/all",
    }
    assert parse_definition({**definition, "webhook": None}, settings).webhook is None
    with pytest.raises(ConfigurationError, match=r"SAGA_WEBHOOK\.service"):
        make_engine({**env, "SAGA_WEBHOOK": json.dumps({"service": "nope", "path": "/x"})})


def test_secrets_are_checked_and_never_shown() -> None:
    settings = settings_with()
    assert NEW not in repr(settings) and NEW not in str(settings)
    for raw in (
        {"hooks": ["not-a-secret"]},
        {"hooks": ["whsec_" + base64.b64encode(b"short").decode()]},
        {"hooks": "whsec_!!!!"},
    ):
        with pytest.raises(ConfigurationError) as caught:
            settings_with(SAGA_WEBHOOK_SECRETS=json.dumps(raw))
        assert "secret 1 of service 'hooks'" in str(caught.value)
        assert "not-a-secret" not in str(caught.value) and "!!!!" not in str(caught.value)
    with pytest.raises(ConfigurationError, match="1 to 4 secrets"):
        settings_with(SAGA_WEBHOOK_SECRETS=json.dumps({"hooks": []}))
    with pytest.raises(ConfigurationError) as caught:
        settings_with(SAGA_WEBHOOK_SECRETS='{"hooks": ["whsec_abc"')
    assert "whsec_abc" not in str(caught.value)


def test_retrying_a_pending_webhook_is_a_conflict(engine: SagaEngine) -> None:
    saga_id = start(engine, saga("/ok/conflict"))
    wait_final(engine, saga_id)
    # Written by hand in the outbox's shape: a pending entry is not a dead letter.
    key = engine.store.keys.webhook(f"conflict-{saga_id}")
    engine.store.redis.hset(key, mapping={"id": f"conflict-{saga_id}", "state": "pending"})
    try:
        with pytest.raises(WebhookNotDead):
            engine.webhooks.retry(f"conflict-{saga_id}")
    finally:
        engine.store.redis.delete(key)


def test_compensation_failed_then_repaired_gets_two_webhooks(
    engine: SagaEngine, receiver: WebhookReceiver
) -> None:
    definition = saga("/ok/repaired", fail=True)
    definition["steps"][0]["compensation"] = {"task": "test.fail", "args": {"message": "locked"}}
    saga_id = start(engine, definition)
    assert wait_final(engine, saga_id)["status"] == "COMPENSATION_FAILED"
    [failed] = receiver.wait(saga_id)
    assert failed.webhook_id == f"saga_{saga_id}_compensation_failed"
    data = Webhook(NEW).verify(failed.body, failed.headers)["data"]
    assert data["compensation_failure"]["step"] == "reserve"
    assert data["steps"][0]["compensation"]["error"] == "locked"
    assert data["finished_at"] is None  # not finished: a person has to act
    engine.repairs.resolve(saga_id, "reserve", "undone by hand", "oncall")
    assert wait_final(engine, saga_id)["status"] == "COMPENSATED"
    _, repaired = receiver.wait(saga_id, 2)
    assert repaired.webhook_id == f"saga_{saga_id}_compensated"
    assert json.loads(repaired.body)["data"]["compensation_failure"] is None


def test_dead_letters_past_retention_are_deleted(engine: SagaEngine) -> None:
    keys = engine.store.keys
    old, new = f"expire-old-{uuid.uuid4().hex}", f"expire-new-{uuid.uuid4().hex}"
    now = engine.store.now_ms()
    for webhook_id, at in ((old, now - 10_000), (new, now)):
        engine.store.redis.hset(
            keys.webhook(webhook_id), mapping={"id": webhook_id, "state": "dead"}
        )
        engine.store.redis.zadd(keys.webhooks_dead, {webhook_id: at})
    assert engine.webhooks.expire(now - 5_000) == 1
    assert not engine.store.redis.exists(keys.webhook(old))
    assert engine.store.redis.zscore(keys.webhooks_dead, new) is not None
    engine.store.redis.delete(keys.webhook(new))
    engine.store.redis.zrem(keys.webhooks_dead, new)


def test_the_cli_lists_a_dead_letter_and_sends_it_again(
    engine: SagaEngine, receiver: WebhookReceiver
) -> None:
    from tests.test_cli_repair import OPERATOR as OP_KEY
    from tests.test_cli_repair import READER as READ_KEY
    from tests.test_cli_repair import run, serve

    receiver.down.set()
    try:
        saga_id = start(engine, saga("/down/cli"))
        webhook_id = f"saga_{saga_id}_completed"
        deadline = time.time() + 15
        while webhook_id not in [d["id"] for d in engine.webhooks.dead_letters(500)]:
            assert time.time() < deadline, receiver.of(saga_id)
            time.sleep(0.1)
    finally:
        receiver.down.clear()
    with serve(engine) as url:
        listed = run("webhooks", "dead-letters", "--url", url, "--api-key", READ_KEY)
        assert listed.returncode == 0, listed.stderr
        assert webhook_id in listed.stdout and "HTTP 503" in listed.stdout
        as_json = run("webhooks", "dead-letters", "--json", "--url", url, "--api-key", READ_KEY)
        assert webhook_id in [i["id"] for i in json.loads(as_json.stdout)["items"]]
        refused = run("webhooks", "retry", webhook_id, "--url", url, "--api-key", READ_KEY)
        assert refused.returncode == 1 and "operator" in refused.stderr, refused.stderr
        sent = run("webhooks", "retry", webhook_id, "--url", url, "--api-key", OP_KEY)
        assert sent.returncode == 0, sent.stderr
        assert f"Webhook {webhook_id} is being sent again." in sent.stdout
        again = run("webhooks", "retry", webhook_id, "--url", url, "--api-key", OP_KEY)
    assert again.returncode == 1  # pending (409) or delivered already (404)
    got = receiver.wait(saga_id)
    assert got[-1].status == 200 and got[-1].webhook_id == webhook_id


def test_a_workflow_names_its_webhook_and_a_definition_overrides_it() -> None:
    """A workflow file's `webhook` becomes its sagas' (checked at registration like the
    engine checks it); no field: the deployment's SAGA_WEBHOOK; `null`: none."""
    from sagas.definition import parse_definition
    from sagas.errors import ValidationFailed
    from sagas.templates import builtin_workflows
    from sagas.workflow import build_definition, check_workflow, parse_workflow

    name = "user_registration"
    (builtin,) = [w for w in builtin_workflows() if w.name == name]
    webhook = {"service": "hooks", "path": "/users/registered"}
    document = {**builtin.content(), "webhook": webhook}
    workflow = parse_workflow(document)
    assert workflow.content()["webhook"] == webhook  # versioned with the rest
    payload = {"email": "ada@example.com", "name": "Ada"}
    built = build_definition(workflow, payload)
    assert built["webhook"] == webhook
    services = {"auth": "http://127.0.0.1:9", "notification": "http://127.0.0.1:9"}
    settings = settings_with(
        SAGA_SERVICES=json.dumps({**services, "hooks": "http://127.0.0.1:9"}),
        SAGA_WEBHOOK=json.dumps({"service": "hooks", "path": "/default"}),
    )
    check_workflow(workflow, settings)
    target = parse_definition(built, settings).webhook
    assert target is not None and target.to_json() == webhook
    assert parse_definition({**built, "webhook": None}, settings).webhook is None
    default = parse_definition(build_definition(builtin, payload), settings).webhook
    assert default is not None and default.path == "/default"  # no field: SAGA_WEBHOOK
    silent = parse_workflow({**builtin.content(), "webhook": None})
    assert parse_definition(build_definition(silent, payload), settings).webhook is None
    unknown = parse_workflow({**builtin.content(), "webhook": {"service": "nope", "path": "/x"}})
    with pytest.raises(ValidationFailed) as refused:
        check_workflow(unknown, settings)
    assert refused.value.field == "webhook.service"
