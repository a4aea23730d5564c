"""How the dashboard shows things: JSON, times, a saga at a glance, pages. No Flask here."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sagas.model import SagaRecord

FINAL = ("COMPLETED", "COMPENSATED", "COMPENSATION_FAILED")  # nothing moves without a person
UNDOING = ("COMPENSATING", "COMPENSATED", "COMPENSATION_FAILED")
SHOWN_JSON_CHARS = 20_000


def pretty(value: Any, limit: int = SHOWN_JSON_CHARS) -> str:
    """Indented JSON for a <pre> (escaped by the template); cut after `limit` characters."""
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)
    if len(text) > limit:
        return f"{text[:limit]}\n… ({len(text) - limit} more characters: see the JSON API)"
    return text


def evidence(value: Any) -> str:
    """A health component's evidence value as a person reads it."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, list):
        return ", ".join(evidence(v) for v in value) or "none"
    if isinstance(value, dict):
        return ", ".join(f"{k} {evidence(v)}" for k, v in value.items()) or "none"
    return str(value)


def parse_iso(stamp: str | None) -> datetime | None:
    if not stamp:
        return None
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def when(stamp: str | None) -> str:
    """`2026-05-01 12:00:03.123 UTC` for an ISO-8601 UTC stamp; `—` for none."""
    moment = parse_iso(stamp)
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def ago(stamp: str | None, now: datetime | None = None) -> str:
    """How long ago, roughly: `45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`."""
    moment = parse_iso(stamp)
    if moment is None:
        return "—"
    seconds = max(0, int(((now or datetime.now(UTC)) - moment).total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours = minutes // 60
    if hours < 48:
        return f"{hours} h {minutes % 60} min"
    return f"{hours // 24} d {hours % 24} h"


def duration(start: str | None, end: str | None) -> str:
    """The time between two stamps (`1.234 s`), or empty when either is missing."""
    a, b = parse_iso(start), parse_iso(end)
    if a is None or b is None:
        return ""
    return f"{(b - a).total_seconds():.3f} s"


@dataclass
class Glance:
    """A saga at a glance: what ran, what was undone, what is left, what stands."""

    ran: list[str] = field(default_factory=list)  # steps that took (or may have taken) effect
    undone: list[str] = field(default_factory=list)
    undo_failed: list[str] = field(default_factory=list)
    left_to_undo: list[str] = field(default_factory=list)
    standing: list[str] = field(default_factory=list)  # effects left in place on purpose
    left_to_run: list[str] = field(default_factory=list)


def glance(record: SagaRecord) -> Glance:
    out = Glance()
    undoing = record["status"] in UNDOING
    for step in record["steps"]:
        name, comp = step["name"], step["compensation"]
        took_effect = step["status"] == "COMPLETED" or (
            step["uncertain"] and step["status"] not in ("PENDING", "SKIPPED")
        )
        if comp is not None and comp["status"] in UNDOING:
            took_effect = True  # being undone or undone: it had taken effect
        if took_effect:
            out.ran.append(name + (" (uncertain)" if step["uncertain"] else ""))
        if step["status"] == "PENDING" and not undoing:
            out.left_to_run.append(name)
        if not undoing or not took_effect:
            continue
        if comp is None:
            out.standing.append(f"{name} (no compensation defined)")
        elif comp["status"] == "COMPENSATED":
            out.undone.append(name + (" (resolved by hand)" if comp["resolved_by_hand"] else ""))
        elif comp["status"] == "COMPENSATION_FAILED":
            out.undo_failed.append(name)
        elif comp["status"] in ("PENDING", "COMPENSATING"):
            out.left_to_undo.append(name)
        elif comp["status"] == "SKIPPED":
            out.standing.append(f"{name} (undo skipped)")
    return out


# Entries a retrying step or compensation writes per attempt: a long run of them is folded.
REPEATED_EVENTS = frozenset(
    {"step_attempt", "step_retry", "compensation_attempt", "compensation_retry"}
)
FOLD_KEEP = 2  # entries shown at each end of a folded run


@dataclass(frozen=True)
class Fold:
    """Consecutive retry entries of one step, shown collapsed (all of them, on demand)."""

    step: str | None
    entries: list[dict[str, Any]]


def fold_history(entries: list[dict[str, Any]]) -> list[dict[str, Any] | Fold]:
    """The history with each long run of retry entries of one step (no person's action in
    it) folded in the middle: its first and last FOLD_KEEP entries stay in view."""
    out: list[dict[str, Any] | Fold] = []
    run: list[dict[str, Any]] = []

    def flush() -> None:
        if len(run) > 2 * FOLD_KEEP + 1:
            out.extend(run[:FOLD_KEEP])
            out.append(Fold(run[0].get("step"), run[FOLD_KEEP:-FOLD_KEEP]))
            out.extend(run[-FOLD_KEEP:])
        else:
            out.extend(run)
        run.clear()

    for entry in entries:
        repeated = entry["event"] in REPEATED_EVENTS and "actor" not in entry
        if run and not (repeated and entry.get("step") == run[0].get("step")):
            flush()
        if repeated:
            run.append(entry)
        else:
            out.append(entry)
    flush()
    return out


@dataclass(frozen=True)
class Paging:
    page: int
    page_size: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.page_size))

    @property
    def first_item(self) -> int:
        return 0 if self.total == 0 else (self.page - 1) * self.page_size + 1

    def last_item(self, shown: int) -> int:
        return 0 if shown == 0 else self.first_item + shown - 1
