"""Running step and compensation attempts: one execution (a Celery task run) at a time.

An execution asks the store for an attempt (`step_begin` / `comp_begin`), makes the call, and
records the outcome with one transition. Every transition it makes is a *call* with an id:
repeated with the same id (redis-py resends a command whose reply was lost), it gets the
first answer and changes nothing. When Redis cannot be reached even after the client's
retries, the execution raises `StoreUnreachable` carrying the transition it could not make
as data (`pending`); its task retries later and replays exactly that call, so a Redis blip
neither burns an attempt (break: a lost reply to step_begin) nor turns an answered failure
into an uncertain one (break: a failure lost in the errback).

Final failures are recorded here, not in the chain's errback: an errback runs inline and
Celery swallows its exceptions. The errback only records what never reached this code
(a killed or time-limited execution, a bug), as uncertain.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sagas import placeholders, tracing
from sagas.errors import CompensationFailed, StepError, StepFailed, StoreUnreachable
from sagas.log import bound
from sagas.records import encode_output
from sagas.registry import TaskContext
from sagas.store import Grant, Reply, new_call_id

if TYPE_CHECKING:
    from sagas.engine import SagaEngine

log = logging.getLogger("sagas.engine")
# An attempt needs at least this long before the deadline. One started with less could only
# time out: it would hide the real error of the last attempt, and, for an action, make the
# step uncertain (to be compensated) for nothing.
MIN_ATTEMPT_SECONDS = 0.25
Pending = dict[str, Any]  # a transition not yet answered, as JSON-able data (op, call, args)


@dataclass(frozen=True)
class Continue:
    """The chain goes on to the next execution."""


@dataclass(frozen=True)
class Stop:
    """The chain ends here (a duplicate, a settled step, or the saga moved on)."""

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


class Executions:
    """The worker side of the engine: attempts of steps and compensations."""

    def __init__(self, engine: SagaEngine) -> None:
        self.engine = engine
        self.store = engine.store
        self.settings = engine.settings

    # --- steps -------------------------------------------------------------------------
    def run_step(
        self,
        saga_id: str,
        index: int,
        lease: str,
        correlation_id: str,
        *,
        time_limit: float | None = None,
        pending: Pending | None = None,
    ) -> Outcome:
        """One attempt of step `index` by execution `lease` (the task id), which Celery kills
        after `time_limit` seconds. With `pending`, first replay that unanswered call.

        Raises `StepFailed` (already recorded) when the step ends for good here, and
        `StoreUnreachable` when Redis cannot be reached (retry with its `pending`)."""
        if pending is not None and pending["op"] != "begin":
            return self._step_transition(saga_id, index, lease, correlation_id, pending)
        call = pending["call"] if pending else new_call_id()
        limit = time_limit or float(self.settings.visibility_timeout_seconds)
        reply = _reach(
            lambda: self.store.step_begin(saga_id, index, lease, int(limit * 1000), call),
            {"op": "begin", "call": call},
        )
        if reply.code == "resume":
            return Continue()
        if reply.code != "run":
            if reply.code == "compensate":
                self.engine.dispatch_compensation(saga_id, reply, correlation_id)
                self.engine.admit()
                raise StepFailed(
                    "the step ended before this attempt", uncertain=False, recorded=True
                )
            return Stop(reply.code)
        grant = self.store.grant(reply)
        step = grant.definition[index]
        ctx = _context(saga_id, step["name"], "action", grant)
        with _bound(ctx, grant), _span(f"step {step['name']}", ctx, grant, index) as span:
            return _traced(
                span, lambda: self._step_attempt(saga_id, index, lease, correlation_id, grant, ctx)
            )

    def _step_attempt(
        self,
        saga_id: str,
        index: int,
        lease: str,
        correlation_id: str,
        grant: Grant,
        ctx: TaskContext,
    ) -> Outcome:
        """The attempt `grant` allows: render the action, run it, record the outcome."""
        step = grant.definition[index]
        try:
            spec = _render(step["action"], saga_id, grant)
        except placeholders.RenderError as exc:
            return self._step_transition(
                saga_id,
                index,
                lease,
                correlation_id,
                _fail(f"{exc}; no call was made", uncertain=False, reason="error"),
            )
        if spec["kind"] == "event":
            self.engine.events.publish_command(
                saga_id, step["name"], spec, correlation_id, grant.traceparent
            )
            wait = {"op": "wait", "call": new_call_id(), "attempt": grant.attempt}
            log.info("step waits for %s", spec["await"]["success"])
            return self._step_transition(saga_id, index, lease, correlation_id, wait)
        try:
            output = self.engine.executor.run(spec, ctx, grant.remaining_ms / 1000)
        except StepError as exc:
            decision = self._after_attempt_error(step, grant, exc)
            return self._step_transition(saga_id, index, lease, correlation_id, decision)
        done = {
            "op": "complete",
            "call": new_call_id(),
            "attempt": grant.attempt,
            "output": self._encode_output(output),
        }
        return self._step_transition(saga_id, index, lease, correlation_id, done)

    def _after_attempt_error(
        self, step: Mapping[str, Any], grant: Grant, exc: StepError
    ) -> Pending:
        """What to record after a failed attempt: a retry, or the step's final failure."""
        retry = step["retry"]
        log.warning(
            "step attempt failed: %s",
            exc.message,
            extra={"retryable": exc.retryable, "uncertain": exc.uncertain},
        )
        if not exc.retryable:
            return _fail(exc.message, uncertain=exc.uncertain, reason="error")
        if grant.attempt >= retry["max_attempts"]:
            message = f"{exc.message} (after {grant.attempt} attempts)"
            return _fail(message, uncertain=exc.uncertain, reason="error")
        countdown = backoff(
            grant.attempt, retry["backoff_seconds"], retry["max_backoff_seconds"], exc.retry_after
        )
        if (countdown + MIN_ATTEMPT_SECONDS) * 1000 >= grant.remaining_ms:
            message = f"{exc.message}; the step's deadline passes before another attempt"
            return _fail(message, uncertain=exc.uncertain, reason="timeout")
        return {
            "op": "retry",
            "call": new_call_id(),
            "attempt": grant.attempt,
            "error": exc.message,
            "uncertain": exc.uncertain,
            "countdown_ms": int(countdown * 1000),
        }

    def _step_transition(
        self, saga_id: str, index: int, lease: str, correlation_id: str, pending: Pending
    ) -> Outcome:
        """Make (or replay) the transition `pending` describes and act on its answer."""
        op, call = pending["op"], pending["call"]
        store = self.store
        if op == "complete":
            answer = _reach(
                lambda: store.step_complete(
                    saga_id, index, lease, pending["attempt"], pending["output"], call
                ),
                pending,
            )
            log.info("step completed", extra={"answer": answer.code})
            if answer.code == "stale":
                log.warning("late step result refused: the step is %s", answer.values[0])
            return self._after_settled(saga_id, answer, correlation_id)
        if op == "wait":
            answer = _reach(
                lambda: store.step_wait(saga_id, index, lease, pending["attempt"], call), pending
            )
            return self._after_settled(saga_id, answer, correlation_id)
        if op == "retry":
            answer = _reach(
                lambda: store.step_retry(
                    saga_id,
                    index,
                    lease,
                    pending["attempt"],
                    pending["error"],
                    pending["uncertain"],
                    pending["countdown_ms"],
                    call,
                ),
                pending,
            )
            if answer.code == "ok":
                return Retry(pending["countdown_ms"] / 1000, pending["error"])
            if answer.code != "compensate":
                return Stop(answer.code)
            message = f"the saga is being compensated; last attempt: {pending['error']}"
            self._failed(saga_id, answer, correlation_id, message, pending["uncertain"])
        assert op == "fail", op
        answer = _reach(
            lambda: store.step_fail(
                saga_id,
                index,
                lease,
                pending["error"],
                pending["uncertain"],
                pending["reason"],
                call,
            ),
            pending,
        )
        self._failed(saga_id, answer, correlation_id, pending["error"], pending["uncertain"])

    def _failed(
        self, saga_id: str, answer: Reply, correlation_id: str, message: str, uncertain: bool
    ) -> NoReturn:
        """The step's failure is recorded: start its compensation, free its slot, and end the
        execution with `StepFailed` (so that Celery shows the task as failed)."""
        log.warning(
            "step failed: %s", message, extra={"uncertain": uncertain, "answer": answer.code}
        )
        self.engine.dispatch_compensation(saga_id, answer, correlation_id)
        self.engine.admit()
        raise StepFailed(message, uncertain=uncertain, recorded=True)

    def _after_settled(self, saga_id: str, answer: Reply, correlation_id: str) -> Outcome:
        """Act on a step's settling: continue the chain, free a slot, or compensate."""
        if answer.code == "next":
            return Continue()
        if answer.code == "saga_completed":
            self.engine.admit()
        elif answer.code == "compensate":
            self.engine.dispatch_compensation(saga_id, answer, correlation_id)
            self.engine.admit()
        return Stop(answer.code)

    def step_failed(
        self, saga_id: str, index: int, lease: str, correlation_id: str, exc: BaseException
    ) -> None:
        """Errback of the step chain. A failure this module raised is recorded already; any
        other (the execution was killed by its time limit or lost, a bug) may have happened
        after the call, so the step fails as uncertain."""
        if isinstance(exc, StepFailed) and exc.recorded:
            return
        message = f"{type(exc).__name__}: {exc}"
        answer = self.store.step_fail(saga_id, index, lease, message, True, "error")
        log.warning("step failed: %s", message, extra={"uncertain": True, "answer": answer.code})
        self.engine.dispatch_compensation(saga_id, answer, correlation_id)
        self.engine.admit()

    # --- compensations -----------------------------------------------------------------
    def run_compensation(
        self,
        saga_id: str,
        index: int,
        lease: str,
        correlation_id: str,
        *,
        pending: Pending | None = None,
    ) -> Outcome:
        """One attempt of step `index`'s compensation. Raises `CompensationFailed` (already
        recorded), or `StoreUnreachable` (retry with its `pending`)."""
        if pending is not None and pending["op"] != "begin":
            return self._comp_transition(saga_id, index, lease, pending)
        call = pending["call"] if pending else new_call_id()
        timeout_ms = int(self.settings.compensation_timeout_seconds * 1000)
        reply = _reach(
            lambda: self.store.comp_begin(saga_id, index, lease, timeout_ms, call),
            {"op": "begin", "call": call},
        )
        if reply.code == "done":
            return Continue()
        if reply.code == "expired":
            message = (
                f"gave up after {self.settings.compensation_timeout_seconds:g} s "
                "(COMPENSATION_TIMEOUT_SECONDS)"
            )
            return self._comp_transition(saga_id, index, lease, _cfail(message))
        if reply.code != "run":
            return Stop(reply.code)
        grant = self.store.grant(reply)
        step = grant.definition[index]
        ctx = _context(saga_id, step["name"], "compensation", grant)
        with _bound(ctx, grant), _span(f"compensate {step['name']}", ctx, grant, index) as span:
            return _traced(span, lambda: self._comp_attempt(saga_id, index, lease, grant, ctx))

    def _comp_attempt(
        self, saga_id: str, index: int, lease: str, grant: Grant, ctx: TaskContext
    ) -> Outcome:
        """The undo attempt `grant` allows: render the compensation, run it, record it."""
        step = grant.definition[index]
        try:
            spec = _render(step["compensation"], saga_id, grant)
        except placeholders.MissingValue as exc:
            message = (
                f"compensation of step {step['name']!r} needs {{{{{exc.text}}}}}, which "
                f"has no value: {exc.why}; resolve it by hand"
            )
            return self._comp_transition(saga_id, index, lease, _cfail(message))
        except placeholders.RenderError as exc:
            return self._comp_transition(saga_id, index, lease, _cfail(str(exc)))
        try:
            self.engine.executor.run(spec, ctx, grant.remaining_ms / 1000)
        except StepError as exc:
            log.warning("compensation attempt failed: %s", exc.message)
            return self._comp_transition(
                saga_id, index, lease, self._after_undo_error(step, grant, exc)
            )
        done = {"op": "complete", "call": new_call_id(), "attempt": grant.attempt}
        return self._comp_transition(saga_id, index, lease, done)

    def _after_undo_error(self, step: Mapping[str, Any], grant: Grant, exc: StepError) -> Pending:
        if not exc.retryable:
            return _cfail(exc.message)
        retry = step["retry"]
        countdown = backoff(
            grant.attempt, retry["backoff_seconds"], retry["max_backoff_seconds"], exc.retry_after
        )
        if (countdown + MIN_ATTEMPT_SECONDS) * 1000 >= grant.remaining_ms:
            return _cfail(
                f"{exc.message}; COMPENSATION_TIMEOUT_SECONDS passes before another attempt"
            )
        return {
            "op": "retry",
            "call": new_call_id(),
            "attempt": grant.attempt,
            "error": exc.message,
            "countdown_ms": int(countdown * 1000),
        }

    def _comp_transition(self, saga_id: str, index: int, lease: str, pending: Pending) -> Outcome:
        op, call = pending["op"], pending["call"]
        store = self.store
        if op == "complete":
            answer = _reach(
                lambda: store.comp_complete(saga_id, index, lease, pending["attempt"], call),
                pending,
            )
            log.info("compensation completed", extra={"answer": answer.code})
            return Continue() if answer.code in ("next", "saga_compensated") else Stop(answer.code)
        if op == "retry":
            answer = _reach(
                lambda: store.comp_retry(
                    saga_id,
                    index,
                    lease,
                    pending["attempt"],
                    pending["error"],
                    pending["countdown_ms"],
                    call,
                ),
                pending,
            )
            if answer.code == "ok":
                return Retry(pending["countdown_ms"] / 1000, pending["error"])
            return Stop(answer.code)
        assert op == "fail", op
        answer = _reach(
            lambda: store.comp_fail(saga_id, index, lease, pending["error"], call), pending
        )
        log.error("compensation failed: %s", pending["error"], extra={"answer": answer.code})
        raise CompensationFailed(pending["error"], recorded=True)

    def compensation_failed(self, saga_id: str, index: int, lease: str, exc: BaseException) -> None:
        """Errback of the compensation chain: what this module did not record (a killed
        execution, a bug) makes the saga COMPENSATION_FAILED."""
        if isinstance(exc, CompensationFailed) and exc.recorded:
            return
        message = f"{type(exc).__name__}: {exc}"
        answer = self.store.comp_fail(saga_id, index, lease, message)
        log.error("compensation failed: %s", message, extra={"answer": answer.code})

    # --- helpers -----------------------------------------------------------------------
    def _encode_output(self, output: Any) -> str:
        """The output as stored JSON; one above SAGA_MAX_OUTPUT_BYTES is replaced by a stub
        saying so (the step did take effect, so it still completes)."""
        return encode_output(output, self.settings.max_output_bytes)


def _reach(transition: Callable[[], Reply], pending: Pending) -> Reply:
    """Make a store call; if Redis cannot be reached (after the client's own retries), raise
    `StoreUnreachable` with the call as data, for the task to replay."""
    try:
        return transition()
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise StoreUnreachable(pending, str(exc)) from exc


def _fail(message: str, *, uncertain: bool, reason: str) -> Pending:
    return {
        "op": "fail",
        "call": new_call_id(),
        "error": message,
        "uncertain": uncertain,
        "reason": reason,
    }


def _cfail(message: str) -> Pending:
    return {"op": "fail", "call": new_call_id(), "error": message}


def _context(saga_id: str, name: str, phase: str, grant: Grant) -> TaskContext:
    return TaskContext(
        saga_id=saga_id,
        step=name,
        phase=phase,
        attempt=grant.attempt,
        idempotency_key=f"{saga_id}:{name}:{phase}",
        correlation_id=grant.correlation_id,
        traceparent=grant.traceparent,
    )


def _bound(ctx: TaskContext, grant: Grant) -> AbstractContextManager[None]:
    """Log context of one attempt."""
    return bound(
        saga_id=ctx.saga_id,
        correlation_id=ctx.correlation_id,
        step=ctx.step,
        phase=ctx.phase,
        attempt=ctx.attempt,
        trace_id=tracing.trace_id(grant.traceparent),
    )


def _span(name: str, ctx: TaskContext, grant: Grant, index: int) -> AbstractContextManager[Any]:
    """The span of one attempt, in the saga's trace (None when tracing is off)."""
    return tracing.attempt(
        name,
        grant.traceparent,
        {
            "saga.id": ctx.saga_id,
            "saga.type": grant.saga_type,
            "saga.correlation_id": ctx.correlation_id,
            "saga.step": ctx.step,
            "saga.step_index": index,
            "saga.phase": ctx.phase,
            "saga.attempt": ctx.attempt,
        },
    )


def _traced(span: Any, attempt: Callable[[], Outcome]) -> Outcome:
    """Run an attempt and record on its span how it ended (`saga.outcome`): completed,
    retry, failed, or why the chain stopped (waiting, duplicate, stale, ...)."""
    if span is None:
        return attempt()
    try:
        result = attempt()
    except (StepFailed, CompensationFailed) as exc:
        tracing.outcome(span, "failed", str(exc))
        raise
    except StoreUnreachable as exc:
        tracing.outcome(span, "store_unreachable", str(exc))
        raise
    if isinstance(result, Retry):
        tracing.outcome(span, "retry", result.error)
    elif isinstance(result, Stop) and result.why == "saga_completed":
        tracing.outcome(span, "completed")  # the last step: the saga is COMPLETED
        span.set_attribute("saga.completed", True)
    elif isinstance(result, Stop):
        tracing.outcome(span, result.why)
    else:
        tracing.outcome(span, "completed")
    return result


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
