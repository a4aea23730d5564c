"""The barrier in Redis, for services whose own state is in Redis (needs `redis`).

The barrier record and the business writes go out in ONE MULTI/EXEC, after a WATCH on the
barrier's key (and on any key the business logic reads), so either both are applied or
neither is::

    import redis
    from participant.redis import RedisBarrier

    barrier = RedisBarrier(redis.Redis(), prefix="billing:barrier:")

    def reserve(tx):
        left = int(tx.read.get("quota:ws1") or 0)  # reads: immediate, on WATCHed keys
        if left < 10:
            raise QuotaExceeded()                    # nothing written, nothing recorded
        tx.write.decrby("quota:ws1", 10)             # writes: queued in the MULTI
        tx.write.hset(f"reservation:{rid}", mapping={"units": 10})
        return {"id": rid, "remaining": left - 10}   # stored with the writes, replayed

    outcome = barrier.run(key, reserve, watch=["quota:ws1"])

How one call goes: WATCH the branch's hash `<prefix><saga_id>:<step>` (fields `action`
and `compensation`, each a JSON record, see `participant.core`) and the `watch` keys; read
the records; decide (`participant.core.decide`). On RUN, call `fn(tx)`, then EXEC its
queued writes together with the new record. If any watched key changed meanwhile (a
concurrent call with the same branch, or a write to a key `fn` read), EXEC fails and the
whole call starts again from the WATCH, so of two concurrent calls with the same key
exactly one is applied and the other replays its result. A null compensation writes the
compensation's `null` record and the action's `blocked` record in one MULTI too.

`fn`'s contract (the guarantee depends on it):
- it reads through `tx.read` (read commands only, run at once) and writes only through
  `tx.write` (the MULTI pipeline: commands are queued, their replies are not available);
  after the first `tx.write`, `tx.read` refuses;
- it may be called more than once (after a WATCH conflict), so it must have no effect
  other than its queued writes;
- it computes its result before EXEC: the result cannot depend on the writes' replies.

Limits, honestly:
- Redis does not roll back a MULTI: a queued command that fails when executed (WRONGTYPE,
  out of memory) does not stop the others, the barrier record included. The call then
  raises the error, but the record and the other writes stand. Such errors are
  programming or capacity errors; keep your keys' types right and Redis under maxmemory.
- The record is as durable as Redis: AOF `appendfsync always` loses nothing acknowledged;
  `everysec` can lose the last second, record and business writes together (consistent,
  but an orchestrator that saw the answer may find the effect gone). No persistence loses
  both at a restart.
- Redis Cluster: a MULTI must stay within one hash slot. Choose a prefix with a hash tag
  shared by your keys (e.g. `{tenant42}:barrier:` and `{tenant42}:quota`), or do not use
  Cluster.
- Records are kept forever unless `ttl_seconds` is given; an expired record protects
  nothing (see `SqlBarrier.purge` for the same trade-off).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import redis

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

__all__ = ["READ_COMMANDS", "BarrierContention", "RedisBarrier", "RedisTx"]

# redis-py methods that only read: what `tx.read` lets through.
READ_COMMANDS = frozenset(
    {
        "bitcount",
        "exists",
        "get",
        "getbit",
        "getrange",
        "hexists",
        "hget",
        "hgetall",
        "hkeys",
        "hlen",
        "hmget",
        "hstrlen",
        "hvals",
        "lindex",
        "llen",
        "lpos",
        "lrange",
        "mget",
        "pfcount",
        "pttl",
        "scard",
        "sismember",
        "smembers",
        "smismember",
        "strlen",
        "ttl",
        "type",
        "xlen",
        "xrange",
        "xrevrange",
        "zcard",
        "zcount",
        "zmscore",
        "zrange",
        "zrangebyscore",
        "zrank",
        "zrevrange",
        "zrevrangebyscore",
        "zrevrank",
        "zscore",
    }
)


class BarrierContention(RuntimeError):
    """The watched keys kept changing: `max_attempts` WATCH rounds all failed."""


class _ReadOnly:
    """The pipeline before MULTI, reduced to read commands (they run at once)."""

    def __init__(self, tx: RedisTx) -> None:
        self._tx = tx

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name not in READ_COMMANDS:
            raise AttributeError(
                f"tx.read.{name}: only read commands run before the MULTI; write through "
                "tx.write (see participant.redis.READ_COMMANDS)"
            )
        if self._tx.writing:
            raise RuntimeError("tx.read after tx.write: do every read before the first write")
        # Under a WATCH the pipeline runs commands at once; without one (a call without a
        # key: nothing is watched) it would queue them, so reads go to the client.
        target = self._tx.pipe if self._tx.pipe.watching else self._tx.client
        method: Callable[..., Any] = getattr(target, name)
        return method


class RedisTx:
    """What `fn` gets: `read` (read commands, immediate, on watched keys), `watch(*keys)`
    (watch more keys before reading them) and `write` (the MULTI pipeline)."""

    def __init__(self, client: redis.Redis, pipe: redis.client.Pipeline) -> None:
        self.client = client
        self.pipe = pipe
        self.writing = False
        self.read: Any = _ReadOnly(self)

    def watch(self, *keys: str) -> None:
        """Watch more keys (e.g. one whose name came from a read). Before any write."""
        if self.writing:
            raise RuntimeError("tx.watch after tx.write: watch every key before the first write")
        self.pipe.watch(*keys)  # type: ignore[no-untyped-call]

    @property
    def write(self) -> redis.client.Pipeline:
        """The pipeline in MULTI mode: every command is queued for the EXEC."""
        if not self.writing:
            self.pipe.multi()
            self.writing = True
        return self.pipe


class RedisBarrier:
    """Barrier records in Redis under `prefix` (see the module docstring).

    `max_attempts` bounds the WATCH rounds of one call (BarrierContention after that);
    `ttl_seconds`, when given, makes each branch's record expire that long after its
    last write.
    """

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "barrier:",
        *,
        ttl_seconds: int | None = None,
        max_attempts: int = 50,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds
        self.max_attempts = max_attempts

    def redis_key(self, key: BarrierKey | str) -> str:
        """The hash holding the branch's records."""
        k = BarrierKey.of(key)
        return f"{self.prefix}{k.saga_id}:{k.step}"

    def records(self, key: BarrierKey | str) -> dict[str, Any]:
        """The branch's records by operation ("action", "compensation"), for inspection."""
        raw = self.client.hgetall(self.redis_key(key))
        return {_text(op): json.loads(value) for op, value in raw.items()}

    def run(
        self,
        key: BarrierKey | str,
        fn: Callable[[RedisTx], Any],
        *,
        watch: Iterable[str] = (),
    ) -> Outcome:
        """Run `fn(tx)` behind the barrier of `key`: its queued writes and the barrier
        record are applied in one MULTI/EXEC, or not at all. An exception from `fn`
        discards its writes and records nothing: a retry can act."""
        k = BarrierKey.of(key)
        hash_key = self.redis_key(k)
        watched = [hash_key, *watch]
        for _ in range(self.max_attempts):
            with self.client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(*watched)  # type: ignore[no-untyped-call]
                    action, compensation = (
                        None if raw is None else json.loads(raw)
                        for raw in pipe.hmget(hash_key, [ACTION, COMPENSATION])
                    )
                    decision, stored = decide(k.op, action, compensation)
                    if decision is Decision.NULL_COMPENSATION and compensation is None:
                        pipe.multi()
                        pipe.hset(
                            hash_key,
                            mapping={
                                ACTION: json.dumps({"state": BLOCKED}),
                                COMPENSATION: json.dumps({"state": NULL}),
                            },
                        )
                        self._expire(pipe, hash_key)
                        pipe.execute()
                    if decision is not Decision.RUN:
                        return Outcome(k, decision, stored)
                    tx = RedisTx(self.client, pipe)
                    value = json_value(fn(tx))
                    tx.write.hset(hash_key, k.op, json.dumps(done(value)))
                    self._expire(pipe, hash_key)
                    pipe.execute()
                    return Outcome(k, Decision.RUN, value)
                except redis.WatchError:
                    continue
        raise BarrierContention(
            f"{k}: the watched keys changed during each of {self.max_attempts} attempts"
        )

    def call(self, key: BarrierKey | None, fn: Callable[[Any], Any]) -> Outcome:
        """`run`, for `participant.flask`; with `key` None, `fn(tx)`'s writes are applied
        in a MULTI of their own, without a barrier (and its reads watch nothing)."""
        if key is not None:
            return self.run(key, fn)
        with self.client.pipeline(transaction=True) as pipe:
            tx = RedisTx(self.client, pipe)
            value = fn(tx)
            if tx.writing:
                pipe.execute()
            return Outcome(None, Decision.RUN, value)

    def _expire(self, pipe: redis.client.Pipeline, hash_key: str) -> None:
        if self.ttl_seconds is not None:
            pipe.expire(hash_key, self.ttl_seconds)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
