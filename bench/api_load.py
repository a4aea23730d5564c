"""The API under a fixed request rate from a second process: `POST /saga/start` and
`GET /saga/{id}/status` on gunicorn, p50/p99.

    python -m bench.api_load [--rate 200] [--seconds 10] [--web-workers 4]

The load comes from `hey` (Go, Debian's package), which writes every request's time as CSV;
the percentiles are computed here. One `hey -c 1` per client, each at rate / CLIENTS
requests/s, started 1 / rate seconds apart: requests arrive evenly spaced. (One `hey -c 20`
ticks all its workers together, so requests arrived in bursts of 20 and queued behind each
other: a p50 of 21 ms for a 4 ms request. A Python load generator on the same two cores
measured its own GIL: 2-3 ms at the median for a 0.5 ms request.) Two scenarios, on a fresh
redis-server with AOF everysec:
- "api alone": gunicorn only; the started sagas wait in the queue. This is the API tier as
  deployed, where workers run on other cores or hosts.
- "api + worker": a Celery worker (prefork -c 2) on the same two cores runs the started
  one-step sagas meanwhile, so that both tiers compete for the CPU.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.run import ROOT, start_redis
from tests.conftest import free_port, worker_command

KEY = "bench-key"
CLIENTS = 20  # hey processes; each sends at most rate / CLIENTS requests per second
BODY = {
    "saga_type": "apibench",
    "steps": [{"name": "a", "action": {"task": "builtin.noop", "args": {}}}],
}


def hey(url: str, rate: float, seconds: float, *, body: dict[str, Any] | None) -> dict[str, Any]:
    """`hey` at `rate` requests/s for `seconds`; the percentiles of every request's time."""
    argv = ["hey", "-z", f"{seconds}s", "-c", "1", "-q", str(rate / CLIENTS)]
    argv += ["-H", f"X-API-Key: {KEY}", "-o", "csv"]
    if body is not None:
        argv += ["-m", "POST", "-T", "application/json", "-d", json.dumps(body)]
    clients = []
    for _ in range(CLIENTS):
        clients.append(subprocess.Popen([*argv, url], stdout=subprocess.PIPE, text=True))
        time.sleep(1 / rate)
    rows = []
    for client in clients:
        out, _ = client.communicate()
        assert client.returncode == 0, "hey failed"
        rows += list(csv.DictReader(io.StringIO(out)))
    latencies = sorted(float(row["response-time"]) for row in rows)
    ok = sum(1 for row in rows if row["status-code"] in ("200", "202"))
    q = statistics.quantiles(latencies, n=100)
    return {
        "requests": len(rows),
        "errors": len(rows) - ok,
        "achieved_rps": round(len(rows) / seconds, 1),
        "p50_ms": round(q[49] * 1000, 2),
        "p99_ms": round(q[98] * 1000, 2),
        "max_ms": round(latencies[-1] * 1000, 2),
    }


def wait_for_api(base: str) -> None:
    deadline = time.time() + 30
    while True:
        try:
            if httpx.get(f"{base}/openapi.json").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.time() < deadline, "the API did not start"
        time.sleep(0.1)


def scenario(env: dict[str, str], rate: float, seconds: float, worker: bool) -> dict[str, Any]:
    """Start the API (and a worker), warm up, then load each endpoint in turn."""
    port = free_port()
    cli = str(Path(sys.executable).parent / "saga-orchestrator")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [subprocess.Popen([cli, "api", "--bind", f"127.0.0.1:{port}"], env=env, **quiet)]
    if worker:
        argv = worker_command(env["SAGA_QUEUE"], concurrency=2, loglevel="WARNING")
        procs.append(subprocess.Popen(argv, env=env, cwd=ROOT, **quiet))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_api(base)
        hey(f"{base}/saga/start", rate, 2, body=BODY)  # warm-up: imports, scripts, pools
        started = hey(f"{base}/saga/start", rate, seconds, body=BODY)
        saga_id = httpx.post(f"{base}/saga/start", json=BODY, headers={"X-API-Key": KEY})
        status_url = f"{base}/saga/{saga_id.json()['saga_id']}/status"
        return {
            "celery_worker": "prefork -c 2, same cores" if worker else "none",
            "post_saga_start": started,
            "get_saga_status": hey(status_url, rate, seconds, body=None),
        }
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--web-workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument("--out", default=str(ROOT / "bench" / "api_results.json"))
    args = parser.parse_args()
    if shutil.which("hey") is None:
        raise SystemExit("hey is not installed: `make bench` installs Debian's package")
    workdir = Path(tempfile.mkdtemp(prefix="saga-api-bench-"))
    server, url = start_redis(workdir, aof=True)
    prefix = f"apibench-{uuid.uuid4().hex[:6]}:"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "REDIS_URL": url,
        "SAGA_KEY_PREFIX": prefix,
        "SAGA_QUEUE": f"{prefix}q",
        "SAGA_API_KEYS": KEY,
        "MAX_CONCURRENT_SAGAS": "1000000",
        "WEB_CONCURRENCY": str(args.web_workers),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    try:
        results = {
            "rate": args.rate,
            "seconds": args.seconds,
            "load_generator": f"{CLIENTS} hey processes, evenly spaced",
            "gunicorn_workers": args.web_workers,
            "redis": "AOF everysec",
            "api alone": scenario(env, args.rate, args.seconds, worker=False),
            "api + worker": scenario(env, args.rate, args.seconds, worker=True),
        }
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
