"""`GET /` (service info) and `GET /health/` (every component with its evidence, saga counts).

The figures come from `SagaEngine.health` (sagas/health.py); this module only shapes them
for HTTP. `current_health()` is the body and status of `GET /health/`, for other pages too.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, redirect, request
from flask.views import MethodView
from marshmallow import fields

from app.blueprints.sagas import engine
from app.extensions import Blueprint
from app.schemas import StrictSchema

blp = Blueprint("health", __name__, description="Service information and health")
VERSION = "0.1.0"


class InfoSchema(StrictSchema):
    name = fields.String(required=True)
    version = fields.String(required=True)
    patterns = fields.List(fields.String(), required=True)
    links = fields.Dict(keys=fields.String(), values=fields.String(), required=True)


class HealthSchema(StrictSchema):
    status = fields.String(
        metadata={
            "description": "healthy; degraded (200: beat, the events consumer or the timers "
            "need attention, see components); unhealthy (503: Redis unreachable or no worker)"
        },
        required=True,
    )
    redis = fields.String(metadata={"description": "healthy or unreachable"}, required=True)
    workers = fields.String(
        metadata={"description": "healthy, no worker heartbeat, unknown"}, required=True
    )
    workers_alive = fields.Integer(required=True)
    active_sagas = fields.Integer(metadata={"description": "RUNNING + COMPENSATING"})
    pending_sagas = fields.Integer()
    compensation_failed_sagas = fields.Integer(metadata={"description": "await a person"})
    version = fields.String(required=True)
    components = fields.Dict(
        keys=fields.String(),
        values=fields.Dict(),
        metadata={
            "description": "redis, workers, beat, events, queues, timers: each "
            "{status, ...evidence}, with a `reason` when not healthy (README, Health)"
        },
        required=True,
    )


@blp.route("/")
class Info(MethodView):
    @blp.response(200, InfoSchema)
    @blp.alt_response(302, description="a browser (Accept: text/html first) goes to /docs")
    def get(self) -> Any:
        """Service information and links (no key needed)"""
        wanted = request.accept_mimetypes.best_match(["application/json", "text/html"])
        if wanted == "text/html" and request.accept_mimetypes["text/html"] > 0:
            return redirect("/docs")
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


def current_health() -> tuple[dict[str, Any], int]:
    """The body of `GET /health/` and its HTTP status (503 when unhealthy, else 200)."""
    report = engine().health(current_app.config["WORKER_HEARTBEAT_SECONDS"])
    components = report.components
    if "workers" not in components:  # Redis could not be read
        workers = "unknown"
    else:
        workers = "healthy" if report.workers else "no worker heartbeat"
    body: dict[str, Any] = {
        "status": report.status,
        "version": VERSION,
        "redis": "healthy" if components["redis"]["status"] == "healthy" else "unreachable",
        "workers": workers,
        "workers_alive": len(report.workers),
        "components": components,
    }
    if report.counts:
        counts = report.counts
        body.update(
            active_sagas=counts["RUNNING"] + counts["COMPENSATING"],
            pending_sagas=counts["PENDING"],
            compensation_failed_sagas=counts["COMPENSATION_FAILED"],
        )
    return body, report.http_status


@blp.route("/health/")
class Health(MethodView):
    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=HealthSchema, description="Redis unreachable or no worker")
    def get(self) -> Any:
        """Health of every component with its evidence, and saga counts (no key needed)

        200 `healthy`, or `degraded` when beat (the sweep), the events consumer or the timers
        need attention; 503 `unhealthy` when Redis is unreachable or no worker beats.
        """
        return current_health()
