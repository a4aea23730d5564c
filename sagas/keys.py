"""Every key name of the Redis store, in one place (docs/design.md, "What Redis holds")."""

from __future__ import annotations

import hashlib
import uuid

from sagas.model import SagaStatus


class Keys:
    """Every key name of the store, in one place."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.timers = f"{prefix}timers"
        self.stats = f"{prefix}stats"
        self.finished = f"{prefix}finished"
        self.all = f"{prefix}idx:all"
        self.workers = f"{prefix}workers"  # worker hostname -> last heartbeat (epoch ms)
        self.event_consumers = f"{prefix}events:consumers"  # consumer -> last beat (epoch ms)
        self.sweep = f"{prefix}sweep"  # the last completed sweep: at, took_ms, count
        self.definitions = f"{prefix}defs"  # digest -> how many sagas use the definition
        self.events = f"{prefix}stream:events"  # incoming: replies and triggers
        self.commands = f"{prefix}stream:commands"  # outgoing: event steps' commands
        self.unmatched = f"{prefix}stream:unmatched"  # events no saga awaited
        self.dead = f"{prefix}stream:dead"  # events that failed too often (poison)
        # Completion webhooks (sagas/webhooks.py; lua/lib.lua flush_outbox writes them):
        self.webhooks_due = f"{prefix}webhooks:due"  # id -> when the sweep sends it (ms)
        self.webhooks_dead = f"{prefix}webhooks:dead"  # id -> when it became a dead letter
        # Registered workflows (sagas/catalog.py) and schedules (sagas/schedules.py):
        self.workflows = f"{prefix}workflows"  # set of workflow names
        self.schedules = f"{prefix}schedules"  # set of schedule ids

    def saga(self, saga_id: str) -> str:
        return f"{self.prefix}{{{saga_id}}}"

    def history(self, saga_id: str) -> str:
        return f"{self.prefix}{{{saga_id}}}:history"

    def status(self, status: str) -> str:
        return f"{self.prefix}idx:status:{status}"

    def saga_type(self, saga_type: str) -> str:
        return f"{self.prefix}idx:type:{saga_type}"

    def type_status(self, saga_type: str, status: str) -> str:
        """Sagas of one type in one status; lua/lib.lua derives the same name."""
        return f"{self.prefix}idx:ts:{saga_type}:{status}"

    def correlation(self, correlation_id: str) -> str:
        """Sagas given this correlation id (not those whose id stands in for one)."""
        return f"{self.prefix}idx:corr:{correlation_id}"

    def workflow(self, name: str) -> str:
        """A registered workflow's hash: its versions and the latest (sagas/catalog.py)."""
        return f"{self.prefix}wf:{name}"

    def schedule(self, schedule_id: str) -> str:
        """A schedule's hash (sagas/schedules.py)."""
        return f"{self.prefix}schedule:{schedule_id}"

    def webhook(self, webhook_id: str) -> str:
        """An outbox entry (hash); lua/lib.lua derives the same name."""
        return f"{self.prefix}webhook:{webhook_id}"

    def definition(self, digest: str) -> str:
        return f"{self.prefix}def:{digest}"

    def idempotency(self, scope: str, key: str) -> str:
        """Idempotency-Key `key` of client `scope` (both hashed: no secret is stored)."""
        digest = hashlib.sha256(f"{scope}\0{key}".encode()).hexdigest()[:32]
        return f"{self.prefix}idem:{digest}"

    def scratch(self) -> str:
        return f"{self.prefix}tmp:{uuid.uuid4().hex}"

    def transition(self, saga_id: str) -> list[str]:
        """KEYS[1..11] shared by every transition script (documented in lua/lib.lua)."""
        return [
            self.saga(saga_id),
            self.history(saga_id),
            self.timers,
            self.stats,
            *(self.status(s) for s in SagaStatus),
            self.finished,
        ]
