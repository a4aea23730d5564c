"""Sagas as a user meets them, against plain Celery, in one run: what a saga costs end to end.

    python -m bench.e2e [--sagas 1000] [--threads 8] [--latency 100] [--events on off]
                        [--dbos | --no-dbos] [--profile] [--out bench/e2e_results.json]

For each setting of task events (SAGA_TASK_EVENTS: on, as under Flower, and off), in a
process of its own with a fresh redis-server (no persistence) and two `--pool solo` workers
(prefetch 1, acks late: celeryconfig):
- **sagas through the API**: a load generator in another process (`bench.load`, `--threads`
  client threads) POSTs `--sagas` five-step `builtin.noop` sagas to `/saga/start` on a real
  gunicorn; the run ends when the last one's end is published on `<prefix>finished`;
- **plain chains**: as many chains of five no-op tasks published straight to the broker from
  this process, the last task publishing its end;
- **CPU per saga (or chain) by process**, from /proc: the workers, the API (gunicorn master
  and workers), Redis, the load generator; and the API's CPU per `GET /saga/{id}/status`;
- **one at a time**, alternated: a saga's server-side time (its `created_at` to
  `finished_at`, Redis clock), the client's view (POST sent to its end published, no
  polling), and a plain chain (published to its end published).
With `--profile`, one more batch of sagas runs while py-spy samples the workers and the API's
workers (bench/profile.py): the functions with the largest shares of their CPU, per process
kind (not counted in the figures above). Then DBOS Transact (`--dbos`, on PostgreSQL at
BENCH_POSTGRES_URL, default 127.0.0.1:5432) runs the same five no-op steps as a workflow
(bench/dbos_peer.py).
"""

from __future__ import annotations

import argparse
import contextlib
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

import httpx

from bench.listing import start_api
from bench.run import (
    ROOT,
    STEPS,
    WARMUP,
    Ends,
    configure,
    cpu_seconds,
    noop_chain,
    saga_definition,
    start_redis,
    start_worker,
    stop,
)

KEY = "bench-e2e-key"
WORKERS = 2
STATUS_READS = 500


def tree_cpu(pids: list[int]) -> float:
    """CPU seconds used so far by these processes and their live children (gunicorn workers,
    pool processes)."""
    total = 0.0
    for pid in pids:
        children = subprocess.run(
            ["pgrep", "-P", str(pid)], capture_output=True, text=True
        ).stdout.split()
        for one in [pid, *map(int, children)]:
            with contextlib.suppress(FileNotFoundError):
                total += cpu_seconds(one)
    return total


class Meter:
    """CPU of named groups of processes between `start()` and `stop(n)`, in ms per unit."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.before: dict[str, float] = {}

    def start(self) -> None:
        self.before = {name: tree_cpu(pids) for name, pids in self.groups.items()}

    def stop(self, units: int) -> dict[str, float]:
        return {
            name: round((tree_cpu(pids) - self.before[name]) * 1000 / units, 3)
            for name, pids in self.groups.items()
        }


class Loader:
    """A `bench.load` process, started and ready before the clock starts."""

    def __init__(self, base: str, mode: str, count: int, threads: int, ids: str = "") -> None:
        argv = [sys.executable, "-m", "bench.load", base, KEY, mode, str(count), str(threads)]
        self.proc = subprocess.Popen(
            [*argv, *([ids] if ids else [])],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the load generator did not start")

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def result(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        out = json.loads(self.proc.stdout.readline())
        self.proc.wait(30)
        return dict(out)


def saga_throughput(
    base: str, ends: Ends, meter: Meter, n: int, threads: int
) -> tuple[dict[str, Any], list[str]]:
    loader = Loader(base, "start", n, threads)
    meter.groups["load generator"] = [loader.proc.pid]
    meter.start()
    t0 = time.perf_counter()
    loader.go()
    ids = ends.sagas(n)
    seconds = time.perf_counter() - t0
    cpu = meter.stop(n)
    sent = loader.result()
    del meter.groups["load generator"]
    if sent["codes"] != {"202": n}:
        raise RuntimeError(f"POST /saga/start answered {sent['codes']}")
    return {
        "sagas": n,
        "client_threads": threads,
        "seconds": round(seconds, 3),
        "per_s": round(n / seconds, 1),
        "cpu_ms_per_saga": cpu,
        "worker_cpu_ms_per_step": round(cpu["workers"] / STEPS, 3),
    }, ids


def profiled(base: str, ends: Ends, workers: list[int], api: int, n: int, threads: int) -> Any:
    """Where the CPU goes while `n` sagas run through the API: py-spy on every worker and
    every gunicorn worker (bench/profile.py)."""
    from bench.profile import Recorder

    out = Path(tempfile.mkdtemp(prefix="saga-profile-"))
    children = subprocess.run(["pgrep", "-P", str(api)], capture_output=True, text=True)
    api_workers = [int(pid) for pid in children.stdout.split()]
    recorders = [Recorder("worker", workers, out), Recorder("api", api_workers, out)]
    time.sleep(1)  # py-spy attached
    loader = Loader(base, "start", n, threads)
    loader.go()
    ends.sagas(n)
    loader.result()
    try:
        return {r.name: r.stop() for r in recorders}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def status_cost(base: str, meter: Meter, ids: list[str], threads: int) -> dict[str, Any]:
    loader = Loader(base, "status", STATUS_READS, threads, ",".join(ids[:100]))
    meter.start()
    loader.go()
    answer = loader.result()
    cpu = meter.stop(STATUS_READS)
    if answer["codes"] != {"200": STATUS_READS}:
        raise RuntimeError(f"GET /saga/<id>/status answered {answer['codes']}")
    return {"reads": STATUS_READS, "api_cpu_ms_per_read": cpu["api"], "redis_cpu_ms": cpu["redis"]}


def plain_throughput(ends: Ends, meter: Meter, queue: str, n: int) -> dict[str, Any]:
    meter.start()
    cpu0, t0 = time.process_time(), time.perf_counter()
    for i in range(n):
        noop_chain(str(i)).apply_async(queue=queue)
    ends.chains(n)
    seconds = time.perf_counter() - t0
    cpu = meter.stop(n)
    cpu["publisher"] = round((time.process_time() - cpu0) * 1000 / n, 3)
    return {
        "chains": n,
        "seconds": round(seconds, 3),
        "per_s": round(n / seconds, 1),
        "cpu_ms_per_chain": cpu,
        "worker_cpu_ms_per_task": round(cpu["workers"] / STEPS, 3),
    }


def one_at_a_time(base: str, ends: Ends, store: Any, queue: str, runs: int) -> dict[str, Any]:
    """Alternately one saga through the API and one plain chain, each waited for by its
    published end: a drift of the machine weighs on both alike."""
    body = saga_definition(http=False)
    server, client_view, plain = [], [], []
    with httpx.Client(base_url=base, headers={"X-API-Key": KEY}, timeout=30) as http:
        for _ in range(runs):
            t0 = time.perf_counter()
            saga_id = http.post("/saga/start", json=body).json()["saga_id"]
            ends.one(saga_id)
            client_view.append((time.perf_counter() - t0) * 1000)
            doc = store.get(saga_id)
            server.append(ms(doc["finished_at"]) - ms(doc["created_at"]))
            marker = uuid.uuid4().hex
            t0 = time.perf_counter()
            noop_chain(marker).apply_async(queue=queue)
            ends.one(marker)
            plain.append((time.perf_counter() - t0) * 1000)
    p50 = {k: statistics.median(v) for k, v in [("s", server), ("c", client_view), ("p", plain)]}
    return {
        "runs": runs,
        "saga_server_side_ms": quantiles(server),
        "saga_client_view_ms": quantiles(client_view),
        "plain_chain_ms": quantiles(plain),
        "ratio_p50_server_side_over_plain": round(p50["s"] / p50["p"], 3),
        "ratio_p50_client_view_over_plain": round(p50["c"] / p50["p"], 3),
    }


def ms(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000


def quantiles(values: list[float]) -> dict[str, float]:
    q = statistics.quantiles(values, n=100) if len(values) > 1 else values * 99
    return {"p50": round(statistics.median(values), 2), "p99": round(q[98], 2)}


def session(
    events: bool, sagas: int, threads: int, latency: int, profile: bool = False
) -> dict[str, Any]:
    """One events setting: fresh Redis, two solo workers, the API, every figure."""
    workdir = Path(tempfile.mkdtemp(prefix="saga-e2e-"))
    procs: list[subprocess.Popen[Any]] = []
    try:
        server, url = start_redis(workdir, aof=False)
        procs.append(server)
        env = configure(url, {})
        extra = {"SAGA_TASK_EVENTS": "1" if events else "0", "SAGA_API_KEYS": KEY}
        os.environ.update(extra)
        env.update(extra)
        workers = [start_worker(env, workdir / f"worker{k}.log", "solo", 1) for k in range(WORKERS)]
        procs += workers
        api, base = start_api({**os.environ, "PYTHONPATH": str(ROOT)})
        procs.append(api)
        return {
            "task_events": events,
            **measure(env, base, server, workers, api, sagas, threads, latency, profile),
        }
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def measure(
    env: dict[str, str],
    base: str,
    server: subprocess.Popen[Any],
    workers: list[subprocess.Popen[Any]],
    api: subprocess.Popen[Any],
    sagas: int,
    threads: int,
    latency: int,
    profile: bool = False,
) -> dict[str, Any]:
    import redis

    import wsgi  # noqa: F401  (Celery configured from this environment, events included)
    from sagas.store import RedisStore

    client = redis.Redis.from_url(env["REDIS_URL"], decode_responses=True)
    store = RedisStore(client, env["SAGA_KEY_PREFIX"])
    ends = Ends(client, f"{env['SAGA_KEY_PREFIX']}finished")
    meter = Meter({"workers": [w.pid for w in workers], "api": [api.pid], "redis": [server.pid]})
    try:
        saga_throughput(base, ends, meter, WARMUP, threads)
        plain_throughput(ends, meter, env["SAGA_QUEUE"], WARMUP)
        saga, ids = saga_throughput(base, ends, meter, sagas, threads)
        plain = plain_throughput(ends, meter, env["SAGA_QUEUE"], sagas)
        result: dict[str, Any] = {
            "saga": saga,
            "plain": plain,
            "throughput_ratio_saga_over_plain": round(saga["per_s"] / plain["per_s"], 3),
            "worker_cpu_ratio_step_over_task": round(
                saga["worker_cpu_ms_per_step"] / plain["worker_cpu_ms_per_task"], 3
            ),
            "status": status_cost(base, meter, ids, threads),
        }
        if latency:
            result["one_at_a_time"] = one_at_a_time(base, ends, store, env["SAGA_QUEUE"], latency)
        if profile:
            pids = [w.pid for w in workers]
            result["profile"] = profiled(base, ends, pids, api.pid, sagas, threads)
        return result
    finally:
        ends.close()
        client.close()


def run_in_process(args: list[str]) -> dict[str, Any]:
    """A session (or the DBOS peer) in a fresh process: Celery is configured once per
    process, and task events are part of that configuration."""
    out = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-5000:])
        raise SystemExit(f"benchmark part {args} failed")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sagas", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--latency", type=int, default=100, help="one-at-a-time runs")
    parser.add_argument("--events", nargs="+", choices=["on", "off"], default=["on", "off"])
    parser.add_argument("--dbos", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--profile", action="store_true", help="py-spy: where the CPU goes")
    parser.add_argument("--session", choices=["on", "off"], help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(ROOT / "bench" / "e2e_results.json"))
    args = parser.parse_args()
    if args.session:  # the child process of one events setting
        on = args.session == "on"
        figures = session(on, args.sagas, args.threads, args.latency, args.profile)
        print(json.dumps(figures))
        return
    common = ["--sagas", str(args.sagas), "--threads", str(args.threads)]
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "steps": STEPS,
        "workers": f"{WORKERS} x --pool solo",
        "redis": "no persistence",
        "sessions": [],
    }
    for events in args.events:
        print(f"task events {events} ...", file=sys.stderr, flush=True)
        report["sessions"].append(
            run_in_process(
                [
                    *["-m", "bench.e2e", "--session", events, *common],
                    *["--latency", str(args.latency), *(["--profile"] if args.profile else [])],
                ]
            )
        )
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    if args.dbos:
        print("DBOS Transact ...", file=sys.stderr, flush=True)
        peer = ["-m", "bench.dbos_peer", "--workflows", str(args.sagas), "--latency"]
        report["dbos"] = run_in_process([*peer, str(args.latency), "--threads", str(args.threads)])
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
