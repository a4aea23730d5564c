"""Redis memory per finished saga, and `GET /saga` and dashboard latency with many sagas stored.

    python -m bench.listing [--sizes 100000 1000000] [--queries 100]

Fills a fresh redis-server (AOF everysec) with five-step `builtin.noop` sagas through the
store's real Lua transitions, pipelined (no worker: executing a million sagas through Celery
would take hours here, and listing only reads what the transitions wrote). At each size it
measures `used_memory` per saga and times the listing queries and the dashboard's pages
(`/ui`, logged in as a person would be) through a real gunicorn API.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
import redis

from bench.run import ROOT
from sagas.definition import parse_definition
from sagas.registry import load_task_modules
from sagas.settings import Settings
from sagas.store import RedisStore
from tests.conftest import free_port, start_redis_server

KEY = "bench-key"
STEPS = 5
TYPES = 5
BATCH = 200  # sagas per pipeline


class PipelinedStore(RedisStore):
    """The store with its transitions queued on a pipeline instead of run one by one: the
    same scripts and arguments, only fewer round trips."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        super().__init__(client, prefix, max_running=10**9)
        self.pipe = client.pipeline(transaction=False)

    def _invoke(self, name: str, keys: list[str], args: list[Any]) -> Any:
        self._scripts[name](keys=keys, args=args, client=self.pipe)
        return ["queued"]

    def execute(self) -> list[str]:
        return [str(answer[0]) for answer in self.pipe.execute()]


def definitions(settings: Settings) -> list[Any]:
    """One definition per saga type; the payload does not matter to listing."""
    return [
        parse_definition(
            {
                "saga_type": f"type{t}",
                "steps": [
                    {"name": f"s{i}", "action": {"task": "builtin.noop", "args": {}}}
                    for i in range(STEPS)
                ],
            },
            settings,
        )
        for t in range(TYPES)
    ]


def fill(store: PipelinedStore, defs: list[Any], first: int, count: int) -> None:
    """Sagas `first`.. `first + count - 1`: of five types; one in 50 COMPENSATED (its first
    step failed), one in 1000 left RUNNING, the rest COMPLETED; one in ten has a
    correlation id of its own, shared with one other saga."""
    for start in range(first, first + count, BATCH):
        for i in range(start, min(start + BATCH, first + count)):
            saga_id = str(uuid.uuid4())
            corr = f"corr-{i // 20}" if i % 10 == 0 else saga_id
            store.create(saga_id, defs[i % TYPES], corr)
            if i % 1000 == 1:
                continue
            if i % 50 == 0:
                store.step_begin(saga_id, 0, "L")
                store.step_fail(saga_id, 0, "L", "no", uncertain=False, reason="error")
                continue
            for step in range(STEPS):
                store.step_begin(saga_id, step, f"L{step}")
                store.step_complete(saga_id, step, f"L{step}", 1, "null")
        answers = store.execute()
        refused = [a for a in answers if a not in ("created", "run", "next", "saga_completed")]
        assert refused in ([], ["compensate"] * len(refused)), refused[:5]


def queries(created: tuple[int, int], size: int) -> dict[str, str]:
    """The listing queries timed, over `size` sagas created between `created` (first, last;
    epoch ms). The correlation id is one of a saga near the middle (see `fill`)."""
    middle = (created[0] + created[1]) // 2
    i = size // 2 // 20 * 20
    corr, status = f"corr-{i // 20}", "COMPENSATED" if i % 50 == 0 else "COMPLETED"
    span = (created[1] - created[0]) // 20  # a window of about 10 % of the sagas

    def iso(ms: int) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"

    window = f"created_after={iso(middle - span)}&created_before={iso(middle + span)}"
    return {
        "no filter": "",
        "status": "status=COMPLETED",
        "saga_type": "saga_type=type3",
        "saga_type + status": "saga_type=type0&status=COMPENSATED",
        "correlation_id": f"correlation_id={corr}",
        "status + created window": f"status=COMPLETED&{window}",
        "all filters": f"saga_type=type0&status={status}&correlation_id={corr}&{window}",
        "status, page 100": "status=COMPLETED&page=100",
    }


def time_queries(base: str, created: tuple[int, int], size: int, repeat: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with httpx.Client(base_url=base, headers={"X-API-Key": KEY}, timeout=30) as client:
        for name, query in queries(created, size).items():
            latencies = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                response = client.get(f"/saga?{query}")
                latencies.append(time.perf_counter() - t0)
                assert response.status_code == 200, response.text
            body = response.json()
            q = statistics.quantiles(latencies, n=100)
            out[name] = {
                "query": query,
                "total": body["total"],
                "items": len(body["items"]),
                "p50_ms": round(q[49] * 1000, 2),
                "p99_ms": round(q[98] * 1000, 2),
            }
    return out


def dashboard_pages(created: tuple[int, int], size: int, saga_id: str) -> dict[str, str]:
    """The dashboard's pages timed: what a person opens at 3 a.m., and what the pages fetch
    every few seconds while they are open."""
    windowed = queries(created, size)["status + created window"]  # status=COMPLETED&...
    return {
        "overview": "/ui/",
        "overview, live part": "/ui/overview/live",
        "list, no filter": "/ui/sagas",
        "list, status + created window": f"/ui/sagas?{windowed}",
        "list rows, saga_type + status": "/ui/sagas/rows?saga_type=type0&status=COMPENSATED",
        "a saga": f"/ui/sagas/{saga_id}",
    }


def time_dashboard(
    base: str, created: tuple[int, int], size: int, saga_id: str, repeat: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with httpx.Client(base_url=base, timeout=30) as client:
        form = client.get("/ui/login").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert token is not None, "no CSRF token on the login form"
        answer = client.post("/ui/login", data={"key": KEY, "csrf_token": token.group(1)})
        assert answer.status_code == 302, answer.text[:500]
        for name, path in dashboard_pages(created, size, saga_id).items():
            live = {"HX-Request": "true"} if "live" in path or "/rows" in path else {}
            latencies = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                response = client.get(path, headers=live)
                latencies.append(time.perf_counter() - t0)
                assert response.status_code == 200, (path, response.status_code)
            q = statistics.quantiles(latencies, n=100)
            out[name] = {
                "path": path,
                "bytes": len(response.content),
                "p50_ms": round(q[49] * 1000, 2),
                "p99_ms": round(q[98] * 1000, 2),
            }
    return out


def start_api(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cli = str(Path(sys.executable).parent / "saga-orchestrator")
    proc = subprocess.Popen(
        [cli, "api", "--bind", f"127.0.0.1:{port}"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            if httpx.get(f"{base}/openapi.json").status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        assert time.time() < deadline, "the API did not start"
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--out", default=str(ROOT / "bench" / "listing_results.json"))
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="saga-listing-bench-"))
    server, url = start_redis_server(workdir, "--appendonly", "yes", "--appendfsync", "everysec")
    prefix = f"listbench-{uuid.uuid4().hex[:6]}:"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "REDIS_URL": url,
        "SAGA_KEY_PREFIX": prefix,
        "SAGA_API_KEYS": KEY,
        "WEB_CONCURRENCY": "1",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    settings = Settings.from_env(env)
    load_task_modules(settings.task_modules)
    client = redis.Redis.from_url(url, decode_responses=True)
    store = PipelinedStore(client, prefix)
    defs = definitions(settings)
    api, base = start_api(env)
    results: dict[str, Any] = {"redis": "AOF everysec", "steps_per_saga": STEPS, "sizes": []}
    try:
        baseline = int(client.info("memory")["used_memory"])
        stored = 0
        for size in sorted(args.sizes):
            t0 = time.perf_counter()
            fill(store, defs, stored, size - stored)
            fill_s = time.perf_counter() - t0
            stored = size
            used = int(client.info("memory")["used_memory"])
            created = tuple(
                int(score)
                for _, score in (
                    client.zrange(store.keys.all, 0, 0, withscores=True)
                    + client.zrange(store.keys.all, -1, -1, withscores=True)
                )
            )
            entry = {
                "sagas": size,
                "fill_seconds": round(fill_s, 1),
                "redis_used_memory_bytes": used,
                "bytes_per_saga": round((used - baseline) / size),
                "queries": time_queries(base, created, size, args.queries),  # type: ignore[arg-type]
                "dashboard": time_dashboard(
                    base,
                    created,  # type: ignore[arg-type]
                    size,
                    str(client.zrange(store.keys.all, size // 2, size // 2)[0]),
                    args.queries,
                ),
            }
            results["sizes"].append(entry)
            print(json.dumps(entry, indent=2), flush=True)
    finally:
        api.terminate()
        api.wait(30)
        server.terminate()
        server.wait(60)
        shutil.rmtree(workdir, ignore_errors=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
