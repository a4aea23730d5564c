"""API keys with names and roles (`SAGA_API_KEYS`).

A request presents its key as `X-API-Key: <key>` or `Authorization: Bearer <key>`. Each entry
of `SAGA_API_KEYS` (comma-separated) is either `NAME:ROLE:KEY` or a bare `KEY`:

- NAME (letters, digits, `.`, `_`, `-`) is who acts: it is recorded in the history of every
  repair action the key makes;
- ROLE is `admin` (everything), `operator` (reads and repair actions) or `reader` (reads);
- a bare KEY (the syntax before roles existed) is an `admin` named `key-<8 hex digits of
  its SHA-256>`: stable, and not the secret.

What a request needs: reads (GET, HEAD) need `reader`; views marked `@requires(OPERATOR)`
(the repair actions) need `operator`; everything else (starting, deleting, posting events)
needs `admin`. The dashboard (`app/ui`) asks `identify` and `allows` the same questions.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Flask, current_app, g, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.routing import RequestRedirect

from sagas.errors import ConfigurationError

log = logging.getLogger("app.auth")

READER, OPERATOR, ADMIN = "reader", "operator", "admin"
ROLES = (READER, OPERATOR, ADMIN)  # each may do what the ones before it may
_RANK = {role: rank for rank, role in enumerate(ROLES)}
_ENTRY = re.compile(r"^(?P<name>[A-Za-z0-9._-]{1,64}):(?P<role>[a-z]+):(?P<key>.+)$")
READ_METHODS = ("GET", "HEAD", "OPTIONS")

# Open to anyone: the service's address (name, version, links), liveness for load
# balancers, and the API's own documentation. The dashboard's pages check their own session
# (app/ui). A request that routing redirects (`/health` -> `/health/`) is let through too:
# the redirect reveals nothing, and the target is checked when it is asked for.
PUBLIC = (("GET", "/"), ("HEAD", "/"), ("GET", "/health/"), ("GET", "/openapi.json"))
PUBLIC_PREFIXES = ("/docs", "/ui")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Principal:
    """Who a key belongs to, and what it may do."""

    name: str
    role: str

    def may(self, needed: str) -> bool:
        return _RANK[self.role] >= _RANK[needed]


@dataclass(frozen=True)
class ApiKey:
    principal: Principal
    secret: bytes = b""

    def __repr__(self) -> str:  # never show the secret (logs, tracebacks)
        return f"ApiKey({self.principal.name!r}, {self.principal.role!r})"


ANONYMOUS = Principal("anonymous", ADMIN)


def parse_keys(entries: Iterable[str]) -> list[ApiKey]:
    """The keys of `SAGA_API_KEYS` entries; raises `ConfigurationError` naming the entry's
    position (never its secret) when one is malformed or two share a name."""
    keys: list[ApiKey] = []
    for position, raw in enumerate(entries, start=1):
        entry = raw.strip()
        if not entry:
            continue
        match = _ENTRY.match(entry)
        if match:
            name, role, secret = match["name"], match["role"], match["key"]
            if role not in ROLES:
                raise ConfigurationError(
                    f"SAGA_API_KEYS entry {position} ({name}): role {role!r} is not one of "
                    f"{', '.join(ROLES)}"
                )
        elif ":" in entry and _looks_named(entry):
            raise ConfigurationError(
                f"SAGA_API_KEYS entry {position}: write NAME:ROLE:KEY (NAME of letters, "
                "digits, '.', '_' or '-'; ROLE admin, operator or reader) or a bare KEY"
            )
        else:
            name, role, secret = f"key-{_digest(entry)[:8]}", ADMIN, entry
        if any(k.principal.name == name for k in keys):
            raise ConfigurationError(f"SAGA_API_KEYS entry {position}: name {name!r} twice")
        keys.append(ApiKey(Principal(name, role), secret.encode()))
    return keys


def _looks_named(entry: str) -> bool:
    """`a:b:c` shaped entries that failed the pattern: a typo, not a key with colons."""
    parts = entry.split(":")
    return len(parts) >= 3 and parts[1].isalpha() and parts[1].islower()


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def configured_keys(entries: Iterable[str], allow_anonymous: bool) -> list[ApiKey]:
    """The keys of `SAGA_API_KEYS`; raises `ConfigurationError` when they are malformed, or
    empty without `SAGA_ALLOW_ANONYMOUS` (`saga-orchestrator api` asks before it binds)."""
    keys = parse_keys(entries)
    if not keys and not allow_anonymous:
        raise ConfigurationError(
            "SAGA_API_KEYS is empty: set API keys (NAME:ROLE:KEY entries, or a bare KEY), "
            "or SAGA_ALLOW_ANONYMOUS=1 to run without authentication (local development only)"
        )
    return keys


def init_auth(app: Flask) -> None:
    """Refuse to start without keys unless anonymous access was switched on explicitly."""
    keys = configured_keys(app.config["API_KEYS"], app.config["ALLOW_ANONYMOUS"])
    app.extensions["saga_api_keys"] = keys
    if not keys:
        log.warning("SAGA_ALLOW_ANONYMOUS is on: the API accepts requests without a key")
    app.before_request(_check_key)


def identify(presented: str | None) -> Principal | None:
    """The principal of a presented key (compared with every key in constant time), the
    anonymous admin when no keys are configured and anonymous access is on, or None."""
    keys: list[ApiKey] = current_app.extensions["saga_api_keys"]
    if not keys:
        return ANONYMOUS if current_app.config["ALLOW_ANONYMOUS"] else None
    if presented is None:
        return None
    found = None
    candidate = presented.encode()
    for key in keys:
        if hmac.compare_digest(candidate, key.secret):
            found = key.principal
    return found


def key_fingerprint(presented: str) -> str:
    """What a session keeps instead of the key: its SHA-256 (a cookie never holds a key)."""
    return _digest(presented)


def identify_fingerprint(fingerprint: str) -> Principal | None:
    """The principal whose key has this fingerprint (a dashboard session), while that key is
    still configured: removing a key ends its sessions."""
    keys: list[ApiKey] = current_app.extensions["saga_api_keys"]
    if not keys:
        return ANONYMOUS if current_app.config["ALLOW_ANONYMOUS"] else None
    found = None
    for key in keys:
        if hmac.compare_digest(fingerprint, _digest(key.secret.decode())):
            found = key.principal
    return found


def requires(role: str) -> Callable[[F], F]:
    """Mark a view (function or MethodView method) as needing `role` (default: reads need
    `reader`, other methods `admin`)."""

    def mark(view: F) -> F:
        view.required_role = role  # type: ignore[attr-defined]
        return view

    return mark


def required_role() -> str:
    """The role the current request needs."""
    view = current_app.view_functions.get(request.endpoint or "")
    view_class = getattr(view, "view_class", None)
    handler = getattr(view_class, request.method.lower(), None) if view_class else view
    marked = getattr(handler, "required_role", None)
    if marked:
        return str(marked)
    return READER if request.method in READ_METHODS else ADMIN


def _presented_key() -> str | None:
    key = request.headers.get("X-API-Key")
    if key:
        return key
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def _check_key() -> ResponseReturnValue | None:
    if (request.method, request.path) in PUBLIC or request.path.startswith(PUBLIC_PREFIXES):
        return None
    if isinstance(request.routing_exception, RequestRedirect):
        return None
    presented = _presented_key()
    principal = identify(presented)
    if principal is None:
        body = {
            "code": 401,
            "status": "Unauthorized",
            "message": "missing or invalid API key: send `X-API-Key: <key>` or "
            "`Authorization: Bearer <key>`",
        }
        return jsonify(body), 401, {"WWW-Authenticate": 'Bearer realm="saga-orchestrator"'}
    needed = required_role()
    if not principal.may(needed):
        body = {
            "code": 403,
            "status": "Forbidden",
            "message": f"the key {principal.name!r} has the role {principal.role!r}; "
            f"this request needs {needed!r}",
        }
        return jsonify(body), 403
    g.principal = principal
    # Idempotency-Key claims are scoped to the key that made them (as before roles).
    g.client = presented if presented is not None else "anonymous"
    return None
