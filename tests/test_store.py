"""The Lua transitions against real Redis, driven directly (no worker): fencing and races."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis

from sagas.definition import parse_definition
from sagas.settings import Settings
from sagas.store import RedisStore, dumps

SETTINGS = Settings(services={"svc": "http://127.0.0.1:9"})


@pytest.fixture()
def store(redis_url: str, prefix: str) -> RedisStore:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    return RedisStore(client, f"{prefix}store:")


def new_saga(store: RedisStore, steps: int = 2) -> str:
    definition = parse_definition(
        {
            "saga_type": "t",
            "steps": [
                {
                    "name": f"s{i}",
                    "action": {"service": "svc", "path": f"/do/{i}"},
                    "compensation": {"service": "svc", "path": f"/undo/{i}"},
                }
                for i in range(steps)
            ],
        },
        SETTINGS,
    )
    saga_id = str(uuid.uuid4())
    assert store.create(saga_id, definition, saga_id).code == "created"
    return saga_id


def at_once(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls in threads released together; their answers in order."""
    barrier = threading.Barrier(len(calls))
    answers: list[Any] = [None] * len(calls)

    def go(k: int) -> None:
        barrier.wait()
        answers[k] = calls[k]()

    threads = [threading.Thread(target=go, args=(k,)) for k in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def test_create_is_idempotent(store: RedisStore) -> None:
    """Creating the same saga id twice writes once and answers `exists`."""
    saga_id = new_saga(store)
    definition = parse_definition(
        {"saga_type": "t", "steps": [{"name": "x", "action": {"service": "svc", "path": "/x"}}]},
        SETTINGS,
    )
    assert store.create(saga_id, definition, saga_id).code == "exists"
    assert [s["name"] for s in store.get(saga_id)["steps"]] == ["s0", "s1"]


def test_step_result_delivered_twice_is_applied_once(store: RedisStore) -> None:
    """Eight concurrent deliveries of a step's result: exactly one is applied."""
    for _ in range(50):
        saga_id = new_saga(store)
        assert store.step_begin(saga_id, 0, "lease").code == "run"
        answers = at_once(
            *[
                (lambda k=k, s=saga_id: store.step_complete(s, 0, "lease", 1, dumps({"k": k})))
                for k in range(8)
            ]
        )
        codes = sorted(a.code for a in answers)
        assert codes == ["duplicate"] * 7 + ["next"]
        winner = next(k for k, a in enumerate(answers) if a.code == "next")
        assert store.get(saga_id)["steps"][0]["output"] == {"k": winner}


def test_stale_and_foreign_executions_are_refused(store: RedisStore) -> None:
    """A second execution is busy; an old attempt's late result is refused."""
    saga_id = new_saga(store)
    assert store.step_begin(saga_id, 0, "L1").code == "run"
    assert store.step_begin(saga_id, 0, "L2").code == "busy"
    assert store.step_begin(saga_id, 1, "L3").code == "stop"  # step 0 not done yet
    assert store.step_begin(saga_id, 0, "L1").values[0] == "2"  # redelivery: attempt 2
    assert store.step_complete(saga_id, 0, "L1", 1, "{}").code == "stale"
    assert store.step_complete(saga_id, 0, "L1", 2, "{}").code == "next"
    assert store.get(saga_id)["steps"][0]["uncertain"] is False
    version = store.get(saga_id)["version"]
    assert store.step_complete(saga_id, 0, "L1", 2, "{}").code == "duplicate"
    assert store.get(saga_id)["version"] == version  # a refused call writes nothing


def test_redelivery_after_lost_attempt_marks_step_uncertain(store: RedisStore) -> None:
    """An attempt that vanished (no result recorded) makes the step's outcome uncertain."""
    saga_id = new_saga(store)
    store.step_begin(saga_id, 0, "L1")
    store.step_begin(saga_id, 0, "L1")
    answer = store.step_fail(saga_id, 0, "L1", "boom", False, "error")
    assert answer.values == ["0"]  # uncertain, so its compensation runs
    assert store.get(saga_id)["steps"][0]["uncertain"] is True


def test_manual_compensation_racing_last_step_completion(store: RedisStore) -> None:
    """Compensation vs the last step's result, 200 times: exactly one of the two starts the
    compensation, always of both steps, and the saga ends COMPENSATED."""
    orders = set()
    for _ in range(200):
        saga_id = new_saga(store)
        store.step_begin(saga_id, 0, "L0")
        assert store.step_complete(saga_id, 0, "L0", 1, '{"id": 1}').code == "next"
        store.step_begin(saga_id, 1, "L1")
        done, asked = at_once(
            lambda s=saga_id: store.step_complete(s, 1, "L1", 1, '{"id": 2}'),
            lambda s=saga_id: store.compensate(s, "race", None),
        )
        starters = [a for a in (done, asked) if a.code == "compensate"]
        assert len(starters) == 1
        assert starters[0].values == ["1", "0"]
        orders.add((done.code, asked.code))
        for index in (1, 0):
            assert store.comp_begin(saga_id, index, f"C{index}", 10_000).code == "run"
            store.comp_complete(saga_id, index, f"C{index}", 1)
        saga = store.get(saga_id)
        assert saga["status"] == "COMPENSATED"
        assert [s["status"] for s in saga["steps"]] == ["COMPENSATED", "COMPENSATED"]
    assert orders <= {("saga_completed", "compensate"), ("compensate", "deferred")}


def test_compensate_answers_by_status(store: RedisStore) -> None:
    """PENDING-free RUNNING saga between steps compensates at once; repeats conflict; an
    unknown id is missing; a wrong expected version conflicts."""
    saga_id = new_saga(store)
    assert store.compensate(saga_id, "x", 999).code == "conflict"
    answer = store.compensate(saga_id, "x", None)
    assert (answer.code, answer.values) == ("compensate", [])  # nothing ran: COMPENSATED
    assert store.get(saga_id)["status"] == "COMPENSATED"
    assert [s["status"] for s in store.get(saga_id)["steps"]] == ["SKIPPED", "SKIPPED"]
    assert store.compensate(saga_id, "x", None).values[0] == "COMPENSATED"
    assert store.compensate(str(uuid.uuid4()), "x", None).code == "missing"


def test_indexes_and_history_follow_transitions(store: RedisStore) -> None:
    """Status indexes hold the saga under its current status only; history records each
    transition with increasing versions; stats count them."""
    saga_id = new_saga(store, steps=1)
    keys = store.keys
    assert store.redis.zscore(keys.status("RUNNING"), saga_id) is not None
    store.step_begin(saga_id, 0, "L")
    store.step_complete(saga_id, 0, "L", 1, "{}")
    assert store.redis.zscore(keys.status("RUNNING"), saga_id) is None
    assert store.redis.zscore(keys.status("COMPLETED"), saga_id) is not None
    assert store.redis.zscore(keys.finished, saga_id) is not None
    assert not [m for m in store.redis.zrange(keys.timers, 0, -1) if saga_id in m]
    events = [(e["event"], e["version"]) for e in store.history(saga_id)]
    assert events == [("created", 1), ("step_started", 2), ("saga_completed", 3)]
    stats = store.stats()
    assert stats["started|t"] >= 1 and stats["finished|t|COMPLETED"] >= 1
