"""What the operator dashboard (`app/ui`) shows at a glance, read from the store's indexes.

Every read here is bounded whatever the number of stored sagas: counts are ZCARD/ZCOUNT of the
indexes (O(1) and O(log N)), the oldest sagas of a status are the first ranks of its index
(O(log N + limit)), and nothing scans the keyspace. Nothing here imports Flask.
"""

from __future__ import annotations

from dataclasses import dataclass

from sagas.model import SagaRecord, SagaStatus
from sagas.records import document, iso, text
from sagas.store import RedisStore

MINUTE_MS = 60_000
# Saga types read from the counters at most (a deployment has a handful of workflows).
MAX_TYPES = 200


@dataclass(frozen=True)
class Minute:
    """Sagas created in one minute (`start`: ISO-8601 UTC of its first millisecond)."""

    start: str
    created: int


def created_per_minute(store: RedisStore, minutes: int = 30) -> list[Minute]:
    """Sagas created in each of the last `minutes` whole minutes and the current one, oldest
    first (from `idx:all`, scored by creation time; Redis's clock). One ZCOUNT per minute,
    in one round trip. Sagas deleted since (retention, DELETE) are not counted."""
    now = store.now_ms()
    current = now - now % MINUTE_MS
    starts = [current - k * MINUTE_MS for k in range(minutes, -1, -1)]
    pipe = store.redis.pipeline(transaction=False)
    for start in starts:
        pipe.zcount(store.keys.all, start, f"({start + MINUTE_MS}")
    return [
        Minute(iso(start) or "", int(count))
        for start, count in zip(starts, pipe.execute(), strict=True)
    ]


def oldest(store: RedisStore, status: str, limit: int = 10) -> list[SagaRecord]:
    """The `limit` oldest sagas (by creation time) now in `status`, oldest first."""
    ids = [str(text(i)) for i in store.redis.zrange(store.keys.status(status), 0, limit - 1)]
    pipe = store.redis.pipeline(transaction=False)
    for saga_id in ids:
        pipe.hgetall(store.keys.saga(saga_id))
    return [
        document({text(k): text(v) for k, v in raw.items()})
        for raw in pipe.execute()
        if raw  # finished and deleted between the two calls
    ]


def saga_types(store: RedisStore) -> list[str]:
    """The saga types ever started here (the `started|<type>` counters), sorted; at most
    MAX_TYPES. Types are not indexed otherwise, and listing them must not scan keys."""
    fields = store.redis.hkeys(store.keys.stats)
    types = sorted(
        str(text(f))[len("started|") :] for f in fields if str(text(f)).startswith("started|")
    )
    return types[:MAX_TYPES]


def counts_by_type(store: RedisStore) -> dict[str, dict[str, int]]:
    """For each saga type (`saga_types`), how many sagas are in each status now (the
    `idx:ts:<type>:<status>` indexes the transitions keep). Types with none left are left
    out."""
    types = saga_types(store)
    pipe = store.redis.pipeline(transaction=False)
    for saga_type in types:
        for status in SagaStatus:
            pipe.zcard(store.keys.type_status(saga_type, status))
    replies = iter(pipe.execute())
    out: dict[str, dict[str, int]] = {}
    for saga_type in types:
        counts = {status.value: int(next(replies)) for status in SagaStatus}
        if any(counts.values()):
            out[saga_type] = counts
    return out
