"""The Redis state store: key names, Lua transitions and reading saga documents.

One saga is a hash `<prefix>{<id>}` and a history list `<prefix>{<id>}:history` (one hash
tag, one Cluster slot). Global indexes serve listing and sweeps without SCAN: status, type,
correlation id and creation time (sorted sets scored by creation epoch ms), `timers` (saga,
step and compensation deadlines), `finished` (for retention) and `stats` (metric counters).
Every transition is one Lua script (see `sagas/lua/`): it checks the saga's status, the step's
status and the step's fence (lease + attempt), writes, bumps the saga version, appends the
history and updates indexes and counters atomically, using Redis's clock.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import redis

from sagas.definition import SagaDefinition
from sagas.errors import SagaNotFound
from sagas.model import SagaRecord, SagaStatus, StepRecord

SCRIPTS = (
    "create",
    "step_begin",
    "step_retry",
    "step_complete",
    "step_fail",
    "compensate",
    "comp_begin",
    "comp_retry",
    "comp_complete",
    "comp_fail",
)


@dataclass(frozen=True)
class Reply:
    """A transition's answer: `code` and the values after it (strings, or None for nil)."""

    code: str
    values: list[Any]


@dataclass(frozen=True)
class Grant:
    """Permission to make an attempt, with what the attempt needs to render its call."""

    attempt: int
    remaining_ms: int  # until the step's (or compensation's) deadline, by Redis's clock
    payload: dict[str, Any]
    definition: list[dict[str, Any]]
    correlation_id: str
    saga_type: str
    outputs: dict[str, Any]  # step name -> output, for steps that have one


class Keys:
    """Every key name of the store, in one place."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.timers = f"{prefix}timers"
        self.stats = f"{prefix}stats"
        self.finished = f"{prefix}finished"
        self.all = f"{prefix}idx:all"

    def saga(self, saga_id: str) -> str:
        return f"{self.prefix}{{{saga_id}}}"

    def history(self, saga_id: str) -> str:
        return f"{self.prefix}{{{saga_id}}}:history"

    def status(self, status: str) -> str:
        return f"{self.prefix}idx:status:{status}"

    def saga_type(self, saga_type: str) -> str:
        return f"{self.prefix}idx:type:{saga_type}"

    def correlation(self, correlation_id: str) -> str:
        return f"{self.prefix}idx:corr:{correlation_id}"

    def transition(self, saga_id: str) -> list[str]:
        """KEYS[1..11] shared by every transition script (documented in lua/lib.lua)."""
        return [
            self.saga(saga_id),
            self.history(saga_id),
            self.timers,
            self.stats,
            *(self.status(s) for s in SagaStatus),
            self.finished,
        ]


class RedisStore:
    def __init__(self, client: redis.Redis, prefix: str = "saga:", history_limit: int = 500):
        self.redis = client
        self.keys = Keys(prefix)
        lib = _read("lib").replace("__HISTORY_LIMIT__", str(int(history_limit)))
        self._scripts = {name: client.register_script(lib + "\n" + _read(name)) for name in SCRIPTS}

    def _run(
        self, name: str, saga_id: str, args: Sequence[Any], extra_keys: Sequence[str] = ()
    ) -> Reply:
        keys = [*self.keys.transition(saga_id), *extra_keys]
        raw = self._scripts[name](keys=keys, args=list(args))
        return Reply(_text(raw[0]), [None if v is None else str(_text(v)) for v in raw[1:]])

    # --- transitions -------------------------------------------------------------------
    def create(self, saga_id: str, definition: SagaDefinition, correlation_id: str) -> Reply:
        """Write a new RUNNING saga; a repeat with the same id answers `exists`."""
        args: list[Any] = [
            saga_id,
            definition.saga_type,
            correlation_id,
            dumps(definition.payload),
            dumps([s.to_json() for s in definition.steps]),
            int(definition.timeout_seconds * 1000),
        ]
        for step in definition.steps:
            args += [
                step.name,
                "1" if step.compensation else "0",
                int(step.timeout_seconds * 1000),
                step.retry.max_attempts,
            ]
        extra = [
            self.keys.all,
            self.keys.saga_type(definition.saga_type),
            self.keys.correlation(correlation_id),
        ]
        return self._run("create", saga_id, args, extra)

    def step_begin(self, saga_id: str, index: int, lease: str) -> Reply:
        """Claim an attempt of step `index` for execution `lease`; see lua/step_begin.lua."""
        return self._run("step_begin", saga_id, [index, lease])

    def step_retry(
        self, saga_id: str, index: int, lease: str, attempt: int, error: str, uncertain: bool
    ) -> Reply:
        """Record a failed attempt that will be retried (`ok`, `fenced` or `stale`)."""
        return self._run("step_retry", saga_id, [index, lease, attempt, error, _flag(uncertain)])

    def step_complete(
        self, saga_id: str, index: int, lease: str, attempt: int, output_json: str
    ) -> Reply:
        """Record success (`output_json` already encoded); only the execution holding the
        step's fence is accepted, once."""
        return self._run(
            "step_complete", saga_id, [index, lease, attempt, output_json, uuid.uuid4().hex]
        )

    def step_fail(
        self, saga_id: str, index: int, lease: str, error: str, uncertain: bool, reason: str
    ) -> Reply:
        """Record a final failure and start compensating (`compensate` + indexes)."""
        return self._run("step_fail", saga_id, [index, lease, error, _flag(uncertain), reason])

    def compensate(self, saga_id: str, message: str, expected_version: int | None) -> Reply:
        """Ask for compensation; see lua/compensate.lua for each status."""
        version = "" if expected_version is None else str(expected_version)
        return self._run("compensate", saga_id, [message, version])

    def comp_begin(self, saga_id: str, index: int, lease: str, timeout_ms: int) -> Reply:
        return self._run("comp_begin", saga_id, [index, lease, timeout_ms])

    def comp_retry(self, saga_id: str, index: int, lease: str, attempt: int, error: str) -> Reply:
        return self._run("comp_retry", saga_id, [index, lease, attempt, error])

    def comp_complete(self, saga_id: str, index: int, lease: str, attempt: int) -> Reply:
        return self._run("comp_complete", saga_id, [index, lease, attempt, uuid.uuid4().hex])

    def comp_fail(self, saga_id: str, index: int, lease: str, error: str) -> Reply:
        return self._run("comp_fail", saga_id, [index, lease, error])

    # --- reads -----------------------------------------------------------------------
    @staticmethod
    def grant(reply: Reply) -> Grant:
        """Decode the `run` answer of step_begin / comp_begin."""
        attempt, remaining, payload, definition, corr, saga_type, *outs = reply.values
        steps = json.loads(definition)
        outputs = {
            steps[j]["name"]: json.loads(out) for j, out in enumerate(outs) if out is not None
        }
        return Grant(
            int(attempt), int(remaining), json.loads(payload), steps, corr, saga_type, outputs
        )

    def get(self, saga_id: str) -> SagaRecord:
        """The saga document of CONTRACT.md; raise `SagaNotFound`."""
        raw = self.redis.hgetall(self.keys.saga(saga_id))
        if not raw:
            raise SagaNotFound(saga_id)
        return _document({_text(k): _text(v) for k, v in raw.items()})

    def history(self, saga_id: str) -> list[dict[str, Any]]:
        """The saga's transitions, oldest first (the newest `history_limit` are kept)."""
        entries = self.redis.lrange(self.keys.history(saga_id), 0, -1)
        out = []
        for raw in entries:
            entry = json.loads(raw)
            entry["at"] = _iso(entry["at"])
            out.append(entry)
        return out

    def stats(self) -> dict[str, int]:
        return {_text(k): int(v) for k, v in self.redis.hgetall(self.keys.stats).items()}


def _document(h: dict[str, str]) -> SagaRecord:
    n = int(h["n"])
    steps: list[StepRecord] = []
    for j in range(n):

        def f(name: str, j: int = j) -> str:
            return h.get(f"{j}:{name}", "")

        compensation = None
        if f("hc") == "1":
            compensation = {
                "status": f("cst"),
                "attempts": int(f("catt") or 0),
                "error": f("cerr") or None,
            }
        steps.append(
            {
                "name": f("name"),
                "status": f("st"),
                "attempts": int(f("att") or 0),
                "started_at": _iso(f("t0")),
                "finished_at": _iso(f("t1")),
                "output": json.loads(f("out")) if f("out") else None,
                "error": f("err") or None,
                "uncertain": f("unc") == "1",
                "compensation": compensation,  # type: ignore[typeddict-item]
            }
        )
    cur = int(h.get("cur") or -1)
    return {
        "saga_id": h["id"],
        "saga_type": h["type"],
        "status": h["status"],
        "version": int(h["ver"]),
        "correlation_id": h["corr"],
        "payload": json.loads(h["payload"]),
        "current_step": steps[cur]["name"] if 0 <= cur < n else None,
        "created_at": _iso(h["created"]) or "",
        "updated_at": _iso(h["updated"]) or "",
        "deadline_at": _iso(h["deadline"]) or "",
        "finished_at": _iso(h.get("finished", "")),
        "failure": json.loads(h["failure"]) if h.get("failure") else None,
        "compensation_failure": json.loads(h["cfailure"]) if h.get("cfailure") else None,
        "steps": steps,
    }


def _iso(ms: str | int | None) -> str | None:
    if ms in (None, ""):
        return None
    stamp = datetime.fromtimestamp(int(ms) / 1000, UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _flag(value: bool) -> str:
    return "1" if value else "0"


def dumps(value: Any) -> str:
    """Compact JSON, as stored."""
    return json.dumps(value, separators=(",", ":"))


def _read(name: str) -> str:
    return resources.files("sagas").joinpath(f"lua/{name}.lua").read_text()
