"""Saga definitions: every kind of invalid input gets its own typed error naming the field,
and nothing reaches Redis for it."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from sagas import errors
from sagas.definition import parse_definition
from sagas.registry import load_task_modules
from sagas.settings import Settings

SETTINGS = Settings(
    services={"inventory": "http://inventory:1", "payments": "http://pay:2"},
    max_steps=5,
    max_payload_bytes=200,
)
load_task_modules([])

VALID: dict[str, Any] = {
    "saga_type": "order_checkout",
    "payload": {"order_id": "o-17", "amount": 42, "lines": [{"sku": "a"}]},
    "correlation_id": "req-9f2",
    "timeout_seconds": 3600,
    "steps": [
        {
            "name": "reserve_stock",
            "action": {
                "service": "inventory",
                "method": "POST",
                "path": "/reservations",
                "body": {"order_id": "{{payload.order_id}}", "sku": "{{payload.lines.0.sku}}"},
            },
            "compensation": {
                "service": "inventory",
                "method": "DELETE",
                "path": "/reservations/{{steps.reserve_stock.output.id}}",
            },
            "timeout_seconds": 30,
            "retry": {"max_attempts": 3, "backoff_seconds": 1.0, "max_backoff_seconds": 30},
        },
        {
            "name": "charge_card",
            "action": {
                "task": "builtin.noop",
                "args": {"for": "{{steps.reserve_stock.output.id}}", "saga": "{{saga.id}}"},
            },
        },
    ],
}


def mutated(path: str, value: Any) -> dict[str, Any]:
    """VALID with the value at a dotted path (list indexes as numbers) replaced or deleted."""
    data = copy.deepcopy(VALID)
    *parents, last = path.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) else last
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
    return data


DELETE = object()

CASES = [
    ("saga_type", DELETE, errors.MissingField, "saga_type"),
    ("saga_type", "bad type!", errors.InvalidValue, "saga_type"),
    ("payload", [1], errors.InvalidType, "payload"),
    ("payload", {"x": "y" * 300}, errors.PayloadTooLarge, "payload"),
    ("correlation_id", 5, errors.InvalidValue, "correlation_id"),
    ("timeout_seconds", -1, errors.InvalidTimeout, "timeout_seconds"),
    ("steps", DELETE, errors.MissingField, "steps"),
    ("steps", {}, errors.InvalidType, "steps"),
    ("steps", [], errors.TooManySteps, "steps"),
    ("steps", [VALID["steps"][1]] * 6, errors.TooManySteps, "steps"),
    ("steps.1", "x", errors.InvalidType, "steps[1]"),
    ("steps.1.name", DELETE, errors.MissingField, "steps[1].name"),
    ("steps.1.name", "has.dot", errors.InvalidValue, "steps[1].name"),
    ("steps.1.name", "reserve_stock", errors.DuplicateStepName, "steps[1].name"),
    ("steps.1.action", DELETE, errors.MissingField, "steps[1].action"),
    (
        "steps.1.action",
        {"service": "inventory", "task": "builtin.noop", "path": "/"},
        errors.AmbiguousAction,
        "steps[1].action",
    ),
    ("steps.1.action", {"args": {}}, errors.AmbiguousAction, "steps[1].action"),
    ("steps.0.action.service", "mail", errors.UnknownService, "steps[0].action.service"),
    ("steps.0.action.method", "TRACE", errors.InvalidValue, "steps[0].action.method"),
    ("steps.0.action.path", DELETE, errors.MissingField, "steps[0].action.path"),
    ("steps.0.action.path", "reservations", errors.InvalidPath, "steps[0].action.path"),
    ("steps.0.action.path", "//evil.example/x", errors.InvalidPath, "steps[0].action.path"),
    ("steps.0.action.path", "/a/../admin", errors.InvalidPath, "steps[0].action.path"),
    ("steps.0.action.path", "/a#frag", errors.InvalidPath, "steps[0].action.path"),
    ("steps.0.action.path", "/a\\b", errors.InvalidPath, "steps[0].action.path"),
    ("steps.0.action.path", "/a/%2e%2e/admin", errors.InvalidPath, "steps[0].action.path"),
    ("steps.0.action.path", "/a/.%2E", errors.InvalidPath, "steps[0].action.path"),
    ("steps.0.action.body", {"x": "z" * 70000}, errors.PayloadTooLarge, "steps[0].action.body"),
    ("steps.1.action.task", "no.such.task", errors.UnknownTask, "steps[1].action.task"),
    ("steps.1.action.args", [1], errors.InvalidType, "steps[1].action.args"),
    (
        "steps.1.action",
        {"event": "payment.charge_requested"},
        errors.MissingField,
        "steps[1].action.await",
    ),
    (
        "steps.1.action",
        {"event": "payment.charge_requested", "await": {"success": "bad type!"}},
        errors.InvalidValue,
        "steps[1].action.await.success",
    ),
    (
        "steps.1.action",
        {"event": "pay", "await": {"success": "paid", "failure": "paid"}},
        errors.InvalidValue,
        "steps[1].action.await.failure",
    ),
    ("steps.1.compensation", {"event": "x"}, errors.UnsupportedStep, "steps[1].compensation"),
    (
        "steps.0.action.body",
        {"x": "{{steps.charge_card.output.id}}"},
        errors.InvalidPlaceholder,
        "steps[0].action",
    ),
    (
        "steps.0.action.body",
        {"x": "{{steps.reserve_stock.output.id}}"},
        errors.InvalidPlaceholder,
        "steps[0].action",
    ),
    ("steps.0.action.body", {"x": "{{secrets.key}}"}, errors.InvalidPlaceholder, "steps[0].action"),
    (
        "steps.0.action.body",
        {"x": "{{saga.password}}"},
        errors.InvalidPlaceholder,
        "steps[0].action",
    ),
    (
        "steps.0.action.body",
        {"x": "{{steps.reserve_stock.id}}"},
        errors.InvalidPlaceholder,
        "steps[0].action",
    ),
    (
        "steps.0.action.body",
        {"x": "{{payload.nope}}"},
        errors.MissingPayloadValue,
        "steps[0].action",
    ),
    (
        "steps.0.action.path",
        "/r/{{payload.order_id",
        errors.InvalidPlaceholder,
        "steps[0].action.path",
    ),
    ("steps.0.timeout_seconds", 7200, errors.InvalidTimeout, "steps[0].timeout_seconds"),
    ("steps.0.timeout_seconds", "30", errors.InvalidTimeout, "steps[0].timeout_seconds"),
    ("steps.0.timeout_seconds", 3600, errors.InvalidTimeout, "steps[0].timeout_seconds"),
    (
        "steps.0.retry.max_backoff_seconds",
        3600,
        errors.InvalidRetry,
        "steps[0].retry.max_backoff_seconds",
    ),
    ("steps.0.retry", 3, errors.InvalidType, "steps[0].retry"),
    ("steps.0.retry.max_attempts", 0, errors.InvalidRetry, "steps[0].retry.max_attempts"),
    ("steps.0.retry.max_attempts", 2.5, errors.InvalidRetry, "steps[0].retry.max_attempts"),
    ("steps.0.retry.backoff_seconds", -1, errors.InvalidRetry, "steps[0].retry.backoff_seconds"),
    (
        "steps.0.retry.max_backoff_seconds",
        0.5,
        errors.InvalidRetry,
        "steps[0].retry.max_backoff_seconds",
    ),
]


def test_the_contract_example_is_valid() -> None:
    """The definition of docs/api.md (with a task instead of an event step) parses."""
    definition = parse_definition(VALID, SETTINGS)
    assert [s.name for s in definition.steps] == ["reserve_stock", "charge_card"]
    assert definition.steps[1].timeout_seconds == 300  # SAGA_STEP_TIMEOUT_SECONDS default
    assert definition.steps[1].retry.max_attempts == 3  # SAGA_RETRY_ATTEMPTS default
    assert definition.steps[0].compensation is not None


@pytest.mark.parametrize(
    ("path", "value", "error", "field"), CASES, ids=[f"{c[2].__name__}-{c[0]}" for c in CASES]
)
def test_invalid_definition_names_the_field(
    path: str, value: Any, error: type[errors.InvalidDefinition], field: str
) -> None:
    """Each kind of invalid definition raises its own error type with the field's path."""
    with pytest.raises(error) as caught:
        parse_definition(mutated(path, value), SETTINGS)
    assert type(caught.value) is error
    assert caught.value.field == field
    assert caught.value.message


def test_every_error_kind_is_covered() -> None:
    """The table above exercises every InvalidDefinition subclass."""
    kinds = {c[2] for c in CASES}
    assert set(errors.InvalidDefinition.__subclasses__()) == kinds


def test_not_an_object() -> None:
    """A definition that is not a JSON object is rejected at the root."""
    with pytest.raises(errors.InvalidType) as caught:
        parse_definition([], SETTINGS)
    assert caught.value.field == "$"


def test_invalid_definition_writes_nothing(engine: Any) -> None:
    """The engine rejects an invalid definition before touching Redis."""
    store = engine.store
    before = store.redis.zcard(store.keys.all)
    with pytest.raises(errors.UnknownService):
        engine.start(
            {
                "saga_type": "x",
                "steps": [{"name": "a", "action": {"service": "nowhere", "path": "/"}}],
            }
        )
    assert store.redis.zcard(store.keys.all) == before


@pytest.mark.parametrize(
    ("path", "payload", "field"),
    [
        ("/invoices/{{payload.order_id}}", {"order_id": ".."}, "payload.order_id"),
        ("/invoices/{{payload.order_id}}/lines", {"order_id": "."}, "payload.order_id"),
        ("/invoices/{{payload.order_id}}", {"order_id": ""}, "payload.order_id"),
        ("/invoices/.{{payload.order_id}}", {"order_id": "."}, "payload.order_id"),
        ("/i/{{payload.lines.0.sku}}", {"lines": [{"sku": ".."}]}, "payload.lines[0].sku"),
        ("/i/{{payload.a}}{{payload.b}}", {"a": ".", "b": "."}, "payload.a"),
    ],
)
def test_a_payload_value_that_would_be_a_dot_segment_is_refused(
    path: str, payload: dict[str, Any], field: str
) -> None:
    """A payload value rendering a '.', '..' or empty path segment is refused, naming it."""
    data = mutated("payload", {**VALID["payload"], **payload})
    data["steps"][0]["compensation"]["path"] = path
    with pytest.raises(errors.InvalidValue) as caught:
        parse_definition(data, SETTINGS)
    assert caught.value.field == field
    assert "steps[0].compensation.path" in caught.value.message


def test_a_correlation_id_that_would_be_a_dot_segment_is_refused() -> None:
    """`{{saga.correlation_id}}` in a path with the correlation id '..' is refused."""
    data = mutated("correlation_id", "..")
    data["steps"][0]["action"]["path"] = "/by-request/{{saga.correlation_id}}"
    with pytest.raises(errors.InvalidValue) as caught:
        parse_definition(data, SETTINGS)
    assert caught.value.field == "correlation_id"


def test_values_decided_at_run_time_and_harmless_dots_pass() -> None:
    """Step outputs, the saga id, dots inside a segment and dots in the query are accepted."""
    data = mutated("payload", {"order_id": "a..b", "q": "..", "lines": [{"sku": "..."}]})
    data["steps"][0]["action"]["path"] = (
        "/r/{{payload.order_id}}/{{payload.lines.0.sku}}?q={{payload.q}}"
    )
    data["steps"][0]["compensation"]["path"] = "/r/{{steps.reserve_stock.output.id}}/{{saga.id}}"
    parse_definition(data, SETTINGS)


@pytest.mark.parametrize(
    "value",
    ["café", " lead", "trail ", "tab\there", "new\nline", "del\x7f", "\u00a0", "a" * 201, ""],
)
def test_a_correlation_id_must_be_sendable_as_a_header(value: str) -> None:
    """A correlation id is 1-200 printable ASCII characters without edge spaces (a header)."""
    with pytest.raises(errors.InvalidValue) as caught:
        parse_definition(mutated("correlation_id", value), SETTINGS)
    assert caught.value.field == "correlation_id"


@pytest.mark.parametrize("value", ["req 9f2", "~!#$%&'()*+,-./:;<=>?@[\\]^_`{|}", "a" * 200, "x"])
def test_printable_ascii_correlation_ids_are_accepted(value: str) -> None:
    """Any printable ASCII, inner spaces included, up to 200 characters, is a correlation id."""
    assert parse_definition(mutated("correlation_id", value), SETTINGS).correlation_id == value
