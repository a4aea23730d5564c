"""The repair commands: `resolve`, `skip`, `retry`, `cancel`, `rerun`, and what to look at
first, `actions` and `history`.

Each action needs an API key with the `operator` role and a `--reason`, which the saga's
history keeps with the key's name. A state that does not allow the action is refused by the
API (409, or 404/422/403): the command prints the API's message on one line on stderr and
exits with code 1. docs/operations.md has the table of what each state allows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import click

from saga_cli.client import Api, client_options, console, json_object, print_json, url_path
from saga_cli.render import actions_table, history_table, report

STEP_HELP = "STEP is the step's name or its number counted from 1 (as `actions` shows it)."


def _said(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise click.BadParameter("say why: the reason is kept in the saga's history")
    return value


def reason_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--reason",
        required=True,
        metavar="TEXT",
        callback=_said,
        help="Why (required): kept in the saga's history with your key's name.",
    )(f)


def _act(url: str, api_key: str | None, path: str, body: dict[str, Any]) -> dict[str, Any]:
    _, saga = Api(url, api_key, one_line=True).call("POST", path, body=body)
    return dict(saga)


def _on_step(
    action: str,
    done: str,
    saga_id: str,
    step: str,
    reason: str,
    url: str,
    api_key: str | None,
    as_json: bool,
) -> None:
    path = "/saga" + url_path(saga_id) + "/steps" + url_path(step) + "/" + action
    saga = _act(url, api_key, path, {"reason": reason})
    number, name = _locate(saga, step)
    report(
        saga,
        f"Step {number} ({name}) of saga {saga_id}: {done}. The saga is {saga.get('status')}.",
        as_json,
    )


def _locate(saga: Mapping[str, Any], ref: str) -> tuple[str, str]:
    """The 1-based number and the name of the step `ref` names (as the API finds it)."""
    steps = saga.get("steps") or []
    for number, step in enumerate(steps, start=1):
        if step.get("name") == ref:
            return str(number), ref
    if ref.isdigit() and 1 <= int(ref) <= len(steps):
        return ref, str(steps[int(ref) - 1].get("name"))
    return "?", ref


@click.command(
    epilog=STEP_HELP, short_help="Count a step's failed or pending undo as done by hand."
)
@click.argument("saga_id")
@click.argument("step")
@reason_option
@client_options
def resolve(
    saga_id: str, step: str, reason: str, url: str, api_key: str | None, as_json: bool
) -> None:
    """You undid STEP's effect yourself: count its compensation as done, then the older
    compensations go on (POST /saga/{id}/steps/{step}/resolve).

    Allowed while the saga is COMPENSATION_FAILED and the step's compensation failed or has
    not run, or COMPENSATING with that compensation not run and no attempt in flight.
    """
    done = "compensation counted as done by hand"
    _on_step("resolve", done, saga_id, step, reason, url, api_key, as_json)


@click.command(epilog=STEP_HELP, short_help="Skip a step's undo: its effect stays.")
@click.argument("saga_id")
@click.argument("step")
@reason_option
@client_options
def skip(
    saga_id: str, step: str, reason: str, url: str, api_key: str | None, as_json: bool
) -> None:
    """Nothing to undo for STEP: skip its compensation and leave its effect, then the older
    compensations go on (POST /saga/{id}/steps/{step}/skip). Allowed as for `resolve`."""
    done = "compensation skipped, its effect stays"
    _on_step("skip", done, saga_id, step, reason, url, api_key, as_json)


@click.command(
    epilog=STEP_HELP, short_help="Make a step's next attempt now, not after its countdown."
)
@click.argument("saga_id")
@click.argument("step")
@reason_option
@client_options
def retry(
    saga_id: str, step: str, reason: str, url: str, api_key: str | None, as_json: bool
) -> None:
    """Make STEP's next attempt now instead of after its retry countdown
    (POST /saga/{id}/steps/{step}/retry). Allowed while the saga is RUNNING and the step
    waits out a countdown."""
    _on_step("retry", "next attempt sent now", saga_id, step, reason, url, api_key, as_json)


@click.command(short_help="Cancel a PENDING saga.")
@click.argument("saga_id")
@reason_option
@client_options
def cancel(saga_id: str, reason: str, url: str, api_key: str | None, as_json: bool) -> None:
    """Cancel a PENDING saga (POST /saga/{id}/cancel): it never started, so it ends
    COMPENSATED with every step SKIPPED. A started saga is undone with `compensate`."""
    saga = _act(url, api_key, "/saga" + url_path(saga_id) + "/cancel", {"reason": reason})
    report(saga, f"Saga {saga_id} cancelled: the saga is {saga.get('status')}.", as_json)


@click.command(short_help="Run a compensated saga again as a new, linked saga.")
@click.argument("saga_id")
@reason_option
@click.option(
    "--payload",
    metavar="JSON",
    help="The new saga's payload, a JSON object (default: the original's).",
)
@click.option(
    "--payload-file",
    type=click.File("r"),
    metavar="FILE",
    help="The new saga's payload from a JSON file (- for stdin).",
)
@client_options
def rerun(
    saga_id: str,
    reason: str,
    payload: str | None,
    payload_file: Any,
    url: str,
    api_key: str | None,
    as_json: bool,
) -> None:
    """Run a COMPENSATED or COMPENSATION_FAILED saga again as a new saga, linked to it
    (POST /saga/{id}/rerun): same definition and correlation id, the same payload or a new
    one. Prints the new saga; its history and the original's record the payload's change.
    """
    if payload is not None and payload_file is not None:
        raise click.UsageError("give --payload or --payload-file, not both")
    body: dict[str, Any] = {"reason": reason}
    if payload is not None:
        body["payload"] = json_object(payload, "the payload", "--payload")
    elif payload_file is not None:
        text = payload_file.read()
        body["payload"] = json_object(text, f"the payload {payload_file.name}", "--payload-file")
    new = _act(url, api_key, "/saga" + url_path(saga_id) + "/rerun", body)
    report(
        new,
        f"Saga {saga_id} rerun as saga {new.get('saga_id')} (rerun of {new.get('rerun_of')}).",
        as_json,
    )


@click.command(short_help="Every transition of a saga, with who acted and why.")
@click.argument("saga_id")
@client_options
def history(saga_id: str, url: str, api_key: str | None, as_json: bool) -> None:
    """Every transition of a saga, oldest first (GET /saga/{id}/history): time, event, the
    saga's status after it, the step, and for a person's action who (the API key's name),
    why, and what it changed."""
    _, data = Api(url, api_key, one_line=True).call("GET", "/saga" + url_path(saga_id) + "/history")
    if as_json:
        print_json(data)
        return
    console().print(history_table(data.get("history") or []))


@click.command(short_help="The repair actions a saga's state allows now.")
@click.argument("saga_id")
@client_options
def actions(saga_id: str, url: str, api_key: str | None, as_json: bool) -> None:
    """What a person may do to a saga now (GET /saga/{id}/actions): each action, and for a
    step's action the step's number (from 1) and name."""
    _, data = Api(url, api_key, one_line=True).call("GET", "/saga" + url_path(saga_id) + "/actions")
    if as_json:
        print_json(data)
        return
    out = console()
    allowed = data.get("actions") or []
    state = f"Saga {data.get('saga_id')} is {data.get('status')} (version {data.get('version')})"
    if not allowed:
        out.print(f"{state}: no repair action is allowed now.", markup=False)
        return
    out.print(f"{state}; allowed now:", markup=False)
    out.print(actions_table(allowed))
    first = allowed[0]
    step = f" {first['step_number']}" if first.get("step_number") is not None else ""
    out.print(
        f"e.g. saga-orchestrator {first['action']} {data.get('saga_id')}{step} --reason TEXT",
        markup=False,
    )
