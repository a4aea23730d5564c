"""Typed domain errors. `app/` turns them into HTTP answers in one place."""

from __future__ import annotations

from typing import Any


class SagaError(Exception):
    """Base class of every error the engine raises on purpose."""


class ConfigurationError(SagaError):
    """The service's own configuration (environment) is invalid."""


# --- rejected input: each error names the offending field ---------------------------------
class ValidationFailed(SagaError):
    """Input was rejected; `field` is a dotted path such as `steps[1].action.path` (HTTP 422)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class InvalidDefinition(ValidationFailed):
    """A saga definition was rejected."""


class InvalidPayload(ValidationFailed):
    """A workflow's payload does not match its template's payload schema."""


class UnknownWorkflow(SagaError):
    """No predefined workflow (template) has this name (HTTP 404)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no workflow named {name!r}")
        self.name = name


class InvalidWorkflow(ValidationFailed):
    """A workflow document (sagas/workflow.py) was rejected: its shape, its payload schema,
    its examples, or a placeholder its payload schema cannot fill."""


class UnknownWorkflowVersion(UnknownWorkflow):
    """The workflow exists, without this version (HTTP 404)."""

    def __init__(self, name: str, version: int) -> None:
        SagaError.__init__(self, f"workflow {name!r} has no version {version}")
        self.name = name
        self.version = version


class WorkflowRetired(SagaError):
    """The workflow was retired: no new sagas start from it (HTTP 409)."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"workflow {name!r} is retired: no new sagas start from it (register it again "
            f"with PUT /workflows/{name} to bring it back)"
        )
        self.name = name


class MissingField(InvalidDefinition):
    """A required field is absent."""


class InvalidType(InvalidDefinition):
    """A field has the wrong JSON type."""


class InvalidValue(InvalidDefinition):
    """A field has the right type but a value outside what is allowed."""


class DuplicateStepName(InvalidDefinition):
    """Two steps share a name."""


class TooManySteps(InvalidDefinition):
    """The definition has more steps than `SAGA_MAX_STEPS` (or none)."""


class PayloadTooLarge(InvalidDefinition):
    """The payload, or a step body, exceeds its size limit."""


class AmbiguousAction(InvalidDefinition):
    """An action is not exactly one of: service call, registered task, event."""


class UnknownService(InvalidDefinition):
    """An HTTP action names a service that the deployment did not register."""


class UnknownTask(InvalidDefinition):
    """A task action names a task that the deployment did not register."""


class InvalidPath(InvalidDefinition):
    """An HTTP path is not a plain absolute path (it could change scheme, host or port)."""


class InvalidPlaceholder(InvalidDefinition):
    """A `{{...}}` placeholder is malformed, or refers to a later step or an unknown root."""


class MissingPayloadValue(InvalidDefinition):
    """A `{{payload.x}}` placeholder refers to a value the payload does not have."""


class InvalidTimeout(InvalidDefinition):
    """A timeout is not positive, or a step's timeout exceeds the saga's."""


class InvalidRetry(InvalidDefinition):
    """A retry policy is out of bounds."""


class UnsupportedStep(InvalidDefinition):
    """The step kind is part of the format but not enabled in this deployment."""


# --- state --------------------------------------------------------------------------------
class SagaNotFound(SagaError):
    """No saga with this id (never existed, deleted, or expired after retention)."""

    def __init__(self, saga_id: str) -> None:
        super().__init__(f"saga {saga_id!r} not found")
        self.saga_id = saga_id


class UnknownStep(SagaError):
    """The saga has no step of this name or 1-based number (HTTP 404)."""

    def __init__(self, saga_id: str, step: str) -> None:
        super().__init__(f"saga {saga_id!r} has no step {step!r} (give its name or number)")
        self.saga_id = saga_id
        self.step = step


class IdempotencyConflict(SagaError):
    """The Idempotency-Key was already used for a different request (HTTP 409)."""

    def __init__(self, saga_id: str) -> None:
        super().__init__(
            "this Idempotency-Key was already used with a different request "
            f"(it started saga {saga_id})"
        )
        self.saga_id = saga_id


class InvalidTransition(SagaError):
    """The request conflicts with the saga's current status (HTTP 409)."""

    def __init__(self, saga_id: str, status: str, message: str) -> None:
        super().__init__(message)
        self.saga_id = saga_id
        self.status = status
        self.message = message


# --- step execution -----------------------------------------------------------------------
class StepError(Exception):
    """Raised by registered tasks (and the HTTP caller) to say how an attempt failed.

    `retryable`: another attempt may succeed (e.g. a 503). `uncertain`: the attempt may have
    taken effect although no success was seen (a timeout after sending), so the step must be
    compensated if the saga is undone. `retry_after` is a server's hint in seconds.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        uncertain: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.uncertain = uncertain
        self.retry_after = retry_after


class StepFailed(Exception):
    """A step ended for good. `recorded`: the failure is in the store already (the chain's
    errback has nothing left to do); otherwise the errback records it."""

    def __init__(
        self, message: str, *, uncertain: bool, reason: str = "error", recorded: bool = False
    ) -> None:
        super().__init__(message)
        self.message = message
        self.uncertain = uncertain
        self.reason = reason
        self.recorded = recorded

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_step_failed, (self.message, self.uncertain, self.reason, self.recorded))


class CompensationFailed(Exception):
    """A compensation could not be done; `recorded` as for `StepFailed`."""

    def __init__(self, message: str, *, recorded: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.recorded = recorded

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_compensation_failed, (self.message, self.recorded))


class StoreUnreachable(Exception):
    """Redis could not be reached (after the client's own retries) for the transition
    `pending` (JSON-able: its op, call id and arguments). The task retries later and replays
    exactly that call: the same call id, so it acts at most once."""

    def __init__(self, pending: dict[str, Any], message: str) -> None:
        super().__init__(f"the state store is unreachable ({message}); will replay {pending['op']}")
        self.pending = pending

    def __reduce__(self) -> tuple[object, ...]:
        return (StoreUnreachable, (self.pending, str(self)))


def _rebuild_step_failed(message: str, uncertain: bool, reason: str, recorded: bool) -> StepFailed:
    return StepFailed(message, uncertain=uncertain, reason=reason, recorded=recorded)


def _rebuild_compensation_failed(message: str, recorded: bool) -> CompensationFailed:
    return CompensationFailed(message, recorded=recorded)


# --- completion webhooks (sagas/webhooks.py) ---------------------------------------------
class WebhookNotFound(SagaError):
    """No outbox entry with this id (never written, or delivered: delivered ones are deleted)."""

    def __init__(self, webhook_id: str) -> None:
        super().__init__(f"webhook {webhook_id!r} not found (delivered, or never queued)")
        self.webhook_id = webhook_id


class WebhookNotDead(SagaError):
    """The webhook is still being delivered: only a dead letter can be retried (HTTP 409)."""

    def __init__(self, webhook_id: str, state: str) -> None:
        super().__init__(
            f"webhook {webhook_id!r} is {state}, not a dead letter: it is being retried"
        )
        self.webhook_id = webhook_id
        self.state = state
