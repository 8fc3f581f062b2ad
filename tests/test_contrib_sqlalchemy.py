"""`transactional` for SQLAlchemy on the real PostgreSQL: psycopg (sync) and asyncpg (async).

Each test makes its own table (a unique name), drops it after, and disposes of its
engines. Concurrent transactions run on connections of their own: threads for the
sync engine, tasks for the async one, coordinated by barriers (never by sleeping).
Errors the retry rules must recognise are real: raised by PostgreSQL itself, from
real concurrent transactions or a real ``pg_terminate_backend``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import subprocess
import sys
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import asyncpg  # type: ignore[import-untyped]
import psycopg
import pytest
import sqlalchemy.exc
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, scoped_session, sessionmaker

import stalwart
from stalwart.contrib import _transaction as tx
from stalwart.contrib.sqlalchemy import (
    NestedTransactionError,
    Transactional,
    TransactionRollback,
    run_transaction,
    transactional,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

WAIT = 30.0  # seconds a test waits for what should happen much sooner
ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
URL = "postgres@127.0.0.1:5432/test"
APP = "stalwart-sqlalchemy-tests"  # application_name of every connection the engines open

postgres = pytest.mark.postgres


@pytest.fixture
def anyio_backend() -> str:
    """asyncpg runs on asyncio only."""
    return "asyncio"


class Recorder:
    """Hears every rolled-back attempt (from any thread)."""

    def __init__(self) -> None:
        self.events: list[TransactionRollback] = []
        self.lock = threading.Lock()

    def on_rollback(self, event: TransactionRollback) -> None:
        with self.lock:
            self.events.append(event)

    def summary(self) -> list[tuple[str, int, bool, str | None]]:
        return [(e.reason, e.attempt, e.will_retry, e.sqlstate) for e in self.events]


class Broken:
    """A listener that always fails."""

    def on_rollback(self, event: TransactionRollback) -> None:
        raise RuntimeError("listener broke")


@pytest.fixture
def table() -> Iterator[str]:
    """A table of accounts (name, balance) of its own, dropped after the test."""
    name = f"stalwart_sa_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f"CREATE TABLE {name} (name text PRIMARY KEY, balance int NOT NULL)")
    try:
        yield name
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f"DROP TABLE IF EXISTS {name}")


@pytest.fixture
def engine() -> Iterator[Engine]:
    """A psycopg 3 engine, disposed of after the test."""
    made = create_engine(f"postgresql+psycopg://{URL}", connect_args={"application_name": APP})
    try:
        yield made
    finally:
        made.dispose()


@pytest.fixture
async def async_engine() -> AsyncIterator[AsyncEngine]:
    """An asyncpg engine, disposed of after the test."""
    made = create_async_engine(
        f"postgresql+asyncpg://{URL}", connect_args={"server_settings": {"application_name": APP}}
    )
    try:
        yield made
    finally:
        await made.dispose()


def rows(table: str) -> dict[str, int]:
    """The table's rows, read on a connection of the test's own."""
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        found = admin.execute(f"SELECT name, balance FROM {table}").fetchall()  # noqa: S608
    return dict(found)


def insert(table: str, **balances: int) -> None:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        for name, balance in balances.items():
            admin.execute(f"INSERT INTO {table} VALUES (%s, %s)", (name, balance))  # noqa: S608


def alive(pids: list[int]) -> set[int]:
    """The server processes among `pids` that still exist."""
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        found = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)
        ).fetchall()
    return {row[0] for row in found}


def terminate(pid: int) -> None:
    """End the server process `pid`, and poll until it is gone."""
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    deadline = time.monotonic() + WAIT
    while alive([pid]) and time.monotonic() < deadline:
        threading.Event().wait(0.05)
    assert not alive([pid])


def our_connections() -> int:
    """How many server sessions the test engines still hold open (by application_name)."""
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (APP,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def no_connections_left() -> int:
    """Poll until the engines' server sessions are gone (they exit soon after closing)."""
    deadline = time.monotonic() + WAIT
    while (left := our_connections()) and time.monotonic() < deadline:
        threading.Event().wait(0.05)
    return left


def raise_sqlstate(session: Session, condition: str) -> None:
    """Make PostgreSQL itself raise the error `condition` (a real error with its SQLSTATE)."""
    session.execute(
        text(f"DO $$ BEGIN RAISE EXCEPTION 'test' USING ERRCODE = '{condition}'; END $$")
    )


async def araise_sqlstate(session: AsyncSession, condition: str) -> None:
    await session.execute(
        text(f"DO $$ BEGIN RAISE EXCEPTION 'test' USING ERRCODE = '{condition}'; END $$")
    )


class TaskBarrier:
    """A barrier for `parties` asyncio tasks (``asyncio.Barrier`` is Python 3.11+)."""

    def __init__(self, parties: int) -> None:
        self.waiting = parties
        self.open = asyncio.Event()

    async def wait(self) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            self.open.set()
        await asyncio.wait_for(self.open.wait(), WAIT)


def run_threads(*targets: Callable[[], object]) -> None:
    """Run each target in a thread of its own; re-raise the first error."""
    errors: list[BaseException] = []

    def runner(target: Callable[[], object]) -> None:
        try:
            target()
        except BaseException as exc:  # handed to the test
            errors.append(exc)

    threads = [threading.Thread(target=runner, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert not any(thread.is_alive() for thread in threads)
    if errors:
        raise errors[0]


# -- sync, psycopg: real concurrent transactions ---------------------------------------


@postgres
def test_serialization_failure_is_retried_and_commits_once(
    engine: Engine, table: str, instant_retries: None
) -> None:
    """Two SERIALIZABLE read-then-write transactions: the loser runs again; nothing is lost."""
    insert(table, shared=0)
    serializable = sessionmaker(engine.execution_options(isolation_level="SERIALIZABLE"))
    barrier = threading.Barrier(2, timeout=WAIT)
    recorder = Recorder()
    bodies: list[str] = []

    @transactional(serializable, listeners=[recorder])
    def add_ten(session: Session, who: str) -> int:
        first = who not in bodies
        bodies.append(who)
        query = text(f"SELECT balance FROM {table} WHERE name = 'shared'")  # noqa: S608
        balance = int(session.execute(query).scalar_one())
        if first:
            barrier.wait()  # both have read the balance before either writes it
        session.execute(
            text(f"UPDATE {table} SET balance = :b WHERE name = 'shared'"),  # noqa: S608
            {"b": balance + 10},
        )
        return balance + 10

    results: list[int] = []
    run_threads(lambda: results.append(add_ten("a")), lambda: results.append(add_ten("b")))
    assert rows(table) == {"shared": 20}
    assert sorted(results) == [10, 20]
    assert len(bodies) == 3
    assert recorder.summary() == [("serialization_failure", 1, True, "40001")]
    [event] = recorder.events
    assert event.name.endswith("add_ten")
    assert event.database == "test"
    assert event.exception_type == "sqlalchemy.exc.OperationalError"


@postgres
def test_deadlock_is_retried_and_commits_once(
    engine: Engine, table: str, instant_retries: None
) -> None:
    """Two transactions lock two rows in opposite orders: the victim runs again."""
    insert(table, a=0, b=0)
    barrier = threading.Barrier(2, timeout=WAIT)
    recorder = Recorder()
    bodies: list[str] = []
    update = text(f"UPDATE {table} SET balance = balance + 1 WHERE name = :n")  # noqa: S608

    @transactional(sessionmaker(engine), listeners=[recorder])
    def move(session: Session, first: str, second: str) -> None:
        again = first in bodies
        bodies.append(first)
        session.execute(text("SET LOCAL deadlock_timeout = '50ms'"))
        session.execute(update, {"n": first})
        if not again:
            barrier.wait()  # each holds its first row before asking for the other's
        session.execute(update, {"n": second})

    run_threads(lambda: move("a", "b"), lambda: move("b", "a"))
    assert rows(table) == {"a": 2, "b": 2}
    assert len(bodies) == 3
    assert recorder.summary() == [("deadlock", 1, True, "40P01")]


@postgres
def test_lost_connection_is_retried_on_a_new_connection(
    engine: Engine, table: str, instant_retries: None
) -> None:
    """The server ends the session mid-transaction: the next attempt reconnects and commits."""
    recorder = Recorder()
    pids: list[int] = []

    @transactional(sessionmaker(engine), listeners=[recorder])
    def write(session: Session) -> None:
        pids.append(int(session.execute(text("SELECT pg_backend_pid()")).scalar_one()))
        session.execute(
            text(f"INSERT INTO {table} VALUES ('survivor', :n)"),  # noqa: S608
            {"n": len(pids)},
        )
        if len(pids) == 1:
            terminate(pids[0])
            session.execute(text("SELECT 1"))  # the session is gone

    write()
    assert len(pids) == 2
    assert pids[0] != pids[1]
    assert rows(table) == {"survivor": 2}
    [(reason, attempt, will_retry, _)] = recorder.summary()
    assert (reason, attempt, will_retry) == ("network_error", 1, True)
    engine.dispose()
    assert no_connections_left() == 0  # nothing leaked: every session was closed


@postgres
def test_integrity_error_is_raised_at_once_after_the_rollback(
    engine: Engine, table: str, instant_retries: None
) -> None:
    """A duplicate key is not retried; the attempt's earlier writes are rolled back."""
    insert(table, taken=1)
    recorder = Recorder()
    bodies: list[int] = []

    @transactional(sessionmaker(engine), listeners=[recorder])
    def write(session: Session) -> None:
        bodies.append(1)
        session.execute(text(f"INSERT INTO {table} VALUES ('fresh', 1)"))  # noqa: S608
        session.execute(text(f"INSERT INTO {table} VALUES ('taken', 2)"))  # noqa: S608

    with pytest.raises(sqlalchemy.exc.IntegrityError):
        write()
    assert bodies == [1]
    assert rows(table) == {"taken": 1}
    assert recorder.summary() == [("error", 1, False, "23505")]


@postgres
def test_the_session_given_in_the_arguments_is_used_and_stays_usable(
    engine: Engine, table: str, instant_retries: None
) -> None:
    """Bare ``@transactional`` runs each attempt in ``session.begin()`` on the session given."""
    recorder = Recorder()
    seen: list[Session] = []

    @transactional
    def write(session: Session, name: str) -> None:
        seen.append(session)
        session.execute(text(f"INSERT INTO {table} VALUES (:n, :b)"), {"n": name, "b": len(seen)})  # noqa: S608
        if len(seen) == 1:
            raise_sqlstate(session, "40001")

    unsubscribe = stalwart.events.subscribe(recorder)
    try:
        with Session(engine) as session:
            write(session, name="mine")
            assert not session.in_transaction()
            assert session.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        unsubscribe()
    assert len(seen) == 2
    assert seen[0] is seen[1]
    assert rows(table) == {"mine": 2}
    assert recorder.summary() == [("serialization_failure", 1, True, "40001")]
    assert recorder.events[0].database == "test"


@postgres
@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
@pytest.mark.parametrize(
    ("condition", "reason", "retried"),
    [
        ("40001", "serialization_failure", True),
        ("40P01", "deadlock", True),
        ("57P01", "network_error", True),
        ("08006", "network_error", True),
        ("23505", "error", False),
        ("57014", "error", False),
    ],
)
def test_the_sqlstate_decides_with_either_driver(
    driver: str, condition: str, reason: str, retried: bool, instant_retries: None
) -> None:
    """A SQLSTATE raised by PostgreSQL is read through SQLAlchemy from psycopg 3 and psycopg2."""
    made = create_engine(f"postgresql+{driver}://{URL}", connect_args={"application_name": APP})
    recorder = Recorder()
    calls: list[int] = []

    @transactional(sessionmaker(made), attempts=2, listeners=[recorder], log=False)
    def fail(session: Session) -> None:
        calls.append(1)
        raise_sqlstate(session, condition)

    try:
        with pytest.raises(sqlalchemy.exc.DBAPIError):
            fail()
    finally:
        made.dispose()
    if retried:
        assert recorder.summary() == [(reason, 1, True, condition), (reason, 2, False, condition)]
    else:
        assert recorder.summary() == [(reason, 1, False, condition)]
    assert len(calls) == (2 if retried else 1)


@postgres
def test_giving_up_raises_the_last_error_with_a_note(
    engine: Engine, instant_retries: None
) -> None:
    """When attempts run out the last error is raised as it was, noted, the last event final."""
    recorder = Recorder()

    def fail(session: Session) -> None:
        raise_sqlstate(session, "40P01")

    with pytest.raises(sqlalchemy.exc.OperationalError) as caught:
        run_transaction(sessionmaker(engine), fail, attempts=3, listeners=[recorder])
    assert recorder.summary() == [
        ("deadlock", 1, True, "40P01"),
        ("deadlock", 2, True, "40P01"),
        ("deadlock", 3, False, "40P01"),
    ]
    assert any("3 attempts" in note for note in getattr(caught.value, "__notes__", []))


@postgres
def test_run_transaction_returns_what_the_committed_attempt_returned(
    engine: Engine, table: str
) -> None:
    """``run_transaction(factory, fn)`` commits fn's writes and returns its result."""

    def write(session: Session) -> str:
        session.execute(text(f"INSERT INTO {table} VALUES ('run', 5)"))  # noqa: S608
        return "done"

    assert run_transaction(sessionmaker(engine), write) == "done"
    assert rows(table) == {"run": 5}


# -- events and listeners ---------------------------------------------------------------


@postgres
def test_rollbacks_reach_subscribers_and_failing_listeners_never_break_the_call(
    engine: Engine, table: str, instant_retries: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Listeners and subscribers that raise are logged; the others hear; the call commits."""
    recorder, subscriber = Recorder(), Recorder()
    attempts: list[int] = []

    @transactional(sessionmaker(engine), listeners=[Broken(), recorder], log=False)
    def write(session: Session) -> None:
        attempts.append(1)
        session.execute(text(f"INSERT INTO {table} VALUES ('x', :n)"), {"n": len(attempts)})  # noqa: S608
        if len(attempts) < 3:
            raise_sqlstate(session, "40001" if len(attempts) == 1 else "40P01")

    unsubscribe_broken = stalwart.events.subscribe(Broken())
    unsubscribe = stalwart.events.subscribe(subscriber)
    try:
        with caplog.at_level(logging.ERROR, logger="stalwart"):
            write()
    finally:
        unsubscribe()
        unsubscribe_broken()
    assert rows(table) == {"x": 3}
    expected = [
        ("serialization_failure", 1, True, "40001"),
        ("deadlock", 2, True, "40P01"),
    ]
    assert recorder.summary() == expected
    assert subscriber.summary() == expected
    assert sum("listener" in r.getMessage() for r in caplog.records) == 4


@postgres
def test_rollbacks_are_logged_by_default(
    engine: Engine, instant_retries: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Each rolled-back attempt is logged on ``stalwart.transaction`` with its reason."""

    @transactional(sessionmaker(engine), attempts=2)
    def fail(session: Session) -> None:
        raise_sqlstate(session, "40001")

    with (
        caplog.at_level(logging.INFO, logger="stalwart.transaction"),
        pytest.raises(sqlalchemy.exc.OperationalError),
    ):
        fail()
    retried, last = (r for r in caplog.records if r.name == "stalwart.transaction")
    assert (retried.levelno, last.levelno) == (logging.INFO, logging.WARNING)
    assert retried.__dict__["reason"] == "serialization_failure"
    assert retried.__dict__["will_retry"] is True
    assert last.__dict__["will_retry"] is False
    assert "fail" in retried.__dict__["function"]


# -- the nesting rule ---------------------------------------------------------------------


@postgres
def test_a_session_already_in_a_transaction_is_refused(engine: Engine) -> None:
    """A session given in a transaction (autobegun by a query) raises before the function runs."""
    calls: list[int] = []

    @transactional
    def write(session: Session) -> None:
        calls.append(1)

    with Session(engine) as session:
        session.execute(text("SELECT 1"))  # autobegin
        with pytest.raises(NestedTransactionError, match="already in a transaction"):
            write(session)
    assert calls == []


@postgres
def test_a_transactional_call_inside_another_is_refused(engine: Engine, table: str) -> None:
    """An inner transactional call raises; the outer one rolls back and is not retried."""
    recorder = Recorder()
    factory = sessionmaker(engine)

    @transactional(factory)
    def inner(session: Session) -> None:
        session.execute(text(f"INSERT INTO {table} VALUES ('inner', 1)"))  # noqa: S608

    @transactional(factory, listeners=[recorder])
    def outer(session: Session) -> None:
        session.execute(text(f"INSERT INTO {table} VALUES ('outer', 1)"))  # noqa: S608
        inner()

    with pytest.raises(NestedTransactionError, match="inside .*outer"):
        outer()
    assert rows(table) == {}
    assert recorder.summary() == [("error", 1, False, None)]
    assert run_transaction(factory, lambda s: 1) == 1  # the context is clear again


@postgres
def test_sessions_bound_to_a_connection_in_a_transaction_are_refused(engine: Engine) -> None:
    """A factory (or session) bound to a connection in a transaction would join it: refused."""
    calls: list[int] = []

    def body(session: Session) -> None:
        calls.append(1)

    with engine.connect() as connection, connection.begin():
        with pytest.raises(NestedTransactionError, match="bound to a connection"):
            run_transaction(sessionmaker(connection), body)
        with pytest.raises(NestedTransactionError, match="bound to a connection"):
            transactional(body)(Session(connection))
    assert calls == []


# -- async, asyncpg ------------------------------------------------------------------------


@postgres
@pytest.mark.anyio
async def test_async_serialization_failure_is_retried_and_commits_once(
    async_engine: AsyncEngine, table: str, instant_retries: None
) -> None:
    """Two SERIALIZABLE tasks read then write one row: the loser runs again on asyncpg."""
    insert(table, shared=0)
    factory = async_sessionmaker(async_engine.execution_options(isolation_level="SERIALIZABLE"))
    barrier = TaskBarrier(2)
    recorder = Recorder()
    bodies: list[str] = []

    @transactional(factory, listeners=[recorder])
    async def add_ten(session: AsyncSession, who: str) -> None:
        first = who not in bodies
        bodies.append(who)
        query = text(f"SELECT balance FROM {table} WHERE name = 'shared'")  # noqa: S608
        balance = int((await session.execute(query)).scalar_one())
        if first:
            await barrier.wait()
        await session.execute(
            text(f"UPDATE {table} SET balance = :b WHERE name = 'shared'"),  # noqa: S608
            {"b": balance + 10},
        )

    await asyncio.wait_for(asyncio.gather(add_ten("a"), add_ten("b")), WAIT)
    assert rows(table) == {"shared": 20}
    assert len(bodies) == 3
    assert recorder.summary() == [("serialization_failure", 1, True, "40001")]
    [event] = recorder.events
    assert event.exception_type.startswith("sqlalchemy.exc.")
    assert event.database == "test"
    assert event.name.endswith("add_ten")


@postgres
@pytest.mark.anyio
async def test_async_deadlock_is_retried_and_commits_once(
    async_engine: AsyncEngine, table: str, instant_retries: None
) -> None:
    """Two tasks lock two rows in opposite orders: the victim runs again on asyncpg."""
    insert(table, a=0, b=0)
    barrier = TaskBarrier(2)
    recorder = Recorder()
    bodies: list[str] = []
    update = text(f"UPDATE {table} SET balance = balance + 1 WHERE name = :n")  # noqa: S608

    @transactional(async_sessionmaker(async_engine), listeners=[recorder])
    async def move(session: AsyncSession, first: str, second: str) -> None:
        again = first in bodies
        bodies.append(first)
        await session.execute(text("SET LOCAL deadlock_timeout = '50ms'"))
        await session.execute(update, {"n": first})
        if not again:
            await barrier.wait()
        await session.execute(update, {"n": second})

    await asyncio.wait_for(asyncio.gather(move("a", "b"), move("b", "a")), WAIT)
    assert rows(table) == {"a": 2, "b": 2}
    assert len(bodies) == 3
    assert recorder.summary() == [("deadlock", 1, True, "40P01")]


@postgres
@pytest.mark.anyio
async def test_async_lost_connection_is_retried_on_a_new_connection(
    async_engine: AsyncEngine, table: str, instant_retries: None
) -> None:
    """``pg_terminate_backend`` mid-transaction: asyncpg reconnects, commits once, leaks nothing."""
    recorder = Recorder()
    pids: list[int] = []

    @transactional(async_sessionmaker(async_engine), listeners=[recorder])
    async def write(session: AsyncSession) -> None:
        pids.append(int((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()))
        await session.execute(
            text(f"INSERT INTO {table} VALUES ('survivor', :n)"),  # noqa: S608
            {"n": len(pids)},
        )
        if len(pids) == 1:
            admin = await asyncpg.connect(f"postgresql://{URL}")
            try:
                await admin.execute("SELECT pg_terminate_backend($1)", pids[0])
                deadline = time.monotonic() + WAIT
                while await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pids[0]
                ):
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)  # polling for the process to exit
            finally:
                await admin.close()
            await session.execute(text("SELECT 1"))  # the session is gone

    await write()
    assert len(pids) == 2
    assert pids[0] != pids[1]
    assert rows(table) == {"survivor": 2}
    [(reason, attempt, will_retry, _)] = recorder.summary()
    assert (reason, attempt, will_retry) == ("network_error", 1, True)
    await async_engine.dispose()
    assert no_connections_left() == 0


@postgres
@pytest.mark.anyio
async def test_async_integrity_error_is_not_retried(
    async_engine: AsyncEngine, table: str, instant_retries: None
) -> None:
    """A duplicate key on asyncpg is raised at once; the attempt's writes are rolled back."""
    insert(table, taken=1)
    recorder = Recorder()
    bodies: list[int] = []

    async def write(session: AsyncSession) -> None:
        bodies.append(1)
        await session.execute(text(f"INSERT INTO {table} VALUES ('fresh', 1)"))  # noqa: S608
        await session.execute(text(f"INSERT INTO {table} VALUES ('taken', 2)"))  # noqa: S608

    with pytest.raises(sqlalchemy.exc.IntegrityError):
        await run_transaction(async_sessionmaker(async_engine), write, listeners=[recorder])
    assert bodies == [1]
    assert rows(table) == {"taken": 1}
    assert recorder.summary() == [("error", 1, False, "23505")]


@postgres
@pytest.mark.anyio
async def test_async_session_from_the_arguments_and_the_nesting_rule(
    async_engine: AsyncEngine, table: str, instant_retries: None
) -> None:
    """An AsyncSession given is retried in place; one already in a transaction is refused."""
    recorder = Recorder()
    seen: list[AsyncSession] = []

    @transactional(listeners=[recorder])
    async def write(session: AsyncSession, name: str) -> str:
        seen.append(session)
        await session.execute(
            text(f"INSERT INTO {table} VALUES (:n, :b)"),  # noqa: S608
            {"n": name, "b": len(seen)},
        )
        if len(seen) == 1:
            await araise_sqlstate(session, "40P01")
        return name

    async with AsyncSession(async_engine) as session:
        assert await write(session, "mine") == "mine"
        await session.execute(text("SELECT 1"))  # autobegin
        with pytest.raises(NestedTransactionError, match="already in a transaction"):
            await write(session, "again")
    assert len(seen) == 2
    assert rows(table) == {"mine": 2}
    assert recorder.summary() == [("deadlock", 1, True, "40P01")]


@postgres
@pytest.mark.anyio
async def test_async_cancellation_rolls_back_and_is_not_retried(
    async_engine: AsyncEngine, table: str
) -> None:
    """A cancelled attempt rolls back, is reported as an error, and is not run again."""
    recorder = Recorder()
    started = asyncio.Event()
    calls: list[int] = []

    @transactional(async_sessionmaker(async_engine), listeners=[recorder])
    async def write(session: AsyncSession) -> None:
        calls.append(1)
        await session.execute(text(f"INSERT INTO {table} VALUES ('cancelled', 1)"))  # noqa: S608
        started.set()
        await asyncio.Event().wait()  # until cancelled

    task = asyncio.ensure_future(write())
    await asyncio.wait_for(started.wait(), WAIT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == [1]
    assert rows(table) == {}
    assert recorder.summary() == [("error", 1, False, None)]


# -- decoration-time checks -----------------------------------------------------------------


def session_factory() -> sessionmaker[Session]:
    """A factory on an engine that never connects (no test here reaches the database)."""
    return sessionmaker(create_engine(f"postgresql+psycopg://{URL}"))


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"attempts": 0}, ValueError, "attempts"),
        ({"attempts": "3"}, TypeError, "attempts"),
        ({"deadline": -1.0}, ValueError, "deadline"),
        ({"backoff": stalwart.exponential}, TypeError, "backoff"),
        ({"backoff": 3}, TypeError, "backoff"),
        ({"listeners": Recorder()}, TypeError, "listeners"),
        ({"listeners": [object()]}, TypeError, "listeners"),
    ],
)
def test_bad_options_are_refused_at_decoration(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    """A bad option raises when the decorator is made, naming the option."""
    with pytest.raises(error, match=match):
        transactional(session_factory(), **options)
    with pytest.raises(error, match=match):
        transactional(**options)


def test_what_is_not_a_session_factory_is_refused_with_a_hint() -> None:
    """An engine, a Session class or a scoped_session is refused, saying what to pass."""
    made = create_engine(f"postgresql+psycopg://{URL}")
    with pytest.raises(TypeError, match=r"factory.*sessionmaker\(engine\)"):
        transactional(made)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="factory.*bound to an engine"):
        transactional(Session)
    with pytest.raises(TypeError, match="factory.*session_factory"):
        transactional(scoped_session(sessionmaker(made)))
    with pytest.raises(TypeError, match="factory"):
        run_transaction(None, lambda session: None)  # type: ignore[call-overload]


def test_the_function_colour_must_match_the_factory() -> None:
    """An async def needs an async_sessionmaker, a plain def a sessionmaker; no generators."""

    async def async_body(session: AsyncSession) -> None: ...

    def body(session: Session) -> None: ...

    def generator(session: Session) -> Iterator[int]:
        yield 1

    with pytest.raises(TypeError, match="async_sessionmaker"):
        transactional(session_factory())(async_body)  # type: ignore[arg-type]
    async_factory = async_sessionmaker(create_async_engine(f"postgresql+asyncpg://{URL}"))
    with pytest.raises(TypeError, match="async def"):
        transactional(async_factory)(body)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="generator"):
        transactional(session_factory())(generator)
    with pytest.raises(TypeError, match="decorates a function"):
        Transactional()(3)  # type: ignore[arg-type]


def test_a_session_of_the_right_kind_must_be_given() -> None:
    """Without a factory the call needs a Session (sync) or AsyncSession (async) argument."""

    @transactional
    def body(session: object) -> None: ...

    with pytest.raises(TypeError, match="takes a Session among its arguments; got none"):
        body(object())
    engine = create_async_engine(f"postgresql+asyncpg://{URL}")
    with pytest.raises(TypeError, match="got AsyncSession"):
        body(AsyncSession(engine))


def test_with_a_factory_the_signature_loses_the_session() -> None:
    """The decorated function shows (and takes) its parameters after the session."""

    @transactional(session_factory())
    def transfer(session: Session, source: int, target: int, amount: int = 1) -> None:
        """Move money."""

    assert list(inspect.signature(transfer).parameters) == ["source", "target", "amount"]
    assert transfer.__name__ == "transfer"
    assert transfer.__doc__ == "Move money."


def test_import_stalwart_loads_no_database_library() -> None:
    """`import stalwart` (and the shared transaction rules) load no SQLAlchemy or driver."""
    code = (
        "import sys, json, stalwart, stalwart.contrib._transaction;"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded = set(json.loads(out))
    assert loaded.isdisjoint({"sqlalchemy", "asyncpg", "psycopg", "psycopg2", "greenlet"})


# -- the rules, on SQLAlchemy's own exceptions ---------------------------------------------


def test_sqlalchemy_disconnections_are_network_errors() -> None:
    """An invalidated connection or a DisconnectionError is a network error; others not."""
    lost = sqlalchemy.exc.OperationalError(
        "SELECT 1", None, psycopg.OperationalError("closed"), connection_invalidated=True
    )
    open_ = sqlalchemy.exc.OperationalError("SELECT 1", None, psycopg.OperationalError("slow"))
    assert tx.rollback_reason(lost) == tx.NETWORK_ERROR
    assert tx.rollback_reason(sqlalchemy.exc.DisconnectionError("gone")) == tx.NETWORK_ERROR
    assert tx.rollback_reason(sqlalchemy.exc.InvalidatePoolError("all")) == tx.NETWORK_ERROR
    assert tx.rollback_reason(open_) == tx.ERROR
    assert tx.rollback_reason(sqlalchemy.exc.TimeoutError("pool")) == tx.ERROR
