"""Saga throughput and latency against a plain Celery chain of the same no-op steps, on the
same Redis and worker, in one run. Writes a JSON file of results.

    python -m bench.run [--sagas 1000] [--latency 200] [--persistence aof|none|both]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STEPS = 5


def start_redis(workdir: Path, aof: bool) -> tuple[subprocess.Popen[bytes], str]:
    from tests.conftest import start_redis_server

    persistence = (
        ("--appendonly", "yes", "--appendfsync", "everysec") if aof else ("--appendonly", "no")
    )
    extra = os.environ.get("BENCH_REDIS_ARGS", "").split()  # e.g. "--hash-max-listpack-value 1024"
    return start_redis_server(workdir, *persistence, *extra)


def start_worker(
    env: dict[str, str], log: Path, pool: str, concurrency: int
) -> subprocess.Popen[bytes]:
    from tests.conftest import worker_command

    argv = worker_command(
        env["SAGA_QUEUE"],
        pool=pool,
        concurrency=concurrency,
        loglevel="WARNING",
        include=("bench.tasks",),
    )
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    time.sleep(3)  # the worker's "ready" line is below WARNING: give it time to connect
    return proc


def saga_definition() -> dict[str, Any]:
    return {
        "saga_type": "bench",
        "steps": [
            {"name": f"s{i}", "action": {"task": "builtin.noop", "args": {}}} for i in range(STEPS)
        ],
    }


def run_once(aof: bool, sagas: int, latency: int, pool: str, concurrency: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="saga-bench-"))
    server, url = start_redis(workdir, aof)
    prefix = f"bench-{uuid.uuid4().hex[:6]}:"
    env = {
        "REDIS_URL": url,
        "SAGA_KEY_PREFIX": prefix,
        "SAGA_QUEUE": f"{prefix}q",
        "MAX_CONCURRENT_SAGAS": "1000000",
        "SAGA_TIMEOUT_SECONDS": "3600",
    }
    os.environ.update(env)
    import redis
    from celery import chain

    import wsgi  # noqa: F401  (Celery configured from this environment)
    from bench.tasks import done, noop
    from sagas.settings import Settings
    from tasks.runtime import build_engine

    worker = start_worker(env, workdir / "worker.log", pool, concurrency)
    engine = build_engine(Settings.from_env())
    r = redis.Redis.from_url(url)
    completed = engine.store.keys.status("COMPLETED")
    queue = env["SAGA_QUEUE"]
    result: dict[str, Any] = {
        "persistence": "aof everysec" if aof else "none",
        "pool": f"{pool} -c {concurrency}",
    }
    try:
        definition = saga_definition()

        # Throughput: everything submitted at once, until the last one has finished.
        memory_before = int(r.info("memory")["used_memory"])
        t0 = time.perf_counter()
        for _ in range(sagas):
            engine.start(definition)
        while r.zcard(completed) < sagas:
            time.sleep(0.005)
        saga_s = time.perf_counter() - t0
        memory_per_saga = (int(r.info("memory")["used_memory"]) - memory_before) / sagas
        sample = str(r.zrange(completed, 0, 0)[0].decode())
        per_key = {
            "saga hash": r.memory_usage(engine.store.keys.saga(sample)),
            "history list": r.memory_usage(engine.store.keys.history(sample)),
            "hash encoding": r.object("encoding", engine.store.keys.saga(sample)).decode(),
        }

        t0 = time.perf_counter()
        for _ in range(sagas):
            chain(
                *[noop.si() for _ in range(STEPS - 1)], done.si("bench:plain", "bench:unused")
            ).apply_async(queue=queue)
        while int(r.get("bench:plain") or 0) < sagas:
            time.sleep(0.005)
        plain_s = time.perf_counter() - t0

        # Latency: one at a time. Both sides are waited for the same way: their end is
        # published on a channel (the saga's by the transition that finishes it).
        pubsub = r.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(engine.store.keys.finished, "bench:done")

        def wait_for(text: str) -> None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                # None also when a subscribe confirmation was swallowed: not a timeout.
                message = pubsub.get_message(timeout=1)
                if message is not None and message["data"].decode().startswith(text):
                    return
            raise AssertionError(f"no end of {text}")

        saga_lat, plain_lat = [], []
        for _ in range(latency):
            t0 = time.perf_counter()
            saga_id = engine.start(definition).saga["saga_id"]
            wait_for(saga_id)
            saga_lat.append(time.perf_counter() - t0)
        for _ in range(latency):
            marker = uuid.uuid4().hex
            t0 = time.perf_counter()
            chain(*[noop.si() for _ in range(STEPS - 1)], done.si("bench:lat", marker)).apply_async(
                queue=queue
            )
            wait_for(marker)
            plain_lat.append(time.perf_counter() - t0)
        pubsub.close()

        def pct(values: list[float], q: float) -> float:
            return round(statistics.quantiles(values, n=100)[int(q) - 1] * 1000, 2)

        info = r.info("memory")
        result.update(
            {
                "sagas": sagas,
                "saga_per_s": round(sagas / saga_s, 1),
                "saga_steps_per_s": round(sagas * STEPS / saga_s, 1),
                "plain_chains_per_s": round(sagas / plain_s, 1),
                "throughput_ratio_saga_over_plain": round(plain_s / saga_s, 3),
                "latency_runs": latency,
                "saga_latency_ms": {"p50": pct(saga_lat, 50), "p99": pct(saga_lat, 99)},
                "plain_latency_ms": {"p50": pct(plain_lat, 50), "p99": pct(plain_lat, 99)},
                "latency_ratio_p50_saga_over_plain": round(
                    statistics.median(saga_lat) / statistics.median(plain_lat), 3
                ),
                "redis_used_memory_bytes": info["used_memory"],
                "redis_bytes_per_finished_saga": round(memory_per_saga),
                "redis_one_finished_saga": per_key,
                "finished_sagas_stored": r.zcard(completed),
            }
        )
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        server.terminate()  # always, even when the worker had to be killed
        server.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sagas", type=int, default=1000)
    parser.add_argument("--latency", type=int, default=200)
    parser.add_argument("--persistence", choices=["aof", "none", "both"], default="both")
    parser.add_argument("--pool", default="prefork")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results.json"))
    args = parser.parse_args()
    modes = {"aof": [True], "none": [False], "both": [True, False]}[args.persistence]
    runs = []
    for aof in modes:  # each in its own process: Celery is configured once per process
        code = (
            f"import json,bench.run as b; print(json.dumps(b.run_once({aof}, {args.sagas}, "
            f"{args.latency}, {args.pool!r}, {args.concurrency})))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "steps_per_saga": STEPS,
        "runs": runs,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
