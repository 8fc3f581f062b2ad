"""Policy: the order of the layers, one behaviour table for sync and async, blocks, validation."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest

import stalwart
from stalwart.breaker import CircuitBreaker
from stalwart.bulkhead import Bulkhead
from stalwart.errors import CircuitOpenError, TimeoutExceeded
from stalwart.policy import Policy
from stalwart.testing import ManualClock
from stalwart.timeout import Timeout

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

# pytest-timeout's default method arms SIGALRM itself; the thread method leaves the
# signal to the timeouts under test.
pytestmark = pytest.mark.timeout(60, method="thread")

MODES = ["sync", "asyncio", "trio"]
BLOCK_FOR = 5.0  # far longer than any timeout under test; a timed-out attempt ends well before
SLOW = object()  # a step that blocks (sync) or sleeps (async) for BLOCK_FOR


@dataclasses.dataclass
class Script:
    """What each successive attempt does: raise a fresh exception, block, or return."""

    steps: list[Any]
    calls: int = 0

    def next(self) -> Any:
        item = self.steps[min(self.calls, len(self.steps) - 1)]
        self.calls += 1
        if isinstance(item, type) and issubclass(item, BaseException):
            raise item()
        return item

    def function(self, mode: str) -> Any:
        """A sync or async function ``(x, *, y=0)`` that follows the script."""
        if mode == "sync":

            def work(x: int, *, y: int = 0) -> Any:
                item = self.next()
                if item is SLOW:
                    threading.Event().wait(BLOCK_FOR)
                    return "late"
                return item

            return work

        async def awork(x: int, *, y: int = 0) -> Any:
            item = self.next()
            if item is SLOW:
                await anyio.sleep(BLOCK_FOR)
                return "late"
            await anyio.lowlevel.checkpoint()
            return item

        return awork


def call_with(mode: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call `fn` directly (sync) or in a fresh event loop of the `mode` backend."""
    if mode == "sync":
        return fn(*args, **kwargs)
    return anyio.run(functools.partial(fn, *args, **kwargs), backend=mode)


class FallbackRecorder:
    """A fallback that records what it was handed and returns "fallback"."""

    def __init__(self) -> None:
        self.seen: list[tuple[BaseException, tuple[Any, ...], dict[str, Any]]] = []

    def __call__(self, exc: BaseException, *args: Any, **kwargs: Any) -> str:
        self.seen.append((exc, args, kwargs))
        return "fallback"


def breaker(**config: Any) -> CircuitBreaker:
    """A quiet breaker counting consecutive failures on a clock that never moves."""
    config.setdefault("window", None)
    return CircuitBreaker("test", clock=ManualClock(), log=False, **config)


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of the behaviour table."""

    steps: list[Any]
    expected: Any  # the return value, or the exception type raised
    calls: int  # attempts that reached the function
    retry: dict[str, Any] | None = None  # stalwart.retry(**retry)
    breaker: dict[str, Any] | None = None  # breaker(**breaker)
    timeout: float | None = None
    fallback: bool = False
    fallback_got: type[BaseException] | None = None  # what the fallback was handed
    failures: int | None = None  # failures the breaker recorded


TABLE: dict[str, Row] = {
    "success": Row(["ok"], "ok", 1, retry={}, breaker={}, timeout=1.0, fallback=True, failures=0),
    "nothing-configured": Row(["ok"], "ok", 1),
    "transient-then-ok": Row(
        [ConnectionError, TimeoutError, "ok"], "ok", 3, retry={}, breaker={}, failures=2
    ),
    "exhausted": Row([ConnectionError], ConnectionError, 3, retry={"attempts": 3}),
    "exhausted-fallback-each-attempt-counted": Row(
        [ConnectionError],
        "fallback",
        3,
        retry={"attempts": 3},
        breaker={"failure_threshold": 10},
        fallback=True,
        fallback_got=ConnectionError,
        failures=3,
    ),
    "permanent-not-retried": Row(
        [ValueError],
        "fallback",
        1,
        retry={"attempts": 5},
        fallback=True,
        fallback_got=ValueError,
    ),
    "fallback-only": Row([KeyError], "fallback", 1, fallback=True, fallback_got=KeyError),
    "breaker-opened-during-retries-stops-them": Row(
        [ConnectionError],
        CircuitOpenError,
        2,
        retry={"attempts": 5},
        breaker={"failure_threshold": 2},
        failures=2,
    ),
    "open-circuit-never-retried-even-on-exception": Row(
        [ConnectionError],
        CircuitOpenError,
        2,
        retry={"attempts": 5, "on": Exception},
        breaker={"failure_threshold": 2},
        failures=2,
    ),
    "open-circuit-reaches-the-fallback": Row(
        [ConnectionError],
        "fallback",
        2,
        retry={"attempts": 5},
        breaker={"failure_threshold": 2},
        fallback=True,
        fallback_got=CircuitOpenError,
        failures=2,
    ),
    "timeout-per-attempt": Row([SLOW, "ok"], "ok", 2, retry={"attempts": 3}, timeout=0.05),
    "timeout-counted-by-breaker": Row(
        [SLOW, "ok"], "ok", 2, retry={}, breaker={}, timeout=0.05, failures=1
    ),
    "timeouts-exhausted-fallback": Row(
        [SLOW],
        "fallback",
        2,
        retry={"attempts": 2},
        timeout=0.05,
        fallback=True,
        fallback_got=TimeoutExceeded,
    ),
    "result-retried": Row([None, 5], 5, 2, retry={"retry_if_result": lambda r: r is None}),
    "system-exit-skips-everything": Row(
        [SystemExit],
        SystemExit,
        1,
        retry={"on": BaseException},
        breaker={},
        fallback=True,
        failures=0,
    ),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("row", [pytest.param(row, id=name) for name, row in TABLE.items()])
def test_behaviour_table(mode: str, row: Row, instant_retries: None) -> None:
    """Sync and async (asyncio, trio) policies behave alike for every row of the table."""
    script = Script(row.steps)
    recorder = FallbackRecorder()
    policy = Policy(
        retry=None if row.retry is None else stalwart.retry(log=False, **row.retry),
        breaker=None if row.breaker is None else breaker(**row.breaker),
        timeout=row.timeout,
        fallback=recorder if row.fallback else None,
    )
    wrapped = policy(script.function(mode))
    started = time.monotonic()
    if isinstance(expected := row.expected, type) and issubclass(expected, BaseException):
        with pytest.raises(expected):
            call_with(mode, wrapped, 1, y=2)
    else:
        assert call_with(mode, wrapped, 1, y=2) == expected
    assert time.monotonic() - started < BLOCK_FOR  # every slow attempt was cut short
    assert script.calls == row.calls
    if row.fallback_got is None:
        assert recorder.seen == []
    else:
        [(exc, args, kwargs)] = recorder.seen
        assert type(exc) is row.fallback_got
        assert (args, kwargs) == ((1,), {"y": 2})
    if row.failures is not None:
        assert policy.breaker is not None
        assert policy.breaker.stats().failures == row.failures


# --- The order of the layers ---------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_deadline_sits_outside_retry_and_caps_it(mode: str) -> None:
    """Every attempt sees one shared deadline, and retries stop before sleeping past it."""
    seen: list[float | None] = []

    def attempt(clock: ManualClock) -> None:
        seen.append(stalwart.remaining())
        clock.advance(3)
        raise ConnectionError

    with ManualClock() as clock:
        if mode == "sync":

            def work() -> None:
                attempt(clock)

            fn: Any = work
        else:

            async def awork() -> None:
                await anyio.lowlevel.checkpoint()
                attempt(clock)

            fn = awork
        policy = Policy(
            deadline=10,
            retry=stalwart.retry(attempts=10, backoff=stalwart.constant(2.5), log=False),
        )
        with pytest.raises(ConnectionError) as info:
            call_with(mode, policy(fn))
    assert seen == [10.0, 4.5]
    assert clock.sleeps == [2.5]
    assert "stopped by the deadline" in info.value.__notes__[-1]  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", MODES)
def test_fallback_sits_outside_the_deadline(mode: str) -> None:
    """The fallback runs after the deadline has closed; the attempts ran inside it."""
    inside: list[float | None] = []

    def fallback(exc: BaseException) -> float | None:
        return stalwart.remaining()

    def fail() -> None:
        inside.append(stalwart.remaining())
        raise KeyError

    async def afail() -> None:
        fail()

    policy = Policy(deadline=30, fallback=fallback)
    with ManualClock():
        assert call_with(mode, policy(fail if mode == "sync" else afail)) is None
    assert inside == [30.0]


@pytest.mark.parametrize("mode", MODES)
def test_policy_deadline_caps_attempts_and_retries_in_real_time(mode: str) -> None:
    """A per-attempt timeout inside retry, capped by the Policy deadline, ends the call early."""
    script = Script([SLOW])
    policy = Policy(
        deadline=0.3,
        retry=stalwart.retry(attempts=100, backoff=stalwart.constant(0), log=False),
        timeout=0.05,
    )
    started = time.monotonic()
    with pytest.raises(TimeoutExceeded):
        call_with(mode, policy(script.function(mode)), 1)
    # Each attempt lasts its 0.05 s at least, so the 0.3 s deadline allows a handful;
    # without it the call would make 100 attempts (5 s).
    assert 1 <= script.calls <= 8
    assert time.monotonic() - started < 2.5  # a sanity bound only


@pytest.mark.parametrize("mode", MODES)
def test_deadline_alone_stops_a_running_attempt(mode: str) -> None:
    """Without a timeout, each attempt still runs under `timeout(None)`: the deadline stops it."""
    script = Script([SLOW])
    started = time.monotonic()
    with pytest.raises(TimeoutExceeded):
        call_with(mode, Policy(deadline=0.05)(script.function(mode)), 1)
    assert script.calls == 1
    assert time.monotonic() - started < BLOCK_FOR


def test_circuit_open_error_from_inside_the_call_is_not_retried(instant_retries: None) -> None:
    """An open circuit further down (a breaker inside the function) also stops retries."""
    calls = 0

    def call() -> None:
        nonlocal calls
        calls += 1
        raise CircuitOpenError("downstream", retry_after=1.0)

    policy = Policy(retry=stalwart.retry(on=Exception, attempts=5, log=False))
    with pytest.raises(CircuitOpenError):
        policy(call)()
    assert calls == 1


def test_the_given_retry_policy_is_kept_unchanged() -> None:
    """Policy keeps the caller's RetryPolicy as given; only its own copy refuses open circuits."""
    retry = stalwart.retry(on=Exception, attempts=5)
    policy = Policy(retry=retry)
    assert policy.retry is retry
    assert retry.should_retry(CircuitOpenError("x"))
    assert policy._retry is not None
    assert not policy._retry.should_retry(CircuitOpenError("x"))
    assert policy._retry.should_retry(ConnectionError())
    assert not policy._retry.should_retry(KeyboardInterrupt())
    assert policy._retry.attempts == 5


# --- Fallback --------------------------------------------------------------------------


def test_fallback_not_called_on_keyboard_interrupt() -> None:
    """KeyboardInterrupt passes through retry and fallback untouched, after one attempt."""
    recorder = FallbackRecorder()
    script = Script([KeyboardInterrupt])
    policy = Policy(
        retry=stalwart.retry(on=BaseException, attempts=3, log=False),
        breaker=breaker(),
        fallback=recorder,
    )
    with pytest.raises(KeyboardInterrupt):
        policy(script.function("sync"))(1)
    assert script.calls == 1
    assert recorder.seen == []


@pytest.mark.anyio
async def test_cancellation_skips_fallback_and_breaker() -> None:
    """A cancelled call is neither handed to the fallback nor counted by the breaker."""
    recorder = FallbackRecorder()
    started = anyio.Event()
    calls = 0
    guard = breaker()

    @Policy(retry=stalwart.retry(on=BaseException, log=False), breaker=guard, fallback=recorder)
    async def call() -> None:
        nonlocal calls
        calls += 1
        started.set()
        await anyio.sleep(BLOCK_FOR)

    with anyio.fail_after(BLOCK_FOR / 2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await started.wait()
            tg.cancel_scope.cancel()
    assert calls == 1
    assert recorder.seen == []
    stats = guard.stats()
    assert (stats.failures, stats.successes) == (0, 0)


@pytest.mark.anyio
async def test_async_fallback_may_be_a_coroutine_function() -> None:
    """For an async function, a coroutine-function fallback is awaited."""

    async def fallback(exc: BaseException, key: str) -> str:
        await anyio.lowlevel.checkpoint()
        return f"cached {key} after {type(exc).__name__}"

    @Policy(fallback=fallback)
    async def load(key: str) -> str:
        raise ConnectionError

    assert await load("k") == "cached k after ConnectionError"


def test_sync_function_refuses_a_coroutine_fallback() -> None:
    """A sync function with an async fallback fails at decoration: nothing would await it."""

    async def fallback(exc: BaseException) -> None:
        return None

    with pytest.raises(TypeError, match="fallback .* is a coroutine function"):
        Policy(fallback=fallback)(lambda: None)


def test_fallback_errors_propagate_chained_to_the_original() -> None:
    """A fallback that raises lets its own error out, with the call's error as its context."""

    def fallback(exc: BaseException) -> None:
        raise LookupError("no cached value")

    def call() -> None:
        raise ConnectionError("down")

    with pytest.raises(LookupError) as info:
        Policy(fallback=fallback)(call)()
    assert isinstance(info.value.__context__, ConnectionError)


# --- Decorator, call(), call_async() ---------------------------------------------------


def test_decorator_keeps_signature_and_metadata() -> None:
    """The decorated function keeps its name, docstring and signature, sync and async."""

    def fetch(url: str, *, retries: int = 0) -> str:
        """Fetch a URL."""
        return url

    async def afetch(url: str, *, retries: int = 0) -> str:
        """Fetch a URL."""
        return url

    policy = Policy(
        fallback=lambda exc, *a, **k: "",
        deadline=5,
        retry=stalwart.retry(),
        breaker=breaker(),
        timeout=1,
    )
    for fn in (fetch, afetch):
        wrapped = policy(fn)
        assert wrapped.__name__ == fn.__name__
        assert wrapped.__doc__ == "Fetch a URL."
        assert inspect.signature(wrapped) == inspect.signature(fn)
        assert inspect.unwrap(wrapped) is fn
        assert inspect.iscoroutinefunction(wrapped) == inspect.iscoroutinefunction(fn)


def test_empty_policy_returns_the_function_itself() -> None:
    """A Policy with no layers adds nothing to the call."""

    def fn() -> int:
        return 1

    assert Policy()(fn) is fn


def test_generator_functions_are_refused() -> None:
    """Generator functions, sync and async, fail at decoration time."""

    def gen() -> Iterator[int]:
        yield 1

    async def agen() -> AsyncIterator[int]:
        yield 1

    for fn in (gen, agen):
        with pytest.raises(TypeError, match="generator function"):
            Policy(retry=stalwart.retry())(fn)


def test_call_runs_a_sync_function_through_the_policy(instant_retries: None) -> None:
    """policy.call(fn, *args, **kwargs) retries and falls back like the decorator."""
    script = Script([ConnectionError, "ok"])
    policy = Policy(retry=stalwart.retry(log=False))
    assert policy.call(script.function("sync"), 1, y=2) == "ok"
    assert script.calls == 2
    recorder = FallbackRecorder()
    assert Policy(fallback=recorder).call(Script([KeyError]).function("sync"), 3, y=4) == (
        "fallback"
    )
    assert [(args, kwargs) for _, args, kwargs in recorder.seen] == [((3,), {"y": 4})]


@pytest.mark.anyio
async def test_call_async_awaits_an_async_function_through_the_policy(
    instant_retries: None,
) -> None:
    """await policy.call_async(fn, ...) retries async functions."""
    script = Script([ConnectionError, "ok"])
    policy = Policy(retry=stalwart.retry(log=False))
    assert await policy.call_async(script.function("async"), 1, y=2) == "ok"
    assert script.calls == 2


@pytest.mark.anyio
async def test_call_and_call_async_refuse_the_other_colour() -> None:
    """call() refuses coroutine functions and call_async() refuses sync ones, by name."""

    async def afn() -> None:
        return None

    def fn() -> None:
        return None

    with pytest.raises(TypeError, match="use call_async"):
        Policy().call(afn)  # type: ignore[unused-coroutine]
    with pytest.raises(TypeError, match="use call\\(\\)"):
        await Policy().call_async(fn)  # type: ignore[arg-type]


# --- with and async with ---------------------------------------------------------------


def test_with_block_applies_breaker_and_timeout() -> None:
    """`with policy:` limits the block and counts its timeout as a breaker failure."""
    guard = breaker()
    started = time.monotonic()
    with pytest.raises(TimeoutExceeded), Policy(breaker=guard, timeout=0.05):
        threading.Event().wait(BLOCK_FOR)
    assert time.monotonic() - started < BLOCK_FOR
    assert guard.stats().failures == 1


def test_with_block_sets_the_deadline_and_nests() -> None:
    """`with policy:` opens the deadline for the block only; the same policy nests."""
    policy = Policy(deadline=5)
    with ManualClock() as clock:
        with policy:
            clock.advance(2)
            with policy:
                assert stalwart.remaining() == 3.0  # an inner deadline never extends
            assert stalwart.remaining() == 3.0
        assert stalwart.remaining() is None


def test_with_block_rejected_by_an_open_breaker_unwinds() -> None:
    """An open breaker rejects the block before it runs, and the deadline is closed again."""
    guard = breaker()
    guard.force_open()
    ran = False
    with pytest.raises(CircuitOpenError), Policy(deadline=5, breaker=guard):
        ran = True
    assert not ran
    assert stalwart.remaining() is None


def test_with_block_success_counts_for_the_breaker() -> None:
    """A block that ends normally is one success through the breaker."""
    guard = breaker()
    with Policy(breaker=guard):
        pass
    assert (guard.stats().successes, guard.stats().failures) == (1, 0)


@pytest.mark.parametrize(
    "policy",
    [
        pytest.param(Policy(retry=stalwart.retry()), id="retry"),
        pytest.param(Policy(fallback=lambda exc: None), id="fallback"),
    ],
)
def test_with_block_refuses_retry_and_fallback(policy: Policy) -> None:
    """A block cannot be retried or replaced by a value: entering one says so."""
    with pytest.raises(TypeError, match="cannot guard a with block"), policy:
        pass
    with pytest.raises(TypeError, match="cannot guard a with block"):
        anyio.run(_enter_async, policy)


async def _enter_async(policy: Policy) -> None:
    async with policy:
        pass


@pytest.mark.anyio
async def test_async_with_block_applies_deadline_breaker_and_timeout() -> None:
    """`async with policy:` sees the deadline, and its timeout counts as a breaker failure."""
    guard = breaker()
    policy = Policy(deadline=30, breaker=guard, timeout=0.05)
    seen: list[float | None] = []
    with pytest.raises(TimeoutExceeded):
        async with policy:
            seen.append(stalwart.remaining())
            await anyio.sleep(BLOCK_FOR)
    assert seen[0] is not None
    assert 0 < seen[0] <= 30
    assert stalwart.remaining() is None
    assert guard.stats().failures == 1
    async with policy:
        await anyio.lowlevel.checkpoint()
    assert guard.stats().successes == 1


# --- Construction ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"fallback": 3}, TypeError, "fallback must be callable or None, got 3"),
        ({"retry": 3}, TypeError, "retry must be a RetryPolicy .* got 3"),
        ({"retry": stalwart.retrying()}, TypeError, "retry must be a RetryPolicy"),
        ({"breaker": "db"}, TypeError, "breaker must be a CircuitBreaker or None, got 'db'"),
        ({"bulkhead": "db"}, TypeError, "bulkhead must be a Bulkhead .* or None, got 'db'"),
        ({"timeout": 0}, ValueError, r"timeout must be .* > 0 .*, got 0"),
        ({"timeout": -1}, ValueError, "timeout .* got -1"),
        ({"timeout": "1"}, TypeError, "timeout .* got '1'"),
        ({"deadline": 0}, ValueError, r"deadline must be .* > 0 .*, got 0"),
        ({"deadline": math.nan}, ValueError, "deadline .* got nan"),
        ({"deadline": "soon"}, TypeError, "deadline .* got 'soon'"),
    ],
)
def test_bad_arguments_fail_at_construction(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    """Every bad argument raises at construction, naming the parameter and the value."""
    with pytest.raises(error, match=match):
        Policy(**kwargs)


def test_arguments_are_keyword_only() -> None:
    """Positional arguments are refused, so the order of the layers is never implied."""
    with pytest.raises(TypeError):
        Policy(None)  # type: ignore[call-arg]


def test_durations_are_normalised() -> None:
    """Deadlines and timeouts accept seconds or timedeltas; a Timeout is kept as given."""
    policy = Policy(deadline=timedelta(seconds=3), timeout=timedelta(milliseconds=500))
    assert policy.deadline == 3.0
    assert policy.timeout is not None
    assert policy.timeout.seconds == 0.5
    limit = Timeout(2)
    assert Policy(timeout=limit).timeout is limit


def test_repr_lists_the_layers_given_in_order() -> None:
    """The repr shows the public path and the layers that were given, outermost first."""
    assert Policy.__module__ == "stalwart"
    assert repr(Policy()) == "stalwart.Policy()"
    assert repr(Policy(timeout=1, deadline=2)) == (
        "stalwart.Policy(deadline=2.0, timeout=stalwart.timeout(1.0))"
    )
    text = repr(Policy(breaker=breaker(), retry=stalwart.retry(attempts=2)))
    assert text.startswith("stalwart.Policy(retry=stalwart.retry(on=None, attempts=2")
    assert text.endswith("breaker=<CircuitBreaker 'test' closed>)")


class _AsyncCallable:
    """An object whose ``__call__`` is ``async def``: async, though not a function."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        await anyio.lowlevel.checkpoint()
        if self.calls < 2:
            raise ConnectionError("down")
        return "ok"


@pytest.mark.anyio
async def test_async_callable_objects_get_the_async_layers(instant_retries: None) -> None:
    """A Policy over an object with ``async def __call__`` awaits it and retries it."""
    target = _AsyncCallable()
    guarded = Policy(retry=stalwart.retry(attempts=3, log=False), deadline=5, timeout=5)(target)
    assert await guarded() == "ok"
    assert target.calls == 2


# --- The bulkhead layer ---------------------------------------------------------------


def _slot_script(limit: Bulkhead, steps: list[Any], seen: list[int]) -> Script:
    """A script whose attempts record how many slots are in use while they run."""
    script = Script(steps)
    next_step = script.next

    def watched() -> Any:
        seen.append(limit.in_use)
        return next_step()

    script.next = watched  # type: ignore[method-assign]
    return script


@pytest.mark.parametrize("mode", MODES)
def test_each_attempt_holds_a_bulkhead_slot(mode: str, instant_retries: None) -> None:
    """Every attempt runs in a slot, given back before the retry's next attempt."""
    limit = Bulkhead("db", max_concurrent=1)
    seen: list[int] = []
    script = _slot_script(limit, [ConnectionError, ConnectionError, "ok"], seen)
    policy = Policy(retry=stalwart.retry(attempts=3, log=False), bulkhead=limit, timeout=5)
    assert call_with(mode, policy(script.function(mode)), 1) == "ok"
    assert seen == [1, 1, 1]
    stats = limit.stats()
    assert (stats.in_use, stats.admitted, stats.rejected) == (0, 3, 0)


@pytest.mark.parametrize("mode", MODES)
def test_bulkhead_sits_inside_the_breaker(mode: str) -> None:
    """An attempt the open breaker rejects never takes a slot nor waits in the queue."""
    limit = Bulkhead("db", max_concurrent=1)
    guard = breaker()
    guard.force_open()
    script = Script(["ok"])
    wrapped = Policy(breaker=guard, bulkhead=limit)(script.function(mode))
    with pytest.raises(CircuitOpenError):
        call_with(mode, wrapped, 1)
    assert (script.calls, limit.stats().admitted, limit.stats().rejected) == (0, 0, 0)


@pytest.mark.parametrize("mode", MODES)
def test_a_full_bulkhead_fails_the_attempt_without_calling(mode: str) -> None:
    """A full bulkhead raises BulkheadFull for the attempt; the function is not called."""
    limit = Bulkhead("db", max_concurrent=1)
    limit.acquire()
    script = Script(["ok"])
    recorder = FallbackRecorder()
    wrapped = Policy(fallback=recorder, bulkhead=limit)(script.function(mode))
    assert call_with(mode, wrapped, 1) == "fallback"
    [(exc, _, _)] = recorder.seen
    assert isinstance(exc, stalwart.BulkheadFull)
    assert exc.args == ("db", "queue full")
    assert script.calls == 0
    limit.release()


@pytest.mark.anyio
async def test_the_timeout_does_not_count_the_wait_for_a_slot() -> None:
    """The per-attempt timeout starts once the slot is had: it sits inside the bulkhead."""
    limit = Bulkhead("db", max_concurrent=1, max_queued=1)
    result: list[str] = []

    @Policy(bulkhead=limit, timeout=0.05)
    async def work() -> str:
        await anyio.lowlevel.checkpoint()
        return "ok"

    async def call() -> None:
        result.append(await work())

    await limit.acquire_async()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(call)
        while limit.queued == 0:
            await anyio.lowlevel.checkpoint()
        await anyio.sleep(0.2)  # queued four times the timeout
        limit.release()
    assert result == ["ok"]
    assert limit.in_use == 0


def test_with_block_holds_a_bulkhead_slot() -> None:
    """A with block takes a slot for its body, inside the breaker."""
    limit = Bulkhead("db", max_concurrent=1)
    guard = breaker()
    policy = Policy(breaker=guard, bulkhead=limit, timeout=5)
    with policy:
        assert limit.in_use == 1
        with pytest.raises(stalwart.BulkheadFull), policy:
            pass
    assert limit.in_use == 0
    assert guard.stats().successes == 1


@pytest.mark.anyio
async def test_async_with_block_holds_a_bulkhead_slot() -> None:
    """An async with block takes a slot for its body and gives it back on errors."""
    limit = Bulkhead("db", max_concurrent=1)
    policy = Policy(bulkhead=limit)
    with pytest.raises(ConnectionError):
        async with policy:
            assert limit.in_use == 1
            raise ConnectionError
    assert limit.in_use == 0


def test_repr_shows_the_bulkhead() -> None:
    """The bulkhead appears between the breaker and the timeout."""
    text = repr(Policy(breaker=breaker(), bulkhead=Bulkhead("db"), timeout=1))
    assert text == (
        "stalwart.Policy(breaker=<CircuitBreaker 'test' closed>,"
        " bulkhead=<Bulkhead 'db' 0/10 in use, 0/0 queued>, timeout=stalwart.timeout(1.0))"
    )


def test_bulkhead_rejections_are_not_breaker_failures() -> None:
    """A call the bulkhead refused never reached the dependency: the breaker ignores it."""
    limit = Bulkhead("db", max_concurrent=1)
    guard = breaker(failure_threshold=1)
    limit.acquire()
    with pytest.raises(stalwart.BulkheadFull):
        Policy(breaker=guard, bulkhead=limit).call(lambda: "ok")
    stats = guard.stats()
    assert (stats.failures, stats.successes, stats.state) == (0, 0, "closed")


# -- hedge -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_hedge_races_copies_of_each_attempt_through_the_breaker() -> None:
    """A hanging first copy is hedged; the winner counts once, the cancelled copy never."""
    guard = breaker(failure_threshold=1)
    hedger = stalwart.Hedger("policy", delay=0.001)
    copies: list[int] = []
    hang = anyio.Event()  # never set: the first copy waits until it is cancelled

    async def fetch(key: str) -> str:
        copies.append(len(copies))
        if len(copies) == 1:
            await hang.wait()
        return f"value of {key}"

    policy = Policy(hedge=hedger, breaker=guard, timeout=5)
    assert await policy.call_async(fetch, "k") == "value of k"
    assert copies == [0, 1]
    stats = guard.stats()
    assert (stats.successes, stats.failures, stats.state) == (1, 0, "closed")
    hedged = hedger.stats()
    assert (hedged.calls, hedged.hedges, hedged.hedge_wins, hedged.cancelled) == (1, 1, 1, 1)


@pytest.mark.anyio
async def test_retry_wraps_the_hedge() -> None:
    """Each retry attempt is hedged: a failure starts no copy, the retry tries again."""
    hedger = stalwart.Hedger("policy", delay=60)  # no hedge starts within this test
    outcomes: list[str] = []

    async def fetch() -> str:
        if not outcomes:
            outcomes.append("failed")
            raise ConnectionError("reset")
        outcomes.append("ok")
        return "ok"

    policy = Policy(retry=stalwart.retry(attempts=2, backoff=stalwart.constant(0)), hedge=hedger)
    assert await policy.call_async(fetch) == "ok"
    assert outcomes == ["failed", "ok"]
    assert (hedger.stats().calls, hedger.stats().hedges, hedger.stats().failed) == (2, 0, 1)


def test_hedge_refuses_sync_functions_and_blocks() -> None:
    """Sync code is not hedged: decorating it, or guarding a block, says why."""
    policy = Policy(hedge=stalwart.Hedger("policy"))
    with pytest.raises(TypeError, match="hedges async functions only"):
        policy(lambda: "ok")
    with pytest.raises(TypeError, match="cannot guard a with block"), policy:
        pass
    with pytest.raises(TypeError, match="hedge must be a Hedger"):
        Policy(hedge=0.05)  # type: ignore[arg-type]


def test_repr_shows_the_hedge_between_retry_and_breaker() -> None:
    """The hedge appears in its place in the order."""
    text = repr(Policy(hedge=stalwart.Hedger("h", delay=0.02), breaker=breaker()))
    assert text == (
        "stalwart.Policy(hedge=Hedger('h', delay=0.02, max_hedges=1),"
        " breaker=<CircuitBreaker 'test' closed>)"
    )
