"""Tests for deadlines (`stalwart._deadline`) and how timeouts honour them."""

from __future__ import annotations

import contextlib
import math
import threading
import time
from datetime import timedelta

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocking import BLOCK_FOR, block, run_in_thread
from stalwart import _clock
from stalwart._deadline import Deadline, deadline, deadline_at, remaining
from stalwart.errors import TimeoutExceeded
from stalwart.testing import ManualClock
from stalwart.timeout import timeout

# Reading the budget


def test_no_deadline():
    """Without a deadline, remaining() and deadline_at() are None."""
    assert remaining() is None
    assert deadline_at() is None


def test_remaining_within_budget():
    """Inside deadline(10), remaining() is between 0 and 10 (real clock)."""
    with deadline(10) as d:
        left = remaining()
        assert left is not None
        assert 0 < left <= 10
        assert d.remaining is not None
        assert 0 < d.remaining <= 10
    assert remaining() is None


def test_remaining_follows_the_clock(fake_time):
    """remaining() counts down with the stalwart clock and never goes below zero."""
    with deadline(5):
        assert remaining() == 5
        assert deadline_at() == fake_time() + 5
        fake_time.advance(2)
        assert remaining() == 3
        fake_time.advance(10)
        assert remaining() == 0.0


def test_nested_deadlines_take_earlier_end(fake_time):
    """An inner deadline never extends an outer one; a shorter inner one applies inside."""
    with deadline(5):
        with deadline(10):
            assert remaining() == 5
        with deadline(2):
            assert remaining() == 2
            fake_time.advance(1)
            assert remaining() == 1
        assert remaining() == 4
    assert remaining() is None


@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=6))
def test_nested_deadlines_invariant(budgets):
    """With deadlines nested in any order, remaining() is the smallest budget so far."""
    with ManualClock(0.0), contextlib.ExitStack() as stack:
        for depth, budget in enumerate(budgets, start=1):
            stack.enter_context(deadline(budget))
            assert remaining() == min(budgets[:depth])
    assert remaining() is None


def test_deadline_resets_after_exception(fake_time):
    """Leaving a deadline by an exception restores the budget that was in force before."""
    with deadline(5):
        with pytest.raises(ValueError, match="boom"), deadline(1):
            raise ValueError("boom")
        assert remaining() == 5
    assert remaining() is None


@pytest.mark.anyio
async def test_async_deadline_resets_after_exception(fake_time):
    """`async with deadline` sets the budget and restores it, even on an exception."""
    with pytest.raises(ValueError, match="boom"):
        async with deadline(5) as d:
            assert isinstance(d, Deadline)
            assert remaining() == 5
            raise ValueError("boom")
    assert remaining() is None


def test_deadline_decorator_sync(fake_time):
    """A decorated sync function gets a fresh budget on every call, inside any outer one."""

    @deadline(5)
    def spend(seconds):
        left = remaining()
        fake_time.advance(seconds)
        return left

    assert spend(3) == 5
    assert spend(3) == 5  # a fresh budget, not what the first call left
    with deadline(2):
        assert spend(1) == 2
    assert remaining() is None
    assert spend.__name__ == "spend"


@pytest.mark.anyio
async def test_deadline_decorator_async(fake_time):
    """A decorated async function gets a fresh budget on every call."""

    @deadline(timedelta(seconds=5))
    async def spend(seconds):
        left = remaining()
        await _clock.async_sleep(seconds)
        return left

    assert await spend(3) == 5
    assert await spend(3) == 5
    assert remaining() is None


@pytest.mark.anyio
async def test_deadline_crosses_into_child_task(fake_time):
    """Tasks started inside a deadline see its budget."""
    seen = []

    async def child():
        seen.append(remaining())

    async with deadline(10), anyio.create_task_group() as tg:
        tg.start_soon(child)
    assert seen == [10.0]


@pytest.mark.anyio
async def test_deadline_limits_timeout_in_child_task():
    """A timeout without seconds in a child task stops at its parent's deadline."""
    outcome = []

    async def child():
        try:
            async with timeout(None):
                await anyio.sleep(BLOCK_FOR)
        except TimeoutExceeded as exc:
            outcome.append(exc)

    start = time.monotonic()
    async with deadline(0.05), anyio.create_task_group() as tg:
        tg.start_soon(child)
    assert time.monotonic() - start < BLOCK_FOR / 2
    assert len(outcome) == 1
    assert 0 < outcome[0].seconds <= 0.05


@pytest.mark.anyio
async def test_shared_deadline_across_tasks():
    """One Deadline entered by concurrent tasks exits cleanly in each, in any order."""
    shared = deadline(5)
    first_in, second_in, first_out = anyio.Event(), anyio.Event(), anyio.Event()

    async def first():
        async with shared:
            first_in.set()
            await second_in.wait()
        first_out.set()
        assert remaining() is None

    async def second():
        await first_in.wait()
        async with shared:
            second_in.set()
            await first_out.wait()
            assert remaining() is not None
        assert remaining() is None

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        tg.start_soon(second)


def test_shared_deadline_across_threads():
    """One Deadline entered by several threads exits cleanly in each, in any order."""
    shared = deadline(5)
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()

    def first():
        with shared:
            first_in.set()
            assert second_in.wait(BLOCK_FOR)
        first_out.set()
        return remaining()

    def second():
        assert first_in.wait(BLOCK_FOR)
        with shared:
            second_in.set()
            assert first_out.wait(BLOCK_FOR)
        return remaining()

    results = []
    threads = [threading.Thread(target=lambda f=f: results.append(f())) for f in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BLOCK_FOR)
    assert results == [None, None]


def test_deadline_repr_and_module():
    """A Deadline shows its budget and presents itself as stalwart's."""
    assert repr(deadline(1.5)) == "stalwart.deadline(1.5)"
    assert deadline(timedelta(minutes=1)).seconds == 60.0
    assert Deadline.__module__ == "stalwart"


def test_zero_deadline_has_already_passed(fake_time):
    """deadline(0) is allowed and leaves nothing."""
    with deadline(0):
        assert remaining() == 0.0


# Validation


@pytest.mark.parametrize("seconds", [-1, -0.001, math.nan, math.inf, -math.inf, timedelta(-1)])
def test_bad_deadline_value(seconds):
    """Negative, NaN and infinite budgets raise ValueError naming seconds and the value."""
    with pytest.raises(ValueError, match="seconds") as info:
        deadline(seconds)
    assert repr(seconds) in str(info.value)


@pytest.mark.parametrize("seconds", ["5", None, True, object()])
def test_bad_deadline_type(seconds):
    """Budgets that are not numbers or timedeltas raise TypeError naming seconds and value."""
    with pytest.raises(TypeError, match="seconds") as info:
        deadline(seconds)
    assert repr(seconds) in str(info.value)


# Timeouts inside deadlines


def test_timeout_none_stops_at_deadline():
    """timeout(None) inside deadline(0.05) raises TimeoutExceeded when the deadline passes."""
    start = time.monotonic()
    with deadline(0.05), pytest.raises(TimeoutExceeded) as info, timeout(None):
        block()
    assert time.monotonic() - start < BLOCK_FOR / 2
    assert 0 < info.value.seconds <= 0.05
    assert "deadline" in str(info.value)


@pytest.mark.parametrize("shape", ["decorator", "with"])
def test_deadline_shortens_longer_timeout(shape):
    """A timeout longer than what is left of the deadline stops at the deadline."""
    with deadline(0.05), pytest.raises(TimeoutExceeded) as info:
        if shape == "decorator":
            timeout(10)(block)()
        else:
            with timeout(10):
                block()
    assert 0 < info.value.seconds <= 0.05
    assert "deadline" in str(info.value)


def test_deadline_message_is_rounded_and_says_when_it_was_measured():
    """A deadline's timeout says, in milliseconds, what was left when the call started."""
    with ManualClock() as clock, deadline(1):
        clock.advance(0.950005)  # 0.049995 s left: the timer fires on the real clock
        with pytest.raises(TimeoutExceeded) as info, timeout(10):
            block()
    assert str(info.value) == (
        "call did not finish before its deadline (0.05s were left when it started)"
    )
    assert info.value.seconds == pytest.approx(0.049995)


def test_shorter_timeout_within_deadline():
    """A timeout shorter than what is left of the deadline keeps its own seconds."""
    with deadline(10), pytest.raises(TimeoutExceeded) as info, timeout(0.05):
        block()
    assert info.value.seconds == 0.05
    assert str(info.value) == "call did not finish within 0.05s"


def test_worker_fallback_honours_deadline():
    """Off the main thread, the worker fallback stops waiting at the caller's deadline."""
    release = threading.Event()

    def slow():
        release.wait(BLOCK_FOR)

    def caller():
        with deadline(0.05):
            return timeout(None)(slow)()

    try:
        with pytest.raises(TimeoutExceeded) as info:
            run_in_thread(caller)
    finally:
        release.set()
    assert 0 < info.value.seconds <= 0.05


@pytest.mark.anyio
@pytest.mark.parametrize("shape", ["decorator", "async-with"])
async def test_async_deadline_shortens_timeout(shape):
    """An async timeout stops at the deadline when that comes first."""

    async def slow():
        await anyio.sleep(BLOCK_FOR)

    with pytest.raises(TimeoutExceeded) as info:
        async with deadline(0.05):
            if shape == "decorator":
                await timeout(10)(slow)()
            else:
                async with timeout(10):
                    await slow()
    assert 0 < info.value.seconds <= 0.05


@pytest.mark.parametrize("shape", ["decorator", "with"])
@pytest.mark.parametrize("where", ["main", "thread"])
def test_expired_deadline_runs_nothing(fake_time, shape, where):
    """Inside an expired deadline, a sync timeout raises at once without running the body."""
    ran = []

    def body():
        ran.append(True)

    def call():
        # A new thread starts with an empty context: the deadline is entered here.
        with deadline(1):
            fake_time.advance(2)
            if shape == "decorator":
                timeout(10)(body)()
            else:
                with timeout(10):
                    body()

    with pytest.raises(TimeoutExceeded) as info:
        call() if where == "main" else run_in_thread(call)
    assert ran == []
    assert info.value.seconds == 0.0
    assert "deadline" in str(info.value)


@pytest.mark.anyio
@pytest.mark.parametrize("shape", ["decorator", "async-with"])
async def test_async_expired_deadline_runs_nothing(fake_time, shape):
    """Inside an expired deadline, an async timeout raises at once without running the body."""
    ran = []

    async def body():
        ran.append(True)

    async with deadline(1):
        fake_time.advance(2)
        with pytest.raises(TimeoutExceeded) as info:
            if shape == "decorator":
                await timeout(10)(body)()
            else:
                async with timeout(10):
                    await body()
    assert ran == []
    assert info.value.seconds == 0.0
