"""A TCP proxy between Redis clients and Redis that injects faults when a test says so.

It listens on 127.0.0.1 (a free port) and opens one upstream connection per client
connection, with a thread per direction. Both directions are split into RESP frames (RESP2
and RESP3: redis-py 8 speaks RESP3 unless told otherwise), so a fault hits exactly one
request and its own reply even when a pipeline sends many requests in one write; what the
client wrote at once is forwarded at once. Redis answers requests in order, one reply each;
RESP3 push frames (`>`) are passed on and do not count as replies. Not for pub/sub or
MONITOR connections, whose replies do not pair up with requests.

Faults (each for requests that `match`: bytes found in the raw request, a predicate on its
arguments, or None for any request; `count` of them, None for every one until `clear()`):
- `drop_next_reply`: the request goes to Redis, which executes it; its reply is swallowed
  (the replies of requests before it are delivered) and the connection is cut at once, so
  the client sees a connection error. Requests written together with it were forwarded
  with it, and executed; their replies are lost too.
- `drop_next_request`: the request is not forwarded, nor anything after it on that
  connection (requests before it are); the connection is cut at once, so replies still due
  for earlier requests are lost.
- `delay`: the request, and every request behind it on that connection, waits `seconds`
  (requests before it in the same write go on at once).
- `cut_all()` closes every open connection; `pause()` refuses new connections (accepted and
  closed at once) until `resume()`. A client's idle pooled connection that was cut is
  replaced unnoticed by redis-py; a request in flight on it fails.
`counts` says what it did; `exchanges` holds (request arguments, raw reply) pairs delivered.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

Match = bytes | Callable[[list[bytes]], bool] | None


def frame_end(buf: bytes | bytearray, pos: int = 0) -> int | None:
    """Where the RESP2/RESP3 value starting at `pos` ends, or None if `buf` lacks its end."""
    line = buf.find(b"\r\n", pos)
    if line < 0:
        return None
    kind, head, after = buf[pos : pos + 1], buf[pos + 1 : line], line + 2
    if kind in (b"$", b"!", b"="):  # bulk string, bulk error, verbatim string
        size = int(head)
        end = after if size < 0 else after + size + 2
        return end if len(buf) >= end else None
    if kind in (b"*", b"~", b">", b"%", b"|"):  # array, set, push, map, attribute
        count = max(int(head), 0) * (2 if kind in (b"%", b"|") else 1)
        count += kind == b"|"  # an attribute precedes the value it describes
        for _ in range(count):
            found = frame_end(buf, after)
            if found is None:
                return None
            after = found
    return after  # simple types (+ - : _ , # ( ) and inline commands are one line


def arguments(request: bytes) -> list[bytes]:
    """The arguments of one request frame (an array of bulk strings, or an inline command)."""
    if not request.startswith(b"*"):
        return request.split()
    args, pos = [], request.find(b"\r\n") + 2
    while pos < len(request):
        line = request.find(b"\r\n", pos)
        start = line + 2
        size = int(request[pos + 1 : line])
        args.append(request[start : start + size])
        pos = start + size + 2
    return args


@dataclass
class _Fault:
    kind: str  # "drop_reply", "drop_request" or "delay"
    match: Match
    count: int | None  # None: every matching request until clear()
    seconds: float = 0.0

    def takes(self, raw: bytes, args: list[bytes]) -> bool:
        """Does this fault apply to the request (and use up one of its count)?"""
        if self.count == 0:
            return False
        if self.match is None:
            hit = True
        elif isinstance(self.match, bytes):
            hit = self.match in raw
        else:
            hit = self.match(args)
        if hit and self.count is not None:
            self.count -= 1
        return hit


class FaultProxy:
    def __init__(self, upstream_host: str = "127.0.0.1", upstream_port: int = 6379) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.counts: Counter[str] = Counter()
        self.exchanges: list[tuple[list[bytes], bytes]] = []
        self._faults: list[_Fault] = []
        self._links: set[_Link] = set()
        self._lock = threading.Lock()
        self._paused = False
        self._stopping = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @classmethod
    def to(cls, redis_url: str) -> FaultProxy:
        """A proxy in front of the Redis at `redis_url` (call `start()`)."""
        parts = urlsplit(redis_url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 6379)

    def url(self, redis_url: str) -> str:
        """`redis_url` (same database and credentials) pointed at the proxy."""
        parts = urlsplit(redis_url)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@" if credentials else ""
        return urlunsplit(parts._replace(netloc=f"{netloc}127.0.0.1:{self.port}"))

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        self._thread.join(5)
        self._listener.close()
        self.cut_all()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()

    # --- faults ------------------------------------------------------------------------
    def drop_next_reply(self, match: Match = None, count: int | None = 1) -> None:
        self._add(_Fault("drop_reply", match, count))

    def drop_next_request(self, match: Match = None, count: int | None = 1) -> None:
        self._add(_Fault("drop_request", match, count))

    def delay(self, seconds: float, match: Match = None, count: int | None = None) -> None:
        self._add(_Fault("delay", match, count, seconds))

    def clear(self) -> None:
        """Forget the faults not used up yet."""
        with self._lock:
            self._faults.clear()

    def cut_all(self) -> None:
        with self._lock:
            links = list(self._links)
        for link in links:
            link.cut()

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    def _judge(self, raw: bytes, args: list[bytes]) -> list[_Fault]:
        """The faults that apply to this request, using them up."""
        with self._lock:
            self.counts["requests"] += 1
            return [f for f in self._faults if f.takes(raw, args)]

    def _accept(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            if self._paused:
                self._count("refused")
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                self._count("refused")
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            link = _Link(self, client, upstream)
            with self._lock:
                self._links.add(link)
                self.counts["connections"] += 1
            link.start()


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, proxy: FaultProxy, client: socket.socket, upstream: socket.socket):
        self.proxy, self.client, self.upstream = proxy, client, upstream
        # Per request forwarded and not answered yet: its arguments, and whether to drop
        # its reply. Redis answers in order, so the next reply is the leftmost's.
        self.pending: deque[tuple[list[bytes], bool]] = deque()
        self.closed = False

    def start(self) -> None:
        threading.Thread(target=self._requests, daemon=True).start()
        threading.Thread(target=self._replies, daemon=True).start()

    def cut(self) -> None:
        with self.proxy._lock:
            if self.closed:
                return
            self.closed = True
            self.proxy._links.discard(self)
            self.proxy.counts["cut"] += 1
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _reads(self, sock: socket.socket) -> Iterator[list[bytes]]:
        """The complete RESP frames of each read from `sock`, until it closes."""
        buf = bytearray()
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                self.cut()
                return
            buf += data
            frames = []
            while (end := frame_end(buf)) is not None:
                frames.append(bytes(buf[:end]))
                del buf[:end]
            yield frames

    def _requests(self) -> None:
        # What the client wrote at once goes on at once (a pipeline stays one write), up to
        # a request that is delayed or dropped.
        for frames in self._reads(self.client):
            out = bytearray()
            for raw in frames:
                args = arguments(raw)
                faults = self.proxy._judge(raw, args)
                kinds = {f.kind for f in faults}
                if kinds & {"delay", "drop_request"} and not self._forward(out):
                    return
                for fault in faults:
                    if fault.kind == "delay":
                        self.proxy._count("delayed")
                        time.sleep(fault.seconds)
                if "drop_request" in kinds:
                    self.proxy._count("dropped_requests")
                    self.cut()
                    return
                self.pending.append((args, "drop_reply" in kinds))
                out += raw
            if not self._forward(out):
                return

    def _forward(self, data: bytearray) -> bool:
        try:
            self.upstream.sendall(data)
        except OSError:
            self.cut()
            return False
        data.clear()
        return True

    def _replies(self) -> None:
        for reply in (frame for frames in self._reads(self.upstream) for frame in frames):
            if reply.startswith(b">") or not self.pending:  # RESP3 push: not a reply
                self._send(reply)
                continue
            args, drop = self.pending.popleft()
            if drop:
                self.proxy._count("dropped_replies")
                self.cut()
                return
            self.proxy._count("replies")
            with self.proxy._lock:
                self.proxy.exchanges.append((args, reply))
            self._send(reply)

    def _send(self, data: bytes) -> None:
        try:
            self.client.sendall(data)
        except OSError:
            self.cut()
