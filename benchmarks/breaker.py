"""Circuit breaker overhead: a successful call through a closed breaker, and a call
rejected by an open one, sync and async, next to the peers, in one pyperf run.

Peers: pybreaker and circuitbreaker (sync); aiobreaker, purgatory and circuitbreaker
(async). Run: ``.venv/bin/python benchmarks/breaker.py --fast``.

The benchmarks build their breakers with ``registry=None``: a scenario may be set up
more than once in a process, and two live breakers of one name in the default
registry are refused. Joining a registry happens at construction and costs nothing
per call.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import aiobreaker
import circuitbreaker
import purgatory
import pybreaker
import pyperf
from _common import Down, async_loops, fail, plain, sync_loops

import stalwart


async def aplain(x: int) -> int:
    return x


async def afail(x: int) -> int:
    raise Down(x)


def closed_sync() -> dict[str, Any]:
    return {
        "plain": plain,
        "stalwart": stalwart.CircuitBreaker("bench", log=False, registry=None)(plain),
        "pybreaker": pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)(plain),
        "circuitbreaker": circuitbreaker.circuit(failure_threshold=5, recovery_timeout=60)(plain),
    }


def open_sync() -> dict[str, Any]:
    """Each breaker opened by real failures; the wrapped function would raise too."""
    ours = stalwart.CircuitBreaker("bench", failure_threshold=1, log=False, registry=None)
    theirs = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=3600)
    cb = circuitbreaker.circuit(failure_threshold=1, recovery_timeout=3600)
    wrapped = {
        "plain": fail,
        "stalwart": ours(fail),
        "pybreaker": theirs(fail),
        "circuitbreaker": cb(fail),
    }
    for fn in wrapped.values():
        for _ in range(2):
            try:
                fn(1)
            except Exception:
                pass
    return wrapped


def closed_async() -> dict[str, Any]:
    factory = purgatory.AsyncCircuitBreakerFactory(default_threshold=5, default_ttl=60)
    return {
        "plain": aplain,
        "stalwart": stalwart.CircuitBreaker("bench", log=False, registry=None)(aplain),
        "aiobreaker": aiobreaker.CircuitBreaker(
            fail_max=5, timeout_duration=timedelta(seconds=60)
        )(aplain),
        "purgatory": factory("bench")(aplain),
        "circuitbreaker": circuitbreaker.circuit(failure_threshold=5, recovery_timeout=60)(aplain),
    }


async def open_async() -> dict[str, Any]:
    factory = purgatory.AsyncCircuitBreakerFactory(default_threshold=1, default_ttl=3600)
    wrapped = {
        "plain": afail,
        "stalwart": stalwart.CircuitBreaker(
            "bench", failure_threshold=1, log=False, registry=None
        )(afail),
        "aiobreaker": aiobreaker.CircuitBreaker(
            fail_max=1, timeout_duration=timedelta(seconds=3600)
        )(afail),
        "purgatory": factory("bench-open")(afail),
        "circuitbreaker": circuitbreaker.circuit(failure_threshold=1, recovery_timeout=3600)(
            afail
        ),
    }

    for fn in wrapped.values():
        for _ in range(2):
            try:
                await fn(1)
            except Exception:
                pass
    return wrapped


def main() -> None:
    runner = pyperf.Runner()
    runner.metadata["description"] = "circuit breaker: closed success and open rejection"
    for name, fn in closed_sync().items():
        runner.bench_time_func(f"breaker-closed-sync-{name}", sync_loops(fn, rejected=False))
    for name, fn in open_sync().items():
        runner.bench_time_func(f"breaker-open-sync-{name}", sync_loops(fn, rejected=True))
    for name in closed_async():
        runner.bench_time_func(
            f"breaker-closed-async-{name}", async_loops(closed_async, name, rejected=False)
        )
    for name in ("plain", "stalwart", "aiobreaker", "purgatory", "circuitbreaker"):
        runner.bench_time_func(
            f"breaker-open-async-{name}", async_loops(open_async, name, rejected=True)
        )


if __name__ == "__main__":
    main()
