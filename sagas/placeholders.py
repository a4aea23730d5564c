"""`{{payload.x}}`, `{{steps.<name>.output.y}}` and `{{saga.id}}`: finding and rendering them.

A string that is exactly one placeholder keeps the value's JSON type; inside a longer string
the value is rendered as text. In an HTTP path, substituted values are percent-encoded so a
value can never add segments, a query or a host; and a path segment holding a value is never
`.`, `..` (also percent-encoded, `%2e%2e`) or empty, which would reach another resource of
the service (HTTP clients resolve dot segments: `/invoices/..` is `/`).

Render errors (`RenderError`: `MissingValue`, `UnsafeValue`) name the placeholder; the engine
fails the step without making the call.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_SEGMENT = re.compile(r"^[A-Za-z0-9_-]+$")
SAGA_FIELDS = frozenset({"id", "correlation_id", "type"})


@dataclass(frozen=True)
class Reference:
    """One parsed placeholder. `root` is payload, steps or saga; `path` the segments after it."""

    text: str  # as written, e.g. "steps.a.output.id"
    root: str
    step: str | None  # for steps.<name>.output...
    path: tuple[str, ...]


class PlaceholderSyntaxError(ValueError):
    """The placeholder is not one of the three allowed forms."""


class RenderError(LookupError):
    """A placeholder could not be rendered; `text` is the placeholder, e.g. `payload.id`."""

    def __init__(self, text: str, message: str) -> None:
        super().__init__(message)
        self.text = text


class MissingValue(RenderError):
    """The referenced value does not exist at render time; `why` says where the lookup
    stopped (no output at all, or which field is missing and which ones exist)."""

    def __init__(self, text: str, why: str = "") -> None:
        message = f"placeholder {{{{{text}}}}} has no value"
        super().__init__(text, f"{message}: {why}" if why else message)
        self.why = why


class UnsafeValue(RenderError):
    """The value would make a path segment `.`, `..` or empty (another resource)."""

    def __init__(self, text: str, segment: str) -> None:
        super().__init__(
            text,
            f"placeholder {{{{{text}}}}} would make the path segment {segment!r}: "
            "'.', '..' and empty segments reach another resource of the service",
        )
        self.segment = segment


def is_dot_segment(segment: str) -> bool:
    """`.` or `..`, plain or percent-encoded (`%2e`, `.%2E`): a segment that walks the path."""
    return unquote(segment) in (".", "..")


def parse_reference(text: str) -> Reference:
    """Parse the inside of `{{...}}`; raise `PlaceholderSyntaxError` when it is not allowed."""
    parts = text.split(".")
    if not text or any(not _SEGMENT.match(p) for p in parts):
        raise PlaceholderSyntaxError(f"malformed placeholder {{{{{text}}}}}")
    root = parts[0]
    if root == "payload":
        if len(parts) < 2:
            raise PlaceholderSyntaxError("{{payload}} needs a field: {{payload.<field>}}")
        return Reference(text, root, None, tuple(parts[1:]))
    if root == "steps":
        if len(parts) < 3 or parts[2] != "output":
            raise PlaceholderSyntaxError(
                f"{{{{{text}}}}}: step references have the form {{{{steps.<name>.output...}}}}"
            )
        return Reference(text, root, parts[1], tuple(parts[3:]))
    if root == "saga":
        if len(parts) != 2 or parts[1] not in SAGA_FIELDS:
            raise PlaceholderSyntaxError(
                f"{{{{{text}}}}}: saga fields are {', '.join(sorted(SAGA_FIELDS))}"
            )
        return Reference(text, root, None, (parts[1],))
    raise PlaceholderSyntaxError(
        f"{{{{{text}}}}}: a placeholder starts with payload., steps. or saga."
    )


def iter_references(value: Any) -> Iterator[Reference]:
    """Every placeholder in a JSON value (strings, nested lists and objects; keys excluded)."""
    if isinstance(value, str):
        for match in PLACEHOLDER.finditer(value):
            yield parse_reference(match.group(1))
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from iter_references(item)
    elif isinstance(value, list):
        for item in value:
            yield from iter_references(item)


def lookup(ref: Reference, context: Mapping[str, Any]) -> Any:
    """The value `ref` points at in `context` (`payload`, `steps` name -> output, `saga`)."""
    if ref.root == "steps":
        steps = context["steps"]
        if steps.get(ref.step) is None:
            raise MissingValue(ref.text, f"step {ref.step!r} left no output")
        current = steps[ref.step]
        where = f"the output of step {ref.step!r}"
    else:
        current = context[ref.root]
        where = ref.root
    for segment in ref.path:
        if isinstance(current, Mapping) and segment in current:
            current = current[segment]
        elif isinstance(current, list) and segment.isdigit() and int(segment) < len(current):
            current = current[int(segment)]
        else:
            raise MissingValue(ref.text, _absent(where, segment, current))
        where = f"{where}.{segment}"
    if current is None and ref.root == "steps":
        raise MissingValue(ref.text, f"{where} is null")
    return current


def _absent(where: str, segment: str, value: Any) -> str:
    """Why `segment` cannot be read from `value` (at `where`), with what is there instead."""
    if isinstance(value, Mapping):
        fields = ", ".join(sorted(map(str, value))[:20]) or "none"
        return f"{where} has no field {segment!r} (its fields: {fields})"
    if isinstance(value, list):
        return f"{where} is a list of {len(value)}, without index {segment!r}"
    return f"{where} is {type(value).__name__}, not an object with {segment!r}"


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """Substitute placeholders in a JSON value; raise `MissingValue` naming the first gap."""
    if isinstance(value, str):
        whole = PLACEHOLDER.fullmatch(value)
        if whole:
            return lookup(parse_reference(whole.group(1)), context)
        return PLACEHOLDER.sub(
            lambda m: _as_text(lookup(parse_reference(m.group(1)), context)), value
        )
    if isinstance(value, Mapping):
        return {key: render(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, context) for item in value]
    return value


def render_path(path: str, context: Mapping[str, Any]) -> str:
    """Render an HTTP path; each substituted value is percent-encoded as one path segment.

    Raises `MissingValue`, or `UnsafeValue` when a segment (before the `?`) that holds a
    value renders as `.`, `..` (plain or percent-encoded) or nothing.
    """
    return _render_path(path, lambda ref: lookup(ref, context))


def check_path(path: str, context: Mapping[str, Any]) -> None:
    """Raise `UnsafeValue` if the values known now (`context`) make a segment of `path` unsafe.

    For validation before a saga exists: a value `context` lacks (a step's output, the saga
    id) stands for harmless text, so only a segment made of known values alone can fail here;
    the others are checked by `render_path` at run time.
    """

    def known(ref: Reference) -> Any:
        try:
            return lookup(ref, context)
        except (MissingValue, KeyError):
            return "x"

    _render_path(path, known)


def _render_path(path: str, resolve: Callable[[Reference], Any]) -> str:
    route, mark, query = path.partition("?")
    pieces: list[str] = []
    holders: dict[int, str] = {}  # segment index -> the first placeholder in it
    segment, position = 0, 0
    for match in PLACEHOLDER.finditer(route):
        literal = route[position : match.start()]
        segment += literal.count("/")
        ref = parse_reference(match.group(1))
        holders.setdefault(segment, ref.text)
        # quote(safe="") encodes '/', so a value never moves the segment boundaries
        pieces += [literal, quote(_as_text(resolve(ref)), safe="")]
        position = match.end()
    pieces.append(route[position:])
    rendered = "".join(pieces)
    for index, text in enumerate(rendered.split("/")):
        if index in holders and (not text or is_dot_segment(text)):
            raise UnsafeValue(holders[index], text)
    if not mark:
        return rendered
    rendered_query = PLACEHOLDER.sub(
        lambda m: quote(_as_text(resolve(parse_reference(m.group(1)))), safe=""), query
    )
    return f"{rendered}?{rendered_query}"
