"""A workflow as data: a named saga definition with placeholders, the JSON Schema of its
payload, the event types that trigger it, a default timeout and example payloads.

A workflow document (YAML or JSON; docs/workflows.md) has these fields:

- `name` (required): becomes the saga type of every saga it starts;
- `description`;
- `payload_schema` (required): a JSON Schema (draft 2020-12) of an object; optional fields
  with a `default` are filled in before the steps are rendered;
- `steps` (required): the steps of a `POST /saga/start` definition, with `{{payload.x}}`
  and `{{steps.s.output.y}}` placeholders. Every step that has an effect (any but an HTTP
  `GET`) says what undoes it: a `compensation`, or explicitly `compensation: none`;
- `timeout_seconds`: the saga's deadline (default `SAGA_TIMEOUT_SECONDS`);
- `webhook`: the completion webhook of its sagas, `{service, path}` of a registered service
  (default `SAGA_WEBHOOK`; docs/observability.md), or `null` for none;
- `triggers`: event types that start the workflow by themselves (docs/events.md);
- `demo_fail_at`: the payload's `fail_at` names a step whose action carries
  `"demo_fail": true` (the demo services fail it);
- `examples`: `[{name, payload}]`, each checked against the schema and the engine.

`parse_workflow` checks the shape alone (no settings: the built-in files load anywhere);
`check_workflow` checks what the engine would refuse at start (`parse_definition`), plus
that every placeholder's payload field is declared and always present, and the examples.
`build_definition` turns a workflow and a payload into a `POST /saga/start` definition.
Pure functions: no Redis, no Flask, no Celery.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema_rs

from sagas.definition import EVENT_TYPE, SAGA_TYPE, parse_definition
from sagas.errors import InvalidPayload, InvalidWorkflow, ValidationFailed
from sagas.placeholders import PlaceholderSyntaxError, iter_references
from sagas.settings import Settings

NONE = "none"  # `compensation: none`: the step's effect is meant to stand
WEBHOOK_DEFAULT = "default"  # no `webhook` field: the deployment's SAGA_WEBHOOK applies
FIELDS = (
    "name",
    "description",
    "payload_schema",
    "steps",
    "timeout_seconds",
    "webhook",
    "triggers",
    "demo_fail_at",
    "examples",
)
MAX_MESSAGE = 300  # characters of a validator message kept in an InvalidPayload
MAX_EXAMPLES = 20
EFFECT_FREE_METHODS = frozenset({"GET"})
RESERVED_NAMES = frozenset({"templates"})  # a path of its own under /workflows


@dataclass(frozen=True)
class Workflow:
    """A parsed workflow document. `version` and `retired` come from the registry
    (sagas/catalog.py); a document read from a file has neither."""

    name: str
    description: str
    payload_schema: dict[str, Any]
    steps: list[dict[str, Any]]
    timeout_seconds: float | None = None
    # {"service", "path"}; WEBHOOK_DEFAULT: the deployment's SAGA_WEBHOOK; None: no webhook
    webhook: dict[str, str] | str | None = "default"
    triggers: tuple[str, ...] = ()
    demo_fail_at: bool = False
    examples: list[dict[str, Any]] = field(default_factory=list)
    version: int | None = None
    retired: bool = False

    def content(self) -> dict[str, Any]:
        """The document as data (what is versioned): defaults left out, copies."""
        doc: dict[str, Any] = {"name": self.name}
        if self.description:
            doc["description"] = self.description
        doc["payload_schema"] = self.payload_schema
        doc["steps"] = self.steps
        if self.timeout_seconds is not None:
            doc["timeout_seconds"] = self.timeout_seconds
        if self.webhook != WEBHOOK_DEFAULT:
            doc["webhook"] = self.webhook
        if self.triggers:
            doc["triggers"] = list(self.triggers)
        if self.demo_fail_at:
            doc["demo_fail_at"] = True
        if self.examples:
            doc["examples"] = self.examples
        return copy.deepcopy(doc)

    def digest(self) -> str:
        """The content's SHA-256 (canonical JSON): the same content is the same version."""
        canonical = json.dumps(self.content(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def saga_steps(self) -> list[dict[str, Any]]:
        """The steps as a `POST /saga/start` definition has them (`compensation: none`
        left out). Copies."""
        steps = copy.deepcopy(self.steps)
        for step in steps:
            if step.get("compensation") == NONE:
                del step["compensation"]
        return steps

    def template(self) -> dict[str, Any]:
        """The `GET /workflows/templates` entry: name, description, steps, payload_schema."""
        return {
            "name": self.name,
            "description": self.description,
            "steps": self.saga_steps(),
            "payload_schema": copy.deepcopy(self.payload_schema),
        }


def parse_workflow(data: Any) -> Workflow:
    """Check a workflow document's shape; raise `InvalidWorkflow` naming the field."""
    if not isinstance(data, Mapping):
        raise InvalidWorkflow("$", "a workflow is a JSON (or YAML) object")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise InvalidWorkflow(unknown[0], f"unknown field; a workflow has {', '.join(FIELDS)}")
    name = data.get("name")
    if not isinstance(name, str) or not SAGA_TYPE.match(name):
        raise InvalidWorkflow(
            "name", "1-100 characters: letters, digits and _ . : - (starting alphanumeric)"
        )
    if name in RESERVED_NAMES:
        raise InvalidWorkflow("name", f"{name!r} is reserved (GET /workflows/{name} is taken)")
    description = data.get("description") or ""
    if not isinstance(description, str) or len(description) > 4000:
        raise InvalidWorkflow("description", "a string of at most 4000 characters")
    schema = _payload_schema(data.get("payload_schema"))
    steps = data.get("steps")
    if not isinstance(steps, list) or not steps:
        raise InvalidWorkflow("steps", "a non-empty list of steps")
    for index, step in enumerate(steps):
        check_undo_declared(step, f"steps[{index}]")
    timeout = data.get("timeout_seconds")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    ):
        raise InvalidWorkflow("timeout_seconds", "a number of seconds above 0")
    webhook = data.get("webhook", WEBHOOK_DEFAULT)
    if webhook is not None and webhook != WEBHOOK_DEFAULT and not isinstance(webhook, Mapping):
        raise InvalidWorkflow("webhook", "an object {service, path}, or null for none")
    triggers = data.get("triggers") or []
    if not isinstance(triggers, list):
        raise InvalidWorkflow("triggers", "a list of event types")
    for index, trigger in enumerate(triggers):
        if not isinstance(trigger, str) or not EVENT_TYPE.match(trigger):
            raise InvalidWorkflow(f"triggers[{index}]", "not a valid event type")
    demo = data.get("demo_fail_at", False)
    if not isinstance(demo, bool):
        raise InvalidWorkflow("demo_fail_at", "true or false")
    examples = data.get("examples") or []
    if not isinstance(examples, list) or len(examples) > MAX_EXAMPLES:
        raise InvalidWorkflow("examples", f"a list of at most {MAX_EXAMPLES} examples")
    for index, example in enumerate(examples):
        if not isinstance(example, Mapping) or not isinstance(example.get("payload"), Mapping):
            raise InvalidWorkflow(f"examples[{index}]", "an object {name, payload}")
        if not isinstance(example.get("name", ""), str):
            raise InvalidWorkflow(f"examples[{index}].name", "a string")
    return Workflow(
        name=name,
        description=description,
        payload_schema=copy.deepcopy(dict(schema)),
        steps=copy.deepcopy(steps),
        timeout_seconds=None if timeout is None else float(timeout),
        webhook=copy.deepcopy(dict(webhook)) if isinstance(webhook, Mapping) else webhook,
        triggers=tuple(triggers),
        demo_fail_at=demo,
        examples=copy.deepcopy(examples),
    )


def check_workflow(workflow: Workflow, settings: Settings) -> None:
    """What registration refuses beyond the shape: everything `parse_definition` checks
    (services registered, tasks known, paths, references to earlier steps, timeouts,
    retries), every `{{payload.x}}` declared by the schema and always present (required
    or with a default), and every example valid and accepted by the engine."""
    skeleton = _skeleton(workflow)
    parse_definition(skeleton, settings, check_payload=False)
    for where, ref_text, path in _payload_references(workflow):
        problem = _schema_problem(workflow.payload_schema, path)
        if problem:
            raise InvalidWorkflow(where, f"{{{{{ref_text}}}}}: {problem}")
    for index, example in enumerate(workflow.examples):
        try:
            parse_definition(build_definition(workflow, example["payload"]), settings)
        except ValidationFailed as exc:
            raise InvalidWorkflow(
                f"examples[{index}].{exc.field}", f"example {index} is refused: {exc.message}"
            ) from None


def build_definition(
    workflow: Workflow, payload: Any, correlation_id: str | None = None
) -> dict[str, Any]:
    """The saga definition (`POST /saga/start` format) of `workflow` for `payload`.

    The payload is validated against the payload schema and optional fields get their
    defaults. With `demo_fail_at` and a `fail_at`, that step's action body (an event step's
    `data`) carries `"demo_fail": true`. Raises `InvalidPayload` naming the field
    (`payload.email`, or `payload` itself).
    """
    if not isinstance(payload, Mapping):
        raise InvalidPayload("payload", "must be a JSON object")
    data = copy.deepcopy(dict(payload))
    _validate(workflow, data)
    for key, schema in (workflow.payload_schema.get("properties") or {}).items():
        if key not in data and isinstance(schema, Mapping) and "default" in schema:
            data[key] = copy.deepcopy(schema["default"])
    steps = workflow.saga_steps()
    fail_at = data.get("fail_at") if workflow.demo_fail_at else None
    if fail_at is not None:
        for step in steps:
            if step["name"] == fail_at:
                action = step["action"]
                key = "data" if "event" in action else "body"
                action.setdefault(key, {})["demo_fail"] = True
    definition: dict[str, Any] = {"saga_type": workflow.name, "payload": data, "steps": steps}
    if workflow.timeout_seconds is not None:
        definition["timeout_seconds"] = workflow.timeout_seconds
    if workflow.webhook != WEBHOOK_DEFAULT:
        definition["webhook"] = copy.deepcopy(workflow.webhook)
    if correlation_id is not None:
        definition["correlation_id"] = correlation_id
    return definition


# --- internals -----------------------------------------------------------------------------
_VALIDATORS: dict[str, jsonschema_rs.Validator] = {}


def _validator(schema: Mapping[str, Any]) -> jsonschema_rs.Validator:
    key = json.dumps(schema, sort_keys=True, separators=(",", ":"))
    found = _VALIDATORS.get(key)
    if found is None:
        if len(_VALIDATORS) > 1000:  # registered workflows are few; never grow unbounded
            _VALIDATORS.clear()
        found = jsonschema_rs.Draft202012Validator(dict(schema), validate_formats=True)
        _VALIDATORS[key] = found
    return found


def _payload_schema(raw: Any) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise InvalidWorkflow("payload_schema", "a JSON Schema object is required")
    if raw.get("type") != "object":
        raise InvalidWorkflow("payload_schema.type", 'must be "object": a payload is an object')
    try:
        jsonschema_rs.meta.validate(dict(raw))
        _validator(raw)
    except (jsonschema_rs.ValidationError, ValueError) as exc:
        raise InvalidWorkflow("payload_schema", _short(str(exc).splitlines()[0])) from None
    properties = raw.get("properties") or {}
    for key, sub in properties.items():
        if isinstance(sub, Mapping) and "default" in sub:
            error = next(_validator(sub).iter_errors(sub["default"]), None)
            if error is not None:
                raise InvalidWorkflow(
                    f"payload_schema.properties.{key}.default",
                    f"does not match its own schema: {_short(error.message)}",
                )
    return raw


def check_undo_declared(step: Any, where: str) -> None:
    """Refuse a step with an effect that says nothing of its undo (`InvalidWorkflow`)."""
    if not isinstance(step, Mapping):
        raise InvalidWorkflow(where, "a step is an object")
    action = step.get("action")
    effect_free = (
        isinstance(action, Mapping)
        and "service" in action
        and str(action.get("method", "POST")).upper() in EFFECT_FREE_METHODS
    )
    compensation = step.get("compensation")
    if compensation is None and not effect_free:
        raise InvalidWorkflow(
            f"{where}.compensation",
            "say what undoes this step: a compensation, or `compensation: none` when its "
            "effect is meant to stand",
        )
    if isinstance(compensation, str) and compensation != NONE:
        raise InvalidWorkflow(f"{where}.compensation", "an action, or the word `none`")


def _skeleton(workflow: Workflow) -> dict[str, Any]:
    skeleton: dict[str, Any] = {"saga_type": workflow.name, "steps": workflow.saga_steps()}
    if workflow.timeout_seconds is not None:
        skeleton["timeout_seconds"] = workflow.timeout_seconds
    if workflow.webhook != WEBHOOK_DEFAULT:  # checked as the engine checks it: webhook.service
        skeleton["webhook"] = copy.deepcopy(workflow.webhook)
    return skeleton


def _payload_references(workflow: Workflow) -> Iterator[tuple[str, str, tuple[str, ...]]]:
    for index, step in enumerate(workflow.saga_steps()):
        for kind in ("action", "compensation"):
            if step.get(kind) is None:
                continue
            try:
                refs = list(iter_references(step[kind]))
            except PlaceholderSyntaxError as exc:  # parse_definition names it first
                raise InvalidWorkflow(f"steps[{index}].{kind}", str(exc)) from None
            for ref in refs:
                if ref.root == "payload":
                    yield f"steps[{index}].{kind}", ref.text, ref.path


def _schema_problem(schema: Mapping[str, Any], path: tuple[str, ...]) -> str | None:
    """Why `{{payload.<path>}}` may have no value, as far as the schema tells."""
    current: Any = schema
    for depth, segment in enumerate(path):
        if not isinstance(current, Mapping):
            return None
        properties = current.get("properties")
        if current.get("type") == "array" or not isinstance(properties, Mapping):
            return None  # an array item or a free-form object: checked at start
        where = "payload." + ".".join(path[: depth + 1])
        if segment not in properties:
            return f"the payload schema declares no property {where}"
        sub = properties[segment]
        required = segment in (current.get("required") or [])
        if not required and not (isinstance(sub, Mapping) and "default" in sub):
            if depth == 0:
                return f"{where} is optional without a default: require it or give it one"
            return None  # nested optional values are checked against each payload at start
        current = sub
    return None


def _validate(workflow: Workflow, payload: dict[str, Any]) -> None:
    error = next(_validator(workflow.payload_schema).iter_errors(payload), None)
    if error is None:
        return
    where = "payload" + "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.instance_path
    )
    kind = error.kind
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.Required):
        raise InvalidPayload(f"{where}.{kind.property}", "is required")
    raise InvalidPayload(where, _short(error.message))


def _short(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


__all__ = [
    "NONE",
    "Workflow",
    "build_definition",
    "check_workflow",
    "parse_workflow",
]
