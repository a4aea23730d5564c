"""What tracing costs per saga: the CPU the API (gunicorn, one worker) and a Celery worker
spend on N sagas of three HTTP steps, with tracing off and with it on (OTLP over HTTP to a
local receiver that decodes and keeps every span, tests/otlp.py), read from /proc.

    .venv/bin/python -m bench.tracing --sagas 300 --repeat 2

Each round starts both processes afresh, warms them up with a few sagas, then submits N
sagas through `POST /saga/start` and waits until all are COMPLETED and (on) their spans have
been received. The figures are CPU milliseconds per saga, main process and pool children
together; results go to bench/tracing_results.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.run import ROOT, cpu_seconds, start_stub, stop
from tests.conftest import free_port, worker_command
from tests.otlp import OtlpReceiver

KEY = "bench-key"
WARMUP = 10


def tree_cpu(pid: int) -> float:
    """CPU seconds of `pid` and its children (the pool processes), from /proc."""
    total = cpu_seconds(pid)
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for child in children.read_text().split() if children.exists() else []:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # it just ended
            total += tree_cpu(int(child))
    return total


def _attempt_spans(receiver: OtlpReceiver) -> int:
    return len([s for s in receiver.spans if s["name"].startswith("step ")])


def definition(n: int) -> dict[str, Any]:
    return {
        "saga_type": "bench_traced",
        "steps": [
            {
                "name": f"s{k}",
                "action": {"service": "svc", "method": "POST", "path": f"/ok/{n}/{k}"},
                "compensation": {"service": "svc", "method": "DELETE", "path": f"/ok/{n}/{k}"},
            }
            for k in range(3)
        ],
    }


def one_round(redis_url: str, stub_url: str, sagas: int, traced: bool) -> dict[str, Any]:
    prefix = f"bench-trace-{uuid.uuid4().hex[:6]}:"
    receiver = OtlpReceiver().start()
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "REDIS_URL": redis_url,
        "SAGA_KEY_PREFIX": prefix,
        "SAGA_QUEUE": f"{prefix}sagas",
        "SAGA_API_KEYS": KEY,
        "SAGA_SERVICES": json.dumps({"svc": stub_url}),
        "WEB_CONCURRENCY": "1",
        "MAX_CONCURRENT_SAGAS": "100000",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    for name in [k for k in env if k.startswith("OTEL_")]:
        env.pop(name)
    if traced:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.url
    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    api_log = (logs / f"{prefix.strip(':')}-api.log").open("wb")
    worker_log = (logs / f"{prefix.strip(':')}-worker.log").open("wb")
    cli = str(Path(sys.executable).parent / "saga-orchestrator")
    api = subprocess.Popen(
        [cli, "api", "--bind", f"127.0.0.1:{port}"], env=env, stdout=api_log, stderr=api_log
    )
    worker = subprocess.Popen(
        worker_command(env["SAGA_QUEUE"], concurrency=2, loglevel="WARNING"),
        cwd=ROOT,
        env=env,
        stdout=worker_log,
        stderr=worker_log,
    )
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": KEY}, timeout=30
    )
    store = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        deadline = time.time() + 60
        while True:
            try:
                if client.get("/health/").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise RuntimeError("the API or the worker did not come up")
            time.sleep(0.2)

        def run(count: int) -> None:
            before = int(store.zcard(f"{prefix}idx:status:COMPLETED"))
            for n in range(count):
                answer = client.post("/saga/start", json=definition(n))
                assert answer.status_code == 202, answer.text
            while int(store.zcard(f"{prefix}idx:status:COMPLETED")) < before + count:
                time.sleep(0.05)

        run(WARMUP)
        time.sleep(1.5)  # the warm-up's spans leave
        spans_before = len(receiver.spans)
        steps_before = _attempt_spans(receiver)
        api_cpu, worker_cpu = tree_cpu(api.pid), tree_cpu(worker.pid)
        started = time.monotonic()
        run(sagas)
        elapsed = time.monotonic() - started
        if traced:  # until the last batch is exported (its CPU counts)
            want = steps_before + sagas * 3
            end = time.time() + 30
            while _attempt_spans(receiver) < want:
                if time.time() > end:
                    break
                time.sleep(0.1)
            time.sleep(0.5)
        api_ms = (tree_cpu(api.pid) - api_cpu) * 1000 / sagas
        worker_ms = (tree_cpu(worker.pid) - worker_cpu) * 1000 / sagas
        spans = len(receiver.spans) - spans_before
    finally:
        client.close()
        stop(worker)
        stop(api)
        receiver.stop()
        api_log.close()
        worker_log.close()
        for key in store.scan_iter(match=f"{prefix}*", count=1000):
            store.delete(key)
    for log in (api_log, worker_log):
        Path(log.name).unlink()  # kept only if the round failed
    return {
        "traced": traced,
        "sagas": sagas,
        "api_cpu_ms_per_saga": round(api_ms, 3),
        "worker_cpu_ms_per_saga": round(worker_ms, 3),
        "spans_per_saga": round(spans / sagas, 2),
        "seconds": round(elapsed, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sagas", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "tracing_results.json"))
    args = parser.parse_args()
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    stub, stub_url = start_stub("asyncio")
    rounds = []
    try:
        for _ in range(args.repeat):
            for traced in (False, True):
                result = one_round(redis_url, stub_url, args.sagas, traced)
                print(json.dumps(result), flush=True)
                rounds.append(result)
    finally:
        stop(stub)
    summary = {}
    for traced in (False, True):
        mine = [r for r in rounds if r["traced"] == traced]
        summary["on" if traced else "off"] = {
            key: statistics.median(r[key] for r in mine)
            for key in ("api_cpu_ms_per_saga", "worker_cpu_ms_per_saga", "spans_per_saga")
        }
    print(json.dumps(summary, indent=2))
    Path(args.out).write_text(json.dumps({"rounds": rounds, "median": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
