"""Turning the engine's requests into Celery chains of immutable signatures."""

from __future__ import annotations

from collections.abc import Sequence

from celery import chain
from celery.canvas import Signature


class CeleryDispatcher:
    """Enqueues steps and compensations as chains with a chain-level `link_error`. Every
    execution carries a hard time limit (Celery kills it past that), which the store counts
    on to know when an attempt in flight has provably ended, and its name for people as
    Celery's `shadow` name: Flower's task list and the worker's log lines show
    `user_registration/create_account` rather than `saga.step` (a retry keeps it: Celery
    copies it from the request; so does the chain, which carries each signature's options)."""

    def __init__(self, queue: str) -> None:
        self.queue = queue

    def run_steps(
        self,
        saga_id: str,
        indexes: Sequence[int],
        correlation_id: str,
        time_limits: Sequence[float],
        names: Sequence[str],
    ) -> None:
        from tasks.steps import on_step_error, run_step

        self._send(
            [
                run_step.si(saga_id, i, correlation_id).set(time_limit=limit, shadow=name)
                for i, limit, name in zip(indexes, time_limits, names, strict=True)
            ],
            on_step_error.s(),
        )

    def run_compensations(
        self,
        saga_id: str,
        indexes: Sequence[int],
        correlation_id: str,
        time_limit: float,
        names: Sequence[str],
    ) -> None:
        from tasks.steps import on_compensation_error, run_compensation

        self._send(
            [
                run_compensation.si(saga_id, i, correlation_id).set(
                    time_limit=time_limit, shadow=name
                )
                for i, name in zip(indexes, names, strict=True)
            ],
            on_compensation_error.s(),
        )

    def send_webhook(self, webhook_id: str, countdown: float, time_limit: float) -> None:
        from tasks.webhooks import deliver_webhook

        deliver_webhook.si(webhook_id).set(time_limit=time_limit).apply_async(
            countdown=countdown or None, queue=self.queue
        )

    def _send(self, signatures: list[Signature], errback: Signature) -> None:
        if not signatures:
            return
        # A one-element chain is sent as the signature itself (celery/celery#4498).
        work = signatures[0] if len(signatures) == 1 else chain(*signatures)
        work.apply_async(link_error=errback, queue=self.queue)
