"""A Flask decorator that puts an endpoint behind the barrier (needs Flask).

::

    from participant.flask import barrier_endpoint
    from participant.sql import SqlBarrier

    barrier = SqlBarrier(engine)

    @app.post("/reservations")
    @barrier_endpoint(barrier)
    def reserve(conn):                       # the barrier's Connection (or Session)
        conn.execute(insert(reservations).values(id=rid, units=units))
        return {"id": rid}, 201

The view gets, as its first argument, the handle its writes must go through so that they
commit with the barrier record: a SQLAlchemy Connection (SqlBarrier(engine)) or Session
(SqlBarrier(sessionmaker)), a `participant.redis.RedisTx` (RedisBarrier), or None
(MemoryBarrier); URL arguments follow as keywords.

What a request gets, by the `Idempotency-Key` header (`<saga_id>:<step>:<action|compensation>`):

- the first request of a key: the view's answer, stored with the writes if its status is
  below 400;
- a repeat: the stored answer again (same status, body, content type and `Location`);
- an action after its compensation was recorded: `cancelled_status` (409 by default)
  `{"error": ..., "barrier": "cancelled", ...}`; the view is not called;
- a compensation whose action was never applied: 200
  `{"barrier": "null_compensation", ...}`; the view is not called;
- a header that is not such a key: 400 `{"error": ...}`;
- no header: the view runs in a transaction of its own, without a barrier; or 400 with
  `require_key=True`.

Every answer under a key carries `Saga-Barrier: run | replay | cancelled | null_compensation`.

Why 409 for the late action: nothing was done, and saying so is the truth the orchestrator
can act on. A 2xx would make a caller still waiting for the action believe it happened;
the orchestrator takes a 409 as a certain failure (not retried, not compensated). It has
already compensated that step by then, so the answer only ends the late call.

An answer with status 400 or more is not stored: the view's writes are rolled back with
the barrier record (the view raised nothing, but an error answer must mean "no effect"),
so a later compensation of that key is a null compensation and a retry runs the view
again. An exception from the view rolls back too and propagates (Flask answers 500).
Stored answers must have a text body (JSON, as a rule); a streamed answer is refused.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import Response, current_app, jsonify, request

from participant.core import BarrierKey, Decision, InvalidKey, Outcome, Runner

__all__ = ["HEADER", "barrier_endpoint"]

HEADER = "Saga-Barrier"
KEPT_HEADERS = ("Location",)  # response headers stored and replayed with the body


class _NotStored(Exception):
    """Carries an error answer out of the barrier's transaction, which it rolls back."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def barrier_endpoint(
    barrier: Runner,
    *,
    require_key: bool = False,
    cancelled_status: int = 409,
    header: str = "Idempotency-Key",
) -> Callable[[Callable[..., Any]], Callable[..., Response]]:
    """Decorate a view to run behind `barrier` (a SqlBarrier with a bind, a RedisBarrier
    or a MemoryBarrier); see the module docstring for the answers."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Response]:
        @functools.wraps(view)
        def guarded(**kwargs: Any) -> Response:
            raw = request.headers.get(header, "").strip()
            key: BarrierKey | None = None
            if raw:
                try:
                    key = BarrierKey.parse(raw)
                except InvalidKey as exc:
                    return _error(400, str(exc))
            elif require_key:
                return _error(400, f"{header}: <saga_id>:<step>:<action|compensation> is required")
            answered: list[Response] = []

            def act(handle: Any) -> dict[str, Any]:
                response = current_app.make_response(view(handle, **kwargs))
                if response.status_code >= 400:
                    raise _NotStored(response)
                answered.append(response)
                return _freeze(response)

            try:
                outcome = barrier.call(key, act)
            except _NotStored as refused:
                return refused.response
            if key is None:
                return answered[-1]
            response = _answer(outcome, answered, cancelled_status)
            response.headers[HEADER] = outcome.decision.value
            return response

        return guarded

    return decorate


def _answer(outcome: Outcome, answered: list[Response], cancelled_status: int) -> Response:
    key = outcome.key
    assert key is not None
    if outcome.decision is Decision.RUN:
        return answered[-1]
    if outcome.decision is Decision.REPLAY:
        return _thaw(outcome.value)
    if outcome.decision is Decision.CANCELLED:
        response = jsonify(
            error=f"step {key.step!r} of saga {key.saga_id} was compensated before this "
            "action arrived: it was not applied",
            barrier="cancelled",
            saga_id=key.saga_id,
            step=key.step,
        )
        response.status_code = cancelled_status
        return response
    return jsonify(
        barrier="null_compensation",
        detail="no action was applied for this step: nothing to undo",
        saga_id=key.saga_id,
        step=key.step,
    )


def _freeze(response: Response) -> dict[str, Any]:
    if response.is_streamed:
        raise TypeError("a streamed response cannot be stored by the barrier")
    return {
        "status": response.status_code,
        "body": response.get_data(as_text=True),
        "content_type": response.content_type,
        "headers": {h: response.headers[h] for h in KEPT_HEADERS if h in response.headers},
    }


def _thaw(stored: Any) -> Response:
    response = Response(
        stored["body"], status=int(stored["status"]), content_type=stored["content_type"]
    )
    for name, value in stored.get("headers", {}).items():
        response.headers[name] = value
    return response


def _error(status: int, message: str) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    return response
