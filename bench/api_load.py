"""The API under a fixed request rate from a second process: `POST /saga/start` and
`GET /saga/{id}/status` on gunicorn, p50/p99.

    python -m bench.api_load [--rate 200] [--seconds 10]

Requests are sent on schedule (open loop: a slow answer does not delay the next request),
from a thread pool, each thread with its own keep-alive connection.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench.run import ROOT, start_redis
from tests.conftest import free_port, worker_command

KEY = "bench-key"


def load(base: str, rate: float, seconds: float, request: Any) -> dict[str, Any]:
    local = threading.local()
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()

    def one(i: int) -> None:
        nonlocal errors
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(
                base_url=base, headers={"X-API-Key": KEY}, timeout=10
            )
        t0 = time.perf_counter()
        ok = request(client, i)
        elapsed = time.perf_counter() - t0
        with lock:
            latencies.append(elapsed)
            errors += 0 if ok else 1

    total = int(rate * seconds)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=32) as pool:
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, i)
    wall = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100)
    return {
        "requests": total,
        "errors": errors,
        "achieved_rps": round(total / wall, 1),
        "p50_ms": round(q[49] * 1000, 2),
        "p99_ms": round(q[98] * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--out", default=str(ROOT / "bench" / "api_results.json"))
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="saga-api-bench-"))
    server, url = start_redis(workdir, aof=True)
    prefix = f"apibench-{uuid.uuid4().hex[:6]}:"
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "REDIS_URL": url,
        "SAGA_KEY_PREFIX": prefix,
        "SAGA_QUEUE": f"{prefix}q",
        "SAGA_API_KEYS": KEY,
        "MAX_CONCURRENT_SAGAS": "1000000",
        "WEB_CONCURRENCY": "2",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    cli = str(Path(sys.executable).parent / "saga-orchestrator")
    procs = [
        subprocess.Popen(
            [cli, "api", "--bind", f"127.0.0.1:{port}"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            worker_command(env["SAGA_QUEUE"], concurrency=2, loglevel="WARNING"),
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while True:
            try:
                if httpx.get(f"{base}/openapi.json").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, "the API did not start"
            time.sleep(0.1)
        body = {
            "saga_type": "apibench",
            "steps": [{"name": "a", "action": {"task": "builtin.noop", "args": {}}}],
        }
        ids: list[str] = []

        def start(client: httpx.Client, i: int) -> bool:
            response = client.post("/saga/start", json=body)
            if response.status_code == 202:
                ids.append(response.json()["saga_id"])
            return response.status_code == 202

        def status(client: httpx.Client, i: int) -> bool:
            return client.get(f"/saga/{ids[i % len(ids)]}/status").status_code == 200

        load(base, args.rate, 2, start)  # warm-up: connections, imports, script loading
        results = {
            "rate": args.rate,
            "seconds": args.seconds,
            "gunicorn_workers": 2,
            "celery_worker": "prefork -c 2",
            "redis": "AOF everysec",
            "post_saga_start": load(base, args.rate, args.seconds, start),
            "get_saga_status": load(base, args.rate, args.seconds, status),
        }
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
        server.terminate()
        server.wait(10)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
