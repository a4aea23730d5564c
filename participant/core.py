"""The barrier's logic, without any storage: keys, decisions, outcomes.

Nothing here imports SQLAlchemy, redis or Flask: `participant.sql`, `participant.redis`,
`participant.memory` and `participant.flask` build on it.

A *branch* is one step of one saga: (saga id, step name). It has two operations, its
action and its compensation, and the barrier keeps one record per (saga id, step,
operation). A record is a small JSON object:

- `{"state": "done", "result": <JSON>}`: the operation ran; `result` is what it returned;
- `{"state": "blocked"}` (action only): written by a compensation that found no action,
  so that an action arriving later does nothing;
- `{"state": "null"}` (compensation only): a null compensation, which did nothing.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

ACTION = "action"
COMPENSATION = "compensation"
OPS = (ACTION, COMPENSATION)

# Record states (see the module docstring).
DONE = "done"
BLOCKED = "blocked"
NULL = "null"

Record = Mapping[str, Any]


class InvalidKey(ValueError):
    """An Idempotency-Key that is not `<saga_id>:<step>:<action|compensation>`."""


@dataclass(frozen=True, order=True)
class BarrierKey:
    """One operation of one branch: what the orchestrator's Idempotency-Key names.

    The orchestrator sends `Idempotency-Key: <saga_id>:<step>:<action|compensation>` on
    every HTTP call, and `idempotency_key` `<saga_id>:<step>:action` on every command of
    the commands stream. Step names cannot hold a colon (`[A-Za-z][A-Za-z0-9_-]{0,63}`);
    saga ids are uuids, but the key is parsed from the right, so an id with colons
    (one given by a client) still parses.
    """

    saga_id: str
    step: str
    op: str

    def __post_init__(self) -> None:
        if not self.saga_id:
            raise InvalidKey("the saga id is empty")
        if not self.step or ":" in self.step:
            raise InvalidKey(f"the step {self.step!r} is empty or holds a colon")
        if self.op not in OPS:
            raise InvalidKey(f"the operation {self.op!r} is neither action nor compensation")

    @classmethod
    def parse(cls, text: str) -> BarrierKey:
        """`<saga_id>:<step>:<action|compensation>`, split from the right.

        Raises `InvalidKey` (a ValueError) naming what is wrong.
        """
        if not isinstance(text, str):
            raise InvalidKey(f"an idempotency key is a string, not {type(text).__name__}")
        parts = text.strip().rsplit(":", 2)
        if len(parts) != 3:
            raise InvalidKey(
                f"idempotency key {text!r} is not <saga_id>:<step>:<action|compensation>"
            )
        try:
            return cls(*parts)
        except InvalidKey as exc:
            raise InvalidKey(f"idempotency key {text!r}: {exc}") from None

    @classmethod
    def of(cls, key: BarrierKey | str) -> BarrierKey:
        """`key` itself, or `parse(key)`."""
        return key if isinstance(key, BarrierKey) else cls.parse(key)

    @property
    def is_compensation(self) -> bool:
        return self.op == COMPENSATION

    def __str__(self) -> str:
        return f"{self.saga_id}:{self.step}:{self.op}"


class Decision(enum.Enum):
    """What the barrier decided for one call. Three outcomes, the third of two kinds:

    - RUN: first call for this key: the operation runs now, in the barrier's transaction;
    - REPLAY: the key ran before: nothing runs, the first result is returned again;
    - skip, nothing runs and nothing is returned:
      - NULL_COMPENSATION: a compensation for an action this participant never applied
        (it records itself, so the action can no longer happen);
      - CANCELLED: an action arriving after its compensation was recorded (the
        anti-hanging rule: a late action must not take effect after its undo).
    """

    RUN = "run"
    REPLAY = "replay"
    NULL_COMPENSATION = "null_compensation"
    CANCELLED = "cancelled"

    @property
    def skips(self) -> bool:
        """True for NULL_COMPENSATION and CANCELLED."""
        return self in (Decision.NULL_COMPENSATION, Decision.CANCELLED)


@dataclass(frozen=True)
class Outcome:
    """The result of one barrier call.

    `value` is the operation's result as stored (its JSON round trip): on RUN what the
    function returned, on REPLAY what the first run returned, None on a skip. `key` is
    None only for a call made without a key (the Flask decorator's pass-through).
    """

    key: BarrierKey | None
    decision: Decision
    value: Any = None

    @property
    def acted(self) -> bool:
        """The operation ran in this call (and its writes committed with the record)."""
        return self.decision is Decision.RUN

    @property
    def replayed(self) -> bool:
        return self.decision is Decision.REPLAY

    @property
    def skipped(self) -> bool:
        return self.decision.skips


def decide(op: str, action: Record | None, compensation: Record | None) -> tuple[Decision, Any]:
    """The decision for operation `op` of a branch whose records are `action` and
    `compensation` (None: no record), with the stored value to return on REPLAY.

    Used by the implementations that read the records under a lock or a WATCH (memory,
    Redis). The SQL implementation reaches the same decisions from which of its INSERTs
    found a row already there, which also gives it the row locks it needs.
    """
    if op == ACTION:
        if action is None:
            return Decision.RUN, None
        if action.get("state") == BLOCKED:
            return Decision.CANCELLED, None
        return Decision.REPLAY, action.get("result")
    if op != COMPENSATION:
        raise InvalidKey(f"the operation {op!r} is neither action nor compensation")
    if compensation is not None:
        if compensation.get("state") == NULL:
            return Decision.NULL_COMPENSATION, None
        return Decision.REPLAY, compensation.get("result")
    if action is None:
        return Decision.NULL_COMPENSATION, None
    return Decision.RUN, None


def json_value(value: Any) -> Any:
    """`value` after a JSON round trip: what a replay will return. Raises TypeError for a
    value JSON cannot hold (the operation's transaction then rolls back)."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"a barrier result must be JSON-serialisable: {exc}") from None


def done(value: Any) -> dict[str, Any]:
    """The record of an operation that ran and returned `value` (already `json_value`d)."""
    return {"state": DONE, "result": value}


class Runner(Protocol):
    """What the Flask decorator needs from an implementation: run `fn(handle)` behind the
    barrier of `key` (or, for `key` None, without a barrier but in the same kind of
    transaction), and say what happened. `handle` is what the business code writes
    through: a SQLAlchemy Connection or Session, a Redis transaction, or None (memory).

    An exception raised by `fn` rolls everything back (nothing recorded) and propagates.
    """

    def call(self, key: BarrierKey | None, fn: Callable[[Any], Any]) -> Outcome: ...
