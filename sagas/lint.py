"""The workflow linter and the dry-run plan: pure functions over a workflow document
(`sagas.workflow`), calling nothing (docs/workflows.md, "Lint" and "Plan").

`lint` returns errors (what registration or the engine would refuse, with the field) and
warnings (what it accepts, but a reviewer should see): a step whose effect stands
(`compensation: none`), an event step without a failure type, retries whose backoffs
cannot fit in the step's timeout, step timeouts that add up past the saga's, no examples.
A compensation that uses a later step's output, or a step timeout longer than the saga's,
is an error (the engine refuses both); lint names it with its rule.

`plan` tells, for a step that fails (`fail_at`), what runs, what is compensated and in
which order, and what stays: the engine's rules (docs/design.md, "Compensation").
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sagas import errors
from sagas.definition import StepDefinition, parse_definition
from sagas.settings import Settings
from sagas.workflow import NONE, Workflow, check_undo_declared, check_workflow, parse_workflow

# Which rule an error of the engine breaks (the error class, or a phrase of its message).
_RULES: tuple[tuple[type[errors.SagaError], str, str], ...] = (
    (errors.InvalidPlaceholder, "not an earlier step", "output-of-later-step"),
    (errors.InvalidTimeout, "exceeds the saga's timeout", "step-timeout-above-saga"),
    (errors.UnknownService, "", "unknown-service"),
    (errors.UnknownTask, "", "unknown-task"),
    (errors.InvalidPlaceholder, "", "placeholder"),
    (errors.MissingPayloadValue, "", "placeholder"),
    (errors.InvalidWorkflow, "compensation", "compensation-missing"),
    (errors.InvalidWorkflow, "{{payload.", "placeholder"),
    (errors.InvalidWorkflow, "", "workflow"),
)


@dataclass
class Finding:
    rule: str
    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"rule": self.rule, "field": self.field, "message": self.message}


@dataclass
class LintReport:
    name: str | None
    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict[str, Any]:
        return {
            "workflow": self.name,
            "ok": self.ok,
            "errors": [f.as_dict() for f in self.errors],
            "warnings": [f.as_dict() for f in self.warnings],
        }


def lint(data: Any, settings: Settings) -> LintReport:
    """Errors and warnings of a workflow document (a mapping, or a parsed `Workflow`)."""
    name = data.get("name") if isinstance(data, Mapping) else None
    report = LintReport(name if isinstance(name, str) else None)
    if isinstance(data, Mapping) and isinstance(data.get("steps"), list):
        data = _undo_findings(data, report)
    try:
        workflow = data if isinstance(data, Workflow) else parse_workflow(data)
        report.name = workflow.name
        check_workflow(workflow, settings)
    except errors.ValidationFailed as exc:
        report.errors.append(Finding(_rule(exc), exc.field, exc.message))
        return report
    if report.errors:  # undos missing: the warnings below would mislead
        return report
    steps = _parse(workflow, settings).steps
    saga_timeout = _parse(workflow, settings).timeout_seconds
    for index, (raw, step) in enumerate(zip(workflow.steps, steps, strict=True)):
        where = f"steps[{index}]"
        if raw.get("compensation") == NONE:
            when = (
                "when a later step fails"
                if index < len(steps) - 1
                else "when the saga is compensated after it completed (by hand, or a deadline)"
            )
            report.warnings.append(
                Finding(
                    "no-compensation",
                    f"{where}.compensation",
                    f"step {step.name!r} has no compensation: its effect stands {when}",
                )
            )
        if step.action.kind == "event" and "failure" not in step.action.spec["await"]:
            report.warnings.append(
                Finding(
                    "event-without-failure",
                    f"{where}.action.await.failure",
                    f"event step {step.name!r} awaits no failure type: a failure is only seen "
                    f"when its timeout ({step.timeout_seconds:g} s) passes",
                )
            )
        fits = attempts_that_fit(step)
        if fits < step.retry.max_attempts:
            report.warnings.append(
                Finding(
                    "retries-exceed-timeout",
                    f"{where}.retry.max_attempts",
                    f"step {step.name!r}: {step.retry.max_attempts} attempts, but only {fits} "
                    f"can start within its timeout of {step.timeout_seconds:g} s (the "
                    "backoffs alone take longer)",
                )
            )
    total = sum(step.timeout_seconds for step in steps)
    if total > saga_timeout:
        report.warnings.append(
            Finding(
                "step-timeouts-above-saga",
                "timeout_seconds",
                f"the step timeouts add up to {total:g} s, above the saga's {saga_timeout:g} s: "
                "slow steps can time the saga out",
            )
        )
    if not workflow.examples:
        report.warnings.append(
            Finding(
                "no-examples",
                "examples",
                "no example payload: nothing checks the steps against a real payload "
                "before a start does",
            )
        )
    return report


def _undo_findings(data: Mapping[str, Any], report: LintReport) -> Mapping[str, Any]:
    """Every step that says nothing of its undo is an error of its own; the rest of the
    document is then checked as if each said `compensation: none`, so that lint reports
    the other problems too."""
    patched = copy.deepcopy(dict(data))
    for index, step in enumerate(patched["steps"]):
        try:
            check_undo_declared(step, f"steps[{index}]")
        except errors.InvalidWorkflow as exc:
            report.errors.append(Finding("compensation-missing", exc.field, exc.message))
            if isinstance(step, dict) and step.get("compensation") is None:
                step["compensation"] = NONE
    return patched if report.errors else data


def attempts_that_fit(step: StepDefinition) -> int:
    """How many attempts can start within the step's timeout, counting only the shortest
    backoffs (equal jitter: at least half of each) and no time for the attempts."""
    waited, attempt = 0.0, 1
    while attempt < step.retry.max_attempts:
        backoff = min(
            step.retry.backoff_seconds * 2 ** (attempt - 1), step.retry.max_backoff_seconds
        )
        waited += backoff / 2
        if waited >= step.timeout_seconds:
            break
        attempt += 1
    return attempt


def plan(
    workflow: Workflow, settings: Settings, fail_at: str | None, *, uncertain: bool = False
) -> dict[str, Any]:
    """What would run and what would be compensated when step `fail_at` fails (None: no
    step fails), in order, calling nothing. `uncertain`: the failed step's outcome is
    uncertain (a timeout after sending), so it is compensated too. Raises
    `InvalidDefinition` (field `fail_at`) for a step the workflow does not have."""
    steps = _parse(workflow, settings).steps
    names = [s.name for s in steps]
    if fail_at is not None and fail_at not in names:
        raise errors.InvalidValue("fail_at", f"no step {fail_at!r}; the steps: {', '.join(names)}")
    failing = len(steps) if fail_at is None else names.index(fail_at)
    run: list[dict[str, Any]] = []
    for index, step in enumerate(steps[: failing + 1]):
        outcome = "COMPLETED" if index < failing else "FAILED"
        run.append({"step": step.name, "call": describe(step.action.spec), "outcome": outcome})
    undo = list(steps[:failing])
    if fail_at is not None and uncertain:
        undo.append(steps[failing])
    compensate, stands = [], []
    for step in reversed(undo):
        if step.compensation is None:
            stands.append({"step": step.name, "why": "no compensation: its effect stands"})
        else:
            compensate.append({"step": step.name, "call": describe(step.compensation.spec)})
    status = "COMPLETED" if fail_at is None else "COMPENSATED"
    return {
        "workflow": workflow.name,
        "version": workflow.version,
        "fail_at": fail_at,
        "uncertain": uncertain,
        "run": run,
        "compensate": compensate,
        "effects_that_stand": stands,
        "skipped": names[failing + 1 :],
        "final_status": status,
        "note": "a plan: nothing was called. A compensation that fails stops the saga in "
        "COMPENSATION_FAILED, and the older undos wait for a person (docs/operations.md)",
    }


def describe(spec: Mapping[str, Any]) -> str:
    """One line for an action: `auth POST /users`, `task billing.invoice`, `event x -> y`."""
    if "service" in spec:
        return f"{spec['service']} {spec.get('method', 'POST')} {spec['path']}"
    if "task" in spec:
        return f"task {spec['task']}"
    awaited = spec.get("await") or {}
    line = f"event {spec['event']} -> awaits {awaited.get('success')}"
    return line + (f" or {awaited['failure']}" if awaited.get("failure") else "")


def _parse(workflow: Workflow, settings: Settings) -> Any:
    skeleton: dict[str, Any] = {"saga_type": workflow.name, "steps": workflow.saga_steps()}
    if workflow.timeout_seconds is not None:
        skeleton["timeout_seconds"] = workflow.timeout_seconds
    return parse_definition(skeleton, settings, check_payload=False)


def _rule(exc: errors.ValidationFailed) -> str:
    for kind, phrase, rule in _RULES:
        if isinstance(exc, kind) and phrase in f"{exc.field} {exc.message}":
            return rule
    return "definition"
