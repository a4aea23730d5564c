"""participant: the saga participant's side of the contract, as a library.

The orchestrator calls a service at least once per operation, under
`Idempotency-Key: <saga_id>:<step>:<action|compensation>`. A timeout does not stop the
service: an action the orchestrator gave up on can still take effect after its
compensation ran, and a compensation can reach a service that never saw the action. Only
the service can sort this out, in its own database, with a *barrier* keyed by
(saga id, step, operation):

- idempotency: each operation runs at most once per key; a repeat gets the first result;
- null compensation: a compensation for an action never applied records itself and does
  nothing;
- no late action: an action arriving after its compensation was recorded does nothing.

The barrier's record and the business writes commit in one local transaction (SQL) or
one MULTI/EXEC (Redis), so a crash cannot split them.

Modules (only `core` is imported here: the others need their extra packages):
- `participant.core`: `BarrierKey` (parsing the key), `Decision`, `Outcome`, `decide`;
- `participant.sql`: `SqlBarrier` over SQLAlchemy (PostgreSQL, SQLite);
- `participant.redis`: `RedisBarrier` (WATCH + MULTI/EXEC);
- `participant.memory`: `MemoryBarrier`, for demos and tests only;
- `participant.flask`: `barrier_endpoint`, a decorator for Flask views.

See docs/reliability.md, "The participant's side: the barrier".
"""

from participant.core import (
    ACTION,
    COMPENSATION,
    BarrierKey,
    Decision,
    InvalidKey,
    Outcome,
    Runner,
    decide,
)

__all__ = [
    "ACTION",
    "COMPENSATION",
    "BarrierKey",
    "Decision",
    "InvalidKey",
    "Outcome",
    "Runner",
    "decide",
]
