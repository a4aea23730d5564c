"""Completion webhooks: a signed POST to a registered service when a saga reaches COMPLETED,
COMPENSATED or COMPENSATION_FAILED (docs/observability.md, "Completion webhooks").

- **Target**: `{"service", "path"}`, a service of `SAGA_SERVICES` and a fixed path on it,
  never a URL: from the definition's `webhook`, else the workflow template's, else
  `SAGA_WEBHOOK`. It is stored with the saga (field `wh`).
- **Outbox**: the transition that reaches a final status writes the entry in the same Lua
  script (lua/lib.lua `flush_outbox`), with a snapshot of the saga as it leaves it. Nothing
  is lost if a process dies after that: the entry is due in `<prefix>webhooks:due`, and the
  sweep sends it again once its claim or retry countdown has passed.
- **Delivery**: `deliver` (the thin Celery task `tasks/webhooks.py`) claims the entry (a
  lease that ends after the attempt's hard time limit), signs the body with every secret of
  the service (Standard Webhooks, the `standardwebhooks` library: `webhook-id`,
  `webhook-timestamp`, `webhook-signature`), POSTs it and records the outcome: delivered
  (any 2xx: the entry is deleted) or failed (retried with exponential backoff and jitter),
  until `SAGA_WEBHOOK_MAX_SECONDS` after the status was reached; then it is a dead letter,
  listed and retryable through the API. The `webhook-id` and the body never change across
  attempts, so receivers de-duplicate on the id. At least once: a receiver may see an id
  twice.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any

import httpx
from standardwebhooks.webhooks import Webhook

from sagas import errors
from sagas.execution import backoff
from sagas.log import bound
from sagas.records import document, dumps, iso, text
from sagas.webhook_target import WebhookTarget, parse_target

if TYPE_CHECKING:
    from sagas.engine import SagaEngine

log = logging.getLogger("sagas.webhooks")

MAX_ERROR = 500  # characters of an attempt's error kept on the entry
SCRIPTS = ("webhook_claim", "webhook_result", "webhook_redrive", "webhook_retry", "webhook_expire")
REDRIVE_BATCH = 500  # outbox entries one sweep sends again at most


def body_of(fields: Mapping[str, str]) -> dict[str, Any]:
    """The delivery's body from the entry's snapshot of the saga hash: the same for every
    attempt. Standard Webhooks' shape: `type`, `timestamp` (when the saga reached the
    status), `data` (the saga's summary: no payload, no step outputs)."""
    snapshot = json.loads(fields["saga_hash"])
    doc = document({**snapshot, "payload": "{}"})
    status = fields["status"]
    steps = [
        {
            "name": step["name"],
            "status": step["status"],
            "attempts": step["attempts"],
            "uncertain": step["uncertain"],
            "error": step["error"],
            "started_at": step["started_at"],
            "finished_at": step["finished_at"],
            "compensation": None
            if step["compensation"] is None
            else {
                "status": step["compensation"]["status"],
                "attempts": step["compensation"]["attempts"],
                "error": step["compensation"]["error"],
            },
        }
        for step in doc["steps"]
    ]
    return {
        "type": f"saga.{status.lower()}",
        "timestamp": iso(snapshot["updated"]),
        "data": {
            "saga_id": doc["saga_id"],
            "saga_type": doc["saga_type"],
            "status": status,
            "version": doc["version"],
            "correlation_id": doc["correlation_id"],
            "created_at": doc["created_at"],
            "updated_at": doc["updated_at"],
            "finished_at": doc["finished_at"],
            "failure": doc["failure"],
            "compensation_failure": doc["compensation_failure"],
            "rerun_of": doc["rerun_of"],
            "steps": steps,
        },
    }


def sign(secrets: Sequence[str], webhook_id: str, at: datetime, body: bytes) -> str:
    """The `webhook-signature` header: one `v1,<base64>` per secret, space-separated, so a
    receiver holding either the old or the new secret verifies during a rotation."""
    return " ".join(Webhook(secret).sign(webhook_id, at, body) for secret in secrets)


@dataclass(frozen=True)
class Attempt:
    """What one `deliver` call did: `outcome` is delivered, retry (in `countdown` s), dead,
    busy (another execution holds the entry), gone (delivered or dead already) or stale."""

    outcome: str
    countdown: float = 0.0
    status_code: int | None = None


class Webhooks:
    """The outbox of completion webhooks: sending, the sweep's re-drive, dead letters."""

    def __init__(self, engine: SagaEngine) -> None:
        self.engine = engine
        self.store = engine.store
        self.settings = engine.settings
        self.keys = engine.store.keys
        self._scripts = {
            name: self.store.redis.register_script(
                resources.files("sagas").joinpath(f"lua/{name}.lua").read_text()
            )
            for name in SCRIPTS
        }
        self._client: httpx.Client | None = None
        self.store.on_webhooks = self.queued

    @property
    def lease_ms(self) -> int:
        """How long a claim holds an entry: the attempt's hard time limit (its task is killed
        then), after which the sweep may send it again."""
        return int(self.time_limit * 1000)

    @property
    def time_limit(self) -> float:
        return self.settings.webhook_timeout_seconds + self.settings.attempt_grace_seconds

    def default_target(self) -> WebhookTarget | None:
        """SAGA_WEBHOOK, checked like a definition's (a bad one stops the process)."""
        try:
            return parse_target(self.settings.webhook, "SAGA_WEBHOOK", self.settings)
        except errors.ValidationFailed as exc:
            raise errors.ConfigurationError(f"{exc.field}: {exc.message}") from None

    # --- sending --------------------------------------------------------------------------
    def queued(self, ids: Sequence[str]) -> None:
        """A transition queued these: send them now. Enqueueing is best effort (the entry is
        already durable: the sweep sends it when it is due)."""
        for webhook_id in ids:
            self._send(webhook_id, 0)

    def _send(self, webhook_id: str, countdown: float) -> None:
        try:
            self.engine.dispatcher.send_webhook(webhook_id, countdown, self.time_limit)
        except Exception as exc:  # the broker refused: the sweep will send it
            log.warning(
                "webhook not enqueued, the sweep will send it: %r",
                exc,
                extra={"webhook_id": webhook_id},
            )

    def deliver(self, webhook_id: str, token: str | None = None) -> Attempt:
        """One delivery attempt of outbox entry `webhook_id` by the execution `token` (its
        task id: a redelivery of the same task may take its claim over)."""
        token = token or uuid.uuid4().hex
        entry_key = self.keys.webhook(webhook_id)
        reply = self._scripts["webhook_claim"](
            keys=[entry_key, self.keys.webhooks_due], args=[token, self.lease_ms, webhook_id]
        )
        code = str(text(reply[0]))
        if code != "send":
            return Attempt(code)
        attempt = int(reply[1])
        fields = {str(text(k)): str(text(v)) for k, v in zip(reply[2::2], reply[3::2], strict=True)}
        target = json.loads(fields["target"])
        with bound(saga_id=fields["saga"], webhook_id=webhook_id):
            status_code, error, retry_after = self._post(webhook_id, target, fields)
            outcome = "delivered" if error is None else "failed"
            cap = self.settings.webhook_max_backoff_seconds
            wait = backoff(
                attempt,
                self.settings.webhook_backoff_seconds,
                cap,
                None if retry_after is None else min(retry_after, cap),
            )
            result = self._scripts["webhook_result"](
                keys=[entry_key, self.keys.webhooks_due, self.keys.webhooks_dead, self.keys.stats],
                args=[
                    token,
                    outcome,
                    (error or "")[:MAX_ERROR],
                    "" if status_code is None else status_code,
                    int(wait * 1000),
                    int(self.settings.webhook_max_seconds * 1000),
                    self.lease_ms,
                ],
            )
            recorded = str(text(result[0]))
            extra = {"attempt": attempt, "status_code": status_code, "service": target["service"]}
            if recorded == "delivered":
                log.info("webhook delivered", extra=extra)
            elif recorded == "retry":
                log.warning("webhook attempt failed, retry in %.1f s: %s", wait, error, extra=extra)
                self._send(webhook_id, wait)
                return Attempt("retry", wait, status_code)
            elif recorded == "dead":
                log.error(
                    "webhook is a dead letter after %d attempts: %s", attempt, error, extra=extra
                )
            return Attempt(recorded, 0.0, status_code)

    def _post(
        self, webhook_id: str, target: Mapping[str, str], fields: Mapping[str, str]
    ) -> tuple[int | None, str | None, float | None]:
        """POST the signed body: (status code or None, error or None when delivered, the
        receiver's Retry-After in seconds if it sent one)."""
        base = self.settings.services.get(target["service"])
        secrets = self.settings.webhook_secrets.get(target["service"])
        if base is None or not secrets:
            return None, f"service {target['service']!r} has no URL or no secret any more", None
        try:
            body = dumps(body_of(fields)).encode()
        except (KeyError, ValueError, TypeError) as exc:  # a bug: end as a dead letter
            return None, f"the body could not be built: {exc!r}", None
        at = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "user-agent": "saga-orchestrator",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": sign(secrets, webhook_id, at, body),
            "x-saga-id": fields["saga"],
        }
        try:
            response = self._http().post(base + target["path"], content=body, headers=headers)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}", None
        if 200 <= response.status_code < 300:
            return response.status_code, None, None
        retry_after = response.headers.get("retry-after", "")
        wait = float(retry_after) if retry_after.isdigit() else None
        return response.status_code, f"HTTP {response.status_code}", wait

    def _http(self) -> httpx.Client:
        if self._client is None:
            # No redirects: the target is the registered service, nowhere else.
            self._client = httpx.Client(
                timeout=self.settings.webhook_timeout_seconds, follow_redirects=False
            )
        return self._client

    # --- the sweep, dead letters, figures -------------------------------------------------
    def redrive(self) -> int:
        """Send again the entries whose claim or retry countdown passed without a result (a
        lost message, a killed worker, a broker that refused the first send)."""
        ids = self._scripts["webhook_redrive"](
            keys=[self.keys.webhooks_due], args=[REDRIVE_BATCH, self.lease_ms]
        )
        for webhook_id in ids:
            log.warning("sweep: webhook re-driven", extra={"webhook_id": str(text(webhook_id))})
            self._send(str(text(webhook_id)), 0)
        return len(ids)

    def expire(self, horizon_ms: int) -> int:
        """Delete dead letters that died before `horizon_ms` (SAGA_RETENTION_SECONDS ago)."""
        deleted = self._scripts["webhook_expire"](
            keys=[self.keys.webhooks_dead],
            args=[horizon_ms, REDRIVE_BATCH, self.keys.webhook("")],
        )
        return int(deleted)

    def dead_letters(self, limit: int) -> list[dict[str, Any]]:
        """Dead letters, newest first: what was tried, never the body's secrets (there are
        none in it) nor any signature."""
        ids = self.store.redis.zrevrange(self.keys.webhooks_dead, 0, limit - 1)
        pipe = self.store.redis.pipeline(transaction=False)
        for webhook_id in ids:
            pipe.hgetall(self.keys.webhook(str(text(webhook_id))))
        items = []
        for raw in pipe.execute():
            if not raw:
                continue
            f = {str(text(k)): str(text(v)) for k, v in raw.items()}
            target = json.loads(f["target"])
            items.append(
                {
                    "id": f["id"],
                    "saga_id": f["saga"],
                    "status": f["status"],
                    "service": target["service"],
                    "path": target["path"],
                    "attempts": int(f.get("attempts") or 0),
                    "last_error": f.get("last_error") or None,
                    "last_status_code": int(f["last_code"]) if f.get("last_code") else None,
                    "created_at": iso(f["created"]),
                    "dead_at": iso(f.get("dead_at")),
                    "retries": int(f.get("retries") or 0),
                }
            )
        return items

    def retry(self, webhook_id: str, actor: str = "") -> None:
        """Send a dead letter again, with a fresh SAGA_WEBHOOK_MAX_SECONDS (same id, same
        body). Raises `WebhookNotFound`, or `WebhookNotDead` if it is not a dead letter."""
        reply = self._scripts["webhook_retry"](
            keys=[self.keys.webhook(webhook_id), self.keys.webhooks_due, self.keys.webhooks_dead],
            args=[actor, self.lease_ms],
        )
        code = str(text(reply[0]))
        if code == "missing":
            raise errors.WebhookNotFound(webhook_id)
        if code == "conflict":
            raise errors.WebhookNotDead(webhook_id, str(text(reply[1])))
        log.info("webhook dead letter retried", extra={"webhook_id": webhook_id, "actor": actor})
        self._send(webhook_id, 0)

    def counts(self) -> dict[str, int]:
        """Outbox entries waiting to be delivered (dead letters excluded) and dead letters."""
        pipe = self.store.redis.pipeline(transaction=False)
        pipe.zcard(self.keys.webhooks_due)
        pipe.zcard(self.keys.webhooks_dead)
        pending, dead = pipe.execute()
        return {"pending": int(pending), "dead_letters": int(dead)}
