"""Workflow commands (docs/workflows.md): `lint FILE...` and `plan FILE --fail-at STEP` work
on files, offline (the logic is sagas/lint.py; the services known are SAGA_SERVICES and the
seed services' variables, as the API would have them); `workflow push|show|retire` talk to
the registry over the API (`push` needs an admin key)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from saga_cli.client import Api, client_options, url_path


def _load(path: str) -> Any:
    from sagas.templates import read_document

    return read_document(Path(path).read_text(encoding="utf-8"), path)


def _settings() -> Any:
    from sagas.settings import Settings

    return Settings.from_env()


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON.")
@click.option("--strict", is_flag=True, help="Warnings fail too (exit code 1).")
def lint(files: tuple[str, ...], as_json: bool, strict: bool) -> None:
    """Check workflow files (YAML or JSON) without registering them: the errors the API
    would refuse them for, and warnings (steps whose effect stands, event steps without a
    failure type, retries that cannot fit the timeout, ...). Exit code 1 on an error."""
    from sagas.errors import ValidationFailed
    from sagas.lint import lint as lint_document

    settings, reports, failed = _settings(), [], False
    for file in files:
        try:
            report = lint_document(_load(file), settings).as_dict()
        except ValidationFailed as exc:  # not YAML or JSON at all
            report = {
                "workflow": None,
                "ok": False,
                "errors": [{"rule": "syntax", "field": exc.field, "message": exc.message}],
                "warnings": [],
            }
        report["file"] = file
        reports.append(report)
        failed = failed or not report["ok"] or (strict and bool(report["warnings"]))
    if as_json:
        click.echo(json.dumps(reports, indent=2))
    else:
        for report in reports:
            for kind in ("errors", "warnings"):
                for finding in report[kind]:
                    click.echo(
                        f"{report['file']}: {kind[:-1]} [{finding['rule']}] "
                        f"{finding['field']}: {finding['message']}"
                    )
            errors, warnings = len(report["errors"]), len(report["warnings"])
            click.echo(f"{report['file']}: {errors} error(s), {warnings} warning(s)")
    sys.exit(1 if failed else 0)


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--fail-at", metavar="STEP", help="The step that fails (default: none fails).")
@click.option("--uncertain", is_flag=True, help="The failed step may have taken effect.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan(file: str, fail_at: str | None, uncertain: bool, as_json: bool) -> None:
    """Show what would run and what would be compensated, in order, if STEP failed,
    calling nothing."""
    from sagas.errors import ValidationFailed
    from sagas.lint import plan as make_plan
    from sagas.workflow import parse_workflow

    try:
        result = make_plan(parse_workflow(_load(file)), _settings(), fail_at, uncertain=uncertain)
    except ValidationFailed as exc:
        raise click.ClickException(f"{file}: invalid {exc.field}: {exc.message}") from None
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(render_plan(result))


def render_plan(result: dict[str, Any]) -> str:
    """A plan as lines a person reads."""
    head = f"Plan for {result['workflow']}"
    head += f" v{result['version']}" if result.get("version") else ""
    head += f", {result['fail_at']} fails" if result["fail_at"] else ", nothing fails"
    lines = [head + (" (uncertain: it may have taken effect)" if result["uncertain"] else "")]
    lines.append("Runs:")
    for n, entry in enumerate(result["run"], 1):
        lines.append(f"  {n}. {entry['step']:<28} {entry['outcome']:<10} {entry['call']}")
    if result["fail_at"]:
        lines.append("Compensates, newest first:")
        for n, entry in enumerate(result["compensate"], 1):
            lines.append(f"  {n}. {entry['step']:<28} {entry['call']}")
        if not result["compensate"]:
            lines.append("  (nothing)")
        for entry in result["effects_that_stand"]:
            lines.append(f"Stands: {entry['step']} ({entry['why']})")
    if result["skipped"]:
        lines.append("Never runs: " + ", ".join(result["skipped"]))
    lines.append(f"Final status: {result['final_status']}")
    return "\n".join(lines)


@click.group()
def workflow() -> None:
    """The workflow registry over the API: push (register a version), show, retire."""


@workflow.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@client_options
def push(file: str, url: str, api_key: str | None, as_json: bool) -> None:
    """Register FILE's workflow (PUT /workflows/{name}): a new version when its content
    changed, else nothing. Needs an admin key."""
    document = _load(file)
    name = document.get("name") if isinstance(document, dict) else None
    if not isinstance(name, str) or not name:
        raise click.ClickException(f"{file}: a workflow file needs a name")
    status, answer = Api(url, api_key, one_line=True).call(
        "PUT", "/workflows" + url_path(name), body=document
    )
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    what = "registered as version" if status == 201 else "unchanged: still version"
    click.echo(f"{name}: {what} {answer['version']}" + ("" if status == 201 else ", active"))


@workflow.command()
@click.argument("name")
@click.option("--version", type=click.IntRange(min=1), help="One version (default: latest).")
@client_options
def show(name: str, version: int | None, url: str, api_key: str | None, as_json: bool) -> None:
    """A registered workflow: its latest (or given) version and the list of versions."""
    path = "/workflows" + url_path(name)
    if version is not None:
        path += url_path("versions", str(version))
    _, answer = Api(url, api_key, one_line=True).call("GET", path)
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    state = "retired" if answer["retired"] else "active"
    click.echo(f"{name} v{answer['version']} (latest v{answer['latest_version']}, {state})")
    for entry in answer["versions"]:
        click.echo(f"  v{entry['version']}  {entry['registered_at']}  {entry['source']}")
    for n, step in enumerate(answer["steps"], 1):
        click.echo(f"  {n}. {step['name']}")


@workflow.command()
@click.argument("name")
@client_options
def retire(name: str, url: str, api_key: str | None, as_json: bool) -> None:
    """Retire NAME (DELETE /workflows/{name}): no new starts; running sagas go on."""
    _, answer = Api(url, api_key, one_line=True).call("DELETE", "/workflows" + url_path(name))
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    click.echo(f"{name}: retired (latest version {answer['latest_version']})")


@click.group()
def schedule() -> None:
    """Schedules over the API: create, list, pause, resume, delete (an admin key writes)."""


def _schedule_line(doc: dict[str, Any]) -> str:
    when = (
        f"cron '{doc['cron']}' {doc['timezone']}"
        if doc.get("cron")
        else (f"every {doc['interval_seconds']:g} s")
    )
    state = "paused" if doc["paused"] else "active"
    nxt = doc["next_fire_times"][0] if doc["next_fire_times"] else "-"
    return f"{doc['schedule_id']}  {doc['workflow']}  {when}  {state}  next {nxt}"


def _show_schedule(doc: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(_schedule_line(doc))
    click.echo("Next fire times:")
    for when in doc["next_fire_times"]:
        click.echo(f"  {when}")


@schedule.command("create")
@click.argument("workflow_name", metavar="WORKFLOW")
@click.option("--cron", help="A cron expression, e.g. '0 9 * * 1-5'.")
@click.option("--timezone", default="UTC", show_default=True, help="An IANA time zone.")
@click.option("--every", "interval", type=float, help="Instead of --cron: every N seconds.")
@click.option("--payload", default="{}", help="The workflow's payload (JSON).")
@click.option(
    "--catch-up", type=click.Choice(["skip", "run_once"]), default="skip", show_default=True
)
@client_options
def schedule_create(
    workflow_name: str,
    cron: str | None,
    timezone: str,
    interval: float | None,
    payload: str,
    catch_up: str,
    url: str,
    api_key: str | None,
    as_json: bool,
) -> None:
    """Start WORKFLOW on a cron expression (in --timezone) or --every N seconds."""
    try:
        data = json.loads(payload)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--payload") from None
    body: dict[str, Any] = {"workflow": workflow_name, "payload": data, "catch_up": catch_up}
    if cron is not None:
        body.update(cron=cron, timezone=timezone)
    if interval is not None:
        body["interval_seconds"] = interval
    _, doc = Api(url, api_key, one_line=True).call("POST", "/schedules", body=body)
    _show_schedule(doc, as_json)


@schedule.command("list")
@client_options
def schedule_list(url: str, api_key: str | None, as_json: bool) -> None:
    """Every schedule, with its next fire time."""
    _, answer = Api(url, api_key, one_line=True).call("GET", "/schedules")
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    for doc in answer["schedules"]:
        click.echo(_schedule_line(doc))


_ACTIONS = {
    "pause": "Pause SCHEDULE_ID: nothing fires until it is resumed.",
    "resume": "Resume a paused SCHEDULE_ID.",
    "delete": "Delete SCHEDULE_ID (the sagas it started stay).",
}


def _schedule_action(verb: str) -> Any:
    @schedule.command(verb, help=_ACTIONS[verb])
    @click.argument("schedule_id")
    @client_options
    def action(schedule_id: str, url: str, api_key: str | None, as_json: bool) -> None:
        api = Api(url, api_key, one_line=True)
        path = "/schedules" + url_path(schedule_id)
        if verb == "delete":
            api.call("DELETE", path)
            click.echo(f"{schedule_id}: deleted")
            return
        _, doc = api.call("POST", path + "/" + verb)
        _show_schedule(doc, as_json)

    return action


for _verb in _ACTIONS:
    _schedule_action(_verb)
