"""`/events`: publish events (choreography), and see those no saga awaited or that failed."""

from __future__ import annotations

import re
from typing import Any

from flask.views import MethodView
from flask_smorest import abort
from marshmallow import Schema, fields, validate

from app.blueprints.sagas import engine
from app.extensions import Blueprint
from app.schemas import StrictSchema, correlation_id_field

blp = Blueprint(
    "events",
    __name__,
    url_prefix="/events",
    description="Choreography: events on Redis streams (docs/events.md)",
)
EVENT_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")


EVENT_ID_RULE = "1 to 200 printable ASCII characters"


def event_id_field(**options: Any) -> Any:
    return fields.String(
        validate=[
            validate.Length(min=1, max=200),
            validate.Regexp(r"^[\x21-\x7e]+$", error=EVENT_ID_RULE),
        ],
        **options,
    )


class EventHeadersSchema(Schema):
    class Meta:
        unknown = "exclude"

    idempotency_key = event_id_field(
        data_key="Idempotency-Key",
        metadata={"description": "names the event, like `event_id` in the body"},
    )


class EventSchema(StrictSchema):
    event_id = event_id_field(
        metadata={
            "description": "your name for the event (or the Idempotency-Key header): "
            "sending the same event again starts no second saga, since a trigger's saga id "
            "derives from it. Without it, the stream entry id names the event, new at every "
            "POST"
        },
    )
    saga_id = fields.String(
        allow_none=True,
        validate=validate.Length(min=1, max=100),
        metadata={"description": "the saga the event is for"},
    )
    correlation_id = correlation_id_field("or the sagas with this id")
    step = fields.String(
        allow_none=True,
        validate=validate.Regexp(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"),
        metadata={
            "description": "the step whose command this answers (the command's `step`): a "
            "reply is matched to that step only; without it, only when one step awaits the type"
        },
    )
    data = fields.Dict(
        load_default=dict, metadata={"description": "the output of the step it completes"}
    )


class PublishedSchema(StrictSchema):
    event_id = fields.String(
        required=True,
        metadata={"description": "the event's name: yours if you gave one, else its stream id"},
    )
    matched_sagas = fields.List(fields.String(), required=True)


class EntrySchema(StrictSchema):
    id = fields.String()
    type = fields.String()
    saga_id = fields.String()
    correlation_id = fields.String()
    step = fields.String()
    data = fields.String(metadata={"description": "the event's data, JSON"})
    event_id = fields.String()
    outcome = fields.String()
    deliveries = fields.String()


class EntriesSchema(StrictSchema):
    items = fields.List(fields.Nested(EntrySchema), required=True)


class LimitSchema(StrictSchema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))


@blp.route("/<event_type>")
class Publish(MethodView):
    @blp.arguments(EventHeadersSchema, location="headers")
    @blp.arguments(EventSchema)
    @blp.response(202, PublishedSchema)
    def post(self, headers: dict[str, Any], event: dict[str, Any], event_type: str) -> Any:
        """Publish an event: a reply to an event step (by saga_id or correlation_id), or a
        trigger (neither) that starts the workflows declaring it"""
        if not EVENT_TYPE.match(event_type):
            abort(
                422,
                errors={"path": {"event_type": ["not a valid event type"]}},
                message="invalid event_type",
            )
        header, field = headers.get("idempotency_key"), event.get("event_id")
        if header and field and header != field:
            abort(
                422,
                errors={"json": {"event_id": ["differs from the Idempotency-Key header"]}},
                message="invalid event_id: differs from the Idempotency-Key header",
            )
        published = engine().events.publish(
            event_type,
            event.get("saga_id"),
            event.get("correlation_id"),
            event["data"],
            event.get("step"),
            event_id=header or field,
        )
        return {"event_id": published.event_id, "matched_sagas": published.matched}


@blp.route("/unmatched")
class Unmatched(MethodView):
    @blp.arguments(LimitSchema, location="query")
    @blp.response(200, EntriesSchema)
    def get(self, args: dict[str, Any]) -> Any:
        """Events that no saga awaited (newest first)"""
        return {"items": engine().events.unmatched(args["limit"])}


@blp.route("/dead-letters")
class DeadLetters(MethodView):
    @blp.arguments(LimitSchema, location="query")
    @blp.response(200, EntriesSchema)
    def get(self, args: dict[str, Any]) -> Any:
        """Events that could not be applied after SAGA_EVENT_MAX_DELIVERIES deliveries"""
        return {"items": engine().events.dead_letters(args["limit"])}
