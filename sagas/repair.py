"""What a person may do to a saga, and doing it: the repair actions.

Each action is one fenced transition (a Lua script in `sagas/lua/`) that checks the saga's
state, changes it, and records in the saga's history who did it (`actor`, the API key's
name), why (`reason`, required) and what changed. A state that does not allow the action is
refused (`InvalidTransition`, HTTP 409) with the reason. docs/operations.md has the table of
which action each state allows; `allowed` computes it for one saga, for the dashboard, the
CLI and `GET /saga/{id}/actions` (the scripts decide; `allowed` only predicts them).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import jsonpatch  # type: ignore[import-untyped]

from sagas.errors import InvalidTransition, SagaNotFound, UnknownStep, ValidationFailed
from sagas.log import bound
from sagas.model import SagaRecord
from sagas.store import Reply

if TYPE_CHECKING:
    from sagas.engine import SagaEngine

log = logging.getLogger("sagas.repair")

COMPENSATE, CANCEL, RESOLVE, SKIP, RETRY, RERUN = (
    "compensate",
    "cancel",
    "resolve",
    "skip",
    "retry",
    "rerun",
)
ACTIONS = (COMPENSATE, CANCEL, RESOLVE, SKIP, RETRY, RERUN)
STEP_ACTIONS = (RESOLVE, SKIP, RETRY)
MAX_REASON = 1000
# Rerun ids derive from the original's id and how many reruns it had: two people asking at
# once compute the same id, and only one saga is created.
RERUN_NAMESPACE = uuid.UUID("6f0e7d4c-8a51-4d2e-9c1b-3a7e5b2d9f10")


@dataclass(frozen=True)
class Allowed:
    """One action a person may take now: on the saga (`step` None) or on one step (its name
    and 1-based number), and what it will do."""

    action: str
    description: str
    step: str | None = None
    step_number: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def allowed(record: SagaRecord) -> list[Allowed]:
    """The actions `record`'s state allows (docs/operations.md, "What each state allows")."""
    status = record["status"]
    steps = record["steps"]
    out: list[Allowed] = []
    if status == "PENDING":
        out.append(Allowed(CANCEL, "never started: every step is skipped, nothing to undo"))
    if status in ("RUNNING", "COMPLETED"):
        out.append(Allowed(COMPENSATE, "undo every step that may have taken effect"))
    if status == "COMPENSATION_FAILED":
        out.append(Allowed(COMPENSATE, "retry the failed compensation, then the older ones"))
    if status in ("COMPENSATED", "COMPENSATION_FAILED"):
        out.append(Allowed(RERUN, "start the saga again as a new saga, payload editable"))
    in_flight = any(s["status"] in ("RUNNING", "WAITING") for s in steps)
    for number, step in enumerate(steps, start=1):
        comp = step["compensation"]
        name = step["name"]
        if status == "RUNNING" and step.get("retry_pending"):
            out.append(Allowed(RETRY, "make the next attempt now", name, number))
        if comp is None:
            continue
        settleable = (
            status == "COMPENSATION_FAILED" and comp["status"] in ("COMPENSATION_FAILED", "PENDING")
        ) or (status == "COMPENSATING" and not in_flight and comp["status"] == "PENDING")
        if settleable:
            out.append(
                Allowed(RESOLVE, "you undid it yourself: count it as compensated", name, number)
            )
            out.append(Allowed(SKIP, "nothing to undo: leave its effect", name, number))
    return out


def step_index(record: SagaRecord, ref: str | int) -> int:
    """The 0-based index of the step `ref` names: its name, or its 1-based number."""
    steps = record["steps"]
    for index, step in enumerate(steps):
        if step["name"] == ref:
            return index
    text = str(ref)
    if text.isdigit() and 1 <= int(text) <= len(steps):
        return int(text) - 1
    raise UnknownStep(record["saga_id"], text)


class Repairs:
    """The repair actions of an engine (`engine.repairs`)."""

    def __init__(self, engine: SagaEngine) -> None:
        self.engine = engine
        self.store = engine.store

    def compensate(self, saga_id: str, reason: str, actor: str) -> SagaRecord:
        """Compensate a RUNNING or COMPLETED saga, retry a COMPENSATION_FAILED one's
        compensation, or cancel a PENDING one (as `SagaEngine.compensate`, audited)."""
        return self.engine.compensate(saga_id, _reason(reason), actor=actor)

    def cancel(self, saga_id: str, reason: str, actor: str) -> SagaRecord:
        """Cancel a PENDING saga: it never started; it ends COMPENSATED, all steps SKIPPED."""
        reply = self.store.transition("cancel", saga_id, [_reason(reason), actor])
        self._refused(saga_id, reply, "cannot cancel", "only a PENDING saga can be cancelled")
        self._audit(saga_id, CANCEL, actor, reason)
        return self.store.get(saga_id)

    def resolve(self, saga_id: str, step: str | int, reason: str, actor: str) -> SagaRecord:
        """Count step `step`'s compensation as done by hand, then continue the older undos."""
        return self._settle(saga_id, step, RESOLVE, reason, actor)

    def skip(self, saga_id: str, step: str | int, reason: str, actor: str) -> SagaRecord:
        """Leave step `step`'s effect (nothing to undo), then continue the older undos."""
        return self._settle(saga_id, step, SKIP, reason, actor)

    def retry(self, saga_id: str, step: str | int, reason: str, actor: str) -> SagaRecord:
        """Make step `step`'s next attempt now instead of after its retry countdown."""
        record = self.store.get(saga_id)
        index = step_index(record, step)
        reply = self.store.transition("retry_now", saga_id, [index, _reason(reason), actor])
        self._refused(saga_id, reply, f"cannot retry step {record['steps'][index]['name']!r}")
        self._audit(saga_id, RETRY, actor, reason, step=record["steps"][index]["name"])
        self.engine.dispatch_steps(
            saga_id, range(index, len(record["steps"])), record["correlation_id"]
        )
        return self.store.get(saga_id)

    def rerun(
        self,
        saga_id: str,
        reason: str,
        actor: str,
        payload: Mapping[str, Any] | None = None,
    ) -> SagaRecord:
        """Start a COMPENSATED or COMPENSATION_FAILED saga again as a new saga (same
        definition and correlation id; `payload` replaces the payload), linked both ways:
        `rerun_of` on the new one, `reruns` on the old; both histories hold the payload's
        change as a JSON Patch. Returns the new saga."""
        reason = _reason(reason)
        old = self.store.get(saga_id)
        if old["status"] not in ("COMPENSATED", "COMPENSATION_FAILED"):
            raise InvalidTransition(
                saga_id,
                old["status"],
                f"cannot rerun: the saga is {old['status']}; only a COMPENSATED or "
                "COMPENSATION_FAILED saga can be run again",
            )
        new_payload = dict(old["payload"] if payload is None else payload)
        patch = jsonpatch.make_patch(old["payload"], new_payload).patch
        definition = self._definition(old, new_payload)
        new_id = str(uuid.uuid5(RERUN_NAMESPACE, f"{saga_id}:{len(old.get('reruns') or [])}"))
        origin = {
            **self._ran(old),
            "rerun_of": saga_id,
            "actor": actor,
            "reason": reason,
            "data": {"rerun_of": saga_id, "payload_patch": patch},
        }
        started = self.engine.start(definition, saga_id=new_id, origin=origin)
        link = {"rerun": new_id, "payload_patch": patch}
        self.store.transition("rerun", saga_id, [new_id, reason, actor, _json(link)])
        if not started.created:
            raise InvalidTransition(
                saga_id,
                old["status"],
                f"cannot rerun: this saga was just rerun as {new_id} (by someone else, or "
                "by this request before its answer was lost)",
            )
        self._audit(saga_id, RERUN, actor, reason, rerun=new_id)
        return started.saga

    # --- internals ---------------------------------------------------------------------
    def _settle(
        self, saga_id: str, step: str | int, mode: str, reason: str, actor: str
    ) -> SagaRecord:
        record = self.store.get(saga_id)
        index = step_index(record, step)
        name = record["steps"][index]["name"]
        reply = self.store.transition("resolve", saga_id, [index, mode, _reason(reason), actor])
        self._refused(saga_id, reply, f"cannot {mode} the compensation of step {name!r}")
        self._audit(saga_id, mode, actor, reason, step=name)
        if reply.code == "compensate":
            self.engine.dispatch_compensation(saga_id, reply, record["correlation_id"])
        return self.store.get(saga_id)

    def _definition(self, old: SagaRecord, payload: dict[str, Any]) -> dict[str, Any]:
        """The rerun's definition: the workflow version's it ran, rebuilt for the new payload
        (so that a corrected payload is checked against its schema), else the stored one."""
        from sagas.templates import template_names
        from sagas.workflow import build_definition

        base: dict[str, Any]
        ran = old.get("workflow")
        if ran:  # a repair: allowed even when the workflow was retired since
            workflow = self.engine.workflows.get(ran["name"], ran["version"])
            base = build_definition(workflow, payload)
        elif old["saga_type"] in template_names():  # a built-in's saga recorded no version
            base = build_definition(self.engine.workflows.get(old["saga_type"]), payload)
        else:
            base = {
                "saga_type": old["saga_type"],
                "payload": payload,
                "steps": self.store.definition_of(old["saga_id"]),
            }
        base["correlation_id"] = old["correlation_id"]
        base["webhook"] = old["webhook"]  # the original's (None: none)
        return base

    @staticmethod
    def _ran(old: SagaRecord) -> dict[str, Any]:
        ran = old.get("workflow")
        return {"workflow": ran["name"], "workflow_version": ran["version"]} if ran else {}

    @staticmethod
    def _refused(saga_id: str, reply: Reply, what: str, why: str | None = None) -> None:
        if reply.code == "missing":
            raise SagaNotFound(saga_id)
        if reply.code == "conflict":
            status = str(reply.values[0])
            detail = why or (str(reply.values[1]) if len(reply.values) > 1 else "")
            raise InvalidTransition(
                saga_id, status, f"{what}: the saga is {status}" + (f"; {detail}" if detail else "")
            )

    def _audit(self, saga_id: str, action: str, actor: str, reason: str, **extra: Any) -> None:
        with bound(saga_id=saga_id):
            log.info(
                "repair action", extra={"action": action, "actor": actor, "reason": reason, **extra}
            )


def _reason(reason: str) -> str:
    text = (reason or "").strip()
    if not text:
        raise ValidationFailed("reason", "is required: say why (it is kept in the history)")
    if len(text) > MAX_REASON:
        raise ValidationFailed("reason", f"is longer than {MAX_REASON} characters")
    return text


def _json(value: Any) -> str:
    from sagas.records import dumps

    return dumps(value)
