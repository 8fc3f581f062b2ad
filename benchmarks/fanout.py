"""asyncio fan-out: 10,000 concurrent tasks through one breaker and one retry decorator.

Every task awaits a function that takes 10 ms (``asyncio.sleep``: a slow dependency),
wrapped in a retry around a breaker, all tasks sharing the one decorated function and
started together with ``asyncio.gather``. Wall time is measured without tracing; peak
memory in a separate run under ``tracemalloc`` (the peak of traced memory above what
was allocated before the tasks were made, so it includes the tasks themselves: see the
unprotected row). Stacks: stalwart's retry around its breaker; tenacity around
aiobreaker; tenacity around purgatory (the peers have no async retry of their own).
Retries never fire: every call succeeds; the unprotected row is the bare function.

Run: ``python benchmarks/fanout.py --fast``; ``--json PATH`` keeps the figures.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
import tracemalloc
from datetime import timedelta
from typing import Any

import aiobreaker
import purgatory
import tenacity
from _common import section_args, write_section

import stalwart

TASKS = 10_000
WORK = 0.010


async def work(x: int) -> int:
    await asyncio.sleep(WORK)
    return x


def tenacity_retry() -> Any:
    return tenacity.retry(
        retry=tenacity.retry_if_exception_type(ConnectionError),
        stop=tenacity.stop_after_attempt(3),
        wait=tenacity.wait_none(),
    )


def stacks() -> dict[str, Any]:
    """Factories of the decorated function, called inside the running loop."""

    def ours() -> Any:
        breaker = stalwart.CircuitBreaker("fanout", log=False, registry=None)
        return stalwart.retry(on=ConnectionError, attempts=3, log=False)(breaker(work))

    def aio() -> Any:
        breaker = aiobreaker.CircuitBreaker(fail_max=5, timeout_duration=timedelta(seconds=60))
        return tenacity_retry()(breaker(work))

    def purg() -> Any:
        factory = purgatory.AsyncCircuitBreakerFactory(default_threshold=5, default_ttl=60)
        return tenacity_retry()(factory("fanout")(work))

    return {
        "unprotected": lambda: work,
        "stalwart": ours,
        "tenacity+aiobreaker": aio,
        "tenacity+purgatory": purg,
    }


async def fan_out(make: Any) -> float:
    gc.collect()  # start every run without the last one's garbage
    fn = make()
    t0 = time.perf_counter()
    results = await asyncio.gather(*(fn(i) for i in range(TASKS)))
    elapsed = time.perf_counter() - t0
    if results != list(range(TASKS)):
        raise AssertionError("a task returned the wrong result")
    return elapsed


async def peak(make: Any) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        fn = make()
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        await asyncio.gather(*(fn(i) for i in range(TASKS)))
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def main() -> None:
    args = section_args(__doc__.splitlines()[0])
    runs = 3 if args.fast else 7
    for make in stacks().values():  # warm up: first-run imports and caches
        asyncio.run(fan_out(make))
    times: dict[str, list[float]] = {name: [] for name in stacks()}
    for _ in range(runs):  # interleaved, so a burst of load hits every stack alike
        for name, make in stacks().items():
            times[name].append(asyncio.run(fan_out(make)))
    peaks = {name: asyncio.run(peak(make)) for name, make in stacks().items()}
    base_time = statistics.median(times["unprotected"])
    base_peak = peaks["unprotected"]
    lines = [
        (
            f"{TASKS:,} concurrent tasks, each one call of a {WORK * 1000:g} ms coroutine through"
            f" one retry and one breaker; wall time median of {runs} runs; peak traced memory."
        ),
        "",
        (
            "| stack | median wall (ms) | min (ms) | vs unprotected | peak memory (MiB)"
            " | memory above unprotected (bytes per task) |"
        ),
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, values in times.items():
        median = statistics.median(values)
        lines.append(
            f"| {name} | {median * 1e3:,.0f} | {min(values) * 1e3:,.0f}"
            f" | {median / base_time:.2f}x | {peaks[name] / 2**20:.1f}"
            f" | {(peaks[name] - base_peak) / TASKS:,.0f} |"
        )
    results = {"tasks": TASKS, "work_seconds": WORK, "wall_seconds": times, "peak_bytes": peaks}
    write_section(args, "fanout", "asyncio fan-out", results, "\n".join(lines))


if __name__ == "__main__":
    main()
