"""How the client commands show sagas (rich renderables).

Every function imports rich when called, never at import (see the package docstring).
"""

from __future__ import annotations

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
    )
    for label, key in rows:
        if saga.get(key):
            value = saga[key]
            head.add_row(label, timestamp(value) if key.endswith("_at") else escape(str(value)))
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
