"""The workflow registry: versioned workflow documents in Redis (`sagas.workflow`).

`register` stores a new version when the content differs from the latest (the same content
is a no-op); versions are never changed afterwards. `retire` stops new starts; every saga
already holds its own definition, so neither a new version nor a retirement changes a saga
that runs. Each process registers the built-in workflows (`sagas/workflows/`) and the files
of `SAGA_WORKFLOWS_DIR` before its first read (`ensure_loaded`): a file whose content
differs from its workflow's latest version becomes a new version, so the files deployed
win (docs/workflows.md); a retired workflow stays retired.

Keys: `<p>wf:<name>` (hash, lua/wf_put.lua documents its fields) and `<p>workflows` (set).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sagas.errors import (
    ConfigurationError,
    UnknownWorkflow,
    UnknownWorkflowVersion,
    ValidationFailed,
    WorkflowRetired,
)
from sagas.records import iso
from sagas.templates import builtin_workflows, load_file, workflow_files
from sagas.workflow import Workflow, build_definition, check_workflow, parse_workflow

if TYPE_CHECKING:
    from sagas.engine import SagaEngine

log = logging.getLogger("sagas.catalog")


@dataclass(frozen=True)
class Registered:
    """The answer of `register`: the workflow as stored, and whether a version was added."""

    workflow: Workflow
    created: bool
    outcome: str  # created, same, revived, retired


class WorkflowCatalog:
    def __init__(self, engine: SagaEngine) -> None:
        self.engine = engine
        self.redis = engine.store.redis
        self.keys = engine.store.keys
        lua = resources.files("sagas").joinpath("lua")
        self._put = self.redis.register_script(lua.joinpath("wf_put.lua").read_text())
        self._retire = self.redis.register_script(lua.joinpath("wf_retire.lua").read_text())
        self._loaded = False
        self._lock = threading.Lock()

    # --- writing -----------------------------------------------------------------------
    def register(self, data: Any, *, source: str = "api", revive: bool = True) -> Registered:
        """Validate (shape, engine checks, examples) and store `data` as the workflow's next
        version unless it is the latest already. Raises `InvalidWorkflow` (or another
        `InvalidDefinition`) naming the field; nothing is written then."""
        self.ensure_loaded()
        return self._register(data, source=source, revive=revive)

    def _register(self, data: Any, *, source: str, revive: bool) -> Registered:
        workflow = data if isinstance(data, Workflow) else parse_workflow(data)
        check_workflow(workflow, self.engine.settings)
        content = json.dumps(workflow.content(), sort_keys=True, separators=(",", ":"))
        outcome, version = self._put(
            keys=[self.keys.workflow(workflow.name), self.keys.workflows],
            args=[workflow.name, workflow.digest(), content, "1" if revive else "0", source],
        )
        outcome = str(outcome)
        if outcome == "created":
            log.info(
                "workflow registered",
                extra={"workflow": workflow.name, "version": int(version), "source": source},
            )
        elif outcome == "retired":
            log.info(
                "workflow %s is retired: %s not registered", workflow.name, source,
                extra={"workflow": workflow.name, "source": source},
            )  # fmt: skip
        stored = self._read(workflow.name, int(version))
        return Registered(stored, outcome == "created", outcome)

    def retire(self, name: str) -> Workflow:
        """Retire `name`: no new starts. Raises `UnknownWorkflow`."""
        self.ensure_loaded()
        reply = self._retire(keys=[self.keys.workflow(name)], args=[])
        if str(reply[0]) == "missing":
            raise UnknownWorkflow(name)
        if str(reply[0]) == "retired":
            log.info("workflow retired", extra={"workflow": name})
        return self.get(name)

    def ensure_loaded(self) -> None:
        """Register the built-in workflows and those of `SAGA_WORKFLOWS_DIR`, once per
        process. A file that is refused stops the process (ConfigurationError naming the
        file and the field): a deployment should not run without the workflows it ships."""
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            for workflow in builtin_workflows():
                self._register(workflow, source="builtin", revive=False)
            for file, workflow in self.deployed_files():
                self._register(workflow, source=f"file:{file.name}", revive=False)
            self._loaded = True

    def deployed_files(self) -> list[tuple[Path, Workflow]]:
        """The workflows of `SAGA_WORKFLOWS_DIR`, each checked as registration would (no
        Redis): every process calls it when it builds its engine (tasks/runtime.py), so that
        a refused file stops it at start. Raises `ConfigurationError` naming the file and
        the field."""
        found = []
        for directory in self.engine.settings.workflows_dirs:
            path = Path(directory)
            if not path.is_dir():
                raise ConfigurationError(f"SAGA_WORKFLOWS_DIR: {directory} is no directory")
            for file in workflow_files(path):
                try:
                    workflow = load_file(file)
                    check_workflow(workflow, self.engine.settings)
                except ValidationFailed as exc:
                    raise ConfigurationError(
                        f"SAGA_WORKFLOWS_DIR: {file}: invalid {exc.field}: {exc.message}"
                    ) from None
                found.append((file, workflow))
        return found

    # --- reading -----------------------------------------------------------------------
    def get(self, name: str, version: int | None = None) -> Workflow:
        """The latest (or the given) version; raises `UnknownWorkflow(Version)`."""
        self.ensure_loaded()
        return self._read(name, version)

    def _read(self, name: str, version: int | None) -> Workflow:
        key = self.keys.workflow(name)
        latest, retired = self.redis.hmget(key, "latest", "retired")
        if latest is None:
            raise UnknownWorkflow(name)
        number = int(latest) if version is None else version
        content = self.redis.hget(key, f"v:{number}")
        if content is None:
            raise UnknownWorkflowVersion(name, number)
        found = parse_workflow(json.loads(content))
        return Workflow(**{**vars(found), "version": number, "retired": retired == "1"})

    def describe(self, name: str, version: int | None = None) -> dict[str, Any]:
        """A workflow's document for the API: its content, `version`, `latest_version`,
        `retired`, `registered_at`, `source` and the list of `versions`."""
        workflow = self.get(name, version)
        fields: dict[str, str] = self.redis.hgetall(self.keys.workflow(name))  # type: ignore[assignment]
        latest = int(fields["latest"])
        number = workflow.version or latest
        return {
            **workflow.content(),
            "version": number,
            "latest_version": latest,
            "retired": workflow.retired,
            "registered_at": iso(fields.get(f"at:{number}")),
            "source": fields.get(f"src:{number}"),
            "versions": [
                {
                    "version": n,
                    "registered_at": iso(fields.get(f"at:{n}")),
                    "source": fields.get(f"src:{n}"),
                    "digest": fields.get(f"d:{n}"),
                }
                for n in range(1, latest + 1)
            ],
        }

    def active(self) -> list[Workflow]:
        """The latest version of every workflow not retired: the built-ins first (in their
        order), then the others by name."""
        self.ensure_loaded()
        order = {w.name: i for i, w in enumerate(builtin_workflows())}
        members: set[str] = self.redis.smembers(self.keys.workflows)  # type: ignore[assignment]
        names = sorted(members, key=lambda n: (order.get(n, 99), n))
        found = []
        for name in names:
            try:
                workflow = self.get(name)
            except UnknownWorkflow:
                continue
            if not workflow.retired:
                found.append(workflow)
        return found

    def triggered_by(self, event_type: str) -> list[str]:
        """The active workflows that an event of `event_type` starts by itself."""
        return [w.name for w in self.active() if event_type in w.triggers]

    # --- starting ----------------------------------------------------------------------
    def definition(
        self,
        name: str,
        payload: Any,
        correlation_id: str | None = None,
        version: int | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The saga definition of a new start and the origin the saga records (`workflow`,
        `workflow_version`). Raises `UnknownWorkflow`, `WorkflowRetired`, `InvalidPayload`."""
        workflow = self.get(name, version)
        if workflow.retired:
            raise WorkflowRetired(name)
        definition = build_definition(workflow, payload, correlation_id)
        return definition, {"workflow": name, "workflow_version": workflow.version}
