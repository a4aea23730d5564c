"""`/schedules`: start a registered workflow on a cron expression (in a time zone) or every
N seconds (sagas/schedules.py; docs/workflows.md, "Schedules"). Writing needs an `admin` key
(a schedule starts sagas, as `POST /saga/start` does); reading a `reader` key."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask.views import MethodView
from marshmallow import fields, validate

from app.blueprints.sagas import engine
from app.extensions import Blueprint
from app.schemas import StrictSchema
from sagas.schedules import CATCH_UP

blp = Blueprint(
    "schedules",
    __name__,
    url_prefix="/schedules",
    description="Schedules: a workflow started by Celery beat on a cron or an interval",
)


class ScheduleFieldsSchema(StrictSchema):
    workflow = fields.String(metadata={"description": "a registered workflow"})
    version = fields.Integer(
        strict=True, allow_none=True, metadata={"description": "null: the latest at each firing"}
    )
    cron = fields.String(allow_none=True, metadata={"description": "5 fields, e.g. '0 9 * * 1-5'"})
    timezone = fields.String(metadata={"description": "an IANA zone; default UTC"})
    interval_seconds = fields.Float(allow_none=True, metadata={"description": "instead of cron"})
    payload = fields.Dict(metadata={"description": "the workflow's payload at each firing"})
    catch_up = fields.String(
        validate=validate.OneOf(CATCH_UP),
        metadata={"description": "missed fire times (beat down): skip (default) or run_once"},
    )


class ScheduleCreateSchema(ScheduleFieldsSchema):
    workflow = fields.String(required=True)


class ScheduleSchema(ScheduleFieldsSchema):
    schedule_id = fields.String()
    paused = fields.Boolean()
    created_at = fields.String(metadata={"format": "date-time"})
    next_fire_times = fields.List(fields.String(), metadata={"description": "the next five"})
    last_fire_time = fields.String(allow_none=True)
    last_saga_id = fields.String(allow_none=True)
    last_error = fields.String(allow_none=True)
    fired = fields.Integer()
    skipped = fields.Integer()
    correlation_id = fields.String(metadata={"description": "of every saga it starts"})


class ScheduleListSchema(StrictSchema):
    schedules = fields.List(fields.Nested(ScheduleSchema))


@blp.route("")
class ScheduleCollection(MethodView):
    @blp.response(200, ScheduleListSchema)
    def get(self) -> Any:
        """Every schedule"""
        return {"schedules": engine().schedules.list()}

    @blp.arguments(ScheduleCreateSchema)
    @blp.response(201, ScheduleSchema)
    def post(self, body: dict[str, Any]) -> Any:
        """Create a schedule (the workflow must accept the payload now)"""
        schedule = engine().schedules.create(body)
        current_app.logger.info("schedule created %s", schedule["schedule_id"])
        return schedule


@blp.route("/<schedule_id>")
class ScheduleResource(MethodView):
    @blp.response(200, ScheduleSchema)
    def get(self, schedule_id: str) -> Any:
        """A schedule with its next five fire times"""
        return engine().schedules.get(schedule_id)

    @blp.arguments(ScheduleFieldsSchema)
    @blp.response(200, ScheduleSchema)
    def patch(self, body: dict[str, Any], schedule_id: str) -> Any:
        """Change fields; the result is checked as a whole"""
        return engine().schedules.update(schedule_id, body)

    @blp.response(204)
    def delete(self, schedule_id: str) -> None:
        """Delete the schedule and its beat entry (sagas it started are not touched)"""
        engine().schedules.delete(schedule_id)


@blp.route("/<schedule_id>/pause")
class PauseSchedule(MethodView):
    @blp.response(200, ScheduleSchema)
    def post(self, schedule_id: str) -> Any:
        """Pause: no firing until resumed (fire times in between are not caught up)"""
        return engine().schedules.pause(schedule_id, True)


@blp.route("/<schedule_id>/resume")
class ResumeSchedule(MethodView):
    @blp.response(200, ScheduleSchema)
    def post(self, schedule_id: str) -> Any:
        """Resume a paused schedule"""
        return engine().schedules.pause(schedule_id, False)
