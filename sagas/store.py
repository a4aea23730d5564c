"""The Redis state store: Lua transitions and reads (key names: `sagas.keys`; encoding and
documents: `sagas.records`).

One saga is a hash `<prefix>{<id>}` and a history list `<prefix>{<id>}:history` (one hash
tag, one Cluster slot). Its definition is stored once for every saga that shares it, under
its digest (`<prefix>def:<digest>`). Global indexes serve listing and sweeps without SCAN:
status, type, type and status together, correlation id and creation time (sorted sets
scored by creation epoch ms), `timers` (saga, step and compensation deadlines), `finished`
(for retention) and `stats` (metric counters). A saga that reaches COMPLETED or COMPENSATED
is repacked without what only a running saga needs (docs/performance.md).
Every transition is one Lua script (see `sagas/lua/`): it checks the saga's status, the step's
status and the step's fence (lease + attempt), writes, bumps the saga version, appends the
history and updates indexes and counters atomically, using Redis's clock. Every call carries
a call id, so that a resent call is answered without acting twice (lua/lib.lua).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from sagas.definition import SagaDefinition
from sagas.errors import SagaNotFound
from sagas.keys import Keys
from sagas.model import SagaRecord
from sagas.records import document, dumps, iso, text

# Transitions share lua/lib.lua (prepended); the others stand alone.
TRANSITIONS = (
    "create",
    "step_begin",
    "step_retry",
    "step_complete",
    "step_fail",
    "compensate",
    "comp_begin",
    "comp_retry",
    "comp_complete",
    "comp_fail",
    "delete",
    "sweep",
    "promote",
    "step_wait",
    "event",
    "cancel",
    "resolve",
    "retry_now",
    "rerun",
)
STANDALONE = ("list", "heartbeat", "workers_alive", "unlock")
# Parsed definitions a process keeps (by digest); sagas of one template share one.
DEFINITIONS_CACHED = 1024
# An execution's bound when its caller (a test, a tool) names none: 10 minutes.
DEFAULT_BOUND_MS = 600_000
# Upper bounds (seconds) of the saga duration histogram, counted by the transitions.
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
# Listing by correlation id with a status or type filter (RedisStore._scan): sagas one script
# call reads at most, and how many a listing reads at least to count its total.
LIST_CHUNK = 1000
LIST_COUNT_LIMIT = 10_000


@dataclass(frozen=True)
class Reply:
    """A transition's answer: `code` and the values after it (strings, or None for nil)."""

    code: str
    values: list[Any]
    # Completion webhooks the transition queued in the outbox (lua/lib.lua flush_outbox).
    webhooks: tuple[str, ...] = ()


@dataclass(frozen=True)
class Grant:
    """Permission to make an attempt, with what the attempt needs to render its call."""

    attempt: int
    remaining_ms: int  # until the step's (or compensation's) deadline, by Redis's clock
    payload: dict[str, Any]
    definition: list[dict[str, Any]]
    correlation_id: str
    saga_type: str
    outputs: dict[str, Any]  # step name -> output, for steps that have one
    traceparent: str = ""  # the saga's trace context (sagas/tracing.py), "" for none


@dataclass(frozen=True)
class Idempotency:
    """An Idempotency-Key claim: `scope` (the client, e.g. its API key), the client's `key`,
    a `fingerprint` of the request (a different request under the same key is refused)."""

    scope: str
    key: str
    fingerprint: str
    ttl_seconds: int


@dataclass(frozen=True)
class ListQuery:
    status: str | None = None
    saga_type: str | None = None
    correlation_id: str | None = None
    created_after: int | None = None  # epoch ms, exclusive
    created_before: int | None = None  # epoch ms, exclusive
    page: int = 1
    page_size: int = 50


# The client's own retries of a command whose connection failed or timed out: about 15 s in
# all. Every transition is safe to resend (it carries a call id, see lua/lib.lua), so a
# dropped reply is a resend, not an error.
CLIENT_RETRIES = 12


def connect(url: str, retries: int = CLIENT_RETRIES, **options: Any) -> redis.Redis:
    """A client for the store (and anything else of ours on that Redis) that resends a
    command after a connection error or a timeout, `retries` times, with exponential backoff
    and jitter (`SAGA_REDIS_RETRIES`; `Redis.from_url` alone does not retry)."""
    retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=2), retries)
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        retry=retry,
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        **options,
    )


class RedisStore:
    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "saga:",
        history_limit: int = 500,
        *,
        redrive_after_seconds: float = 60,
        max_running: int = 100,
        clock_key: str = "",
        webhook_redrive_seconds: float = 60,
    ):
        self.redis = client
        self.keys = Keys(prefix)
        # Tests only: a key holding the time (epoch ms) every transition uses instead of
        # Redis's clock, so that a test moves time forward instead of sleeping.
        self.clock_key = clock_key
        lib = (
            _read("lib")
            .replace("__HISTORY_LIMIT__", str(int(history_limit)))
            .replace("__DURATION_BUCKETS__", ", ".join(f"{b:g}" for b in DURATION_BUCKETS))
            .replace("__REDRIVE_MS__", str(int(redrive_after_seconds * 1000)))
            .replace("__MAX_RUNNING__", str(int(max_running)))
            .replace("__KEY_PREFIX__", "".join(f"\\{b}" for b in prefix.encode()))
            .replace("__CLOCK_KEY__", "".join(f"\\{b}" for b in clock_key.encode()))
            .replace("__WEBHOOK_REDRIVE_MS__", str(int(webhook_redrive_seconds * 1000)))
        )
        self._scripts = {
            **{name: client.register_script(_transition(lib, name)) for name in TRANSITIONS},
            **{name: client.register_script(_read(name)) for name in STANDALONE},
        }
        self._definitions: dict[str, list[dict[str, Any]]] = {}  # digest -> steps
        # Called with the ids of the webhooks a transition queued (sagas/webhooks.py sends
        # them); without one, the sweep finds them once they are due.
        self.on_webhooks: Callable[[Sequence[str]], None] | None = None

    def transition(
        self,
        name: str,
        saga_id: str,
        args: Sequence[Any],
        extra_keys: Sequence[str] = (),
        call: str | None = None,
    ) -> Reply:
        """Run transition `name` (lua/<name>.lua) on saga `saga_id`; `extra_keys` follow the
        common keys (lua/lib.lua). `call` identifies the call: the same id again (a resend
        after a lost reply) gets the first call's reply and changes nothing (lib.lua)."""
        keys = [*self.keys.transition(saga_id), *extra_keys]
        raw = self._invoke(name, keys, [*args, call or new_call_id()])
        webhooks: tuple[str, ...] = ()
        if raw and isinstance(raw[-1], list):  # appended by lib.lua flush_outbox
            webhooks = tuple(str(text(w)) for w in raw.pop())
            if webhooks and self.on_webhooks is not None:
                self.on_webhooks(webhooks)
        values = [None if v is None else str(text(v)) for v in raw[1:]]
        return Reply(text(raw[0]), values, webhooks)

    def _invoke(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run script `name` (a subclass may queue it on a pipeline instead)."""
        return self._scripts[name](keys=keys, args=args)

    # --- transitions -------------------------------------------------------------------
    def create(
        self,
        saga_id: str,
        definition: SagaDefinition,
        correlation_id: str,
        idempotency: Idempotency | None = None,
        origin: dict[str, Any] | None = None,
        traceparent: str = "",
    ) -> Reply:
        """Write a new RUNNING saga (`origin`: for a rerun, where it comes from: `rerun_of`,
        `actor`, `reason`, `data`, see sagas/repair.py; `traceparent`: the saga's trace
        context, handed to every execution, sagas/tracing.py). A repeat with the same id answers
        `exists`; with an `idempotency` claim, a key already used answers `idempotent`
        (same request) or `idempotency_conflict` (another request), both with the saga id
        it points at."""
        steps_json = dumps([s.to_json() for s in definition.steps])
        digest = hashlib.sha256(steps_json.encode()).hexdigest()[:32]
        args: list[Any] = [
            saga_id,
            definition.saga_type,
            correlation_id,
            dumps(definition.payload),
            steps_json,
            int(definition.timeout_seconds * 1000),
            idempotency.fingerprint if idempotency else "",
            idempotency.ttl_seconds if idempotency else 0,
            digest,
            dumps(origin) if origin else "",
            dumps(definition.webhook.to_json()) if definition.webhook else "",
            traceparent,
        ]
        for step in definition.steps:
            awaited = step.action.spec.get("await", {}) if step.action.kind == "event" else {}
            args += [
                step.name,
                "1" if step.compensation else "0",
                int(step.timeout_seconds * 1000),
                step.retry.max_attempts,
                awaited.get("success", ""),
                awaited.get("failure", ""),
            ]
        extra = [
            self.keys.all,
            self.keys.saga_type(definition.saga_type),
            self.keys.correlation(correlation_id),
            self.keys.idempotency(idempotency.scope, idempotency.key)
            if idempotency
            else self.keys.scratch(),
            self.keys.definition(digest),
            self.keys.definitions,
        ]
        return self.transition("create", saga_id, args, extra)

    def event(
        self, saga_id: str, event_type: str, data_json: str, event_id: str, step: str = ""
    ) -> Reply:
        """Apply an incoming event to the saga, as the reply of `step` if it names one (see
        lua/event.lua for the answers)."""
        return self.transition("event", saga_id, [event_type, data_json, event_id, step])

    def append(self, stream: str, fields: dict[str, str], maxlen: int) -> str:
        """Add an entry to a stream (trimmed to about `maxlen`); its id."""
        entry_id = self.redis.xadd(stream, fields, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
        return str(text(entry_id))

    def read_stream(self, stream: str, count: int) -> list[dict[str, Any]]:
        """The newest `count` entries of a stream, newest first, with their ids."""
        entries: Any = self.redis.xrevrange(stream, count=count)
        return [
            {"id": str(text(i)), **{str(text(k)): text(v) for k, v in (f or {}).items()}}
            for i, f in entries or []
        ]

    def promote(self, saga_id: str) -> Reply:
        """Give PENDING saga `saga_id` a slot if one is free (`promoted`, `full`, `none`)."""
        return self.transition("promote", saga_id, [])

    def sweep(self, timer: str) -> Reply:
        """Act on a due timer (see lua/sweep.lua for the answers)."""
        return self.transition("sweep", timer.split("|")[1], [timer])

    def delete(self, saga_id: str) -> Reply:
        """Delete a COMPLETED or COMPENSATED saga (`deleted`, `missing` or `conflict`)."""
        saga_type, corr, digest, idempotency_key = self.redis.hmget(
            self.keys.saga(saga_id), "type", "corr", "def", "idk"
        )
        if saga_type is None:
            return Reply("missing", [])
        extra = [
            self.keys.all,
            self.keys.saga_type(str(text(saga_type))),
            self.keys.correlation(str(text(corr))),
            self.keys.definition(str(text(digest))),
            self.keys.definitions,
            str(text(idempotency_key)) if idempotency_key else self.keys.scratch(),
        ]
        return self.transition("delete", saga_id, [], extra)

    def step_begin(
        self,
        saga_id: str,
        index: int,
        lease: str,
        bound_ms: int = DEFAULT_BOUND_MS,
        call: str | None = None,
    ) -> Reply:
        """Claim an attempt of step `index` for execution `lease`, which has provably ended
        `bound_ms` from now (its hard time limit); see lua/step_begin.lua. The same `call`
        again is the same claim (same attempt), e.g. carried over a retry by an execution
        that never got the answer."""
        return self.transition("step_begin", saga_id, [index, lease, bound_ms], call=call)

    def step_retry(
        self,
        saga_id: str,
        index: int,
        lease: str,
        attempt: int,
        error: str,
        uncertain: bool,
        countdown_ms: int,
        call: str | None = None,
    ) -> Reply:
        """Record a failed attempt that will be retried in `countdown_ms` (`ok`, `stale`, or
        `compensate` + indexes when the saga is being compensated: the step is settled); the
        sweep re-drives the step if no attempt begins by then (plus grace)."""
        args = [index, lease, attempt, error, _flag(uncertain), countdown_ms]
        return self.transition("step_retry", saga_id, args, call=call)

    def step_complete(
        self,
        saga_id: str,
        index: int,
        lease: str,
        attempt: int,
        output_json: str,
        call: str | None = None,
    ) -> Reply:
        """Record success (`output_json` already encoded); only the execution holding the
        step's fence is accepted, once."""
        args = [index, lease, attempt, output_json]
        return self.transition("step_complete", saga_id, args, call=call)

    def step_fail(
        self,
        saga_id: str,
        index: int,
        lease: str,
        error: str,
        uncertain: bool,
        reason: str,
        call: str | None = None,
    ) -> Reply:
        """Record a final failure and start compensating (`compensate` + indexes)."""
        args = [index, lease, error, _flag(uncertain), reason]
        return self.transition("step_fail", saga_id, args, call=call)

    def step_wait(
        self, saga_id: str, index: int, lease: str, attempt: int, call: str | None = None
    ) -> Reply:
        """An event step's command is out: WAITING (or settled at once by an early reply)."""
        return self.transition("step_wait", saga_id, [index, lease, attempt], call=call)

    def compensate(
        self,
        saga_id: str,
        message: str,
        expected_version: int | None,
        call: str | None = None,
        actor: str = "",
    ) -> Reply:
        """Ask for compensation (`actor`: who asked, for the history); see
        lua/compensate.lua for each status."""
        version = "" if expected_version is None else str(expected_version)
        return self.transition("compensate", saga_id, [message, version, actor], call=call)

    def comp_begin(
        self, saga_id: str, index: int, lease: str, timeout_ms: int, call: str | None = None
    ) -> Reply:
        """Claim an attempt of step `index`'s compensation (the same `call` again: the same
        attempt); see lua/comp_begin.lua."""
        return self.transition("comp_begin", saga_id, [index, lease, timeout_ms], call=call)

    def comp_retry(
        self,
        saga_id: str,
        index: int,
        lease: str,
        attempt: int,
        error: str,
        countdown_ms: int,
        call: str | None = None,
    ) -> Reply:
        """Record a failed compensation attempt that will be retried (`ok` or `stale`)."""
        args = [index, lease, attempt, error, countdown_ms]
        return self.transition("comp_retry", saga_id, args, call=call)

    def comp_complete(
        self, saga_id: str, index: int, lease: str, attempt: int, call: str | None = None
    ) -> Reply:
        """Record a successful compensation (`next`, `saga_compensated`, `duplicate`, `stale`)."""
        return self.transition("comp_complete", saga_id, [index, lease, attempt], call=call)

    def comp_fail(
        self, saga_id: str, index: int, lease: str, error: str, call: str | None = None
    ) -> Reply:
        """Record a compensation that cannot be done: COMPENSATION_FAILED."""
        return self.transition("comp_fail", saga_id, [index, lease, error], call=call)

    # --- reads -----------------------------------------------------------------------
    def find(self, query: ListQuery) -> tuple[int, list[SagaRecord]]:
        """The total matching `query` and its page of sagas, newest first."""
        total, ids = self._page(query)
        pipe = self.redis.pipeline(transaction=False)
        for saga_id in ids:
            pipe.hgetall(self.keys.saga(saga_id))
        records = [
            document({text(k): text(v) for k, v in raw.items()})
            for raw in pipe.execute()
            if raw  # deleted between the two calls
        ]
        return total, records

    def correlated(self, correlation_id: str, limit: int) -> list[str]:
        """The newest `limit` sagas with this correlation id, including the saga whose own id
        it is (a saga given no correlation id uses its id, and is not indexed under it).
        One script call, O(log N + limit) however many sagas share the id."""
        return self._page(ListQuery(correlation_id=correlation_id, page_size=limit))[1]

    def _page(self, query: ListQuery) -> tuple[int, list[str]]:
        """The total matching `query` and its page of saga ids, newest first, from the
        indexes (no SCAN). Status and type select one index (both: their combined index),
        ranged by creation time; with a correlation id alone, idx:corr is: one script call,
        O(log N + page), exact total. A correlation id with status or type is `_scan`ned."""
        if query.status and query.saga_type:
            index = self.keys.type_status(query.saga_type, query.status)
        elif query.status:
            index = self.keys.status(query.status)
        elif query.saga_type:
            index = self.keys.saga_type(query.saga_type)
        else:
            index = self.keys.all
        corr = query.correlation_id or ""
        low = "-inf" if query.created_after is None else f"({query.created_after}"
        high = "+inf" if query.created_before is None else f"({query.created_before}"
        offset = (query.page - 1) * query.page_size
        if corr and index != self.keys.all:
            return self._scan(index, corr, low, high, offset, query.page_size)
        total, ids = self._scripts["list"](
            keys=[self.keys.correlation(corr) if corr else index, self.keys.saga(corr)],
            args=["range", low, high, offset, query.page_size, corr],
        )
        return int(total), [str(text(saga_id)) for saga_id in ids]

    def _scan(
        self, index: str, corr: str, low: str, high: str, offset: int, size: int
    ) -> tuple[int, list[str]]:
        """The sagas of `index` with correlation id `corr`: the smaller of the two sets is
        read newest first, at most LIST_CHUNK per script call, as far as the page needs and
        at least LIST_COUNT_LIMIT sagas (or all). The total is exact if all were read;
        otherwise it is the matches found plus the sagas left unread (an upper bound)."""
        keys = [index, self.keys.correlation(corr), self.keys.saga(corr)]
        found: list[str] = []  # the matches, newest first
        seen: set[str] = set()
        own: str = ""  # the own saga's created ms, if it matches
        ahead = 0  # matches found that come before the own saga
        which, cursor, read, left, placed = 0, "", 0, 1, False
        while left:
            reply = self._scripts["list"](
                keys=keys, args=["scan", low, high, corr, which, cursor, read, LIST_CHUNK, own]
            )
            which, own = int(reply[0]), "" if reply[1] is None else str(reply[1])
            matched = [str(text(i)) for i in reply[2]]
            fresh = [i for i in matched if i not in seen]  # read again if the cursor vanished
            ahead += len([i for i in fresh if i in matched[: int(reply[3])]])
            placed = reply[4] == 1
            seen.update(fresh)
            found += fresh
            previous, cursor = cursor, str(text(reply[5]))
            read, left = int(reply[6]), int(reply[7])
            ready = len(found) + (1 if own and placed else 0)
            if cursor == previous or (ready >= offset + size and read >= LIST_COUNT_LIMIT):
                break
        unplaced = 0  # the own saga, known to come after every match found
        if own and placed:
            found.insert(ahead, corr)
        elif own:
            unplaced = 1
        return len(found) + unplaced + left, found[offset : offset + size]

    def now_ms(self) -> int:
        """Redis's clock, the one every deadline is measured by."""
        if self.clock_key:
            frozen = self.redis.get(self.clock_key)
            if frozen is not None:
                return int(frozen)
        seconds, micros = self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def due_timers(self, limit: int) -> list[str]:
        """Timers whose time has come, oldest first."""
        due = self.redis.zrangebyscore(self.keys.timers, "-inf", self.now_ms(), 0, limit)
        return [str(text(member)) for member in due]

    def oldest_pending(self, limit: int) -> list[str]:
        """PENDING sagas in arrival order (FIFO)."""
        ids = self.redis.zrange(self.keys.status("PENDING"), 0, limit - 1)
        return [str(text(i)) for i in ids]

    def finished_before(self, epoch_ms: int, limit: int) -> list[str]:
        """Sagas that reached COMPLETED or COMPENSATED before `epoch_ms`."""
        ids = self.redis.zrangebyscore(self.keys.finished, "-inf", epoch_ms, 0, limit)
        return [str(text(i)) for i in ids]

    def lock(self, name: str, ttl_ms: int) -> str | None:
        """Take lock `name` for `ttl_ms`; the token to release it, or None if held."""
        token = uuid.uuid4().hex
        taken = self.redis.set(f"{self.keys.prefix}lock:{name}", token, nx=True, px=ttl_ms)
        return token if taken else None

    def unlock(self, name: str, token: str) -> None:
        self._scripts["unlock"](keys=[f"{self.keys.prefix}lock:{name}"], args=[token])

    def count(self, status: str) -> int:
        return int(self.redis.zcard(self.keys.status(status)))

    def heartbeat(self, worker: str, key: str | None = None) -> None:
        """Record that `worker` is alive now (Redis clock); `key`: another set of beats than
        the workers' (the event consumers', `keys.event_consumers`)."""
        self._scripts["heartbeat"](keys=[key or self.keys.workers], args=[worker])

    def workers_alive(self, within_seconds: float, key: str | None = None) -> list[str]:
        """Workers (or, with `key`, others) that beat within the last `within_seconds`."""
        names = self._scripts["workers_alive"](
            keys=[key or self.keys.workers], args=[int(within_seconds * 1000)]
        )
        return [text(n) for n in names]

    def definition(self, digest: str) -> list[dict[str, Any]]:
        """The steps of the definition stored under `digest`. It is content-addressed, so a
        copy cached here never goes stale. Raises `KeyError` if no saga uses it any more."""
        steps = self._definitions.get(digest)
        if steps is None:
            raw = self.redis.get(self.keys.definition(digest))
            if raw is None:
                raise KeyError(digest)
            if len(self._definitions) >= DEFINITIONS_CACHED:
                self._definitions.clear()
            steps = self._definitions[digest] = json.loads(raw)
        return steps

    def definition_of(self, saga_id: str) -> list[dict[str, Any]]:
        """The steps of a stored saga's definition; raises `SagaNotFound`."""
        digest = self.redis.hget(self.keys.saga(saga_id), "def")
        if digest is None:
            raise SagaNotFound(saga_id)
        return self.definition(str(text(digest)))

    def outline(self, saga_id: str) -> tuple[str, list[dict[str, Any]]]:
        """A stored saga's type and the steps of its definition; raises `SagaNotFound`."""
        saga_type, digest = self.redis.hmget(self.keys.saga(saga_id), "type", "def")
        if digest is None:
            raise SagaNotFound(saga_id)
        return str(text(saga_type) or ""), self.definition(str(text(digest)))

    def grant(self, reply: Reply) -> Grant:
        """Decode the `run` answer of step_begin / comp_begin."""
        attempt, remaining, payload, digest, corr, saga_type, tp, *outs = reply.values
        steps = self.definition(digest)
        outputs = {
            steps[j]["name"]: json.loads(out) for j, out in enumerate(outs) if out is not None
        }
        return Grant(
            int(attempt),
            int(remaining),
            json.loads(payload),
            steps,
            corr,
            saga_type,
            outputs,
            tp or "",
        )

    def traceparent(self, saga_id: str) -> str:
        """The saga's stored trace context ("" for none or a missing saga)."""
        return str(text(self.redis.hget(self.keys.saga(saga_id), "tp")) or "")

    def get(self, saga_id: str) -> SagaRecord:
        """The saga document (docs/api.md); raise `SagaNotFound`."""
        raw = self.redis.hgetall(self.keys.saga(saga_id))
        if not raw:
            raise SagaNotFound(saga_id)
        return document({text(k): text(v) for k, v in raw.items()})

    def history(self, saga_id: str) -> list[dict[str, Any]]:
        """The saga's transitions, oldest first (the newest `history_limit` are kept)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(self.keys.saga(saga_id), "created")
        pipe.lrange(self.keys.history(saga_id), 0, -1)
        created, entries = pipe.execute()
        out = []
        for raw in entries:
            # Compact entries (lua/lib.lua commit): [ms since created, version, event,
            # status, step or null, message if any, then for a person's action: actor,
            # data if any].
            after, version, event, status, step, *rest = json.loads(raw)
            entry = {"at": iso(int(created) + after), "event": event, "version": version}
            entry["status"] = status
            if step is not None:
                entry["step"] = step
            for name, value in zip(("message", "actor", "data"), rest, strict=False):
                if value is not None:
                    entry[name] = value
            out.append(entry)
        return out

    def stats(self) -> dict[str, int]:
        return {text(k): int(v) for k, v in self.redis.hgetall(self.keys.stats).items()}


def _flag(value: bool) -> str:
    return "1" if value else "0"


def new_call_id() -> str:
    """A fresh id for one transition call."""
    return uuid.uuid4().hex[:16]


def _transition(lib: str, name: str) -> str:
    """A transition script: lib.lua, then the script's body as a function, so that a resent
    call is answered from the saga's memory of it (lib.lua `remembered`/`remember`). The
    `#!lua` line makes Redis check memory (noeviction) before the script runs and refuse it
    whole, as it refuses a plain write; the test of that does not depend on the flag (Redis
    also keeps a script that has begun writing from stopping half-way)."""
    return (
        f"#!lua\n{lib}\nlocal function body()\n{_read(name)}\nend\n"
        "local again = remembered()\n"
        "if again then return again end\n"
        "local version = redis.call('HGET', SAGA, 'ver')\n"
        "return remember(flush_outbox(body()), version)\n"
    )


def _read(name: str) -> str:
    return resources.files("sagas").joinpath(f"lua/{name}.lua").read_text()
