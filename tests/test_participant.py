"""The participant library (`participant/`): the barrier over the real PostgreSQL, SQLite,
the real Redis, in memory, and behind a Flask app served over real HTTP.

PostgreSQL: `PARTICIPANT_POSTGRES_URL` (default postgresql+psycopg://postgres@127.0.0.1:5432/
postgres, trust auth) if it accepts a connection, else a PostgreSQL of the run's own, started
with Debian's binaries (/usr/lib/postgresql/*/bin, installed by `make test`) in a temporary
directory on a free port and stopped at the end. The module creates a database of its own,
`barrier_test_<random>`, and drops it at the end; it touches no other data. Redis: the
suite's Redis (`redis_url`), under a key prefix of this module's own, deleted at the end.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    delete,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool
from werkzeug.serving import make_server

from participant import BarrierKey, Decision, InvalidKey, Outcome, decide
from participant.memory import MemoryBarrier
from participant.redis import BarrierContention, RedisBarrier, RedisTx
from participant.sql import SqlBarrier
from tests.conftest import ROOT, free_port

POSTGRES_URL = os.environ.get(
    "PARTICIPANT_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)

metadata = MetaData()
ledger = Table(
    "ledger",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("saga_id", String(255), nullable=False),
    Column("note", String(255), nullable=False),
)
items = Table(
    "items",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False),
)


def saga() -> str:
    return str(uuid.uuid4())


def key(saga_id: str, op: str = "action", step: str = "reserve") -> str:
    return f"{saga_id}:{step}:{op}"


class Boom(Exception):
    """Raised by a business function after it wrote (to prove the rollback)."""


# --- PostgreSQL: the configured server, or one of the run's own ----------------------------
def postgres_answers(url: str) -> bool:
    """Whether `url` accepts a connection. A TCP probe of 1 s comes first (libpq waits at
    least 2 s); a server that answers but refuses us (say, Debian's freshly installed
    cluster, which wants a password over TCP) counts as not answering."""
    host, port = make_url(url).host, make_url(url).port or 5432
    if host:
        try:
            socket.create_connection((host, port), timeout=1).close()
        except OSError:
            return False
    engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 2})
    try:
        with engine.connect():
            return True
    except OperationalError:
        return False
    finally:
        engine.dispose()


def postgres_bindir() -> Path | None:
    """The newest of Debian's PostgreSQL server binary directories, else initdb's on PATH."""

    def version(initdb: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in initdb.parent.parent.name.split(".") if part.isdigit())

    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=version)
    if found:
        return found[-1].parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def unprivileged_user() -> dict[str, Any]:
    """Popen arguments running the server as a user of its own: initdb and postgres refuse
    to run as root (Debian's `postgres` user comes with the package)."""
    if os.geteuid() != 0:
        return {}
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    pytest.fail("running as root and no `postgres` or `nobody` user to run PostgreSQL as")


def die_with_parent() -> Callable[[], None]:
    """A preexec_fn: the server gets SIGQUIT (immediate shutdown) if the test run dies
    without stopping it (Linux's PR_SET_PDEATHSIG; set after the user change, which clears it)."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # loaded before the fork
    return lambda: prctl(1, signal.SIGQUIT)


def start_postgres_server(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A PostgreSQL of the test run's own in `workdir` (trust auth, user postgres, 127.0.0.1
    on a free port, unix sockets in `workdir`, no fsync); returns (postmaster, url)."""
    bindir = postgres_bindir()
    if bindir is None:
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_URL} (set PARTICIPANT_POSTGRES_URL) and "
            "its server binaries are not installed (no initdb under /usr/lib/postgresql/*/bin) "
            "to start one: run `make test`, which installs Debian's postgresql package",
            pytrace=False,
        )
    run_as = unprivileged_user()
    if run_as:
        os.chown(workdir, run_as["user"], run_as["group"])
    env = {**os.environ, "LC_ALL": "C"}
    data = workdir / "data"
    initdb = [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]
    initdb += ["-E", "UTF8", "--locale=C", "--no-sync"]
    init = subprocess.run(initdb, cwd=workdir, env=env, capture_output=True, **run_as)
    if init.returncode != 0:
        pytest.fail(f"initdb failed: {(init.stdout + init.stderr).decode()[-3000:]}")
    port = free_port()
    server = [str(bindir / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port)]
    server += ["-k", str(workdir)]  # unix sockets here, not in /var/run/postgresql
    # Durability is not under test: the data directory is thrown away at the end.
    server += ["-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off"]
    log_path = workdir / "postgres.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            server,
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent(),
            **run_as,
        )
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    deadline = time.time() + 30
    while time.time() < deadline and proc.poll() is None:
        if postgres_answers(url):
            return proc, url
        time.sleep(0.1)
    stop_postgres_server(proc)
    pytest.fail(f"PostgreSQL did not start: {log_path.read_text()[-3000:]}")


def stop_postgres_server(proc: subprocess.Popen[bytes]) -> None:
    """Immediate shutdown (the data directory is deleted next), SIGKILL if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """PARTICIPANT_POSTGRES_URL if it accepts a connection, else a PostgreSQL of the run's own
    (in a directory of /tmp, which the unprivileged server user can reach)."""
    if postgres_answers(POSTGRES_URL):
        yield POSTGRES_URL
        return
    workdir = Path(tempfile.mkdtemp(prefix="pytest-postgres-"))
    try:
        proc, url = start_postgres_server(workdir)
        try:
            yield url
        finally:
            stop_postgres_server(proc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --- PostgreSQL, SQLite and Redis of the module's own ---------------------------------------
@pytest.fixture(scope="module")
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    """An engine on a database created for this module (dropped at the end)."""
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    name = f"barrier_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        pytest.fail(
            f"PostgreSQL is not reachable at {postgres_url} (set PARTICIPANT_POSTGRES_URL): "
            f"the SQL barrier tests need a real PostgreSQL. {exc.orig}",
            pytrace=False,
        )
    engine = create_engine(admin.url.set(database=name), pool_size=10)
    try:
        metadata.create_all(engine)
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def pg_barrier(pg_engine: Engine) -> SqlBarrier:
    barrier = SqlBarrier(pg_engine)
    barrier.create_table(pg_engine)
    return barrier


@pytest.fixture(scope="module")
def sqlite_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path_factory.mktemp('barrier') / 'barrier.db'}")
    metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def rds(redis_url: str) -> Iterator[tuple[redis.Redis, str]]:
    """A client of the suite's Redis and a key prefix of this module's own."""
    client = redis.Redis.from_url(redis_url)
    prefix = f"barrier-test-{uuid.uuid4().hex[:10]}:"
    yield client, prefix
    for k in client.scan_iter(match=f"{prefix}*", count=1000):
        client.delete(k)
    client.close()


# --- one harness per implementation, for the cases they share -------------------------------
@dataclass
class Harness:
    """`act(key, note, fail)`: the business write (append `note` to the saga's ledger)
    behind the barrier, raising Boom after writing when `fail`; `notes(saga_id)`: the
    saga's ledger; `rolls_back`: whether a write made before an exception is undone."""

    act: Callable[[str, str, bool], Outcome]
    notes: Callable[[str], list[str]]
    rolls_back: bool = True


def sql_harness(engine: Engine, barrier: SqlBarrier) -> Harness:
    def act(k: str, note: str, fail: bool) -> Outcome:
        saga_id = BarrierKey.parse(k).saga_id

        def write(conn: Connection) -> dict[str, Any]:
            row = conn.execute(
                insert(ledger).values(saga_id=saga_id, note=note)
            ).inserted_primary_key
            if fail:
                raise Boom(note)
            return {"note": note, "row": row[0] if row else None}

        with engine.connect() as conn:
            return barrier.run(conn, k, write)

    def notes(saga_id: str) -> list[str]:
        with engine.connect() as conn:
            query = select(ledger.c.note).where(ledger.c.saga_id == saga_id).order_by(ledger.c.id)
            return list(conn.scalars(query))

    return Harness(act, notes)


def redis_harness(client: redis.Redis, prefix: str) -> Harness:
    barrier = RedisBarrier(client, prefix=f"{prefix}barrier:")

    def act(k: str, note: str, fail: bool) -> Outcome:
        book = f"{prefix}ledger:{BarrierKey.parse(k).saga_id}"

        def write(tx: RedisTx) -> dict[str, Any]:
            length = int(tx.read.llen(book))
            tx.write.rpush(book, note)
            if fail:
                raise Boom(note)
            return {"note": note, "row": length + 1}

        return barrier.run(k, write, watch=[book])

    def notes(saga_id: str) -> list[str]:
        return [n.decode() for n in client.lrange(f"{prefix}ledger:{saga_id}", 0, -1)]

    return Harness(act, notes)


def memory_harness() -> Harness:
    barrier = MemoryBarrier()
    books: dict[str, list[str]] = {}

    def act(k: str, note: str, fail: bool) -> Outcome:
        book = books.setdefault(BarrierKey.parse(k).saga_id, [])

        def write() -> dict[str, Any]:
            if fail:  # memory has no rollback: its functions raise before they write
                raise Boom(note)
            book.append(note)
            return {"note": note, "row": len(book)}

        return barrier.run(k, write)

    return Harness(act, lambda saga_id: list(books.get(saga_id, [])), rolls_back=False)


@pytest.fixture(params=["postgresql", "sqlite", "redis", "memory"])
def harness(request: pytest.FixtureRequest) -> Harness:
    if request.param == "postgresql":
        engine = request.getfixturevalue("pg_engine")
        return sql_harness(engine, request.getfixturevalue("pg_barrier"))
    if request.param == "sqlite":
        engine = request.getfixturevalue("sqlite_engine")
        barrier = SqlBarrier(engine)
        barrier.create_table(engine)
        return sql_harness(engine, barrier)
    if request.param == "redis":
        return redis_harness(*request.getfixturevalue("rds"))
    return memory_harness()


# --- the key --------------------------------------------------------------------------------
def test_key_is_parsed_from_the_right() -> None:
    """`<saga_id>:<step>:<op>` splits from the right, so a saga id may hold colons."""
    sid = saga()
    assert BarrierKey.parse(f"{sid}:reserve:action") == BarrierKey(sid, "reserve", "action")
    odd = BarrierKey.parse("tenant:7:order-1:charge_card:compensation")
    assert (odd.saga_id, odd.step, odd.op) == ("tenant:7:order-1", "charge_card", "compensation")
    assert str(odd) == "tenant:7:order-1:charge_card:compensation"
    assert odd.is_compensation


@pytest.mark.parametrize(
    "raw", ["", "key-123", "abc:reserve", ":reserve:action", "abc::action", "abc:reserve:undo"]
)
def test_malformed_keys_are_refused(raw: str) -> None:
    """A key that is not `<saga_id>:<step>:<action|compensation>` raises InvalidKey."""
    with pytest.raises(InvalidKey):
        BarrierKey.parse(raw)


def test_decide_covers_every_record_combination() -> None:
    """The decision table: run, replay, null compensation, cancelled."""
    ran = {"state": "done", "result": {"id": 1}}
    blocked, null = {"state": "blocked"}, {"state": "null"}
    assert decide("action", None, None) == (Decision.RUN, None)
    assert decide("action", ran, None) == (Decision.REPLAY, {"id": 1})
    assert decide("action", ran, ran) == (Decision.REPLAY, {"id": 1})
    assert decide("action", blocked, null) == (Decision.CANCELLED, None)
    assert decide("compensation", None, None) == (Decision.NULL_COMPENSATION, None)
    assert decide("compensation", ran, None) == (Decision.RUN, None)
    assert decide("compensation", ran, ran) == (Decision.REPLAY, {"id": 1})
    assert decide("compensation", blocked, null) == (Decision.NULL_COMPENSATION, None)


def test_core_imports_without_sqlalchemy_redis_or_flask() -> None:
    """`import participant` loads none of SQLAlchemy, redis and Flask."""
    code = (
        "import sys; import participant, participant.core; "
        "bad = [m for m in ('sqlalchemy', 'redis', 'flask') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# --- the three cases and atomicity, for every implementation --------------------------------
def test_repeat_returns_the_first_result_and_acts_once(harness: Harness) -> None:
    """A repeated key replays the first result and does not write again."""
    sid = saga()
    first = harness.act(key(sid), "first", False)
    again = harness.act(key(sid), "second", False)
    assert first.decision is Decision.RUN and first.acted
    assert again.decision is Decision.REPLAY and again.replayed
    assert again.value == first.value == {"note": "first", "row": first.value["row"]}
    assert harness.notes(sid) == ["first"]


def test_null_compensation_does_nothing_and_records_itself(harness: Harness) -> None:
    """A compensation for an action never seen does nothing, and so does its repeat."""
    sid = saga()
    undo = harness.act(key(sid, "compensation"), "undo", False)
    again = harness.act(key(sid, "compensation"), "undo", False)
    assert undo.decision is Decision.NULL_COMPENSATION and undo.skipped and undo.value is None
    assert again.decision is Decision.NULL_COMPENSATION
    assert harness.notes(sid) == []


def test_late_action_after_its_compensation_does_nothing(harness: Harness) -> None:
    """An action arriving after its (null) compensation is cancelled and writes nothing."""
    sid = saga()
    harness.act(key(sid, "compensation"), "undo", False)
    late = harness.act(key(sid), "late", False)
    assert late.decision is Decision.CANCELLED and late.skipped and late.value is None
    assert harness.act(key(sid), "later", False).decision is Decision.CANCELLED
    assert harness.notes(sid) == []


def test_action_then_compensation_both_run_once(harness: Harness) -> None:
    """In the normal order both run once; a late repeat of the action replays, not re-acts."""
    sid = saga()
    assert harness.act(key(sid), "do", False).acted
    assert harness.act(key(sid, "compensation"), "undo", False).acted
    assert harness.act(key(sid, "compensation"), "undo", False).replayed
    assert harness.act(key(sid), "do", False).replayed
    assert harness.notes(sid) == ["do", "undo"]


def test_an_exception_records_nothing_and_a_retry_acts(harness: Harness) -> None:
    """fn raising after its write leaves neither the write nor the barrier record."""
    sid = saga()
    with pytest.raises(Boom):
        harness.act(key(sid), "doomed", True)
    if harness.rolls_back:
        assert harness.notes(sid) == []
    retry = harness.act(key(sid), "retry", False)
    assert retry.acted
    assert harness.notes(sid) == ["retry"]
    # no record was left either: a compensation now undoes the retry (not a null one)
    assert harness.act(key(sid, "compensation"), "undo", False).acted


# --- SQL: concurrency, crashes, transactions --------------------------------------------------
def wait_for_lock_waiter(engine: Engine, timeout: float = 10) -> None:
    """Wait until some session of the test database waits on a lock (a row lock of the
    barrier's unique key, here)."""
    deadline = time.time() + timeout
    with engine.connect() as conn:
        while True:
            waiting = conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            )
            conn.rollback()
            if waiting:
                return
            assert time.time() < deadline, "no request waited on the barrier's row lock"
            time.sleep(0.02)


def race(*calls: Callable[[], Outcome]) -> list[Outcome]:
    """Run the calls in threads at once; their outcomes in order (re-raising errors)."""
    results: list[Any] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def go(i: int) -> None:
        start.wait(5)
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # handed to the test thread
            results[i] = exc

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


def test_sql_two_concurrent_requests_with_one_key_have_one_winner(
    pg_engine: Engine, pg_barrier: SqlBarrier
) -> None:
    """PostgreSQL: two requests with the same key at once: one acts while the other waits
    on the row lock, then replays the winner's result."""
    sid = saga()
    calls: list[str] = []

    def write(conn: Connection) -> dict[str, Any]:
        calls.append("write")
        conn.execute(insert(ledger).values(saga_id=sid, note="once"))
        wait_for_lock_waiter(pg_engine)  # the other request is blocked behind this one
        return {"note": "once"}

    def request() -> Outcome:
        with pg_engine.connect() as conn:
            return pg_barrier.run(conn, key(sid), write)

    outcomes = race(request, request)
    assert sorted(o.decision.value for o in outcomes) == ["replay", "run"]
    assert [o.value for o in outcomes] == [{"note": "once"}] * 2
    assert calls == ["write"]
    assert sql_harness(pg_engine, pg_barrier).notes(sid) == ["once"]


@pytest.mark.parametrize("action_commits", [True, False], ids=["commits", "rolls-back"])
def test_sql_compensation_racing_an_uncommitted_action_waits_for_it(
    pg_engine: Engine, pg_barrier: SqlBarrier, action_commits: bool
) -> None:
    """PostgreSQL: a compensation arriving while its action is uncommitted waits for it;
    it then undoes the action if it committed, or is a null compensation if it rolled back
    (and the action can no longer happen)."""
    sid = saga()
    in_action = threading.Event()

    def action() -> Outcome:
        def write(conn: Connection) -> dict[str, Any]:
            conn.execute(insert(ledger).values(saga_id=sid, note="do"))
            in_action.set()
            wait_for_lock_waiter(pg_engine)
            if not action_commits:
                raise Boom("the action fails after writing")
            return {"note": "do"}

        with pg_engine.connect() as conn:
            try:
                return pg_barrier.run(conn, key(sid), write)
            except Boom:
                return Outcome(None, Decision.CANCELLED)  # a marker: it raised

    def compensation() -> Outcome:
        assert in_action.wait(10)

        def undo(conn: Connection) -> dict[str, Any]:
            gone = conn.execute(delete(ledger).where(ledger.c.saga_id == sid)).rowcount
            return {"deleted": gone}

        with pg_engine.connect() as conn:
            return pg_barrier.run(conn, key(sid, "compensation"), undo)

    did, undid = race(action, compensation)
    notes = sql_harness(pg_engine, pg_barrier).notes
    if action_commits:
        assert did.acted and undid.acted and undid.value == {"deleted": 1}
    else:
        assert undid.decision is Decision.NULL_COMPENSATION
        late = sql_harness(pg_engine, pg_barrier).act(key(sid), "late", False)
        assert late.decision is Decision.CANCELLED
    assert notes(sid) == []


def test_sql_a_lost_connection_before_commit_keeps_neither_write(
    pg_engine: Engine, pg_barrier: SqlBarrier
) -> None:
    """PostgreSQL: the server ends the session between the business write and the commit:
    neither the write nor the barrier row survives, and a retry acts."""
    sid = saga()

    def write(conn: Connection) -> dict[str, Any]:
        conn.execute(insert(ledger).values(saga_id=sid, note="lost"))
        pid = conn.scalar(text("SELECT pg_backend_pid()"))
        with pg_engine.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            admin.commit()
        return {"note": "lost"}

    with pg_engine.connect() as conn, pytest.raises(OperationalError):
        pg_barrier.run(conn, key(sid), write)
    with pg_engine.connect() as conn:
        assert pg_barrier.record(conn, key(sid)) is None
    harness = sql_harness(pg_engine, pg_barrier)
    assert harness.notes(sid) == []
    assert harness.act(key(sid), "retry", False).acted
    assert harness.notes(sid) == ["retry"]


def test_sql_guard_joins_an_open_transaction_as_a_savepoint(
    pg_engine: Engine, pg_barrier: SqlBarrier
) -> None:
    """PostgreSQL: inside the caller's transaction, a failing guard block rolls back only
    its savepoint; the caller's other writes and a later guard commit with the caller."""
    sid = saga()
    with pg_engine.connect() as conn:
        conn.execute(insert(ledger).values(saga_id=sid, note="before"))
        with pytest.raises(Boom), pg_barrier.guard(conn, key(sid)) as call:
            assert call.should_run
            conn.execute(insert(ledger).values(saga_id=sid, note="doomed"))
            raise Boom
        with pg_barrier.guard(conn, key(sid)) as call:
            assert call.should_run
            conn.execute(insert(ledger).values(saga_id=sid, note="guarded"))
            call.result = {"ok": True}
        assert call.outcome == Outcome(BarrierKey.parse(key(sid)), Decision.RUN, {"ok": True})
        conn.commit()
    assert sql_harness(pg_engine, pg_barrier).notes(sid) == ["before", "guarded"]


def test_sql_run_with_an_orm_session(pg_engine: Engine, pg_barrier: SqlBarrier) -> None:
    """PostgreSQL: `run` takes a Session too; the writes made through it commit with the
    barrier row, and a repeat replays."""
    sid = saga()
    make_session = sessionmaker(pg_engine)

    def write(session: Session) -> dict[str, Any]:
        session.execute(insert(ledger).values(saga_id=sid, note="orm"))
        return {"note": "orm"}

    with make_session() as session:
        first = pg_barrier.run(session, key(sid), write)
    with make_session() as session:
        again = pg_barrier.run(session, key(sid), write)
    assert (first.decision, again.decision) == (Decision.RUN, Decision.REPLAY)
    assert sql_harness(pg_engine, pg_barrier).notes(sid) == ["orm"]


def test_sql_purge_deletes_old_rows_only(pg_engine: Engine, pg_barrier: SqlBarrier) -> None:
    """PostgreSQL: purge removes rows older than the age given and keeps newer ones."""
    sid = saga()
    sql_harness(pg_engine, pg_barrier).act(key(sid), "do", False)
    with pg_engine.connect() as conn:
        assert pg_barrier.purge(conn, timedelta(hours=1)) == 0
        assert pg_barrier.record(conn, key(sid)) is not None
        conn.execute(
            pg_barrier.table.update()
            .where(pg_barrier.table.c.saga_id == sid)
            .values(created_at=func.now() - text("interval '2 hours'"))
        )
        conn.commit()
        assert pg_barrier.purge(conn, timedelta(hours=1)) == 1
        assert pg_barrier.record(conn, key(sid)) is None


# --- Redis: concurrency, watched reads, the tx contract --------------------------------------
def test_redis_two_concurrent_requests_with_one_key_have_one_winner(
    rds: tuple[redis.Redis, str],
) -> None:
    """Redis: two requests with the same key run their functions at once; one EXEC
    applies, the other fails its WATCH, retries and replays the winner's result."""
    client, prefix = rds
    barrier = RedisBarrier(client, prefix=f"{prefix}barrier:")
    sid = saga()
    counter = f"{prefix}counter:{sid}"
    both_inside = threading.Barrier(2)
    calls: list[str] = []

    def write(tx: RedisTx) -> dict[str, Any]:
        calls.append("write")
        both_inside.wait(10)  # both have read the (empty) records before either writes
        tx.write.incr(counter)
        return {"winner": threading.current_thread().name}

    outcomes = race(lambda: barrier.run(key(sid), write), lambda: barrier.run(key(sid), write))
    assert sorted(o.decision.value for o in outcomes) == ["replay", "run"]
    assert outcomes[0].value == outcomes[1].value
    assert calls == ["write", "write"]  # both ran their function; one write was applied
    assert client.get(counter) == b"1"


def test_redis_a_change_to_a_watched_key_reruns_the_function(
    rds: tuple[redis.Redis, str],
) -> None:
    """Redis: a key the function read changes before the EXEC: nothing is applied, the
    function runs again on the new value, and its writes and record go out together."""
    client, prefix = rds
    barrier = RedisBarrier(client, prefix=f"{prefix}barrier:")
    sid = saga()
    quota = f"{prefix}quota:{sid}"
    client.set(quota, 100)
    seen: list[int] = []

    def reserve(tx: RedisTx) -> dict[str, Any]:
        left = int(tx.read.get(quota))
        seen.append(left)
        if len(seen) == 1:
            client.decrby(quota, 30)  # another writer, between our read and our EXEC
        tx.write.decrby(quota, 10)
        return {"remaining": left - 10}

    outcome = barrier.run(key(sid), reserve, watch=[quota])
    assert seen == [100, 70]
    assert outcome.value == {"remaining": 60}
    assert client.get(quota) == b"60"


def test_redis_tx_refuses_writes_before_the_multi(rds: tuple[redis.Redis, str]) -> None:
    """Redis: tx.read has no write commands, and refuses reads after the first write; a
    refused call records nothing."""
    client, prefix = rds
    barrier = RedisBarrier(client, prefix=f"{prefix}barrier:")
    sid = saga()
    target = f"{prefix}x:{sid}"

    with pytest.raises(AttributeError, match="only read commands"):
        barrier.run(key(sid), lambda tx: tx.read.set(target, 1))

    def read_after_write(tx: RedisTx) -> None:
        tx.write.set(target, 1)
        tx.read.get(target)

    with pytest.raises(RuntimeError, match=r"tx\.read after tx\.write"):
        barrier.run(key(sid), read_after_write)
    assert client.exists(target) == 0
    assert barrier.records(key(sid)) == {}


def test_redis_records_expire_with_ttl(rds: tuple[redis.Redis, str]) -> None:
    """Redis: with ttl_seconds, the branch's record carries that expiry."""
    client, prefix = rds
    barrier = RedisBarrier(client, prefix=f"{prefix}barrier:", ttl_seconds=600)
    sid = saga()
    barrier.run(key(sid, "compensation"), lambda tx: None)
    assert 0 < client.ttl(barrier.redis_key(key(sid))) <= 600
    assert barrier.records(key(sid)) == {
        "action": {"state": "blocked"},
        "compensation": {"state": "null"},
    }


def test_redis_contention_is_bounded(rds: tuple[redis.Redis, str]) -> None:
    """Redis: a watched key that changes on every attempt ends in BarrierContention."""
    client, prefix = rds
    barrier = RedisBarrier(client, prefix=f"{prefix}barrier:", max_attempts=3)
    sid = saga()
    hot = f"{prefix}hot:{sid}"

    def write(tx: RedisTx) -> None:
        tx.read.get(hot)
        client.incr(hot)
        tx.write.set(f"{prefix}never:{sid}", 1)

    with pytest.raises(BarrierContention):
        barrier.run(key(sid), write, watch=[hot])
    assert client.get(hot) == b"3"
    assert client.exists(f"{prefix}never:{sid}") == 0


def test_memory_bound_forgets_the_oldest_branches() -> None:
    """Memory: with max_records, the oldest branch is forgotten first."""
    barrier = MemoryBarrier(max_records=2)
    sids = [saga() for _ in range(3)]
    for sid in sids:
        barrier.run(key(sid), lambda: 1)
    assert len(barrier) == 2
    assert barrier.records(key(sids[0])) == {}
    assert barrier.run(key(sids[2]), lambda: 2).value == 1


# --- Flask over real HTTP ---------------------------------------------------------------------
@dataclass
class FlaskService:
    url: str
    calls: list[str]


@pytest.fixture(scope="module")
def flask_service(
    pg_engine: Engine, pg_barrier: SqlBarrier, rds: tuple[redis.Redis, str]
) -> Iterator[FlaskService]:
    """A Flask app whose item endpoints use the SQL barrier and whose counter endpoint uses
    the Redis barrier, served by werkzeug on 127.0.0.1."""
    from flask import Flask, jsonify, request

    from participant.flask import barrier_endpoint

    client, prefix = rds
    app = Flask("barrier-test")
    calls: list[str] = []

    @app.post("/items")
    @barrier_endpoint(pg_barrier)
    def create_item(conn: Connection) -> Any:
        calls.append("create")
        body = request.get_json()
        item_id = conn.execute(insert(items).values(name=body["name"])).inserted_primary_key[0]
        if body.get("fail"):
            return jsonify(error="refused after writing"), 422
        return {"id": item_id, "name": body["name"]}, 201, {"Location": f"/items/{item_id}"}

    @app.delete("/items/by-name/<name>")
    @barrier_endpoint(pg_barrier)
    def delete_items(conn: Connection, name: str) -> Any:
        calls.append("delete")
        gone = conn.execute(delete(items).where(items.c.name == name)).rowcount
        return {"deleted": gone}

    @app.post("/strict")
    @barrier_endpoint(pg_barrier, require_key=True)
    def strict(conn: Connection) -> Any:
        return {"ok": True}

    @app.post("/counters/<name>")
    @barrier_endpoint(RedisBarrier(client, prefix=f"{prefix}flask:"))
    def bump(tx: RedisTx, name: str) -> Any:
        calls.append("bump")
        counter = f"{prefix}counter:{name}"
        value = int(tx.read.get(counter) or 0) + 1
        tx.write.set(counter, value)
        return {"value": value}

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield FlaskService(f"http://127.0.0.1:{server.server_port}", calls)
    server.shutdown()
    server.server_close()
    thread.join(5)


def item_names(engine: Engine, name: str) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).where(items.c.name == name)) or 0)


def test_flask_repeat_replays_the_first_answer(
    flask_service: FlaskService, pg_engine: Engine
) -> None:
    """Flask: a repeated key gets the first answer again (status, body, Location) and the
    view runs once."""
    name, sid = uuid.uuid4().hex, saga()
    headers = {"Idempotency-Key": key(sid)}
    before = len(flask_service.calls)
    with httpx.Client(base_url=flask_service.url) as http:
        first = http.post("/items", json={"name": name}, headers=headers)
        again = http.post("/items", json={"name": "other"}, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json() and first.json()["name"] == name
    assert again.headers["Location"] == first.headers["Location"]
    assert (first.headers["Saga-Barrier"], again.headers["Saga-Barrier"]) == ("run", "replay")
    assert flask_service.calls[before:] == ["create"]
    assert item_names(pg_engine, name) == 1


def test_flask_null_compensation_then_late_action(
    flask_service: FlaskService, pg_engine: Engine
) -> None:
    """Flask: a compensation for an unseen action answers 200 without running the view; the
    late action then answers 409 and creates nothing."""
    name, sid = uuid.uuid4().hex, saga()
    before = len(flask_service.calls)
    with httpx.Client(base_url=flask_service.url) as http:
        undo = http.delete(
            f"/items/by-name/{name}", headers={"Idempotency-Key": key(sid, "compensation")}
        )
        late = http.post("/items", json={"name": name}, headers={"Idempotency-Key": key(sid)})
    assert undo.status_code == 200
    assert undo.json()["barrier"] == "null_compensation"
    assert undo.headers["Saga-Barrier"] == "null_compensation"
    assert late.status_code == 409
    assert late.json()["barrier"] == "cancelled"
    assert flask_service.calls[before:] == []
    assert item_names(pg_engine, name) == 0


def test_flask_error_answers_are_rolled_back_and_not_stored(
    flask_service: FlaskService, pg_engine: Engine
) -> None:
    """Flask: a 4xx answer rolls back the view's writes and stores nothing: the compensation
    that follows is a null one, and the retry of the action is cancelled."""
    name, sid = uuid.uuid4().hex, saga()
    with httpx.Client(base_url=flask_service.url) as http:
        refused = http.post(
            "/items", json={"name": name, "fail": True}, headers={"Idempotency-Key": key(sid)}
        )
        assert refused.status_code == 422 and "Saga-Barrier" not in refused.headers
        assert item_names(pg_engine, name) == 0
        undo = http.delete(
            f"/items/by-name/{name}", headers={"Idempotency-Key": key(sid, "compensation")}
        )
        retry = http.post("/items", json={"name": name}, headers={"Idempotency-Key": key(sid)})
    assert undo.json()["barrier"] == "null_compensation"
    assert retry.status_code == 409
    assert item_names(pg_engine, name) == 0


def test_flask_requests_without_a_key_pass_through_and_bad_keys_get_400(
    flask_service: FlaskService, pg_engine: Engine
) -> None:
    """Flask: no header runs the view each time; a malformed key gets 400; with
    require_key=True a missing key gets 400."""
    name = uuid.uuid4().hex
    with httpx.Client(base_url=flask_service.url) as http:
        plain = [http.post("/items", json={"name": name}) for _ in range(2)]
        bad = http.post("/items", json={"name": name}, headers={"Idempotency-Key": "key-1"})
        strict = http.post("/strict")
    assert [r.status_code for r in plain] == [201, 201]
    assert "Saga-Barrier" not in plain[0].headers
    assert item_names(pg_engine, name) == 2
    assert bad.status_code == 400 and "key-1" in bad.json()["error"]
    assert strict.status_code == 400


def test_flask_with_the_redis_barrier(
    flask_service: FlaskService, rds: tuple[redis.Redis, str]
) -> None:
    """Flask over the Redis barrier: the view writes through the transaction it is given;
    a repeat replays, a late action after its compensation is refused."""
    client, prefix = rds
    name, sid = uuid.uuid4().hex, saga()
    with httpx.Client(base_url=flask_service.url) as http:
        first = http.post(f"/counters/{name}", headers={"Idempotency-Key": key(sid)})
        again = http.post(f"/counters/{name}", headers={"Idempotency-Key": key(sid)})
        other = saga()
        http.post(f"/counters/{name}", headers={"Idempotency-Key": key(other, "compensation")})
        late = http.post(f"/counters/{name}", headers={"Idempotency-Key": key(other)})
    assert first.json() == again.json() == {"value": 1}
    assert late.status_code == 409
    assert client.get(f"{prefix}counter:{name}") == b"1"
