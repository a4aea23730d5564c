"""The engine of this worker process, built lazily after fork from the environment."""

from __future__ import annotations

import os

import redis
from celery import signals

from sagas.actions import ActionExecutor
from sagas.engine import SagaEngine
from sagas.log import configure_logging
from sagas.registry import load_task_modules
from sagas.settings import Settings
from sagas.store import RedisStore
from tasks.dispatcher import CeleryDispatcher

_engine: SagaEngine | None = None
_pid: int | None = None


def build_engine(settings: Settings) -> SagaEngine:
    """An engine wired to Redis, the HTTP client and the Celery dispatcher."""
    load_task_modules(settings.task_modules)
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    store = RedisStore(client, settings.key_prefix, settings.history_limit)
    return SagaEngine(store, CeleryDispatcher(settings.queue), ActionExecutor(settings.services),
                      settings)


def engine() -> SagaEngine:
    global _engine, _pid
    if _engine is None or _pid != os.getpid():
        _engine, _pid = build_engine(Settings.from_env()), os.getpid()
    return _engine


@signals.setup_logging.connect
def _setup_logging(loglevel: str | int | None = None, **_: object) -> None:
    configure_logging(str(loglevel or "INFO") if not isinstance(loglevel, int)
                      else _level_name(loglevel))


def _level_name(level: int) -> str:
    import logging

    return logging.getLevelName(level)
