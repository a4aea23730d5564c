"""The saga engine: starting, reading, compensating and sweeping sagas.

The engine is handed a `Dispatcher` that enqueues chains of step or compensation executions
(Celery in production, see `tasks/`); each execution runs through `engine.executions`
(`sagas/execution.py`). Every task gets a hard time limit (`time_limits`): the store counts
on it to know when an attempt in flight has provably ended, before anything is undone, and
a name a person reads (`names`: `<saga type>/<step>`, `... (undo)`), which Flower and the
worker's log lines show.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sagas import tracing
from sagas.actions import ActionExecutor
from sagas.catalog import WorkflowCatalog
from sagas.definition import parse_definition
from sagas.errors import IdempotencyConflict, InvalidTransition, SagaNotFound
from sagas.events import EventBus
from sagas.execution import Continue, Executions, Outcome, Retry, Stop
from sagas.health import HealthReport, check, record_sweep
from sagas.log import bound
from sagas.model import SagaRecord, SagaStatus
from sagas.repair import Repairs
from sagas.schedules import Schedules
from sagas.settings import Settings
from sagas.store import Idempotency, ListQuery, RedisStore, Reply
from sagas.webhooks import Webhooks

__all__ = [
    "Continue",
    "Dispatcher",
    "Outcome",
    "Retry",
    "SagaEngine",
    "Started",
    "Stop",
    "execution_name",
]
log = logging.getLogger("sagas.engine")


class Dispatcher(Protocol):
    """Enqueues executions. Both calls are fire-and-forget; order within a call is kept.
    Each execution is killed after its time limit (seconds): `time_limits[k]` for
    `indexes[k]`, `time_limit` for every compensation. `names[k]` is how a person sees the
    execution of `indexes[k]` in monitoring (`execution_name`)."""

    def run_steps(
        self,
        saga_id: str,
        indexes: Sequence[int],
        correlation_id: str,
        time_limits: Sequence[float],
        names: Sequence[str],
    ) -> None: ...

    def run_compensations(
        self,
        saga_id: str,
        indexes: Sequence[int],
        correlation_id: str,
        time_limit: float,
        names: Sequence[str],
    ) -> None: ...

    def send_webhook(self, webhook_id: str, countdown: float, time_limit: float) -> None:
        """Deliver outbox entry `webhook_id` in `countdown` seconds (sagas/webhooks.py)."""
        ...


def execution_name(saga_type: str, step: str, undo: bool = False) -> str:
    """The name a person sees for one execution (Flower's task list, the worker's log
    lines): `user_registration/create_account`, `user_registration/create_account (undo)`."""
    return f"{saga_type}/{step} (undo)" if undo else f"{saga_type}/{step}"


@dataclass(frozen=True)
class Started:
    """The answer of `start`: the saga, and whether this call created it."""

    saga: SagaRecord
    created: bool


@dataclass
class SweepReport:
    """What one sweep did."""

    skipped: bool = False  # another sweep held the lock
    timed_out: int = 0  # deadlines passed: compensation started
    redriven: int = 0  # steps or compensations sent again
    compensation_failed: int = 0  # compensations past COMPENSATION_TIMEOUT_SECONDS
    admitted: int = 0  # PENDING sagas started
    events_reclaimed: int = 0  # stream entries of dead consumers, applied
    events_dead: int = 0  # stream entries delivered too often: dead letters
    expired: int = 0  # finished sagas (and webhook dead letters) deleted after retention
    webhooks_redriven: int = 0  # outbox entries sent again (claim or countdown passed)

    @property
    def acted(self) -> bool:
        return any(value for name, value in vars(self).items() if name != "skipped")

    def as_dict(self) -> dict[str, int | bool]:
        return dict(vars(self))


class SagaEngine:
    def __init__(
        self,
        store: RedisStore,
        dispatcher: Dispatcher,
        executor: ActionExecutor,
        settings: Settings,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.executor = executor
        self.settings = settings
        self.events = EventBus(self)
        self.executions = Executions(self)
        self.repairs = Repairs(self)
        self.webhooks = Webhooks(self)
        self.webhooks.default_target()  # a bad SAGA_WEBHOOK stops the process here
        self.workflows = WorkflowCatalog(self)
        self.schedules = Schedules(self)  # its beat entries: tasks/runtime.py sets them

    # --- starting and reading --------------------------------------------------------
    def start(
        self,
        data: Mapping[str, Any],
        *,
        idempotency: Idempotency | None = None,
        saga_id: str | None = None,
        origin: dict[str, Any] | None = None,
    ) -> Started:
        """Validate a definition, write the saga and enqueue its steps (`origin`: a rerun's
        link to its original, sagas/repair.py).

        Raises `InvalidDefinition` (nothing written) for a bad definition. With an
        `idempotency` claim whose key was used before, nothing new starts: the first saga is
        returned (`created` False), or `IdempotencyConflict` is raised when the key was used
        for a different request.
        """
        definition = parse_definition(data, self.settings)
        saga_id = saga_id or str(uuid.uuid4())
        correlation_id = definition.correlation_id or saga_id
        # The trace this start is part of (the API request's span, or a caller's context)
        # becomes the saga's, for every execution to join (sagas/tracing.py).
        traceparent = tracing.current_traceparent()
        with bound(
            saga_id=saga_id, correlation_id=correlation_id, trace_id=tracing.trace_id(traceparent)
        ):
            reply = self.store.create(
                saga_id, definition, correlation_id, idempotency, origin, traceparent
            )
            if reply.code == "exists":  # this very call again: it was dispatched then
                return Started(self.store.get(saga_id), created=False)
            if reply.code == "idempotent":
                return Started(self.store.get(str(reply.values[0])), created=False)
            if reply.code == "idempotency_conflict":
                raise IdempotencyConflict(str(reply.values[0]))
            log.info(
                "saga started" if reply.code != "pending" else "saga waits for a slot",
                extra={"saga_type": definition.saga_type, "steps": len(definition.steps)},
            )
            if reply.code != "pending":  # a PENDING saga is dispatched when admitted
                limits = [self.step_time_limit(s.timeout_seconds) for s in definition.steps]
                names = [execution_name(definition.saga_type, s.name) for s in definition.steps]
                self.dispatcher.run_steps(
                    saga_id, range(len(definition.steps)), correlation_id, limits, names
                )
        return Started(self.store.get(saga_id), created=True)

    def start_workflow(
        self,
        workflow: str,
        payload: Mapping[str, Any],
        correlation_id: str | None = None,
        *,
        idempotency: Idempotency | None = None,
        saga_id: str | None = None,
        version: int | None = None,
    ) -> Started:
        """Start a registered workflow (`sagas.catalog`): its latest version, or `version`.
        The saga records the workflow's name and version.

        Raises `UnknownWorkflow`, `WorkflowRetired`, `InvalidPayload`, or what `start` raises.
        """
        definition, origin = self.workflows.definition(workflow, payload, correlation_id, version)
        return self.start(definition, idempotency=idempotency, saga_id=saga_id, origin=origin)

    def get(self, saga_id: str) -> SagaRecord:
        """The saga document; raises `SagaNotFound`."""
        return self.store.get(saga_id)

    def history(self, saga_id: str) -> list[dict[str, Any]]:
        """The saga's transitions, oldest first; raises `SagaNotFound`."""
        self.store.get(saga_id)
        return self.store.history(saga_id)

    def find(self, query: ListQuery) -> tuple[int, list[SagaRecord]]:
        """The total matching `query` and one page of sagas, newest first."""
        return self.store.find(query)

    def delete(self, saga_id: str) -> None:
        """Delete a COMPLETED or COMPENSATED saga; raises `SagaNotFound` or
        `InvalidTransition` (deleting any other would lose the record of work not undone)."""
        reply = self.store.delete(saga_id)
        if reply.code == "missing":
            raise SagaNotFound(saga_id)
        if reply.code == "conflict":
            status = str(reply.values[0])
            raise InvalidTransition(
                saga_id,
                status,
                f"cannot delete a saga that is {status}: only COMPLETED or "
                "COMPENSATED sagas can be deleted",
            )

    def counts(self) -> dict[str, int]:
        """Sagas per status, now."""
        return {status.value: self.store.count(status) for status in SagaStatus}

    def workers_alive(self, within_seconds: float) -> list[str]:
        """Workers whose heartbeat was seen within the last `within_seconds`."""
        return self.store.workers_alive(within_seconds)

    def health(self, heartbeat_seconds: float) -> HealthReport:
        """Every component (Redis, workers, beat, events consumer, queues, timers) with its
        status and evidence (sagas/health.py); a worker or consumer is alive if it beat
        within `heartbeat_seconds`. Never raises for an unreachable Redis: it says so."""
        return check(self.store, self.settings, heartbeat_seconds)

    def stats(self) -> dict[str, int]:
        """The counters the transitions keep (see docs/design.md)."""
        return self.store.stats()

    def compensate(
        self,
        saga_id: str,
        reason: str = "compensation requested",
        expected_version: int | None = None,
        *,
        actor: str = "",
    ) -> SagaRecord:
        """Compensate a RUNNING or COMPLETED saga, retry a COMPENSATION_FAILED one, or cancel
        a PENDING one (`actor`: who asked, kept in the history). Raises `SagaNotFound`, or
        `InvalidTransition` (HTTP 409)."""
        reply = self.store.compensate(saga_id, reason, expected_version, actor=actor)
        if reply.code == "missing":
            raise SagaNotFound(saga_id)
        if reply.code == "conflict":
            status = reply.values[0]
            why = (
                "the saga changed (version mismatch)"
                if len(reply.values) > 1
                else f"the saga is already {status}"
            )
            raise InvalidTransition(saga_id, status, f"cannot compensate: {why}")
        record = self.store.get(saga_id)
        with (
            bound(saga_id=saga_id, correlation_id=record["correlation_id"]),
            self.saga_trace(saga_id, "compensation requested", reason=reason),
        ):
            log.info("compensation requested", extra={"reason": reason, "answer": reply.code})
            self.dispatch_compensation(saga_id, reply, record["correlation_id"])
        self.admit()
        return record

    # --- admission control and the sweep ------------------------------------------------
    def admit(self) -> list[str]:
        """Start PENDING sagas, oldest first, while slots are free; their ids."""
        admitted: list[str] = []
        while True:
            candidates = self.store.oldest_pending(10)
            if not candidates:
                return admitted
            for saga_id in candidates:
                reply = self.store.promote(saga_id)
                if reply.code == "full":
                    return admitted
                if reply.code == "promoted":
                    correlation_id, steps = str(reply.values[0]), int(str(reply.values[1]))
                    with (
                        bound(saga_id=saga_id, correlation_id=correlation_id),
                        self.saga_trace(saga_id, "saga admitted"),
                    ):
                        log.info("saga admitted")
                        self.dispatch_steps(saga_id, range(steps), correlation_id)
                    admitted.append(saga_id)

    def sweep(self, limit: int = 1000) -> SweepReport:
        """One pass of the beat sweep: act on due timers (deadlines passed, executions that
        showed no sign of life), admit PENDING sagas, delete finished sagas past retention.

        Holds a Redis lock, so two beats (or two sweeps) never work at once; every action is a
        fenced transition anyway, so even overlapping sweeps could not do a thing twice. A
        completed sweep is recorded (`keys.sweep`): GET /health/ tells from it whether beat runs.
        """
        interval_ms = int(self.settings.sweep_interval_seconds * 1000)
        token = self.store.lock("sweep", ttl_ms=max(10_000, 6 * interval_ms))
        if token is None:
            return SweepReport(skipped=True)
        report = SweepReport()
        started = time.monotonic()
        try:
            for timer in self.store.due_timers(limit):
                self._act_on(timer, report)
            report.admitted = len(self.admit())
            report.events_reclaimed, report.events_dead = self.events.reclaim()
            report.webhooks_redriven = self.webhooks.redrive()
            horizon = self.store.now_ms() - self.settings.retention_seconds * 1000
            for saga_id in self.store.finished_before(horizon, limit):
                if self.store.delete(saga_id).code == "deleted":
                    report.expired += 1
            report.expired += self.webhooks.expire(horizon)
        finally:
            self.store.unlock("sweep", token)
        record_sweep(self.store, time.monotonic() - started)
        if report.acted:
            log.info("sweep", extra=report.as_dict())
        return report

    def _act_on(self, timer: str, report: SweepReport) -> None:
        saga_id = timer.split("|")[1]
        reply = self.store.sweep(timer)
        if reply.code == "none":
            return
        correlation_id = self.store.get(saga_id)["correlation_id"]
        kind = timer.split("|")[0]
        with (
            bound(saga_id=saga_id, correlation_id=correlation_id),
            self.saga_trace(saga_id, f"sweep {kind}: {reply.code}", timer=timer),
        ):
            log.warning("sweep: %s -> %s %s", kind, reply.code, reply.values)
            if reply.code in ("compensate", "deferred"):
                report.timed_out += 1
                self.dispatch_compensation(saga_id, reply, correlation_id)
            elif reply.code == "redrive_steps":
                report.redriven += 1
                first = int(str(reply.values[0]))
                steps = len(self.store.get(saga_id)["steps"])
                self.dispatch_steps(saga_id, range(first, steps), correlation_id)
            elif reply.code == "redrive_comps":
                report.redriven += 1
                indexes = [int(str(v)) for v in reply.values]
                self.dispatch_compensations(saga_id, indexes, correlation_id)
            elif reply.code == "compensation_failed":
                report.compensation_failed += 1

    def saga_trace(self, saga_id: str, name: str, **attributes: Any) -> Any:
        """The saga's trace, current for work caused from outside its executions (a sweep,
        a person, an admission), with a span `name` there; nothing when tracing is off."""
        if not tracing.enabled():
            return tracing.in_saga(None)
        attributes = {"saga.id": saga_id, **{f"saga.{k}": v for k, v in attributes.items()}}
        return tracing.in_saga(self.store.traceparent(saga_id), name, **attributes)

    # --- dispatching ------------------------------------------------------------------
    def step_time_limit(self, step_timeout_seconds: float) -> float:
        """The hard time limit of a step execution: no attempt outlives its step's deadline,
        and the grace covers the store calls around it (SAGA_ATTEMPT_GRACE_SECONDS)."""
        return step_timeout_seconds + self.settings.attempt_grace_seconds

    def compensation_time_limit(self) -> float:
        return self.settings.compensation_timeout_seconds + self.settings.attempt_grace_seconds

    def dispatch_steps(self, saga_id: str, indexes: Sequence[int], correlation_id: str) -> None:
        """Enqueue the executions of these steps of a stored saga, in order."""
        saga_type, steps = self.store.outline(saga_id)
        limits = [self.step_time_limit(steps[i]["timeout_seconds"]) for i in indexes]
        names = [execution_name(saga_type, steps[i]["name"]) for i in indexes]
        self.dispatcher.run_steps(saga_id, indexes, correlation_id, limits, names)

    def dispatch_compensation(self, saga_id: str, reply: Reply, correlation_id: str) -> None:
        """Enqueue the compensations a transition answered (`compensate`, newest first)."""
        if reply.code == "compensate" and reply.values:
            self.dispatch_compensations(saga_id, [int(v) for v in reply.values], correlation_id)

    def dispatch_compensations(
        self, saga_id: str, indexes: Sequence[int], correlation_id: str
    ) -> None:
        """Enqueue these compensations of a stored saga, in this order."""
        saga_type, steps = self.store.outline(saga_id)
        names = [execution_name(saga_type, steps[i]["name"], undo=True) for i in indexes]
        self.dispatcher.run_compensations(
            saga_id, indexes, correlation_id, self.compensation_time_limit(), names
        )
