"""Type-checked by mypy and pyright, never run: decorated functions keep their signatures.

Both checkers read this file (`make typecheck`). Where they name a type differently,
the check is written so both agree: calling a decorated ``async def`` gives
``Coroutine[...]`` to mypy and ``types.CoroutineType[...]`` to pyright, so the checks
below assert the awaited value's type, and that the call is assignable to
``Coroutine[...]``. A ``# type: ignore[...]`` marks a call that must be rejected: both
checkers report an ignore that suppresses nothing (mypy's ``warn_unused_ignores``,
pyright's ``reportUnnecessaryTypeIgnoreComment``), so each such line is a check too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import requests
from typing_extensions import assert_type

import stalwart
from stalwart import presets
from stalwart.classify import Classifier, Verdict, classify, parse_retry_after
from stalwart.contrib.httpx import AsyncResilientTransport, ResilientTransport
from stalwart.contrib.requests import ResilientAdapter, resilient_session
from stalwart.testing import ManualClock, fresh_breakers, instant_retries

if TYPE_CHECKING:
    from collections.abc import Coroutine


@stalwart.retry(attempts=3, deadline=5.0, backoff=stalwart.exponential(0.1, 2, 1, "equal"))
def fetch(url: str, *, timeout: float = 1.0) -> bytes:
    return url.encode()


@stalwart.retry(on=(ConnectionError, TimeoutError))
async def afetch(url: str, retries: int = 0) -> dict[str, int]:
    return {url: retries}


@stalwart.retry
def bare(url: str, *, tries: int = 1) -> bytes:
    return url.encode()


@stalwart.retry
async def abare(url: str) -> list[str]:
    return [url]


@stalwart.timeout(2.0)
def slow(x: int) -> str:
    return str(x)


@stalwart.timeout(2.0)
async def aslow(x: int) -> list[int]:
    return [x]


@presets.DEFAULT
def preset_decorated(a: int, b: str = "") -> tuple[int, str]:
    return (a, b)


@stalwart.deadline(3.0)
def budgeted(a: int) -> int:
    return a


assert_type(fetch("x"), bytes)
assert_type(fetch("x", timeout=2.0), bytes)
assert_type(slow(1), str)
assert_type(preset_decorated(1), tuple[int, str])
assert_type(budgeted(1), int)
assert_type(stalwart.retry(), stalwart.RetryPolicy)
assert_type(bare("x", tries=2), bytes)
assert_type(stalwart.retry(ConnectionError), stalwart.RetryPolicy)
assert_type(stalwart.retry((ConnectionError, TimeoutError), attempts=2), stalwart.RetryPolicy)
assert_type(stalwart.retry(on=lambda exc: isinstance(exc, OSError)), stalwart.RetryPolicy)
assert_type(stalwart.retry(on=ConnectionError, attempts=2), stalwart.RetryPolicy)
assert_type(stalwart.retrying(attempts=2), stalwart.RetryBlock)
assert_type(stalwart.LoggingListener.retry_level, int)
stalwart.LoggingListener.retry_level = 30
stalwart.LoggingListener.retry_level = "WARNING"  # type: ignore[assignment]
assert_type(stalwart.LoggingListener(retry_level=10), stalwart.LoggingListener)
assert_type(stalwart.remaining(), float | None)
assert_type(classify(ValueError()), Verdict)
assert_type(Classifier().transient(KeyError).classify(KeyError()), Verdict)
assert_type(parse_retry_after("5"), float | None)
assert_type(stalwart.exponential().delay(3), float)
assert_type(ManualClock()(), float)


def blocks() -> None:
    for attempt in stalwart.retrying(attempts=3):
        with attempt:
            assert_type(attempt, stalwart.Attempt)
    with stalwart.timeout(1.0), stalwart.deadline(2.0), instant_retries():
        pass


async def async_blocks() -> None:
    async for attempt in stalwart.retrying(attempts=3):
        with attempt:
            assert_type(attempt.number, int)
    async with stalwart.timeout(1.0), stalwart.deadline(2.0):
        pass


def wrong_use() -> None:
    fetch(1)  # type: ignore[arg-type]
    fetch("x", retries=1)  # type: ignore[call-arg]
    stalwart.retry(attempts="3")  # type: ignore[call-overload]
    bare(1)  # type: ignore[arg-type]
    stalwart.retry(fetch, attempts=2)  # type: ignore[call-overload]


breaker = stalwart.CircuitBreaker("typing", failure_threshold=3, window=None)
own_breaker = stalwart.CircuitBreaker("typing-own", registry=stalwart.BreakerRegistry())
solo_breaker = stalwart.CircuitBreaker("typing-solo", registry=None)
stalwart.CircuitBreaker("typing-bad", registry="default")  # type: ignore[arg-type]
with fresh_breakers() as fresh_registry:
    assert_type(fresh_registry, stalwart.BreakerRegistry)
with fresh_breakers(stalwart.BreakerRegistry()):
    pass


@breaker
def guarded(a: int, *, b: str = "") -> float:
    return float(a)


@stalwart.circuit_breaker("typing-registry")
async def aguarded(a: int) -> bytes:
    return bytes(a)


policy = stalwart.Policy(retry=stalwart.retry(attempts=2), breaker=breaker, timeout=1.0)


@policy
def composed(a: int) -> list[str]:
    return [str(a)]


@policy
async def acomposed(a: int) -> set[int]:
    return {a}


assert_type(guarded(1, b="x"), float)
assert_type(composed(1), list[str])
assert_type(breaker.call(guarded, 1), float)
assert_type(breaker.stats(), stalwart.BreakerStats)
assert_type(breaker.state, stalwart.State)
assert_type(stalwart.registry.health(), stalwart.RegistryHealth)
assert_type(stalwart.registry.get("x"), stalwart.CircuitBreaker)


# Decorated coroutine functions: called, a coroutine; awaited, the function's own result.
afetch_call: Coroutine[Any, Any, dict[str, int]] = afetch("x")
aslow_call: Coroutine[Any, Any, list[int]] = aslow(1)
abare_call: Coroutine[Any, Any, list[str]] = abare("x")
aguarded_call: Coroutine[Any, Any, bytes] = aguarded(1)
acomposed_call: Coroutine[Any, Any, set[int]] = acomposed(1)


async def awaited() -> None:
    assert_type(await afetch("x", retries=2), dict[str, int])
    assert_type(await aslow(1), list[int])
    assert_type(await abare("x"), list[str])
    assert_type(await aguarded(1), bytes)
    assert_type(await acomposed(1), set[int])
    await afetch(1)  # type: ignore[arg-type]
    await aslow("1")  # type: ignore[arg-type]
    await aguarded(1, 2)  # type: ignore[call-arg]


async def breaker_calls() -> None:
    assert_type(await breaker.call_async(aguarded, 1), bytes)
    async with breaker:
        pass
    with breaker:
        guarded(1, b=3)  # type: ignore[arg-type]


# HTTP clients: options are typed keyword arguments, checked like a signature.

http_client = httpx.Client(
    transport=ResilientTransport(retry=stalwart.retry(attempts=2), timeout=2.0, per_host=True)
)
async_http_client = httpx.AsyncClient(transport=AsyncResilientTransport(max_retry_after=10))
assert_type(resilient_session(breaker=breaker), requests.Session)
adapter = ResilientAdapter(pool_maxsize=20, retry_statuses={503})
ResilientTransport(timeout="2")  # type: ignore[arg-type]
ResilientTransport(colour="red")  # type: ignore[call-arg]
with stalwart.correlation_id("abc") as cid:
    assert_type(cid, str)
assert_type(stalwart.current_correlation_id(), str | None)


# Bulkheads, retry budgets and hedgers: decorated functions keep their signatures.

pool = stalwart.bulkhead("typing-db", max_concurrent=4, max_queued=8, queue_timeout=1.0)
assert_type(pool, stalwart.Bulkhead)


@pool
def pooled(sql: str, *, limit: int = 10) -> list[str]:
    return [sql] * limit


assert_type(pooled("select", limit=2), list[str])
assert_type(pool.call(pooled, "x"), list[str])
assert_type(pool.stats(), stalwart.BulkheadStats)
pooled(1)  # type: ignore[arg-type]
stalwart.bulkhead("typing-db", max_calls=3)  # type: ignore[call-arg]

budget = stalwart.retry_budget("typing-api", ratio=0.1)
assert_type(budget, stalwart.RetryBudget)


@stalwart.retry(attempts=3, budget=budget)
def within_budget(n: int) -> str:
    return str(n)


assert_type(within_budget(1), str)
stalwart.retry(budget="api")  # type: ignore[call-overload]

hedger = stalwart.hedge("typing-search", percentile=95, max_hedges=2)
assert_type(hedger, stalwart.Hedger)


async def lookup(key: str, *, fresh: bool = False) -> bytes:
    return key.encode() if fresh else b""


hedged_lookup = hedger(lookup)
stalwart.Policy(bulkhead=pool, hedge=hedger, retry=stalwart.retry(budget=budget), timeout=1.0)


async def hedged_calls() -> None:
    assert_type(await hedged_lookup("k", fresh=True), bytes)
    assert_type(await hedger.call(lookup, "k", fresh=False), bytes)
    assert_type(hedger.stats(), stalwart.HedgeStats)
    await hedged_lookup(3)  # type: ignore[arg-type]
