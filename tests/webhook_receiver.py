"""A webhook receiver for tests: a real HTTP server on 127.0.0.1 that verifies every request
with the `standardwebhooks` library's own verifier, against each secret it is told, and
records what it got. Behaviour by path:
  /ok/...          200
  /fail/<n>/...    503 for the first n requests of each webhook-id, then 200
  /down/...        503 while `receiver.down` is set, else 200
  /busy/<n>/...    429 with Retry-After: 1 for the first n requests of each webhook-id
  /hold/...        the first request of each webhook-id waits until `receiver.release` is
                   set (or 30 s), then 200; later ones answer 200 at once
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified_by: list[str] = field(default_factory=list)  # the secrets that verify it
    errors: dict[str, str] = field(default_factory=dict)  # secret -> why it did not verify
    status: int = 0  # what the receiver answered (0: not yet, or the sender went away)
    at: float = 0.0

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


class WebhookReceiver:
    def __init__(self, secrets: list[str]) -> None:
        self.secrets = secrets
        self.received: list[Received] = []
        self.down = threading.Event()
        self.release = threading.Event()
        self.holding = threading.Event()  # a /hold/ request is being held
        self._lock = threading.Lock()
        self._seen: Counter[str] = Counter()
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()

    def of(self, saga_id: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.headers.get("x-saga-id") == saga_id]

    def wait(
        self, saga_id: str, count: int = 1, timeout: float = 20, answered: int = 200
    ) -> list[Received]:
        """The requests of `saga_id` once `count` of them were answered `answered`."""
        deadline = time.time() + timeout
        while True:
            got = self.of(saga_id)
            if sum(1 for r in got if r.status == answered) >= count:
                return got
            if time.time() > deadline:
                raise AssertionError(f"{len(got)} webhook requests for {saga_id}: {got}")
            time.sleep(0.02)

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        body = request.get_data()
        headers = {k.lower(): v for k, v in request.headers.items()}
        got = Received(request.path, headers, body, at=time.time())
        for secret in self.secrets:
            try:
                Webhook(secret).verify(body, headers)
                got.verified_by.append(secret)
            except WebhookVerificationError as exc:
                got.errors[secret] = str(exc)
        with self._lock:
            self.received.append(got)
            self._seen[headers.get("webhook-id", "")] += 1
            seen = self._seen[headers.get("webhook-id", "")]
        got.status = self._answer(request.path, seen)
        response = Response('{"ok": true}', status=got.status, mimetype="application/json")
        if got.status == 429:
            response.headers["Retry-After"] = "1"
        return response(environ, start_response)

    def _answer(self, path: str, seen: int) -> int:
        parts = path.strip("/").split("/")
        if parts[0] == "fail" and seen <= int(parts[1]):
            return 503
        if parts[0] == "busy" and seen <= int(parts[1]):
            return 429
        if parts[0] == "down" and self.down.is_set():
            return 503
        if parts[0] == "hold" and seen == 1:
            self.holding.set()
            self.release.wait(30)
        return 200
