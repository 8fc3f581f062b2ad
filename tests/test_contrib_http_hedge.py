"""Hedged HTTP requests through the async httpx transport, and retry budgets passed to
every HTTP wrapper, against a real server on loopback.

Nothing of httpx is mocked: `Gated` wraps the real ``httpx.AsyncHTTPTransport`` only to
hold each request before it is sent or before its response is handed back, so the tests
choose the order in which the server and the hedges act, without sleeping.
"""

from __future__ import annotations

import functools
import gc
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest

import stalwart
from http_server import Reply, ScriptedServer
from stalwart.budget import RetryBudget
from stalwart.contrib.httpx import AsyncResilientTransport, ResilientTransport
from stalwart.contrib.requests import ResilientAdapter, resilient_session
from stalwart.hedge import Hedger
from stalwart.testing import ManualClock

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.anyio


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as running:
        yield running


@pytest.fixture
def clock() -> Iterator[ManualClock]:
    """stalwart's clock: a hedge's delay (and a retry's wait) passes at once."""
    with ManualClock(1000.0) as manual:
        yield manual


class Gated(httpx.AsyncBaseTransport):
    """The real async transport, each request held until the test lets it go.

    Request `i` (in the order the hedger starts them) waits for `go[i]` before it is
    sent, sets `answered[i]` when its response has arrived, waits for `deliver[i]`, and
    sets `handed[i]` as it hands the response back. Responses are kept in `responses`.
    """

    def __init__(self, n: int) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.go = [anyio.Event() for _ in range(n)]
        self.answered = [anyio.Event() for _ in range(n)]
        self.deliver = [anyio.Event() for _ in range(n)]
        self.handed = [anyio.Event() for _ in range(n)]
        self.responses: list[httpx.Response] = []
        self.sent = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        index = self.sent
        self.sent += 1
        await self.go[index].wait()
        response = await self.inner.handle_async_request(request)
        self.responses.append(response)
        self.answered[index].set()
        try:
            await self.deliver[index].wait()
        except BaseException:
            await response.aclose()  # cancelled while holding it: the gate's own to close
            raise
        self.handed[index].set()  # what the transport does with it next involves no await
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def _pool_of(transport: httpx.AsyncHTTPTransport) -> list[Any]:
    return list(transport._pool.connections)


async def test_a_hedge_answers_for_a_hung_request(
    server: ScriptedServer, clock: ManualClock
) -> None:
    """One request hangs, its hedge answers: the answer is returned, the hung one cancelled."""
    server.script("/h", Reply(action="hang"), Reply(200, b"answer"))
    hedger = Hedger("api", delay=0.05)
    inner = httpx.AsyncHTTPTransport()
    transport = AsyncResilientTransport(inner, hedge=hedger, per_host=False, retry=None)
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(f"{server.url}/h")
        assert (response.status_code, response.content) == (200, b"answer")
        pool = _pool_of(inner)
        assert len(pool) == 1  # the hung request's connection was closed and dropped
        assert pool[0].is_idle()
    server.release.set()
    assert server.hits("/h") == 2
    stats = hedger.stats()
    assert (stats.calls, stats.hedges, stats.cancelled, stats.failed) == (1, 1, 1, 0)
    gc.collect()  # an unclosed socket or response would warn here, an error in this suite


async def test_a_response_to_retry_does_not_win_over_a_hedge(
    server: ScriptedServer, clock: ManualClock
) -> None:
    """A 503 that arrives first waits for the hedge, whose 200 wins; the 503 is closed."""
    server.script("/s", 503, 200)
    gated = Gated(2)
    hedger = Hedger("api", delay=0.05)
    transport = AsyncResilientTransport(gated, hedge=hedger, per_host=False, retry=None)
    async with httpx.AsyncClient(transport=transport) as client:
        async with anyio.create_task_group() as group:
            got: list[httpx.Response] = []

            async def get() -> None:
                got.append(await client.get(f"{server.url}/s"))

            group.start_soon(get)
            gated.go[0].set()
            await gated.answered[0].wait()  # the first request has its 503
            gated.go[1].set()
            await gated.answered[1].wait()  # the hedge has its 200
            gated.deliver[0].set()
            await gated.handed[0].wait()  # the 503 is handed over first, and refused
            gated.deliver[1].set()
        assert got[0].status_code == 200
        assert gated.responses[0].status_code == 503
        assert gated.responses[0].is_closed
    assert hedger.stats().hedge_wins == 1


async def test_the_last_refused_response_is_returned_when_nothing_better_comes(
    server: ScriptedServer, clock: ManualClock
) -> None:
    """Both requests answered 503 (retries off): the call returns a 503, the other closed."""
    server.script("/s", 503, 503)
    gated = Gated(2)
    for event in (*gated.go, *gated.deliver):
        event.set()
    hedger = Hedger("api", delay=0.0)
    transport = AsyncResilientTransport(gated, hedge=hedger, per_host=False, retry=None)
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(f"{server.url}/s")
        assert response.status_code == 503
        others = [r for r in gated.responses if r is not response]
        assert all(r.is_closed for r in others)


async def test_hedged_attempts_are_retried_as_a_whole(
    server: ScriptedServer, clock: ManualClock
) -> None:
    """Retries wrap hedging: each attempt is hedged, and a 503 from all of them is retried."""
    server.script("/r", 503, 503)  # then the default: 200 "ok"
    hedger = Hedger("api", delay=0.0)
    inner = httpx.AsyncHTTPTransport()
    transport = AsyncResilientTransport(
        inner,
        hedge=hedger,
        per_host=False,
        retry=stalwart.retry(attempts=3, backoff=stalwart.constant(0.01), log=False),
    )
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(f"{server.url}/r")
        assert (response.status_code, response.content) == (200, b"ok")
        assert all(connection.is_idle() for connection in _pool_of(inner))
    assert server.hits("/r") >= 3
    gc.collect()


@pytest.mark.parametrize(
    ("method", "headers"),
    [("POST", {}), ("PATCH", {}), ("POST", {"Idempotency-Key": "k1"})],
)
async def test_requests_that_are_not_idempotent_are_not_hedged(
    server: ScriptedServer, clock: ManualClock, method: str, headers: dict[str, str]
) -> None:
    """POST and PATCH are sent once, an idempotency key notwithstanding."""
    hedger = Hedger("api", delay=0.0)
    transport = AsyncResilientTransport(hedge=hedger, per_host=False, retry=None)
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.request(method, f"{server.url}/p", headers=headers)
    assert response.status_code == 200
    assert server.hits("/p") == 1
    assert hedger.stats().calls == 0


async def test_a_streamed_body_is_not_hedged(server: ScriptedServer, clock: ManualClock) -> None:
    """A one-shot body cannot be sent twice: the request is sent once."""
    hedger = Hedger("api", delay=0.0)
    transport = AsyncResilientTransport(hedge=hedger, per_host=False, retry=None)

    async def body() -> Any:
        yield b"part"

    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.put(f"{server.url}/b", content=body())
    assert response.status_code == 200
    assert hedger.stats().calls == 0


async def test_the_breaker_counts_no_cancelled_hedge(
    server: ScriptedServer, clock: ManualClock
) -> None:
    """A request cancelled because its hedge won is neither a failure nor a success."""
    server.script("/h", Reply(action="hang"), Reply(200))
    breaker = stalwart.CircuitBreaker("hedged", failure_threshold=1)
    hedger = Hedger("api", delay=0.05)
    transport = AsyncResilientTransport(hedge=hedger, breaker=breaker, retry=None)
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get(f"{server.url}/h")).status_code == 200
    server.release.set()
    stats = breaker.stats()
    assert (stats.state, stats.failures, stats.successes) == ("closed", 0, 1)


@pytest.mark.parametrize("make", [ResilientTransport, ResilientAdapter])
def test_blocking_clients_refuse_hedging(make: Any) -> None:
    """Sync clients cannot cancel a request, so they refuse `hedge` and say why."""
    with pytest.raises(TypeError, match="async clients only.*cannot be cancelled"):
        make(hedge=Hedger("api"))


def test_hedge_must_be_a_hedger() -> None:
    """Anything but a Hedger is refused by name."""
    with pytest.raises(TypeError, match="hedge must be a stalwart.Hedger or None, got 0.05"):
        AsyncResilientTransport(hedge=0.05)  # type: ignore[arg-type]


# --- retry budgets -------------------------------------------------------------------------


async def _get_async(url: str, **options: Any) -> int:
    async with httpx.AsyncClient(transport=AsyncResilientTransport(**options)) as client:
        return (await client.get(url)).status_code


def _get(kind: str, url: str, **options: Any) -> int:
    """One GET through the `kind` of client, with the wrapper's `options`; its status."""
    if kind == "httpx":
        with httpx.Client(transport=ResilientTransport(**options)) as client:
            return client.get(url).status_code
    if kind == "requests":
        with resilient_session(**options) as session:
            return session.get(url).status_code
    return anyio.run(functools.partial(_get_async, url, **options), backend=kind[6:])


@pytest.mark.parametrize("kind", ["httpx", "httpx-asyncio", "httpx-trio", "requests"])
def test_the_budget_allows_retries_then_refuses_them(
    kind: str, server: ScriptedServer, clock: ManualClock
) -> None:
    """Each request counts as a first attempt; a retry past the budget is not sent."""
    server.script("/b", 503, 200, 503, 200)
    budget = RetryBudget("http", ratio=0, min_per_second=0.1, window=10)  # 1 retry
    retry = stalwart.retry(attempts=3, backoff=stalwart.constant(0.01), log=False)
    options = {"retry": retry, "budget": budget, "per_host": False}
    assert _get(kind, f"{server.url}/b", **options) == 200  # retried once
    assert _get(kind, f"{server.url}/b", **options) == 503  # the retry was refused
    assert server.hits("/b") == 3
    stats = budget.stats()
    assert (stats.deposits, stats.retries_allowed, stats.retries_refused) == (2, 1, 1)


def test_a_post_counts_as_a_call_too(server: ScriptedServer, clock: ManualClock) -> None:
    """Requests retried only when not sent (a POST) are first attempts for the budget."""
    budget = RetryBudget("http", ratio=0.5)
    with httpx.Client(transport=ResilientTransport(budget=budget, per_host=False)) as client:
        assert client.post(f"{server.url}/p", content=b"x").status_code == 200
    assert budget.stats().deposits == 1


@pytest.mark.parametrize("make", [ResilientTransport, AsyncResilientTransport, ResilientAdapter])
def test_a_budget_needs_retries_and_no_other_budget(make: Any) -> None:
    """A budget without retries, or beside the policy's own, is refused; the same one is not."""
    budget = RetryBudget("http")
    with pytest.raises(ValueError, match="budget limits retries, but retry=None makes none"):
        make(budget=budget, retry=None)
    with pytest.raises(ValueError, match="budget limits retries"):
        make(budget=budget, retry=stalwart.retry(attempts=1))
    own = stalwart.retry(budget=RetryBudget("own"))
    with pytest.raises(ValueError, match="with a budget of its own"):
        make(budget=budget, retry=own)
    same = stalwart.retry(budget=budget)
    assert make(budget=budget, retry=same).rules.safe.budget is budget
