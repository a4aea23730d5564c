"""`GET /metrics` (JSON) and `GET /metrics/prometheus` (text exposition format).

Saga figures come from the counters the Lua transitions keep in Redis, so they are right
across every gunicorn and Celery process; the health figures (sweep lag, events consumer,
queue depths, timers, each component's status) from `SagaEngine.health`, read at scrape time
too. HTTP request metrics come from prometheus-flask-exporter (multiprocess mode under
gunicorn).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from flask import Response, current_app
from flask.views import MethodView
from marshmallow import fields
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from app.blueprints.sagas import engine
from app.extensions import Blueprint
from app.schemas import StrictSchema
from sagas.engine import SagaEngine
from sagas.health import HEALTHY, HealthReport
from sagas.store import DURATION_BUCKETS

blp = Blueprint("metrics", __name__, url_prefix="/metrics", description="Metrics")


def summary(counters: dict[str, int], counts: dict[str, int]) -> dict[str, Any]:
    """The Redis counters as nested JSON."""
    started: dict[str, int] = {}
    finished: dict[str, dict[str, int]] = defaultdict(dict)
    refinished: dict[str, dict[str, int]] = defaultdict(dict)
    steps: dict[str, int] = {}
    compensations: dict[str, int] = {}
    webhooks: dict[str, int] = {}
    durations: dict[str, dict[str, float]] = defaultdict(dict)
    for key, value in counters.items():
        kind, _, rest = key.partition("|")
        if kind == "started":
            started[rest] = value
        elif kind in ("finished", "refinished"):
            saga_type, _, status = rest.rpartition("|")
            (finished if kind == "finished" else refinished)[saga_type][status] = value
        elif kind == "steps":
            steps[rest] = value
        elif kind == "compensations":
            compensations[rest] = value
        elif kind == "webhooks":
            webhooks[rest] = value
        elif kind in ("duration_ms", "duration_count"):
            durations[rest]["sum_seconds" if kind == "duration_ms" else "count"] = (
                value / 1000 if kind == "duration_ms" else value
            )
    return {
        "sagas": {
            "by_status": counts,
            "active": counts["RUNNING"] + counts["COMPENSATING"],
            "pending": counts["PENDING"],
            "started": started,
            "finished": dict(finished),
            "finished_again": dict(refinished),
        },
        "steps": steps,
        "compensations": compensations,
        "webhooks": webhooks,
        "durations": dict(durations),
    }


class SagaCollector:
    """Saga and health metrics read from Redis at scrape time (a worker or events consumer
    counts as alive if it beat within `heartbeat_seconds`)."""

    def __init__(self, saga_engine: SagaEngine, heartbeat_seconds: float = 15) -> None:
        self.engine = saga_engine
        self.heartbeat_seconds = heartbeat_seconds

    def collect(self) -> Iterator[Any]:
        counters = self.engine.stats()
        counts = self.engine.counts()
        started = CounterMetricFamily("saga_started", "Sagas started", labels=["saga_type"])
        finished = CounterMetricFamily(
            "saga_finished",
            "Sagas that reached a final status, each counted once, by the first one",
            labels=["saga_type", "status"],
        )
        again = CounterMetricFamily(
            "saga_finished_again",
            "Sagas that reached another final status later (a COMPLETED saga compensated, a "
            "COMPENSATION_FAILED one retried)",
            labels=["saga_type", "status"],
        )
        steps = CounterMetricFamily("saga_steps", "Step outcomes", labels=["outcome"])
        comps = CounterMetricFamily(
            "saga_compensations", "Compensation outcomes", labels=["outcome"]
        )
        firings = CounterMetricFamily(
            "saga_schedule_firings",
            "Schedule fire times: started, skipped (missed, catch_up skip), failed (could not "
            "start: see the schedule's last_error)",
            labels=["outcome"],
        )
        for key, value in counters.items():
            kind, _, rest = key.partition("|")
            if kind == "started":
                started.add_metric([rest], value)
            elif kind in ("finished", "refinished"):
                saga_type, _, status = rest.rpartition("|")
                (finished if kind == "finished" else again).add_metric([saga_type, status], value)
            elif kind == "steps":
                steps.add_metric([rest], value)
            elif kind == "compensations":
                comps.add_metric([rest], value)
            elif kind == "schedules":
                firings.add_metric([rest], value)
        yield from (started, finished, again, steps, comps, firings)
        yield from webhook_metrics(counters, self.engine.webhooks.counts())
        by_status = GaugeMetricFamily("saga_sagas", "Sagas by current status", labels=["status"])
        for status, count in counts.items():
            by_status.add_metric([status], count)
        yield by_status
        yield GaugeMetricFamily(
            "saga_active",
            "Sagas RUNNING or COMPENSATING",
            value=counts["RUNNING"] + counts["COMPENSATING"],
        )
        yield GaugeMetricFamily("saga_pending", "Sagas waiting for a slot", value=counts["PENDING"])
        duration = HistogramMetricFamily(
            "saga_duration_seconds", "Saga duration from start to final status", labels=["status"]
        )
        for status in ("COMPLETED", "COMPENSATED"):
            count = counters.get(f"duration_count|{status}", 0)
            buckets = [
                (f"{le:g}", counters.get(f"duration_bucket|{status}|{le:g}", 0))
                for le in DURATION_BUCKETS
            ]
            buckets.append(("+Inf", count))
            duration.add_metric([status], buckets, counters.get(f"duration_ms|{status}", 0) / 1000)
        yield duration
        yield from health_metrics(self.engine.health(self.heartbeat_seconds))


def webhook_metrics(counters: dict[str, int], counts: dict[str, int]) -> Iterator[Any]:
    """Completion webhooks (sagas/webhooks.py): attempts by outcome, the outbox, dead letters."""
    outcomes = CounterMetricFamily(
        "saga_webhooks",
        "Completion webhooks: queued (outbox entries written), delivered, failed (attempts "
        "that failed), dead (dead letters made)",
        labels=["outcome"],
    )
    for outcome in ("queued", "delivered", "failed", "dead"):
        outcomes.add_metric([outcome], counters.get(f"webhooks|{outcome}", 0))
    yield outcomes
    yield GaugeMetricFamily(
        "saga_webhooks_pending", "Webhooks waiting to be delivered", value=counts["pending"]
    )
    yield GaugeMetricFamily(
        "saga_webhooks_dead_letters",
        "Webhooks not delivered within SAGA_WEBHOOK_MAX_SECONDS",
        value=counts["dead_letters"],
    )


def health_metrics(report: HealthReport) -> Iterator[Any]:
    """The figures of GET /health/ as gauges (README, Metrics)."""
    c = report.components
    healthy = GaugeMetricFamily(
        "saga_component_healthy",
        "1 when the component is healthy, 0 when degraded or unhealthy (GET /health/)",
        labels=["component"],
    )
    for name, component in c.items():
        healthy.add_metric([name], 1 if component["status"] == HEALTHY else 0)
    yield healthy
    if "workers" not in c:  # Redis could not be read: nothing more is known
        return
    yield GaugeMetricFamily(
        "saga_workers_alive", "Workers with a recent heartbeat", len(report.workers)
    )
    beat = c["beat"]
    lag = beat["lag_seconds"]
    yield GaugeMetricFamily(
        "saga_sweep_lag_seconds",
        "Seconds since the last completed sweep (+Inf: none recorded)",
        value=float("inf") if lag is None else lag,
    )
    yield CounterMetricFamily("saga_sweeps", "Sweeps completed", value=beat["sweeps"])
    events = c["events"]
    for name, key, text in (
        ("saga_events_consumers", "consumers", "Event consumers with a recent heartbeat"),
        ("saga_events_pending", "pending", "Events delivered to a consumer, not acknowledged"),
        ("saga_events_lag", "lag", "Events in the stream not yet delivered to a consumer"),
        ("saga_events_waiting_steps", "waiting_event_steps", "Event steps waiting for a reply"),
    ):
        yield GaugeMetricFamily(name, text, value=events[key])
    depth = GaugeMetricFamily(
        "saga_queue_depth", "Messages waiting in a broker queue", labels=["queue"]
    )
    for queue, n in c["queues"]["depths"].items():
        depth.add_metric([queue], n)
    yield depth
    yield GaugeMetricFamily(
        "saga_queue_unacked",
        "Messages delivered to a worker and not yet acknowledged",
        value=c["queues"]["unacked"],
    )
    yield GaugeMetricFamily(
        "saga_oldest_due_timer_seconds",
        "How overdue the oldest due timer (deadline, sign of life) is; 0 when none is due",
        value=c["timers"]["oldest_overdue_seconds"],
    )
    yield GaugeMetricFamily("saga_timers_due", "Timers due now", value=c["timers"]["due"])


class MetricsSchema(StrictSchema):
    sagas = fields.Dict(required=True)
    steps = fields.Dict(required=True)
    compensations = fields.Dict(required=True)
    webhooks = fields.Dict(required=True)
    durations = fields.Dict(required=True)


@blp.route("")
class Metrics(MethodView):
    @blp.response(200, MetricsSchema)
    def get(self) -> Any:
        """Saga counters and gauges as JSON"""
        return summary(engine().stats(), engine().counts())


@blp.route("/prometheus")
class PrometheusMetrics(MethodView):
    @blp.response(200, {"type": "string"}, content_type="text/plain")
    def get(self) -> Response:
        """Prometheus text exposition format (saga metrics and HTTP request metrics)"""
        sagas = CollectorRegistry(auto_describe=True)
        sagas.register(SagaCollector(engine(), current_app.config["WORKER_HEARTBEAT_SECONDS"]))
        http = current_app.extensions["http_metrics_registry"]
        if http is None:  # gunicorn multiprocess mode
            http = CollectorRegistry()
            MultiProcessCollector(http)
        text = generate_latest(http) + generate_latest(sagas)
        # content_type, not mimetype: Flask would add a second "; charset=utf-8" to a mimetype.
        return Response(text, content_type="text/plain; version=0.0.4; charset=utf-8")
