"""The saga engine: starting sagas, running step and compensation attempts, failures.

The engine is handed a `Dispatcher` that enqueues chains of step or compensation executions
(Celery in production, see `tasks/`). Each execution calls `run_step` / `run_compensation`
and acts on the answer: continue the chain, stop it, or retry after a countdown. Final
failures are raised as `StepFailed` / `CompensationFailed` so that the chain's errback records
them with `step_failed` / `compensation_failed`, which enqueue the compensation.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from sagas import placeholders
from sagas.actions import ActionExecutor
from sagas.definition import parse_definition
from sagas.errors import (
    CompensationFailed,
    IdempotencyConflict,
    InvalidTransition,
    SagaNotFound,
    StepError,
    StepFailed,
)
from sagas.events import EventBus
from sagas.log import bound
from sagas.model import SagaRecord, SagaStatus
from sagas.registry import TaskContext
from sagas.settings import Settings
from sagas.store import Grant, Idempotency, ListQuery, RedisStore, Reply, dumps

log = logging.getLogger("sagas.engine")
# An attempt needs at least this long before the deadline. One started with less could only
# time out: it would hide the real error of the last attempt, and, for an action, make the
# step uncertain (to be compensated) for nothing.
MIN_ATTEMPT_SECONDS = 0.25


class Dispatcher(Protocol):
    """Enqueues executions. Both calls are fire-and-forget; order within a call is kept."""

    def run_steps(self, saga_id: str, indexes: Sequence[int], correlation_id: str) -> None: ...

    def run_compensations(
        self, saga_id: str, indexes: Sequence[int], correlation_id: str
    ) -> None: ...


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
    expired: int = 0  # finished sagas deleted after SAGA_RETENTION_SECONDS

    @property
    def acted(self) -> bool:
        return any(value for name, value in vars(self).items() if name != "skipped")

    def as_dict(self) -> dict[str, int | bool]:
        return dict(vars(self))


@dataclass(frozen=True)
class Continue:
    """The chain goes on to the next execution."""


@dataclass(frozen=True)
class Stop:
    """The chain ends here (a duplicate, a fenced execution, or the saga moved on)."""

    why: str


@dataclass(frozen=True)
class Retry:
    """Try this execution again after `countdown` seconds (through the task queue)."""

    countdown: float
    error: str


Outcome = Continue | Stop | Retry


def backoff(attempt: int, base: float, maximum: float, retry_after: float | None) -> float:
    """Exponential backoff with equal jitter for the attempt after `attempt`; a server's
    Retry-After is honoured as a lower bound."""
    ceiling = min(maximum, base * 2.0 ** (attempt - 1))
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
    return float(max(delay, retry_after or 0.0))


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

    # --- starting and reading --------------------------------------------------------
    def start(
        self,
        data: Mapping[str, Any],
        *,
        idempotency: Idempotency | None = None,
        saga_id: str | None = None,
    ) -> Started:
        """Validate a definition, write the saga and enqueue its steps.

        Raises `InvalidDefinition` (nothing written) for a bad definition. With an
        `idempotency` claim whose key was used before, nothing new starts: the first saga is
        returned (`created` False), or `IdempotencyConflict` is raised when the key was used
        for a different request.
        """
        definition = parse_definition(data, self.settings)
        saga_id = saga_id or str(uuid.uuid4())
        correlation_id = definition.correlation_id or saga_id
        with bound(saga_id=saga_id, correlation_id=correlation_id):
            reply = self.store.create(saga_id, definition, correlation_id, idempotency)
            if reply.code == "idempotent":
                return Started(self.store.get(str(reply.values[0])), created=False)
            if reply.code == "idempotency_conflict":
                raise IdempotencyConflict(str(reply.values[0]))
            log.info(
                "saga started" if reply.code != "pending" else "saga waits for a slot",
                extra={"saga_type": definition.saga_type, "steps": len(definition.steps)},
            )
            if reply.code != "pending":  # a PENDING saga is dispatched when admitted
                self.dispatcher.run_steps(saga_id, range(len(definition.steps)), correlation_id)
        return Started(self.store.get(saga_id), created=True)

    def start_workflow(
        self,
        workflow: str,
        payload: Mapping[str, Any],
        correlation_id: str | None = None,
        *,
        idempotency: Idempotency | None = None,
        saga_id: str | None = None,
    ) -> Started:
        """Start one of the predefined workflows (`sagas.templates`).

        Raises `UnknownWorkflow`, `InvalidPayload`, or what `start` raises.
        """
        from sagas.templates import build_definition

        return self.start(
            build_definition(workflow, payload, correlation_id),
            idempotency=idempotency,
            saga_id=saga_id,
        )

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

    def stats(self) -> dict[str, int]:
        """The counters the transitions keep (see docs/design.md)."""
        return self.store.stats()

    def compensate(
        self,
        saga_id: str,
        reason: str = "compensation requested",
        expected_version: int | None = None,
    ) -> SagaRecord:
        """Compensate a RUNNING or COMPLETED saga, retry a COMPENSATION_FAILED one, or cancel
        a PENDING one. Raises `SagaNotFound`, or `InvalidTransition` (HTTP 409)."""
        reply = self.store.compensate(saga_id, reason, expected_version)
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
        with bound(saga_id=saga_id, correlation_id=record["correlation_id"]):
            log.info("compensation requested", extra={"reason": reason, "answer": reply.code})
            self.dispatch_compensation(saga_id, reply, record["correlation_id"])
        self.admit()
        return record

    # --- steps -------------------------------------------------------------------------
    def run_step(self, saga_id: str, index: int, lease: str) -> Outcome:
        """One attempt of step `index` by execution `lease` (the task id).

        Raises `StepFailed` when the step ends for good (the errback records it).
        """
        reply = self.store.step_begin(saga_id, index, lease)
        code = reply.code
        if code == "resume":
            return Continue()
        if code in ("stop", "busy", "missing"):
            return Stop(code)
        if code == "fenced":
            raise StepFailed(
                "compensation was requested while the step was in flight",
                uncertain=reply.values[0] == "1",
                reason="manual",
            )
        if code == "expired":
            raise StepFailed("the step's deadline passed", uncertain=True, reason="timeout")
        if code == "exhausted":
            raise StepFailed(
                "no attempts left after lost executions", uncertain=reply.values[0] == "1"
            )
        grant = self.store.grant(reply)
        step = grant.definition[index]
        ctx = self._context(saga_id, step["name"], "action", grant)
        with _bound(ctx):
            try:
                spec = _render(step["action"], saga_id, grant)
            except placeholders.MissingValue as exc:
                raise StepFailed(f"{exc}; no call was made", uncertain=False) from None
            if spec["kind"] == "event":
                return self._publish_and_wait(saga_id, index, lease, step, spec, grant)
            try:
                output = self.executor.run(spec, ctx, grant.remaining_ms / 1000)
            except StepError as exc:
                return self._step_attempt_failed(saga_id, index, lease, step, grant, exc)
            answer = self.store.step_complete(
                saga_id, index, lease, grant.attempt, self._encode_output(output)
            )
            log.info("step completed", extra={"answer": answer.code})
            if answer.code == "stale":
                log.warning("late step result refused: the step is %s", answer.values[0])
            return self._after_step(saga_id, answer, grant.correlation_id)

    def _publish_and_wait(
        self,
        saga_id: str,
        index: int,
        lease: str,
        step: Mapping[str, Any],
        spec: Mapping[str, Any],
        grant: Grant,
    ) -> Outcome:
        """An event step: publish its command, then wait for the reply event (the chain
        stops here; the event consumer continues it)."""
        self.events.publish_command(saga_id, step["name"], spec, grant.correlation_id)
        answer = self.store.step_wait(saga_id, index, lease, grant.attempt)
        log.info("step waits for %s", spec["await"]["success"], extra={"answer": answer.code})
        if answer.code == "fenced":
            raise StepFailed(
                "compensation was requested; the command was already published",
                uncertain=True,
                reason="manual",
            )
        return self._after_step(saga_id, answer, grant.correlation_id)

    def _after_step(self, saga_id: str, answer: Reply, correlation_id: str) -> Outcome:
        """Act on a step's settling: continue the chain, free a slot, or compensate."""
        if answer.code == "next":
            return Continue()
        if answer.code == "saga_completed":
            self.admit()
        elif answer.code == "compensate":
            self.dispatch_compensation(saga_id, answer, correlation_id)
        return Stop(answer.code)

    def _step_attempt_failed(
        self,
        saga_id: str,
        index: int,
        lease: str,
        step: Mapping[str, Any],
        grant: Grant,
        exc: StepError,
    ) -> Outcome:
        retry = step["retry"]
        log.warning(
            "step attempt failed: %s",
            exc.message,
            extra={"retryable": exc.retryable, "uncertain": exc.uncertain},
        )
        if not exc.retryable:
            raise StepFailed(exc.message, uncertain=exc.uncertain)
        if grant.attempt >= retry["max_attempts"]:
            raise StepFailed(
                f"{exc.message} (after {grant.attempt} attempts)", uncertain=exc.uncertain
            )
        countdown = backoff(
            grant.attempt, retry["backoff_seconds"], retry["max_backoff_seconds"], exc.retry_after
        )
        if (countdown + MIN_ATTEMPT_SECONDS) * 1000 >= grant.remaining_ms:
            raise StepFailed(
                f"{exc.message}; the step's deadline passes before another attempt",
                uncertain=exc.uncertain,
                reason="timeout",
            )
        answer = self.store.step_retry(
            saga_id, index, lease, grant.attempt, exc.message, exc.uncertain, int(countdown * 1000)
        )
        if answer.code == "fenced":
            raise StepFailed(
                f"compensation was requested; last attempt: {exc.message}",
                uncertain=answer.values[0] == "1",
                reason="manual",
            )
        if answer.code == "stale":
            return Stop("stale")
        return Retry(countdown, exc.message)

    def step_failed(
        self, saga_id: str, index: int, lease: str, correlation_id: str, exc: BaseException
    ) -> None:
        """Errback of the step chain: record the failure and enqueue the compensation."""
        if isinstance(exc, StepFailed):
            message, uncertain, reason = exc.message, exc.uncertain, exc.reason
            if reason == "manual":
                reason = "error"  # the saga's failure is already the manual request
        else:  # a bug or an infrastructure error mid-step: the call may have happened
            message, uncertain, reason = f"{type(exc).__name__}: {exc}", True, "error"
        answer = self.store.step_fail(saga_id, index, lease, message, uncertain, reason)
        log.warning(
            "step failed: %s", message, extra={"uncertain": uncertain, "answer": answer.code}
        )
        self.dispatch_compensation(saga_id, answer, correlation_id)
        self.admit()

    # --- compensations -----------------------------------------------------------------
    def run_compensation(self, saga_id: str, index: int, lease: str) -> Outcome:
        """One attempt of step `index`'s compensation. Raises `CompensationFailed`."""
        timeout_ms = int(self.settings.compensation_timeout_seconds * 1000)
        reply = self.store.comp_begin(saga_id, index, lease, timeout_ms)
        if reply.code == "done":
            return Continue()
        if reply.code == "expired":
            raise CompensationFailed(
                f"gave up after {self.settings.compensation_timeout_seconds:g} s "
                "(COMPENSATION_TIMEOUT_SECONDS)"
            )
        if reply.code != "run":
            return Stop(reply.code)
        grant = self.store.grant(reply)
        step = grant.definition[index]
        ctx = self._context(saga_id, step["name"], "compensation", grant)
        with _bound(ctx):
            try:
                spec = _render(step["compensation"], saga_id, grant)
            except placeholders.MissingValue as exc:
                raise CompensationFailed(
                    f"compensation of step {step['name']!r} needs {{{{{exc.text}}}}}, which "
                    "has no value: the step's "
                    "outcome is uncertain and it left no output; resolve it by hand"
                ) from None
            try:
                self.executor.run(spec, ctx, grant.remaining_ms / 1000)
            except StepError as exc:
                log.warning("compensation attempt failed: %s", exc.message)
                if not exc.retryable:
                    raise CompensationFailed(exc.message) from None
                retry = step["retry"]
                countdown = backoff(
                    grant.attempt,
                    retry["backoff_seconds"],
                    retry["max_backoff_seconds"],
                    exc.retry_after,
                )
                if (countdown + MIN_ATTEMPT_SECONDS) * 1000 >= grant.remaining_ms:
                    raise CompensationFailed(
                        f"{exc.message}; COMPENSATION_TIMEOUT_SECONDS passes before another attempt"
                    ) from None
                answer = self.store.comp_retry(
                    saga_id, index, lease, grant.attempt, exc.message, int(countdown * 1000)
                )
                return Retry(countdown, exc.message) if answer.code == "ok" else Stop("stale")
            answer = self.store.comp_complete(saga_id, index, lease, grant.attempt)
            log.info("compensation completed", extra={"answer": answer.code})
            return Continue() if answer.code in ("next", "saga_compensated") else Stop(answer.code)

    def compensation_failed(self, saga_id: str, index: int, lease: str, exc: BaseException) -> None:
        """Errback of the compensation chain: the saga becomes COMPENSATION_FAILED."""
        message = (
            exc.message if isinstance(exc, CompensationFailed) else (f"{type(exc).__name__}: {exc}")
        )
        answer = self.store.comp_fail(saga_id, index, lease, message)
        log.error(
            "compensation failed: %s", message, extra={"saga_id": saga_id, "answer": answer.code}
        )

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
                    with bound(saga_id=saga_id, correlation_id=correlation_id):
                        log.info("saga admitted")
                    self.dispatcher.run_steps(saga_id, range(steps), correlation_id)
                    admitted.append(saga_id)

    def sweep(self, limit: int = 1000) -> SweepReport:
        """One pass of the beat sweep: act on due timers (deadlines passed, executions that
        showed no sign of life), admit PENDING sagas, delete finished sagas past retention.

        Holds a Redis lock, so two beats (or two sweeps) never work at once; every action is a
        fenced transition anyway, so even overlapping sweeps could not do a thing twice.
        """
        interval_ms = int(self.settings.sweep_interval_seconds * 1000)
        token = self.store.lock("sweep", ttl_ms=max(10_000, 6 * interval_ms))
        if token is None:
            return SweepReport(skipped=True)
        report = SweepReport()
        try:
            for timer in self.store.due_timers(limit):
                self._act_on(timer, report)
            report.admitted = len(self.admit())
            report.events_reclaimed, report.events_dead = self.events.reclaim()
            horizon = self.store.now_ms() - self.settings.retention_seconds * 1000
            for saga_id in self.store.finished_before(horizon, limit):
                if self.store.delete(saga_id).code == "deleted":
                    report.expired += 1
        finally:
            self.store.unlock("sweep", token)
        if report.acted:
            log.info("sweep", extra=report.as_dict())
        return report

    def _act_on(self, timer: str, report: SweepReport) -> None:
        saga_id = timer.split("|")[1]
        reply = self.store.sweep(timer)
        if reply.code == "none":
            return
        correlation_id = self.store.get(saga_id)["correlation_id"]
        with bound(saga_id=saga_id, correlation_id=correlation_id):
            log.warning("sweep: %s -> %s %s", timer.split("|")[0], reply.code, reply.values)
            if reply.code == "compensate":
                report.timed_out += 1
                self.dispatch_compensation(saga_id, reply, correlation_id)
            elif reply.code == "redrive_steps":
                report.redriven += 1
                first = int(str(reply.values[0]))
                steps = len(self.store.get(saga_id)["steps"])
                self.dispatcher.run_steps(saga_id, range(first, steps), correlation_id)
            elif reply.code == "redrive_comps":
                report.redriven += 1
                indexes = [int(str(v)) for v in reply.values]
                self.dispatcher.run_compensations(saga_id, indexes, correlation_id)
            elif reply.code == "compensation_failed":
                report.compensation_failed += 1

    # --- helpers -----------------------------------------------------------------------
    def _encode_output(self, output: Any) -> str:
        """The output as stored JSON; one above SAGA_MAX_OUTPUT_BYTES is replaced by a stub
        saying so (the step did take effect, so it still completes)."""
        encoded = dumps(output)
        if len(encoded) > self.settings.max_output_bytes:
            log.warning("step output of %d bytes replaced by a stub", len(encoded))
            encoded = dumps({"truncated": True, "size_bytes": len(encoded)})
        return encoded

    def dispatch_compensation(self, saga_id: str, reply: Reply, correlation_id: str) -> None:
        if reply.code == "compensate" and reply.values:
            self.dispatcher.run_compensations(
                saga_id, [int(v) for v in reply.values], correlation_id
            )

    @staticmethod
    def _context(saga_id: str, name: str, phase: str, grant: Grant) -> TaskContext:
        return TaskContext(
            saga_id=saga_id,
            step=name,
            phase=phase,
            attempt=grant.attempt,
            idempotency_key=f"{saga_id}:{name}:{phase}",
            correlation_id=grant.correlation_id,
        )


def _bound(ctx: TaskContext) -> AbstractContextManager[None]:
    """Log context of one attempt."""
    return bound(
        saga_id=ctx.saga_id,
        correlation_id=ctx.correlation_id,
        step=ctx.step,
        phase=ctx.phase,
        attempt=ctx.attempt,
    )


def _render(action: Mapping[str, Any], saga_id: str, grant: Grant) -> dict[str, Any]:
    context = {
        "payload": grant.payload,
        "steps": grant.outputs,
        "saga": {"id": saga_id, "correlation_id": grant.correlation_id, "type": grant.saga_type},
    }
    spec = dict(action)
    if spec["kind"] == "http":
        spec["path"] = placeholders.render_path(spec["path"], context)
        if "body" in spec:
            spec["body"] = placeholders.render(spec["body"], context)
    elif spec["kind"] == "task":
        spec["args"] = placeholders.render(spec.get("args") or {}, context)
    elif spec["kind"] == "event":
        spec["data"] = placeholders.render(spec.get("data") or {}, context)
    return spec
