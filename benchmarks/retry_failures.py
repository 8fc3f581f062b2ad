"""Retry cost when a call fails twice, then succeeds, with every sleep removed.

stalwart, tenacity, stamina and backoff each retry the same flaky function (it raises
`ConnectionError` on its first and second attempt, returns on the third), in one pyperf
run. Every library is configured for zero waits (stalwart ``constant(0)``, tenacity
``wait_none()``, stamina ``wait_initial=0, wait_max=0, wait_jitter=0``, backoff
``backoff.constant(interval=0)`` without jitter), and every library's sleep function
is replaced by a no-op, sync and async, so that no row pays for ``time.sleep(0)`` (a
system call that gives up the CPU) or a trip through the event loop:

- stalwart: its clock's sleeps (`stalwart._clock.use` with a source whose ``sleep``
  and ``async_sleep`` return at once);
- tenacity: ``sleep=`` given to ``tenacity.retry``;
- stamina: tenacity's default sync sleep (``tenacity.nap.time``) and stamina's async
  ``_smart_sleep``, replaced in the worker process;
- backoff: the ``time`` and ``asyncio`` modules its retry loops call ``sleep`` on,
  replaced in the worker process by objects whose ``sleep`` does nothing.

Retry logging is off for all of them (stalwart ``log=False``, stamina's hooks cleared,
backoff ``logger=None``; tenacity logs nothing by default), so the figures are the retry
machinery alone. The ``plain`` row is a hand-written loop making the same three
attempts, catching the same two exceptions.

Two more rows give the cost of stalwart's default logging listener (``log=True``),
with a handler on the root logger (a `logging.NullHandler`: what it takes goes
nowhere, so no I/O is timed): ``stalwart_logged`` with the levels as the standard
library leaves them (the root logger at WARNING, so the two retries, INFO records,
are never built), and ``stalwart_logged_info`` with the ``stalwart.retry`` logger at
INFO (both records built and handled: what seeing every retry costs).

The manager process also times the libraries in turn, in one process (`ROUNDS` rounds
of `CALLS` calls each, the logging rows each in a process of their own beside plain
and stalwart), and prints each one's median and its overhead as a ratio to
stalwart's: on a busy machine those ratios hold up better than pyperf's, whose
workers run each library at a different time. For figures that do not move at all,
count instructions: ``valgrind --tool=callgrind`` on a script calling one row's
function 500 and 1,500 times (the difference over 1,000 is the cost of one call).

Run: ``python benchmarks/retry_failures.py --fast``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import subprocess
import sys
import time
from types import SimpleNamespace
from typing import Any

import backoff
import backoff._async
import backoff._sync
import pyperf
import stamina
import stamina._core
import stamina.instrumentation
import tenacity
import tenacity.nap
from _common import Down, async_loops

import stalwart
from stalwart import _clock

ATTEMPTS = 3
NAMES = (
    "plain",
    "stalwart",
    "stalwart_logged",
    "stalwart_logged_info",
    "tenacity",
    "stamina",
    "backoff",
)


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


class NoSleep:
    """A time source for stalwart's clock: the real time, and sleeps that return at once."""

    monotonic = staticmethod(time.monotonic)
    sleep = staticmethod(no_sleep_sync)
    async_sleep = staticmethod(no_sleep)


class AsyncioNoSleep:
    """`asyncio` as backoff's async loop sees it, but for a ``sleep`` that returns at once."""

    sleep = staticmethod(no_sleep)

    def __getattr__(self, name: str) -> Any:
        import asyncio

        return getattr(asyncio, name)


_done: set[str] = set()


def remove_sleeps() -> None:
    """Make every library's sleep a no-op, in this (worker) process, once."""
    if "sleeps" in _done:
        return
    _done.add("sleeps")
    _clock.use(NoSleep()).__enter__()
    # The peers' private modules are where their sleeps are looked up.
    tenacity.nap.time = SimpleNamespace(sleep=no_sleep_sync)  # type: ignore[assignment]
    stamina._core._smart_sleep = no_sleep  # type: ignore[assignment]  # noqa: SLF001
    backoff._sync.time = SimpleNamespace(sleep=no_sleep_sync)  # type: ignore[assignment]  # noqa: SLF001
    backoff._async.asyncio = AsyncioNoSleep()  # type: ignore[assignment]  # noqa: SLF001


def set_logging(name: str) -> None:
    """Configure logging as the row `name` needs it, once (a worker runs one row)."""
    if name in _done:
        return
    _done.add(name)
    if name.startswith("stalwart_logged"):
        logging.getLogger().addHandler(logging.NullHandler())
    if name == "stalwart_logged_info":
        logging.getLogger("stalwart.retry").setLevel(logging.INFO)


def peers(fn: Any, hand: Any, *, is_async: bool = False) -> dict[str, Any]:
    """Each library retrying `fn` up to three times with zero waits; `hand` is plain."""
    stamina.instrumentation.set_on_retry_hooks([])
    logged = stalwart.retry(on=ConnectionError, attempts=ATTEMPTS, backoff=stalwart.constant(0))
    return {
        "plain": hand(fn),
        "stalwart": stalwart.retry(
            on=ConnectionError, attempts=ATTEMPTS, backoff=stalwart.constant(0), log=False
        )(fn),
        "stalwart_logged": logged(fn),
        "stalwart_logged_info": logged(fn),
        "tenacity": tenacity.retry(
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
        remove_sleeps()
        set_logging(name)
        call = peers(flaky(), by_hand)[name]
        t0 = pyperf.perf_counter()
        for _ in range(loops):
            call(1)
        return pyperf.perf_counter() - t0

    return time_it


def async_peers(name: str) -> Any:
    def make() -> dict[str, Any]:
        remove_sleeps()
        set_logging(name)
        return peers(aflaky(), aby_hand, is_async=True)

    return make


ROUNDS = 15  # rounds of the interleaved timing
CALLS = 3000  # calls per library per round
PEERS = ("plain", "stalwart", "tenacity", "stamina", "backoff")
LOGGING = ("stalwart_logged", "stalwart_logged_info")


def interleaved(rows: tuple[str, ...], logging_row: str = "") -> dict[str, dict[str, float]]:
    """Median µs per call of each row, timed in turn in this process, `ROUNDS` rounds.

    With `logging_row`, logging is configured for that row, which is timed beside
    ``plain`` and ``stalwart``.
    """
    remove_sleeps()
    if logging_row:
        set_logging(logging_row)
    times: dict[str, dict[str, list[float]]] = {"sync": {}, "async": {}}
    sync = peers(flaky(), by_hand)
    for _ in range(ROUNDS):
        for name in rows:
            call = sync[name]
            t0 = time.perf_counter()
            for _ in range(CALLS):
                call(1)
            times["sync"].setdefault(name, []).append((time.perf_counter() - t0) / CALLS)

    async def run() -> None:
        made = peers(aflaky(), aby_hand, is_async=True)
        for _ in range(ROUNDS):
            for name in rows:
                call = made[name]
                t0 = time.perf_counter()
                for _ in range(CALLS):
                    await call(1)
                times["async"].setdefault(name, []).append((time.perf_counter() - t0) / CALLS)

    asyncio.run(run())
    return {
        colour: {name: statistics.median(values) * 1e6 for name, values in rows_.items()}
        for colour, rows_ in times.items()
    }


def print_interleaved() -> None:
    """Time the peers, then each logging row in a process of its own; print the tables."""
    results = interleaved(PEERS)
    print(f"Interleaved, {ROUNDS} rounds of {CALLS} calls: median µs per call, overhead")
    print("above plain, and its ratio to stalwart's:")
    for colour, medians in results.items():
        ours = medians["stalwart"] - medians["plain"]
        for name, value in medians.items():
            over = value - medians["plain"]
            print(f"  {colour:<5} {name:<10} {value:7.2f}  {over:7.2f}  ({over / ours:.2f}x)")
    print("The logging listener (log=True), each set-up in a process of its own: what it")
    print("adds per call, in µs and as a share of stalwart's overhead in that process:")
    for row in LOGGING:  # a logging set-up stays with its process
        out = subprocess.run(
            [sys.executable, __file__, "--interleaved", row],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for colour, medians in json.loads(out).items():
            ours = medians["stalwart"] - medians["plain"]
            added = medians[row] - medians["stalwart"]
            print(f"  {colour:<5} {row:<20} {added:7.2f}  ({added / ours:.0%})")


def main() -> None:
    if sys.argv[1:2] == ["--interleaved"]:  # one logging row, for `print_interleaved`
        row = sys.argv[2]
        print(json.dumps(interleaved(("plain", "stalwart", row), row)))
        return
    runner = pyperf.Runner()
    runner.metadata["description"] = "retry: two failures, then success, no sleeps"
    args = runner.parse_args()
    for name in NAMES:
        runner.bench_time_func(f"retry-failures-sync-{name}", sync_loops(name))
    for name in NAMES:
        runner.bench_time_func(
            f"retry-failures-async-{name}", async_loops(async_peers(name), name)
        )
    if not args.worker:
        print_interleaved()


if __name__ == "__main__":
    main()
