"""Choreography over Redis streams (docs/events.md has the message format).

Incoming events (`POST /events/{type}` or a direct XADD) go to `<prefix>stream:events`. A
consumer group (`orchestrator`) reads them; each entry is acknowledged only after the state
transitions it causes have committed. Entries left pending by a dead consumer are reclaimed
by the sweep (XAUTOCLAIM); one delivered more than `SAGA_EVENT_MAX_DELIVERIES` times goes to
`<prefix>stream:dead`. Event steps publish their command to `<prefix>stream:commands`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from sagas import tracing
from sagas.errors import ValidationFailed
from sagas.log import bound
from sagas.records import dumps, encode_output
from sagas.store import Reply

if TYPE_CHECKING:
    from sagas.engine import SagaEngine

log = logging.getLogger("sagas.events")
GROUP = "orchestrator"
# The consumer name under which the sweep takes over a dead consumer's entries (`reclaim`).
RECLAIMER = "sweep"
# An event consumer records that it is alive at most this often (`run_consumer`).
CONSUMER_BEAT_SECONDS = 1.0
TRIGGER_NAMESPACE = uuid.UUID("6f1c2b1e-1d7a-4b55-9d3e-5b3f0c8a2e41")
# An event addressed by correlation id goes to the newest this many sagas with that id.
EVENT_MAX_MATCHES = 100


@dataclass(frozen=True)
class Published:
    event_id: str
    matched: list[str]  # sagas the event is for (and sagas it will start, by trigger)


def trigger_saga_id(event_id: str, workflow: str) -> str:
    """The id of the saga that event `event_id` starts as `workflow`: the same event can
    never start two."""
    return str(uuid.uuid5(TRIGGER_NAMESPACE, f"{event_id}/{workflow}"))


def event_name(entry_id: str, fields: Mapping[str, str]) -> str:
    """The id that names an event: the sender's (`event_id` field: `Idempotency-Key` or
    `event_id` in `POST /events/{type}`), so that a resent event is the same event; else
    its stream entry id, new at every XADD."""
    return fields.get("event_id") or entry_id


class EventBus:
    def __init__(self, engine: SagaEngine) -> None:
        self.engine = engine
        self.store = engine.store
        self.keys = engine.store.keys
        self.settings = engine.settings

    # --- publishing ------------------------------------------------------------------
    def publish(
        self,
        event_type: str,
        saga_id: str | None,
        correlation_id: str | None,
        data: Mapping[str, Any],
        step: str | None = None,
        event_id: str | None = None,
    ) -> Published:
        """Append an event to the stream; the sagas it matches (read-only: the consumer
        applies it). `step`: the step whose command it answers (docs/events.md).
        `event_id`: the sender's name for the event; a trigger's saga id derives from it,
        so sending the same event again starts no second saga."""
        fields = {
            "type": event_type,
            "data": dumps(dict(data)),
            "saga_id": saga_id or "",
            "correlation_id": correlation_id or "",
        }
        if step:
            fields["step"] = step
        if event_id:
            fields["event_id"] = event_id
        traceparent = tracing.current_traceparent()  # the request's trace (docs/events.md)
        if traceparent:
            fields["traceparent"] = traceparent
        entry_id = self.store.append(self.keys.events, fields, self.settings.events_maxlen)
        name = event_name(entry_id, fields)
        return Published(name, self._matches(event_type, saga_id, correlation_id, name))

    def publish_command(
        self,
        saga_id: str,
        step: str,
        spec: Mapping[str, Any],
        correlation_id: str,
        traceparent: str = "",
    ) -> str:
        """An event step's command, for the services that consume `stream:commands`."""
        fields = {
            "type": spec["event"],
            "saga_id": saga_id,
            "step": step,
            "correlation_id": correlation_id,
            "idempotency_key": f"{saga_id}:{step}:action",
            "reply_success": spec["await"]["success"],
            "reply_failure": spec["await"].get("failure", ""),
            "data": dumps(spec.get("data") or {}),
        }
        headers: dict[str, str] = {}
        tracing.inject(headers, traceparent)
        if headers.get("traceparent"):  # W3C trace context of the step (docs/events.md)
            fields["traceparent"] = headers["traceparent"]
        return self.store.append(self.keys.commands, fields, self.settings.events_maxlen)

    def _targets(self, saga_id: str | None, correlation_id: str | None) -> list[str]:
        """The sagas an event is for: the one it names, or the newest EVENT_MAX_MATCHES
        with its correlation id (one O(log N + limit) lookup). Older ones never see it: a
        step of theirs awaiting it times out as if no reply came (logged here)."""
        if saga_id:
            return [saga_id]
        if not correlation_id:
            return []
        targets = self.store.correlated(correlation_id, EVENT_MAX_MATCHES + 1)
        if len(targets) > EVENT_MAX_MATCHES:
            log.warning(
                "more than %d sagas have correlation id %r: an event for it goes to the "
                "newest %d only",
                EVENT_MAX_MATCHES,
                correlation_id,
                EVENT_MAX_MATCHES,
            )
        return targets[:EVENT_MAX_MATCHES]

    def _awaits(self, saga_id: str, event_type: str) -> bool:
        digest = self.store.redis.hget(self.keys.saga(saga_id), "def")
        if digest is None:
            return False
        for step in self.store.definition(str(digest)):
            awaited = step["action"].get("await") or {}
            if event_type in (awaited.get("success"), awaited.get("failure")):
                return True
        return False

    def _matches(
        self, event_type: str, saga_id: str | None, correlation_id: str | None, event_id: str
    ) -> list[str]:
        targets = self._targets(saga_id, correlation_id)
        if targets:
            return [t for t in targets if self._awaits(t, event_type)]
        triggered = self.engine.workflows.triggered_by(event_type)
        return [trigger_saga_id(event_id, name) for name in triggered]

    def unmatched(self, limit: int) -> list[dict[str, Any]]:
        """Events no saga awaited (and refused or invalid ones), newest first."""
        return self.store.read_stream(self.keys.unmatched, limit)

    def dead_letters(self, limit: int) -> list[dict[str, Any]]:
        """Events that failed SAGA_EVENT_MAX_DELIVERIES times, newest first."""
        return self.store.read_stream(self.keys.dead, limit)

    # --- applying --------------------------------------------------------------------
    def handle(self, event_id: str, fields: Mapping[str, str]) -> list[str]:
        """Apply one event; the outcomes (`<saga_id>:<answer>`). Raises on a malformed
        entry (it stays pending and, redelivered too often, goes to the dead letters)."""
        event_type = fields["type"]
        data_json = fields.get("data") or "{}"
        data = json.loads(data_json)
        if not isinstance(data, dict):
            raise ValueError("event data must be a JSON object")
        saga_id, correlation_id = fields.get("saga_id") or None, fields.get("correlation_id")
        step = fields.get("step") or ""  # the step whose command this replies to
        # The success data becomes the step's output: the same size limit as any output.
        output_json = encode_output(data, self.settings.max_output_bytes)
        outcomes = []
        targets = self._targets(saga_id, correlation_id or None)
        for target in targets:
            reply = self.store.event(target, event_type, output_json, event_id, step)
            outcomes.append(f"{target}:{reply.code}")
            with self.engine.saga_trace(target, f"event {event_type}", event_id=event_id):
                self._follow(target, reply)
        if not targets:
            # A workflow it starts joins the trace of whoever posted the event.
            with tracing.in_saga(fields.get("traceparent"), f"event {event_type}"):
                self._trigger(event_type, event_name(event_id, fields), data, outcomes)
        self._settle(event_id, fields, outcomes, event_type, saga_id, correlation_id)
        return outcomes

    def _trigger(
        self, event_type: str, name: str, data: dict[str, Any], outcomes: list[str]
    ) -> None:
        """Start the workflows `event_type` triggers (outcomes appended); `name` names the
        event (`event_name`), so that a resent event starts no second saga."""
        for workflow in self.engine.workflows.triggered_by(event_type):
            try:
                started = self.engine.start_workflow(
                    workflow, data, saga_id=trigger_saga_id(name, workflow)
                )
            except ValidationFailed as exc:  # retrying would not help: record it
                outcomes.append(f"{workflow}:invalid: {exc}")
                continue
            outcomes.append(f"{started.saga['saga_id']}:triggered")

    def _settle(
        self,
        event_id: str,
        fields: Mapping[str, str],
        outcomes: list[str],
        event_type: str,
        saga_id: str | None,
        correlation_id: str | None,
    ) -> None:
        """Keep an event no saga took as unmatched, and log what it did."""
        if not any(
            o.split(":", 1)[1]
            in ("next", "saga_completed", "compensate", "early", "triggered", "duplicate")
            for o in outcomes
        ):
            self.store.append(
                self.keys.unmatched,
                {**fields, "event_id": event_name(event_id, fields), "outcome": ",".join(outcomes)},
                self.settings.events_maxlen,
            )
        with bound(saga_id=saga_id, correlation_id=correlation_id):
            log.info("event %s %s: %s", event_type, event_id, outcomes or "no saga")

    def _follow(self, saga_id: str, reply: Reply) -> None:
        if reply.code not in ("next", "compensate", "saga_completed"):
            return
        record = self.store.get(saga_id)
        if reply.code == "next":
            first = int(str(reply.values[0])) + 1
            self.engine.dispatch_steps(
                saga_id, range(first, len(record["steps"])), record["correlation_id"]
            )
        elif reply.code == "compensate":
            self.engine.dispatch_compensation(saga_id, reply, record["correlation_id"])
        self.engine.admit()

    # --- consuming -------------------------------------------------------------------
    def ensure_group(self) -> None:
        try:
            self.store.redis.xgroup_create(self.keys.events, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def consume(self, client: redis.Redis, consumer: str, block_ms: int, count: int = 50) -> int:
        """Read and apply new entries as `consumer`; the number read. `client` must have no
        socket timeout shorter than `block_ms` (redis-py 8 defaults to 5 s)."""
        answer: Any = client.xreadgroup(
            GROUP, consumer, {self.keys.events: ">"}, count=count, block=block_ms
        )
        # RESP2: [[stream, entries]]; RESP3: {stream: entries} (redis-py 8 may use either).
        batches = answer.values() if isinstance(answer, dict) else [b for _, b in answer or []]
        entries: list[tuple[str, dict[str, str]]] = [e for batch in batches for e in batch]
        for entry_id, fields in entries:
            self._apply_and_ack(str(entry_id), fields)
        return len(entries)

    def _apply_and_ack(self, entry_id: str, fields: Mapping[str, str]) -> bool:
        try:
            self.handle(entry_id, fields)
        except Exception:
            log.exception("event %s not applied; it stays pending", entry_id)
            return False
        self.store.redis.xack(self.keys.events, GROUP, entry_id)
        return True

    def reclaim(self, consumer: str = RECLAIMER) -> tuple[int, int]:
        """Take over entries pending longer than SAGA_EVENT_RECLAIM_IDLE_SECONDS (their
        consumer died) and apply them; entries delivered too often go to the dead letters.
        Returns (applied, dead-lettered)."""
        idle_ms = int(self.settings.event_reclaim_idle_seconds * 1000)
        r = self.store.redis
        self.ensure_group()
        answer: Any = r.xautoclaim(self.keys.events, GROUP, consumer, idle_ms, "0-0", count=100)
        claimed: list[tuple[str, dict[str, str] | None]] = answer[1]
        applied = dead = 0
        for entry_id, fields in claimed:
            if fields is None:  # trimmed away meanwhile
                r.xack(self.keys.events, GROUP, entry_id)
                continue
            info = r.xpending_range(self.keys.events, GROUP, entry_id, entry_id, 1)
            deliveries = int(info[0]["times_delivered"]) if info else 1
            if deliveries > self.settings.event_max_deliveries:
                self.store.append(
                    self.keys.dead,
                    {**fields, "event_id": str(entry_id), "deliveries": str(deliveries)},
                    self.settings.events_maxlen,
                )
                r.xack(self.keys.events, GROUP, entry_id)
                log.error("event %s dead-lettered after %d deliveries", entry_id, deliveries)
                dead += 1
            elif self._apply_and_ack(str(entry_id), fields):
                applied += 1
        return applied, dead


def run_consumer(
    engine: SagaEngine, name: str, stop: threading.Event, block_ms: int = 2000
) -> None:
    """The event consumer process's loop, until `stop` is set. It beats (`keys.
    event_consumers`) at least every `block_ms` + CONSUMER_BEAT_SECONDS while it reads:
    GET /health/ counts the consumers that beat recently (Redis 7.0's XINFO CONSUMERS cannot
    tell an idle live consumer from a dead one)."""
    bus = EventBus(engine)
    bus.ensure_group()
    client = redis.Redis.from_url(
        engine.settings.redis_url, decode_responses=True, socket_timeout=None
    )
    log.info("event consumer %s reading %s", name, bus.keys.events)
    beat_at = 0.0
    while not stop.is_set():
        try:
            if time.monotonic() - beat_at >= CONSUMER_BEAT_SECONDS:
                engine.store.heartbeat(name, bus.keys.event_consumers)
                beat_at = time.monotonic()
            bus.consume(client, name, block_ms)
        except redis.ConnectionError as exc:
            log.warning("event consumer: Redis unreachable (%s); retrying", exc)
            stop.wait(1)
