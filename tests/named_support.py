"""Drive a bulkhead, a retry budget and a hedger through their real paths, for the
metrics exporters' tests: each ends with known counts."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING

import anyio
import pytest

import stalwart
from stalwart.budget import budgets
from stalwart.bulkhead import bulkheads
from stalwart.hedge import hedgers
from stalwart.testing import ManualClock

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

EXPECTED = {
    "bulkhead": {
        "in_use": 1,
        "queued": 0,
        "max_concurrent": 1,
        "admitted": 4,
        "queue_full": 1,
        "timed_out": 1,
    },
    "budget": {"deposits": 4, "allowed": 2, "refused": 1, "balance": 0.0},
    "hedger": {"calls": 1, "hedges": 1, "wins": 1, "delay": 0.001},
}
"""What `drive` leaves each instance with."""


def wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll `condition` until it holds (another thread's progress), failing after `seconds`."""
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "the condition never held"
        time.sleep(0.001)


def drive_bulkhead(name: str) -> stalwart.Bulkhead:
    """One rejection of each reason, four admissions; one slot left held."""
    pool = stalwart.bulkhead(name, max_concurrent=1, max_queued=1)
    pool.acquire()
    waiter = threading.Thread(target=lambda: (pool.acquire(), pool.release()))
    waiter.start()
    wait_until(lambda: pool.queued == 1)
    with pytest.raises(stalwart.BulkheadFull, match="queue full"):
        pool.acquire()
    pool.release()
    waiter.join(10)
    pool.acquire()
    with stalwart.deadline(0), pytest.raises(stalwart.BulkheadFull, match="timed out"):
        pool.acquire()
    pool.release()
    pool.acquire()
    return pool


def drive_budget(name: str) -> None:
    """Four deposits allow two retries at ratio 0.5: two allowed, one refused."""
    budget = stalwart.retry_budget(name, ratio=0.5, min_per_second=0, clock=ManualClock())
    for _ in range(4):
        budget.deposit()
    assert [budget.withdraw() for _ in range(3)] == [True, True, False]


def drive_hedger(name: str) -> None:
    """One call whose first attempt hangs: its one hedge wins."""
    hedger = stalwart.hedge(name, delay=0.001, max_hedges=1)
    started = [0]

    async def attempt() -> str:
        started[0] += 1
        if started[0] == 1:
            await anyio.sleep_forever()
        return "hedge"

    async def main() -> str:
        return await hedger.call(attempt)

    assert anyio.run(main) == "hedge"


@contextmanager
def driven(prefix: str) -> Iterator[dict[str, str]]:
    """Drive one instance of each kind, named ``prefix-<kind>``; forget them after."""
    names = {kind: f"{prefix}-{kind}" for kind in EXPECTED}
    pool = drive_bulkhead(names["bulkhead"])
    try:
        drive_budget(names["budget"])
        drive_hedger(names["hedger"])
        yield names
    finally:
        pool.release()
        for named, kind in ((bulkheads, "bulkhead"), (budgets, "budget"), (hedgers, "hedger")):
            if names[kind] in named:
                named.remove(names[kind])
