"""API keys (`SAGA_API_KEYS`): `X-API-Key: <key>` or `Authorization: Bearer <key>`."""

from __future__ import annotations

import hmac
import logging

from flask import Flask, current_app, g, jsonify, request
from flask.typing import ResponseReturnValue

from sagas.errors import ConfigurationError

log = logging.getLogger("app.auth")

# Open to anyone: liveness for load balancers, and the API's own documentation.
PUBLIC = (("GET", "/health/"), ("GET", "/openapi.json"))
PUBLIC_PREFIXES = ("/docs",)


def init_auth(app: Flask) -> None:
    """Refuse to start without keys unless anonymous access was switched on explicitly."""
    if not app.config["API_KEYS"]:
        if not app.config["ALLOW_ANONYMOUS"]:
            raise ConfigurationError(
                "SAGA_API_KEYS is empty: set API keys, or SAGA_ALLOW_ANONYMOUS=1 to run "
                "without authentication (local development only)"
            )
        log.warning("SAGA_ALLOW_ANONYMOUS is on: the API accepts requests without a key")
    app.before_request(_check_key)


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
    keys: list[str] = current_app.config["API_KEYS"]
    presented = _presented_key()
    if not keys and current_app.config["ALLOW_ANONYMOUS"]:
        g.client = "anonymous"
        return None
    valid = False
    if presented is not None:
        for key in keys:  # compare with every key, in constant time each
            valid |= hmac.compare_digest(presented.encode(), key.encode())
    if not valid:
        body = {
            "code": 401,
            "status": "Unauthorized",
            "message": "missing or invalid API key: send `X-API-Key: <key>` or "
            "`Authorization: Bearer <key>`",
        }
        return jsonify(body), 401, {"WWW-Authenticate": 'Bearer realm="saga-orchestrator"'}
    g.client = presented
    return None
