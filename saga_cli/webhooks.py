"""`saga-orchestrator webhooks dead-letters | retry ID`: completion webhooks that were not
delivered within SAGA_WEBHOOK_MAX_SECONDS, and sending one again (an `operator` key; the
same webhook-id and body, a fresh retry window). docs/observability.md has the details."""

from __future__ import annotations

import click

from saga_cli.client import Api, client_options, console, print_json, url_path


@click.group(short_help="Completion webhooks: dead letters, and sending one again.")
def webhooks() -> None:
    """Completion webhooks (docs/observability.md, "Completion webhooks")."""


@webhooks.command("dead-letters", short_help="Webhooks not delivered in time, newest first.")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@client_options
def dead_letters(limit: int, url: str, api_key: str | None, as_json: bool) -> None:
    """Webhooks that could not be delivered within SAGA_WEBHOOK_MAX_SECONDS
    (GET /webhooks/dead-letters): id, saga, status announced, target, attempts, last error."""
    from rich.markup import escape
    from rich.table import Table

    _, data = Api(url, api_key, one_line=True).call(
        "GET", "/webhooks/dead-letters", params={"limit": limit}
    )
    items = data.get("items") or []
    if as_json:
        print_json(data)
        return
    out = console()
    if not items:
        out.print("No dead letters: every webhook was delivered or is being retried.", markup=False)
        return
    table = Table(box=None)
    for column in ("id", "saga status", "target", "attempts", "last error", "dead since"):
        table.add_column(column, no_wrap=column != "last error")
    for item in items:
        table.add_row(
            escape(str(item.get("id"))),
            escape(str(item.get("status"))),
            escape(f"{item.get('service')} {item.get('path')}"),
            str(item.get("attempts")),
            escape(str(item.get("last_error") or "")),
            escape(str(item.get("dead_at") or "")),
        )
    out.print(table)
    out.print(
        f"Send one again: saga-orchestrator webhooks retry {items[0].get('id')}", markup=False
    )


@webhooks.command(short_help="Send a dead letter again (operator key).")
@click.argument("webhook_id")
@client_options
def retry(webhook_id: str, url: str, api_key: str | None, as_json: bool) -> None:
    """Send dead letter WEBHOOK_ID again (POST /webhooks/dead-letters/{id}/retry): same
    webhook-id and body, retried for SAGA_WEBHOOK_MAX_SECONDS from now."""
    path = "/webhooks/dead-letters" + url_path(webhook_id) + "/retry"
    _, data = Api(url, api_key, one_line=True).call("POST", path)
    if as_json:
        print_json(data)
        return
    console().print(f"Webhook {webhook_id} is being sent again.", markup=False)
