"""The Lua transitions against real Redis, driven directly (no worker): fencing and races."""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import pytest
import redis

import sagas.store as store_module
from sagas.definition import SagaDefinition, parse_definition
from sagas.records import dumps
from sagas.settings import Settings
from sagas.store import ListQuery, RedisStore
from tests.faultproxy import FaultProxy

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


# --- listing by correlation id ------------------------------------------------------------
def definition_of(saga_type: str) -> SagaDefinition:
    step = {"name": "a", "action": {"service": "svc", "path": "/"}}
    return parse_definition({"saga_type": saga_type, "steps": [step]}, SETTINGS)


def create_many(store: RedisStore, sagas: list[tuple[str, str | None]]) -> list[str]:
    """Create sagas (type, correlation id or None for their own id) from 8 threads."""

    def create(saga: tuple[str, str | None]) -> str:
        saga_id = str(uuid.uuid4())
        assert store.create(saga_id, definition_of(saga[0]), saga[1] or saga_id).code
        return saga_id

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(create, sagas))


def newest_first(store: RedisStore, ids: list[str], own: str = "") -> list[str]:
    """`ids` in listing order: creation ms, then id, descending; the saga whose id is the
    correlation id (`own`) after the others created in the same millisecond."""
    pipe = store.redis.pipeline(transaction=False)
    for saga_id in ids:
        pipe.hget(store.keys.saga(saga_id), "created")
    created = dict(zip(ids, (int(c) for c in pipe.execute()), strict=True))
    return sorted(ids, key=lambda i: (created[i], i != own, i), reverse=True)


def test_listing_by_correlation_id_is_exact_across_chunks(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A correlation id with any other filters: every page holds the right sagas newest
    first across chunk boundaries, the saga whose id it is merged in; `total` is exact when
    the smaller set had at most LIST_COUNT_LIMIT sagas in range, never below it otherwise."""
    monkeypatch.setattr(store_module, "LIST_CHUNK", 7)
    monkeypatch.setattr(store_module, "LIST_COUNT_LIMIT", 20)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    p = f"{prefix}corr-{uuid.uuid4().hex[:6]}:"
    running = RedisStore(client, p, max_running=10**6)
    pending = RedisStore(client, p, max_running=0)  # once one waits, every later one does
    rng = random.Random(10)
    own = str(uuid.uuid4())
    sagas: dict[str, dict[str, str]] = {}
    for i in range(120):  # the newest 30 wait as PENDING: a status split across chunks
        saga_id = own if i == 40 else str(uuid.uuid4())
        corr = saga_id if i == 40 else rng.choice(["c", own, "other", saga_id])
        store = pending if i >= 90 else running
        store.create(saga_id, definition_of(rng.choice("ab")), corr)
        sagas[saga_id] = client.hgetall(store.keys.saga(saga_id))
    times = sorted(int(s["created"]) for s in sagas.values())
    window = {"created_after": times[20], "created_before": times[100]}
    filters: list[dict[str, Any]] = [
        {},
        window,
        {"status": "RUNNING"},
        {"status": "PENDING"},
        {"saga_type": "a"},
        {"saga_type": "b", "status": "RUNNING"},
        {"saga_type": "a", **window},
    ]

    def fits(saga: dict[str, str], f: dict[str, Any]) -> bool:
        created = int(saga["created"])
        return (
            saga["status"] == f.get("status", saga["status"])
            and saga["type"] == f.get("saga_type", saga["type"])
            and f.get("created_after", -1) < created < f.get("created_before", 1 << 62)
        )

    def count(f: dict[str, Any], corr: str | None = None) -> int:
        """Sagas in the range of `f` and its index; or in idx:corr:<corr> (not the own saga)."""
        if corr is None:
            return sum(fits(s, f) for s in sagas.values())
        return sum(fits(s, f) and s["corr"] == corr and i != own for i, s in sagas.items())

    upper_bounds = 0
    for corr in ("c", own):
        for f in filters:
            expected = newest_first(
                running, [i for i, s in sagas.items() if s["corr"] == corr and fits(s, f)], own
            )
            ranged = {k: v for k, v in f.items() if k.startswith("created")}
            exact = f == ranged or min(count(ranged, corr), count(f)) <= 20
            for size in (3, 7, 50):
                for page in range(1, len(expected) // size + 3):
                    query = ListQuery(correlation_id=corr, page=page, page_size=size, **f)
                    total, ids = running._page(query)
                    assert ids == expected[(page - 1) * size : page * size], (corr, f, size)
                    assert total == len(expected) if exact else total >= len(expected)
                    upper_bounds += total > len(expected)
    assert upper_bounds  # the case beyond LIST_COUNT_LIMIT was met


def test_correlation_lookups_read_at_most_a_chunk_per_redis_call(
    redis_url: str, prefix: str
) -> None:
    """With thousands of sagas under one correlation id, no Redis call of a lookup reads more
    than LIST_CHUNK of them (seen on the wire through the fault proxy): a listing with a
    filter reads in chunks; without one, and an event's lookup, take one O(page) call."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    p = f"{prefix}bound-{uuid.uuid4().hex[:6]}:"
    writer = RedisStore(client, p, max_running=10**6)
    oldest = create_many(writer, [("T", "c")])[0]  # the only T among the 2,201 sagas of c
    time.sleep(0.002)
    of_c = create_many(writer, [("U", "c")] * 2200)
    create_many(writer, [("T", None)] * 2300)  # more T than c has: c's sagas are the ones read
    expected = newest_first(writer, of_c)
    with FaultProxy.to(redis_url) as proxy:
        reader = RedisStore(redis.Redis.from_url(proxy.url(redis_url), decode_responses=True), p)
        sha = reader._scripts["list"].sha

        def lookup(query: ListQuery) -> tuple[int, list[str], list[list[str]]]:
            """The answer, and the ARGV of each list script call made for it."""
            before = len(proxy.exchanges)
            total, records = reader.find(query)
            sent = [[a.decode() for a in args] for args, _ in proxy.exchanges[before:]]
            calls = [a[3 + int(a[2]) :] for a in sent if a[:2] == ["EVALSHA", sha]]
            return total, [r["saga_id"] for r in records], calls

        total, ids, calls = lookup(ListQuery(correlation_id="c", saga_type="T"))
        assert (total, ids) == (1, [oldest])
        assert [(c[0], c[6], c[7]) for c in calls] == [
            ("scan", "0", "1000"),
            ("scan", "1000", "1000"),
            ("scan", "2000", "1000"),
        ]
        total, ids, calls = lookup(
            ListQuery(correlation_id="c", saga_type="U", page=3, page_size=500)
        )
        assert (total, ids) == (2200, expected[1000:1500])
        assert [(c[0], c[6]) for c in calls] == [("scan", "0"), ("scan", "1000"), ("scan", "2000")]
        total, ids, calls = lookup(ListQuery(correlation_id="c"))
        assert (total, ids) == (2201, expected[:50])
        assert [c[0] for c in calls] == ["range"]
        before = len(proxy.exchanges)
        assert reader.correlated("c", 100) == expected[:100]
        assert [a[0] for a, _ in proxy.exchanges[before:]] == [b"EVALSHA"]


def test_an_event_by_correlation_id_is_for_the_newest_sagas_only(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An event addressed by correlation id targets the newest EVENT_MAX_MATCHES sagas with
    it, and the log says when older ones are left out."""
    from sagas import events

    monkeypatch.setattr(events, "EVENT_MAX_MATCHES", 3)
    corr = f"corr-{uuid.uuid4()}"
    ids = []
    for _ in range(4):
        time.sleep(0.002)
        ids += create_many(store, [("t", corr)])
    bus = events.EventBus(SimpleNamespace(store=store, settings=SETTINGS))  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="sagas.events"):
        assert bus._targets(None, corr) == ids[:0:-1]
    assert "newest 3 only" in caplog.text
    caplog.clear()
    assert bus._targets(None, ids[0]) == []  # a saga id is not a correlation id of others
    assert bus._targets(ids[0], None) == [ids[0]]
    assert not caplog.text


def test_a_transition_refused_for_memory_changes_nothing(tmp_path: Any) -> None:
    """Redis out of memory (noeviction): a transition is refused whole, before its first
    write; none of its frees (ZREM, DEL) happen without the writes that follow them."""
    from tests.conftest import start_redis_server

    proc, url = start_redis_server(tmp_path / "oom")
    try:
        store = RedisStore(redis.Redis.from_url(url, decode_responses=True), "oom:")
        saga_id = new_saga(store)
        before = {k: store.redis.dump(k) for k in store.redis.keys("oom:*")}
        used = int(store.redis.info("memory")["used_memory"])
        store.redis.config_set("maxmemory", used // 2)
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            store.compensate(saga_id, "out of memory", None)
        store.redis.config_set("maxmemory", 0)
        after = {k: store.redis.dump(k) for k in store.redis.keys("oom:*")}
        assert after == before
        assert store.get(saga_id)["status"] == "RUNNING"
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_saga_is_counted_once_in_finished(redis_url: str, prefix: str) -> None:
    """A COMPLETED saga compensated later counts once in `finished` (as COMPLETED) and once
    in `refinished` (as COMPENSATED): finished sagas never outnumber started ones."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    store = RedisStore(client, f"{prefix}counted-{uuid.uuid4().hex[:6]}:")
    saga_id = new_saga(store, steps=1)
    assert store.step_begin(saga_id, 0, "L").code == "run"
    assert store.step_complete(saga_id, 0, "L", 1, "{}").code == "saga_completed"
    reply = store.compensate(saga_id, "undo it", None)
    assert reply.code == "compensate" and reply.values == ["0"]
    assert store.comp_begin(saga_id, 0, "C", 10_000).code == "run"
    assert store.comp_complete(saga_id, 0, "C", 1).code == "saga_compensated"
    stats = store.stats()
    assert stats["finished|t|COMPLETED"] == 1
    assert "finished|t|COMPENSATED" not in stats
    assert stats["refinished|t|COMPENSATED"] == 1
    assert stats["duration_count|COMPLETED"] == 1 and "duration_count|COMPENSATED" not in stats


def test_a_resent_transition_gets_the_first_answer_and_writes_nothing(store: RedisStore) -> None:
    """The same call id again (a resend after a lost reply) answers as the first call did,
    without a second write; a begin repeated with its call id grants the same attempt."""
    saga_id = new_saga(store)
    first = store.step_begin(saga_id, 0, "L", call="b1")
    again = store.step_begin(saga_id, 0, "L", call="b1")
    assert first.code == again.code == "run" and first.values[0] == again.values[0] == "1"
    fail = store.step_fail(saga_id, 0, "L", "HTTP 422", False, "error", call="f1")
    assert fail.code == "compensate"
    version, history = store.get(saga_id)["version"], store.history(saga_id)
    assert store.step_fail(saga_id, 0, "L", "HTTP 422", False, "error", call="f1") == fail
    assert store.get(saga_id)["version"] == version  # the resend wrote nothing
    assert store.history(saga_id) == history
    assert store.step_fail(saga_id, 0, "L", "HTTP 422", False, "error").code == "duplicate"
