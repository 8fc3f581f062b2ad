"""Bulkhead invariants under concurrency: never more than the limit, FIFO, no slot leaked.

Threads and tasks arrive one by one (each settles, holding a slot, queued or refused,
before the next comes), so who gets in is known; then some are cancelled and the
rest run, some raising. Whatever happens, every slot comes back.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stalwart import BulkheadFull
from stalwart.bulkhead import Bulkhead, _ThreadWaiter

OUTCOMES = st.sampled_from(["return", "raise", "cancel"])


class Boom(Exception):
    """What a body raises."""


@dataclass
class Tally:
    """What the bodies saw: how many ran at once, and in which order they entered."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    running: int = 0
    most: int = 0
    entered: list[int] = field(default_factory=list)

    def enter(self, i: int) -> None:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.entered.append(i)

    def leave(self) -> None:
        with self.lock:
            self.running -= 1


def settled(limit: Bulkhead, arrived: int) -> bool:
    """Whether `arrived` callers each hold a slot, wait, or were refused."""
    stats = limit.stats()
    return stats.in_use + stats.queued + stats.rejected + stats.cancelled >= arrived


def check_invariants(limit: Bulkhead, tally: Tally, calls: int) -> None:
    stats = limit.stats()
    assert (stats.in_use, stats.queued) == (0, 0), "a slot or a queue place leaked"
    assert stats.admitted + stats.rejected + stats.cancelled == calls
    assert tally.running == 0
    assert tally.most <= limit.max_concurrent
    assert stats.peak_in_use <= limit.max_concurrent
    assert stats.peak_queued <= limit.max_queued


@settings(max_examples=40)
@given(
    max_concurrent=st.integers(1, 3),
    max_queued=st.integers(0, 3),
    outcomes=st.lists(st.sampled_from(["return", "raise"]), min_size=1, max_size=8),
)
def test_threads_never_exceed_the_limit_nor_leak(
    max_concurrent: int, max_queued: int, outcomes: list[str]
) -> None:
    """Threads: at most max_concurrent run, waiters enter in order, every slot returns."""
    limit = Bulkhead("db", max_concurrent=max_concurrent, max_queued=max_queued)
    tally = Tally()
    go = threading.Event()
    refused: list[int] = []

    def call(i: int, outcome: str) -> None:
        try:
            with limit:
                tally.enter(i)
                try:
                    go.wait(10)
                    if outcome == "raise":
                        raise Boom
                finally:
                    tally.leave()
        except BulkheadFull:
            refused.append(i)
        except Boom:
            pass

    threads = []
    for i, outcome in enumerate(outcomes):
        thread = threading.Thread(target=call, args=(i, outcome))
        thread.start()
        threads.append(thread)
        give_up = time.monotonic() + 10
        while not settled(limit, i + 1):
            assert time.monotonic() < give_up
            time.sleep(0.0005)
    admitted_at_once = min(len(outcomes), max_concurrent)
    queued = min(len(outcomes) - admitted_at_once, max_queued)
    assert limit.stats().queued == queued
    assert sorted(refused) == list(range(admitted_at_once + queued, len(outcomes)))
    go.set()
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()
    check_invariants(limit, tally, len(outcomes))
    # Slots are handed on in FIFO order; threads woken together may run in any order,
    # so the order they enter is FIFO with one slot.
    entered = tally.entered if max_concurrent == 1 else sorted(tally.entered)
    assert entered == list(range(admitted_at_once + queued))


def test_an_interrupted_waiting_thread_leaves_the_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception raised while a thread waits (KeyboardInterrupt, say) frees its place."""
    limit = Bulkhead("db", max_concurrent=1, max_queued=1)
    limit.acquire()

    class Interrupted(BaseException):
        pass

    original = _ThreadWaiter.__init__

    def interrupted_lock(self: _ThreadWaiter) -> None:
        original(self)

        class Lock:
            def acquire(self, timeout: float = -1) -> bool:
                raise Interrupted

        self.lock = Lock()  # type: ignore[assignment]

    monkeypatch.setattr(_ThreadWaiter, "__init__", interrupted_lock)
    with pytest.raises(Interrupted):
        limit.acquire()
    stats = limit.stats()
    assert (stats.in_use, stats.queued, stats.cancelled) == (1, 0, 1)
    limit.release()
    assert limit.in_use == 0


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=40)
@given(
    max_concurrent=st.integers(1, 3),
    max_queued=st.integers(0, 3),
    outcomes=st.lists(OUTCOMES, min_size=1, max_size=8),
)
def test_tasks_never_exceed_the_limit_nor_leak(
    backend: str, max_concurrent: int, max_queued: int, outcomes: list[str]
) -> None:
    """Tasks: cancelled ones (queued or running) and failing ones give every slot back.

    Waiters that are not cancelled enter in the order they arrived.
    """
    limit = Bulkhead("db", max_concurrent=max_concurrent, max_queued=max_queued)
    tally = Tally()
    refused: list[int] = []

    async def main() -> None:
        go = anyio.Event()
        scopes: list[anyio.CancelScope] = []

        async def call(i: int, outcome: str, scope: anyio.CancelScope) -> None:
            with scope:
                try:
                    async with limit:
                        tally.enter(i)
                        try:
                            await go.wait()
                            if outcome == "raise":
                                raise Boom
                        finally:
                            tally.leave()
                except BulkheadFull:
                    refused.append(i)
                except Boom:
                    pass

        async with anyio.create_task_group() as tasks:
            for i, outcome in enumerate(outcomes):
                scope = anyio.CancelScope()
                scopes.append(scope)
                tasks.start_soon(call, i, outcome, scope)
                for _ in range(1000):
                    if settled(limit, i + 1):
                        break
                    await anyio.lowlevel.checkpoint()
                assert settled(limit, i + 1)
            for scope, outcome in zip(scopes, outcomes, strict=True):
                if outcome == "cancel":
                    scope.cancel()
            go.set()

    anyio.run(main, backend=backend)
    check_invariants(limit, tally, len(outcomes))
    admitted_at_once = min(len(outcomes), max_concurrent)
    queued = min(len(outcomes) - admitted_at_once, max_queued)
    assert sorted(refused) == list(range(admitted_at_once + queued, len(outcomes)))
    waiters = range(admitted_at_once, admitted_at_once + queued)
    kept = [i for i in waiters if outcomes[i] != "cancel"]
    later = [i for i in tally.entered if i >= admitted_at_once]
    # Slots are handed on in FIFO order; tasks woken together may run in any order
    # (trio shuffles them), so the order they enter is FIFO with one slot.
    assert later == kept if max_concurrent == 1 else sorted(later) == kept
    assert limit.stats().cancelled == queued - len(kept)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=20)
@given(
    max_concurrent=st.integers(1, 3),
    max_queued=st.integers(0, 6),
    threads=st.integers(1, 3),
    tasks=st.integers(1, 4),
    rounds=st.integers(1, 3),
    cancel_after=st.lists(st.none() | st.integers(0, 3), min_size=4, max_size=4),
)
def test_threads_and_tasks_share_one_bulkhead(
    backend: str,
    max_concurrent: int,
    max_queued: int,
    threads: int,
    tasks: int,
    rounds: int,
    cancel_after: list[int | None],
) -> None:
    """Threads and tasks contending at once: the limit holds, and every slot returns.

    Some tasks are cancelled after a few checkpoints, wherever they are (queued,
    running, between calls); threads hand slots to tasks and back.
    """
    limit = Bulkhead("db", max_concurrent=max_concurrent, max_queued=max_queued)
    tally = Tally()
    calls = threads * rounds + tasks * rounds
    outcomes: list[str] = []

    def thread_calls() -> None:
        for _ in range(rounds):
            try:
                with limit:
                    tally.enter(-1)
                    time.sleep(0)
                    tally.leave()
                outcomes.append("done")
            except BulkheadFull:
                outcomes.append("refused")

    async def task_calls(cancel: int | None) -> None:
        with anyio.CancelScope() as scope:
            for _ in range(rounds):
                try:
                    async with limit:
                        tally.enter(-1)
                        try:
                            await anyio.lowlevel.checkpoint()
                        finally:
                            tally.leave()
                    outcomes.append("done")
                except BulkheadFull:
                    outcomes.append("refused")
                if cancel is not None and cancel <= 0:
                    scope.cancel()
                cancel = None if cancel is None else cancel - 1

    async def main() -> None:
        workers = [threading.Thread(target=thread_calls) for _ in range(threads)]
        async with anyio.create_task_group() as group:
            for worker in workers:
                worker.start()
            for i in range(tasks):
                group.start_soon(task_calls, cancel_after[i])
        for worker in workers:
            await anyio.to_thread.run_sync(worker.join, 10)
            assert not worker.is_alive()

    anyio.run(main, backend=backend)
    stats = limit.stats()
    assert (stats.in_use, stats.queued) == (0, 0), "a slot or a queue place leaked"
    assert tally.running == 0
    assert tally.most <= max_concurrent
    # A task cancelled inside its block was admitted without being done.
    assert outcomes.count("done") <= stats.admitted
    assert outcomes.count("refused") == stats.rejected
    assert stats.admitted + stats.rejected + stats.cancelled <= calls


def test_a_wait_that_times_out_as_its_slot_arrives_keeps_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A thread handed its slot just as its wait timed out runs: the slot is not lost."""
    limit = Bulkhead("db", max_concurrent=1, max_queued=1, queue_timeout=1)
    limit.acquire()

    original = _ThreadWaiter.__init__

    def late_lock(self: _ThreadWaiter) -> None:
        original(self)

        class Lock:
            def acquire(self, timeout: float = -1) -> bool:
                limit.release()  # the holder lets go as the wait runs out
                return False

            def release(self) -> None:
                pass

        self.lock = Lock()  # type: ignore[assignment]

    monkeypatch.setattr(_ThreadWaiter, "__init__", late_lock)
    limit.acquire()  # no BulkheadFull: the slot arrived in time
    stats = limit.stats()
    assert (stats.in_use, stats.queued, stats.waited, stats.rejected) == (1, 0, 1, 0)
    limit.release()


class _ClosedLoopWaiter:
    """A task waiter whose event loop has closed: waking it fails."""

    granted = False

    def wake(self) -> None:
        raise RuntimeError("Event loop is closed")


def test_a_slot_for_a_task_whose_loop_closed_goes_to_the_next_waiter() -> None:
    """A waiter that can no longer be woken does not keep the slot handed to it."""
    limit = Bulkhead("db", max_concurrent=1, max_queued=2)
    limit.acquire()
    gone, thread_waiter = _ClosedLoopWaiter(), _ThreadWaiter()
    with limit._lock:
        limit._enqueue(gone, None)  # type: ignore[arg-type]
        limit._enqueue(thread_waiter, None)
    limit.release()
    assert thread_waiter.granted
    assert thread_waiter.lock.acquire(timeout=0)  # it was woken
    assert (limit.in_use, limit.queued) == (1, 0)
    limit.release()
    assert limit.in_use == 0
