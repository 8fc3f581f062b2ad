"""Bulkhead admission cost: a call through a bulkhead with a free slot, sync and async,
next to the same call through a bare `threading.Semaphore` (sync) and a bare
`anyio.CapacityLimiter` and `asyncio.Semaphore` (async), in one pyperf run.

Each peer wraps the function the way a user would write it by hand (a decorator
taking and giving back one permit); stalwart's is its decorator. Only the admission is
timed: every call finds a free slot (contention is a matter of waiting, not of cost).
Run: ``.venv/bin/python benchmarks/bulkhead.py --fast``.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from typing import Any

import anyio
import pyperf
from _common import async_loops, plain, sync_loops

from stalwart.bulkhead import Bulkhead


async def aplain(x: int) -> int:
    return x


def with_semaphore(fn: Any) -> Any:
    """`fn` behind a bare `threading.Semaphore` of ten permits."""
    permits = threading.Semaphore(10)

    @functools.wraps(fn)
    def wrapper(x: int) -> int:
        with permits:
            return int(fn(x))

    return wrapper


def with_async(fn: Any, limit: Any) -> Any:
    """`fn` behind `limit`, an async context manager (a limiter or a semaphore)."""

    @functools.wraps(fn)
    async def wrapper(x: int) -> int:
        async with limit:
            return int(await fn(x))

    return wrapper


def admit_sync() -> dict[str, Any]:
    return {
        "plain": plain,
        "stalwart": Bulkhead("bench", max_concurrent=10)(plain),
        "semaphore": with_semaphore(plain),
    }


def admit_async() -> dict[str, Any]:
    """Built inside the running loop: the limiter and the semaphore bind to it."""
    return {
        "plain": aplain,
        "stalwart": Bulkhead("bench", max_concurrent=10)(aplain),
        "capacitylimiter": with_async(aplain, anyio.CapacityLimiter(10)),
        "asyncio_semaphore": with_async(aplain, asyncio.Semaphore(10)),
    }


def main() -> None:
    runner = pyperf.Runner()
    runner.metadata["description"] = "bulkhead admission with a free slot, sync and async"
    for name, fn in admit_sync().items():
        runner.bench_time_func(f"bulkhead-admit-sync-{name}", sync_loops(fn, rejected=False))
    for name in ("plain", "stalwart", "capacitylimiter", "asyncio_semaphore"):
        runner.bench_time_func(f"bulkhead-admit-async-{name}", async_loops(admit_async, name))


if __name__ == "__main__":
    main()
