"""The barrier in the participant's own SQL database (SQLAlchemy Core; needs the
`participant` extra: SQLAlchemy, and psycopg for PostgreSQL).

The barrier rows and the business writes commit in ONE local transaction, so a crash, a
lost connection or an exception can never keep one without the other::

    from sqlalchemy import create_engine, insert
    from participant.sql import SqlBarrier

    engine = create_engine("postgresql+psycopg://app@db/app")
    barrier = SqlBarrier(engine)
    barrier.create_table(engine)          # CREATE TABLE IF NOT EXISTS saga_barrier ...

    def reserve(conn):                     # runs inside the barrier's transaction
        conn.execute(insert(reservations).values(id=rid, units=units))
        return {"id": rid}                 # stored (JSON) and replayed to repeats

    with engine.connect() as conn:
        outcome = barrier.run(conn, request.headers["Idempotency-Key"], reserve)

or, with the guard form::

    with barrier.guard(conn, key) as call:
        if call.should_run:                # False: a repeat, a null compensation, a late action
            conn.execute(...)
            call.result = {"id": rid}
    outcome = call.outcome

The table `saga_barrier` holds one row per (saga_id, step, op), its primary key:

- `saga_id`, `step`, `op`: the key; `op` is `action` or `compensation`;
- `state`: `done` (it ran; `result` is what it returned), `blocked` (an action row
  written by a compensation that found no action: that action must never run), or `null`
  (a null compensation);
- `result`: the operation's result (JSON), replayed to repeats; NULL for `blocked` and
  `null`;
- `created_at`: when the row was written (UTC), for `purge`.

How one call is decided, inside the transaction (INSERT ... ON CONFLICT DO NOTHING, so a
concurrent transaction holding the same key makes the INSERT wait for its commit or
rollback, and exactly one of them inserts):

- action: insert (action, done). Inserted: RUN. Else read the row: `blocked` is
  CANCELLED, `done` is REPLAY of its result.
- compensation: insert (compensation, done). Not inserted: REPLAY (or NULL_COMPENSATION
  again, for a `null` row). Inserted: also insert (action, blocked). That one inserted
  means no action was ever applied: the compensation row becomes `null` and the call is a
  NULL_COMPENSATION; the `blocked` row stops the action for good. Not inserted: RUN.

Transactions: given a Connection or Session that is not in a transaction, the barrier
begins one and commits it at the end of the call (rolls it back on an exception). Given
one that already is, it works in a SAVEPOINT of it: an exception rolls back the barrier
rows and the business writes of the call, and nothing holds until the caller commits.

Databases: PostgreSQL (tested, concurrency included) and SQLite 3.35+ (tested; one writer at a
time) use INSERT ... ON CONFLICT DO NOTHING. Others insert in a SAVEPOINT and take the
unique-violation error for "already there" (untested). Run at READ COMMITTED (the
PostgreSQL default): under REPEATABLE READ or SERIALIZABLE, a request racing another with
the same key gets a serialization error instead of the replay, and must be retried.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    MetaData,
    String,
    Table,
    and_,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from participant.core import (
    ACTION,
    BLOCKED,
    COMPENSATION,
    DONE,
    NULL,
    BarrierKey,
    Decision,
    Outcome,
    json_value,
)

__all__ = ["Call", "SqlBarrier"]

TABLE = "saga_barrier"

B = TypeVar("B", Connection, Session)


class Call:
    """What `SqlBarrier.guard` yields: the decision, and a place for the result.

    - `should_run`: True only on RUN; the block then does its writes through the same
      Connection or Session and sets `result` (JSON-serialisable; stored and replayed).
    - `stored`: on REPLAY, the first call's result.
    - `outcome`: the `Outcome`, once the block has ended without an exception.
    """

    def __init__(self, key: BarrierKey, decision: Decision, stored: Any) -> None:
        self.key = key
        self.decision = decision
        self.stored = stored
        self.result: Any = None
        self._outcome: Outcome | None = None
        if decision is not Decision.RUN:
            self._outcome = Outcome(key, decision, stored)

    @property
    def should_run(self) -> bool:
        return self.decision is Decision.RUN

    @property
    def outcome(self) -> Outcome:
        if self._outcome is None:
            raise RuntimeError("the outcome of a RUN is known once its guard block has committed")
        return self._outcome


class SqlBarrier:
    """The barrier table and the calls that go through it.

    `bind` (an Engine, or a sessionmaker) is needed only by `call` (used by
    `participant.flask`), which opens a connection or session per call; `run`, `guard`,
    `create_table`, `record` and `purge` take the Connection or Session to work in.
    """

    def __init__(
        self,
        bind: Engine | sessionmaker[Session] | None = None,
        *,
        table_name: str = TABLE,
        schema: str | None = None,
        metadata: MetaData | None = None,
    ) -> None:
        self.bind = bind
        self.metadata = metadata if metadata is not None else MetaData()
        self.table = Table(
            table_name,
            self.metadata,
            Column("saga_id", String(255), primary_key=True),
            Column("step", String(64), primary_key=True),
            Column("op", String(16), primary_key=True),
            Column("state", String(16), nullable=False),
            Column("result", JSON(none_as_null=True), nullable=True),
            Column("created_at", DateTime(timezone=True), nullable=False),
            schema=schema,
        )

    # --- set-up and upkeep ---------------------------------------------------------------
    def create_table(self, bind: Engine | Connection) -> None:
        """CREATE TABLE IF NOT EXISTS. Given an Engine it commits; given a Connection the
        DDL is part of that connection's transaction (commit it)."""
        self.table.create(bind, checkfirst=True)

    def record(self, bind: Connection | Session, key: BarrierKey | str) -> dict[str, Any] | None:
        """The row of `key` as {"state", "result", "created_at"}, or None."""
        k = BarrierKey.of(key)
        conn = bind.connection() if isinstance(bind, Session) else bind
        row = conn.execute(
            select(self.table.c.state, self.table.c.result, self.table.c.created_at).where(
                self._where(k.saga_id, k.step, k.op)
            )
        ).one_or_none()
        return None if row is None else dict(row._mapping)

    def purge(self, bind: Connection | Session, older_than: timedelta) -> int:
        """Delete the rows written more than `older_than` ago; returns how many.

        A purged key is unprotected: a repeat acts again, a late action is no longer
        stopped. Keep rows longer than anything can still arrive for their saga (the
        orchestrator's saga deadline plus its redelivery delays).
        """
        cutoff = datetime.now(UTC) - older_than
        with self._transaction(bind) as conn:
            result = conn.execute(delete(self.table).where(self.table.c.created_at < cutoff))
            return int(result.rowcount)

    # --- the barrier ------------------------------------------------------------------------
    @contextmanager
    def guard(self, bind: Connection | Session, key: BarrierKey | str) -> Iterator[Call]:
        """A block in the barrier's transaction: see the module docstring. The block must
        write only when `call.should_run`, and through `bind`."""
        k = BarrierKey.of(key)
        with self._transaction(bind) as conn:
            decision, stored = self._claim(conn, k)
            call = Call(k, decision, stored)
            yield call
            if call.should_run:
                value = json_value(call.result)
                conn.execute(
                    update(self.table)
                    .where(self._where(k.saga_id, k.step, k.op))
                    .values(result=value)
                )
                call._outcome = Outcome(k, Decision.RUN, value)

    def run(self, bind: B, key: BarrierKey | str, fn: Callable[[B], Any]) -> Outcome:
        """Run `fn(bind)` behind the barrier of `key`, in the same transaction as the
        barrier's rows; its return value is stored and replayed to repeats. `fn` is not
        called for a repeat, a null compensation or a late action (see `Outcome`). An
        exception from `fn` rolls back its writes and the barrier's: a retry can act."""
        with self.guard(bind, key) as call:
            if call.should_run:
                call.result = fn(bind)
        return call.outcome

    def call(self, key: BarrierKey | None, fn: Callable[[Any], Any]) -> Outcome:
        """`run` on a connection (or session) of its own, from `bind`. With `key` None,
        `fn` runs in a plain transaction of its own, without a barrier (its value as is)."""
        if self.bind is None:
            raise RuntimeError("SqlBarrier.call needs SqlBarrier(bind=<Engine or sessionmaker>)")
        if isinstance(self.bind, Engine):
            with self.bind.connect() as conn:
                return self._call(conn, key, fn)
        with self.bind() as session:
            return self._call(session, key, fn)

    def _call(self, handle: B, key: BarrierKey | None, fn: Callable[[B], Any]) -> Outcome:
        if key is None:
            with self._transaction(handle):
                return Outcome(None, Decision.RUN, fn(handle))
        return self.run(handle, key, fn)

    # --- internals --------------------------------------------------------------------------
    @contextmanager
    def _transaction(self, bind: Connection | Session) -> Iterator[Connection]:
        if isinstance(bind, Session):
            with bind.begin_nested() if bind.in_transaction() else bind.begin():
                yield bind.connection()
        elif isinstance(bind, Connection):
            with bind.begin_nested() if bind.in_transaction() else bind.begin():
                yield bind
        else:
            raise TypeError(f"a SQLAlchemy Connection or Session is needed, not {bind!r}")

    def _where(self, saga_id: str, step: str, op: str) -> ColumnElement[bool]:
        c = self.table.c
        return and_(c.saga_id == saga_id, c.step == step, c.op == op)

    def _claim(self, conn: Connection, k: BarrierKey) -> tuple[Decision, Any]:
        if k.op == ACTION:
            if self._insert(conn, k.saga_id, k.step, ACTION, DONE):
                return Decision.RUN, None
            state, result = self._read(conn, k.saga_id, k.step, ACTION)
            if state == BLOCKED:
                return Decision.CANCELLED, None
            return Decision.REPLAY, result
        if not self._insert(conn, k.saga_id, k.step, COMPENSATION, DONE):
            state, result = self._read(conn, k.saga_id, k.step, COMPENSATION)
            if state == NULL:
                return Decision.NULL_COMPENSATION, None
            return Decision.REPLAY, result
        if self._insert(conn, k.saga_id, k.step, ACTION, BLOCKED):
            conn.execute(
                update(self.table)
                .where(self._where(k.saga_id, k.step, COMPENSATION))
                .values(state=NULL)
            )
            return Decision.NULL_COMPENSATION, None
        return Decision.RUN, None

    def _insert(self, conn: Connection, saga_id: str, step: str, op: str, state: str) -> bool:
        """Insert the row unless one with its key exists; True if this call inserted it."""
        values = {
            "saga_id": saga_id,
            "step": step,
            "op": op,
            "state": state,
            "result": None,
            "created_at": datetime.now(UTC),
        }
        keys = ["saga_id", "step", "op"]
        dialect = conn.dialect.name
        if dialect in ("postgresql", "sqlite"):
            # RETURNING, not rowcount: SQLAlchemy does not promise an INSERT's rowcount.
            module = postgresql if dialect == "postgresql" else sqlite
            stmt = (
                module.insert(self.table)
                .values(values)
                .on_conflict_do_nothing(index_elements=keys)
                .returning(self.table.c.op)
            )
            return conn.execute(stmt).first() is not None
        try:
            with conn.begin_nested():
                conn.execute(insert(self.table).values(values))
        except IntegrityError:
            return False
        return True

    def _read(self, conn: Connection, saga_id: str, step: str, op: str) -> tuple[str, Any]:
        row = conn.execute(
            select(self.table.c.state, self.table.c.result).where(self._where(saga_id, step, op))
        ).one_or_none()
        if row is None:  # deleted between the INSERT and this SELECT: only purge does that
            raise RuntimeError(
                f"the barrier row {saga_id}:{step}:{op} vanished while being read (purged?); "
                "retry the call"
            )
        return str(row.state), row.result
