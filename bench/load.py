"""The load generator of `bench.e2e`: a process of its own that sends requests to the API as a
client would, from several threads, so that its own work (and interpreter lock) is not the
API's or the benchmark's.

    python -m bench.load BASE_URL API_KEY start COUNT THREADS   # POST /saga/start COUNT times
    python -m bench.load BASE_URL API_KEY status COUNT THREADS  # GET /saga/{id}/status

It prints "ready", waits for a line on standard input (so that its start-up is not timed),
runs, and prints one JSON line: seconds, the HTTP status codes seen, its own CPU seconds.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from typing import Any

import httpx

from bench.run import saga_definition


def run(base: str, key: str, mode: str, count: int, threads: int, ids: list[str]) -> None:
    codes: Counter[int] = Counter()
    lock = threading.Lock()
    numbers = iter(range(count))
    body = json.dumps(saga_definition(http=False)).encode()

    def client_thread() -> None:
        headers = {"X-API-Key": key, "Content-Type": "application/json"}
        with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
            while True:
                with lock:
                    i = next(numbers, None)
                if i is None:
                    return
                if mode == "start":
                    code = client.post("/saga/start", content=body).status_code
                else:
                    code = client.get(f"/saga/{ids[i % len(ids)]}/status").status_code
                with lock:
                    codes[code] += 1

    workers = [threading.Thread(target=client_thread) for _ in range(threads)]
    print("ready", flush=True)
    sys.stdin.readline()
    cpu0, t0 = time.process_time(), time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    out: dict[str, Any] = {
        "seconds": time.perf_counter() - t0,
        "codes": {str(k): v for k, v in codes.items()},
        "cpu_seconds": time.process_time() - cpu0,
    }
    print(json.dumps(out), flush=True)


def main() -> None:
    base, key, mode, count, threads = sys.argv[1:6]
    if mode not in ("start", "status"):
        raise SystemExit(f"mode must be start or status, not {mode!r}")
    ids = sys.argv[6].split(",") if mode == "status" else []
    run(base, key, mode, int(count), int(threads), ids)


if __name__ == "__main__":
    main()
