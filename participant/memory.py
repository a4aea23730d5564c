"""The barrier in the process's memory: FOR DEMOS AND TESTS ONLY.

It is right only for a service whose business state is in the same process's memory and
dies with it (the demo services of `demo/services.py`): the records live exactly as long
as the state they protect. A service with a database keeps the barrier in that database
(`participant.sql`, `participant.redis`): records in memory would vanish at a restart
while the effects they guard stay, and would not be shared by a second process.

The "transaction" is a lock: the decision, the call of `fn` and the record happen under
it, one call at a time. The record is written only once `fn` has returned, so an
exception from `fn` records nothing; but memory has no rollback, so `fn` must raise
before it changes anything (validate first, then write), as the demo handlers do. Pass
the service's own lock (`MemoryBarrier(lock=state_lock)`) so that readers of the state
that take it never see an operation half done.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from participant.core import (
    ACTION,
    BLOCKED,
    COMPENSATION,
    NULL,
    BarrierKey,
    Decision,
    Outcome,
    decide,
    done,
    json_value,
)

__all__ = ["MemoryBarrier"]


class MemoryBarrier:
    """Records by branch in a dict, under `lock` (a new RLock if None).

    `max_records`, if given, bounds the number of branches kept: the oldest are forgotten
    first, and a forgotten branch is unprotected (a repeat acts again, a late action is no
    longer stopped). None keeps every branch for the life of the process.
    """

    def __init__(self, lock: threading.RLock | None = None, max_records: int | None = None) -> None:
        self.lock = lock if lock is not None else threading.RLock()
        self.max_records = max_records
        self._branches: OrderedDict[tuple[str, str], dict[str, dict[str, Any]]] = OrderedDict()

    def records(self, key: BarrierKey | str) -> dict[str, Any]:
        """The branch's records by operation, for inspection (a copy)."""
        k = BarrierKey.of(key)
        with self.lock:
            records: dict[str, Any] = json_value(self._branches.get((k.saga_id, k.step), {}))
            return records

    def __len__(self) -> int:
        with self.lock:
            return len(self._branches)

    def run(self, key: BarrierKey | str, fn: Callable[[], Any]) -> Outcome:
        """Run `fn()` behind the barrier of `key`, under the lock; its return value is
        stored and replayed. `fn` is not called for a repeat, a null compensation or a
        late action. An exception from `fn` records nothing and propagates."""
        k = BarrierKey.of(key)
        branch_id = (k.saga_id, k.step)
        with self.lock:
            branch = self._branches.get(branch_id, {})
            decision, stored = decide(k.op, branch.get(ACTION), branch.get(COMPENSATION))
            if decision is Decision.NULL_COMPENSATION and COMPENSATION not in branch:
                self._store(branch_id, {ACTION: {"state": BLOCKED}, COMPENSATION: {"state": NULL}})
            if decision is not Decision.RUN:
                return Outcome(k, decision, json_value(stored))
            value = json_value(fn())
            self._store(branch_id, {**branch, k.op: done(value)})
            return Outcome(k, Decision.RUN, json_value(value))

    def call(self, key: BarrierKey | None, fn: Callable[[Any], Any]) -> Outcome:
        """`run` for `participant.flask`: `fn(None)`; with `key` None, without a barrier
        (still under the lock)."""
        if key is None:
            with self.lock:
                return Outcome(None, Decision.RUN, fn(None))
        return self.run(key, lambda: fn(None))

    def _store(self, branch_id: tuple[str, str], records: dict[str, dict[str, Any]]) -> None:
        self._branches[branch_id] = records
        self._branches.move_to_end(branch_id)
        while self.max_records is not None and len(self._branches) > self.max_records:
            self._branches.popitem(last=False)
