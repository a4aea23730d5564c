"""Saga throughput and latency against plain Celery chains of the same steps (no-op tasks, or
HTTP calls to a local stub service), on the same Redis and worker, in one run, repeated for
the spread; and the no-op throughput across worker pools. Writes a JSON file of results, which
`python -m bench.plot` draws.

    python -m bench.run [--sagas 1000] [--latency 200] [--persistence aof|none|both]
                        [--repeat 3] [--stub asyncio|werkzeug] [--scaling 500]
                        [--scaling-points prefork:1,prefork:2,prefork:4,threads:4,solo:1]

Every session (one repeat of one configuration) runs in a process of its own, because Celery
is configured once per process, with a fresh redis-server, stub service and worker.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
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
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from celery import chain

from bench.tasks import DONE_CHANNEL, done, http, noop

ROOT = Path(__file__).resolve().parent.parent
STEPS = 5
WARMUP = 10  # sagas and chains of each kind run untimed first: imports, connections, scripts
IDLE_TIMEOUT = 120  # seconds without any saga or chain finishing: the run has failed
HEADLINE_POOL = "prefork:2"
SCALING_POINTS = "prefork:1,prefork:2,prefork:4,threads:4,solo:1"

# The werkzeug stub of the tests, in a process of its own, without its per-request log line.
WERKZEUG_STUB = (
    "import logging, threading; from tests.stubs import StubService; "
    "logging.getLogger('werkzeug').disabled = True; "
    "print(StubService().start().url, flush=True); threading.Event().wait()"
)
STUBS = {"asyncio": "import bench.run as b; b.serve_stub()", "werkzeug": WERKZEUG_STUB}


@dataclass(frozen=True)
class Session:
    """What one session measures, on its own Redis and worker."""

    aof: bool
    pool: str
    concurrency: int
    sagas: int
    latency: int  # one-at-a-time runs of each side; 0 for none
    http: bool  # also the throughput with HTTP steps
    stub: str  # the HTTP service those steps call: a key of STUBS


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
    wait_ready(proc, log)
    return proc


def wait_ready(worker: subprocess.Popen[bytes], log: Path) -> None:
    """Ping the worker until it answers: its "ready" line is below the WARNING level it logs
    at, and a fixed sleep is either too short on a loaded machine or wasted time."""
    from wsgi import celery_app

    deadline = time.monotonic() + 60
    while not celery_app.control.ping(timeout=0.5):
        if worker.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not start: {log.read_text()[-3000:]}")


def serve_stub() -> None:
    """A minimal HTTP/1.1 service: every request gets 200 and the JSON that the test stub's
    /ok/ path answers. It costs a fifth of the CPU per request of the werkzeug stub (measured
    0.13 vs 0.62 ms), which on two cores would be taken from the worker under test."""
    asyncio.run(_serve())


async def _serve() -> None:
    server = await asyncio.start_server(_answer, "127.0.0.1", 0)
    print(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


_answered = itertools.count(1)


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer the requests of one keep-alive connection until the client closes it."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            body = await reader.readexactly(_content_length(head))
            answer = {
                "id": f"r{next(_answered)}",
                "path": head.split(b" ", 2)[1].decode(),
                "received": json.loads(body) if body else None,
            }
            out = json.dumps(answer).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(out), out)
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def start_stub(kind: str) -> tuple[subprocess.Popen[str], str]:
    """The stub service in a process of its own, so that it does not share the submitting
    process's interpreter lock; returns (process, base URL)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", STUBS[kind]],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url:
        raise RuntimeError(f"the {kind} stub service did not start")
    return proc, url


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) that process `pid` has used so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


class Ends:
    """The ends of sagas and plain chains, as they are published: a saga's finishing
    transition PUBLISHes "<id> <status>" on `<prefix>finished`, a plain chain's last task
    publishes its marker on bench:done. Both sides are waited for the same way, and no polling
    competes with the worker for the CPU."""

    def __init__(self, client: Any, saga_channel: str) -> None:
        self.saga_channel = saga_channel
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(saga_channel, DONE_CHANNEL)

    def next(self) -> tuple[str, str]:
        """The next end: (channel, message)."""
        deadline = time.monotonic() + IDLE_TIMEOUT
        while time.monotonic() < deadline:
            # None also when a subscribe confirmation was swallowed: not a timeout.
            message = self.pubsub.get_message(timeout=1)
            if message is not None:
                return message["channel"], message["data"]
        raise TimeoutError(f"nothing finished for {IDLE_TIMEOUT} s")

    def sagas(self, count: int) -> list[str]:
        """Wait for `count` sagas to end; their ids. One that did not complete fails the run:
        its figures would not be comparable."""
        ids: list[str] = []
        while len(ids) < count:
            channel, data = self.next()
            if channel != self.saga_channel:
                continue
            saga_id, _, status = data.partition(" ")
            if status != "COMPLETED":
                raise RuntimeError(f"saga {saga_id} ended {status}")
            ids.append(saga_id)
        return ids

    def chains(self, count: int) -> None:
        """Wait for `count` plain chains to end."""
        ended = 0
        while ended < count:
            ended += self.next()[0] == DONE_CHANNEL

    def one(self, text: str) -> None:
        """Wait for the end whose message starts with `text`."""
        while not self.next()[1].startswith(text):
            pass

    def close(self) -> None:
        self.pubsub.close()


def saga_definition(http: bool) -> dict[str, Any]:
    return {
        "saga_type": "bench-http" if http else "bench",
        "steps": [{"name": f"s{i}", "action": _action(i, http)} for i in range(STEPS)],
    }


def _action(i: int, http: bool) -> dict[str, Any]:
    if http:
        return {"service": "stub", "method": "POST", "path": f"/ok/s{i}", "body": {"step": i}}
    return {"task": "builtin.noop", "args": {}}


def noop_chain(marker: str) -> Any:
    """The substrate's saga of no-op steps: STEPS tasks, the last publishing its end."""
    return chain(*[noop.si() for _ in range(STEPS - 1)], done.si(marker))


def http_chain(base: str, marker: str) -> Any:
    """The substrate's saga of HTTP steps: STEPS tasks making the same calls."""
    return chain(
        *[
            http.si(
                f"{base}/ok/s{i}", {"step": i}, f"{marker}:s{i}", marker if i == STEPS - 1 else None
            )
            for i in range(STEPS)
        ]
    )


@dataclass
class Rig:
    """What a session's measurements run on: the engine in this process, a Redis client, the
    ends being published, and the worker's queue."""

    engine: Any
    client: Any
    ends: Ends
    prefix: str
    queue: str

    def saga_batch(self, definition: dict[str, Any], n: int) -> tuple[float, str]:
        """Start `n` sagas at once; seconds until the last has completed, and one's id."""
        t0 = time.perf_counter()
        for _ in range(n):
            self.engine.start(definition)
        ids = self.ends.sagas(n)
        return time.perf_counter() - t0, ids[0]

    def chain_batch(self, make: Callable[[str], Any], n: int) -> float:
        """Send `n` plain chains at once; seconds until the last has ended."""
        t0 = time.perf_counter()
        for i in range(n):
            make(str(i)).apply_async(queue=self.queue)
        self.ends.chains(n)
        return time.perf_counter() - t0

    def one_saga(self, definition: dict[str, Any]) -> None:
        self.ends.one(self.engine.start(definition).saga["saga_id"])

    def one_chain(self) -> None:
        marker = uuid.uuid4().hex
        noop_chain(marker).apply_async(queue=self.queue)
        self.ends.one(marker)


def throughput(prefix: str, sagas: int, saga_s: float, plain_s: float) -> dict[str, float]:
    return {
        f"{prefix}saga_per_s": round(sagas / saga_s, 1),
        f"{prefix}saga_steps_per_s": round(sagas * STEPS / saga_s, 1),
        f"{prefix}plain_chains_per_s": round(sagas / plain_s, 1),
        f"{prefix}throughput_ratio_saga_over_plain": round(plain_s / saga_s, 3),
    }


def noop_figures(rig: Rig, n: int) -> dict[str, Any]:
    """Throughput with no-op steps, everything submitted at once, until the last one has
    finished; and the memory the sagas left behind."""
    definition = saga_definition(http=False)
    rig.saga_batch(definition, WARMUP)
    rig.chain_batch(noop_chain, WARMUP)
    before = memory(rig.client)
    saga_s, sample = rig.saga_batch(definition, n)
    after = memory(rig.client)
    plain_s = rig.chain_batch(noop_chain, n)
    return {
        "sagas": n,
        **throughput("", n, saga_s, plain_s),
        "redis_used_memory_bytes": after[0],
        "redis_bytes_per_finished_saga": round((after[0] - before[0]) / n),
        "redis_dataset_bytes_per_finished_saga": round((after[1] - before[1]) / n),
        "redis_one_finished_saga": one_saga_keys(rig.client, rig.prefix, sample),
    }


def memory(client: Any) -> tuple[int, int]:
    """Redis's used_memory, and its dataset part: used_memory also counts client buffers,
    which come and go with the load and can outweigh a few dozen sagas."""
    used = client.info("memory")["used_memory"]
    return int(used), int(client.memory_stats()["dataset.bytes"])


def one_saga_keys(client: Any, prefix: str, saga_id: str) -> dict[str, Any]:
    """MEMORY USAGE of every key of one saga, found by its hash tag rather than by name: the
    key layout changes, the tag stays. Names are shown with the id replaced by <id>."""
    keys = sorted(client.scan_iter(match=f"{prefix}{{{saga_id}}}*", count=1000))
    per_key = {
        key.removeprefix(prefix).replace(saga_id, "<id>"): {
            "bytes": client.memory_usage(key),
            "type": client.type(key),
            "encoding": client.object("encoding", key),
        }
        for key in keys
    }
    return {"keys": per_key, "total_bytes": sum(k["bytes"] for k in per_key.values())}


def http_figures(
    rig: Rig, n: int, base: str, stub: subprocess.Popen[str], kind: str
) -> dict[str, Any]:
    """Throughput with HTTP steps, and what the stub service cost: on two cores its CPU is
    taken from the worker, alike on both sides, so a costly stub narrows the gap."""
    definition = saga_definition(http=True)

    def make(marker: str) -> Any:
        return http_chain(base, marker)

    rig.saga_batch(definition, WARMUP)
    rig.chain_batch(make, WARMUP)
    cpu_before = cpu_seconds(stub.pid)
    saga_s, _ = rig.saga_batch(definition, n)
    plain_s = rig.chain_batch(make, n)
    stub_cpu = cpu_seconds(stub.pid) - cpu_before
    wall_cpu = (saga_s + plain_s) * (os.cpu_count() or 1)
    return {
        **throughput("http_", n, saga_s, plain_s),
        "http_stub": {
            "kind": kind,
            "cpu_ms_per_request": round(stub_cpu * 1000 / (2 * n * STEPS), 3),
            "cpu_share_of_machine": round(stub_cpu / wall_cpu, 3),
        },
    }


def latency_figures(rig: Rig, runs: int) -> dict[str, Any]:
    """One at a time, submit to end: `runs` sagas and `runs` plain chains, alternately, so that
    a drift of the machine during the run (seen here: the plain chain's median moving from 8
    to 12 ms between runs) weighs on both sides alike."""
    definition = saga_definition(http=False)
    saga_ms, plain_ms = [], []
    for _ in range(runs):
        saga_ms += latencies(lambda: rig.one_saga(definition), 1)
        plain_ms += latencies(rig.one_chain, 1)

    def pct(values: list[float], q: int) -> float:
        return round(statistics.quantiles(values, n=100)[q - 1], 2)

    return {
        "latency_runs": runs,
        "saga_latency_ms": {"p50": pct(saga_ms, 50), "p99": pct(saga_ms, 99)},
        "plain_latency_ms": {"p50": pct(plain_ms, 50), "p99": pct(plain_ms, 99)},
        "latency_ratio_p50_saga_over_plain": round(
            statistics.median(saga_ms) / statistics.median(plain_ms), 3
        ),
        "saga_latency_samples_ms": saga_ms,
        "plain_latency_samples_ms": plain_ms,
    }


def latencies(run_one: Callable[[], None], runs: int) -> list[float]:
    """Milliseconds of `runs` one-at-a-time runs."""
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run_one()
        samples.append(round((time.perf_counter() - t0) * 1000, 3))
    return samples


def measure(spec: Session) -> dict[str, Any]:
    """One session: fresh Redis, stub service and worker, the figures `spec` asks for."""
    workdir = Path(tempfile.mkdtemp(prefix="saga-bench-"))
    procs: list[subprocess.Popen[Any]] = []  # stopped last first: worker, stub, Redis
    try:
        server, url = start_redis(workdir, spec.aof)
        procs.append(server)
        stub: tuple[subprocess.Popen[str], str] | None = None
        if spec.http:
            stub = start_stub(spec.stub)
            procs.append(stub[0])
        env = configure(url, {"stub": stub[1]} if stub else {})
        procs.append(start_worker(env, workdir / "worker.log", spec.pool, spec.concurrency))
        return {
            "persistence": "aof everysec" if spec.aof else "none",
            "pool": f"{spec.pool} -c {spec.concurrency}",
            **figures(spec, env, stub),
        }
    finally:
        for proc in reversed(procs):  # Redis always, even when the worker had to be killed
            stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def configure(redis_url: str, services: dict[str, str]) -> dict[str, str]:
    """The environment of this session, shared by this process and the worker."""
    prefix = f"bench-{uuid.uuid4().hex[:6]}:"
    env = {
        "REDIS_URL": redis_url,
        "SAGA_KEY_PREFIX": prefix,
        "SAGA_QUEUE": f"{prefix}q",
        "MAX_CONCURRENT_SAGAS": "1000000",
        "SAGA_TIMEOUT_SECONDS": "3600",
        "SAGA_SERVICES": json.dumps(services),
    }
    os.environ.update(env)
    return env


def figures(
    spec: Session, env: dict[str, str], stub: tuple[subprocess.Popen[str], str] | None
) -> dict[str, Any]:
    """Every figure of one session, measured from this process as a client would submit."""
    import redis

    import wsgi  # noqa: F401  (Celery configured from this environment)
    from sagas.settings import Settings
    from tasks.runtime import build_engine

    client = redis.Redis.from_url(env["REDIS_URL"], decode_responses=True)
    prefix = env["SAGA_KEY_PREFIX"]
    ends = Ends(client, f"{prefix}finished")
    engine = build_engine(Settings.from_env())
    rig = Rig(engine, client, ends, prefix, env["SAGA_QUEUE"])
    try:
        result = noop_figures(rig, spec.sagas)
        if stub is not None:
            result.update(http_figures(rig, spec.sagas, stub[1], stub[0], spec.stub))
        if spec.latency:
            result.update(latency_figures(rig, spec.latency))
        result["finished_sagas_stored"] = engine.counts()["COMPLETED"]
        return result
    finally:
        ends.close()


def summarize(repeats: list[dict[str, Any]]) -> dict[str, Any]:
    """The repeats of one configuration as one record: every number that varies is the median
    across repeats, with its median, min and max under "spread" (dotted names); the repeats
    themselves, raw latency samples included, under "repeats"."""
    spread: dict[str, dict[str, float]] = {}
    summary = _merge(repeats, spread, "")
    return {**summary, "repeat": len(repeats), "spread": spread, "repeats": repeats}


def _merge(values: list[Any], spread: dict[str, dict[str, float]], path: str) -> Any:
    """The values of one field across repeats as one; the first where they do not vary."""
    first = values[0]
    if isinstance(first, dict):
        return {
            key: _merge([v[key] for v in values if key in v], spread, f"{path}{key}.")
            for key, value in first.items()
            if not isinstance(value, list)
        }
    if isinstance(first, int | float) and not isinstance(first, bool) and len(set(values)) > 1:
        median = round(statistics.median(values), 3)
        spread[path.rstrip(".")] = {"median": median, "min": min(values), "max": max(values)}
        return median
    return first


def session_main(spec_json: str) -> None:
    """A session process's entry point: the spec in, its figures out as the last JSON line."""
    print(json.dumps(measure(Session(**json.loads(spec_json)))))


def run_session(spec: Session) -> dict[str, Any]:
    """`measure` in a fresh process; its stderr is shown if it fails."""
    code = "import sys, bench.run as b; b.session_main(sys.argv[1])"
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(asdict(spec))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"benchmark session {spec} failed")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def repeated(specs: list[Session], repeat: int) -> list[dict[str, Any]]:
    """Each configuration `repeat` times, the configurations interleaved so that a drift of
    the machine spreads over all of them; one summary per configuration."""
    results: list[list[dict[str, Any]]] = [[] for _ in specs]
    for round_ in range(repeat):
        for spec, runs in zip(specs, results, strict=True):
            print(f"[{round_ + 1}/{repeat}] {spec}", file=sys.stderr, flush=True)
            runs.append(run_session(spec))
    return [summarize(runs) for runs in results]


def pool_points(text: str) -> list[tuple[str, int]]:
    """Parse "prefork:1,threads:4" into [("prefork", 1), ("threads", 4)]."""
    points = []
    for item in text.split(","):
        pool, _, concurrency = item.strip().partition(":")
        points.append((pool, int(concurrency or 1)))
    return points


def scaling(args: argparse.Namespace) -> dict[str, Any]:
    """No-op throughput per worker pool and concurrency, AOF on: the data behind the worker
    configuration the docs recommend."""
    specs = [
        Session(
            aof=True,
            pool=pool,
            concurrency=concurrency,
            sagas=args.scaling,
            latency=0,
            http=False,
            stub=args.stub,
        )
        for pool, concurrency in pool_points(args.scaling_points)
    ]
    return {
        "persistence": "aof everysec",
        "sagas": args.scaling,
        "points": repeated(specs, args.scaling_repeat),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sagas", type=int, default=1000)
    parser.add_argument("--latency", type=int, default=200)
    parser.add_argument("--persistence", choices=["aof", "none", "both"], default="both")
    parser.add_argument("--repeat", type=int, default=3, help="sessions per persistence mode")
    parser.add_argument("--pool", default=HEADLINE_POOL, help="pool:concurrency, headline runs")
    parser.add_argument("--no-http", dest="http", action="store_false", help="no HTTP steps")
    parser.add_argument("--stub", choices=sorted(STUBS), default="asyncio", help="HTTP service")
    parser.add_argument("--scaling", type=int, default=0, help="sagas per scaling point; 0: none")
    parser.add_argument("--scaling-points", default=SCALING_POINTS, help="pool:concurrency,...")
    parser.add_argument("--scaling-repeat", type=int, default=1, help="sessions per point")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results.json"))
    args = parser.parse_args()
    modes = {"aof": [True], "none": [False], "both": [True, False]}[args.persistence]
    [(pool, concurrency)] = pool_points(args.pool)
    specs = [
        Session(
            aof=aof,
            pool=pool,
            concurrency=concurrency,
            sagas=args.sagas,
            latency=args.latency,
            http=args.http,
            stub=args.stub,
        )
        for aof in modes
    ]
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "steps_per_saga": STEPS,
        "repeat": args.repeat,
        "runs": repeated(specs, args.repeat),
    }
    write(report, args.out)
    if args.scaling:
        report["scaling"] = scaling(args)
        write(report, args.out)
    print(json.dumps(headline(report), indent=2))


def write(report: dict[str, Any], out: str) -> None:
    """Written after each part, so that a failure late in a long run keeps what was measured."""
    Path(out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {out}", file=sys.stderr)


def headline(report: Any) -> Any:
    """The report without its raw repeats and spreads: what a person reads on the terminal."""
    if isinstance(report, dict):
        return {k: headline(v) for k, v in report.items() if k not in ("repeats", "spread")}
    if isinstance(report, list):
        return [headline(v) for v in report]
    return report


if __name__ == "__main__":
    main()
