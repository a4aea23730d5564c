"""The peer of `bench.e2e`: DBOS Transact (durable workflows in Python, state in PostgreSQL)
running the same five no-op steps as a workflow, measured the same way.

    python -m bench.dbos_peer [--workflows 1000] [--latency 100] [--threads 8]

A database of its own is created on BENCH_POSTGRES_URL's server (default the trust-auth
PostgreSQL on 127.0.0.1:5432) and dropped at the end. Workflows run in this process, as DBOS
runs them; `--threads` client threads start them, as the API's clients do for sagas. The CPU
of this process and of the PostgreSQL server's processes (all of them: the server is shared)
is read from /proc. Prints one JSON line; `{"skipped": reason}` when PostgreSQL or the dbos
package is not there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.run import STEPS, cpu_seconds

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def postgres_cpu() -> float:
    """CPU seconds of every live `postgres` process (the server and its backends)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == "postgres":
                total += cpu_seconds(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def measure(workflows: int, latency: int, threads: int) -> dict[str, Any]:
    import psycopg
    from dbos import DBOS

    admin_url = os.environ.get("BENCH_POSTGRES_URL", DEFAULT_URL)
    database = f"dbos_bench_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
    except psycopg.OperationalError as exc:
        return {"skipped": f"PostgreSQL at {admin_url} did not answer: {exc}"}
    url = admin_url.rsplit("/", 1)[0] + f"/{database}"
    DBOS(config={"name": "saga-bench-peer", "system_database_url": url, "log_level": "WARNING"})

    @DBOS.step()
    def noop(i: int) -> int:
        return i

    @DBOS.workflow()
    def five_noops() -> int:
        for i in range(STEPS):
            noop(i)
        return STEPS

    DBOS.launch()
    try:
        for _ in range(10):  # warm-up: connections, statements
            DBOS.start_workflow(five_noops).get_result()
        one = []
        for _ in range(latency):
            t0 = time.perf_counter()
            DBOS.start_workflow(five_noops).get_result()
            one.append((time.perf_counter() - t0) * 1000)
        cpu0, pg0, t0 = time.process_time(), postgres_cpu(), time.perf_counter()
        handles: list[Any] = []
        lock = threading.Lock()

        def starter(count: int) -> None:
            for _ in range(count):
                handle = DBOS.start_workflow(five_noops)
                with lock:
                    handles.append(handle)

        share = [workflows // threads + (k < workflows % threads) for k in range(threads)]
        started = [threading.Thread(target=starter, args=(c,)) for c in share]
        for thread in started:
            thread.start()
        for thread in started:
            thread.join()
        for handle in handles:
            handle.get_result()
        seconds = time.perf_counter() - t0
        process_ms = (time.process_time() - cpu0) * 1000 / workflows
        postgres_ms = (postgres_cpu() - pg0) * 1000 / workflows
    finally:
        DBOS.destroy()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
    q = statistics.quantiles(one, n=100) if len(one) > 1 else one * 99
    return {
        "dbos_version": _version(),
        "workflows": workflows,
        "starter_threads": threads,
        "seconds": round(seconds, 3),
        "per_s": round(workflows / seconds, 1),
        "cpu_ms_per_workflow": {
            "process": round(process_ms, 3),
            "postgres (whole server)": round(postgres_ms, 3),
        },
        "one_at_a_time_ms": {
            "runs": latency,
            "p50": round(statistics.median(one), 2),
            "p99": round(q[98], 2),
        },
    }


def _version() -> str:
    from importlib.metadata import version

    return version("dbos")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument("--latency", type=int, default=100)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    try:
        import dbos  # noqa: F401
    except ImportError:
        print(json.dumps({"skipped": "the dbos package is not installed (make install-bench)"}))
        return
    print(json.dumps(measure(args.workflows, args.latency, args.threads)))


if __name__ == "__main__":
    main()
