"""Parsing and validating saga definitions (`POST /saga/start`, docs/api.md).

`parse_definition` either returns a normalised `SagaDefinition` or raises a subclass of
`InvalidDefinition` naming the offending field. It touches no Redis, so nothing is written for
a definition it rejects.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sagas import errors
from sagas.placeholders import (
    PLACEHOLDER,
    PlaceholderSyntaxError,
    Reference,
    UnsafeValue,
    check_path,
    is_dot_segment,
    iter_references,
    parse_reference,
)
from sagas.registry import get_task
from sagas.settings import Settings
from sagas.webhook_target import WebhookTarget, parse_target

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
SAGA_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")
EVENT_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")
HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
MAX_ATTEMPTS = 20
MAX_CORRELATION_ID = 200
# The correlation id travels as the X-Correlation-Id header of every call: printable ASCII
# (0x20-0x7E), no space at either end (HTTP strips or refuses those), 1-200 characters.
CORRELATION_ID_PATTERN = r"^[!-~]([ -~]{0,198}[!-~])?$"
CORRELATION_ID = re.compile(CORRELATION_ID_PATTERN)
CORRELATION_ID_RULE = (
    f"1-{MAX_CORRELATION_ID} printable ASCII characters (no space at either end): "
    "it is sent as the X-Correlation-Id header"
)
MAX_BODY_BYTES = 64 * 1024
# A path is absolute and plain: no scheme, authority, fragment, backslash, dot segment,
# whitespace or control character; placeholders are rendered percent-encoded.
_PATH_CHARS = re.compile(r"^/[A-Za-z0-9\-._~!$&'()*+,;=:@%/?{}\[\] ]*$")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int  # all attempts, the first included
    backoff_seconds: float
    max_backoff_seconds: float


@dataclass(frozen=True)
class Action:
    """One of three kinds. `kind` is "http", "task" or "event"; `spec` the normalised JSON."""

    kind: str
    spec: dict[str, Any]


@dataclass(frozen=True)
class StepDefinition:
    name: str
    action: Action
    compensation: Action | None
    timeout_seconds: float
    retry: RetryPolicy

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "action": {"kind": self.action.kind, **self.action.spec},
            "compensation": None
            if self.compensation is None
            else {"kind": self.compensation.kind, **self.compensation.spec},
            "timeout_seconds": self.timeout_seconds,
            "retry": {
                "max_attempts": self.retry.max_attempts,
                "backoff_seconds": self.retry.backoff_seconds,
                "max_backoff_seconds": self.retry.max_backoff_seconds,
            },
        }


@dataclass(frozen=True)
class SagaDefinition:
    saga_type: str
    payload: dict[str, Any]
    correlation_id: str | None
    timeout_seconds: float
    steps: tuple[StepDefinition, ...]
    webhook: WebhookTarget | None = None  # the completion webhook (sagas/webhooks.py)


def parse_definition(
    data: Any, settings: Settings, *, check_payload: bool = True
) -> SagaDefinition:
    """Validate a whole definition; raise the first `InvalidDefinition` found.

    `check_payload=False` (a workflow's definition, before any payload exists: see
    `sagas.workflow`) leaves out the checks against the payload's values; everything else
    is checked the same."""
    if not isinstance(data, Mapping):
        raise errors.InvalidType("$", "a saga definition is a JSON object")
    saga_type = _require(data, "saga_type", str, "saga_type")
    if not SAGA_TYPE.match(saga_type):
        raise errors.InvalidValue(
            "saga_type", "1-100 characters: letters, digits and _ . : - (starting alphanumeric)"
        )
    payload = data.get("payload", {})
    if payload is None:
        payload = {}
    if not isinstance(payload, Mapping):
        raise errors.InvalidType("payload", "must be a JSON object")
    payload_size = len(json.dumps(payload, separators=(",", ":")))
    if payload_size > settings.max_payload_bytes:
        raise errors.PayloadTooLarge(
            "payload", f"{payload_size} bytes, the limit is {settings.max_payload_bytes}"
        )
    correlation_id = data.get("correlation_id")
    if correlation_id is not None and not is_correlation_id(correlation_id):
        raise errors.InvalidValue("correlation_id", CORRELATION_ID_RULE)
    saga_timeout = _timeout(
        data, "timeout_seconds", "timeout_seconds", settings.saga_timeout_seconds
    )

    raw_steps = data.get("steps")
    if raw_steps is None:
        raise errors.MissingField("steps", "a saga needs at least one step")
    if not isinstance(raw_steps, list):
        raise errors.InvalidType("steps", "must be a list of steps")
    if not 1 <= len(raw_steps) <= settings.max_steps:
        raise errors.TooManySteps(
            "steps", f"{len(raw_steps)} steps; between 1 and {settings.max_steps} are allowed"
        )

    seen: set[str] = set()
    steps = []
    for index, raw in enumerate(raw_steps):
        known_payload = dict(payload) if check_payload else None
        step = _parse_step(raw, f"steps[{index}]", settings, saga_timeout, seen, known_payload)
        seen.add(step.name)
        steps.append(step)
    known = {"payload": dict(payload), "steps": {}, "saga": {"type": saga_type}}
    if correlation_id is not None:
        known["saga"]["correlation_id"] = correlation_id
    for index, step in enumerate(steps):
        for kind, action in (("action", step.action), ("compensation", step.compensation)):
            if check_payload and action is not None and action.kind == "http":
                _check_path_values(action.spec["path"], f"steps[{index}].{kind}.path", known)
    # A definition's own "webhook" (null: none) wins over the deployment's SAGA_WEBHOOK.
    raw_webhook = data.get("webhook", settings.webhook)
    webhook = parse_target(raw_webhook, "webhook", settings)
    return SagaDefinition(
        saga_type, dict(payload), correlation_id, saga_timeout, tuple(steps), webhook
    )


def is_correlation_id(value: Any) -> bool:
    """Whether `value` can be a correlation id (it is sent as an HTTP header value)."""
    return isinstance(value, str) and CORRELATION_ID.match(value) is not None


def _check_path_values(path: str, where: str, known: Mapping[str, Any]) -> None:
    """Refuse a payload value (or correlation id) that would render a `.`, `..` or empty
    segment of `path`, naming that field. Step outputs are checked when rendered."""
    try:
        check_path(path, known)
    except UnsafeValue as exc:
        ref = parse_reference(exc.text)
        field = "correlation_id" if ref.root == "saga" else _payload_field(ref, known["payload"])
        raise errors.InvalidValue(
            field,
            f"{{{{{exc.text}}}}} in {where} would make the path segment {exc.segment!r}, "
            "which reaches another resource of the service ('.', '..' and empty segments "
            "are refused)",
        ) from None


def _parse_step(
    raw: Any,
    where: str,
    settings: Settings,
    saga_timeout: float,
    earlier: set[str],
    payload: dict[str, Any] | None,
) -> StepDefinition:
    if not isinstance(raw, Mapping):
        raise errors.InvalidType(where, "a step is a JSON object")
    name = _require(raw, "name", str, f"{where}.name")
    if not NAME.match(name):
        raise errors.InvalidValue(
            f"{where}.name", "1-64 characters: a letter, then letters, digits, _ or -"
        )
    if name in earlier:
        raise errors.DuplicateStepName(f"{where}.name", f"step name {name!r} is used twice")
    if "action" not in raw or raw["action"] is None:
        raise errors.MissingField(f"{where}.action", "every step needs an action")
    action = _parse_action(raw["action"], f"{where}.action", settings)
    _check_references(action, f"{where}.action", earlier, payload, allow_self=None)
    compensation = None
    if raw.get("compensation") is not None:
        if isinstance(raw["compensation"], Mapping) and "event" in raw["compensation"]:
            raise errors.UnsupportedStep(
                f"{where}.compensation", "a compensation is an HTTP call or a registered task"
            )
        compensation = _parse_action(raw["compensation"], f"{where}.compensation", settings)
        _check_references(compensation, f"{where}.compensation", earlier, payload, allow_self=name)
    default_timeout = min(settings.step_timeout_seconds, saga_timeout)
    timeout = _timeout(raw, "timeout_seconds", f"{where}.timeout_seconds", default_timeout)
    if timeout > saga_timeout:
        raise errors.InvalidTimeout(
            f"{where}.timeout_seconds",
            f"{timeout:g} s exceeds the saga's timeout of {saga_timeout:g} s",
        )
    if timeout + settings.attempt_grace_seconds >= settings.visibility_timeout_seconds:
        raise errors.InvalidTimeout(
            f"{where}.timeout_seconds",
            f"must be below SAGA_VISIBILITY_TIMEOUT_SECONDS "
            f"({settings.visibility_timeout_seconds} s) minus SAGA_ATTEMPT_GRACE_SECONDS "
            f"({settings.attempt_grace_seconds:g} s): a longer step would be delivered twice",
        )
    retry = _parse_retry(raw.get("retry"), f"{where}.retry", settings)
    if retry.max_backoff_seconds >= settings.visibility_timeout_seconds:
        raise errors.InvalidRetry(
            f"{where}.retry.max_backoff_seconds",
            f"must be below SAGA_VISIBILITY_TIMEOUT_SECONDS "
            f"({settings.visibility_timeout_seconds} s)",
        )
    return StepDefinition(name, action, compensation, timeout, retry)


def _parse_action(raw: Any, where: str, settings: Settings) -> Action:
    if not isinstance(raw, Mapping):
        raise errors.InvalidType(where, "must be a JSON object")
    kinds = [k for k in ("service", "task", "event") if k in raw]
    if len(kinds) != 1:
        raise errors.AmbiguousAction(
            where,
            "exactly one of 'service' (HTTP call), 'task' (registered task) or 'event' is needed",
        )
    kind = kinds[0]
    if kind == "service":
        return _parse_http(raw, where, settings)
    if kind == "task":
        name = _require(raw, "task", str, f"{where}.task")
        if get_task(name) is None:
            raise errors.UnknownTask(f"{where}.task", f"no registered task named {name!r}")
        args = raw.get("args", {})
        if not isinstance(args, Mapping):
            raise errors.InvalidType(f"{where}.args", "must be a JSON object")
        _check_size(args, f"{where}.args")
        return Action("task", {"task": name, "args": dict(args)})
    event = _require(raw, "event", str, f"{where}.event")
    if not EVENT_TYPE.match(event):
        raise errors.InvalidValue(f"{where}.event", "not a valid event type")
    awaited = raw.get("await")
    if not isinstance(awaited, Mapping):
        raise errors.MissingField(
            f"{where}.await", 'an event step awaits {"success": "<type>", "failure": "<type>"}'
        )
    success = _require(awaited, "success", str, f"{where}.await.success")
    failure = awaited.get("failure")
    for key, value in (("success", success), ("failure", failure)):
        if value is not None and (not isinstance(value, str) or not EVENT_TYPE.match(value)):
            raise errors.InvalidValue(f"{where}.await.{key}", "not a valid event type")
    if failure == success:
        raise errors.InvalidValue(f"{where}.await.failure", "must differ from success")
    data = raw.get("data", {})
    if not isinstance(data, Mapping):
        raise errors.InvalidType(f"{where}.data", "must be a JSON object")
    _check_size(data, f"{where}.data")
    spec: dict[str, Any] = {"event": event, "await": {"success": success}, "data": dict(data)}
    if failure is not None:
        spec["await"]["failure"] = failure
    return Action("event", spec)


def _parse_http(raw: Mapping[str, Any], where: str, settings: Settings) -> Action:
    service = _require(raw, "service", str, f"{where}.service")
    if service not in settings.services:
        known = ", ".join(sorted(settings.services)) or "none"
        raise errors.UnknownService(
            f"{where}.service", f"no registered service named {service!r} (registered: {known})"
        )
    method = raw.get("method", "POST")
    if not isinstance(method, str) or method.upper() not in HTTP_METHODS:
        raise errors.InvalidValue(f"{where}.method", f"one of {', '.join(sorted(HTTP_METHODS))}")
    path = _require(raw, "path", str, f"{where}.path")
    _check_path(path, f"{where}.path")
    spec: dict[str, Any] = {"service": service, "method": method.upper(), "path": path}
    if "body" in raw and raw["body"] is not None:
        _check_size(raw["body"], f"{where}.body")
        spec["body"] = raw["body"]
    return Action("http", spec)


def _check_path(path: str, where: str) -> None:
    if not path.startswith("/") or path.startswith("//"):
        raise errors.InvalidPath(where, "must start with a single '/' (a path on the service)")
    if len(path) > 2048 or not _PATH_CHARS.match(path):
        raise errors.InvalidPath(
            where, "only URL path characters are allowed (no '#', '\\', spaces or control chars)"
        )
    bare = PLACEHOLDER.sub("x", path).split("?", 1)[0]
    if "{" in bare or "}" in bare:
        raise errors.InvalidPlaceholder(where, "unbalanced '{{' or '}}'")
    if any(is_dot_segment(segment) for segment in bare.split("/")):
        raise errors.InvalidPath(
            where, "dot segments ('.', '..', also percent-encoded) are not allowed"
        )


def _payload_field(ref: Reference, payload: Mapping[str, Any]) -> str:
    """`payload.lines[0].sku` for `{{payload.lines.0.sku}}`."""
    field, current = "payload", payload
    for segment in ref.path:
        if isinstance(current, list):
            field, current = f"{field}[{segment}]", current[int(segment)]
        else:
            field, current = f"{field}.{segment}", current[segment]
    return field


def _check_size(value: Any, where: str) -> None:
    size = len(json.dumps(value, separators=(",", ":")))
    if size > MAX_BODY_BYTES:
        raise errors.PayloadTooLarge(where, f"{size} bytes, the limit is {MAX_BODY_BYTES}")


def _check_references(
    action: Action,
    where: str,
    earlier: set[str],
    payload: Mapping[str, Any] | None,
    allow_self: str | None,
) -> None:
    try:
        refs = list(iter_references(action.spec))
    except PlaceholderSyntaxError as exc:
        raise errors.InvalidPlaceholder(where, str(exc)) from None
    for ref in refs:
        _check_reference(ref, where, earlier, payload, allow_self)


def _check_reference(
    ref: Reference,
    where: str,
    earlier: set[str],
    payload: Mapping[str, Any] | None,
    allow_self: str | None,
) -> None:
    if ref.root == "steps":
        if ref.step == allow_self or ref.step in earlier:
            return
        raise errors.InvalidPlaceholder(
            where,
            f"{{{{{ref.text}}}}} refers to step {ref.step!r}, which is not an earlier step"
            + (" or this step" if allow_self else ""),
        )
    if ref.root == "payload" and payload is not None:
        current: Any = payload
        for segment in ref.path:
            if isinstance(current, Mapping) and segment in current:
                current = current[segment]
            elif isinstance(current, list) and segment.isdigit() and int(segment) < len(current):
                current = current[int(segment)]
            else:
                raise errors.MissingPayloadValue(
                    where, f"{{{{{ref.text}}}}}: the payload has no such value"
                )


def _parse_retry(raw: Any, where: str, settings: Settings) -> RetryPolicy:
    defaults = RetryPolicy(
        settings.retry_attempts,
        settings.retry_backoff_seconds,
        settings.retry_max_backoff_seconds,
    )
    if raw is None:
        return defaults
    if not isinstance(raw, Mapping):
        raise errors.InvalidType(where, "must be a JSON object")
    attempts = raw.get("max_attempts", defaults.max_attempts)
    if (
        isinstance(attempts, bool)
        or not isinstance(attempts, int)
        or not (1 <= attempts <= MAX_ATTEMPTS)
    ):
        raise errors.InvalidRetry(f"{where}.max_attempts", f"an integer from 1 to {MAX_ATTEMPTS}")
    backoff = _float(raw, "backoff_seconds", f"{where}.backoff_seconds", defaults.backoff_seconds)
    max_backoff = _float(
        raw,
        "max_backoff_seconds",
        f"{where}.max_backoff_seconds",
        max(defaults.max_backoff_seconds, backoff),
    )
    if not 0 <= backoff <= 3600:
        raise errors.InvalidRetry(f"{where}.backoff_seconds", "between 0 and 3600")
    if not backoff <= max_backoff <= 3600:
        raise errors.InvalidRetry(
            f"{where}.max_backoff_seconds", "between backoff_seconds and 3600"
        )
    return RetryPolicy(attempts, backoff, max_backoff)


def _float(raw: Mapping[str, Any], key: str, where: str, default: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise errors.InvalidRetry(where, "must be a number")
    return float(value)


def _timeout(raw: Mapping[str, Any], key: str, where: str, default: float) -> float:
    value = raw.get(key)
    if value is None:
        return float(default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise errors.InvalidTimeout(where, "must be a number of seconds")
    if not 0 < value <= 30 * 24 * 3600:
        raise errors.InvalidTimeout(where, "must be above 0 and at most 30 days")
    return float(value)


def _require(raw: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in raw or raw[key] is None:
        raise errors.MissingField(where, "is required")
    value = raw[key]
    if not isinstance(value, kind) or (kind is str and not value):
        raise errors.InvalidType(where, f"must be a non-empty {kind.__name__}")
    return value
