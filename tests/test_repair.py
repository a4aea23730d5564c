"""The repair actions (sagas/repair.py) over the real store: each allowed and refused, audited,
and `allowed` agreeing with what the transitions accept. The executions are played by the
test (store calls, as a worker makes them); the dispatcher records what would be enqueued."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
import redis

from sagas.actions import ActionExecutor
from sagas.engine import SagaEngine
from sagas.errors import InvalidTransition, UnknownStep, ValidationFailed
from sagas.repair import ACTIONS, STEP_ACTIONS, allowed
from sagas.settings import Settings
from sagas.store import RedisStore

SETTINGS = Settings(services={"svc": "http://127.0.0.1:9"})
WHO = "alice"


class Recorder:
    """A dispatcher that only records what the engine asked to enqueue."""

    def __init__(self) -> None:
        self.steps: list[list[int]] = []
        self.compensations: list[list[int]] = []

    def run_steps(
        self, saga_id: str, indexes: Any, correlation_id: str, *_: Any, **__: Any
    ) -> None:
        self.steps.append(list(indexes))

    def run_compensations(
        self, saga_id: str, indexes: Any, correlation_id: str, *_: Any, **__: Any
    ) -> None:
        self.compensations.append(list(indexes))


def make_engine(redis_url: str, prefix: str, max_running: int = 100) -> SagaEngine:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    store = RedisStore(client, f"{prefix}repair{uuid.uuid4().hex[:6]}:", max_running=max_running)
    return SagaEngine(store, Recorder(), ActionExecutor({}), SETTINGS)  # type: ignore[arg-type]


@pytest.fixture()
def engine(redis_url: str, prefix: str) -> SagaEngine:
    return make_engine(redis_url, prefix)


def recorder(engine: SagaEngine) -> Recorder:
    return engine.dispatcher  # type: ignore[return-value]


def start(engine: SagaEngine, steps: int = 3, payload: dict[str, Any] | None = None) -> str:
    definition = {
        "saga_type": "repairable",
        "payload": payload or {"email": "ada@example.com"},
        "steps": [
            {
                "name": f"s{i}",
                "action": {"service": "svc", "path": f"/do/{i}"},
                "compensation": {"service": "svc", "path": f"/undo/{i}"},
                "retry": {"max_attempts": 3},
            }
            for i in range(steps)
        ],
    }
    return str(engine.start(definition).saga["saga_id"])


def complete(engine: SagaEngine, sid: str, i: int) -> None:
    lease = f"t{i}"
    assert engine.store.step_begin(sid, i, lease).code == "run"
    assert engine.store.step_complete(sid, i, lease, 1, "{}").code in ("next", "saga_completed")


def fail(engine: SagaEngine, sid: str, i: int) -> list[int]:
    lease = f"t{i}"
    assert engine.store.step_begin(sid, i, lease).code == "run"
    reply = engine.store.step_fail(sid, i, lease, "boom", False, "error")
    assert reply.code == "compensate"
    return [int(v) for v in reply.values]


def compensation_failed(engine: SagaEngine) -> str:
    """s0, s1 completed; s2 failed; s1's undo failed: COMPENSATION_FAILED, s0's undo PENDING."""
    sid = start(engine)
    complete(engine, sid, 0)
    complete(engine, sid, 1)
    assert fail(engine, sid, 2) == [1, 0]
    assert engine.store.comp_begin(sid, 1, "c1", 5000).code == "run"
    assert engine.store.comp_fail(sid, 1, "c1", "undo refused").code == "failed"
    assert engine.get(sid)["status"] == "COMPENSATION_FAILED"
    return sid


def undo(engine: SagaEngine, sid: str, i: int) -> str:
    assert engine.store.comp_begin(sid, i, f"c{i}", 5000).code == "run"
    reply = engine.store.comp_complete(sid, i, f"c{i}", 1)
    return reply.code


def last(engine: SagaEngine, sid: str, event: str) -> dict[str, Any]:
    return [h for h in engine.history(sid) if h["event"] == event][-1]


def names(engine: SagaEngine, sid: str) -> set[tuple[str, str | None]]:
    return {(a.action, a.step) for a in allowed(engine.get(sid))}


# --- resolve and skip -------------------------------------------------------------------
def test_resolve_counts_the_failed_undo_as_done_and_continues_with_older_ones(
    engine: SagaEngine,
) -> None:
    sid = compensation_failed(engine)
    assert ("resolve", "s1") in names(engine, sid)
    saga = engine.repairs.resolve(sid, "s1", "refunded by hand in the PSP console", WHO)
    assert saga["status"] == "COMPENSATING"
    assert saga["steps"][1]["compensation"]["status"] == "COMPENSATED"
    assert saga["steps"][1]["compensation"]["resolved_by_hand"] is True
    assert saga["compensation_failure"] is None
    assert recorder(engine).compensations == [[0]]  # the older undo, and only it
    entry = last(engine, sid, "compensation_resolved")
    assert entry["actor"] == WHO and entry["step"] == "s1"
    assert entry["message"] == "refunded by hand in the PSP console"
    assert undo(engine, sid, 0) == "saga_compensated"
    assert engine.get(sid)["status"] == "COMPENSATED"


def test_skip_leaves_the_effect_and_says_how_the_step_ended(engine: SagaEngine) -> None:
    sid = compensation_failed(engine)
    saga = engine.repairs.skip(sid, 2, "the account was closed anyway", WHO)  # s1, 1-based
    step = saga["steps"][1]
    assert step["compensation"]["status"] == "SKIPPED"
    assert step["status"] == "COMPLETED"  # it had an output: its effect stands
    assert saga["status"] == "COMPENSATING" and recorder(engine).compensations == [[0]]
    assert last(engine, sid, "compensation_skipped")["actor"] == WHO


def test_skipping_an_older_undo_keeps_the_saga_with_a_person_until_the_failed_one_is_settled(
    engine: SagaEngine,
) -> None:
    sid = compensation_failed(engine)
    saga = engine.repairs.skip(sid, "s0", "nothing was created upstream", WHO)
    assert saga["status"] == "COMPENSATION_FAILED"
    assert saga["steps"][0]["compensation"]["status"] == "SKIPPED"
    saga = engine.repairs.resolve(sid, "s1", "done by hand", WHO)
    assert saga["status"] == "COMPENSATED"  # nothing older left to undo
    assert recorder(engine).compensations == []


@pytest.mark.parametrize("action", ["resolve", "skip"])
def test_resolve_and_skip_are_refused_where_the_state_does_not_allow_them(
    engine: SagaEngine, action: str
) -> None:
    run = getattr(engine.repairs, action)
    sid = start(engine)
    with pytest.raises(InvalidTransition, match="RUNNING"):
        run(sid, "s0", "why", WHO)  # running: nothing is being undone
    complete(engine, sid, 0)
    assert engine.store.step_begin(sid, 1, "t1").code == "run"
    engine.compensate(sid, "stop")  # fenced: s1's attempt is in flight
    assert engine.get(sid)["status"] == "COMPENSATING"
    with pytest.raises(InvalidTransition, match="in flight"):
        run(sid, "s0", "why", WHO)
    sid = compensation_failed(engine)
    with pytest.raises(InvalidTransition, match="SKIPPED"):
        run(sid, "s2", "why", WHO)  # s2 failed for certain: nothing to undo there
    with pytest.raises(UnknownStep):
        run(sid, "nope", "why", WHO)
    with pytest.raises(ValidationFailed, match="reason"):
        run(sid, "s1", "  ", WHO)
    before = engine.get(sid)["version"]
    assert engine.get(sid)["version"] == before  # refusals wrote nothing


def test_a_pending_undo_of_a_compensating_saga_can_be_skipped_and_its_queued_run_goes_on(
    engine: SagaEngine,
) -> None:
    sid = start(engine)
    complete(engine, sid, 0)
    complete(engine, sid, 1)
    fail(engine, sid, 2)  # compensating: undo s1, then s0 (both queued)
    saga = engine.repairs.skip(sid, "s0", "no account was made", WHO)
    assert saga["status"] == "COMPENSATING"
    assert engine.store.comp_begin(sid, 0, "c0", 5000).code == "done"  # the queued run
    assert undo(engine, sid, 1) == "saga_compensated"


def test_two_people_resolving_at_once_have_one_winner(engine: SagaEngine) -> None:
    sid = compensation_failed(engine)
    answers: list[Any] = []
    barrier = threading.Barrier(2)

    def go() -> None:
        barrier.wait()
        try:
            answers.append(engine.repairs.resolve(sid, "s1", "mine", WHO)["status"])
        except InvalidTransition as exc:
            answers.append(str(exc))

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a == "COMPENSATING" for a in answers) == [False, True], answers
    assert recorder(engine).compensations == [[0]]


# --- retry now ----------------------------------------------------------------------------
def test_retry_now_starts_the_next_attempt_and_the_waiting_one_finds_the_step_taken(
    engine: SagaEngine,
) -> None:
    sid = start(engine)
    assert engine.store.step_begin(sid, 0, "old").code == "run"
    with pytest.raises(InvalidTransition, match="in flight"):
        engine.repairs.retry(sid, "s0", "why", WHO)  # the attempt has not ended
    assert engine.store.step_retry(sid, 0, "old", 1, "503", False, 60_000).code == "ok"
    saga = engine.get(sid)
    assert saga["steps"][0]["retry_pending"] is True
    assert ("retry", "s0") in names(engine, sid)
    engine.repairs.retry(sid, "s0", "the service is back", WHO)
    assert recorder(engine).steps[-1] == [0, 1, 2]
    grant = engine.store.step_begin(sid, 0, "new")
    assert grant.code == "run" and grant.values[0] == "2"
    assert engine.store.step_begin(sid, 0, "old").code == "busy"  # the countdown's run
    assert last(engine, sid, "step_retry_requested")["actor"] == WHO
    with pytest.raises(InvalidTransition):
        engine.repairs.retry(sid, "s1", "why", WHO)  # PENDING: no attempt to repeat


# --- cancel ---------------------------------------------------------------------------------
def test_cancel_only_a_pending_saga(redis_url: str, prefix: str) -> None:
    engine = make_engine(redis_url, prefix, max_running=1)
    running = start(engine)
    waiting = start(engine)
    assert engine.get(waiting)["status"] == "PENDING"
    assert {a.action for a in allowed(engine.get(waiting))} == {"cancel"}
    with pytest.raises(InvalidTransition, match="only a PENDING saga"):
        engine.repairs.cancel(running, "why", WHO)
    saga = engine.repairs.cancel(waiting, "the customer withdrew", WHO)
    assert saga["status"] == "COMPENSATED"
    assert saga["failure"]["reason"] == "cancelled"
    assert {s["status"] for s in saga["steps"]} == {"SKIPPED"}
    assert last(engine, waiting, "saga_cancelled")["actor"] == WHO
    assert recorder(engine).steps == [[0, 1, 2]]  # only the running saga was ever dispatched


# --- compensate, audited --------------------------------------------------------------------
def test_compensate_records_who_asked(engine: SagaEngine) -> None:
    sid = compensation_failed(engine)
    engine.repairs.compensate(sid, "the PSP is back", WHO)
    entry = last(engine, sid, "compensation_requested")
    assert (entry["actor"], entry["message"]) == (WHO, "the PSP is back")
    assert recorder(engine).compensations == [[1, 0]]


# --- rerun ----------------------------------------------------------------------------------
def test_rerun_starts_a_linked_saga_with_the_edited_payload(engine: SagaEngine) -> None:
    sid = start(engine)
    fail(engine, sid, 0)
    assert engine.get(sid)["status"] == "COMPENSATED"
    new = engine.repairs.rerun(sid, "typo in the email", WHO, {"email": "ada@example.org"})
    assert new["rerun_of"] == sid and new["status"] == "RUNNING"
    assert new["payload"] == {"email": "ada@example.org"}
    assert new["correlation_id"] == engine.get(sid)["correlation_id"]
    assert engine.get(sid)["reruns"] == [new["saga_id"]]
    patch = [{"op": "replace", "path": "/email", "value": "ada@example.org"}]
    old_entry = last(engine, sid, "rerun_started")
    assert old_entry["data"] == {"rerun": new["saga_id"], "payload_patch": patch}
    assert old_entry["actor"] == WHO
    new_entry = last(engine, new["saga_id"], "rerun_of")
    assert new_entry["data"] == {"rerun_of": sid, "payload_patch": patch}
    assert recorder(engine).steps[-1] == [0, 1, 2]


def test_rerun_is_refused_unless_compensated_and_two_at_once_make_one_saga(
    engine: SagaEngine,
) -> None:
    sid = start(engine)
    with pytest.raises(InvalidTransition, match="RUNNING"):
        engine.repairs.rerun(sid, "why", WHO)
    fail(engine, sid, 0)
    answers: list[Any] = []
    barrier = threading.Barrier(2)

    def go() -> None:
        barrier.wait()
        try:
            answers.append(engine.repairs.rerun(sid, "again", WHO)["saga_id"])
        except InvalidTransition as exc:
            answers.append(exc)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    created = [a for a in answers if isinstance(a, str)]
    assert len(created) == 1, answers
    assert engine.get(sid)["reruns"] == created
    again = engine.repairs.rerun(sid, "and again", WHO)  # later: a second rerun is its own
    assert engine.get(sid)["reruns"] == [*created, again["saga_id"]]


# --- allowed agrees with the transitions ---------------------------------------------------
def attempt(engine: SagaEngine, sid: str, action: str, step: str | None) -> bool:
    try:
        if action in STEP_ACTIONS:
            getattr(engine.repairs, action)(sid, step, "probe", WHO)
        elif action == "rerun":
            engine.repairs.rerun(sid, "probe", WHO)
        else:
            getattr(engine.repairs, action)(sid, "probe", WHO)
    except InvalidTransition:
        return False
    return True


STATES = {
    "running": lambda e: start(e),
    "retry_pending": lambda e: _retry_pending(e),
    "fenced": lambda e: _fenced(e),
    "completed": lambda e: _completed(e),
    "compensating": lambda e: _compensating(e),
    "compensated": lambda e: _compensated(e),
    "compensation_failed": lambda e: compensation_failed(e),
}


def _retry_pending(engine: SagaEngine) -> str:
    sid = start(engine)
    engine.store.step_begin(sid, 0, "t0")
    engine.store.step_retry(sid, 0, "t0", 1, "503", False, 60_000)
    return sid


def _fenced(engine: SagaEngine) -> str:
    sid = start(engine)
    complete(engine, sid, 0)
    engine.store.step_begin(sid, 1, "t1")
    engine.compensate(sid, "stop")
    return sid


def _completed(engine: SagaEngine) -> str:
    sid = start(engine)
    for i in range(3):
        complete(engine, sid, i)
    return sid


def _compensating(engine: SagaEngine) -> str:
    sid = start(engine)
    complete(engine, sid, 0)
    complete(engine, sid, 1)
    fail(engine, sid, 2)
    return sid


def _compensated(engine: SagaEngine) -> str:
    sid = start(engine)
    fail(engine, sid, 0)
    return sid


@pytest.mark.parametrize("state", sorted(STATES))
def test_allowed_predicts_exactly_what_the_transitions_accept(
    redis_url: str, prefix: str, state: str
) -> None:
    """For each state, every action on the saga and on each step: `allowed` lists it iff
    the transition accepts it (each probe on a fresh saga in that state)."""
    for action in ACTIONS:
        for step in ("s0", "s1", "s2") if action in STEP_ACTIONS else (None,):
            engine = make_engine(redis_url, prefix)
            sid = STATES[state](engine)
            predicted = (action, step) in names(engine, sid)
            assert attempt(engine, sid, action, step) == predicted, (state, action, step)
