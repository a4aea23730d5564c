"""OpenTelemetry traces of sagas: one trace per saga, carried in the saga itself.

Turned on by the standard variables: OTLP over HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, or `OTEL_TRACES_EXPORTER=otlp|console`;
`OTEL_SDK_DISABLED=true` wins over both. Otherwise no SDK is installed: no span object is
built (`attempt` yields None before touching the API), nothing is exported, and only a
caller's `traceparent` is passed on (a header parsed at start, stored, forwarded).

The saga's trace context is stored at create (`tp` in the saga hash, W3C traceparent text)
and handed to every execution with its grant, so a step re-driven by the sweep or a
compensation asked for by a person joins the saga's trace, whatever Celery's headers say.
The processes wire the official instrumentations (Flask in `app/tracing.py`, Celery and
httpx in `tasks/runtime.py`) after calling `configure`. Nothing here imports Flask or Celery.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger("sagas.tracing")
TRACER_NAME = "saga-orchestrator"
_propagator = TraceContextTextMapPropagator()
_enabled = False
# Root spans that would make a trace of their own every few seconds (beat's sweep): never
# sampled. A sweep that re-drives a saga opens a span in that saga's trace instead.
QUIET_ROOTS = frozenset({"apply_async/saga.sweep", "run/saga.sweep"})


def wanted(env: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for traces (see the module's docstring)."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = {e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",")}
    if exporters & {"none"}:
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or exporters & {"otlp", "console"}
    )


def enabled() -> bool:
    """Whether this process records spans (`configure` installed the SDK)."""
    return _enabled


def configure(service_name: str) -> bool:
    """Install the SDK's tracer provider if the environment asks for traces; call it once
    per process, after any fork (the exporter's thread does not survive one).
    `OTEL_SERVICE_NAME` wins over `service_name`; `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BSP_*`,
    `OTEL_TRACES_SAMPLER` and `OTEL_EXPORTER_OTLP_*` are read by the SDK itself."""
    global _enabled
    if _enabled or not wanted():
        return _enabled
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        if os.environ.get(name) == "":  # set but empty (docker-compose): the SDK's default
            del os.environ[name]
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

    resource = Resource.create(
        {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    )
    provider = TracerProvider(resource=resource)
    provider.sampler = QuietRoots(provider.sampler)  # the one OTEL_TRACES_SAMPLER chose
    exporters: list[SpanExporter] = []
    names = {e.strip().lower() for e in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")}
    if "console" in names:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        exporters.append(ConsoleSpanExporter())
    if "otlp" in names or not exporters:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporters.append(OTLPSpanExporter())
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _enabled = True
    log.info("tracing on", extra={"exporters": sorted(type(e).__name__ for e in exporters)})
    return True


def shutdown() -> None:
    """Export what is still buffered (at a process's exit)."""
    provider = trace.get_tracer_provider()
    if _enabled and hasattr(provider, "shutdown"):
        provider.shutdown()


class QuietRoots(Sampler):
    """A sampler that never starts a trace at a `QUIET_ROOTS` span, and otherwise asks the
    configured one."""

    def __init__(self, inner: Sampler) -> None:
        self.inner = inner

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Any = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if name in QUIET_ROOTS and not parent.is_valid:
            return SamplingResult(Decision.DROP)
        return self.inner.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"QuietRoots{{{self.inner.get_description()}}}"


# --- the saga's trace context -------------------------------------------------------------
def current_traceparent() -> str:
    """The W3C traceparent of the current span ("" when there is none): stored in a saga
    at create. Without the SDK it is a caller's context attached by the API, if any."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent", "")


def parse(traceparent: str | None) -> str:
    """A traceparent header normalised, or "" if it is missing or malformed."""
    if not traceparent:
        return ""
    ctx = _propagator.extract({"traceparent": traceparent})
    span_context = trace.get_current_span(ctx).get_span_context()
    if not span_context.is_valid:
        return ""
    flags = f"{int(span_context.trace_flags):02x}"
    return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{flags}"


def trace_id(traceparent: str | None) -> str | None:
    """The trace id (32 hex digits) of a stored traceparent, or None."""
    if not traceparent:
        return None
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def current_trace_id() -> str | None:
    """The trace id of the current span if its trace is sampled (for log lines: a trace
    that is never recorded, such as a sweep's, is not named)."""
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid and span_context.trace_flags.sampled:
        return f"{span_context.trace_id:032x}"
    return None


def _saga_context(traceparent: str) -> otel_context.Context:
    return _propagator.extract({"traceparent": traceparent})


@contextmanager
def in_saga(traceparent: str | None, name: str = "", **attributes: Any) -> Iterator[None]:
    """Make the saga's trace current for the block, unless it already is (work the saga
    causes from outside its own executions: a sweep's re-drive, a person's compensation
    request, an admission). With `name` and tracing on, a span of that name is opened in the
    saga's trace, linked to the span that was current (the sweep's, the request's)."""
    if not traceparent:
        yield
        return
    current = trace.get_current_span().get_span_context()
    if current.is_valid and f"{current.trace_id:032x}" == trace_id(traceparent):
        yield
        return
    token = otel_context.attach(_saga_context(traceparent))
    try:
        if name and _enabled:
            links = [Link(current)] if current.is_valid else None
            with _tracer().start_as_current_span(name, links=links, attributes=attributes):
                yield
        else:
            yield
    finally:
        otel_context.detach(token)


@contextmanager
def attempt(name: str, traceparent: str | None, attributes: Mapping[str, Any]) -> Iterator[Any]:
    """A span for one attempt of a step or compensation, in the saga's trace: a child of
    the current span when that is in the saga's trace (the Celery execution that runs it),
    else of the saga's stored context. Yields None, having built nothing, when tracing is
    off."""
    if not _enabled:
        yield None
        return
    current = trace.get_current_span().get_span_context()
    parent = None
    if traceparent and not (
        current.is_valid and f"{current.trace_id:032x}" == trace_id(traceparent)
    ):
        parent = _saga_context(traceparent)
    # A failed attempt is an outcome, not a crash: `outcome` records it (status, error) and
    # no traceback is attached to the span.
    with _tracer().start_as_current_span(
        name,
        context=parent,
        kind=SpanKind.INTERNAL,
        attributes=dict(attributes),
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


def outcome(span: Span | None, value: str, error: str | None = None) -> None:
    """Record how an attempt ended on its span (`saga.outcome`; an error status for a
    failure)."""
    if span is None:
        return
    span.set_attribute("saga.outcome", value)
    if error:
        span.set_attribute("saga.error", error[:500])
        if value in ("failed", "retry"):
            span.set_status(Status(StatusCode.ERROR, error[:200]))


def inject(headers: dict[str, str], fallback: str | None = None) -> None:
    """Put the current trace context in `headers` (W3C `traceparent`); with no current span,
    the saga's stored one (`fallback`), so a caller's trace still reaches the services when
    this process records nothing."""
    if _enabled:
        _propagator.inject(headers)
    if "traceparent" not in headers and fallback:
        headers["traceparent"] = fallback


def _tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)
