"""Health of every component of a deployment, each with its evidence, read from Redis.

A deployment is more than Redis and a worker: without Celery beat no sweep runs (PENDING sagas
are never admitted, no deadline is ever acted on, lost messages are never re-driven), and
without the `events` consumer an event step waits for its reply forever. Each component
reports `{"status": ..., evidence...}`:

- `redis`: reachable; *unhealthy* when it is not (or refuses reads).
- `workers`: the workers whose heartbeat is recent; *unhealthy* when there is none.
- `beat`: the last completed sweep and its lag; *degraded* when there was none within
  `sweep_lag_limit` (a few sweep intervals).
- `events`: the consumers that beat recently, the group's pending entries and lag (entries
  not delivered yet), the event steps waiting for a reply; *degraded* when no consumer runs
  while steps wait or events are undelivered.
- `queues`: the broker's queue depths and unacknowledged messages; *degraded* when sweeps pile
  up (no worker consumes the sweep queue).
- `timers`: how overdue the oldest due timer is; *degraded* past `sweep_lag_limit`.

The deployment is `unhealthy` (HTTP 503) when a component is; else `degraded` (HTTP 200) when
one is; else `healthy`. Sagas still move when it is degraded, but something they may need
(a deadline, a reply, admission) does not happen. Nothing here imports Flask or Celery: the
broker's keys are read as kombu's Redis transport writes them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import redis

from sagas.events import GROUP, RECLAIMER
from sagas.model import SagaStatus
from sagas.records import iso, text
from sagas.settings import Settings
from sagas.store import RedisStore

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
# The sweep is late when its lag exceeds this many sweep intervals (at least the minimum: a
# sweep over a backlog may take a few seconds, and a worker busy with steps may start it late).
SWEEP_LAG_INTERVALS = 3
SWEEP_LAG_MIN_SECONDS = 10.0
# More sweeps than this queued: they are not being consumed (each expires after one interval).
SWEEP_BACKLOG = 3
# RUNNING sagas read at most to count the event steps waiting (MAX_CONCURRENT_SAGAS bounds
# them; past this the count is a lower bound, `waiting_counted_all` false).
WAITING_SCAN_LIMIT = 1000
# Entries counted at most when Redis cannot tell a group's lag (after XDEL or some trims).
LAG_COUNT_LIMIT = 1000
# kombu's Redis transport: a queue is the list `<global_keyprefix><queue>`; a message with a
# priority goes to `<queue>\x06\x16<step>` (its default steps 3, 6, 9); delivered messages
# not yet acknowledged are in the hash `<global_keyprefix>unacked`.
KOMBU_PRIORITY_SEPARATOR = "\x06\x16"
KOMBU_PRIORITY_STEPS = (3, 6, 9)


@dataclass
class HealthReport:
    """The deployment's status, each component's `{"status", evidence...}`, the sagas per
    status (empty when Redis could not be read) and the live workers."""

    status: str
    components: dict[str, dict[str, Any]]
    counts: dict[str, int] = field(default_factory=dict)
    workers: list[str] = field(default_factory=list)

    @property
    def http_status(self) -> int:
        return 503 if self.status == UNHEALTHY else 200


def sweep_lag_limit(settings: Settings) -> float:
    """Seconds without a completed sweep after which beat counts as absent (and a timer
    due that long as overdue): SWEEP_LAG_INTERVALS intervals, at least SWEEP_LAG_MIN_SECONDS."""
    return max(SWEEP_LAG_INTERVALS * settings.sweep_interval_seconds, SWEEP_LAG_MIN_SECONDS)


def record_sweep(store: RedisStore, took_seconds: float) -> None:
    """Called when a sweep completed: its time (Redis clock), duration and a count."""
    now = store.now_ms()
    pipe = store.redis.pipeline(transaction=False)
    pipe.hset(store.keys.sweep, mapping={"at": now, "took_ms": round(took_seconds * 1000)})
    pipe.hincrby(store.keys.sweep, "count", 1)
    pipe.execute()


def check(store: RedisStore, settings: Settings, heartbeat_seconds: float) -> HealthReport:
    """Every component's health. A worker (or event consumer) is alive if it beat within
    `heartbeat_seconds` (SAGA_WORKER_HEARTBEAT_SECONDS)."""
    try:
        return _check(store, settings, heartbeat_seconds)
    except redis.RedisError as exc:
        redis_down = {"status": UNHEALTHY, "reachable": False, "error": str(exc)[:200]}
        return HealthReport(UNHEALTHY, {"redis": redis_down})


def _check(store: RedisStore, settings: Settings, heartbeat_seconds: float) -> HealthReport:
    keys = store.keys
    now = store.now_ms()
    queues = list(dict.fromkeys([settings.queue, settings.sweep_queue]))
    pipe = store.redis.pipeline(transaction=False)
    for status in SagaStatus:
        pipe.zcard(keys.status(status))
    pipe.hgetall(keys.sweep)
    pipe.zrange(keys.timers, 0, 0, withscores=True)
    pipe.zcount(keys.timers, "-inf", now)
    for queue in queues:
        for name in _queue_keys(settings.broker_key_prefix, queue):
            pipe.llen(name)
    pipe.hlen(f"{settings.broker_key_prefix}unacked")
    replies = iter(pipe.execute())
    counts = {status.value: int(next(replies)) for status in SagaStatus}
    sweep = {text(k): text(v) for k, v in next(replies).items()}
    oldest_timer, due_timers = next(replies), int(next(replies))
    depths = {
        q: sum(int(next(replies)) for _ in range(1 + len(KOMBU_PRIORITY_STEPS))) for q in queues
    }
    unacked = int(next(replies))
    workers = store.workers_alive(heartbeat_seconds)
    consumers = store.workers_alive(heartbeat_seconds, key=keys.event_consumers)
    limit = sweep_lag_limit(settings)
    components = {
        "redis": {"status": HEALTHY, "reachable": True},
        "workers": _workers(workers, heartbeat_seconds),
        "beat": _beat(sweep, now, limit, settings, depths.get(settings.sweep_queue, 0)),
        "events": _events(store, consumers, heartbeat_seconds, now),
        "queues": _queues(depths, unacked, settings.sweep_queue),
        "timers": _timers(oldest_timer, due_timers, now, limit),
    }
    return HealthReport(
        _overall(c["status"] for c in components.values()), components, counts, workers
    )


def _overall(statuses: Iterable[str]) -> str:
    seen = set(statuses)
    return UNHEALTHY if UNHEALTHY in seen else DEGRADED if DEGRADED in seen else HEALTHY


def _queue_keys(prefix: str, queue: str) -> list[str]:
    return [f"{prefix}{queue}"] + [
        f"{prefix}{queue}{KOMBU_PRIORITY_SEPARATOR}{step}" for step in KOMBU_PRIORITY_STEPS
    ]


def _seconds(ms: float) -> float:
    return round(ms / 1000, 3)


def _workers(alive: list[str], window: float) -> dict[str, Any]:
    component: dict[str, Any] = {
        "status": HEALTHY if alive else UNHEALTHY,
        "alive": len(alive),
        "names": sorted(alive),
        "heartbeat_window_seconds": window,
    }
    if not alive:
        component["reason"] = f"no worker heartbeat within {window:g} s"
    return component


def _beat(
    sweep: dict[str, str], now: int, limit: float, settings: Settings, queued: int
) -> dict[str, Any]:
    """The sweep beat schedules and a worker runs: when the last one completed."""
    component: dict[str, Any] = {
        "status": HEALTHY,
        "last_sweep_at": iso(sweep.get("at")),
        "lag_seconds": None,
        "sweep_took_ms": int(sweep["took_ms"]) if sweep.get("took_ms") else None,
        "sweeps": int(sweep.get("count") or 0),
        "interval_seconds": settings.sweep_interval_seconds,
        "lag_limit_seconds": limit,
    }
    if sweep.get("at"):
        component["lag_seconds"] = lag = _seconds(max(0, now - int(sweep["at"])))
        late = lag > limit
        reason = f"no sweep for {lag:g} s (limit {limit:g} s)"
    else:
        late, reason = True, "no sweep recorded yet"
    if late:
        component["status"] = DEGRADED
        where = (
            f"{queued} sweeps wait in queue {settings.sweep_queue!r}: does a worker consume it?"
            if queued
            else "is `saga-orchestrator beat` running?"
        )
        component["reason"] = f"{reason}: {where}"
    return component


def _events(store: RedisStore, alive: list[str], window: float, now: int) -> dict[str, Any]:
    """The `events` consumer group: who reads the stream, and what waits for it."""
    stream = store.keys.events
    group = _group(store.redis, stream)
    if group is None:  # no consumer ever started (nor a sweep): every entry is undelivered
        pending, lag, lag_exact, idle = 0, int(store.redis.xlen(stream)), True, None
    else:
        pending = int(group.get("pending") or 0)
        lag, lag_exact = _lag(store.redis, stream, group)
        idle = _idle_seconds(store.redis, stream)
    scan: Any = _script(store, "waiting")(
        keys=[store.keys.status(SagaStatus.RUNNING)],
        args=[store.keys.prefix, WAITING_SCAN_LIMIT],
    )
    waiting, oldest, read = int(scan[0]), scan[1], int(scan[2])
    component: dict[str, Any] = {
        "status": HEALTHY,
        "consumers": len(alive),
        "names": sorted(alive),
        "heartbeat_window_seconds": window,
        "idle_seconds": idle,
        "pending": pending,
        "lag": lag,
        "lag_exact": lag_exact,
        "waiting_event_steps": waiting,
        "waiting_counted_all": read < WAITING_SCAN_LIMIT,
        "oldest_wait_seconds": _seconds(max(0, now - int(oldest))) if oldest else None,
    }
    if not alive:
        if waiting or lag:
            component["status"] = DEGRADED
            what = f"{waiting} event steps wait for replies" if waiting else ""
            what += (" and " if waiting and lag else "") + (f"{lag} events wait" if lag else "")
            component["reason"] = (
                f"{what}, and no events consumer beat within {window:g} s: is "
                "`saga-orchestrator events` running?"
            )
        else:
            component["note"] = "no events consumer; nothing waits for one"
    return component


def _group(client: redis.Redis, stream: str) -> dict[str, Any] | None:
    try:
        groups: Any = client.xinfo_groups(stream)
    except redis.ResponseError:  # no such key: nothing was ever published
        return None
    for group in groups:
        if text(group.get("name")) == GROUP:
            return {text(k): text(v) for k, v in group.items()}
    return None


def _lag(client: redis.Redis, stream: str, group: dict[str, Any]) -> tuple[int, bool]:
    """Entries not yet delivered to the group: Redis's own count when it knows it (7.0+),
    else counted from the last delivered id (at most LAG_COUNT_LIMIT)."""
    if group.get("lag") is not None:
        return int(group["lag"]), True
    after: Any = client.xrange(stream, f"({group['last-delivered-id']}", "+", LAG_COUNT_LIMIT)
    return len(after), len(after) < LAG_COUNT_LIMIT


def _idle_seconds(client: redis.Redis, stream: str) -> float | None:
    """Redis's `idle` of the group's least idle consumer (the sweep's reclaimer left out):
    since its last read attempt on Redis 7.2+, since its last delivery before."""
    consumers: Any = client.xinfo_consumers(stream, GROUP)
    idles = [int(c["idle"]) for c in consumers if text(c.get("name")) != RECLAIMER]
    return _seconds(min(idles)) if idles else None


def _queues(depths: dict[str, int], unacked: int, sweep_queue: str) -> dict[str, Any]:
    component: dict[str, Any] = {"status": HEALTHY, "depths": depths, "unacked": unacked}
    if depths.get(sweep_queue, 0) > SWEEP_BACKLOG:
        component["status"] = DEGRADED
        component["reason"] = (
            f"{depths[sweep_queue]} sweeps wait in queue {sweep_queue!r}: no worker consumes "
            f"it (a worker started with -Q must name it too)"
        )
    return component


def _timers(oldest: Any, due: int, now: int, limit: float) -> dict[str, Any]:
    """The timers sorted set: what the sweep should act on; how late the oldest due one is."""
    overdue = _seconds(max(0, now - int(oldest[0][1]))) if oldest else 0.0
    component: dict[str, Any] = {
        "status": HEALTHY,
        "due": due,
        "oldest_overdue_seconds": overdue,
        "overdue_limit_seconds": limit,
    }
    if overdue > limit:
        component["status"] = DEGRADED
        component["reason"] = (
            f"a timer (deadline or sign of life) is {overdue:g} s overdue: the sweep is not "
            "keeping up, or not running"
        )
    return component


def _script(store: RedisStore, name: str) -> Any:
    """A standalone script of sagas/lua on the store's client (EVALSHA, loaded on first use)."""
    return store.redis.register_script(_source(name))


@functools.cache
def _source(name: str) -> str:
    return resources.files("sagas").joinpath(f"lua/{name}.lua").read_text()
