"""gunicorn settings of the REST API: `saga-orchestrator api` (or `gunicorn -c gunicorn.conf.py`).

Command-line options override these (`saga-orchestrator api --bind 127.0.0.1:9000 -w 4`).
Verified against gunicorn 27.0.1 and prometheus-flask-exporter 0.23.2 (tests/test_e2e.py runs it).
"""

from __future__ import annotations

import atexit
import os
import shutil
from typing import Any


def _workers() -> int:
    # 4 by default: requests spend much of their time waiting on Redis, and with a Celery
    # worker on the same cores, 2 sync workers left POST /saga/start at a p99 of 92 ms under
    # 200 requests/s where 4 gave 18 ms (docs/performance.md).
    raw = os.environ.get("WEB_CONCURRENCY") or "4"
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"WEB_CONCURRENCY={raw!r} is not a whole number") from None
    if value < 1:
        raise SystemExit(f"WEB_CONCURRENCY={raw!r} must be at least 1")
    return value


wsgi_app = "wsgi:app"
# gunicorn's own default is 127.0.0.1:8000; the API gateway and the clients expect 8008.
bind = [os.environ.get("SAGA_BIND") or "0.0.0.0:8008"]
workers = _workers()
accesslog = "-"  # access log on stdout, error log on stderr (gunicorn's default)
# Both in the project's log format (JSON lines, or SAGA_LOG_FORMAT=console): app/gunicorn_logs.py.
logger_class = "app.gunicorn_logs.SagaLogger"
access_log_format = '%(h)s "%(r)s" %(s)s %(B)s %(M)sms'
# gunicorn >= 25.1 opens a control socket in $XDG_RUNTIME_DIR or ~/.gunicorn: nothing uses it,
# and it fails in read-only containers.
control_socket_disable = True


def child_exit(server: Any, worker: Any) -> None:
    """A dead worker's live gauges must leave the Prometheus multiprocess directory."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Imported here, never at the top: prometheus_client picks its value class when first
        # imported, and the master must not import it before the environment is final.
        from prometheus_flask_exporter.multiprocess import (  # type: ignore[import-untyped]
            GunicornInternalPrometheusMetrics,
        )

        GunicornInternalPrometheusMetrics.mark_process_dead_on_child_exit(worker.pid)


def on_starting(server: Any) -> None:
    """Remove the metrics directory that `saga-orchestrator api` created for this run only,
    when the master exits: at a normal stop, and also when gunicorn gives up because no worker
    could boot (it then exits with a traceback and does not call `on_exit`)."""
    own = os.environ.get("SAGA_PROMETHEUS_TMP_DIR")
    if own and own == os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        atexit.register(_remove_dir, own, os.getpid())


def _remove_dir(path: str, master_pid: int) -> None:
    # Forked workers inherit the atexit hook and run it when they exit: only the master acts.
    if os.getpid() == master_pid:
        shutil.rmtree(path, ignore_errors=True)


def post_worker_init(worker: Any) -> None:
    """Freeze what the worker loaded (Flask, Celery, kombu, marshmallow: about 74,000 objects)
    out of the garbage collector's reach. Otherwise every full collection walks them all
    while a request waits: one per 3,000 `POST /saga/start`, taking 29-51 ms (measured), the
    worst stalls of the API under load (docs/performance.md). With them frozen, 3,000 requests
    made no full collection. The objects stay; only the scans stop."""
    import gc

    gc.collect()
    gc.freeze()


def worker_exit(server: Any, worker: Any) -> None:
    """Export the spans a worker still buffers before it goes (sagas/tracing.py)."""
    from sagas import tracing

    tracing.shutdown()
