"""The Lua transitions against real Redis, driven directly (no worker): fencing and races."""

from __future__ import annotations

import threading
import time
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


def finish(store: RedisStore, saga_id: str, steps: int) -> None:
    for i in range(steps):
        assert store.step_begin(saga_id, i, f"L{i}").code == "run"
        store.step_complete(saga_id, i, f"L{i}", 1, "null")


def test_finished_saga_is_repacked_compactly(store: RedisStore) -> None:
    """A COMPLETED saga keeps what its document and a later compensation need, drops what
    only steered executions, and its hash gets Redis's compact encoding back."""
    saga_id = new_saga(store, steps=5)
    key = store.keys.saga(saga_id)
    finish(store, saga_id, 4)
    assert "3:lease" in store.redis.hkeys(key)
    before = store.get(saga_id)
    finish_last = (
        store.step_begin(saga_id, 4, "L4").code,
        store.step_complete(saga_id, 4, "L4", 1, "null").code,
    )
    assert finish_last == ("run", "saga_completed")
    fields = store.redis.hkeys(key)
    assert not [f for f in fields if f.split(":")[-1] in ("lease", "dl", "to", "ma", "fatt")]
    assert "arrived" not in fields and "" not in store.redis.hvals(key)
    assert store.redis.object("encoding", key) == "listpack"
    after = store.get(saga_id)
    assert after["status"] == "COMPLETED" and after["current_step"] is None
    assert [s["status"] for s in after["steps"]] == ["COMPLETED"] * 5
    assert [s["started_at"] for s in after["steps"][:4]] == [
        s["started_at"] for s in before["steps"][:4]
    ]
    # A repacked saga can still be compensated, newest first, to the end.
    answer = store.compensate(saga_id, "undo", None)
    assert answer.values == ["4", "3", "2", "1", "0"]
    for i in (4, 3, 2, 1, 0):
        assert store.comp_begin(saga_id, i, f"C{i}", 10_000).code == "run"
        store.comp_complete(saga_id, i, f"C{i}", 1)
    assert store.get(saga_id)["status"] == "COMPENSATED"
    assert store.redis.object("encoding", key) == "listpack"


def test_definition_is_stored_once_and_goes_with_its_last_saga(store: RedisStore) -> None:
    """Sagas with the same definition share one copy; deleting the last one deletes it."""
    unique = {"name": "s0", "action": {"service": "svc", "path": f"/{uuid.uuid4()}"}}
    definition = parse_definition({"saga_type": "t", "steps": [unique]}, SETTINGS)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    for saga_id in (first, second):
        store.create(saga_id, definition, saga_id)
    digest = store.redis.hget(store.keys.saga(first), "def")
    assert digest == store.redis.hget(store.keys.saga(second), "def")
    assert store.redis.hget(store.keys.definitions, digest) == "2"
    assert store.definition(digest)[0]["name"] == "s0"
    for saga_id in (first, second):
        finish(store, saga_id, 1)
        assert store.delete(saga_id).code == "deleted"
        assert store.redis.exists(store.keys.definition(digest)) == (saga_id == first)
    assert store.redis.hget(store.keys.definitions, digest) is None


def test_find_by_type_and_status_and_correlation(store: RedisStore) -> None:
    """Status and type select their combined index; a correlation id finds the sagas given
    it and the saga whose own id it is (not indexed); every filter combines with AND."""
    from sagas.store import ListQuery

    def saga(saga_type: str, corr: str | None, done: bool) -> str:
        step = {"name": "a", "action": {"service": "svc", "path": "/"}}
        definition = parse_definition({"saga_type": saga_type, "steps": [step]}, SETTINGS)
        saga_id = str(uuid.uuid4())
        time.sleep(0.002)  # "newest first" is by creation millisecond; ties go by id
        store.create(saga_id, definition, corr or saga_id)
        if done:
            finish(store, saga_id, 1)
        return saga_id

    def ids(**query: Any) -> tuple[int, list[str]]:
        total, records = store.find(ListQuery(**query))
        return total, [r["saga_id"] for r in records]

    a, b, c1 = (f"{name}-{uuid.uuid4()}" for name in ("a", "b", "c1"))  # this test's own
    a_done = [saga(a, c1, True) for _ in range(3)]
    a_running = saga(a, c1, False)
    b_done = saga(b, None, True)
    assert ids(saga_type=a, status="COMPLETED") == (3, a_done[::-1])
    assert ids(saga_type=a, status="RUNNING") == (1, [a_running])
    assert ids(saga_type=b, status="RUNNING") == (0, [])
    assert ids(saga_type=a, status="COMPLETED", page=2, page_size=2) == (3, [a_done[0]])
    assert ids(correlation_id=c1) == (4, [a_running, *a_done[::-1]])
    assert ids(correlation_id=c1, status="COMPLETED", page_size=1) == (3, [a_done[2]])
    assert ids(correlation_id=b_done) == (1, [b_done])
    assert ids(correlation_id=b_done, status="RUNNING") == (0, [])
    assert ids(correlation_id=b_done, saga_type=b, status="COMPLETED") == (1, [b_done])
    created = int(store.redis.hget(store.keys.saga(b_done), "created"))
    assert ids(correlation_id=b_done, created_before=created) == (0, [])
    assert ids(correlation_id=b_done, created_after=created - 1) == (1, [b_done])
    assert store.correlated(b_done, 10) == [b_done]
    assert not store.redis.exists(store.keys.correlation(b_done))
    store.delete(b_done)
    assert ids(correlation_id=b_done) == (0, [])
    assert store.redis.zcard(store.keys.type_status(b, "COMPLETED")) == 0
