"""The operator dashboard at `/ui`: overview, list, one saga, and the repair actions.

Server-rendered (Jinja, autoescaped: payloads and errors are attacker-controlled text), live
through htmx polling partials (`static/htmx.min.js`, vendored: `static/VENDORED.md`). HTTP
only, like the rest of `app/`: reads and actions go through the engine.

Logging in takes an API key (`app.auth.identify`); the session cookie keeps only the key's
fingerprint, checked again on every request, so removing a key from `SAGA_API_KEYS` ends its
sessions. Every form carries a CSRF token (Flask-WTF), checked for the dashboard's POSTs only:
the JSON API, authenticated by headers, is not affected. docs/operations.md, "The dashboard",
has the settings.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from flask import Flask

from app.ui.views import blp, csrf

SESSION_COOKIE = "saga_ui_session"
SECRET_LABEL = b"saga-orchestrator/ui-session-secret/v1"


def init_ui(app: Flask) -> None:
    """Configure the session and CSRF for the dashboard, and register it under /ui."""
    hours = int(app.config.get("UI_SESSION_HOURS", 8))
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = derived_secret(app.config.get("API_KEYS") or [])
    app.config.update(
        SESSION_COOKIE_NAME=SESSION_COOKIE,
        SESSION_COOKIE_PATH="/ui",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=bool(app.config.get("UI_SECURE_COOKIE", False)),
        PERMANENT_SESSION_LIFETIME=timedelta(hours=hours),
        # CSRF is checked by the dashboard's POSTs only (views.gate), never by the JSON API;
        # a token lives as long as the session.
        WTF_CSRF_CHECK_DEFAULT=False,
        WTF_CSRF_TIME_LIMIT=hours * 3600,
    )
    csrf.init_app(app)
    app.register_blueprint(blp)


def derived_secret(entries: list[str]) -> str:
    """The session-signing secret when SAGA_SECRET_KEY is not set: the same in every gunicorn
    worker and replica given the same keys, and not computable without all of them. It is
    not the fingerprint a session holds (a SHA-256 of one key), which a cookie shows.
    Changing the keys changes it, which logs everyone out."""
    digest = hashlib.sha256(SECRET_LABEL)
    for entry in sorted(entries):
        raw = entry.encode()
        digest.update(len(raw).to_bytes(4, "big") + raw)
    return digest.hexdigest()
