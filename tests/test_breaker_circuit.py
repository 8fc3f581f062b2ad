"""The `CircuitBreaker` facade: one behaviour table for sync, asyncio and trio, and the rest.

The table runs every row through the decorator (fast and listened paths), `call()` /
`call_async()` and the context managers, on a `ManualClock`, so that every way in
shares one set of expectations.
"""

from __future__ import annotations

import dataclasses
import gc
import inspect
import json
import logging
import math
import os
import sys
import threading
import time
import tracemalloc
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import stalwart
from stalwart.breaker import MemoryStorage, State, Storage
from stalwart.events import BreakerEvent, StateChange
from stalwart.testing import ManualClock

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator


class Boom(Exception):
    """An exception the default classifier does not know: a failure by default."""


class HttpError(Exception):
    """An exception carrying an HTTP status code, as client libraries raise them."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


def play(outcome: Any) -> Any:
    """Raise `outcome` if it is an exception, else return it."""
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


class Counter:
    """Counts calls that reached the protected function."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, outcome: Any) -> Any:
        self.calls += 1
        return play(outcome)


class NoopSuccessListener:
    """Listens for successes, which sends the decorator down its full (timed) path."""

    def on_success(self, event: BreakerEvent) -> None:
        """Ignore the event."""


def state_of(breaker: stalwart.CircuitBreaker) -> State:
    """The breaker's state now (a call, so type checkers do not carry narrowing over)."""
    return breaker.state


MODES = ["sync", "asyncio", "trio"]
VIAS = ["decorator", "decorator-listened", "call", "context"]


def make_caller(
    mode: str, via: str, breaker: stalwart.CircuitBreaker, body: Callable[[Any], Any]
) -> Callable[[Any], Any]:
    """Return ``run(arg)``: one call of ``body(arg)`` through `breaker`, `mode`, `via` way.

    In the async modes `body` runs inside an ``async def`` after a checkpoint.
    """
    if mode == "sync":
        if via.startswith("decorator"):
            return breaker(body)
        if via == "call":
            return lambda arg: breaker.call(body, arg)

        def in_context(arg: Any) -> Any:
            with breaker:
                return body(arg)

        return in_context

    async def abody(arg: Any) -> Any:
        await anyio.lowlevel.checkpoint()
        return body(arg)

    if via.startswith("decorator"):
        run = breaker(abody)
    elif via == "call":

        async def run(arg: Any) -> Any:
            return await breaker.call_async(abody, arg)

    else:

        async def run(arg: Any) -> Any:
            async with breaker:
                return await abody(arg)

    return lambda arg: anyio.run(run, arg, backend=mode)


def breaker_for(via: str, clock: ManualClock, **kwargs: Any) -> stalwart.CircuitBreaker:
    """A breaker named "tbl" on `clock`, with a success listener for the listened path."""
    listeners = [NoopSuccessListener()] if via == "decorator-listened" else []
    return stalwart.CircuitBreaker("tbl", clock=clock, log=False, listeners=listeners, **kwargs)


@dataclass(frozen=True)
class Advance:
    """Move the manual clock."""

    seconds: float


@dataclass(frozen=True)
class Reject:
    """The call is rejected with this `retry_after`, without reaching the function."""

    retry_after: float


@dataclass(frozen=True)
class Expect:
    """These `stats()` fields hold now (None means: not checked)."""

    state: str | None = None
    successes: int | None = None
    failures: int | None = None
    rejected: int | None = None
    consecutive_failures: int | None = None
    last_failure_type: str | None = None


def broken_predicate(exc: BaseException) -> bool:
    """A `record=` predicate that itself fails."""
    raise RuntimeError("predicate bug")


CE = ConnectionError
ONE = {"failure_threshold": 1, "window": None, "recovery_timeout": 30}

# (id, breaker options, a factory of steps: fresh exception instances for every test)
TABLE: list[tuple[str, dict[str, Any], Callable[[], list[Any]]]] = [
    (
        "success-passes-through",
        {},
        lambda: ["a", 2, Expect("closed", successes=2, failures=0, rejected=0)],
    ),
    (
        "consecutive-connection-errors-open",
        {"failure_threshold": 3, "window": None},
        lambda: [
            CE(),
            CE(),
            Expect("closed", failures=2, consecutive_failures=2),
            CE(),
            Expect("open", failures=3, last_failure_type="builtins.ConnectionError"),
            Reject(60.0),
            Expect("open", rejected=1, failures=3),
        ],
    ),
    (
        "unknown-exceptions-open-within-window",
        {"failure_threshold": 2, "window": 10},
        lambda: [Boom(), Advance(5), Boom(), Expect("open"), Reject(60.0)],
    ),
    (
        "window-forgets-old-failures",
        {"failure_threshold": 2, "window": 10},
        lambda: [CE(), Advance(11), CE(), Expect("closed", failures=2), CE(), Expect("open")],
    ),
    (
        "success-breaks-a-run",
        {"failure_threshold": 2, "window": None},
        lambda: [CE(), "ok", CE(), Expect("closed", consecutive_failures=1), CE(), Expect("open")],
    ),
    (
        "open-rejects-until-recovery",
        ONE,
        lambda: [
            CE(),
            Reject(30.0),
            Advance(29),
            Reject(1.0),
            Advance(1),
            "probe",
            Expect("closed", successes=1, failures=1, rejected=2),
            "after",
        ],
    ),
    (
        "probe-failure-reopens",
        ONE,
        lambda: [CE(), Advance(30), Boom(), Expect("open", failures=2), Reject(30.0)],
    ),
    (
        "success-threshold-needs-several-probes",
        {**ONE, "success_threshold": 2},
        lambda: [CE(), Advance(31), "p1", Expect("half_open"), "p2", Expect("closed")],
    ),
    (
        "value-error-counts-as-success",
        ONE,
        lambda: [ValueError("bad"), ValueError("bad"), Expect("closed", successes=2, failures=0)],
    ),
    (
        "permanent-marker-counts-as-success",
        ONE,
        lambda: [stalwart.PermanentError("no"), Expect("closed", successes=1, failures=0)],
    ),
    (
        "http-404-counts-as-success",
        ONE,
        lambda: [HttpError(404), Expect("closed", successes=1, failures=0)],
    ),
    (
        "http-503-counts-as-failure",
        ONE,
        lambda: [
            HttpError(503),
            Expect("open", failures=1, last_failure_type=f"{__name__}.HttpError"),
        ],
    ),
    (
        "permanent-probe-closes",
        ONE,
        lambda: [CE(), Advance(30), ValueError("bad"), Expect("closed")],
    ),
    (
        "record-type",
        {**ONE, "record": Boom},
        lambda: [CE(), Expect("closed", successes=1, failures=0), Boom(), Expect("open")],
    ),
    (
        "record-tuple",
        {**ONE, "record": (Boom, KeyError)},
        lambda: [CE(), ValueError(), Expect("closed", successes=2), KeyError("k"), Expect("open")],
    ),
    (
        "record-predicate",
        {**ONE, "record": lambda exc: "down" in str(exc)},
        lambda: [Boom("fine"), Expect("closed", successes=1), ValueError("down"), Expect("open")],
    ),
    (
        "raising-predicate-counts-as-failure",
        {**ONE, "record": broken_predicate},
        lambda: [ValueError("bad"), Expect("open", failures=1, successes=0)],
    ),
]


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("options", "steps"), [pytest.param(row[1], row[2], id=row[0]) for row in TABLE]
)
def test_behaviour_table(
    mode: str, via: str, options: dict[str, Any], steps: Callable[[], list[Any]]
) -> None:
    """Every way into the breaker, sync and async, behaves alike for every row."""
    clock = ManualClock()
    breaker = breaker_for(via, clock, **options)
    counter = Counter()
    run = make_caller(mode, via, breaker, counter)
    for number, step in enumerate(steps()):
        where = f"step {number}: {step!r}"
        if isinstance(step, Advance):
            clock.advance(step.seconds)
        elif isinstance(step, Expect):
            stats = breaker.stats()
            for field in dataclasses.fields(step):
                wanted = getattr(step, field.name)
                if wanted is not None:
                    assert getattr(stats, field.name) == wanted, (where, field.name, stats)
        elif isinstance(step, Reject):
            before = counter.calls
            with pytest.raises(stalwart.CircuitOpenError) as rejected:
                run("never")
            assert counter.calls == before, where
            assert rejected.value.name == "tbl"
            assert rejected.value.retry_after == pytest.approx(step.retry_after), where
        elif isinstance(step, BaseException):
            before = counter.calls
            with pytest.raises(type(step)) as info:
                run(step)
            assert info.value is step, where
            assert counter.calls == before + 1, where
        else:
            before = counter.calls
            assert run(step) == step, where
            assert counter.calls == before + 1, where


# --- call(), call_async(), context managers --------------------------------------------


def test_call_passes_arguments_and_propagates_exceptions_unchanged() -> None:
    """`call()` forwards positional and keyword arguments and re-raises the very exception."""
    breaker = stalwart.CircuitBreaker("c", log=False)

    def echo(a: int, *, b: int) -> tuple[int, int]:
        return a, b

    assert breaker.call(echo, 1, b=2) == (1, 2)
    exc = ConnectionError("down")

    def fail() -> None:
        raise exc

    with pytest.raises(ConnectionError) as info:
        breaker.call(fail)
    assert info.value is exc
    assert info.value.__context__ is None
    assert info.value.__cause__ is None
    assert info.traceback[-1].name == "fail"
    assert breaker.stats().failures == 1


@pytest.mark.anyio
async def test_call_async_passes_arguments_and_propagates_exceptions_unchanged() -> None:
    """`call_async()` awaits with the arguments given and re-raises the very exception."""
    breaker = stalwart.CircuitBreaker("c", log=False)

    async def echo(a: int, *, b: int) -> tuple[int, int]:
        await anyio.lowlevel.checkpoint()
        return a, b

    assert await breaker.call_async(echo, 1, b=2) == (1, 2)
    exc = Boom("x")

    async def fail() -> None:
        await anyio.lowlevel.checkpoint()
        raise exc

    with pytest.raises(Boom) as info:
        await breaker.call_async(fail)
    assert info.value is exc
    assert info.value.__context__ is None
    assert breaker.stats().failures == 1


def test_call_refuses_an_async_function_and_records_nothing() -> None:
    """`call(async_fn)` raises TypeError naming call_async, releases its permit, leaks nothing."""
    clock = ManualClock()
    breaker = stalwart.CircuitBreaker(
        "c", failure_threshold=1, recovery_timeout=5, clock=clock, log=False
    )
    with pytest.raises(ConnectionError):
        breaker.call(play, ConnectionError())
    clock.advance(5)  # half-open: one probe permit

    async def fetch(key: str) -> str:
        return key  # pragma: no cover - never awaited

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(TypeError, match=r"await breaker\.call_async\(fn, \.\.\.\)"):
            breaker.call(fetch, "k")  # type: ignore[arg-type]
        gc.collect()
    assert [w.message for w in caught] == []  # no "coroutine ... was never awaited"
    assert breaker.call(play, "ok") == "ok"  # the probe permit was given back
    stats = breaker.stats()
    assert (stats.state, stats.calls, stats.failures) == ("closed", 2, 1)


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(stalwart.CircuitBreaker, id="CircuitBreaker(fn)"),
        pytest.param(stalwart.circuit_breaker, id="circuit_breaker(fn)"),
        pytest.param(stalwart.registry.get, id="registry.get(fn)"),
    ],
)
def test_bare_decorators_say_what_to_write(build: Callable[[Any], object]) -> None:
    """`@CircuitBreaker` / `@circuit_breaker` without a name raise TypeError showing the fix."""

    def search() -> None: ...

    with pytest.raises(TypeError, match=r'\("name"\).* got the function .*search'):
        build(search)
    assert "search" not in stalwart.registry


@pytest.mark.parametrize(
    ("name", "error", "match"),
    [
        (None, TypeError, "name must be a string, got None"),
        (3, TypeError, "name must be a string, got 3"),
        ("", ValueError, "name must be a non-empty string, got ''"),
    ],
)
def test_breaker_names_are_checked(name: object, error: type[Exception], match: str) -> None:
    """A wrong type of name is a TypeError, an empty one a ValueError."""
    with pytest.raises(error, match=match):
        stalwart.CircuitBreaker(name)  # type: ignore[arg-type]


def test_context_manager_returns_the_breaker_and_propagates_exceptions() -> None:
    """`with breaker as b` gives the breaker back, and never swallows the body's exception."""
    breaker = stalwart.CircuitBreaker("c", log=False)
    exc = ConnectionError()
    with pytest.raises(ConnectionError) as info, breaker as entered:
        assert entered is breaker
        raise exc
    assert info.value is exc
    assert breaker.stats().failures == 1


def test_nested_context_managers_count_on_each_breaker() -> None:
    """Two nested breakers, and one breaker nested in itself, each record their own call."""
    outer = stalwart.CircuitBreaker("outer", failure_threshold=10, log=False)
    inner = stalwart.CircuitBreaker("inner", failure_threshold=10, log=False)
    with pytest.raises(ConnectionError), outer, inner:
        raise ConnectionError
    with outer:
        with inner:
            pass
        with pytest.raises(Boom), outer:
            raise Boom
    assert (outer.stats().successes, outer.stats().failures) == (1, 2)
    assert (inner.stats().successes, inner.stats().failures) == (1, 1)


def test_context_exits_out_of_order_find_their_own_calls() -> None:
    """Exiting breakers in another order than entered still reports each one's own call."""
    clock = ManualClock()
    first = stalwart.CircuitBreaker(
        "first", failure_threshold=1, window=None, recovery_timeout=5, clock=clock, log=False
    )
    second = stalwart.CircuitBreaker("second", failure_threshold=1, window=None, log=False)
    first.__enter__()
    second.__enter__()
    first.__exit__(ConnectionError, ConnectionError(), None)
    second.__exit__(None, None, None)
    assert (first.stats().failures, second.stats().failures) == (1, 0)
    assert (state_of(first), state_of(second)) == (State.OPEN, State.CLOSED)


@pytest.mark.anyio
async def test_nested_async_context_managers_count_on_each_breaker() -> None:
    """`async with` nests two breakers; a failure inside both is counted by both."""
    outer = stalwart.CircuitBreaker("outer", failure_threshold=1, window=None, log=False)
    inner = stalwart.CircuitBreaker("inner", failure_threshold=1, window=None, log=False)
    with pytest.raises(ConnectionError):
        async with outer, inner:
            await anyio.lowlevel.checkpoint()
            raise ConnectionError
    assert state_of(outer) is State.OPEN
    assert state_of(inner) is State.OPEN
    with pytest.raises(stalwart.CircuitOpenError) as info:
        async with outer:
            pytest.fail("an open breaker ran the body")
    assert info.value.name == "outer"


@pytest.mark.anyio
async def test_same_breaker_in_concurrent_tasks_keeps_each_tasks_call() -> None:
    """Concurrent `async with` blocks on one breaker each report their own admission.

    A task admitted while closed ends late with a failure while another task is the
    half-open probe: the late failure must not reopen the breaker (it is the old
    generation's), and the probe's success closes it. Were the tasks' calls mixed up,
    the failure would be taken for the probe's.
    """
    clock = ManualClock()
    breaker = stalwart.CircuitBreaker(
        "shared", failure_threshold=1, window=None, recovery_timeout=10, clock=clock, log=False
    )
    old_inside, old_release = anyio.Event(), anyio.Event()
    probe_inside, probe_release = anyio.Event(), anyio.Event()
    outcomes: dict[str, str] = {}

    async def old_call() -> None:
        try:
            async with breaker:
                old_inside.set()
                await old_release.wait()
                raise ConnectionError
        except ConnectionError:
            outcomes["old"] = "failed"

    async def probe() -> None:
        async with breaker:
            probe_inside.set()
            await probe_release.wait()
        outcomes["probe"] = "ok"

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(old_call)
            await old_inside.wait()
            with pytest.raises(ConnectionError):
                async with breaker:
                    raise ConnectionError
            assert state_of(breaker) is State.OPEN
            clock.advance(10)
            tg.start_soon(probe)
            await probe_inside.wait()
            assert state_of(breaker) is State.HALF_OPEN
            old_release.set()
            while "old" not in outcomes:
                await anyio.lowlevel.checkpoint()
            assert state_of(breaker) is State.HALF_OPEN
            probe_release.set()
    assert outcomes == {"old": "failed", "probe": "ok"}
    assert state_of(breaker) is State.CLOSED
    assert breaker.stats().failures == 2


# --- operator states --------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_force_open_rejects_every_call_until_reset(mode: str) -> None:
    """A forced-open breaker rejects with `retry_after=None`, whatever the clock says."""
    clock = ManualClock()
    breaker = stalwart.CircuitBreaker("ops", clock=clock, log=False)
    counter = Counter()
    run = make_caller(mode, "decorator", breaker, counter)
    breaker.force_open()
    assert state_of(breaker) is State.FORCED_OPEN
    clock.advance(10**6)
    for _ in range(2):
        with pytest.raises(stalwart.CircuitOpenError) as info:
            run("x")
        assert info.value.retry_after is None
        assert info.value.name == "ops"
    stats = breaker.stats()
    assert (counter.calls, stats.rejected, stats.health, stats.retry_after) == (0, 2, 0, None)
    assert stats.state == "forced_open"
    breaker.reset()
    assert run("x") == "x"
    assert state_of(breaker) is State.CLOSED


@pytest.mark.parametrize("mode", MODES)
def test_disable_lets_everything_through_and_never_trips(mode: str) -> None:
    """A disabled breaker calls through on every failure and stays disabled."""
    breaker = stalwart.CircuitBreaker("ops", failure_threshold=1, window=None, log=False)
    counter = Counter()
    run = make_caller(mode, "decorator", breaker, counter)
    breaker.disable()
    for _ in range(5):
        with pytest.raises(ConnectionError):
            run(ConnectionError())
    assert run("ok") == "ok"
    stats = breaker.stats()
    assert (stats.state, stats.health, counter.calls) == ("disabled", 100, 6)
    assert (stats.failures, stats.successes, stats.rejected) == (5, 1, 0)


def test_disable_after_opening_lets_calls_through() -> None:
    """Disabling an open breaker admits calls at once, without waiting for recovery."""
    breaker = stalwart.CircuitBreaker("ops", failure_threshold=1, window=None, log=False)
    with pytest.raises(ConnectionError):
        breaker.call(play, ConnectionError())
    breaker.disable()
    assert breaker.call(play, 1) == 1


def test_reset_closes_and_clears_windows_but_keeps_totals() -> None:
    """`reset()` closes an open breaker, forgets its windows and keeps the totals."""
    clock = ManualClock()
    breaker = stalwart.CircuitBreaker(
        "ops", failure_threshold=3, window=60, clock=clock, log=False
    )
    for _ in range(2):
        with pytest.raises(ConnectionError):
            breaker.call(play, ConnectionError())
    assert breaker.stats().window_failures == 2
    breaker.reset()
    stats = breaker.stats()
    assert (stats.window_failures, stats.consecutive_failures, stats.failures) == (0, 0, 2)
    # Windows were cleared: two more failures do not reach the threshold of three.
    for _ in range(2):
        with pytest.raises(ConnectionError):
            breaker.call(play, ConnectionError())
    assert state_of(breaker) is State.CLOSED
    with pytest.raises(ConnectionError):
        breaker.call(play, ConnectionError())
    assert state_of(breaker) is State.OPEN
    breaker.reset()
    stats = breaker.stats()
    assert (stats.state, stats.opened_at, stats.retry_after, stats.failures) == (
        "closed",
        None,
        None,
        5,
    )
    assert stats.last_failure_type == "builtins.ConnectionError"


# --- stats ------------------------------------------------------------------------------


def test_stats_after_a_scripted_sequence() -> None:
    """Every field of `stats()` holds the expected value after a known sequence."""
    clock = ManualClock(100.0)
    breaker = stalwart.CircuitBreaker(
        "db", failure_threshold=2, window=60, recovery_timeout=30, clock=clock, log=False
    )
    breaker.call(play, "ok")
    with pytest.raises(ValueError, match="bad"):
        breaker.call(play, ValueError("bad"))
    clock.advance(1)
    with pytest.raises(ConnectionError):
        breaker.call(play, ConnectionError("password=hunter2"))
    clock.advance(1)
    with pytest.raises(TimeoutError):
        breaker.call(play, TimeoutError())
    clock.advance(10)
    with pytest.raises(stalwart.CircuitOpenError):
        breaker.call(play, "never")
    before = time.time()
    stats = breaker.stats()
    after = time.time()
    assert stats._replace(opened_at=None, last_failure_at=None) == (
        stalwart.BreakerStats(
            name="db",
            state="open",
            health=0,
            calls=4,
            successes=2,
            failures=2,
            rejected=1,
            slow_calls=0,
            consecutive_failures=2,
            window_calls=None,
            window_failures=2,
            failure_rate=None,
            opened_at=None,
            last_failure_at=None,
            last_failure_type="builtins.TimeoutError",
            retry_after=20.0,
            storage_degraded=False,
            config={
                "failure_threshold": 2,
                "window": 60.0,
                "failure_rate": None,
                "minimum_calls": 10,
                "window_calls": None,
                "slow_call_duration": None,
                "slow_call_rate": None,
                "recovery_timeout": 30.0,
                "half_open_max_calls": 1,
                "success_threshold": 1,
            },
        )
    )
    # Times are Unix timestamps: opened (and last failed) ten manual seconds ago.
    assert stats.opened_at is not None
    assert before - 10 - 1 <= stats.opened_at <= after - 10 + 1
    assert stats.last_failure_at == pytest.approx(stats.opened_at)


def test_stats_is_frozen_and_json_ready_without_exception_messages() -> None:
    """The snapshot cannot be changed, dumps to JSON, and holds type names, never messages."""
    breaker = stalwart.CircuitBreaker("db", failure_threshold=1, log=False)
    with pytest.raises(ConnectionError):
        breaker.call(play, ConnectionError("password=hunter2"))
    stats = breaker.stats()
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.state = "closed"  # type: ignore[misc]
    dumped = json.dumps(stats.as_dict())
    assert json.loads(dumped)["last_failure_type"] == "builtins.ConnectionError"
    assert "hunter2" not in dumped
    assert "hunter2" not in repr(stats)
    assert stats.as_dict()["config"] == breaker.config.as_dict()


def test_health_follows_the_state() -> None:
    """Health is 100 closed, 0 open, 50 half-open, and 0 / 100 in the operator states."""
    clock = ManualClock()
    breaker = stalwart.CircuitBreaker(
        "h", failure_threshold=1, window=None, recovery_timeout=5, clock=clock, log=False
    )
    seen = [breaker.stats().health]
    with pytest.raises(ConnectionError):
        breaker.call(play, ConnectionError())
    seen.append(breaker.stats().health)
    clock.advance(5)
    token = breaker.admit()  # the probe, held open
    seen.append(breaker.stats().health)
    breaker.release(token)
    breaker.force_open()
    seen.append(breaker.stats().health)
    breaker.disable()
    seen.append(breaker.stats().health)
    assert seen == [100, 0, 50, 0, 100]


def test_window_calls_and_failure_rate_only_with_a_rate() -> None:
    """Without a rate, successes are not windowed: `window_calls` and `failure_rate` are None."""
    plain = stalwart.CircuitBreaker("plain", failure_threshold=100, log=False)
    rated = stalwart.CircuitBreaker(
        "rated", failure_threshold=None, failure_rate=0.9, minimum_calls=100, log=False
    )
    counted = stalwart.CircuitBreaker(
        "counted", failure_rate=0.9, window=None, window_calls=3, log=False
    )
    for breaker in (plain, rated, counted):
        for outcome in ["ok", ConnectionError(), "ok", "ok"]:
            with (
                pytest.raises(ConnectionError) if isinstance(outcome, Exception) else nullcontext()
            ):
                breaker.call(play, outcome)
    assert (plain.stats().window_calls, plain.stats().failure_rate) == (None, None)
    assert plain.stats().window_failures == 1
    assert (rated.stats().window_calls, rated.stats().failure_rate) == (4, 0.25)
    # The count window holds the last three calls: failure, ok, ok.
    assert (counted.stats().window_calls, counted.stats().window_failures) == (3, 1)
    assert counted.stats().failure_rate == pytest.approx(1 / 3)
    empty = stalwart.CircuitBreaker("empty", failure_rate=0.5, log=False)
    assert (empty.stats().window_calls, empty.stats().failure_rate) == (0, None)


@pytest.mark.parametrize("mode", MODES)
def test_failure_rate_opens_once_minimum_calls_are_made(mode: str) -> None:
    """A failure rate trips only after `minimum_calls`, over a count window."""
    breaker = stalwart.CircuitBreaker(
        "rate", failure_threshold=None, failure_rate=0.5, minimum_calls=4, window=None, log=False
    )
    run = make_caller(mode, "decorator", breaker, Counter())
    for outcome in [ConnectionError(), ConnectionError(), "ok"]:
        with pytest.raises(ConnectionError) if isinstance(outcome, Exception) else nullcontext():
            run(outcome)
    assert state_of(breaker) is State.CLOSED  # 3 calls < minimum_calls
    with pytest.raises(ConnectionError):
        run(ConnectionError())
    assert state_of(breaker) is State.OPEN  # 3 failures / 4 calls >= 50%
    assert breaker.stats().failures == 3


def test_a_success_reaching_minimum_calls_judges_the_rate() -> None:
    """Once `minimum_calls` are made, a failure rate at or over the limit opens the breaker."""
    breaker = stalwart.CircuitBreaker(
        "rate", failure_threshold=None, failure_rate=0.5, minimum_calls=4, window=None, log=False
    )
    for _ in range(3):
        with pytest.raises(ConnectionError):
            breaker.call(play, ConnectionError())
    breaker.call(play, "ok")
    assert breaker.stats().failure_rate == 0.75
    assert state_of(breaker) is State.OPEN


def test_repr_names_breaker_and_state() -> None:
    """The repr shows the name and the state."""
    breaker = stalwart.CircuitBreaker("jira", log=False)
    assert repr(breaker) == "<CircuitBreaker 'jira' closed>"


# --- listeners and logging --------------------------------------------------------------


class Recorder:
    """Records every hook call as ``(hook, record)``."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_state_change(self, change: StateChange) -> None:
        self.events.append(("on_state_change", change))

    def on_success(self, event: BreakerEvent) -> None:
        self.events.append(("on_success", event))

    def on_failure(self, event: BreakerEvent) -> None:
        self.events.append(("on_failure", event))

    def on_rejected(self, event: BreakerEvent) -> None:
        self.events.append(("on_rejected", event))


@pytest.mark.parametrize("mode", MODES)
def test_listeners_receive_frozen_records_in_order(mode: str) -> None:
    """Each hook gets one frozen record, in the order the breaker's calls happened."""
    clock = ManualClock()
    recorder = Recorder()
    breaker = stalwart.CircuitBreaker(
        "l",
        failure_threshold=1,
        window=None,
        recovery_timeout=30,
        clock=clock,
        listeners=[recorder],
        log=False,
    )
    run = make_caller(mode, "decorator", breaker, Counter())
    run("ok")
    with pytest.raises(ConnectionError):
        run(ConnectionError("password=hunter2"))
    with pytest.raises(stalwart.CircuitOpenError):
        run("never")
    clock.advance(30)
    run("probe")
    breaker.force_open()
    breaker.reset()
    breaker.disable()
    assert recorder.events == [
        ("on_success", BreakerEvent("l", "closed", 0.0)),
        ("on_state_change", StateChange("l", "closed", "open", "1 consecutive failures", 1)),
        ("on_failure", BreakerEvent("l", "open", 0.0, "builtins.ConnectionError")),
        ("on_rejected", BreakerEvent("l", "open", retry_after=30.0)),
        ("on_state_change", StateChange("l", "open", "half_open", "recovery timeout elapsed", 2)),
        ("on_state_change", StateChange("l", "half_open", "closed", "probes succeeded", 3)),
        ("on_success", BreakerEvent("l", "closed", 0.0)),
        ("on_state_change", StateChange("l", "closed", "forced_open", "forced open", 4)),
        ("on_state_change", StateChange("l", "forced_open", "closed", "reset", 5)),
        ("on_state_change", StateChange("l", "closed", "disabled", "disabled", 6)),
    ]
    assert "hunter2" not in repr(recorder.events)
    for _, record in recorder.events:
        with pytest.raises(dataclasses.FrozenInstanceError):
            record.name = "other"


class Broken:
    """A listener whose every hook raises."""

    def on_state_change(self, change: StateChange) -> None:
        raise RuntimeError("listener bug")

    def on_success(self, event: BreakerEvent) -> None:
        raise RuntimeError("listener bug")

    def on_failure(self, event: BreakerEvent) -> None:
        raise RuntimeError("listener bug")

    def on_rejected(self, event: BreakerEvent) -> None:
        raise RuntimeError("listener bug")


@pytest.mark.parametrize("mode", MODES)
def test_a_raising_listener_is_logged_and_never_breaks_the_call(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Calls return, raise their own error, or are rejected exactly as without the listener."""
    breaker = stalwart.CircuitBreaker(
        "b", failure_threshold=1, window=None, listeners=[Broken()], log=False
    )
    run = make_caller(mode, "decorator", breaker, Counter())
    caplog.set_level(logging.ERROR, logger="stalwart")
    assert run("ok") == "ok"
    exc = ConnectionError()
    with pytest.raises(ConnectionError) as info:
        run(exc)
    assert info.value is exc
    with pytest.raises(stalwart.CircuitOpenError):
        run("never")
    logged = [r for r in caplog.records if r.name == "stalwart"]
    messages = " ".join(r.getMessage() for r in logged)
    for hook in ("on_success", "on_state_change", "on_failure", "on_rejected"):
        assert hook in messages
    assert len(logged) == 4
    assert all(r.exc_info is not None and r.exc_info[0] is RuntimeError for r in logged)


def test_default_logging_listener_logs_state_changes_with_extra(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """State changes are logged at WARNING on "stalwart.breaker" with structured fields."""
    caplog.set_level(logging.WARNING, logger="stalwart.breaker")
    breaker = stalwart.CircuitBreaker("db", failure_threshold=1, window=None)
    with pytest.raises(ConnectionError):
        breaker.call(play, ConnectionError("password=hunter2"))
    records = [r for r in caplog.records if r.name == "stalwart.breaker"]
    assert len(records) == 1
    record = records[0]
    assert record.levelno == logging.WARNING
    assert record.__dict__["stalwart_event"] == "state_change"
    assert record.__dict__["breaker"] == "db"
    assert record.__dict__["old_state"] == "closed"
    assert record.__dict__["state"] == "open"
    assert record.__dict__["reason"] == "1 consecutive failures"
    assert "db" in record.getMessage()
    assert "hunter2" not in record.getMessage()


def test_log_false_silences_the_logging_listener(caplog: pytest.LogCaptureFixture) -> None:
    """With `log=False` a state change writes nothing to the "stalwart" loggers."""
    caplog.set_level(logging.DEBUG, logger="stalwart")
    breaker = stalwart.CircuitBreaker("db", failure_threshold=1, window=None, log=False)
    with pytest.raises(ConnectionError):
        breaker.call(play, ConnectionError())
    breaker.reset()
    assert [r for r in caplog.records if r.name.startswith("stalwart")] == []


# --- slow calls -------------------------------------------------------------------------


SLOW: dict[str, Any] = {
    "slow_call_duration": 1.0,
    "slow_call_rate": 0.5,
    "minimum_calls": 4,
    "window": None,
    "failure_threshold": None,
}


def advance_then(clock: ManualClock) -> Callable[[float], str]:
    """A protected body that takes `seconds` on `clock` and then succeeds."""

    def body(seconds: float) -> str:
        clock.advance(seconds)
        return "done"

    return body


@pytest.mark.parametrize("installed", [True, False], ids=["installed", "passed-only"])
@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("mode", MODES)
def test_slow_successes_trip_the_breaker(mode: str, via: str, installed: bool) -> None:
    """Slow successes open the breaker at `slow_call_rate`, timed on the breaker's clock.

    The clock is passed as ``clock=`` and either also installed (``with clock:``) or
    not: every way into the breaker must measure durations on the breaker's clock.
    """
    clock = ManualClock()
    breaker = breaker_for(via, clock, **SLOW)
    run = make_caller(mode, via, breaker, advance_then(clock))
    with clock if installed else nullcontext():
        for seconds in (0.0, 2.0, 0.5):
            assert run(seconds) == "done"
        assert state_of(breaker) is State.CLOSED  # 3 calls < minimum_calls
        assert breaker.stats().slow_calls == 1
        assert run(1.0) == "done"  # exactly slow_call_duration counts as slow
    stats = breaker.stats()
    assert (stats.state, stats.slow_calls, stats.successes, stats.failures) == ("open", 2, 4, 0)


@pytest.mark.parametrize("mode", MODES)
def test_a_slow_probe_reopens_the_breaker(mode: str) -> None:
    """In half-open, a probe that succeeds slowly counts as a failed probe."""
    clock = ManualClock()
    breaker = stalwart.CircuitBreaker("slow", clock=clock, log=False, **SLOW)
    run = make_caller(mode, "decorator", breaker, advance_then(clock))
    for _ in range(4):
        run(5.0)
    assert state_of(breaker) is State.OPEN
    clock.advance(60)
    run(5.0)
    assert state_of(breaker) is State.OPEN
    clock.advance(60)
    run(0.1)
    assert state_of(breaker) is State.CLOSED


def test_slow_failures_count_as_slow_and_failed() -> None:
    """A failure that was also slow is counted in both `failures` and `slow_calls`."""
    clock = ManualClock()
    breaker = stalwart.CircuitBreaker("slow", clock=clock, log=False, **SLOW)

    def fail_slowly() -> None:
        clock.advance(3)
        raise ConnectionError

    with pytest.raises(ConnectionError):
        breaker.call(fail_slowly)
    stats = breaker.stats()
    assert (stats.failures, stats.slow_calls, stats.window_calls) == (1, 1, 1)


# --- validation -------------------------------------------------------------------------

_BAD_STORAGE, _BAD_LISTENER = object(), object()

# (options, exception type, parameter named in the message, value shown in the message)
INVALID: list[tuple[dict[str, Any], type[Exception], str, str]] = [
    ({"name": ""}, ValueError, "name", "''"),
    ({"name": None}, TypeError, "name", "None"),
    ({"registry": "jira"}, TypeError, "registry", "'jira'"),
    ({"failure_threshold": 0}, ValueError, "failure_threshold", "0"),
    ({"failure_threshold": True}, TypeError, "failure_threshold", "True"),
    ({"window": -1}, ValueError, "window", "-1"),
    ({"window": math.inf}, ValueError, "window", "inf"),
    ({"window": 5e-324}, ValueError, "window", "5e-324"),
    ({"window": timedelta(microseconds=10)}, ValueError, "window", "1e-05"),
    ({"failure_rate": 1.5}, ValueError, "failure_rate", "1.5"),
    ({"failure_rate": 0}, ValueError, "failure_rate", "0"),
    ({"failure_rate": math.nan}, ValueError, "failure_rate", "nan"),
    ({"minimum_calls": 0}, ValueError, "minimum_calls", "0"),
    ({"window_calls": 0}, ValueError, "window_calls", "0"),
    ({"window_calls": 5}, ValueError, "window_calls", "5"),  # no rate to measure
    (
        {"failure_rate": 0.5, "window_calls": 5, "minimum_calls": 6},
        ValueError,
        "minimum_calls=6 and window_calls",
        "window_calls=5",
    ),
    ({"recovery_timeout": math.nan}, ValueError, "recovery_timeout", "nan"),
    (
        {"recovery_timeout": timedelta(seconds=-1)},
        ValueError,
        "recovery_timeout",
        "timedelta(days=-1, seconds=86399)",
    ),
    ({"recovery_timeout": "30"}, TypeError, "recovery_timeout", "'30'"),
    ({"half_open_max_calls": 0}, ValueError, "half_open_max_calls", "0"),
    ({"half_open_max_calls": 1.5}, TypeError, "half_open_max_calls", "1.5"),
    ({"success_threshold": 0}, ValueError, "success_threshold", "0"),
    ({"slow_call_duration": 1.0}, ValueError, "slow_call_rate", "None"),
    ({"slow_call_rate": 0.5}, ValueError, "slow_call_duration", "None"),
    ({"slow_call_duration": 0, "slow_call_rate": 0.5}, ValueError, "slow_call_duration", "0"),
    ({"failure_threshold": None}, ValueError, "failure_threshold", "None"),
    ({"record": 3}, TypeError, "record", "3"),
    ({"record": ()}, TypeError, "record", "()"),
    ({"record": [ConnectionError]}, TypeError, "record", "[<class 'ConnectionError'>]"),
    ({"record": int}, TypeError, "record", "<class 'int'>"),
    ({"storage": _BAD_STORAGE}, TypeError, "storage", repr(_BAD_STORAGE)),
    ({"clock": 3}, TypeError, "clock", "3"),
    ({"listeners": [_BAD_LISTENER]}, TypeError, "listeners", repr(_BAD_LISTENER)),
    ({"listeners": 3}, TypeError, "listeners", "got 3"),
]


@pytest.mark.parametrize(
    ("options", "error", "parameter", "shown"),
    [pytest.param(*row, id="-".join(f"{k}={v!r}" for k, v in row[0].items())) for row in INVALID],
)
def test_invalid_options_raise_at_construction(
    options: dict[str, Any], error: type[Exception], parameter: str, shown: str
) -> None:
    """A bad option fails at construction, naming the parameter and the value."""
    options = dict(options)
    name = options.pop("name", "valid")
    with pytest.raises(error) as info:
        stalwart.CircuitBreaker(name, **options)
    message = str(info.value)
    assert parameter in message
    assert shown in message


def test_a_small_count_window_trips_without_minimum_calls() -> None:
    """window_calls=5 alone caps minimum_calls at 5: three failures in five calls open."""
    breaker = stalwart.CircuitBreaker(
        "small", failure_threshold=None, failure_rate=0.5, window=None, window_calls=5, log=False
    )
    assert breaker.config.minimum_calls == 5
    for outcome in [ConnectionError(), "ok", ConnectionError(), "ok", ConnectionError()]:
        with pytest.raises(ConnectionError) if isinstance(outcome, Exception) else nullcontext():
            breaker.call(play, outcome)
    assert state_of(breaker) is State.OPEN


class AsyncHooks:
    """A listener whose failure hook is a coroutine function: never awaited if accepted."""

    def on_success(self, event: BreakerEvent) -> None:
        """Ignore the event."""

    async def on_failure(self, event: BreakerEvent) -> None:
        """Would make a coroutine nobody awaits."""


def test_async_listener_hooks_are_refused() -> None:
    """An ``async def`` hook raises TypeError at construction, naming listener and hook."""
    listener = AsyncHooks()
    with pytest.raises(TypeError, match="on_failure of .*AsyncHooks.* is async") as info:
        stalwart.CircuitBreaker("async", listeners=[listener])
    assert str(info.value).startswith("listeners: ")


def test_forced_open_rejection_says_forced_open() -> None:
    """A breaker held open by an operator rejects with "forced open", and no wait."""
    breaker = stalwart.CircuitBreaker("held", log=False)
    breaker.force_open()
    with pytest.raises(stalwart.CircuitOpenError) as info:
        breaker.call(play, "never")
    assert str(info.value) == "circuit 'held' is forced open"
    assert info.value.retry_after is None


def test_time_options_accept_timedelta() -> None:
    """`window`, `recovery_timeout` and `slow_call_duration` take timedeltas as seconds."""
    breaker = stalwart.CircuitBreaker(
        "td",
        window=timedelta(minutes=2),
        recovery_timeout=timedelta(seconds=45),
        slow_call_duration=timedelta(milliseconds=250),
        slow_call_rate=0.5,
    )
    config = breaker.config
    assert (config.window, config.recovery_timeout, config.slow_call_duration) == (
        120.0,
        45.0,
        0.25,
    )
    assert json.dumps(breaker.stats().as_dict())


def test_defaults_follow_the_issue() -> None:
    """Defaults: 5 failures, 60 s window, 60 s recovery, 1 probe, 1 success to close."""
    config = stalwart.CircuitBreaker("defaults").config
    assert (
        config.failure_threshold,
        config.window,
        config.recovery_timeout,
        config.half_open_max_calls,
        config.success_threshold,
    ) == (5, 60.0, 60.0, 1, 1)


def test_custom_storage_is_bound_with_name_config_and_clock() -> None:
    """A storage is asked once for the breaker's state, with its name, config and clock."""
    bound: list[tuple[Any, ...]] = []

    class Spy:
        def bind(self, name: str, config: Any, clock: Any) -> Any:
            bound.append((name, config, clock))
            return MemoryStorage().bind(name, config, clock)

    clock = ManualClock()
    spy = Spy()
    assert isinstance(spy, Storage)
    breaker = stalwart.CircuitBreaker("s", storage=spy, clock=clock)
    assert bound == [("s", breaker.config, clock)]
    assert breaker.storage is spy


def test_memory_state_refuses_unknown_operations() -> None:
    """The memory state applies only the three operator operations."""
    breaker = stalwart.CircuitBreaker("s", log=False)
    with pytest.raises(ValueError, match="operation.*'explode'"):
        breaker.fast_state.change("explode")
    assert state_of(breaker) is State.CLOSED


def test_admit_and_record_failure_for_manual_integrations() -> None:
    """`admit()` / `record_failure()` / `release()` drive the breaker without a wrapper."""
    breaker = stalwart.CircuitBreaker("manual", failure_threshold=2, window=None, log=False)
    breaker.record_failure(breaker.admit())
    breaker.release(breaker.admit())
    assert breaker.stats().last_failure_type == "failure"
    breaker.record_failure(breaker.admit(), "http 503")
    stats = breaker.stats()
    assert (stats.state, stats.failures, stats.last_failure_type) == ("open", 2, "http 503")
    with pytest.raises(stalwart.CircuitOpenError):
        breaker.admit()


# --- decorated functions ------------------------------------------------------------------


@pytest.mark.parametrize("listened", [False, True], ids=["fast", "full"])
def test_decorated_functions_keep_name_doc_and_wrapped(listened: bool) -> None:
    """Sync and async decorated functions keep their metadata and their colour."""
    listeners = [NoopSuccessListener()] if listened else []
    breaker = stalwart.CircuitBreaker("w", listeners=listeners, log=False)

    def fetch(url: str) -> str:
        """Fetch a URL."""
        return url

    async def afetch(url: str) -> str:
        """Fetch a URL, asynchronously."""
        return url

    for fn in (fetch, afetch):
        wrapped = breaker(fn)
        assert wrapped.__name__ == fn.__name__
        assert wrapped.__doc__ == fn.__doc__
        assert wrapped.__wrapped__ is fn  # type: ignore[attr-defined]
        assert inspect.iscoroutinefunction(wrapped) == inspect.iscoroutinefunction(fn)


def test_generator_functions_are_refused() -> None:
    """Decorating a generator function fails at once: the breaker would only see creation."""
    breaker = stalwart.CircuitBreaker("g", log=False)

    def gen() -> Iterator[int]:
        yield 1

    async def agen() -> AsyncIterator[int]:
        yield 1

    for fn in (gen, agen):
        with pytest.raises(TypeError, match="generator function"):
            breaker(fn)


# --- cancellation -----------------------------------------------------------------------


def half_open(clock: ManualClock, **options: Any) -> stalwart.CircuitBreaker:
    """A breaker that is due to half-open: opened by one failure, recovery elapsed."""
    breaker = stalwart.CircuitBreaker(
        "probe",
        failure_threshold=1,
        window=None,
        recovery_timeout=10,
        clock=clock,
        log=False,
        **options,
    )
    with pytest.raises(ConnectionError):
        breaker.call(play, ConnectionError())
    clock.advance(10)
    return breaker


def outcome_counts(breaker: stalwart.CircuitBreaker) -> tuple[int, int, int]:
    """``(successes, failures, slow_calls)``: what a cancelled call must not change."""
    stats = breaker.stats()
    return stats.successes, stats.failures, stats.slow_calls


@pytest.mark.anyio
@pytest.mark.parametrize("via", VIAS)
async def test_cancelled_probe_releases_its_permit_uncounted(via: str) -> None:
    """A probe cancelled mid-call frees its permit and is neither success nor failure."""
    clock = ManualClock()
    listeners = [NoopSuccessListener()] if via == "decorator-listened" else []
    breaker = half_open(clock, listeners=listeners)
    inside = anyio.Event()

    async def hang() -> None:
        inside.set()
        await anyio.sleep_forever()

    if via.startswith("decorator"):
        call = breaker(hang)
    elif via == "call":

        async def call() -> None:
            await breaker.call_async(hang)

    else:

        async def call() -> None:
            async with breaker:
                await hang()

    before = outcome_counts(breaker)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await inside.wait()
            assert state_of(breaker) is State.HALF_OPEN
            with pytest.raises(stalwart.CircuitOpenError) as info:
                await breaker.call_async(anyio.lowlevel.checkpoint)
            assert info.value.retry_after == 0.0  # the permit is held, not the clock
            tg.cancel_scope.cancel()
    assert outcome_counts(breaker) == before
    assert state_of(breaker) is State.HALF_OPEN
    await breaker.call_async(anyio.lowlevel.checkpoint)  # admitted as the probe
    assert state_of(breaker) is State.CLOSED


@pytest.mark.anyio
async def test_cancelled_call_while_closed_is_not_counted() -> None:
    """Cancelling a call in a closed breaker records nothing."""
    breaker = stalwart.CircuitBreaker("c", failure_threshold=1, window=None, log=False)
    inside = anyio.Event()

    @breaker
    async def hang() -> None:
        inside.set()
        await anyio.sleep_forever()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(hang)
            await inside.wait()
            tg.cancel_scope.cancel()
    assert outcome_counts(breaker) == (0, 0, 0)
    assert state_of(breaker) is State.CLOSED


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit, GeneratorExit])
@pytest.mark.parametrize("via", VIAS)
def test_interrupted_sync_probe_releases_its_permit_uncounted(
    via: str, exc_type: type[BaseException]
) -> None:
    """A probe ended by KeyboardInterrupt (or exit) frees its permit and counts nothing."""
    clock = ManualClock()
    listeners = [NoopSuccessListener()] if via == "decorator-listened" else []
    breaker = half_open(clock, listeners=listeners)
    run = make_caller("sync", via, breaker, play)
    before = outcome_counts(breaker)
    exc = exc_type()
    with pytest.raises(exc_type) as info:
        run(exc)
    assert info.value is exc
    assert outcome_counts(breaker) == before
    assert state_of(breaker) is State.HALF_OPEN
    assert run("probe") == "probe"  # the permit was given back
    assert state_of(breaker) is State.CLOSED


# --- generations ------------------------------------------------------------------------


def test_late_failure_from_an_old_generation_cannot_reopen() -> None:
    """A call admitted while closed that fails after the breaker half-opened is counted only."""
    clock = ManualClock()
    breaker = stalwart.CircuitBreaker(
        "gen",
        failure_threshold=1,
        window=None,
        recovery_timeout=10,
        success_threshold=2,
        clock=clock,
        log=False,
    )
    inside, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    @breaker
    def slow_failure() -> None:
        inside.set()
        assert release.wait(10)
        raise ConnectionError

    def worker() -> None:
        try:
            slow_failure()
        except BaseException as exc:  # collected for the main thread
            errors.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert inside.wait(10)
        with pytest.raises(ConnectionError):
            breaker.call(play, ConnectionError())
        assert state_of(breaker) is State.OPEN
        clock.advance(10)
        assert breaker.call(play, "probe 1") == "probe 1"
        assert state_of(breaker) is State.HALF_OPEN
    finally:
        release.set()
        thread.join(10)
    assert not thread.is_alive()
    assert [type(e) for e in errors] == [ConnectionError]
    stats = breaker.stats()
    assert (stats.state, stats.failures, stats.successes) == ("half_open", 2, 1)
    assert breaker.call(play, "probe 2") == "probe 2"  # half-open progress was kept
    assert state_of(breaker) is State.CLOSED


@pytest.mark.anyio
async def test_late_async_failure_from_an_old_generation_cannot_reopen() -> None:
    """The generation rule holds for async calls: a late failure is counted, not acted on."""
    clock = ManualClock()
    breaker = stalwart.CircuitBreaker(
        "gen",
        failure_threshold=1,
        window=None,
        recovery_timeout=10,
        success_threshold=2,
        clock=clock,
        log=False,
    )
    inside, release, done = anyio.Event(), anyio.Event(), anyio.Event()

    @breaker
    async def slow_failure() -> None:
        inside.set()
        await release.wait()
        raise ConnectionError

    async def worker() -> None:
        with pytest.raises(ConnectionError):
            await slow_failure()
        done.set()

    async def ok() -> str:
        await anyio.lowlevel.checkpoint()
        return "ok"

    async def fail() -> None:
        await anyio.lowlevel.checkpoint()
        raise ConnectionError

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker)
            await inside.wait()
            with pytest.raises(ConnectionError):
                await breaker.call_async(fail)
            assert state_of(breaker) is State.OPEN
            clock.advance(10)
            assert await breaker.call_async(ok) == "ok"
            assert state_of(breaker) is State.HALF_OPEN
            release.set()
            await done.wait()
    stats = breaker.stats()
    assert (stats.state, stats.failures, stats.successes) == ("half_open", 2, 1)
    assert await breaker.call_async(ok) == "ok"
    assert state_of(breaker) is State.CLOSED


@pytest.mark.anyio
async def test_async_operator_twins_and_stats() -> None:
    """reset/force_open/disable/stats have async twins that act like the sync ones."""
    breaker = stalwart.CircuitBreaker("twins", log=False)
    await breaker.force_open_async()
    assert (await breaker.stats_async()).state == "forced_open"
    with pytest.raises(stalwart.CircuitOpenError):
        await breaker.admit_async()
    await breaker.disable_async()
    assert breaker.state is State.DISABLED
    await breaker.reset_async()
    token = await breaker.admit_async()
    await breaker.record_failure_async(token, "http 503")
    await breaker.release_async(await breaker.admit_async())
    stats = await breaker.stats_async()
    assert (stats.state, stats.failures, stats.last_failure_type) == ("closed", 1, "http 503")


def test_exit_without_enter_is_an_error() -> None:
    """Leaving a breaker block that was never entered here is reported, not ignored."""
    breaker = stalwart.CircuitBreaker("unpaired", log=False)
    with pytest.raises(RuntimeError, match="exit without a matching enter"):
        breaker.__exit__(None, None, None)


# --- memory -----------------------------------------------------------------------------


SOURCE = str(Path(stalwart.__file__).parent)


def _stalwart_memory(snapshot: tracemalloc.Snapshot) -> int:
    """Bytes still allocated from stalwart's own source files."""
    where = [tracemalloc.Filter(inclusive=True, filename_pattern=f"{SOURCE}{os.sep}*")]
    return sum(stat.size for stat in snapshot.filter_traces(where).statistics("filename"))


def test_memory_does_not_grow_with_calls() -> None:
    """1,000,000 outcomes through one breaker leave its memory as it was after 100,000.

    Both windows are on (a time window rolling over its buckets, and a count window for
    the rates), calls are timed, and outcomes arrive through the decorator, `call`,
    ``with`` and the token protocol (`admit`, `record_failure`).
    """
    clock = ManualClock(1_000.0)
    breaker = stalwart.CircuitBreaker(
        "memory",
        failure_threshold=10**9,
        window=60.0,
        failure_rate=1.0,
        window_calls=100,
        slow_call_duration=1.0,
        slow_call_rate=1.0,
        clock=clock,
        log=False,
    )
    succeed = breaker(lambda: None)
    admit, record_failure, advance = breaker.admit, breaker.record_failure, clock.advance

    def run(calls: int) -> None:
        for _ in range(calls // 8):  # 8 outcomes a round: 2 failures, 6 successes
            record_failure(admit(), "Timeout", 2.0)  # a slow failure, raising nothing
            record_failure(admit(), "Timeout", 2.0)
            with breaker:
                pass
            breaker.call(int)
            succeed()
            succeed()
            succeed()
            succeed()
            advance(0.008)  # 60,000 calls per window, a new bucket every 3,000

    tracer = sys.gettrace()  # coverage, under `make test`: pause it, the loop is 7x slower
    sys.settrace(None)
    tracemalloc.start()
    try:
        run(100_000)  # every lazy allocation made, every window full
        before = _stalwart_memory(tracemalloc.take_snapshot())
        run(900_000)  # fifteen more lengths of the time window: 1,000,000 outcomes in all
        after = _stalwart_memory(tracemalloc.take_snapshot())
    finally:
        tracemalloc.stop()
        sys.settrace(tracer)
    stats = breaker.stats()
    assert (stats.calls, stats.failures, stats.state) == (1_000_000, 250_000, "closed")
    # Live objects are replaced, never added: a leak of one byte a call would show 900 KB.
    assert after - before < 10_000, f"{after - before} bytes more after 900,000 more calls"
