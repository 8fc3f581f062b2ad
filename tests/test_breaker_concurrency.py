"""The breaker under contention: threads and 10,000 async tasks lose no counts, admit no
more half-open probes than allowed, and never hold the lock while the protected call runs.

No test waits on time: threads meet at barriers and wait on events, time is a
`ManualClock`, and the only ``time.sleep(0)`` hands the GIL to another thread.
"""

from __future__ import annotations

import contextlib
import dis
import functools
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import stalwart
from stalwart.breaker import State, machine, storage, window
from stalwart.testing import ManualClock

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import CodeType, FrameType

THREADS = 8
CALLS = 20
"""Calls per thread: enough for an unlocked state to lose dozens of the 160 counts (over
40%, in trials with the lock removed) when `preempted`, whose yields make each call cost
about half a millisecond."""
TASKS = 10_000
WAIT = 10.0
"""Seconds any barrier or event may take before the test fails instead of hanging."""

HUGE = 10**9
VIAS = ["decorator", "decorator-listened", "call", "context"]


def state_of(breaker: stalwart.CircuitBreaker) -> State:
    """The breaker's state now (a call, so type checkers do not carry narrowing over)."""
    return breaker.state


class NoopSuccessListener:
    """Listens for successes, which sends the decorator down its full (timed) path."""

    def on_success(self, event: object) -> None:
        """Ignore the event."""


def through(
    breaker: stalwart.CircuitBreaker, via: str, fn: Callable[[], Any]
) -> Callable[[], Any]:
    """A no-argument callable that runs `fn` through `breaker` the `via` way (sync)."""
    if via.startswith("decorator"):
        return breaker(fn)
    if via == "call":
        return lambda: breaker.call(fn)

    def in_context() -> Any:
        with breaker:
            return fn()

    return in_context


def make_breaker(via: str, **options: Any) -> stalwart.CircuitBreaker:
    """A quiet breaker, listened to when `via` asks for the decorator's full path."""
    listeners = [NoopSuccessListener()] if via == "decorator-listened" else []
    return stalwart.CircuitBreaker("conc", log=False, listeners=listeners, **options)


def run_threads(count: int, target: Callable[[], None]) -> list[BaseException]:
    """Run `target` in `count` threads, join them all, and return what they raised."""
    errors: list[BaseException] = []
    lock = threading.Lock()

    def guarded() -> None:
        try:
            target()
        except BaseException as exc:  # handed to the test thread
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=guarded) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 3)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    return errors


@pytest.fixture
def no_leaked_threads() -> Iterator[None]:
    """The test leaves as many threads running as it found."""
    before = threading.active_count()
    yield
    assert threading.active_count() == before


_BREAKER_FILES = frozenset({machine.__file__, storage.__file__, window.__file__})
_STORE_ATTR = dis.opmap["STORE_ATTR"]


@functools.cache
def _stores(code: CodeType) -> frozenset[int]:
    """The offsets of `code`'s attribute stores."""
    return frozenset(i.offset for i in dis.get_instructions(code) if i.opcode == _STORE_ATTR)


def _yield_before_stores(frame: FrameType, event: str, arg: object) -> Any:
    """Before each attribute store, hand the GIL to another thread (a yield, not a wait)."""
    if event == "opcode" and frame.f_lasti in _stores(frame.f_code):
        time.sleep(0)
    return _yield_before_stores


def _trace_breaker_state(frame: FrameType, event: str, arg: object) -> Any:
    """Trace, opcode by opcode, the code that keeps breaker state: storage, machine, windows."""
    if frame.f_code.co_filename not in _BREAKER_FILES:
        return None
    frame.f_trace_lines = False
    frame.f_trace_opcodes = True
    return _yield_before_stores


@pytest.fixture
def preempted() -> Iterator[None]:
    """Make threads switch between reading breaker state and writing it back.

    Under the GIL, ``self.failures += 1`` runs whole between two switch points, and a
    half-open admission nearly so: an unlocked `MemoryState` would pass these tests.
    Here threads started by the test yield the GIL before every attribute store in the
    breaker's state code, and switch every microsecond: without the lock, counts are
    lost and extra probes admitted, as they would be with free threading.
    """
    saved_interval, saved_trace = sys.getswitchinterval(), threading.gettrace()
    sys.setswitchinterval(1e-6)
    threading.settrace(_trace_breaker_state)
    yield
    threading.settrace(saved_trace)  # type: ignore[arg-type]  # None: no trace, as before
    sys.setswitchinterval(saved_interval)


# --- threads: no lost counts ------------------------------------------------------------


@pytest.mark.usefixtures("no_leaked_threads", "preempted")
@pytest.mark.parametrize("window", [None, 60.0], ids=["consecutive", "time-window"])
@pytest.mark.parametrize("via", VIAS)
def test_threads_lose_no_failures(via: str, window: float | None) -> None:
    """N threads x M failing calls through one breaker leave exactly N*M failures."""
    breaker = make_breaker(via, failure_threshold=HUGE, window=window)
    barrier = threading.Barrier(THREADS, timeout=WAIT)

    def fail() -> None:
        raise ConnectionError

    call = through(breaker, via, fail)

    def worker() -> None:
        barrier.wait()
        for _ in range(CALLS):
            with contextlib.suppress(ConnectionError):
                call()

    assert run_threads(THREADS, worker) == []
    stats = breaker.stats()
    assert (stats.failures, stats.successes, stats.state) == (THREADS * CALLS, 0, "closed")
    if window is not None:
        assert stats.window_failures == THREADS * CALLS


@pytest.mark.usefixtures("no_leaked_threads", "preempted")
@pytest.mark.parametrize("rated", [False, True], ids=["plain", "failure-rate"])
@pytest.mark.parametrize("via", VIAS)
def test_threads_lose_no_successes(via: str, rated: bool) -> None:
    """N threads x M successful calls leave exactly N*M successes (and window calls)."""
    options: dict[str, Any] = {"failure_threshold": HUGE}
    if rated:
        options.update(failure_rate=1.0, window_calls=HUGE // 1000)  # never full, never trips
    breaker = make_breaker(via, **options)
    barrier = threading.Barrier(THREADS, timeout=WAIT)
    call = through(breaker, via, lambda: None)

    def worker() -> None:
        barrier.wait()
        for _ in range(CALLS):
            call()

    assert run_threads(THREADS, worker) == []
    stats = breaker.stats()
    assert (stats.successes, stats.failures) == (THREADS * CALLS, 0)
    assert stats.window_calls == (THREADS * CALLS if rated else None)


# --- threads: half-open admission -------------------------------------------------------


def half_open_breaker(via: str, max_calls: int, clock: ManualClock) -> stalwart.CircuitBreaker:
    """A breaker opened by one failure whose recovery timeout has just elapsed."""
    breaker = make_breaker(
        via,
        failure_threshold=1,
        window=None,
        recovery_timeout=30,
        half_open_max_calls=max_calls,
        success_threshold=HUGE,
        clock=clock,
    )
    with pytest.raises(ConnectionError):
        breaker.call(_raise_connection_error)
    clock.advance(30)
    return breaker


def _raise_connection_error() -> None:
    raise ConnectionError


@pytest.mark.usefixtures("no_leaked_threads", "preempted")
@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("max_calls", [1, 3])
def test_threads_racing_into_half_open_admit_exactly_the_allowed_probes(
    max_calls: int, via: str
) -> None:
    """32 threads entering a half-open breaker at once: exactly `half_open_max_calls` get in."""
    racers = 32
    clock = ManualClock()
    breaker = half_open_breaker(via, max_calls, clock)
    barrier = threading.Barrier(racers, timeout=WAIT)
    release = threading.Event()
    decided = threading.Semaphore(0)
    lock = threading.Lock()
    admitted = rejected = 0

    def probe() -> None:
        nonlocal admitted
        with lock:
            admitted += 1
        decided.release()
        assert release.wait(WAIT)

    call = through(breaker, via, probe)

    def racer() -> None:
        nonlocal rejected
        barrier.wait()
        try:
            call()
        except stalwart.CircuitOpenError:
            with lock:
                rejected += 1
            decided.release()

    def start() -> list[BaseException]:
        return run_threads(racers, racer)

    outcome: list[list[BaseException]] = []
    runner = threading.Thread(target=lambda: outcome.append(start()))
    runner.start()
    try:
        for _ in range(racers):  # every racer has been admitted or rejected
            assert decided.acquire(timeout=WAIT)
        assert state_of(breaker) is State.HALF_OPEN
        with lock:
            assert (admitted, rejected) == (max_calls, racers - max_calls)
    finally:
        release.set()
        runner.join(WAIT * 4)
    assert outcome == [[]]
    stats = breaker.stats()
    assert (stats.rejected, stats.successes) == (racers - max_calls, max_calls)


# --- threads: the lock is not held during the call --------------------------------------


@pytest.mark.usefixtures("no_leaked_threads")
@pytest.mark.parametrize("state", ["closed", "half_open"])
@pytest.mark.parametrize("via", VIAS)
def test_calls_run_concurrently_not_under_the_lock(via: str, state: str) -> None:
    """8 calls that meet at a barrier inside the protected function all get in at once."""
    clock = ManualClock()
    if state == "closed":
        breaker = make_breaker(via, clock=clock)
    else:
        breaker = half_open_breaker(via, THREADS, clock)
    inside = threading.Barrier(THREADS, timeout=WAIT)
    call = through(breaker, via, inside.wait)
    assert run_threads(THREADS, call) == []  # a BrokenBarrierError would be listed here
    assert breaker.stats().successes == THREADS


# --- async: 10,000 tasks ----------------------------------------------------------------


async def _checkpoint_then_fail() -> None:
    await anyio.lowlevel.checkpoint()
    raise ConnectionError


async def _checkpoint() -> None:
    await anyio.lowlevel.checkpoint()


def async_through(
    breaker: stalwart.CircuitBreaker, via: str, fn: Callable[[], Any]
) -> Callable[[], Any]:
    """A no-argument coroutine function running `fn` through `breaker` the `via` way."""
    if via.startswith("decorator"):
        return breaker(fn)
    if via == "call":

        async def called() -> Any:
            return await breaker.call_async(fn)

        return called

    async def in_context() -> Any:
        async with breaker:
            return await fn()

    return in_context


def every_way(breaker: stalwart.CircuitBreaker, fn: Callable[[], Any]) -> list[Callable[[], Any]]:
    """`fn` through `breaker` by each way in: task ``i`` uses ``ways[i % len(ways)]``.

    The decorator's fast and full paths need breakers of their own kinds, so the
    decorator appears here in whichever path `breaker`'s listeners select.
    """
    return [async_through(breaker, via, fn) for via in ("decorator", "call", "context")]


@pytest.mark.anyio
@pytest.mark.parametrize("listened", [False, True], ids=["fast", "full"])
async def test_ten_thousand_tasks_lose_no_counts(listened: bool) -> None:
    """10,000 concurrent failing and 10,000 succeeding tasks leave exact counts.

    `record=` names the failure type, so the run measures the breaker rather than the
    default classifier (which costs tens of microseconds per exception).
    """
    breaker = make_breaker(
        "decorator-listened" if listened else "decorator",
        failure_threshold=HUGE,
        window=60.0,
        record=ConnectionError,
    )
    fails = every_way(breaker, _checkpoint_then_fail)
    succeeds = every_way(breaker, _checkpoint)
    raised = 0

    async def failing(fail: Callable[[], Any]) -> None:
        nonlocal raised
        try:
            await fail()
        except ConnectionError:
            raised += 1

    with anyio.fail_after(WAIT * 3):
        async with anyio.create_task_group() as tg:
            for i in range(TASKS):
                tg.start_soon(failing, fails[i % len(fails)])
                tg.start_soon(succeeds[i % len(succeeds)])
    stats = breaker.stats()
    assert raised == TASKS
    assert (stats.failures, stats.successes, stats.window_failures) == (TASKS, TASKS, TASKS)
    assert stats.state == "closed"


@pytest.mark.anyio
@pytest.mark.parametrize("max_calls", [1, 3])
async def test_ten_thousand_tasks_racing_into_half_open(max_calls: int) -> None:
    """Of 10,000 tasks racing into a half-open breaker, exactly the allowed probes get in."""
    clock = ManualClock()
    breaker = half_open_breaker("decorator", max_calls, clock)
    release, all_tried = anyio.Event(), anyio.Event()
    counts = {"admitted": 0, "rejected": 0}

    def tried() -> None:
        if counts["admitted"] + counts["rejected"] == TASKS:
            all_tried.set()

    async def probe() -> None:
        counts["admitted"] += 1
        tried()
        await release.wait()

    calls = every_way(breaker, probe)

    async def racer(call: Callable[[], Any]) -> None:
        try:
            await call()
        except stalwart.CircuitOpenError:
            counts["rejected"] += 1
            tried()

    with anyio.fail_after(WAIT * 3):
        async with anyio.create_task_group() as tg:
            for i in range(TASKS):
                tg.start_soon(racer, calls[i % len(calls)])
            await all_tried.wait()
            assert counts == {"admitted": max_calls, "rejected": TASKS - max_calls}
            assert state_of(breaker) is State.HALF_OPEN
            release.set()
    stats = breaker.stats()
    assert (stats.successes, stats.rejected) == (max_calls, TASKS - max_calls)


@pytest.mark.anyio
async def test_cancelled_probes_release_their_permits_under_load() -> None:
    """Probes cancelled among thousands of racing tasks give their permits back, uncounted."""
    max_calls, racers = 3, TASKS // 2
    clock = ManualClock()
    breaker = half_open_breaker("decorator", max_calls, clock)
    before = breaker.stats()

    async def race() -> int:
        admitted = anyio.Event()
        counts = {"admitted": 0, "rejected": 0}

        async def probe() -> None:
            counts["admitted"] += 1
            if counts["admitted"] == max_calls:
                admitted.set()
            await anyio.sleep_forever()

        calls = every_way(breaker, probe)

        async def racer(call: Callable[[], Any]) -> None:
            try:
                await call()
            except stalwart.CircuitOpenError:
                counts["rejected"] += 1

        with anyio.fail_after(WAIT * 3):
            async with anyio.create_task_group() as tg:
                for i in range(racers):
                    tg.start_soon(racer, calls[i % len(calls)])
                await admitted.wait()
                while counts["rejected"] < racers - max_calls:  # every other racer decided
                    await anyio.lowlevel.checkpoint()
                tg.cancel_scope.cancel()
        return counts["admitted"]

    assert await race() == max_calls
    assert await race() == max_calls  # the cancelled probes gave their permits back
    after = breaker.stats()
    assert (after.successes, after.failures) == (before.successes, before.failures)
    assert after.state == "half_open"
