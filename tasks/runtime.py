"""The engine of this worker process, built lazily after fork, the worker's logging, and its
traces (the official Celery and httpx instrumentations, when sagas/tracing.py is on)."""

from __future__ import annotations

import ast
import logging
import os
from typing import Any

import redis
from celery import Task, signals

from sagas import tracing
from sagas.actions import ActionExecutor
from sagas.engine import SagaEngine
from sagas.log import configure_logging, pop, push
from sagas.registry import load_task_modules
from sagas.settings import Settings
from sagas.store import RedisStore, connect
from tasks.dispatcher import CeleryDispatcher

_engine: SagaEngine | None = None
_pid: int | None = None


def build_engine(settings: Settings) -> SagaEngine:
    """An engine wired to Redis, the HTTP client and the Celery dispatcher."""
    load_task_modules(settings.task_modules)
    client = connect(settings.redis_url, settings.redis_retries)
    store = RedisStore(
        client,
        settings.key_prefix,
        settings.history_limit,
        redrive_after_seconds=settings.redrive_after_seconds,
        max_running=settings.max_concurrent_sagas,
        webhook_redrive_seconds=settings.webhook_timeout_seconds + settings.attempt_grace_seconds,
    )
    built = SagaEngine(
        store, CeleryDispatcher(settings.queue), ActionExecutor(settings.services), settings
    )
    from tasks.schedules import RedBeatEntries

    built.schedules.entries = RedBeatEntries()
    built.workflows.deployed_files()  # a refused SAGA_WORKFLOWS_DIR file stops the process
    return built


def engine() -> SagaEngine:
    """This process's engine (a forked pool child builds its own connections)."""
    global _engine, _pid
    if _engine is None or _pid != os.getpid():
        _engine, _pid = build_engine(Settings.from_env()), os.getpid()
    return _engine


# The beat sweep's task name (tasks/sweep.py).
SWEEP_TASK = "saga.sweep"


@signals.setup_logging.connect
def _setup_logging(loglevel: str | int | None = None, **_: Any) -> None:
    level = logging.getLevelName(loglevel) if isinstance(loglevel, int) else loglevel
    configure_logging(str(level or "INFO"), QuietSweepFilter(), ReceivedTaskFilter())


# Celery's warning when a worker runs as root: it matters where the worker accepts pickle
# (a message could then run code as root). Ours accepts JSON only (celeryconfig), so it is
# said once, in the log format, with what it means here, instead of Celery's text block.
ROOT_WARNING = "You're running the worker with superuser privileges"


@signals.celeryd_init.connect
def _log_before_privilege_check(options: dict[str, Any] | None = None, **_: Any) -> None:
    """The worker's logging, set up before Celery checks its privileges (the next thing it
    does), so that even that warning is a line of the log format."""
    _setup_logging((options or {}).get("loglevel"))
    if os.geteuid() == 0:
        import warnings

        warnings.filterwarnings("ignore", message=ROOT_WARNING)
        logging.getLogger("tasks.runtime").warning(
            "this worker runs as root. Celery warns about that because a worker that "
            "accepts pickle would let a message run code as root; this one accepts JSON "
            "only, so a message cannot. Still, run workers as an unprivileged user in "
            "production (the Dockerfile does; or celery's --uid). `make run` as root on a "
            "development machine is fine."
        )


@signals.celeryd_after_setup.connect
def _log_worker_setup(sender: Any, instance: Any, conf: Any, **_: Any) -> None:
    """What Celery's banner says (off in the JSON format: `saga-orchestrator worker`
    passes --quiet), as one line."""
    queues = sorted(instance.app.amqp.queues.consume_from or ())
    pool = getattr(instance.pool_cls, "__module__", instance.pool_cls)
    logging.getLogger("tasks.runtime").info(
        "worker %s starting",
        sender,
        extra={
            "queues": queues,
            "concurrency": instance.concurrency,
            "pool": str(pool),
        },
    )


class ReceivedTaskFilter(logging.Filter):
    """Celery logs "Task ... received" in the worker's main process, outside any task: take
    the saga and correlation ids from the task's logged arguments. Celery names a step or
    compensation there by its shadow name (`<saga type>/<step>`, tasks/dispatcher.py); every
    one takes (saga_id, step index, correlation_id)."""

    def filter(self, record: logging.LogRecord) -> bool:
        data = getattr(record, "data", None)
        if isinstance(data, dict) and getattr(record, "correlation_id", None) is None:
            try:
                args = ast.literal_eval(str(data.get("args", "")))
            except (ValueError, SyntaxError):
                return True
            if isinstance(args, list | tuple) and len(args) == 3 and isinstance(args[1], int):
                record.saga_id, record.correlation_id = args[0], args[2]
        return True


class QuietSweepFilter(logging.Filter):
    """Drops Celery's INFO lines about the sweep, which runs every few seconds and mostly
    finds nothing to do: the worker's "Task saga.sweep[...] received" and "... succeeded in
    0.003s", "Discarding revoked task: saga.sweep[...]" (one that expired before a worker
    took it) and beat's "Sending due task saga-sweep (saga.sweep)". Celery has no per-task log
    level (whether it logs INFO at all is decided once per task type). The sweep's warnings
    and errors stay; the engine logs a sweep that acted."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        data = getattr(record, "data", None)
        if isinstance(data, dict) and data.get("name") == SWEEP_TASK:
            return False
        args = record.args
        if record.name == "celery.beat" and isinstance(args, tuple) and SWEEP_TASK in args:
            return False
        # "Discarding revoked task: saga.sweep[...]": a sweep that expired unstarted (the
        # next one does its work).
        return not (record.name.startswith("celery.") and f"{SWEEP_TASK}[" in record.getMessage())


@signals.beat_init.connect
def _beat_sends_no_task_events(sender: Any, **_: Any) -> None:
    """Beat sends nothing but the sweep, every few seconds: no "task-sent" event for it, so
    that monitors (Flower's task list) show sagas. The worker sends none for it either
    (`send_events=False` on the task); `task_send_sent_event` stays on for everyone else."""
    sender.app.conf.task_send_sent_event = False


# Every saga task takes (saga_id, index, correlation_id): bind them to the log context for
# the whole execution, so that Celery's own lines (succeeded, retry, failed) and the errback,
# which runs inline, carry the correlation id too.
_log_tokens: dict[str, Any] = {}


@signals.task_prerun.connect
def _bind_log_context(task_id: str, task: Task, args: Any, **_: Any) -> None:
    if task.name.startswith("saga.") and len(args) == 3:
        _log_tokens[task_id] = push(saga_id=args[0], correlation_id=args[2], task_id=task_id)


@signals.task_postrun.connect
def _unbind_log_context(task_id: str, **_: Any) -> None:
    token = _log_tokens.pop(task_id, None)
    if token is not None:
        pop(token)


# Pools that enforce a task's hard time limit (Celery kills the execution past it).
TIME_LIMIT_POOLS = ("prefork", "gevent")


@signals.celeryd_after_setup.connect
def _warn_without_time_limits(sender: Any, instance: Any, **_: Any) -> None:
    """The attempt bounds the store counts on are Celery hard time limits; say so loudly
    when this worker's pool does not enforce them (docs/reliability.md)."""
    pool = instance.pool_cls
    name = getattr(pool, "__module__", "") if isinstance(pool, type) else str(pool)
    if not any(kind in name for kind in (*TIME_LIMIT_POOLS, "processes", "asynpool")):
        logging.getLogger("tasks.runtime").warning(
            "this worker's pool (%s) does not enforce hard time limits: an attempt that "
            "ignores its deadline is not killed, so a deadline cannot prove it has ended "
            "(HTTP steps keep their deadline; registered tasks must). Use the prefork pool "
            "for the full guarantee.",
            name or pool,
        )


def start_tracing(service_name: str = "saga-worker") -> None:
    """Install the SDK (if the environment asks for traces) and the instrumentations of
    this process: Celery (a span per task publish and run, context in the message headers)
    and httpx (a client span per call, its `traceparent` on the request). Once per process,
    after the fork: the exporter's thread does not survive one."""
    if tracing.enabled() or not tracing.configure(service_name):
        return
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    CeleryInstrumentor().instrument()
    HTTPXClientInstrumentor().instrument()


@signals.worker_process_init.connect
def _trace_pool_process(**_: Any) -> None:
    start_tracing()


@signals.celeryd_after_setup.connect
def _trace_worker_without_children(sender: Any, instance: Any, **_: Any) -> None:
    """The solo and thread pools run tasks in the worker's own process."""
    pool = instance.pool_cls
    name = getattr(pool, "__module__", "") if isinstance(pool, type) else str(pool)
    if not any(kind in name for kind in ("prefork", "processes", "asynpool")):
        start_tracing()


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _flush_traces(**_: Any) -> None:
    tracing.shutdown()


@signals.heartbeat_sent.connect
def _record_heartbeat(sender: Any, **_: Any) -> None:
    """Every worker heartbeat (2 s) lands in Redis, where `GET /health/` reads it."""
    try:
        engine().store.heartbeat(sender.eventer.hostname)
    except redis.RedisError as exc:  # never let a heartbeat break the worker's event loop
        logging.getLogger("tasks.runtime").warning("heartbeat not recorded: %s", exc)
