"""How the client commands show sagas, histories and allowed actions (rich renderables).

Every function imports rich when called, never at import (see the package docstring).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

STATUS_STYLES = {
    "PENDING": "dim",
    "RUNNING": "cyan",
    "WAITING": "blue",
    "COMPLETED": "green",
    "FAILED": "red",
    "SKIPPED": "dim",
    "COMPENSATING": "yellow",
    "COMPENSATED": "yellow",
    "COMPENSATION_FAILED": "bold red",
}


def styled(status: Any) -> str:
    text = str(status or "")
    style = STATUS_STYLES.get(text)
    return f"[{style}]{text}[/]" if style else text


def compensation(comp: Mapping[str, Any] | None) -> str:
    if not comp:
        return "-"  # nothing to undo
    if comp.get("status") == "PENDING":
        return "[dim]not run[/]"  # only runs if the saga compensates
    return styled(comp.get("status"))


def timestamp(value: Any, clock_only: bool = False, millis: bool = False) -> str:
    """`2025-01-02T03:04:05.678Z` -> `2025-01-02 03:04:05` (or `03:04:05`, or with `.678`):
    enough to read."""
    if not value:
        return ""
    text = str(value).replace("T", " ").rstrip("Z")[: 23 if millis else 19]
    return text[11:] if clock_only and len(text) >= 19 else text


def saga_view(saga: Mapping[str, Any]) -> Any:
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table

    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold", no_wrap=True)
    head.add_column()
    head.add_row("saga", escape(f"{saga.get('saga_id')}  ({saga.get('saga_type')})"))
    head.add_row("status", styled(saga.get("status")))
    rows = (
        ("correlation", "correlation_id"),
        ("current step", "current_step"),
        ("created", "created_at"),
        ("finished", "finished_at"),
        ("rerun of", "rerun_of"),
    )
    for label, key in rows:
        if saga.get(key):
            value = saga[key]
            head.add_row(label, timestamp(value) if key.endswith("_at") else escape(str(value)))
    if saga.get("reruns"):
        head.add_row("reruns", escape(", ".join(str(r) for r in saga["reruns"])))
    if not saga.get("finished_at") and saga.get("deadline_at"):
        head.add_row("deadline", timestamp(saga["deadline_at"]))
    failure = saga.get("failure")
    if isinstance(failure, Mapping):
        where = f" at step {failure['step']}" if failure.get("step") else ""
        head.add_row(
            "failure",
            "[red]" + escape(f"{failure.get('reason')}{where}: {failure.get('message')}") + "[/]",
        )

    steps = Table("#", "step", "status", "attempts", "compensation", "started", "finished")
    steps.add_column("error", overflow="fold")
    for number, step in enumerate(saga.get("steps") or [], start=1):
        comp = step.get("compensation")
        error = step.get("error") or (comp.get("error") if comp else None) or ""
        steps.add_row(
            str(number),
            escape(str(step.get("name"))),
            styled(step.get("status")),
            str(step.get("attempts", "")),
            compensation(comp),
            timestamp(step.get("started_at"), clock_only=True),
            timestamp(step.get("finished_at"), clock_only=True),
            escape(str(error)[:200]),
        )
    return Group(head, steps)


def history_table(entries: list[Mapping[str, Any]]) -> Any:
    """One row per transition, oldest first; a person's action shows who (`actor`) and why
    (`message`), and what it changed (`data`, compact JSON) after the message."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(box=None)
    table.add_column("time", no_wrap=True)
    table.add_column("event", no_wrap=True)
    table.add_column("saga status", no_wrap=True)
    table.add_column("step")
    table.add_column("actor")
    table.add_column("message", overflow="fold")
    for entry in entries:
        message = escape(str(entry.get("message") or ""))
        if entry.get("data"):
            data = json.dumps(entry["data"], ensure_ascii=False, separators=(",", ":"))
            data = data if len(data) <= 300 else data[:299] + "…"
            message += ("  " if message else "") + "[dim]" + escape(data) + "[/]"
        table.add_row(
            timestamp(entry.get("at"), millis=True),
            escape(str(entry.get("event") or "")),
            styled(entry.get("status")),
            escape(str(entry.get("step") or "")),
            escape(str(entry.get("actor") or "")),
            message,
        )
    return table


def actions_table(actions: list[Mapping[str, Any]]) -> Any:
    """The allowed actions: what, on which step (1-based number and name), what it does."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(box=None)
    table.add_column("action", no_wrap=True)
    table.add_column("step", no_wrap=True)
    table.add_column("what it does")
    for action in actions:
        step = ""
        if action.get("step") is not None:
            step = f"{action.get('step_number')} {action['step']}"
        table.add_row(
            escape(str(action.get("action"))),
            escape(step),
            escape(str(action.get("description") or "")),
        )
    return table


def report(saga: Mapping[str, Any], headline: str, as_json: bool) -> None:
    """What an action answered: the saga document as JSON, or a line saying what was done,
    the saga, and how to watch it if it goes on."""
    from saga_cli.client import FINAL_STATUSES, console, print_json

    if as_json:
        print_json(saga)
        return
    out = console()
    out.print(headline, markup=False)
    out.print(saga_view(saga))
    if saga.get("status") not in FINAL_STATUSES:
        out.print(f"Watch it: saga-orchestrator status {saga.get('saga_id')} --watch", markup=False)
