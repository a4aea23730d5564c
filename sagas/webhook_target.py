"""A completion webhook's target: a registered service and a fixed path on it, never a URL
(sagas/webhooks.py sends them). Checked like a step's HTTP action: typed errors naming the
field (`webhook.service`, `webhook.path`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sagas import errors
from sagas.placeholders import is_dot_segment
from sagas.settings import Settings

# A webhook path is fixed (no placeholders, no query): URL path characters only.
_PATH = re.compile(r"^/[A-Za-z0-9\-._~!$&'()*+,;=:@%/]{0,1023}$")


@dataclass(frozen=True)
class WebhookTarget:
    service: str
    path: str

    def to_json(self) -> dict[str, str]:
        return {"service": self.service, "path": self.path}


def parse_target(raw: Any, where: str, settings: Settings) -> WebhookTarget | None:
    """Validate a webhook target (`where` names the field in errors: `webhook.service`).
    `None` means no webhook. Raises `InvalidDefinition` subclasses."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise errors.InvalidType(where, 'a JSON object {"service", "path"} (or null: none)')
    for key in raw:
        if key not in ("service", "path"):
            raise errors.InvalidValue(
                f"{where}.{key}", "unknown field: a webhook has a service and a path, no URL"
            )
    service = raw.get("service")
    if not isinstance(service, str):
        raise errors.MissingField(f"{where}.service", "a registered service's name")
    if service not in settings.services:
        known = ", ".join(sorted(settings.services)) or "none"
        raise errors.UnknownService(
            f"{where}.service", f"no registered service named {service!r} (registered: {known})"
        )
    if service not in settings.webhook_secrets:
        raise errors.InvalidValue(
            f"{where}.service",
            f"service {service!r} has no signing secret in SAGA_WEBHOOK_SECRETS "
            "(webhooks are always signed)",
        )
    path = raw.get("path")
    if not isinstance(path, str):
        raise errors.MissingField(f"{where}.path", "a path on the service, starting with '/'")
    if path.startswith("//") or not _PATH.match(path):
        raise errors.InvalidPath(
            f"{where}.path",
            "a fixed path starting with a single '/': URL path characters only, no query, "
            "no placeholders, at most 1024 characters",
        )
    if any(is_dot_segment(segment) for segment in path.split("/")[1:]):
        raise errors.InvalidPath(f"{where}.path", "dot segments ('.', '..') are not allowed")
    return WebhookTarget(service, path)
