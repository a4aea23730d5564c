"""A real HTTP service on 127.0.0.1 for tests, with a ledger of every request it received.

Behaviour is chosen by the path, so a saga definition says what each call will meet:
  /ok/...                      200 {"id": "<n>", "path": ..., "received": <body>}
  /status/<code>/...           answers <code>
  /flaky/<n>/<code>/...        <code> for the first n requests of each Idempotency-Key, then 200
  /slow/<seconds>/...          sleeps, then 200
  /switch/<name>/...           503 while `stub.down` holds <name>, else 200
  /idem/<any of the above>     an idempotent service: the first successful request of an
                               Idempotency-Key takes effect (`effect=True`) and its answer is
                               stored; repeats replay it (`effect=False`), one at a time per key
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response


@dataclass
class Call:
    """One request, recorded on arrival; `status` is filled in once answered (0 until then)."""

    method: str
    path: str
    idempotency_key: str | None
    saga_id: str | None
    correlation_id: str | None
    body: Any
    status: int
    at: float
    effect: bool = False  # under /idem/: this request took effect (not a replay, not failed)
    traceparent: str | None = None  # the W3C trace context the request carried
    done: float = 0.0  # when it was answered (its effect, if any, had happened by then)


class StubService:
    def __init__(self) -> None:
        self.ledger: list[Call] = []
        self.down: set[str] = set()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._seen: Counter[tuple[str, str | None]] = Counter()
        self._answers: dict[str, tuple[int, dict[str, Any]]] = {}
        self._key_locks: dict[str, threading.Lock] = {}
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> StubService:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()

    def calls(self, saga_id: str) -> list[Call]:
        """Requests that carried `X-Saga-Id: saga_id`, in arrival order."""
        with self._lock:
            return [c for c in self.ledger if c.saga_id == saga_id]

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        body = request.get_json(silent=True) if request.data else None
        call = Call(
            request.method,
            request.full_path.rstrip("?"),
            request.headers.get("Idempotency-Key"),
            request.headers.get("X-Saga-Id"),
            request.headers.get("X-Correlation-Id"),
            body,
            0,
            time.time(),
            traceparent=request.headers.get("traceparent"),
        )
        with self._lock:
            self.ledger.append(call)
        call.status, answer = self._answer(request, body, call)
        call.done = time.time()
        response = Response(json.dumps(answer), status=call.status, mimetype="application/json")
        return response(environ, start_response)

    def effect_calls(self, key: str) -> list[Call]:
        """The requests with this Idempotency-Key that took effect, in arrival order."""
        with self._lock:
            return [c for c in self.ledger if c.effect and c.idempotency_key == key]

    def effects(self, key: str) -> int:
        """How many requests with this Idempotency-Key took effect (0 or 1 if honoured)."""
        with self._lock:
            return sum(1 for c in self.ledger if c.effect and c.idempotency_key == key)

    def _answer(self, request: Request, body: Any, call: Call) -> tuple[int, dict[str, Any]]:
        path = request.path
        key = request.headers.get("Idempotency-Key")
        if not path.startswith("/idem/") or key is None:
            return self._behave(path, request, body)
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # one request per key at a time, as a real idempotent service
            if key in self._answers:
                return self._answers[key]
            status, answer = self._behave(path[len("/idem") :], request, body)
            if 200 <= status < 300:
                self._answers[key] = (status, answer)
                call.effect = True
            return status, answer

    def _behave(self, path: str, request: Request, body: Any) -> tuple[int, dict[str, Any]]:
        parts = path.strip("/").split("/")
        kind = parts[0]
        ok = {"id": f"r{next(self._ids)}", "path": path, "received": body}
        if kind == "status":
            return int(parts[1]), {"error": f"scripted {parts[1]}"}
        if kind == "flaky":
            times, code = int(parts[1]), int(parts[2])
            key = (path, request.headers.get("Idempotency-Key"))
            with self._lock:
                self._seen[key] += 1
                seen = self._seen[key]
            if seen <= times:
                return code, {"error": f"flaky {seen}/{times}"}
            return 200, ok
        if kind == "slow":
            time.sleep(float(parts[1]))
            return 200, ok
        if kind == "switch":
            if parts[1] in self.down:
                return 503, {"error": f"{parts[1]} is down"}
            return 200, ok
        return 200, ok
