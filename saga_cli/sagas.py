"""The client commands on sagas: `start`, `status`, `list` and `compensate`."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from saga_cli.client import (
    FINAL_STATUSES,
    Api,
    ApiError,
    client_options,
    console,
    json_object,
    print_json,
    url_path,
)
from saga_cli.render import report, saga_view, styled, timestamp


@click.command()
@click.argument("workflow", required=False)
@click.option(
    "--payload", metavar="JSON", help="The workflow's payload, a JSON object (default {})."
)
@click.option(
    "--definition",
    type=click.File("r"),
    metavar="FILE",
    help="Start a saga from a definition (JSON file, - for stdin): POST /saga/start.",
)
@click.option("--correlation-id", help="Correlation id carried to every step.")
@click.option(
    "--idempotency-key",
    help="Idempotency-Key header: repeating the same key returns the saga it created.",
)
@client_options
def start(
    workflow: str | None,
    payload: str | None,
    definition: Any,
    correlation_id: str | None,
    idempotency_key: str | None,
    url: str,
    api_key: str | None,
    as_json: bool,
) -> None:
    """Start a saga: a predefined WORKFLOW, or a definition with --definition.

    \b
    saga-orchestrator start user_registration --payload '{"email": "ada@example.com"}'
    saga-orchestrator start --definition saga.json
    """
    if (workflow is None) == (definition is None):
        raise click.UsageError("give either a WORKFLOW name or --definition FILE (not both)")
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    if definition is not None:
        body = json_object(definition.read(), f"the definition {definition.name}", "--definition")
        path = "/saga/start"
        if payload is not None:
            body["payload"] = json_object(payload, "the payload", "--payload")
    else:
        body = {"payload": json_object(payload or "{}", "the payload", "--payload")}
        path = "/workflows" + url_path(str(workflow)) + "/start"
    if correlation_id is not None:
        body["correlation_id"] = correlation_id
    code, saga = Api(url, api_key).call("POST", path, body=body, headers=headers)
    if as_json:
        print_json(saga)
        return
    out = console()
    if code == 200:
        out.print("An existing saga was returned for this Idempotency-Key.")
    out.print(saga_view(saga))
    out.print(f"Watch it: saga-orchestrator status {saga.get('saga_id')} --watch")


@click.command()
@click.argument("saga_id")
@click.option(
    "--watch", is_flag=True, help="Redraw until COMPLETED, COMPENSATED or COMPENSATION_FAILED."
)
@click.option(
    "--interval", type=float, default=0.5, show_default=True, help="Seconds between polls."
)
@click.option(
    "--timeout",
    type=float,
    default=None,
    help="With --watch: give up (exit code 1) after this many seconds.",
)
@client_options
def status(
    saga_id: str,
    watch: bool,
    interval: float,
    timeout: float | None,
    url: str,
    api_key: str | None,
    as_json: bool,
) -> None:
    """Show a saga and its steps (GET /saga/{id}/status).

    With --watch the view is redrawn until the saga reaches a final status; with --json too,
    a JSON line is printed at every change. The exit code is 0 whatever the final status.
    """
    client = Api(url, api_key)
    path = "/saga" + url_path(saga_id) + "/status"

    def fetch() -> dict[str, Any]:
        return dict(client.call("GET", path)[1])

    saga = fetch()
    if not watch:
        if as_json:
            print_json(saga)
        else:
            console().print(saga_view(saga))
        return
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        if as_json:
            _watch_json(saga, fetch, interval, deadline)
        else:
            _watch_live(saga, fetch, interval, deadline)
    except KeyboardInterrupt:
        click.echo("Stopped watching; the saga goes on.", err=True)
        sys.exit(130)


def _watch_json(
    saga: dict[str, Any], fetch: Callable[[], dict[str, Any]], interval: float, deadline: Any
) -> None:
    click.echo(json.dumps(saga, ensure_ascii=False))
    while saga.get("status") not in FINAL_STATUSES:
        _sleep_or_give_up(interval, deadline, saga)
        latest = fetch()
        if latest != saga:
            click.echo(json.dumps(latest, ensure_ascii=False))
        saga = latest


def _watch_live(
    saga: dict[str, Any], fetch: Callable[[], dict[str, Any]], interval: float, deadline: Any
) -> None:
    from rich.live import Live

    out = console()
    if not out.is_terminal:  # nothing to redraw on: show the final state once
        while saga.get("status") not in FINAL_STATUSES:
            _sleep_or_give_up(interval, deadline, saga)
            saga = fetch()
        out.print(saga_view(saga))
        return
    with Live(saga_view(saga), console=out, auto_refresh=False) as live:
        while saga.get("status") not in FINAL_STATUSES:
            _sleep_or_give_up(interval, deadline, saga)
            saga = fetch()
            live.update(saga_view(saga), refresh=True)


def _sleep_or_give_up(interval: float, deadline: float | None, saga: dict[str, Any]) -> None:
    if deadline is not None and time.monotonic() + interval > deadline:
        raise ApiError(f"saga {saga.get('saga_id')} is still {saga.get('status')}: gave up")
    time.sleep(interval)


@click.command("list")
@click.option("--status", "status_", metavar="STATUS", help="e.g. RUNNING, COMPENSATION_FAILED.")
@click.option("--type", "saga_type", help="Saga type (workflow name).")
@click.option("--correlation-id")
@click.option("--created-after", metavar="ISO-8601")
@click.option("--created-before", metavar="ISO-8601")
@click.option("--page", type=click.IntRange(min=1), default=None, help="Page number (from 1).")
@click.option("--page-size", type=click.IntRange(min=1), default=None, help="At most 500.")
@client_options
def list_sagas(
    status_: str | None,
    saga_type: str | None,
    correlation_id: str | None,
    created_after: str | None,
    created_before: str | None,
    page: int | None,
    page_size: int | None,
    url: str,
    api_key: str | None,
    as_json: bool,
) -> None:
    """List sagas, newest first (GET /saga); the filters combine with AND."""
    params = {
        "status": status_,
        "saga_type": saga_type,
        "correlation_id": correlation_id,
        "created_after": created_after,
        "created_before": created_before,
        "page": page,
        "page_size": page_size,
    }
    _, data = Api(url, api_key).call("GET", "/saga", params=params)
    if as_json:
        print_json(data)
        return
    from rich.table import Table

    items = data.get("items", [])
    table = Table(box=None)
    table.add_column("saga_id", no_wrap=True)
    table.add_column("type")
    table.add_column("status", no_wrap=True)
    table.add_column("current step")
    table.add_column("created", no_wrap=True)
    table.add_column("correlation_id")
    for saga in items:
        table.add_row(
            str(saga.get("saga_id")),
            str(saga.get("saga_type")),
            styled(saga.get("status")),
            saga.get("current_step") or "",
            timestamp(saga.get("created_at")),
            saga.get("correlation_id") or "",
        )
    out = console()
    out.print(table)
    out.print(
        f"{len(items)} of {data.get('total', len(items))} "
        f"(page {data.get('page', 1)}, page size {data.get('page_size', '?')})"
    )


@click.command()
@click.argument("saga_id")
@click.option("--reason", help="Why: kept in the saga's history with your key's name.")
@client_options
def compensate(
    saga_id: str, reason: str | None, url: str, api_key: str | None, as_json: bool
) -> None:
    """Undo a saga (POST /saga/{id}/compensate): cancel it if PENDING, compensate it if
    RUNNING or COMPLETED, retry the compensation if COMPENSATION_FAILED.

    A refusal (e.g. 409: already compensating) is one line on stderr, exit code 1.
    """
    body = {"reason": reason} if reason else {}
    path = "/saga" + url_path(saga_id) + "/compensate"
    _, saga = Api(url, api_key, one_line=True).call("POST", path, body=body)
    report(saga, f"Compensation requested: the saga is {saga.get('status')}.", as_json)
