"""Where a saga's CPU goes: py-spy samples the workers and the API while `bench.e2e`'s load
runs, and the samples are summed per function (`bench.e2e --profile`).

py-spy (in the `bench` extra) records each process's stacks in its `raw` format, one line per
distinct stack with its sample count. `summary` turns them into the functions that were on
the CPU themselves (self) and those that were anywhere on the stack (total), as shares of
the samples: the table docs/performance.md shows before and after a change.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

RATE = 200  # samples a second


class Recorder:
    """py-spy recording processes `pids` (each on its own) until `stop()`."""

    def __init__(self, name: str, pids: list[int], out: Path) -> None:
        beside = Path(sys.executable).parent / "py-spy"  # the virtualenv's, from the bench extra
        binary = str(beside) if beside.exists() else shutil.which("py-spy") or "py-spy"
        self.name = name
        self.files = [out / f"{name}-{pid}.txt" for pid in pids]
        self.procs = [
            subprocess.Popen(
                [
                    binary,
                    "record",
                    "--pid",
                    str(pid),
                    "--format",
                    "raw",
                    "--rate",
                    str(RATE),
                    "--nonblocking",
                    "--output",
                    str(path),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for pid, path in zip(pids, self.files, strict=True)
        ]

    def stop(self) -> dict[str, Any]:
        for proc in self.procs:
            proc.send_signal(signal.SIGINT)  # py-spy writes its file and exits
        for proc in self.procs:
            proc.wait(60)
        return summary([f for f in self.files if f.exists()])


def summary(files: list[Path], top: int = 15) -> dict[str, Any]:
    """The functions with the largest self and total shares of the samples in `files`."""
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()  # our own functions only (app/, sagas/, tasks/)
    by_package: Counter[str] = Counter()  # self samples by the package of the leaf frame
    samples = 0
    for path in files:
        for line in path.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [_short(frame) for frame in stack.split(";")]
            samples += count
            self_counts[frames[-1]] += count
            by_package[_package(frames[-1])] += count
            for frame in set(frames):
                if _package(frame) in OURS:
                    total_counts[frame] += count

    def shares(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "share": round(count / samples, 3)}
            for name, count in counter.most_common(top)
        ]

    return {
        "samples": samples,
        "self_by_package": shares(by_package),
        "self": shares(self_counts),
        "total_in_our_code": shares(total_counts),
    }


OURS = {"app", "sagas", "tasks", "wsgi.py", "celeryconfig.py"}


def _package(frame: str) -> str:
    """The top-level package (or module file) of a shortened frame: `redis`, `sagas`, `json`."""
    where = frame.rpartition(" (")[2].rstrip(")")
    return where.split("/", 1)[0] if "/" in where else where


def _short(frame: str) -> str:
    """`run_step (/…/tasks/steps.py:42)` -> `run_step (tasks/steps.py)`: lines vary, files
    do not; paths are shown from the project's root or from site-packages."""
    from bench.run import ROOT

    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    if "site-packages/" in where:
        where = where.split("site-packages/", 1)[1]
    elif where.startswith(str(ROOT)):
        where = where[len(str(ROOT)) + 1 :]
    elif "/lib/python3" in where:  # the standard library: json/encoder.py
        where = where.split("/lib/python3", 1)[1].split("/", 1)[-1]
    return f"{name} ({where})"
