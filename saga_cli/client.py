"""The client commands' HTTP client, options and output helpers.

httpx and rich are imported inside the functions that use them (see the package docstring).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

import click

DEFAULT_URL = "http://127.0.0.1:8008"
FINAL_STATUSES = ("COMPLETED", "COMPENSATED", "COMPENSATION_FAILED")


class ApiError(click.ClickException):
    """An answer or a failure of the API, shown readably on stderr; exit code 1."""


class Api:
    """The saga API at `url`. With `one_line`, an error answer is described on one line
    (the API's message), as the repair commands print a refusal."""

    def __init__(
        self, url: str, api_key: str | None, timeout: float = 10.0, one_line: bool = False
    ) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.one_line = one_line

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        import httpx

        all_headers = {"Accept": "application/json", **(headers or {})}
        if self.api_key:
            all_headers["X-API-Key"] = self.api_key
        url = self.url + path
        try:
            response = httpx.request(
                method,
                url,
                json=body,
                params={k: v for k, v in (params or {}).items() if v is not None},
                headers=all_headers,
                timeout=self.timeout,
                follow_redirects=True,
            )
        except httpx.TimeoutException:
            raise ApiError(
                f"the saga API at {self.url} did not answer within {self.timeout:g} s"
            ) from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise click.BadParameter(f"{self.url!r}: {exc}", param_hint="--url") from None
        except httpx.TransportError as exc:
            raise ApiError(
                f"cannot reach the saga API at {self.url} ({exc or type(exc).__name__}); "
                "is it running? (set --url or SAGA_URL)"
            ) from None
        if response.status_code >= 400:
            raise ApiError(self._describe_error(method, path, response))
        if not response.content:
            return response.status_code, None
        try:
            return response.status_code, response.json()
        except ValueError:
            raise ApiError(
                f"{method} {url}: expected JSON, got {response.headers.get('content-type')}: "
                f"{response.text[:200]!r}"
            ) from None

    def _describe_error(self, method: str, path: str, response: Any) -> str:
        lines = [f"{method} {self.url}{path} answered {response.status_code}"]
        try:
            data = response.json()
        except ValueError:
            data = None
        if isinstance(data, dict):
            status = data.get("status") or response.reason_phrase
            message = data.get("message")
            lines[0] += f" {status}" + (f": {message}" if message else "")
            errors = [f"{where}: {what}" for where, what in flatten_errors(data.get("errors"))]
            if self.one_line and message:
                errors = []  # the API's message already names the field
            lines += ["  " + error for error in errors]
        else:
            lines[0] += f" {response.reason_phrase}"
            text = response.text.strip()
            if text:
                lines.append("  " + text[:300])
        if response.status_code == 401:
            lines.append(
                "  (send an API key with --api-key or SAGA_API_KEY)"
                if not self.api_key
                else "  (the API key was refused: check --api-key or SAGA_API_KEY)"
            )
        if self.one_line:
            text = lines[0]
            for line in lines[1:]:
                part = " ".join(line.split())
                text += (" " if part.startswith("(") else "; ") + part
            return " ".join(text.split())
        return "\n".join(lines)


def flatten_errors(errors: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """marshmallow's nested error dicts as `json.payload.email: Missing data ...` lines."""
    if isinstance(errors, dict):
        for key, value in errors.items():
            yield from flatten_errors(value, f"{where}.{key}" if where else str(key))
    elif isinstance(errors, list) and all(isinstance(e, str) for e in errors):
        yield where or "error", " ".join(errors)
    elif isinstance(errors, list):
        for index, value in enumerate(errors):
            yield from flatten_errors(value, f"{where}[{index}]")
    elif errors not in (None, "", {}):
        yield where or "error", str(errors)


def client_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--json", "as_json", is_flag=True, help="Print the API's JSON instead of tables."
    )(f)
    f = click.option(
        "--api-key",
        envvar="SAGA_API_KEY",
        show_envvar=True,
        help="API key (sent as X-API-Key).",
    )(f)
    f = click.option(
        "--url",
        envvar="SAGA_URL",
        show_envvar=True,
        default=DEFAULT_URL,
        show_default=True,
        help="Base URL of the saga API.",
    )(f)
    return f


def url_path(*parts: str) -> str:
    """`/a/b` with each part quoted (an id or a step name never adds a path segment)."""
    return "".join("/" + quote(p, safe="") for p in parts)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def console() -> Any:
    """A rich console; piped or logged, tables take their natural width instead of 80."""
    from rich.console import Console

    out = Console(highlight=False)
    if not out.is_terminal:
        out = Console(highlight=False, width=max(out.width, 160))
    return out


def json_object(text: str, what: str, param_hint: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"{what} is not valid JSON: {exc}", param_hint=param_hint
        ) from None
    if not isinstance(value, dict):
        raise click.BadParameter(f"{what} must be a JSON object", param_hint=param_hint)
    return value
