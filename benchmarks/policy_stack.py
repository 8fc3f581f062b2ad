"""A `stalwart.Policy` (retry + breaker + timeout) on its success path, next to the
same layers stacked from peers, in one pyperf run.

Sync: stalwart's Policy against tenacity around pybreaker. Neither peer has a timeout,
so the full stack adds timeout-decorator (``SIGALRM`` and ``setitimer`` per call, as
stalwart's sync timeout does in the main thread). Async: pybreaker needs Tornado for
coroutines, so the async peer stack is tenacity around aiobreaker, with the standard
library's ``asyncio.timeout`` as the timeout layer (stalwart uses an anyio cancel
scope). Rows without a timeout (``*_no_timeout``, ``tenacity+pybreaker``) compare the
retry and breaker layers alone. Retry logging is off (stalwart ``log=False``);
tenacity, pybreaker and aiobreaker log nothing by default.

Run: ``python benchmarks/policy_stack.py --fast``.
"""

from __future__ import annotations

import asyncio
import functools
from datetime import timedelta
from typing import Any

import aiobreaker
import pybreaker
import pyperf
import tenacity
import timeout_decorator
from _common import async_loops, plain, sync_loops

import stalwart

ATTEMPTS = 3
TIMEOUT = 1.0  # seconds per attempt; never reached


async def aplain(x: int) -> int:
    return x


def ours(*, timeout: bool) -> stalwart.Policy:
    return stalwart.Policy(
        retry=stalwart.retry(on=ConnectionError, attempts=ATTEMPTS, log=False),
        breaker=stalwart.CircuitBreaker("bench", log=False, registry=None),
        timeout=TIMEOUT if timeout else None,
    )


def tenacity_retry() -> Any:
    return tenacity.retry(
        retry=tenacity.retry_if_exception_type(ConnectionError),
        stop=tenacity.stop_after_attempt(ATTEMPTS),
        wait=tenacity.wait_none(),
    )


def sync_stacks() -> dict[str, Any]:
    def breaker() -> pybreaker.CircuitBreaker:
        return pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)

    limited = timeout_decorator.timeout(TIMEOUT, use_signals=True)(plain)
    return {
        "plain": plain,
        "stalwart": ours(timeout=True)(plain),
        "stalwart_no_timeout": ours(timeout=False)(plain),
        "tenacity+pybreaker+timeout_decorator": tenacity_retry()(breaker()(limited)),
        "tenacity+pybreaker": tenacity_retry()(breaker()(plain)),
    }


def asyncio_timeout(fn: Any) -> Any:
    @functools.wraps(fn)
    async def limited(*args: Any) -> Any:
        async with asyncio.timeout(TIMEOUT):
            return await fn(*args)

    return limited


def async_stacks() -> dict[str, Any]:
    def breaker() -> aiobreaker.CircuitBreaker:
        return aiobreaker.CircuitBreaker(fail_max=5, timeout_duration=timedelta(seconds=60))

    return {
        "plain": aplain,
        "stalwart": ours(timeout=True)(aplain),
        "stalwart_no_timeout": ours(timeout=False)(aplain),
        "tenacity+aiobreaker+asyncio_timeout": tenacity_retry()(
            breaker()(asyncio_timeout(aplain))
        ),
        "tenacity+aiobreaker": tenacity_retry()(breaker()(aplain)),
    }


def main() -> None:
    runner = pyperf.Runner()
    runner.metadata["description"] = "Policy (retry + breaker + timeout), success path"
    for name, fn in sync_stacks().items():
        runner.bench_time_func(f"policy-success-sync-{name}", sync_loops(fn, rejected=False))
    for name in async_stacks():
        runner.bench_time_func(f"policy-success-async-{name}", async_loops(async_stacks, name))


if __name__ == "__main__":
    main()
