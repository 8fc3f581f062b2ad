"""Bulkhead refusals reach the subscribers (`on_bulkhead_full`); admissions never do."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stalwart
from named_support import wait_until
from stalwart.bulkhead import QUEUE_FULL, TIMED_OUT
from stalwart.events import SUBSCRIBER_HOOKS, BulkheadEvent, Subscriber, subscribe

if TYPE_CHECKING:
    from collections.abc import Iterator


class Refusals:
    """A subscriber keeping every bulkhead refusal it hears."""

    def __init__(self) -> None:
        self.heard: list[BulkheadEvent] = []

    def on_bulkhead_full(self, event: BulkheadEvent) -> None:
        self.heard.append(event)


@pytest.fixture
def refusals() -> Iterator[Refusals]:
    """A subscribed `Refusals`, unsubscribed after the test."""
    heard = Refusals()
    unsubscribe = subscribe(heard)
    yield heard
    unsubscribe()


def test_the_hook_is_a_subscriber_hook() -> None:
    """``on_bulkhead_full`` is among the hooks `subscribe` accepts and `Subscriber` names."""
    assert "on_bulkhead_full" in SUBSCRIBER_HOOKS
    assert hasattr(Subscriber, "on_bulkhead_full")
    subscribe(Refusals())()  # a subscriber with only this hook is accepted


def test_a_full_queue_is_reported_with_what_was_in_use(refusals: Refusals) -> None:
    """A call refused because every slot and queue place is taken is reported once."""
    pool = stalwart.Bulkhead("events-full", max_concurrent=2, max_queued=0)
    pool.acquire()
    pool.acquire()
    try:
        with stalwart.correlation_id("req-7"), pytest.raises(stalwart.BulkheadFull) as caught:
            pool.acquire()
    finally:
        pool.release()
        pool.release()
    assert refusals.heard == [BulkheadEvent("events-full", QUEUE_FULL, 2, 0, "req-7")]
    assert caught.value.reason == refusals.heard[0].reason


def test_a_wait_that_times_out_is_reported(refusals: Refusals) -> None:
    """A call whose wait ends without a slot is reported as timed out, not queued."""
    pool = stalwart.Bulkhead("events-wait", max_concurrent=1, max_queued=1, queue_timeout=0.01)
    pool.acquire()
    try:
        with pytest.raises(stalwart.BulkheadFull, match="timed out"):
            pool.acquire()  # waits its queue_timeout: the slot stays held
        with stalwart.deadline(0), pytest.raises(stalwart.BulkheadFull, match="timed out"):
            pool.acquire()  # the deadline has passed: refused without waiting
    finally:
        pool.release()
    assert refusals.heard == [
        BulkheadEvent("events-wait", TIMED_OUT, 1, 0),
        BulkheadEvent("events-wait", TIMED_OUT, 1, 0),
    ]


def test_async_refusals_are_reported(refusals: Refusals) -> None:
    """acquire_async reports a full queue and a timed-out wait as acquire does."""
    pool = stalwart.Bulkhead("events-async", max_concurrent=1, max_queued=0)
    waiting = stalwart.Bulkhead(
        "events-async-wait", max_concurrent=1, max_queued=1, queue_timeout=0.01
    )

    async def main() -> None:
        async with pool, waiting:
            with pytest.raises(stalwart.BulkheadFull, match="queue full"):
                await pool.acquire_async()
            with pytest.raises(stalwart.BulkheadFull, match="timed out"):
                await waiting.acquire_async()

    anyio.run(main)
    assert [(e.name, e.reason) for e in refusals.heard] == [
        ("events-async", QUEUE_FULL),
        ("events-async-wait", TIMED_OUT),
    ]


def test_admissions_build_nothing(refusals: Refusals, monkeypatch: pytest.MonkeyPatch) -> None:
    """Calls let in, at once or after waiting in the queue, report nothing and build no
    event."""
    built: list[object] = []
    real = BulkheadEvent.__init__

    def counted(self: BulkheadEvent, *args: object, **kwargs: object) -> None:
        built.append(args)
        real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(BulkheadEvent, "__init__", counted)
    pool = stalwart.Bulkhead("events-ok", max_concurrent=1, max_queued=1)
    for _ in range(3):
        with pool:
            pass
    pool.acquire()
    waiter = threading.Thread(target=lambda: (pool.acquire(), pool.release()))
    waiter.start()
    wait_until(lambda: pool.queued == 1)
    pool.release()
    waiter.join(10)
    assert pool.stats().waited == 1
    assert refusals.heard == []
    assert built == []


def test_no_subscriber_no_event(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an ``on_bulkhead_full`` subscriber, a refusal builds no event."""
    built: list[object] = []
    monkeypatch.setattr(
        BulkheadEvent, "__init__", lambda self, *args: built.append(args)
    )  # would fail the call if built
    pool = stalwart.Bulkhead("events-none", max_concurrent=1, max_queued=0)
    with pool, pytest.raises(stalwart.BulkheadFull):
        pool.acquire()
    assert built == []


def test_a_subscriber_may_read_the_bulkhead_and_may_fail(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The hook runs with the bulkhead's lock released (it may read the stats), and one
    that raises is logged: the call still gets its BulkheadFull."""
    pool = stalwart.Bulkhead("events-reader", max_concurrent=1, max_queued=0)
    seen: list[int] = []

    class Reader:
        def on_bulkhead_full(self, event: BulkheadEvent) -> None:
            seen.append(pool.stats().rejected)
            raise RuntimeError("subscriber bug")

    unsubscribe = subscribe(Reader())
    try:
        with pool, pytest.raises(stalwart.BulkheadFull):
            pool.acquire()
    finally:
        unsubscribe()
    assert seen == [1]
    assert "subscriber bug" in caplog.text


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(0, 2),
    st.lists(st.sampled_from(["acquire", "release", "late"]), max_size=30),
)
def test_every_refusal_is_reported_once_by_reason(
    slots: int, queue: int, steps: list[str]
) -> None:
    """Whatever the calls, the events heard are the refusals counted, reason by reason,
    and each says how many slots were in use then.

    One thread: a call that would wait runs under a passed deadline (``late``, and
    every call when the queue has room), so it is refused as timed out at once.
    """
    pool = stalwart.Bulkhead("events-prop", max_concurrent=slots, max_queued=queue)
    heard = Refusals()
    unsubscribe = subscribe(heard)
    held = 0
    try:
        for step in steps:
            if step == "release":
                if held:
                    pool.release()
                    held -= 1
                continue
            try:
                if step == "late" or queue:
                    with stalwart.deadline(0):
                        pool.acquire()
                else:
                    pool.acquire()
                held += 1
            except stalwart.BulkheadFull:
                pass
    finally:
        unsubscribe()
        for _ in range(held):
            pool.release()
    stats = pool.stats()
    reasons = [e.reason for e in heard.heard]
    assert reasons.count(QUEUE_FULL) == stats.rejected_queue_full
    assert reasons.count(TIMED_OUT) == stats.rejected_timed_out
    assert set(reasons) <= ({TIMED_OUT} if queue else {QUEUE_FULL})
    assert all(e.in_use == slots and e.queued == 0 for e in heard.heard)
