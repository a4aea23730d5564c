"""Schedules: a registered workflow started with a fixed payload on a cron expression (in a
time zone) or every N seconds (docs/workflows.md, "Schedules").

A schedule is a hash `<p>schedule:<id>` (the set `<p>schedules` lists them). Celery beat
ticks it through an entry kept by `ScheduleEntries` (tasks/schedules.py, celery-redbeat:
entries in Redis, and a lock so that one of several beat processes ticks). Each tick calls
`fire`, which works out the fire time due (the latest one at or before now), claims it
atomically (lua/sched_claim.lua: a fire time is started at most once), and starts the
workflow with saga id and Idempotency-Key derived from the schedule id and that fire time.
A duplicate tick (two beats, a redelivery, a beat restarted) finds the time claimed, or the
saga already there, and starts nothing.

Missed fire times (beat down) never run more than once: `catch_up: skip` (the default)
drops a fire time found more than `GRACE_SECONDS` late and waits for the next one;
`catch_up: run_once` runs the latest missed fire time once, late. Interval schedules tick
at their own period, so at most one interval is ever missed and both policies run the
latest fire time.

Pure logic and Redis only: no Celery (the entries are behind a protocol), no Flask.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from sagas.errors import SagaError, ValidationFailed
from sagas.log import bound
from sagas.records import iso
from sagas.store import Idempotency

if TYPE_CHECKING:
    from sagas.engine import SagaEngine

CATCH_UP = ("skip", "run_once")
GRACE_SECONDS = 60.0  # a cron fire time found later than this was missed
MIN_INTERVAL_SECONDS = 1.0
MAX_INTERVAL_SECONDS = 366 * 24 * 3600.0
NEXT_COUNT = 5
FIRE_TTL_SECONDS = 8 * 24 * 3600  # how long a fire time's Idempotency-Key is kept
_NAMESPACE = uuid.UUID("9b1f8a52-6a1e-4d1e-9d55-3c2f4b1a7e10")  # saga ids of firings
log = logging.getLogger("sagas.schedules")
_FIELDS = ("workflow", "version", "cron", "timezone", "interval_seconds", "payload", "catch_up")


class ScheduleNotFound(SagaError):
    def __init__(self, schedule_id: str) -> None:
        super().__init__(f"no schedule {schedule_id!r}")
        self.schedule_id = schedule_id


class ScheduleEntries(Protocol):
    """The beat side of a schedule (celery-redbeat in tasks/schedules.py): an entry that
    ticks `fire` every minute (cron) or every `interval_seconds`; disabled while paused."""

    def save(self, schedule_id: str, interval_seconds: float | None, enabled: bool) -> None: ...

    def delete(self, schedule_id: str) -> None: ...


@dataclass(frozen=True)
class Spec:
    workflow: str
    version: int | None
    cron: str | None
    timezone: str
    interval_seconds: float | None
    payload: dict[str, Any]
    catch_up: str
    anchor_ms: int  # interval schedules: fire times are anchor + k * interval, k >= 1


def parse_spec(data: Mapping[str, Any], anchor_ms: int) -> Spec:
    """Check a schedule's fields; raise `ValidationFailed` naming the field."""
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ValidationFailed(unknown[0], f"unknown field; a schedule has {', '.join(_FIELDS)}")
    workflow = data.get("workflow")
    if not isinstance(workflow, str) or not workflow:
        raise ValidationFailed("workflow", "the name of a registered workflow is required")
    version = data.get("version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        raise ValidationFailed("version", "a workflow version number, or null for the latest")
    cron, interval = data.get("cron"), data.get("interval_seconds")
    if (cron is None) == (interval is None):
        raise ValidationFailed("cron", "give exactly one of cron and interval_seconds")
    timezone = data.get("timezone") or "UTC"
    try:
        zone = ZoneInfo(str(timezone))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationFailed(
            "timezone", f"unknown time zone {timezone!r} (e.g. Europe/Paris)"
        ) from None
    if cron is not None:
        if not isinstance(cron, str) or len(cron) > 200:
            raise ValidationFailed("cron", "a cron expression such as '*/5 * * * *'")
        try:
            next(CronSim(cron, datetime.now(zone)))
        except (CronSimError, StopIteration) as exc:
            raise ValidationFailed("cron", f"not a cron expression that fires: {exc}") from None
    if interval is not None:
        if isinstance(interval, bool) or not isinstance(interval, int | float):
            raise ValidationFailed("interval_seconds", "a number of seconds")
        if not MIN_INTERVAL_SECONDS <= interval <= MAX_INTERVAL_SECONDS:
            raise ValidationFailed(
                "interval_seconds", f"between {MIN_INTERVAL_SECONDS:g} s and 366 days"
            )
    payload = data.get("payload") or {}
    if not isinstance(payload, Mapping):
        raise ValidationFailed("payload", "must be a JSON object")
    catch_up = data.get("catch_up") or "skip"
    if catch_up not in CATCH_UP:
        raise ValidationFailed("catch_up", f"one of {', '.join(CATCH_UP)}")
    return Spec(
        workflow,
        version,
        cron,
        str(timezone),
        None if interval is None else float(interval),
        dict(payload),
        str(catch_up),
        anchor_ms,
    )


def next_fire_times(spec: Spec, after: datetime, count: int = NEXT_COUNT) -> list[datetime]:
    """The next `count` fire times strictly after `after` (aware datetimes, the
    schedule's zone for cron, UTC for intervals)."""
    if spec.cron is not None:
        it = CronSim(spec.cron, after.astimezone(ZoneInfo(spec.timezone)))
        return [next(it) for _ in range(count)]
    assert spec.interval_seconds is not None
    period = int(spec.interval_seconds * 1000)
    now_ms = int(after.timestamp() * 1000)
    k = max(1, (now_ms - spec.anchor_ms) // period + 1)
    return [_utc(spec.anchor_ms + (k + i) * period) for i in range(count)]


def due_fire_time(spec: Spec, now: datetime) -> datetime | None:
    """The latest fire time at or before `now`, or None before the first."""
    if spec.cron is not None:
        start = (now + timedelta(seconds=1)).astimezone(ZoneInfo(spec.timezone))
        back = CronSim(spec.cron, start, reverse=True)
        found: datetime = next(back)
        return found if found <= now else None
    assert spec.interval_seconds is not None
    period = int(spec.interval_seconds * 1000)
    k = (int(now.timestamp() * 1000) - spec.anchor_ms) // period
    return _utc(spec.anchor_ms + k * period) if k >= 1 else None


def grace_seconds(spec: Spec) -> float:
    """How late a fire time may be found and still count as on time."""
    if spec.interval_seconds is not None:
        return max(spec.interval_seconds, GRACE_SECONDS)
    return GRACE_SECONDS


class Schedules:
    def __init__(self, engine: SagaEngine, entries: ScheduleEntries | None = None) -> None:
        self.engine = engine
        self.entries = entries
        self.redis = engine.store.redis
        self.keys = engine.store.keys
        lua = resources.files("sagas").joinpath("lua")
        self._claim = self.redis.register_script(lua.joinpath("sched_claim.lua").read_text())
        self._fired = self.redis.register_script(lua.joinpath("sched_fired.lua").read_text())

    def _entries(self) -> ScheduleEntries:
        if self.entries is None:
            raise SagaError("this process has no beat entries (ScheduleEntries) configured")
        return self.entries

    # --- managing ----------------------------------------------------------------------
    def create(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Check and store a schedule, and its beat entry. The workflow must exist, not be
        retired, and accept the payload (InvalidPayload names the field)."""
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        spec = parse_spec(data, now_ms)
        self._check_workflow(spec)
        schedule_id = f"sch_{uuid.uuid4().hex[:16]}"
        self.redis.hset(self.keys.schedule(schedule_id), mapping={**_encode(spec), "paused": "0",
                        "created": now_ms, "fired": 0, "skipped": 0})  # fmt: skip
        self.redis.sadd(self.keys.schedules, schedule_id)
        self._entries().save(schedule_id, spec.interval_seconds, True)
        return self.get(schedule_id)

    def update(self, schedule_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change fields (PATCH): the result is checked as a whole; fire times claimed
        stay claimed. An interval change restarts the interval from now."""
        fields = self._fields(schedule_id)
        spec = _decode(fields)
        merged = {k: getattr(spec, k) for k in _FIELDS}
        merged.update(changes)
        if "cron" in changes and changes["cron"] is not None:
            merged["interval_seconds"] = None
        if "interval_seconds" in changes and changes["interval_seconds"] is not None:
            merged["cron"] = None
        anchor = spec.anchor_ms
        if merged.get("interval_seconds") != spec.interval_seconds:
            anchor = int(datetime.now(UTC).timestamp() * 1000)
        new = parse_spec(merged, anchor)
        self._check_workflow(new)
        self.redis.hset(self.keys.schedule(schedule_id), mapping=_encode(new))
        self._entries().save(schedule_id, new.interval_seconds, fields.get("paused") != "1")
        return self.get(schedule_id)

    def pause(self, schedule_id: str, paused: bool) -> dict[str, Any]:
        spec = _decode(self._fields(schedule_id))
        self.redis.hset(self.keys.schedule(schedule_id), "paused", "1" if paused else "0")
        self._entries().save(schedule_id, spec.interval_seconds, not paused)
        return self.get(schedule_id)

    def delete(self, schedule_id: str) -> None:
        self._fields(schedule_id)
        self._entries().delete(schedule_id)
        self.redis.delete(self.keys.schedule(schedule_id))
        self.redis.srem(self.keys.schedules, schedule_id)

    # --- reading -----------------------------------------------------------------------
    def get(self, schedule_id: str, now: datetime | None = None) -> dict[str, Any]:
        """The schedule's document, with its next five fire times."""
        fields = self._fields(schedule_id)
        spec = _decode(fields)
        after = now or datetime.now(UTC)
        return {
            "schedule_id": schedule_id,
            "workflow": spec.workflow,
            "version": spec.version,
            "cron": spec.cron,
            "timezone": spec.timezone,
            "interval_seconds": spec.interval_seconds,
            "payload": spec.payload,
            "catch_up": spec.catch_up,
            "paused": fields.get("paused") == "1",
            "created_at": iso(fields.get("created")),
            "next_fire_times": [
                t.isoformat(timespec="milliseconds" if t.microsecond else "seconds")
                for t in next_fire_times(spec, after)
            ],
            "last_fire_time": iso(fields.get("last_slot")),
            "last_saga_id": fields.get("last_saga") or None,
            "last_error": fields.get("last_error") or None,
            "fired": int(fields.get("fired") or 0),
            "skipped": int(fields.get("skipped") or 0),
            "correlation_id": correlation_id(schedule_id),
        }

    def list(self) -> list[dict[str, Any]]:
        ids: set[str] = self.redis.smembers(self.keys.schedules)  # type: ignore[assignment]
        found = []
        for schedule_id in sorted(ids):
            try:
                found.append(self.get(schedule_id))
            except ScheduleNotFound:
                continue
        return found

    # --- firing (beat's tick, in a worker) ---------------------------------------------
    def fire(self, schedule_id: str, now: datetime | None = None) -> str:
        """Start the fire time due, at most once; the outcome (`started`, `done`: already
        started, `skipped`: missed and `catch_up: skip`, `paused`, `missing`, `early`,
        `old`, `failed: ...`)."""
        now = now or datetime.now(UTC)
        try:
            spec = _decode(self._fields(schedule_id))
        except ScheduleNotFound:
            return "missing"
        due = due_fire_time(spec, now)
        if due is None:
            return "early"
        late = (now - due).total_seconds()
        mode = "skip" if spec.catch_up == "skip" and late > grace_seconds(spec) else "start"
        slot_ms = int(due.timestamp() * 1000)
        key = self.keys.schedule(schedule_id)
        stats = self.engine.store.keys.stats
        outcome = str(self._claim(keys=[key, stats], args=[slot_ms, mode])[0])
        if outcome != "go":
            return outcome
        name = f"{schedule_id}:{slot_ms}"
        with bound(schedule_id=schedule_id):
            try:
                started = self.engine.start_workflow(
                    spec.workflow,
                    spec.payload,
                    correlation_id(schedule_id),
                    idempotency=Idempotency(
                        scope="schedule",
                        key=name,
                        fingerprint=hashlib.sha256(name.encode()).hexdigest(),
                        ttl_seconds=FIRE_TTL_SECONDS,
                    ),
                    saga_id=str(uuid.uuid5(_NAMESPACE, name)),
                    version=spec.version,
                )
            except SagaError as exc:  # retired, payload no longer valid, ...: say so
                self._fired(keys=[key, stats], args=[slot_ms, "", "0", str(exc)[:500]])
                log.warning(
                    "schedule could not start its workflow: %s", exc,
                    extra={"workflow": spec.workflow, "fire_time": due.isoformat()},
                )  # fmt: skip
                return f"failed: {exc}"
            saga_id = started.saga["saga_id"]
            created = "1" if started.created else "0"
            self._fired(keys=[key, stats], args=[slot_ms, saga_id, created, ""])
            if started.created:
                log.info(
                    "schedule fired",
                    extra={"workflow": spec.workflow, "fire_time": due.isoformat(),
                           "saga_id": saga_id, "late_seconds": round(late, 3)},
                )  # fmt: skip
        return "started" if started.created else "done"

    # --- internals ---------------------------------------------------------------------
    def _fields(self, schedule_id: str) -> dict[str, str]:
        fields: dict[str, str] = self.redis.hgetall(self.keys.schedule(schedule_id))  # type: ignore[assignment]
        if not fields:
            raise ScheduleNotFound(schedule_id)
        return fields

    def _check_workflow(self, spec: Spec) -> None:
        definition, _ = self.engine.workflows.definition(
            spec.workflow, spec.payload, None, spec.version
        )
        from sagas.definition import parse_definition

        parse_definition(definition, self.engine.settings)


def correlation_id(schedule_id: str) -> str:
    """Every saga a schedule starts carries it: `GET /saga?correlation_id=schedule:<id>`."""
    return f"schedule:{schedule_id}"


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _encode(spec: Spec) -> dict[Any, Any]:
    return {
        "workflow": spec.workflow,
        "version": "" if spec.version is None else spec.version,
        "cron": spec.cron or "",
        "timezone": spec.timezone,
        "interval": "" if spec.interval_seconds is None else repr(spec.interval_seconds),
        "payload": json.dumps(spec.payload, separators=(",", ":")),
        "catch_up": spec.catch_up,
        "anchor": spec.anchor_ms,
    }


def _decode(fields: Mapping[str, str]) -> Spec:
    return Spec(
        workflow=fields["workflow"],
        version=int(fields["version"]) if fields.get("version") else None,
        cron=fields.get("cron") or None,
        timezone=fields.get("timezone") or "UTC",
        interval_seconds=float(fields["interval"]) if fields.get("interval") else None,
        payload=json.loads(fields.get("payload") or "{}"),
        catch_up=fields.get("catch_up") or "skip",
        anchor_ms=int(fields.get("anchor") or 0),
    )
