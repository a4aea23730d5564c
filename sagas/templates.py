"""The five built-in workflows, shipped as data files (`sagas/workflows/*.yaml`, the format
of `sagas.workflow` and docs/workflows.md).

Each is a saga over the registered services `auth` (the platform service: users,
workspaces, permissions, quotas), `airtable` (the Airtable gateway: bases, tables, records,
exports, webhooks) and `notification` (the automation services: notifications, data
transformations, AI jobs). They are registered in the workflow registry at start-up
(sagas/catalog.py) like any team's file from `SAGA_WORKFLOWS_DIR`; this module reads the
files themselves, with no Redis, for the code and tests that need the built-ins only.

Steps are HTTP calls, except `ai_analysis`'s `run_analysis`, an event step: it publishes
the command `ai.analysis_requested` to `<prefix>stream:commands` and waits for
`ai.analysis_completed` (its data, the job, is the step's output) or `ai.analysis_failed`.

Demo failures: every built-in sets `demo_fail_at`, and its payload schema accepts an
optional `fail_at` naming one of its steps; that step's action body (the command's `data`
for an event step) then carries `"demo_fail": true`, which the demo services
(`demo/services.py`) answer with HTTP 422, or with the failure event, so the saga
compensates the steps before it. Real services ignore an unknown field or reject it; either
way the step fails without effect.

This module is part of the engine layer: it imports neither Flask nor Celery.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from sagas.errors import InvalidWorkflow, UnknownWorkflow
from sagas.workflow import Workflow, parse_workflow
from sagas.workflow import build_definition as build_workflow_definition

BUILTIN_DIR = "workflows"  # under the sagas package (package_data in setup.cfg)
# The order of GET /workflows/templates (the seed's order).
BUILTIN_ORDER = (
    "user_registration",
    "workspace_creation",
    "data_synchronization",
    "ai_analysis",
    "webhook_processing",
)
SUFFIXES = (".yaml", ".yml", ".json")


def read_document(text: str, source: str) -> Any:
    """A workflow document from YAML or JSON text (JSON is YAML too; `.json` files are read
    as JSON so that their errors say so). Raises `InvalidWorkflow` for text that is neither."""
    try:
        if source.endswith(".json"):
            return json.loads(text)
        return yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise InvalidWorkflow("$", f"{source}: not valid YAML or JSON: {exc}") from None


def load_file(path: Path) -> Workflow:
    """One workflow file (YAML or JSON), shape-checked (`parse_workflow`)."""
    return parse_workflow(read_document(path.read_text(encoding="utf-8"), path.name))


def workflow_files(directory: Path) -> list[Path]:
    """The workflow files of a directory (`*.yaml`, `*.yml`, `*.json`), sorted by name."""
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in SUFFIXES)


@functools.cache
def builtin_workflows() -> tuple[Workflow, ...]:
    """The five built-in workflows, in the seed's order."""
    found: dict[str, Workflow] = {}
    for entry in resources.files("sagas").joinpath(BUILTIN_DIR).iterdir():
        if entry.name.endswith(SUFFIXES):
            workflow = parse_workflow(read_document(entry.read_text("utf-8"), entry.name))
            found[workflow.name] = workflow
    order = {name: i for i, name in enumerate(BUILTIN_ORDER)}
    return tuple(sorted(found.values(), key=lambda w: (order.get(w.name, len(order)), w.name)))


def _builtin(name: str) -> Workflow:
    for workflow in builtin_workflows():
        if workflow.name == name:
            return workflow
    raise UnknownWorkflow(name)


def template_names() -> frozenset[str]:
    """The names of the built-in workflows."""
    return frozenset(w.name for w in builtin_workflows())


def list_templates() -> list[dict[str, Any]]:
    """The built-in workflows as `GET /workflows/templates` lists them: name, description,
    steps (with placeholders, as in a `POST /saga/start` definition) and payload JSON
    Schema. Copies."""
    return [workflow.template() for workflow in builtin_workflows()]


def build_definition(
    workflow: str, payload: Mapping[str, Any], correlation_id: str | None = None
) -> dict[str, Any]:
    """The saga definition (`POST /saga/start` format) of the built-in `workflow` for
    `payload` (`sagas.workflow.build_definition`). Raises `UnknownWorkflow` for an unknown
    name and `InvalidPayload` naming the field."""
    return build_workflow_definition(_builtin(workflow), payload, correlation_id)
