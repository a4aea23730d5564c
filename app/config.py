"""The API's own settings, read from the environment (the engine's are in sagas.settings)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from sagas.errors import ConfigurationError


def from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Flask config keys from SAGA_* variables (README lists them)."""
    env = os.environ if environ is None else environ
    return {
        "API_KEYS": [k.strip() for k in env.get("SAGA_API_KEYS", "").split(",") if k.strip()],
        "ALLOW_ANONYMOUS": env.get("SAGA_ALLOW_ANONYMOUS", "").lower() in ("1", "true", "yes"),
        "MAX_CONTENT_LENGTH": _int(env, "SAGA_MAX_BODY_BYTES", 1024 * 1024),
        "IDEMPOTENCY_TTL_SECONDS": _int(env, "SAGA_IDEMPOTENCY_TTL_SECONDS", 24 * 3600),
        "WORKER_HEARTBEAT_SECONDS": _int(env, "SAGA_WORKER_HEARTBEAT_SECONDS", 15),
        # The dashboard (app/ui); without SAGA_SECRET_KEY its secret derives from the keys.
        "SECRET_KEY": env.get("SAGA_SECRET_KEY") or None,
        "UI_SECURE_COOKIE": env.get("SAGA_UI_SECURE_COOKIE", "").lower() in ("1", "true", "yes"),
        "UI_SESSION_HOURS": _int(env, "SAGA_UI_SESSION_HOURS", 8),
    }


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "")
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigurationError(f"{name}={raw!r} must be a positive integer")
    return int(raw)
