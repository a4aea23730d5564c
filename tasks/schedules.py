"""Schedules on Celery beat (sagas/schedules.py): the beat entries, kept by celery-redbeat
in Redis (`<SAGA_KEY_PREFIX>redbeat:`), and the thin task each tick runs.

A cron schedule's entry ticks every minute (celery `crontab()`, at second 0) and the
engine works out, in the schedule's time zone, whether a fire time is due; an interval
schedule's entry ticks at its interval. redbeat's lock (`SAGA_BEAT_LOCK_SECONDS`) lets one
of several beat processes tick; another takes over when the lock expires.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

from celery import current_app, shared_task
from celery.schedules import crontab, schedule
from redbeat import RedBeatSchedulerEntry
from redbeat.schedulers import ensure_conf

from tasks.runtime import engine

FIRE_TASK = "saga.fire_schedule"
CRON_TICK_EXPIRES = 55  # seconds: a cron tick not run within its minute is dropped


def entry_name(schedule_id: str) -> str:
    return f"schedule:{schedule_id}"


class RedBeatEntries:
    """`sagas.schedules.ScheduleEntries` over celery-redbeat."""

    def save(self, schedule_id: str, interval_seconds: float | None, enabled: bool) -> None:
        every: Any
        if interval_seconds is None:
            every, expires = crontab(), CRON_TICK_EXPIRES
        else:
            every, expires = (
                schedule(run_every=timedelta(seconds=interval_seconds)),
                max(1.0, interval_seconds),
            )
        RedBeatSchedulerEntry(
            name=entry_name(schedule_id),
            task=FIRE_TASK,
            schedule=every,
            args=[schedule_id],
            options={"expires": expires},
            enabled=enabled,
            app=current_app,
        ).save()

    def delete(self, schedule_id: str) -> None:
        # redbeat reads its settings into the app on first use (ensure_conf); a process that
        # never saved an entry (another gunicorn worker than the one that created it) has
        # none yet, and generate_key alone would fail.
        ensure_conf(current_app)
        key = RedBeatSchedulerEntry.generate_key(current_app, entry_name(schedule_id))
        with contextlib.suppress(KeyError):  # never saved, or gone already
            RedBeatSchedulerEntry.from_key(key, app=current_app).delete()


@shared_task(name=FIRE_TASK, ignore_result=True)
def fire_schedule(schedule_id: str) -> str:
    return engine().schedules.fire(schedule_id)
