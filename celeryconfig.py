"""Celery settings, read from the environment (docs/configuration.md lists every variable).

Why each choice (each checked against Celery 5.7 and kombu 5.7 by the tests in tests/):
- JSON only: no pickle from the broker.
- acks_late + reject_on_worker_lost: a killed worker's message goes back to the queue; steps
  are idempotent (same Idempotency-Key) and the store fences duplicate executions.
- retry_on_worker_lost bounds redelivery loops of a task that kills its worker.
- prefetch 1: a long step does not hold other messages hostage.
- results ignored: the saga store is the truth, and the result backend costs 20-30%.
- visibility_timeout above the longest step and any retry countdown, restored promptly.
- timeouts are never long countdowns or ETAs: deadlines live in Redis (`timers`), and beat
  runs the sweep that acts on them.
- the sweep has a queue of its own (`<queue>.sweep`), so that it never waits behind steps and
  a queue depth tells whether a worker consumes it. A worker started without `-Q` consumes
  both queues (`task_queues`); one started with `-Q` must name both.
"""

from __future__ import annotations

from kombu import Exchange, Queue

from sagas.settings import Settings

_settings = Settings.from_env()

broker_url = _settings.redis_url
broker_connection_retry_on_startup = True
broker_transport_options = {
    "visibility_timeout": _settings.visibility_timeout_seconds,
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
    # Every kombu key of this deployment starts with the store's prefix, so that several
    # deployments (or test runs) can share one Redis database without seeing each other.
    # SAGA_BROKER_KEY_PREFIX, default `<SAGA_KEY_PREFIX>kombu:`; a queue is the Redis list
    # `<prefix><queue name>` (GET /health/ reads its depth).
    "global_keyprefix": _settings.broker_key_prefix,
}
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
event_serializer = "json"
task_ignore_result = True
result_backend = None
task_acks_late = True
task_reject_on_worker_lost = True
task_retry_on_worker_lost = True
worker_prefetch_multiplier = 1
task_default_queue = _settings.queue
# Each queue with an exchange and routing key of its own, as Celery makes a missing queue (a
# Queue(name) alone is bound to the steps queue's exchange and routing key).
task_queues = tuple(
    Queue(q, Exchange(q), routing_key=q) for q in (_settings.queue, _settings.sweep_queue)
)
task_routes = {"saga.sweep": {"queue": _settings.sweep_queue}}
task_track_started = False
# Task events are what Flower shows; SAGA_TASK_EVENTS=0 (a deployment without Flower) saves
# their cost on every step and compensation task. A running Flower turns them back on in the
# workers (its --enable-events, on by default).
worker_send_task_events = _settings.task_events
task_send_sent_event = _settings.task_events
worker_hijack_root_logger = False
enable_utc = True
imports = ("tasks.steps", "tasks.sweep", "tasks.webhooks", "tasks.schedules")

# Beat keeps its entries in Redis (celery-redbeat): the sweep below and every schedule
# (POST /schedules, tasks/schedules.py). Its lock lets one of several beats tick; another
# takes over SAGA_BEAT_LOCK_SECONDS after the one holding it died. Beat wakes at least every
# 5 s (the lock is extended each wake-up), so it sees new schedules promptly.
beat_scheduler = "redbeat.RedBeatScheduler"
redbeat_redis_url = _settings.redis_url
redbeat_redis_options: dict[str, object] = {}  # its own client, not the broker's options
redbeat_key_prefix = f"{_settings.key_prefix}redbeat:"
redbeat_lock_timeout = int(_settings.beat_lock_seconds)
beat_max_loop_interval = 5

# Celery beat only schedules the sweep; a worker runs it. A sweep not started within one
# interval (workers down) expires instead of piling up; the next one does the same work.
beat_schedule = {
    "saga-sweep": {
        "task": "saga.sweep",
        "schedule": _settings.sweep_interval_seconds,
        "options": {"queue": _settings.sweep_queue, "expires": _settings.sweep_interval_seconds},
    }
}
