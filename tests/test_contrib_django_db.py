"""`atomic_retry` on the real PostgreSQL, and the connections of sync timeouts' threads.

Most tests here are transactional (``django_db(transaction=True)``, Django's
`TransactionTestCase`): a plain `TestCase` wraps each test in a transaction, so
`atomic_retry` would run nested inside it, where a transaction cannot be retried,
and ``on_commit`` callbacks would never run since nothing commits. Concurrent
transactions need real commits too: each thread has its own connection, which sees
only what the others committed. Each thread closes its connections when it ends.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.db import IntegrityError, OperationalError, connection, connections, transaction
from django.db.models import F

import stalwart
from django_testapp.models import Account
from stalwart.contrib.django import db
from stalwart.contrib.django.db import NestedTransactionError, atomic_retry, transactional

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from stalwart.contrib.django.db import TransactionRollback

pytestmark = pytest.mark.postgres

WAIT = 30.0  # seconds a test waits for what should happen much sooner
ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"


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


def run_threads(*targets: Callable[[], object]) -> None:
    """Run each target in a thread of its own (own connection, closed at the end)."""
    errors: list[BaseException] = []

    def runner(target: Callable[[], object]) -> None:
        try:
            target()
        except BaseException as exc:  # handed to the test
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=runner, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert not any(thread.is_alive() for thread in threads)
    if errors:
        raise errors[0]


def alive(pids: list[int]) -> set[int]:
    """The server processes among `pids` that still exist."""
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)
        ).fetchall()
    return {row[0] for row in rows}


def wait_gone(pids: list[int]) -> set[int]:
    """Poll until none of `pids` exists (a closed connection's process exits soon after)."""
    deadline = time.monotonic() + WAIT
    while (left := alive(pids)) and time.monotonic() < deadline:
        threading.Event().wait(0.05)
    return left


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


def raise_sqlstate(condition: str) -> None:
    """Make PostgreSQL itself raise the error `condition` (a real error, with its SQLSTATE)."""
    with connection.cursor() as cursor:
        cursor.execute(f"DO $$ BEGIN RAISE EXCEPTION 'test' USING ERRCODE = '{condition}'; END $$")


# -- retried: real concurrent transactions -----------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_serialization_failure_is_retried_and_commits_once(instant_retries: None) -> None:
    """Two SERIALIZABLE updates of one row: the loser runs again; no update is lost."""
    Account.objects.create(name="shared", balance=0)
    barrier = threading.Barrier(2, timeout=WAIT)
    recorder = Recorder()
    bodies: list[str] = []
    committed: list[str] = []

    @atomic_retry(listeners=[recorder])
    def add_ten(who: str) -> None:
        first = who not in bodies
        bodies.append(who)
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        balance = Account.objects.get(name="shared").balance
        if first:
            barrier.wait()  # both have read the balance before either writes it
        Account.objects.filter(name="shared").update(balance=balance + 10)
        transaction.on_commit(lambda: committed.append(who))

    run_threads(lambda: add_ten("a"), lambda: add_ten("b"))
    assert Account.objects.get(name="shared").balance == 20
    assert sorted(committed) == ["a", "b"]  # once each, never for the failed attempt
    assert len(bodies) == 3
    assert recorder.summary() == [("serialization_failure", 1, True, "40001")]
    [event] = recorder.events
    assert event.database == "default"
    assert event.name.endswith("add_ten")
    assert event.exception_type == "django.db.utils.OperationalError"


@pytest.mark.django_db(transaction=True)
def test_deadlock_is_retried_and_commits_once(instant_retries: None) -> None:
    """Two transactions lock two rows in opposite orders: the victim runs again."""
    Account.objects.create(name="a", balance=0)
    Account.objects.create(name="b", balance=0)
    barrier = threading.Barrier(2, timeout=WAIT)
    recorder = Recorder()
    bodies: list[str] = []
    committed: list[str] = []

    @transactional(listeners=[recorder])
    def move(first: str, second: str) -> None:
        again = first in bodies
        bodies.append(first)
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL deadlock_timeout = '100ms'")
        Account.objects.filter(name=first).update(balance=F("balance") + 1)
        if not again:
            barrier.wait()  # each holds its first row before asking for the other's
        Account.objects.filter(name=second).update(balance=F("balance") + 1)
        transaction.on_commit(lambda: committed.append(first))

    run_threads(lambda: move("a", "b"), lambda: move("b", "a"))
    balances = dict(Account.objects.values_list("name", "balance"))
    assert balances == {"a": 2, "b": 2}
    assert sorted(committed) == ["a", "b"]
    assert len(bodies) == 3
    assert recorder.summary() == [("deadlock", 1, True, "40P01")]


@pytest.mark.django_db(transaction=True)
def test_lost_connection_is_retried_on_a_new_connection(instant_retries: None) -> None:
    """The server ends the session mid-transaction: the next attempt reconnects and commits."""
    recorder = Recorder()
    pids: list[int] = []
    committed: list[int] = []

    @atomic_retry(listeners=[recorder])
    def write() -> None:
        pids.append(backend_pid())
        Account.objects.create(name="survivor", balance=len(pids))
        if len(pids) == 1:
            with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pids[0],))
            assert wait_gone(pids[:1]) == set()
            Account.objects.count()  # the session is gone
        transaction.on_commit(lambda: committed.append(len(pids)))

    write()
    assert len(pids) == 2
    assert pids[0] != pids[1]
    assert list(Account.objects.values_list("name", "balance")) == [("survivor", 2)]
    assert committed == [2]
    [(reason, attempt, will_retry, _)] = recorder.summary()
    assert (reason, attempt, will_retry) == ("network_error", 1, True)
    assert backend_pid() == pids[1]  # the connection in use is the new one


# -- not retried ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_inside_an_enclosing_atomic_block_it_refuses_before_running() -> None:
    """Called inside transaction.atomic it raises NestedTransactionError; the body never runs."""
    ran: list[int] = []

    @atomic_retry
    def body() -> None:
        ran.append(1)

    with transaction.atomic(), pytest.raises(NestedTransactionError) as caught:
        body()
    assert ran == []
    message = str(caught.value)
    assert "body" in message
    assert "inside an atomic block on database 'default'" in message
    body()  # outside, it runs
    assert ran == [1]


@pytest.mark.django_db(transaction=True)
def test_integrity_error_is_raised_at_once() -> None:
    """A unique violation is rolled back and raised on the first attempt, unretried."""
    Account.objects.create(name="taken")
    recorder = Recorder()
    calls: list[int] = []
    committed: list[int] = []

    @atomic_retry(listeners=[recorder])
    def take() -> None:
        calls.append(1)
        transaction.on_commit(lambda: committed.append(1))
        Account.objects.create(name="taken")

    with pytest.raises(IntegrityError):
        take()
    assert calls == [1]
    assert committed == []
    assert recorder.summary() == [("error", 1, False, "23505")]


@pytest.mark.django_db(transaction=True)
def test_user_exception_is_raised_at_once_and_rolled_back() -> None:
    """The function's own exception rolls the transaction back and is not retried."""
    recorder = Recorder()
    calls: list[int] = []

    @atomic_retry(listeners=[recorder])
    def fail() -> None:
        calls.append(1)
        Account.objects.create(name="never")
        raise KeyError("mine")

    with pytest.raises(KeyError):
        fail()
    assert calls == [1]
    assert not Account.objects.exists()
    assert recorder.summary() == [("error", 1, False, None)]
    assert recorder.events[0].exception_type == "builtins.KeyError"


@pytest.mark.django_db(transaction=True)
def test_gives_up_after_the_attempts_with_the_last_error(instant_retries: None) -> None:
    """Serialization failures every time: every attempt rolled back, the last error raised."""
    recorder = Recorder()
    committed: list[int] = []
    calls: list[int] = []

    @atomic_retry(attempts=3, listeners=[recorder])
    def doomed() -> None:
        calls.append(1)
        Account.objects.create(name=f"try-{len(calls)}")
        transaction.on_commit(lambda: committed.append(1))
        raise_sqlstate("serialization_failure")

    with pytest.raises(OperationalError) as caught:
        doomed()
    assert isinstance(caught.value.__cause__, psycopg.errors.SerializationFailure)
    notes = getattr(caught.value, "__notes__", [])
    assert any("gave up" in note and "3 attempts" in note for note in notes)
    assert len(calls) == 3
    assert committed == []
    assert not Account.objects.exists()
    assert recorder.summary() == [
        ("serialization_failure", 1, True, "40001"),
        ("serialization_failure", 2, True, "40001"),
        ("serialization_failure", 3, False, "40001"),
    ]


@pytest.mark.django_db(transaction=True)
def test_a_failing_listener_never_breaks_the_transaction(instant_retries: None) -> None:
    """A listener that raises is ignored: the retry goes on and commits."""

    class Broken:
        def on_rollback(self, event: TransactionRollback) -> None:
            raise RuntimeError("listener broke")

    calls: list[int] = []

    @atomic_retry(listeners=[Broken()])
    def flaky() -> str:
        calls.append(1)
        Account.objects.create(name=f"row-{len(calls)}")
        if len(calls) == 1:
            raise_sqlstate("deadlock_detected")
        return "done"

    assert flaky() == "done"
    assert list(Account.objects.values_list("name", flat=True)) == ["row-2"]


@pytest.mark.django_db(transaction=True)
def test_rollbacks_are_logged_by_default(
    instant_retries: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Without listeners, a retried rollback is logged, as a retry (INFO), with its reason."""
    calls: list[int] = []

    @atomic_retry
    def flaky() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise_sqlstate("serialization_failure")

    with caplog.at_level("INFO", logger="stalwart.transaction"):
        flaky()
    [record] = caplog.records
    assert record.levelno == logging.INFO
    assert record.__dict__["reason"] == "serialization_failure"
    assert record.__dict__["will_retry"] is True


@pytest.mark.django_db
def test_inside_a_test_case_it_runs_once_in_a_savepoint() -> None:
    """In Django's TestCase transaction it runs once, unretried, like atomic(durable=True)."""
    recorder = Recorder()
    calls: list[int] = []

    @atomic_retry(listeners=[recorder])
    def once() -> None:
        calls.append(1)
        Account.objects.create(name="kept")

    @atomic_retry(listeners=[recorder])
    def failing() -> None:
        calls.append(2)
        Account.objects.create(name="rolled back")
        raise_sqlstate("serialization_failure")

    once()
    with pytest.raises(OperationalError):
        failing()
    assert calls == [1, 2]
    assert list(Account.objects.values_list("name", flat=True)) == ["kept"]
    assert recorder.summary() == [("serialization_failure", 1, False, "40001")]


# -- async ---------------------------------------------------------------------------------


def test_async_functions_are_refused_with_the_way_out() -> None:
    """Decorating an async def raises TypeError pointing at sync_to_async."""

    async def handler() -> None:
        return None

    with pytest.raises(TypeError, match="sync_to_async"):
        atomic_retry(handler)


@pytest.fixture
def anyio_backend() -> str:
    """asgiref's sync_to_async runs on asyncio."""
    return "asyncio"


@pytest.mark.anyio
@pytest.mark.django_db(transaction=True)
async def test_async_code_calls_it_through_sync_to_async(instant_retries: None) -> None:
    """``await sync_to_async(fn)()`` runs the whole transaction, retries included, in a thread."""
    calls: list[int] = []
    committed: list[int] = []

    @atomic_retry
    def flaky() -> int:
        calls.append(1)
        Account.objects.create(name=f"row-{len(calls)}")
        transaction.on_commit(lambda: committed.append(len(calls)))
        if len(calls) == 1:
            raise_sqlstate("serialization_failure")
        return len(calls)

    def names() -> list[str]:
        return list(Account.objects.values_list("name", flat=True))

    try:
        assert await sync_to_async(flaky)() == 2
        assert await sync_to_async(names)() == ["row-2"]
    finally:
        await sync_to_async(connections.close_all)()
    assert committed == [2]


# -- options --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"attempts": 0}, ValueError, "attempts must be an integer >= 1, got 0"),
        ({"attempts": 2.5}, TypeError, "attempts must be an integer"),
        ({"deadline": -1}, ValueError, "deadline"),
        ({"using": 5}, TypeError, "using must be a database alias.*5"),
        ({"using": ""}, ValueError, "using must be a database alias"),
        ({"listeners": [object()]}, TypeError, "listeners must hold objects"),
        ({"listeners": Recorder()}, TypeError, "listeners must be an iterable"),
        ({"backoff": stalwart.exponential}, TypeError, "backoff"),
    ],
)
def test_bad_options_are_refused_when_decorating(
    options: dict[str, Any], error: type[Exception], words: str
) -> None:
    """Invalid options raise at decoration time, naming the option and the value."""
    with pytest.raises(error, match=words):
        atomic_retry(**options)


def test_the_alias_by_position_is_refused() -> None:
    """``@atomic_retry("other")`` says to pass the alias by keyword."""
    with pytest.raises(TypeError, match=r"using='other'"):
        atomic_retry("other")  # type: ignore[call-overload]


def test_generator_functions_are_refused() -> None:
    """A generator's body would run after the transaction ended: refused."""

    def rows() -> Iterator[int]:
        yield 1

    with pytest.raises(TypeError, match="generator"):
        atomic_retry(rows)


def test_the_decorated_function_keeps_its_name_and_alias_works() -> None:
    """Decorating keeps the name and docstring; `transactional` is `atomic_retry`."""

    @atomic_retry(using="default", attempts=2)
    def transfer() -> None:
        """Move money."""

    assert transfer.__name__ == "transfer"
    assert transfer.__doc__ == "Move money."
    assert transactional is atomic_retry
    assert repr(atomic_retry(attempts=2)).startswith("atomic_retry(using='default', attempts=2")


# -- the connections of sync timeouts' worker threads ---------------------------------------


def _installed() -> bool:
    module: Any = sys.modules["stalwart.timeout"]
    return db._close_thread_connections in module._worker_cleanups


@pytest.fixture
def thread_cleanup() -> Iterator[None]:
    """The cleanup is installed during the test, and as it was afterwards."""
    was = _installed()
    remove = db.install_thread_cleanup()
    yield
    if not was:
        remove()


@pytest.fixture
def no_thread_cleanup() -> Iterator[None]:
    """The cleanup is not installed during the test, and as it was afterwards."""
    was = _installed()
    db.install_thread_cleanup()()
    yield
    if was:
        db.install_thread_cleanup()


def timed_queries(calls: int, keep: list[Any] | None = None) -> list[int]:
    """In a request thread, `calls` calls of a sync-timeout function that queries."""
    pids: list[int] = []

    @stalwart.timeout(WAIT)
    def query() -> None:
        pids.append(backend_pid())
        if keep is not None:
            keep.append(connection.connection)

    def request() -> None:
        for _ in range(calls):
            query()

    run_threads(request)
    return pids


@pytest.mark.django_db(transaction=True)
def test_without_the_cleanup_worker_threads_leave_connections_open(
    no_thread_cleanup: None,
) -> None:
    """What the cleanup fixes: each timed call off the main thread leaves a connection open."""
    raw: list[Any] = []  # the workers' connections, kept so that the test can close them
    try:
        pids = timed_queries(5, keep=raw)
        assert len(set(pids)) == 5  # one worker thread, so one connection, per call
        assert alive(pids) == set(pids)
    finally:
        for conn in raw:
            conn.close()


@pytest.mark.django_db(transaction=True)
def test_the_cleanup_closes_worker_thread_connections(thread_cleanup: None) -> None:
    """With the cleanup installed (as the app does), 5 timed calls leave no connection."""
    pids = timed_queries(5)
    assert len(set(pids)) == 5
    assert wait_gone(pids) == set()


@pytest.mark.django_db(transaction=True)
def test_the_cleanup_leaves_the_callers_connection_alone(thread_cleanup: None) -> None:
    """The request thread's own connection stays open and in use across timed calls."""
    seen: list[int] = []

    @stalwart.timeout(WAIT)
    def query() -> int:
        return backend_pid()

    def request() -> None:
        seen.append(backend_pid())
        seen.append(query())
        seen.append(backend_pid())

    def check() -> None:
        request()
        assert alive([seen[0]]) == {seen[0]}

    run_threads(check)
    own, worker, again = seen
    assert own == again
    assert worker != own
    assert wait_gone([own, worker]) == set()


@pytest.mark.django_db(transaction=True)
def test_main_thread_timeouts_keep_the_connection(thread_cleanup: None) -> None:
    """In the main thread (SIGALRM) the call uses, and keeps, the caller's connection."""
    assert threading.current_thread() is threading.main_thread()
    before = backend_pid()

    @stalwart.timeout(WAIT)
    def query() -> int:
        return backend_pid()

    assert query() == before
    assert connection.connection is not None
    assert backend_pid() == before


@pytest.mark.django_db(transaction=True)
def test_an_abandoned_call_closes_its_connection_when_it_ends(thread_cleanup: None) -> None:
    """A call the caller stopped waiting for closes its connection once it finishes."""
    release, opened = threading.Event(), threading.Event()
    pids: list[int] = []

    @stalwart.timeout(0.5)
    def slow() -> None:
        pids.append(backend_pid())
        opened.set()
        release.wait(WAIT)

    def request() -> None:
        with pytest.raises(stalwart.TimeoutExceeded):
            slow()

    try:
        run_threads(request)
        assert opened.is_set()
        assert alive(pids) == set(pids)  # still running, still connected
    finally:
        release.set()
    assert wait_gone(pids) == set()


def test_installing_twice_installs_once() -> None:
    """`install_thread_cleanup` is idempotent, and its result uninstalls."""
    was = _installed()
    try:
        remove = db.install_thread_cleanup()
        db.install_thread_cleanup()
        module: Any = sys.modules["stalwart.timeout"]
        assert module._worker_cleanups.count(db._close_thread_connections) == 1
        remove()
        assert not _installed()
    finally:
        if was:
            db.install_thread_cleanup()
