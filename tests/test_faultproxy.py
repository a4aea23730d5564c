"""The fault proxy (tests/faultproxy.py) against the real Redis, through redis-py clients."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.faultproxy import FaultProxy, frame_end


@pytest.fixture()
def proxy(redis_url: str) -> Iterator[FaultProxy]:
    with FaultProxy.to(redis_url) as p:
        yield p


@pytest.fixture()
def key(prefix: str) -> str:
    return f"{prefix}faultproxy:{uuid.uuid4().hex}"


def through(proxy: FaultProxy, redis_url: str, retries: int = 0, protocol: int = 3) -> redis.Redis:
    """A client connected through the proxy, retrying connection errors `retries` times."""
    return redis.Redis.from_url(
        proxy.url(redis_url), retry=Retry(NoBackoff(), retries), protocol=protocol
    )


def test_dropped_reply_was_executed_and_the_client_saw_an_error(
    proxy: FaultProxy, redis_url: str, key: str
) -> None:
    """A dropped reply: Redis executed the INCR once, the client got a connection error."""
    client = through(proxy, redis_url)
    client.ping()
    proxy.drop_next_reply(match=b"INCR")
    with pytest.raises(redis.ConnectionError):
        client.incr(key)
    assert redis.Redis.from_url(redis_url).get(key) == b"1"
    assert proxy.counts["dropped_replies"] == 1
    assert proxy.counts["cut"] == 1
    assert client.incr(key) == 2  # a new connection; the fault was used up


def test_retrying_client_resends_a_request_whose_reply_was_dropped(
    proxy: FaultProxy, redis_url: str, key: str
) -> None:
    """A client that retries resends on a new connection: the INCR is executed twice."""
    client = through(proxy, redis_url, retries=2)
    proxy.drop_next_reply(match=b"INCR")
    assert client.incr(key) == 2
    assert proxy.counts["dropped_replies"] == 1
    assert proxy.counts["connections"] == 2


@pytest.mark.parametrize("protocol", [2, 3])
def test_dropped_reply_in_a_pipeline_is_the_matching_requests_own(
    proxy: FaultProxy, redis_url: str, key: str, protocol: int
) -> None:
    """In one pipelined write, the replies before the matching request are delivered, its
    own is dropped, and every request was executed (RESP2 and RESP3 reply types)."""
    client = through(proxy, redis_url, protocol=protocol)
    client.ping()
    target, after = f"{key}:target", f"{key}:after"
    proxy.drop_next_reply(match=lambda args: args[1:2] == [target.encode()])
    pipe = client.pipeline(transaction=False)
    pipe.hset(f"{key}:h", mapping={"a": "1", "b": "2"})
    pipe.hgetall(f"{key}:h")  # a map in RESP3
    pipe.zadd(f"{key}:z", {"m": 1.5})
    pipe.zscore(f"{key}:z", "m")  # a double in RESP3
    pipe.smembers(f"{key}:h")  # an error: wrong type
    pipe.get(f"{key}:missing")  # a null
    pipe.incr(target)
    pipe.incr(after)
    with pytest.raises(redis.ConnectionError):
        pipe.execute()
    delivered = [args[0] for args, _ in proxy.exchanges[-6:]]
    assert delivered == [b"HSET", b"HGETALL", b"ZADD", b"ZSCORE", b"SMEMBERS", b"GET"]
    assert proxy.exchanges[-1][1] in (b"$-1\r\n", b"_\r\n")
    direct = redis.Redis.from_url(redis_url)
    assert direct.mget(target, after) == [b"1", b"1"]  # executed; replies lost


def test_dropped_request_is_not_executed(proxy: FaultProxy, redis_url: str, key: str) -> None:
    """A dropped request never reaches Redis, and the client sees a connection error."""
    client = through(proxy, redis_url)
    proxy.drop_next_request(match=b"INCR")
    with pytest.raises(redis.ConnectionError):
        client.incr(key)
    assert redis.Redis.from_url(redis_url).get(key) is None
    assert proxy.counts["dropped_requests"] == 1
    assert client.incr(key) == 1


def test_delay_holds_only_the_matching_requests(
    proxy: FaultProxy, redis_url: str, key: str
) -> None:
    """A delayed request is answered `seconds` later; other requests are not held."""
    client = through(proxy, redis_url)
    client.ping()
    proxy.delay(0.5, match=b"INCR", count=1)
    started = time.monotonic()
    assert client.incr(key) == 1
    assert time.monotonic() - started >= 0.5
    started = time.monotonic()
    assert client.incr(key) == 2
    assert time.monotonic() - started < 0.5
    assert proxy.counts["delayed"] == 1


def test_cut_all_closes_every_open_connection(proxy: FaultProxy, redis_url: str, key: str) -> None:
    """cut_all fails a request in flight; an idle client's pool reconnects unnoticed."""
    busy, idle = through(proxy, redis_url), through(proxy, redis_url)
    assert busy.ping() and idle.ping()
    proxy.delay(1, match=b"GET", count=1)
    cutter = threading.Timer(0.2, proxy.cut_all)
    cutter.start()
    with pytest.raises(redis.ConnectionError):
        busy.get(key)
    cutter.join()
    assert proxy.counts["cut"] == 2
    assert idle.incr(key) == 1
    assert proxy.counts["connections"] == 3


def test_pause_refuses_new_connections_until_resume(
    proxy: FaultProxy, redis_url: str, key: str
) -> None:
    """While paused no connection gets through (Redis unreachable); after resume they do."""
    client = through(proxy, redis_url)
    proxy.pause()
    proxy.cut_all()
    with pytest.raises(redis.ConnectionError):
        client.ping()
    assert proxy.counts["refused"] >= 1
    proxy.resume()
    assert client.ping()


def test_frames_split_at_resp2_and_resp3_boundaries() -> None:
    """Every RESP2 and RESP3 type is one frame, and an incomplete one is not cut short."""
    frames = [
        b"+OK\r\n",
        b"-ERR no\r\n",
        b":42\r\n",
        b"$5\r\nhe\r\nl\r\n",
        b"$-1\r\n",
        b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n",
        b"*-1\r\n",
        b"_\r\n",
        b",1.5\r\n",
        b"#t\r\n",
        b"(12345678901234567890\r\n",
        b"!3\r\nERR\r\n",
        b"=7\r\ntxt:abc\r\n",
        b"%1\r\n+a\r\n~2\r\n:1\r\n:2\r\n",
        b">2\r\n+message\r\n$1\r\nx\r\n",
        b"|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n",
        b"PING\r\n",
    ]
    stream = b"".join(frames)
    pos = 0
    for frame in frames:
        assert frame_end(stream, pos) == pos + len(frame)
        assert frame_end(stream[: pos + len(frame) - 1], pos) is None
        pos += len(frame)
