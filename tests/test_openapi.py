"""The OpenAPI document is a contract a client generator can trust (app/openapi.py): typed
nullable objects, operationIds, error schemas, `required`, public operations marked, and
examples that match their schemas and that the API accepts."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema_rs
import pytest
from flask import Flask

from app import create_app
from app.auth import PUBLIC
from app.examples import workflow_examples
from app.openapi import METHODS, OPERATION_IDS
from sagas.templates import build_definition, list_templates

KEY = "openapi-key"


@pytest.fixture(scope="module")
def app(engine: Any) -> Flask:
    return create_app({"API_KEYS": [KEY], "TESTING": True}, engine=engine)


@pytest.fixture(scope="module")
def spec(app: Flask) -> dict[str, Any]:
    return app.test_client().get("/openapi.json").get_json()  # type: ignore[no-any-return]


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


def as_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema 2020-12 (`nullable: true` becomes `| null`)."""
    if isinstance(node, list):
        return [as_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: as_json_schema(v) for k, v in node.items() if k not in ("nullable", "example")}
    if node.get("nullable"):
        return {"anyOf": [out, {"type": "null"}]}
    return out


def validator(spec: dict[str, Any], schema: dict[str, Any]) -> Any:
    root = {**as_json_schema(schema), "components": as_json_schema(spec["components"])}
    return jsonschema_rs.Draft202012Validator(root, validate_formats=True)


def test_a_nullable_object_is_a_nullable_ref_not_an_untyped_dict(spec: dict[str, Any]) -> None:
    props = spec["components"]["schemas"]["Saga"]["properties"]
    for name in ("failure", "compensation_failure"):
        assert props[name]["nullable"] is True
        assert props[name]["allOf"] == [{"$ref": "#/components/schemas/Failure"}]
        assert "anyOf" not in props[name]
    step = spec["components"]["schemas"]["Step"]["properties"]["compensation"]
    assert step["allOf"] == [{"$ref": "#/components/schemas/Compensation"}]


def test_every_operation_has_its_own_listed_operation_id(spec: dict[str, Any]) -> None:
    ids = {(m, p): op.get("operationId") for m, p, op in operations(spec)}
    missing = sorted(f"{m.upper()} {p}" for (m, p) in ids if (m, p) not in OPERATION_IDS)
    assert not missing, f"add these to app.openapi.OPERATION_IDS: {missing}"
    assert len(set(ids.values())) == len(ids)
    assert ids[("get", "/")] == "get_service_info"
    assert ids[("get", "/saga/{saga_id}/status")] == "get_saga"


def test_error_answers_have_a_schema_and_saga_paths_list_404(spec: dict[str, Any]) -> None:
    for method, path, op in operations(spec):
        for code, response in op["responses"].items():
            if code.isdigit() and int(code) >= 400 and "$ref" not in response:
                media = response["content"]["application/json"]
                if (path, code) == ("/health/", "503"):  # the health document itself
                    continue
                assert media["schema"] == {"$ref": "#/components/schemas/Error"}, (path, code)
                assert validator(spec, media["schema"]).is_valid(media["example"]), (path, code)
        if "{saga_id}" in path:
            assert "404" in op["responses"], (method, path)
    assert sorted(spec["components"]["schemas"]["Error"]["required"]) == [
        "code",
        "message",
        "status",
    ]


def test_answer_schemas_list_required_fields(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    assert set(schemas["Saga"]["required"]) == set(schemas["Saga"]["properties"])
    assert set(schemas["Step"]["required"]) == set(schemas["Step"]["properties"])
    assert sorted(schemas["Failure"]["required"]) == ["message", "reason"]  # step: absent at times
    assert "active_sagas" not in schemas["Health"]["required"]  # absent without Redis


def test_public_operations_say_so_and_are_open(app: Flask, spec: dict[str, Any]) -> None:
    public = {(m, p) for m, p, op in operations(spec) if op.get("security") == []}
    assert public == {("get", "/"), ("get", "/health/"), ("get", "/openapi.json"), ("get", "/docs")}
    assert {("get", p) for m, p in PUBLIC if m == "GET"} <= public
    c = app.test_client()
    for _, path in public:
        assert c.get(path).status_code in (200, 503), path
    secured = [op for m, p, op in operations(spec) if (m, p) not in public]
    assert secured and all("security" not in op for op in secured)  # the global one
    assert spec["security"] == [{"ApiKey": []}, {"Bearer": []}]


def test_the_workflow_parameter_names_the_built_in_workflows(spec: dict[str, Any]) -> None:
    """Not an enum: a team's own registered workflow is started through the same path (a
    generated client must accept its name); each built-in one is an example."""
    op = spec["paths"]["/workflows/{workflow}/start"]["post"]
    (param,) = [p for p in op.get("parameters", []) if p["name"] == "workflow"] or [
        p for p in spec["paths"]["/workflows/{workflow}/start"]["parameters"]
    ]
    assert "enum" not in param["schema"]
    assert sorted(param["examples"]) == sorted(t["name"] for t in list_templates())
    examples = op["requestBody"]["content"]["application/json"]["examples"]
    assert sorted(examples) == sorted(workflow_examples())


def test_every_request_body_has_examples_that_match_its_schema(spec: dict[str, Any]) -> None:
    seen = 0
    for method, path, op in operations(spec):
        body = op.get("requestBody")
        if not body:
            continue
        media = body["content"]["application/json"]
        assert media.get("examples"), f"{method.upper()} {path}: no example"
        check = validator(spec, media["schema"])
        for name, example in media["examples"].items():
            errors = [e.message for e in check.iter_errors(example["value"])]
            assert not errors, (path, name, errors)
            seen += 1
    assert seen >= 12


def test_workflow_examples_are_valid_payloads() -> None:
    """Each workflow's example passes its payload schema (the engine's own check)."""
    examples = workflow_examples()
    assert sorted(examples) == sorted(t["name"] for t in list_templates())
    for name, payload in examples.items():
        assert build_definition(name, copy.deepcopy(payload))["saga_type"] == name


def test_response_examples_match_their_schemas(spec: dict[str, Any]) -> None:
    """Every schema an answer uses has an example (Swagger shows it), valid against it."""
    schemas = spec["components"]["schemas"]
    answered = {
        media["schema"]["$ref"].rsplit("/", 1)[1]
        for _, _, op in operations(spec)
        for response in op["responses"].values()
        for media in response.get("content", {}).values()
        if "$ref" in media.get("schema", {})
    }
    assert {"Saga", "Health", "Templates", "Error"} <= answered
    for name in sorted(answered | {"Step", "Failure"}):
        assert "example" in schemas[name], f"{name}: no example (app/examples.py)"
        example = schemas[name]["example"]
        errors = [e.message for e in validator(spec, schemas[name]).iter_errors(example)]
        assert not errors, (name, errors)


def test_examples_are_accepted_by_the_api(app: Flask, spec: dict[str, Any], worker: Any) -> None:
    """Swagger's "Try it out" with each workflow's example answers 202 (worked, not 422)."""
    c = app.test_client()
    op = spec["paths"]["/workflows/{workflow}/start"]["post"]
    for name, example in op["requestBody"]["content"]["application/json"]["examples"].items():
        answer = c.post(
            f"/workflows/{name}/start", json=example["value"], headers={"X-API-Key": KEY}
        )
        assert answer.status_code == 202, (name, answer.get_json())
