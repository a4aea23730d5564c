"""The one place where request bodies are parsed as JSON (every endpoint, through webargs).

webargs' FlaskParser calls plain `json.loads` and turns only a `JSONDecodeError` into a 400:
a body nested too deep (RecursionError), an integer literal longer than Python's int-string
limit (ValueError), NaN, Infinity or 1e999 (accepted, and then unencodable later) and lone
surrogates such as "\\ud800" (not UTF-8: the worker could never send them) all went through
or became 500s. `parse` refuses them:

- malformed JSON, or JSON too deep to parse at all: 400;
- valid JSON that we refuse: 422 naming the field (`payload.items[3].id`);
- a body sent without `Content-Type: application/json` (curl's `-d` sends
  `application/x-www-form-urlencoded`): 415, instead of reading it as no body at all.

`MAX_JSON_DEPTH` bounds the nesting of a body: the body itself is level 1, so a saga
definition's payload may nest 62 levels below it. Redis's cjson refuses more than 1000, and
the engine walks values recursively, so far deeper documents would fail later, half-way.
"""

from __future__ import annotations

import json
import math
from typing import Any, NoReturn

import flask
from webargs import core
from webargs.flaskparser import FlaskParser, abort, is_json_request

MAX_JSON_DEPTH = 64


class _Refused:
    """What the decoder put in place of a number we refuse; the walk names its field."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class BodyRefused(ValueError):
    """Valid JSON that is refused: `field` is the flat path of the value, as in 422 bodies."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class TooDeep(ValueError):
    """JSON nested so deep that it cannot be parsed at all (Python's recursion limit)."""


def _constant(text: str) -> _Refused:  # NaN, Infinity, -Infinity
    return _Refused(f"{text} is not a number JSON allows (finite numbers only)")


def _float(text: str) -> float | _Refused:
    value = float(text)
    if math.isfinite(value):
        return value
    shown = text if len(text) <= 24 else f"{text[:20]}..."
    return _Refused(f"{shown} is out of range (finite numbers only, about ±1.8e308)")


def _int(text: str) -> int | _Refused:
    digits = len(text.lstrip("-"))
    if digits > 308:  # beyond a double: other JSON parsers (Redis's cjson) make it infinite
        return _Refused(f"an integer of {digits} digits is out of range (about ±1.8e308)")
    return int(text)


_DECODER = json.JSONDecoder(parse_float=_float, parse_int=_int, parse_constant=_constant)


def parse(data: bytes) -> Any:
    """The JSON value of a request body.

    Raises `json.JSONDecodeError` / `UnicodeDecodeError` for malformed input (an empty body
    is a `JSONDecodeError` with an empty `doc`, which webargs reads as "no body"), `TooDeep`,
    or `BodyRefused` naming the first refused value.
    """
    text = data.decode("utf-8")
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise TooDeep(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    _check(value)
    return value


def _check(root: Any) -> None:
    """Walk the value (without recursion): depth, refused numbers, unencodable strings."""
    stack: list[tuple[Any, str, int]] = [(root, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            _check_text(value, path)
        elif isinstance(value, _Refused):
            raise BodyRefused(path or "$", value.reason)
        elif isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise BodyRefused(path or "$", f"nested deeper than {MAX_JSON_DEPTH} levels")
            if isinstance(value, dict):
                items = []
                for key, item in value.items():
                    child = f"{path}.{_printable(key)}" if path else _printable(key)
                    _check_text(key, child)
                    items.append((item, child, depth + 1))
            else:
                items = [(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
            stack.extend(reversed(items))  # first problem first, in document order


def _check_text(text: str, path: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start : exc.end].encode("utf-8", "backslashreplace").decode()
        raise BodyRefused(
            path or "$", f"holds a lone surrogate ({bad}), which is not valid Unicode text"
        ) from None


def _printable(key: str) -> str:
    """A key for a field path; a lone surrogate shown as its escape (`\\ud800`)."""
    return key.encode("utf-8", "backslashreplace").decode("utf-8")


class JSONBodyParser(FlaskParser):  # type: ignore[misc]
    """webargs' Flask parser with `parse` as its JSON loader."""

    def _raw_load_json(self, req: flask.Request) -> Any:
        if not is_json_request(req):
            if req.get_data(cache=True):  # a body that would be silently ignored
                got = req.mimetype or "no Content-Type"
                abort(
                    415,
                    message=f"a request body must be JSON sent with `Content-Type: "
                    f"application/json` (got {got}); the body was not read",
                )
            return core.missing
        try:
            return parse(req.get_data(cache=True))
        except TooDeep as exc:
            _abort(400, "$", str(exc), f"malformed JSON body: {exc}")
        except BodyRefused as exc:
            _abort(422, exc.field, exc.message, f"invalid {exc.field}: {exc.message}")


def _abort(status: int, field: str, problem: str, message: str) -> NoReturn:
    abort(status, messages={"json": {field: [problem]}}, message=message)
    raise AssertionError("unreachable")  # pragma: no cover
