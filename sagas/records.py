"""How sagas are encoded in Redis and decoded into documents: compact JSON, outputs with their
size limit, and the saga document of the REST API built from a saga's hash."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sagas.model import SagaRecord, StepRecord
from sagas.tracing import trace_id


def dumps(value: Any) -> str:
    """Compact JSON, as stored."""
    return json.dumps(value, separators=(",", ":"))


def encode_output(output: Any, limit: int) -> str:
    """A step's output as stored JSON; one larger than `limit` bytes (SAGA_MAX_OUTPUT_BYTES)
    is replaced by a stub saying so (the step did take effect, so it still completes)."""
    encoded = dumps(output)
    if len(encoded) > limit:
        encoded = dumps({"truncated": True, "size_bytes": len(encoded)})
    return encoded


def document(h: dict[str, str]) -> SagaRecord:
    """The saga document (REST API) of a saga's hash, fields as text."""
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
                "resolved_by_hand": f("cman") == "1",
            }
        steps.append(
            {
                "name": f("name"),
                "status": f("st"),
                "attempts": int(f("att") or 0),
                "started_at": iso(f("t0")),
                "finished_at": iso(f("t1")),
                "output": json.loads(f("out")) if f("out") else None,
                "error": f("err") or None,
                "uncertain": f("unc") == "1",
                # Waiting out a retry countdown: the last attempt's failure is recorded and
                # the next has not begun (lua/lib.lua attempt_open).
                "retry_pending": f("st") == "RUNNING"
                and f("fatt") not in ("", "0")
                and f("fatt") == f("att"),
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
        "created_at": iso(h["created"]) or "",
        "updated_at": iso(h["updated"]) or "",
        "deadline_at": iso(h["deadline"]) or "",
        "finished_at": iso(h.get("finished", "")),
        "failure": json.loads(h["failure"]) if h.get("failure") else None,
        "compensation_failure": json.loads(h["cfailure"]) if h.get("cfailure") else None,
        "steps": steps,
        "rerun_of": h.get("rerun_of") or None,
        "trace_id": trace_id(h.get("tp")),
        "workflow": {"name": h["wf"], "version": int(h["wfv"])} if h.get("wf") else None,
        "reruns": json.loads(h["reruns"]) if h.get("reruns") else [],
        "webhook": json.loads(h["wh"]) if h.get("wh") else None,
    }


def iso(ms: str | int | None) -> str | None:
    if ms in (None, ""):
        return None
    stamp = datetime.fromtimestamp(int(ms) / 1000, UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value
