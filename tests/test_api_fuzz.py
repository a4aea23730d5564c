"""Property-based run of the whole API from its own /openapi.json (schemathesis): no input,
however odd, gets a 5xx, and every answer matches the documented status codes, content
types and schemas."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app import create_app
from sagas.workflow import RESERVED_NAMES

KEY = "fuzz-key"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzz_app(engine: Any, worker: Any) -> Flask:
    return create_app({"API_KEYS": [KEY], "TESTING": True}, engine=engine)


@pytest.fixture(scope="module")
def api_schema(fuzz_app: Flask) -> Any:
    return schemathesis.openapi.from_wsgi("/openapi.json", fuzz_app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_gets_a_5xx_and_answers_match_the_schema(case: Any) -> None:
    """Generated requests (valid and not) never get a 5xx; responses match the schema."""
    reserved = case.path_parameters and case.path_parameters.get("name") in RESERVED_NAMES
    if reserved and case.path.startswith("/workflows/{name}"):
        # The spec excludes it (`not: {enum: [templates]}`), but an invalid-input case may
        # still send it: Flask routes it to GET /workflows/templates, whose answer is right
        # for that path and wrong for this one. Checked in tests/test_workflow_registry.py.
        return
    case.call_and_validate(headers={"X-API-Key": KEY}, checks=CHECKS)
