"""Bulkheads: limits, the bounded FIFO queue, rejections, deadlines, stats, sharing by name."""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import threading
import time
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import pytest

import stalwart
from stalwart.bulkhead import (
    QUEUE_FULL,
    SATURATED_FOR,
    TIMED_OUT,
    Bulkhead,
    _ThreadWaiter,
    bulkhead,
    bulkheads,
)
from stalwart.testing import ManualClock

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


@pytest.fixture(autouse=True)
def _no_named_bulkheads() -> Iterator[None]:
    """Every test starts and ends without bulkheads shared by name."""
    bulkheads.clear()
    yield
    bulkheads.clear()


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    """Poll `predicate` until it holds (the outcome never depends on the timing)."""
    give_up = time.monotonic() + 10
    while not predicate():
        if time.monotonic() > give_up:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.001)


async def wait_until_async(predicate: Callable[[], bool]) -> None:
    """Yield to the other tasks until `predicate` holds."""
    for _ in range(10_000):
        if predicate():
            return
        await anyio.lowlevel.checkpoint()
    raise AssertionError("never happened")


def queued_is(limit: Bulkhead, count: int) -> bool:
    """Whether `count` callers wait in `limit`'s queue."""
    return limit.queued == count


def reason(exc: BaseException) -> tuple[object, ...]:
    """The (name, reason) a BulkheadFull carries."""
    assert isinstance(exc, stalwart.BulkheadFull)
    return exc.args


# -- options ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"max_concurrent": 0}, ValueError, "max_concurrent must be an integer >= 1, got 0"),
        ({"max_concurrent": -3}, ValueError, "max_concurrent must be an integer >= 1, got -3"),
        ({"max_concurrent": 2.5}, TypeError, "max_concurrent must be an integer >= 1, got 2.5"),
        ({"max_concurrent": True}, TypeError, "max_concurrent .* got True"),
        ({"max_queued": -1}, ValueError, "max_queued must be an integer >= 0, got -1"),
        ({"max_queued": "5"}, TypeError, "max_queued must be an integer >= 0, got '5'"),
        ({"queue_timeout": 0}, ValueError, "queue_timeout must be .* > 0 .*got 0"),
        ({"queue_timeout": -1.0}, ValueError, "queue_timeout must be .*got -1.0"),
        ({"queue_timeout": float("nan")}, ValueError, "queue_timeout must be .*got nan"),
        ({"queue_timeout": float("inf")}, ValueError, "queue_timeout must be .*got inf"),
        ({"queue_timeout": "1"}, TypeError, "queue_timeout must be .*got '1'"),
        ({"clock": 3}, TypeError, "clock must be a callable returning seconds, got 3"),
    ],
)
def test_bad_options_are_refused_naming_them(
    options: dict[str, object], error: type[Exception], match: str
) -> None:
    """A bad option raises at construction, naming the parameter and the value."""
    with pytest.raises(error, match=match):
        Bulkhead("db", **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "error", "match"),
    [("", ValueError, "non-empty"), (3, TypeError, "got 3"), (len, TypeError, "name first")],
)
def test_bad_names_are_refused(name: object, error: type[Exception], match: str) -> None:
    """A name must be a non-empty string; a function given instead says how to write it."""
    with pytest.raises(error, match=match):
        Bulkhead(name)  # type: ignore[arg-type]
    with pytest.raises(error, match=match):
        bulkhead(name)  # type: ignore[arg-type]


def test_queue_timeout_takes_a_timedelta() -> None:
    """A timedelta is read as seconds."""
    assert Bulkhead("db", queue_timeout=dt.timedelta(milliseconds=250)).queue_timeout == 0.25


def test_defaults() -> None:
    """Ten concurrent calls, no queue, no wait limit by default."""
    made = Bulkhead("db")
    assert (made.max_concurrent, made.max_queued, made.queue_timeout) == (10, 0, None)
    assert repr(made) == "<Bulkhead 'db' 0/10 in use, 0/0 queued>"


# -- sync admission --------------------------------------------------------------------


def test_admits_up_to_the_limit_then_refuses_with_queue_full() -> None:
    """Without a queue, the call past the limit is refused at once, naming why."""
    limit = Bulkhead("db", max_concurrent=2)
    limit.acquire()
    limit.acquire()
    with pytest.raises(stalwart.BulkheadFull) as caught:
        limit.acquire()
    assert reason(caught.value) == ("db", QUEUE_FULL)
    stats = limit.stats()
    assert (stats.in_use, stats.queued, stats.admitted, stats.rejected) == (2, 0, 2, 1)
    assert (stats.rejected_queue_full, stats.rejected_timed_out) == (1, 0)
    assert stats.full
    limit.release()
    limit.acquire()  # the freed slot is taken again
    assert limit.in_use == 2


def test_release_without_acquire_raises() -> None:
    """Releasing a slot nobody holds is a bug in the caller, said at once."""
    limit = Bulkhead("db")
    with pytest.raises(RuntimeError, match="release"):
        limit.release()
    assert limit.in_use == 0


def test_threads_wait_in_fifo_order() -> None:
    """Queued threads get slots in the order they arrived."""
    limit = Bulkhead("db", max_concurrent=1, max_queued=5)
    limit.acquire()
    order: list[int] = []

    def work(i: int) -> None:
        with limit:
            order.append(i)

    threads = []
    for i in range(5):
        thread = threading.Thread(target=work, args=(i,))
        thread.start()
        threads.append(thread)
        wait_until(functools.partial(queued_is, limit, i + 1), f"thread {i} queued")
    with pytest.raises(stalwart.BulkheadFull) as caught:
        limit.acquire()  # the queue is full
    assert reason(caught.value) == ("db", QUEUE_FULL)
    limit.release()
    for thread in threads:
        thread.join()
    assert order == [0, 1, 2, 3, 4]
    stats = limit.stats()
    assert (stats.in_use, stats.queued, stats.peak_queued, stats.waited) == (0, 0, 5, 5)
    assert (stats.admitted, stats.rejected) == (6, 1)


def test_a_newcomer_never_overtakes_the_queue() -> None:
    """A slot freed while a thread waits goes to that thread, not to the next caller."""
    limit = Bulkhead("db", max_concurrent=1, max_queued=1)
    limit.acquire()
    got = threading.Event()
    release = threading.Event()

    def waiter() -> None:
        with limit:
            got.set()
            release.wait()

    thread = threading.Thread(target=waiter)
    thread.start()
    wait_until(lambda: limit.queued == 1, "queued")
    limit.release()
    # The slot went to the waiter: a new caller finds none free, and waits in vain.
    with stalwart.deadline(0.01), pytest.raises(stalwart.BulkheadFull):
        limit.acquire()
    assert got.wait(10)
    release.set()
    thread.join()
    assert limit.in_use == 0


def test_queue_timeout_ends_the_wait() -> None:
    """A thread that waits `queue_timeout` without a slot is refused; its place is freed."""
    limit = Bulkhead("db", max_concurrent=1, max_queued=1, queue_timeout=0.01)
    limit.acquire()
    with pytest.raises(stalwart.BulkheadFull) as caught:
        limit.acquire()
    assert reason(caught.value) == ("db", TIMED_OUT)
    stats = limit.stats()
    assert (stats.queued, stats.rejected_timed_out, stats.rejected) == (0, 1, 1)
    limit.release()
    assert limit.in_use == 0


def test_the_deadline_in_force_ends_the_wait() -> None:
    """A thread never waits past the deadline, however long `queue_timeout` is."""
    limit = Bulkhead("db", max_concurrent=1, max_queued=1, queue_timeout=60)
    limit.acquire()
    started = time.monotonic()
    with stalwart.deadline(0.02), pytest.raises(stalwart.BulkheadFull) as caught:
        limit.acquire()
    assert time.monotonic() - started < 30
    assert reason(caught.value) == ("db", TIMED_OUT)
    assert limit.queued == 0


def test_a_passed_deadline_refuses_without_queueing(fake_time: ManualClock) -> None:
    """With the deadline gone, a call that would wait is refused at once."""
    limit = Bulkhead("db", max_concurrent=1, max_queued=1)
    limit.acquire()
    with stalwart.deadline(1):
        fake_time.advance(2)
        with pytest.raises(stalwart.BulkheadFull) as caught:
            limit.acquire()
        assert reason(caught.value) == ("db", TIMED_OUT)
    assert limit.stats().peak_queued == 0
    limit.release()
    with stalwart.deadline(1):
        fake_time.advance(2)
        limit.acquire()  # a free slot is taken whatever the deadline
    assert limit.in_use == 1


# -- decorator, call, context managers ---------------------------------------------------


def test_decorator_keeps_the_signature_and_releases_on_errors() -> None:
    """A decorated function runs in a slot, which is given back when it raises."""
    limit = Bulkhead("db", max_concurrent=1)

    @limit
    def double(x: int) -> int:
        """Double it."""
        assert limit.in_use == 1
        if x < 0:
            raise ValueError(x)
        return x * 2

    assert double(4) == 8
    with pytest.raises(ValueError, match="-1"):
        double(-1)
    assert limit.in_use == 0
    assert double.__doc__ == "Double it."
    assert str(inspect.signature(double)) == "(x: 'int') -> 'int'"
    assert limit.call(lambda x: limit.in_use * x, 5) == 5
    assert limit.stats().admitted == 3


def test_decorated_calls_past_the_limit_do_not_run() -> None:
    """A refused call never runs the function."""
    limit = Bulkhead("db", max_concurrent=1)
    calls: list[int] = []
    limit.acquire()
    with pytest.raises(stalwart.BulkheadFull):
        limit(calls.append)(1)
    assert calls == []


def test_generator_functions_are_refused() -> None:
    """A generator's body runs after the wrapper returns: refused."""

    def numbers() -> Iterator[int]:
        yield 1

    with pytest.raises(TypeError, match="generator"):
        Bulkhead("db")(numbers)


@pytest.mark.anyio
async def test_async_decorator_and_context_manager() -> None:
    """Async functions and blocks hold a slot while they run, and give it back."""
    limit = Bulkhead("db", max_concurrent=1)

    @limit
    async def triple(x: int) -> int:
        await anyio.lowlevel.checkpoint()
        assert limit.in_use == 1
        if x < 0:
            raise ValueError(x)
        return x * 3

    assert await triple(2) == 6
    with pytest.raises(ValueError, match="-2"):
        await triple(-2)
    assert await limit.call_async(triple.__wrapped__, 1) == 3  # type: ignore[attr-defined]
    async with limit:
        assert limit.in_use == 1
        with pytest.raises(stalwart.BulkheadFull):
            await triple(1)
    assert limit.in_use == 0
    assert inspect.iscoroutinefunction(triple)


# -- async admission -------------------------------------------------------------------


@pytest.mark.anyio
async def test_tasks_wait_in_fifo_order() -> None:
    """Queued tasks get slots in the order they arrived; the queue is bounded."""
    limit = Bulkhead("db", max_concurrent=1, max_queued=3)
    order: list[int] = []

    async def work(i: int) -> None:
        async with limit:
            order.append(i)
            await anyio.lowlevel.checkpoint()

    await limit.acquire_async()
    async with anyio.create_task_group() as tasks:
        for i in range(3):
            tasks.start_soon(work, i)
            await wait_until_async(functools.partial(queued_is, limit, i + 1))
        with pytest.raises(stalwart.BulkheadFull) as caught:
            await limit.acquire_async()
        assert reason(caught.value) == ("db", QUEUE_FULL)
        limit.release()
    assert order == [0, 1, 2]
    assert (limit.in_use, limit.queued) == (0, 0)


@pytest.mark.anyio
async def test_cancelled_while_queued_frees_the_place() -> None:
    """A task cancelled in the queue leaves it; the next release goes to the next one."""
    limit = Bulkhead("db", max_concurrent=1, max_queued=2)
    await limit.acquire_async()
    got: list[str] = []

    async def work(name: str, scope_box: list[anyio.CancelScope]) -> None:
        with anyio.CancelScope() as scope:
            scope_box.append(scope)
            async with limit:
                got.append(name)

    first: list[anyio.CancelScope] = []
    second: list[anyio.CancelScope] = []
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(work, "first", first)
        await wait_until_async(lambda: limit.queued == 1)
        tasks.start_soon(work, "second", second)
        await wait_until_async(lambda: limit.queued == 2)
        first[0].cancel()
        await wait_until_async(lambda: limit.queued == 1)
        limit.release()
    assert got == ["second"]
    stats = limit.stats()
    assert (stats.in_use, stats.queued, stats.cancelled, stats.rejected) == (0, 0, 1, 0)


@pytest.mark.anyio
async def test_cancelled_as_the_slot_arrives_passes_it_on() -> None:
    """A slot handed to a task cancelled before it resumes goes to the next waiter."""
    limit = Bulkhead("db", max_concurrent=1, max_queued=2)
    await limit.acquire_async()
    got: list[str] = []
    scopes: list[anyio.CancelScope] = []

    async def work(name: str) -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            async with limit:
                got.append(name)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(work, "first")
        await wait_until_async(lambda: limit.queued == 1)
        tasks.start_soon(work, "second")
        await wait_until_async(lambda: limit.queued == 2)
        limit.release()  # hands the slot to "first", which has not resumed yet...
        scopes[0].cancel()  # ...and is cancelled before it does
    # Both backends let "first" resume with its slot (its block has no checkpoint);
    # either way no slot is lost.
    assert got[-1] == "second"
    assert (limit.in_use, limit.queued) == (0, 0)


def test_a_waiter_leaving_with_a_slot_hands_it_on() -> None:
    """The core: a waiter that stops waiting after it was handed a slot passes it on."""
    limit = Bulkhead("db", max_concurrent=1, max_queued=2)
    limit.acquire()
    first, second = _ThreadWaiter(), _ThreadWaiter()
    with limit._lock:
        limit._enqueue(first, None)
        limit._enqueue(second, None)
    limit.release()  # the slot goes to `first`...
    assert first.granted
    with limit._lock:
        handed = limit._leave(first)  # ...which gives up (cancelled, interrupted)
    assert handed is second
    assert second.granted
    assert (limit.in_use, limit.queued) == (1, 0)
    with limit._lock:
        assert limit._leave(second) is None  # nobody waits: the slot is freed
    assert limit.in_use == 0
    assert limit.stats().admitted == 1


@pytest.mark.anyio
async def test_async_queue_timeout() -> None:
    """A task waits at most `queue_timeout`, then is refused and leaves the queue."""
    limit = Bulkhead("db", max_concurrent=1, max_queued=1, queue_timeout=0.01)
    await limit.acquire_async()
    with pytest.raises(stalwart.BulkheadFull) as caught:
        await limit.acquire_async()
    assert reason(caught.value) == ("db", TIMED_OUT)
    assert (limit.queued, limit.stats().rejected_timed_out) == (0, 1)
    limit.release()


@pytest.mark.anyio
async def test_async_wait_ends_at_the_deadline() -> None:
    """A task never waits past the deadline in force."""
    limit = Bulkhead("db", max_concurrent=1, max_queued=1)
    await limit.acquire_async()
    with stalwart.deadline(0.01), pytest.raises(stalwart.BulkheadFull) as caught:
        await limit.acquire_async()
    assert reason(caught.value) == ("db", TIMED_OUT)
    assert limit.queued == 0
    limit.release()


# -- threads and tasks on one bulkhead ---------------------------------------------------


@pytest.mark.anyio
async def test_a_thread_release_wakes_a_waiting_task() -> None:
    """A slot freed in another thread reaches a task waiting on the event loop."""
    limit = Bulkhead("db", max_concurrent=1, max_queued=1)
    holding = threading.Event()
    let_go = threading.Event()

    def hold() -> None:
        with limit:
            holding.set()
            let_go.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    holding.wait(10)
    async with anyio.create_task_group() as tasks:

        async def wait_for_slot() -> None:
            async with limit:
                assert limit.in_use == 1

        tasks.start_soon(wait_for_slot)
        await wait_until_async(lambda: limit.queued == 1)
        let_go.set()  # the thread releases: the task is woken thread-safely
    thread.join()
    assert (limit.in_use, limit.queued, limit.stats().waited) == (0, 0, 1)


@pytest.mark.anyio
async def test_a_task_release_wakes_a_waiting_thread() -> None:
    """A slot freed by a task reaches a thread queued behind it, in FIFO order."""
    limit = Bulkhead("db", max_concurrent=1, max_queued=1)
    await limit.acquire_async()
    done = threading.Event()

    def wait_in_thread() -> None:
        with limit:
            done.set()

    thread = threading.Thread(target=wait_in_thread)
    thread.start()
    await wait_until_async(lambda: limit.queued == 1)
    with pytest.raises(stalwart.BulkheadFull):
        await limit.acquire_async()  # the queue holds the thread
    limit.release()
    await anyio.to_thread.run_sync(done.wait, 10)
    await anyio.to_thread.run_sync(thread.join)
    assert limit.in_use == 0


# -- stats -------------------------------------------------------------------------------


def test_stats_say_when_a_bulkhead_is_full_and_saturated() -> None:
    """`full` is about now; `saturated` lasts SATURATED_FOR seconds after a rejection."""
    clock = ManualClock(100.0)
    limit = Bulkhead("db", max_concurrent=1, clock=clock)
    assert not limit.stats().full
    limit.acquire()
    stats = limit.stats()
    assert stats.full
    assert not stats.saturated
    assert stats.last_rejected_at is None
    with pytest.raises(stalwart.BulkheadFull):
        limit.acquire()
    stats = limit.stats()
    assert stats.saturated
    assert stats.last_rejected_at is not None
    assert abs(stats.last_rejected_at - time.time()) < 60
    clock.advance(SATURATED_FOR - 1)
    assert limit.stats().saturated
    clock.advance(1)
    assert not limit.stats().saturated
    limit.release()
    as_dict = limit.stats_dict()
    assert as_dict.pop("last_rejected_at") == pytest.approx(time.time(), abs=30)
    assert as_dict == {
        "name": "db",
        "max_concurrent": 1,
        "max_queued": 0,
        "queue_timeout": None,
        "in_use": 0,
        "queued": 0,
        "peak_in_use": 1,
        "peak_queued": 0,
        "admitted": 1,
        "waited": 0,
        "rejected": 1,
        "rejected_queue_full": 1,
        "rejected_timed_out": 0,
        "cancelled": 0,
        "full": False,
        "saturated": False,
    }


# -- shared by name ----------------------------------------------------------------------


def test_bulkhead_shares_one_instance_by_name() -> None:
    """Same options (or none) give the same bulkhead; other options raise naming them."""
    made = bulkhead("db", max_concurrent=3, queue_timeout=dt.timedelta(seconds=1))
    assert bulkhead("db") is made
    assert bulkhead("db", max_concurrent=3, queue_timeout=1.0) is made
    with pytest.raises(ValueError, match=r"max_queued=0 \(asked 4\)"):
        bulkhead("db", max_concurrent=3, max_queued=4, queue_timeout=1.0)
    with pytest.raises(ValueError, match=r"max_concurrent=3 \(asked 10\)"):
        bulkhead("db", queue_timeout=1.0)  # options not given take their defaults
    assert bulkheads.find("db") is made
    assert bulkheads.stats() == {"db": made.stats_dict()}


def test_bulkhead_made_without_options_takes_the_defaults() -> None:
    """A first call without options makes a default bulkhead, which later calls match."""
    made = bulkhead("db")
    assert made.max_concurrent == 10
    assert bulkhead("db", max_concurrent=10) is made


def test_bulkhead_refuses_unknown_options_and_bad_values() -> None:
    """An unknown option is a TypeError; a bad value a ValueError; nothing is kept."""
    with pytest.raises(TypeError, match="got unknown options: max_calls; the options are"):
        bulkhead("db", max_calls=3)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="max_concurrent"):
        bulkhead("db", max_concurrent=0)
    assert "db" not in bulkheads


def test_bulkheads_built_directly_are_not_shared() -> None:
    """A Bulkhead built with its class is private to its holder."""
    Bulkhead("db")
    assert "db" not in bulkheads


def test_bulkhead_decorates_as_shared() -> None:
    """`@stalwart.bulkhead(name)` limits every function decorated with that name together."""

    @bulkhead("db", max_concurrent=1)
    def one() -> int:
        with pytest.raises(stalwart.BulkheadFull):
            two()
        return 1

    @bulkhead("db")
    def two() -> int:
        return 2

    assert (one(), two()) == (1, 2)
    assert bulkheads.stats()["db"]["rejected"] == 1
