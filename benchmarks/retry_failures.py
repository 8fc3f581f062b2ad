"""Retry cost when a call fails twice, then succeeds, with zero waits between attempts.

stalwart, tenacity, stamina and backoff each retry the same flaky function (it raises
`ConnectionError` on its first and second attempt, returns on the third), in one pyperf
run. Every library is configured honestly for zero waits: stalwart with
``constant(0)``, tenacity with ``wait_none()``, stamina with ``wait_initial=0,
wait_max=0, wait_jitter=0``, backoff with ``backoff.constant(interval=0)`` and no
jitter. Retry logging is off for all of them (stalwart ``log=False``, stamina's hooks
cleared, backoff ``logger=None``; tenacity logs nothing by default), so the figures are
the retry machinery alone. The ``plain`` row is a hand-written loop making the same
three attempts, catching the same two exceptions.

Note: with a zero wait, stalwart skips the sleep (sync) while tenacity, stamina and
backoff still call ``time.sleep(0)``, a system call that gives up the CPU (tens of
microseconds on a loaded machine). The ``tenacity_no_sleep`` row is tenacity with a
no-op ``sleep=``, to show its decision machinery alone. Async: every library yields to
the event loop once per retry (``asyncio.sleep(0)`` or ``anyio.sleep(0)``); there the
no-op sleep does not yield.

Run: ``python benchmarks/retry_failures.py --fast``.
"""

from __future__ import annotations

from typing import Any

import backoff
import pyperf
import stamina
import stamina.instrumentation
import tenacity
from _common import Down, async_loops

import stalwart

ATTEMPTS = 3
NAMES = ("plain", "stalwart", "tenacity", "tenacity_no_sleep", "stamina", "backoff")


def flaky() -> Any:
    """A function failing its first two attempts of every call, succeeding on the third."""
    n = 0

    def call(x: int) -> int:
        nonlocal n
        n += 1
        if n % ATTEMPTS:
            raise Down(x)
        return x

    return call


def aflaky() -> Any:
    """`flaky` as a coroutine function (libraries must see it is one)."""
    n = 0

    async def call(x: int) -> int:
        nonlocal n
        n += 1
        if n % ATTEMPTS:
            raise Down(x)
        return x

    return call


def by_hand(fn: Any) -> Any:
    def call(x: int) -> int:
        for _ in range(ATTEMPTS - 1):
            try:
                return fn(x)
            except ConnectionError:
                pass
        return fn(x)

    return call


def aby_hand(fn: Any) -> Any:
    async def call(x: int) -> int:
        for _ in range(ATTEMPTS - 1):
            try:
                return await fn(x)
            except ConnectionError:
                pass
        return await fn(x)

    return call


def no_sleep_sync(seconds: float) -> None:
    del seconds


async def no_sleep(seconds: float) -> None:
    del seconds


def peers(fn: Any, hand: Any, *, is_async: bool = False) -> dict[str, Any]:
    """Each library retrying `fn` up to three times with zero waits; `hand` is plain."""
    stamina.instrumentation.set_on_retry_hooks([])
    return {
        "plain": hand(fn),
        "stalwart": stalwart.retry(
            on=ConnectionError, attempts=ATTEMPTS, backoff=stalwart.constant(0), log=False
        )(fn),
        "tenacity": tenacity.retry(
            retry=tenacity.retry_if_exception_type(ConnectionError),
            stop=tenacity.stop_after_attempt(ATTEMPTS),
            wait=tenacity.wait_none(),
        )(fn),
        "tenacity_no_sleep": tenacity.retry(
            retry=tenacity.retry_if_exception_type(ConnectionError),
            stop=tenacity.stop_after_attempt(ATTEMPTS),
            wait=tenacity.wait_none(),
            sleep=no_sleep if is_async else no_sleep_sync,
        )(fn),
        "stamina": stamina.retry(
            on=ConnectionError,
            attempts=ATTEMPTS,
            wait_initial=0,
            wait_max=0,
            wait_jitter=0,
        )(fn),
        "backoff": backoff.on_exception(
            backoff.constant,
            ConnectionError,
            max_tries=ATTEMPTS,
            interval=0,
            jitter=None,
            logger=None,
        )(fn),
    }


def sync_loops(name: str) -> Any:
    def time_it(loops: int) -> float:
        call = peers(flaky(), by_hand)[name]
        t0 = pyperf.perf_counter()
        for _ in range(loops):
            call(1)
        return pyperf.perf_counter() - t0

    return time_it


def async_peers() -> dict[str, Any]:
    return peers(aflaky(), aby_hand, is_async=True)


def main() -> None:
    runner = pyperf.Runner()
    runner.metadata["description"] = "retry: two failures, then success, zero waits"
    for name in NAMES:
        runner.bench_time_func(f"retry-failures-sync-{name}", sync_loops(name))
    for name in NAMES:
        runner.bench_time_func(f"retry-failures-async-{name}", async_loops(async_peers, name))


if __name__ == "__main__":
    main()
