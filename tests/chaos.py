"""The fault-injection harness: a whole stack of real processes and the invariants.

A `Stack` runs the API (gunicorn), Celery workers and beats, each a real process, against a
Redis of the caller's choice with a key prefix of its own. `check_invariants` states what
must hold whatever happened, from the stub service's ledger (what took effect) and the store.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from sagas.settings import Settings
from sagas.store import RedisStore
from tests.conftest import ROOT, Worker, free_port, stop_process
from tests.stubs import StubService

CLI = str(Path(sys.executable).parent / "saga-orchestrator")
KEY = "chaos-key"
FINAL = ("COMPLETED", "COMPENSATED", "COMPENSATION_FAILED")


class Stack:
    def __init__(
        self,
        redis_url: str,
        stub: StubService,
        tmp: Path,
        *,
        workers: int = 1,
        beats: int = 1,
        concurrency: int = 3,
        **extra_env: str,
    ) -> None:
        self.prefix = f"chaos-{uuid.uuid4().hex[:8]}:"
        self.tmp = tmp
        self.redis_url = redis_url
        self.port = free_port()
        self.env = {
            "REDIS_URL": redis_url,
            "SAGA_KEY_PREFIX": self.prefix,
            "SAGA_QUEUE": f"{self.prefix}q",
            "SAGA_API_KEYS": KEY,
            "SAGA_SERVICES": f'{{"svc": "{stub.url}"}}',
            "SAGA_TASK_MODULES": "tests.registered_tasks",
            "SAGA_SWEEP_INTERVAL_SECONDS": "0.5",
            "SAGA_REDRIVE_AFTER_SECONDS": "2",
            "SAGA_VISIBILITY_TIMEOUT_SECONDS": "20",
            "SAGA_STEP_TIMEOUT_SECONDS": "6",
            "SAGA_RETRY_BACKOFF_SECONDS": "0.1",
            "SAGA_RETRY_MAX_BACKOFF_SECONDS": "1",
            "SAGA_RETRY_ATTEMPTS": "4",
            "COMPENSATION_TIMEOUT_SECONDS": "10",
            "SAGA_ATTEMPT_GRACE_SECONDS": "2",
            "WEB_CONCURRENCY": "2",
            **extra_env,
        }
        self.workers = [
            Worker(self.env, tmp / f"worker{k}.log", concurrency=concurrency)
            for k in range(workers)
        ]
        self.beats: list[subprocess.Popen[bytes]] = []
        self.api: subprocess.Popen[bytes] | None = None
        self.n_beats = beats
        settings = Settings.from_env(self.env)
        self.store = RedisStore(
            redis.Redis.from_url(redis_url, decode_responses=True),
            self.prefix,
            redrive_after_seconds=2,
            max_running=settings.max_concurrent_sagas,
        )
        self.client = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}", headers={"X-API-Key": KEY}, timeout=30
        )

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.env, "PYTHONPATH": str(ROOT)}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        with (self.tmp / f"{name}.log").open("ab") as log:
            return subprocess.Popen(
                [CLI, *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def start(self) -> Stack:
        self.api = self._spawn("api", "api", "--bind", f"127.0.0.1:{self.port}")
        for worker in self.workers:
            worker.start()
        for k in range(self.n_beats):
            self.beats.append(
                self._spawn(f"beat{k}", "beat", "--schedule", str(self.tmp / f"beat{k}-schedule"))
            )
        deadline = time.time() + 30
        while True:
            try:
                if self.client.get("/openapi.json").status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, (self.tmp / "api.log").read_text()[-2000:]
            time.sleep(0.1)

    def start_saga(self, definition: dict[str, Any]) -> str:
        for _ in range(50):  # the API may be briefly unable to reach Redis (restart tests)
            response = self.client.post("/saga/start", json=definition)
            if response.status_code == 202:
                return str(response.json()["saga_id"])
            time.sleep(0.2)
        raise AssertionError(response.text)

    def kill_pool_process(self, rng: random.Random) -> bool:
        """SIGKILL one pool process of a random worker; False if none was found."""
        worker = rng.choice(self.workers)
        assert worker.proc is not None
        children = subprocess.run(
            ["pgrep", "-P", str(worker.proc.pid)], capture_output=True, text=True
        ).stdout.split()
        if not children:
            return False
        os.kill(int(rng.choice(children)), signal.SIGKILL)
        return True

    def kill_and_restart_worker(self, rng: random.Random) -> None:
        """SIGKILL a whole worker (main process and pool), then start a new one."""
        worker = rng.choice(self.workers)
        assert worker.proc is not None
        subprocess.run(["pkill", "-9", "-P", str(worker.proc.pid)])
        worker.proc.kill()
        worker.proc.wait()
        worker.start()

    def wait_final(self, ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
        deadline = time.time() + timeout
        pending = set(ids)
        docs: dict[str, dict[str, Any]] = {}
        while pending:
            for saga_id in list(pending):
                try:
                    doc = dict(self.store.get(saga_id))
                except redis.RedisError:
                    break
                if doc["status"] in FINAL:
                    docs[saga_id] = doc
                    pending.discard(saga_id)
            if pending and time.time() > deadline:
                stuck = {i: self.store.get(i)["status"] for i in list(pending)[:5]}
                raise AssertionError(f"{len(pending)} sagas not final: {stuck}")
            time.sleep(0.2)
        return docs

    def stop(self) -> None:
        for proc in [*self.beats, *([self.api] if self.api else [])]:
            proc.terminate()
        for worker in self.workers:
            worker.stop()
        for proc in [*self.beats, *([self.api] if self.api else [])]:
            stop_process(proc, 15)
        self.client.close()
        try:
            r = redis.Redis.from_url(self.redis_url)
            for key in r.scan_iter(match=f"{self.prefix}*", count=1000):
                r.delete(key)
        except redis.RedisError:
            pass


@dataclass
class Figures:
    sagas: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def show(self, name: str) -> str:
        line = (
            f"[chaos] {name}: {self.sagas} sagas in {self.seconds:.1f} s; faults "
            f"{dict(self.faults)}; outcomes {dict(self.outcomes)}"
        )
        print("\n" + line)
        return line


def check_invariants(docs: dict[str, dict[str, Any]], stub: StubService, figures: Figures) -> None:
    """Each action and compensation took effect at most once per idempotency key; a COMPLETED
    saga's actions all took effect and none was undone; in a COMPENSATED saga every action
    that took effect and has a compensation was undone; a step that failed with an answer took
    no effect and was not undone. (Every saga being final is `Stack.wait_final`'s check.)"""
    for saga_id, doc in docs.items():
        figures.outcomes[doc["status"]] += 1
        for step in doc["steps"]:
            action_key = f"{saga_id}:{step['name']}:action"
            undo_key = f"{saga_id}:{step['name']}:compensation"
            acted, undone = stub.effects(action_key), stub.effects(undo_key)
            assert acted <= 1 and undone <= 1, (saga_id, step, acted, undone)
            if doc["status"] == "COMPLETED":
                assert acted == 1 and undone == 0, (saga_id, step)
            if doc["status"] == "COMPENSATED" and step["compensation"] is not None:
                # What took effect was undone. (An uncertain step is undone even if its call
                # never arrived: undoing nothing is harmless, leaving an effect is not.)
                assert undone >= acted, (saga_id, step, acted, undone)
            if step["status"] == "FAILED" and not step["uncertain"]:
                assert acted == 0 and undone == 0, (saga_id, step)  # an answered error
