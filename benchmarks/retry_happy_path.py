"""Retry overhead on the happy path: a call that succeeds at the first attempt.

stalwart, tenacity, stamina and backoff wrap the same function, measured in one pyperf
run next to the plain call. Run: ``.venv/bin/python benchmarks/retry_happy_path.py``
(add ``--fast`` for a quick look, ``-o out.json`` to keep the figures).
"""

from __future__ import annotations

import backoff
import pyperf
import stamina
import tenacity

import stalwart


def plain(x: int) -> int:
    return x


async def aplain(x: int) -> int:
    return x


def wrapped() -> dict[str, object]:
    return {
        "plain": plain,
        "stalwart": stalwart.retry(on=ConnectionError, attempts=3)(plain),
        "tenacity": tenacity.retry(
            retry=tenacity.retry_if_exception_type(ConnectionError),
            stop=tenacity.stop_after_attempt(3),
        )(plain),
        "stamina": stamina.retry(on=ConnectionError, attempts=3)(plain),
        "backoff": backoff.on_exception(backoff.expo, ConnectionError, max_tries=3)(plain),
    }


def awrapped() -> dict[str, object]:
    return {
        "plain": aplain,
        "stalwart": stalwart.retry(on=ConnectionError, attempts=3)(aplain),
        "tenacity": tenacity.retry(
            retry=tenacity.retry_if_exception_type(ConnectionError),
            stop=tenacity.stop_after_attempt(3),
        )(aplain),
        "stamina": stamina.retry(on=ConnectionError, attempts=3)(aplain),
        "backoff": backoff.on_exception(backoff.expo, ConnectionError, max_tries=3)(aplain),
    }


def sync_loops(fn: object) -> object:
    def time_it(loops: int) -> float:
        call = fn
        t0 = pyperf.perf_counter()
        for _ in range(loops):
            call(1)  # type: ignore[operator]
        return pyperf.perf_counter() - t0

    return time_it


def async_loops(fn: object) -> object:
    def time_it(loops: int) -> float:
        import asyncio

        async def run() -> float:
            call = fn
            t0 = pyperf.perf_counter()
            for _ in range(loops):
                await call(1)  # type: ignore[operator]
            return pyperf.perf_counter() - t0

        return asyncio.run(run())

    return time_it


def main() -> None:
    runner = pyperf.Runner()
    runner.metadata["description"] = "retry happy path: first attempt succeeds"
    for name, fn in wrapped().items():
        runner.bench_time_func(f"retry-success-sync-{name}", sync_loops(fn))
    for name, fn in awrapped().items():
        runner.bench_time_func(f"retry-success-async-{name}", async_loops(fn))


if __name__ == "__main__":
    main()
