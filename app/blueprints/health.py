"""`GET /` (service info) and `GET /health/` (Redis, workers, saga counts)."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask.views import MethodView
from marshmallow import fields
from redis.exceptions import RedisError

from app.blueprints.sagas import engine
from app.extensions import Blueprint
from app.schemas import StrictSchema

blp = Blueprint("health", __name__, description="Service information and health")
VERSION = "0.1.0"


class InfoSchema(StrictSchema):
    name = fields.String()
    version = fields.String()
    patterns = fields.List(fields.String())
    links = fields.Dict(keys=fields.String(), values=fields.String())


class HealthSchema(StrictSchema):
    status = fields.String(metadata={"description": "healthy or unhealthy"})
    redis = fields.String()
    workers = fields.String()
    workers_alive = fields.Integer()
    active_sagas = fields.Integer(metadata={"description": "RUNNING + COMPENSATING"})
    pending_sagas = fields.Integer()
    compensation_failed_sagas = fields.Integer(metadata={"description": "await a person"})
    version = fields.String()


@blp.route("/")
class Info(MethodView):
    @blp.response(200, InfoSchema)
    def get(self) -> Any:
        """Service information and links"""
        return {
            "name": "saga-orchestrator",
            "version": VERSION,
            "patterns": ["orchestration", "choreography"],
            "links": {
                "docs": "/docs",
                "openapi": "/openapi.json",
                "health": "/health/",
                "metrics": "/metrics",
                "sagas": "/saga",
                "templates": "/workflows/templates",
            },
        }


@blp.route("/health/")
class Health(MethodView):
    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=HealthSchema, description="Redis or the workers unreachable")
    def get(self) -> Any:
        """Health: Redis reachable, at least one worker alive, saga counts (no key needed)"""
        body: dict[str, Any] = {"version": VERSION, "redis": "healthy", "workers": "healthy"}
        try:
            counts = engine().counts()
            alive = engine().workers_alive(current_app.config["WORKER_HEARTBEAT_SECONDS"])
        except RedisError:
            body.update(status="unhealthy", redis="unreachable", workers="unknown", workers_alive=0)
            return body, 503
        body.update(
            workers_alive=len(alive),
            active_sagas=counts["RUNNING"] + counts["COMPENSATING"],
            pending_sagas=counts["PENDING"],
            compensation_failed_sagas=counts["COMPENSATION_FAILED"],
        )
        if not alive:
            body.update(status="unhealthy", workers="no worker heartbeat")
            return body, 503
        body["status"] = "healthy"
        return body, 200
