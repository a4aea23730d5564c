"""The REST API (HTTP only: the engine in `sagas/` does the work); README.md and /docs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask, redirect, send_from_directory
from flask.typing import ResponseReturnValue
from prometheus_client import CollectorRegistry
from prometheus_flask_exporter import PrometheusMetrics
from prometheus_flask_exporter.multiprocess import GunicornPrometheusMetrics
from swagger_ui_bundle import swagger_ui_path

from app import config as app_config
from app.auth import init_auth
from app.errors import register_error_handlers
from app.extensions import api
from app.openapi import finish as finish_openapi
from app.tracing import init_tracing
from app.ui import init_ui
from sagas.engine import SagaEngine
from sagas.log import configure_logging

OPENAPI = {
    "API_TITLE": "Saga Orchestrator",
    "API_VERSION": "0.1.0",
    "OPENAPI_VERSION": "3.0.3",
    "OPENAPI_URL_PREFIX": "/",
    "OPENAPI_JSON_PATH": "openapi.json",
    "OPENAPI_SWAGGER_UI_PATH": "docs",
    # Served from the swagger-ui-bundle package: /docs works without internet access.
    "OPENAPI_SWAGGER_UI_URL": "/docs/static/",
    "API_SPEC_OPTIONS": {
        "info": {
            "description": "Distributed transactions with compensation. Every endpoint "
            "but GET /, GET /health/, /openapi.json and /docs needs an API key. Request "
            "bodies are JSON (`Content-Type: application/json`). The contract in words: "
            "docs/api.md in the repository."
        },
        "security": [{"ApiKey": []}, {"Bearer": []}],
        "components": {
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "Bearer": {"type": "http", "scheme": "bearer"},
            }
        },
    },
}


def create_app(config: Mapping[str, Any] | None = None, *, engine: SagaEngine) -> Flask:
    """The API over `engine`: defaults, then the environment, then `config` (tests)."""
    app = Flask(__name__)
    app.config.update(OPENAPI)
    app.config.update(app_config.from_env())
    app.config.update(config or {})
    app.extensions["saga_engine"] = engine
    configure_logging(app.config.get("LOG_LEVEL", "INFO"))
    init_tracing(app)  # before the routes: the Flask instrumentation wraps every request
    init_auth(app)
    register_extensions(app)
    register_blueprints(app)
    finish_openapi(api.spec)
    register_error_handlers(app)
    register_docs_assets(app)
    init_ui(app)  # the dashboard at /ui (app/ui)
    return app


def register_extensions(app: Flask) -> None:
    api.init_app(app)
    options: dict[str, Any] = {"group_by": "url_rule", "path": None, "excluded_paths": ["/docs"]}
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Values go to files shared by the gunicorn workers; /metrics/prometheus reads them
        # all (this class adds no endpoint of its own).
        options.pop("path")
        GunicornPrometheusMetrics(app, **options)
        app.extensions["http_metrics_registry"] = None
    else:
        registry = CollectorRegistry(auto_describe=True)  # one per app: tests build several
        PrometheusMetrics(app, registry=registry, **options)
        app.extensions["http_metrics_registry"] = registry


def register_blueprints(app: Flask) -> None:
    from app.blueprints import (
        events,
        health,
        metrics,
        repairs,
        sagas,
        schedules,
        webhooks,
        workflow_registry,
        workflows,
    )

    for module in (
        health,
        sagas,
        repairs,
        workflows,
        workflow_registry,
        schedules,
        events,
        webhooks,
        metrics,
    ):
        api.register_blueprint(module.blp)


def register_docs_assets(app: Flask) -> None:
    @app.get("/docs/")
    def docs_slash() -> ResponseReturnValue:  # /docs is the page; the slash is a typo
        return redirect("/docs", code=308)

    @app.get("/docs/static/<path:filename>")
    def swagger_assets(filename: str) -> ResponseReturnValue:
        return send_from_directory(swagger_ui_path, filename)
