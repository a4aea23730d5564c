"""Traces of the API: the official Flask instrumentation when tracing is on (sagas/tracing.py),
so that a request's server span (joining the caller's `traceparent`) is current while it
starts a saga, and the saga's trace begins there. Off, only the caller's context is made
current for the request (parsing one header): a saga started then keeps the caller's trace
and passes it on to the services it calls, with nothing recorded."""

from __future__ import annotations

from flask import Flask, Response, g, request
from opentelemetry import context as otel_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from sagas import tracing

# Probes and scrapes would be most of the traces, and say nothing about sagas.
EXCLUDED_URLS = "/health,/metrics,/docs,/openapi.json,/ui/static"
_propagator = TraceContextTextMapPropagator()


def init_tracing(app: Flask) -> None:
    if tracing.configure("saga-api"):
        from opentelemetry.instrumentation.flask import FlaskInstrumentor

        FlaskInstrumentor().instrument_app(app, excluded_urls=EXCLUDED_URLS)

        @app.after_request
        def _say_which_trace(response: Response) -> Response:
            """W3C Trace Context level 2's `traceresponse`: the client (and the access log
            line, app/gunicorn_logs.py) learns the request's trace."""
            traceparent = tracing.current_traceparent()
            if traceparent:
                response.headers["traceresponse"] = traceparent
            return response

        return

    @app.before_request
    def _join_callers_trace() -> None:
        if "traceparent" in request.headers:
            ctx = _propagator.extract({"traceparent": request.headers["traceparent"]})
            g.saga_trace_token = otel_context.attach(ctx)

    @app.teardown_request
    def _leave_callers_trace(_: BaseException | None) -> None:
        token = g.pop("saga_trace_token", None)
        if token is not None:
            otel_context.detach(token)
