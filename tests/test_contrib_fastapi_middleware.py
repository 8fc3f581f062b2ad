"""The ASGI middleware and exception handlers, through httpx's ASGI transport.

Every app is built twice, as a plain Starlette app and as a FastAPI app (path operations,
dependency injection, its own middleware stack), with each endpoint in a sync (``def``,
run in Starlette's threadpool) and an async form. Runs under asyncio and trio.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request  # noqa: TC002 - FastAPI reads the annotations
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

import stalwart
from http_server import Reply, ScriptedServer
from stalwart.contrib._web import (
    BAD_DEADLINE_TYPE,
    CIRCUIT_OPEN_TYPE,
    PROBLEM_JSON,
    TEXT_PLAIN,
    TIMEOUT_TYPE,
)
from stalwart.contrib.fastapi import (
    CorrelationIdFilter,
    StalwartMiddleware,
    exception_handlers,
    install,
)
from stalwart.contrib.httpx import AsyncResilientTransport, ResilientTransport
from stalwart.testing import ManualClock

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from starlette.types import Message, Receive, Scope, Send

FRESH = re.compile(r"[0-9a-f]{32}")
NO_RETRY = stalwart.retry(attempts=1, log=False)
UPSTREAM_TIMEOUTS = {"ReadTimeout", "ConnectTimeout", "PoolTimeout", "WriteTimeout"}

logger = logging.getLogger("fastapi_endpoints")
release = threading.Event()
"""Ends the wait the sync timeout endpoint abandons (set when each test ends)."""
calls: list[str] = []
"""The endpoints called, in order (the 400 tests check none was)."""


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    """Every test starts with no recorded calls; abandoned waits end with the test."""
    calls.clear()
    release.clear()
    yield
    release.set()


# --- endpoints: each as a plain function of the request, sync and async ---------------------


def _state() -> dict[str, Any]:
    calls.append("state")
    logger.info("handled")
    return {
        "correlation_id": stalwart.current_correlation_id(),
        "remaining": stalwart.remaining(),
        "thread": threading.current_thread().name,
    }


def state(request: Request) -> Response:
    """The correlation id and deadline in force, in a worker thread; logs one record."""
    return JSONResponse(_state())


async def state_async(request: Request) -> Response:
    """The correlation id and deadline in force, on the event loop; logs one record."""
    return JSONResponse(_state())


def _breaker(request: Request) -> stalwart.CircuitBreaker:
    return stalwart.registry.get(request.path_params["name"])


def _fail() -> None:
    raise stalwart.TransientError("the dependency failed")


def breaker(request: Request) -> Response:
    """Call through the named breaker: failing with ?fail=1, else succeeding."""
    guarded = _breaker(request)
    if request.query_params.get("fail"):
        try:
            guarded.call(_fail)
        except stalwart.TransientError:
            return JSONResponse({"failed": True})
    guarded.call(lambda: None)
    return JSONResponse({"called": True})


async def breaker_async(request: Request) -> Response:
    """The async form of `breaker`."""
    guarded = _breaker(request)

    async def fail() -> None:
        _fail()

    async def succeed() -> None:
        return None

    if request.query_params.get("fail"):
        try:
            await guarded.call_async(fail)
        except stalwart.TransientError:
            return JSONResponse({"failed": True})
    await guarded.call_async(succeed)
    return JSONResponse({"called": True})


def timeout(request: Request) -> Response:
    """A call limited to 50 ms that waits until the test ends (a worker thread's timeout)."""
    finished = stalwart.timeout(0.05)(release.wait)(30)
    return JSONResponse({"finished": finished})


async def timeout_async(request: Request) -> Response:
    """A block limited to 50 ms that waits for an event nobody sets."""
    async with stalwart.timeout(0.05):
        await anyio.Event().wait()
    return JSONResponse({"finished": True})


def own_header(request: Request) -> Response:
    """A response that sets the correlation header itself."""
    return PlainTextResponse("own", headers={"X-Correlation-ID": "set-by-endpoint"})


async def own_header_async(request: Request) -> Response:
    """The async form of `own_header`."""
    return own_header(request)


def error(request: Request) -> Response:
    """An exception that is not stalwart's."""
    raise RuntimeError("not stalwart's")


async def error_async(request: Request) -> Response:
    """The async form of `error`."""
    raise RuntimeError("not stalwart's")


def _report(before: float | None, start: float, outcome: str) -> Response:
    return JSONResponse(
        {"remaining": before, "elapsed": time.monotonic() - start, "outcome": outcome}
    )


def upstream(request: Request) -> Response:
    """GET ?url= through stalwart's httpx transport; report the budget seen and the outcome."""
    before, start = stalwart.remaining(), time.monotonic()
    with httpx.Client(transport=ResilientTransport(per_host=False, retry=NO_RETRY)) as client:
        try:
            outcome = str(client.get(request.query_params["url"]).status_code)
        except httpx.TimeoutException as exc:
            outcome = type(exc).__name__
    return _report(before, start, outcome)


async def upstream_async(request: Request) -> Response:
    """The async form of `upstream`, through `AsyncResilientTransport`."""
    before, start = stalwart.remaining(), time.monotonic()
    transport = AsyncResilientTransport(per_host=False, retry=NO_RETRY)
    async with httpx.AsyncClient(transport=transport) as client:
        try:
            outcome = str((await client.get(request.query_params["url"])).status_code)
        except httpx.TimeoutException as exc:
            outcome = type(exc).__name__
    return _report(before, start, outcome)


ENDPOINTS: dict[str, tuple[Callable[[Request], Any], Callable[[Request], Any]]] = {
    "state": (state, state_async),
    "breaker/{name}": (breaker, breaker_async),
    "timeout": (timeout, timeout_async),
    "own-header": (own_header, own_header_async),
    "error": (error, error_async),
    "upstream": (upstream, upstream_async),
}


def _fastapi_endpoint(endpoint: Callable[[Request], Any]) -> Callable[..., Any]:
    """The same endpoint as a FastAPI path operation (the request injected by FastAPI)."""
    if endpoint.__name__.endswith("_async"):

        async def operation_async(request: Request) -> Any:
            return await endpoint(request)

        return operation_async

    def operation(request: Request) -> Any:
        return endpoint(request)

    return operation


def build(kind: str) -> Starlette:
    """An app with every endpoint, sync under ``/`` and async under ``/async/``."""
    if kind == "starlette":
        routes = []
        for path, (sync, async_) in ENDPOINTS.items():
            routes += [Route(f"/{path}", sync), Route(f"/async/{path}", async_)]
        return Starlette(routes=routes)
    app = FastAPI()
    for path, (sync, async_) in ENDPOINTS.items():
        app.add_api_route(f"/{path}", _fastapi_endpoint(sync), response_model=None)
        app.add_api_route(f"/async/{path}", _fastapi_endpoint(async_), response_model=None)
    return app


class Client:
    """Sends requests to one app through `httpx.ASGITransport`, to a sync or async endpoint."""

    def __init__(self, app: Starlette, kind: str, form: str) -> None:
        self.app = app
        self.kind = kind
        self.prefix = "/async/" if form == "async" else "/"

    def __repr__(self) -> str:
        return f"{self.kind}{self.prefix}"

    async def get(
        self, path: str, headers: dict[str, str] | dict[str, bytes] | None = None, **query: str
    ) -> Any:
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.get(self.prefix + path, headers=headers, params=query)


def installed(kind: str, form: str, **options: Any) -> Client:
    """A client of a fresh `kind` app with stalwart installed with `options`."""
    app = build(kind)
    install(app, **options)
    return Client(app, kind, form)


@pytest.fixture(params=["starlette", "fastapi"])
def kind(request: pytest.FixtureRequest) -> str:
    """The kind of app: plain Starlette, or FastAPI."""
    return str(request.param)


@pytest.fixture(params=["sync", "async"])
def form(request: pytest.FixtureRequest) -> str:
    """The endpoint's form: ``def`` (run in the threadpool) or ``async def``."""
    return str(request.param)


@pytest.fixture
def client(kind: str, form: str) -> Client:
    """A client of an app with stalwart installed with its defaults."""
    return installed(kind, form)


def seen(response: Any) -> dict[str, Any]:
    """What the state endpoint saw: the correlation id and the deadline in force."""
    assert response.status_code == 200, response.text
    return dict(json.loads(response.content))


def problem(response: Any) -> dict[str, Any]:
    """The problem details of `response`, checked to be JSON as `json.dumps` writes it."""
    assert response.headers["content-type"] == PROBLEM_JSON
    body = dict(json.loads(response.content))
    assert response.content == json.dumps(body).encode()
    return body


# --- correlation ids -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_correlation_id_in_and_out(client: Client):
    """The caller's id is current in the endpoint (threadpool too) and set on the response."""
    response = await client.get("state", {"X-Correlation-ID": "order-42"})
    assert seen(response)["correlation_id"] == "order-42"
    assert response.headers.get_list("x-correlation-id") == ["order-42"]


@pytest.mark.anyio
async def test_sync_endpoint_runs_in_a_worker_thread(kind: str):
    """Control: the sync endpoint really runs off the event loop's thread."""
    response = await installed(kind, "sync").get("state")
    assert seen(response)["thread"] != threading.current_thread().name


@pytest.mark.anyio
async def test_fresh_correlation_id_when_missing(client: Client):
    """Without the header the request gets a fresh id, current inside and sent back."""
    response = await client.get("state")
    fresh = response.headers["x-correlation-id"]
    assert FRESH.fullmatch(fresh)
    assert seen(response)["correlation_id"] == fresh


@pytest.mark.anyio
@pytest.mark.parametrize("bad", [b"has space", b"x" * 129, "caf\xe9".encode("latin-1"), b"\t"])
async def test_invalid_correlation_id_is_replaced_not_echoed(kind: str, bad: bytes):
    """An id that is too long, has spaces or is not printable ASCII is replaced."""
    response = await installed(kind, "async").get("state", {"X-Correlation-ID": bad})
    fresh = response.headers["x-correlation-id"]
    assert FRESH.fullmatch(fresh)
    assert seen(response)["correlation_id"] == fresh


@pytest.mark.anyio
async def test_correlation_header_is_configurable(kind: str, form: str):
    """Another header name is read and written instead of X-Correlation-ID."""
    client = installed(kind, form, correlation_header="X-Request-ID")
    response = await client.get("state", {"X-Request-ID": "req-7", "X-Correlation-ID": "other"})
    assert seen(response)["correlation_id"] == "req-7"
    assert response.headers["x-request-id"] == "req-7"
    assert "x-correlation-id" not in response.headers


@pytest.mark.anyio
async def test_correlation_can_be_turned_off(kind: str, form: str):
    """correlation_header=None: no id is set in the request nor on the response."""
    client = installed(kind, form, correlation_header=None)
    response = await client.get("state", {"X-Correlation-ID": "order-42"})
    assert seen(response)["correlation_id"] is None
    assert "x-correlation-id" not in response.headers


@pytest.mark.anyio
async def test_response_carries_the_request_id(client: Client):
    """An id the endpoint set on its response is replaced by the request's, once."""
    response = await client.get("own-header", {"X-Correlation-ID": "order-42"})
    assert response.text == "own"
    assert response.headers.get_list("x-correlation-id") == ["order-42"]


@pytest.mark.anyio
async def test_log_records_carry_correlation_id(client: Client):
    """Records logged in the endpoint (threadpool too) carry the id through the filter."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    handler.addFilter(CorrelationIdFilter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        await client.get("state", {"X-Correlation-ID": "log-1"})
        await client.get("state", {"X-Correlation-ID": "log-2"})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    assert [getattr(r, "correlation_id", None) for r in records] == ["log-1", "log-2"]


@pytest.mark.anyio
async def test_concurrent_requests_keep_their_own_ids(kind: str):
    """Requests in flight together, all parked at once, each see and get back their own id."""
    count = 8
    arrived = 0
    everyone = anyio.Event()

    async def park(request: Request) -> Response:
        nonlocal arrived
        arrived += 1
        if arrived == count:
            everyone.set()
        await everyone.wait()
        return JSONResponse({"correlation_id": stalwart.current_correlation_id()})

    app = Starlette(routes=[Route("/park", park)]) if kind == "starlette" else FastAPI()
    if isinstance(app, FastAPI):
        app.add_api_route("/park", park, response_model=None)
    install(app)
    results: dict[str, tuple[str, str]] = {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:

        async def one(cid: str) -> None:
            response = await http.get("/park", headers={"X-Correlation-ID": cid})
            results[cid] = (
                response.json()["correlation_id"],
                response.headers["x-correlation-id"],
            )

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tasks:
                for i in range(count):
                    tasks.start_soon(one, f"id-{i}")
    assert results == {f"id-{i}": (f"id-{i}", f"id-{i}") for i in range(count)}


# --- errors: 503 and 504 ---------------------------------------------------------------------


@pytest.fixture
def clock() -> Iterator[ManualClock]:
    """A manual clock for the breakers (and deadlines)."""
    with ManualClock(1000.0) as manual:
        yield manual


@pytest.mark.anyio
async def test_open_breaker_gives_503_with_retry_after(client: Client, clock: ManualClock):
    """A real breaker opened by a failure makes the endpoint's next call a 503 with Retry-After."""
    stalwart.registry.get("jira", failure_threshold=1, window=None, recovery_timeout=30)
    tripped = await client.get("breaker/jira", {"X-Correlation-ID": "trip-1"}, fail="1")
    assert tripped.json() == {"failed": True}
    assert stalwart.registry.get("jira").state is stalwart.State.OPEN
    clock.advance(10.5)
    response = await client.get("breaker/jira", {"X-Correlation-ID": "order-42"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "20"
    assert response.headers["x-correlation-id"] == "order-42"
    assert problem(response) == {
        "type": CIRCUIT_OPEN_TYPE,
        "title": "Circuit open",
        "status": 503,
        "detail": "The dependency 'jira' is unavailable: its circuit breaker is open."
        " Try again in 20 s.",
        "breaker": "jira",
        "retry_after": 20,
    }


@pytest.mark.anyio
async def test_forced_open_breaker_gives_503_without_retry_after(client: Client):
    """A breaker held open by an operator gives 503 with no Retry-After, retry_after null."""
    stalwart.registry.get("jira").force_open()
    response = await client.get("breaker/jira")
    assert response.status_code == 503
    assert "retry-after" not in response.headers
    assert problem(response)["retry_after"] is None


@pytest.mark.anyio
async def test_text_reply_for_browsers(kind: str, clock: ManualClock):
    """A client preferring HTML gets the 503 as plain text, Retry-After included."""
    stalwart.registry.get("jira").force_open()
    accept = "text/html,application/xhtml+xml,*/*;q=0.8"
    response = await installed(kind, "async").get("breaker/jira", {"Accept": accept})
    assert response.status_code == 503
    assert response.headers["content-type"] == TEXT_PLAIN
    assert response.text.startswith("Circuit open: The dependency 'jira' is unavailable")


@pytest.mark.anyio
async def test_timeout_gives_504(client: Client):
    """A real stalwart.timeout expiring in the endpoint gives the pinned 504 problem."""
    with anyio.fail_after(10):
        response = await client.get("timeout", {"X-Correlation-ID": "order-42"})
    assert response.status_code == 504
    assert response.headers["x-correlation-id"] == "order-42"
    assert problem(response) == {
        "type": TIMEOUT_TYPE,
        "title": "Timeout",
        "status": 504,
        "detail": "The request did not finish within its time limit.",
    }


@pytest.mark.anyio
async def test_handlers_can_be_chosen_per_exception(kind: str):
    """handlers={CircuitOpenError}: 503 still, but a timeout is left to the server (500)."""
    client = installed(kind, "async", handlers={stalwart.CircuitOpenError})
    stalwart.registry.get("jira").force_open()
    assert (await client.get("breaker/jira")).status_code == 503
    assert (await client.get("timeout")).status_code == 500


@pytest.mark.anyio
async def test_handlers_can_be_turned_off(kind: str):
    """handlers=False: stalwart's errors are the server's 500, as without stalwart."""
    client = installed(kind, "async", handlers=False)
    stalwart.registry.get("jira").force_open()
    assert (await client.get("breaker/jira")).status_code == 500


@pytest.mark.anyio
async def test_other_exceptions_are_left_to_the_framework(client: Client):
    """An exception that is not stalwart's is the framework's 500, untouched."""
    response = await client.get("error")
    assert response.status_code == 500
    assert "stalwart" not in response.headers.get("content-type", "")


@pytest.mark.anyio
async def test_handlers_without_the_middleware(kind: str):
    """The handlers alone (middleware=False) answer 503, without a correlation header."""
    client = installed(kind, "async", middleware=False)
    stalwart.registry.get("jira").force_open()
    response = await client.get("breaker/jira", {"X-Correlation-ID": "order-42"})
    assert response.status_code == 503
    assert "x-correlation-id" not in response.headers


@pytest.mark.anyio
async def test_exception_handlers_given_to_the_constructor():
    """exception_handlers() works as Starlette's constructor argument, without install()."""
    app = Starlette(routes=[Route("/t", timeout_async)], exception_handlers=exception_handlers())
    response = await Client(app, "starlette", "sync").get("t")
    assert response.status_code == 504


# --- deadlines ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_no_deadline_by_default(client: Client):
    """Without request_deadline or deadline_header no deadline is in force, header or not."""
    response = await client.get("state", {"X-Request-Timeout": "2"})
    assert seen(response)["remaining"] is None


@pytest.mark.anyio
async def test_request_deadline_option(kind: str, form: str):
    """request_deadline puts a deadline on every request, seen in the threadpool too."""
    client = installed(kind, form, request_deadline=5)
    assert 4 < seen(await client.get("state"))["remaining"] <= 5


@pytest.mark.anyio
async def test_deadline_header_asks_for_less(kind: str, form: str):
    """The caller's header shortens the server's deadline, never lengthens it."""
    client = installed(kind, form, request_deadline=5, deadline_header="X-Request-Timeout")
    assert 1 < seen(await client.get("state", {"X-Request-Timeout": "2"}))["remaining"] <= 2
    assert 4 < seen(await client.get("state", {"X-Request-Timeout": "9"}))["remaining"] <= 5


@pytest.mark.anyio
async def test_a_deadline_header_seen_again_gives_the_same_answer(kind: str):
    """Values the middleware keeps parsed answer as the first time: budget or 400."""
    client = installed(kind, "async", deadline_header="X-Request-Timeout")
    for _ in range(3):
        assert 1 < seen(await client.get("state", {"X-Request-Timeout": "2"}))["remaining"] <= 2
        response = await client.get("state", {"X-Request-Timeout": "soon"})
        assert response.status_code == 400


@pytest.mark.anyio
async def test_grpc_timeout_header(kind: str):
    """A grpc-timeout header in gRPC's form (1500m) gives 1.5 s."""
    client = installed(kind, "async", deadline_header="grpc-timeout")
    assert 1 < seen(await client.get("state", {"grpc-timeout": "1500m"}))["remaining"] <= 1.5


@pytest.mark.anyio
@pytest.mark.parametrize("huge", ["99999999", "99999999H", "1" + "0" * 60])
async def test_huge_deadline_header_is_capped(kind: str, huge: str):
    """A huge budget is cut to max_request_deadline (30 s here), not refused nor obeyed."""
    client = installed(kind, "async", deadline_header="X-Request-Timeout", max_request_deadline=30)
    assert 29 < seen(await client.get("state", {"X-Request-Timeout": huge}))["remaining"] <= 30


@pytest.mark.anyio
@pytest.mark.parametrize(
    "bad", ["soon", "-1", "0", "0.0", "1e3", "inf", "nan", "0x10", "2 s", "1" * 65, "5S5"]
)
async def test_malformed_deadline_header_gets_400(kind: str, bad: str):
    """A malformed or zero header is a 400 problem naming the header (not the value); no call."""
    client = installed(kind, "sync", deadline_header="X-Request-Timeout")
    response = await client.get("state", {"X-Request-Timeout": bad, "X-Correlation-ID": "c-1"})
    assert response.status_code == 400
    assert response.headers["x-correlation-id"] == "c-1"
    assert problem(response) == {
        "type": BAD_DEADLINE_TYPE,
        "title": "Bad deadline",
        "status": 400,
        "detail": "The X-Request-Timeout header must be a positive number of seconds (2.5)"
        " or a gRPC timeout (100m, 2S).",
    }
    assert calls == []


@pytest.mark.anyio
async def test_bad_deadline_header_text_for_browsers(kind: str):
    """A browser gets the 400 as plain text, and a fresh correlation id."""
    client = installed(kind, "async", deadline_header="X-Request-Timeout")
    response = await client.get("state", {"X-Request-Timeout": "soon", "Accept": "text/html"})
    assert response.status_code == 400
    assert response.headers["content-type"] == TEXT_PLAIN
    assert response.text.startswith("Bad deadline: The X-Request-Timeout header")
    assert FRESH.fullmatch(response.headers["x-correlation-id"])


@pytest.mark.anyio
async def test_two_deadline_headers_get_400(kind: str):
    """Two values of the deadline header, even equal ones, are malformed: 400."""
    app = build(kind)
    install(app, deadline_header="X-Request-Timeout")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        headers = [("X-Request-Timeout", "2"), ("X-Request-Timeout", "2")]
        response = await http.get("/async/state", headers=headers)
    assert response.status_code == 400
    assert calls == []


@pytest.mark.anyio
async def test_blank_deadline_header_is_absent(kind: str):
    """An empty header counts as no header: the server's deadline applies."""
    client = installed(kind, "async", request_deadline=3, deadline_header="X-Request-Timeout")
    assert 2 < seen(await client.get("state", {"X-Request-Timeout": ""}))["remaining"] <= 3


@pytest.fixture
def hanging() -> Iterator[ScriptedServer]:
    """A loopback server whose every request hangs until the test ends."""
    with ScriptedServer() as server:
        server.default = Reply(action="hang")
        yield server


@pytest.mark.anyio
async def test_deadline_header_cuts_upstream_call(kind: str, form: str, hanging: ScriptedServer):
    """The caller's 0.3 s budget cuts the endpoint's hanging HTTP call through stalwart."""
    client = installed(kind, form, deadline_header="X-Request-Timeout")
    headers = {"X-Request-Timeout": "0.3", "X-Correlation-ID": "order-42"}
    with anyio.fail_after(10):
        response = await client.get("upstream", headers, url=f"{hanging.url}/slow")
    report = seen(response)
    assert 0 < report["remaining"] <= 0.3
    assert report["outcome"] in UPSTREAM_TIMEOUTS
    assert report["elapsed"] < 3  # httpx's own default is 5 s; the server never answers
    assert hanging.hits("/slow") == 1
    assert hanging.seen[0].headers["x-correlation-id"] == "order-42"


@pytest.mark.anyio
async def test_without_deadline_the_upstream_call_is_not_cut(kind: str, form: str):
    """Control: a fast upstream answers inside the budget, so only the deadline cut it."""
    client = installed(kind, form, deadline_header="X-Request-Timeout")
    with ScriptedServer() as fast:
        fast.default = Reply(200)
        response = await client.get("upstream", {"X-Request-Timeout": "5"}, url=f"{fast.url}/ok")
    assert seen(response)["outcome"] == "200"


# --- the middleware on its own -----------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("scope_type", ["websocket", "lifespan"])
async def test_other_scopes_pass_through(scope_type: str):
    """WebSocket and lifespan scopes reach the app with the very same receive and send."""
    reached: list[tuple[Scope, Receive, Send]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append((scope, receive, send))

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        return None

    scope: Scope = {"type": scope_type, "headers": [(b"x-request-timeout", b"soon")]}
    middleware = StalwartMiddleware(app, deadline_header="X-Request-Timeout")
    await middleware(scope, receive, send)
    assert reached == [(scope, receive, send)]


@pytest.mark.anyio
async def test_nothing_leaks_into_the_caller_context():
    """After a request the caller's context has no correlation id nor deadline left."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert stalwart.current_correlation_id() == "in"
        assert stalwart.remaining() is not None
        raise RuntimeError("fails mid-request")

    middleware = StalwartMiddleware(app, request_deadline=5)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        return None

    scope: Scope = {"type": "http", "headers": [(b"x-correlation-id", b"in")]}
    with pytest.raises(RuntimeError, match="fails mid-request"):
        await middleware(scope, receive, send)
    assert stalwart.current_correlation_id() is None
    assert stalwart.remaining() is None


@pytest.mark.anyio
@pytest.mark.parametrize("form", ["list", "tuple", "generator", "missing"])
async def test_response_headers_in_any_iterable_form(form: str):
    """Response headers as any iterable keep every field; the app's own list is not changed."""
    theirs = [(b"content-type", b"text/plain"), (b"X-Correlation-ID", b"endpoint's")]
    given: dict[str, Any] = {
        "list": theirs,
        "tuple": tuple(theirs),
        "generator": (h for h in theirs),
        "missing": None,
    }
    sent: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        start: Message = {"type": "http.response.start", "status": 200}
        if given[form] is not None:
            start["headers"] = given[form]
        await send(start)
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "headers": [(b"x-correlation-id", b"in")]}
    await StalwartMiddleware(app)(scope, receive, send)
    expected = [(b"x-correlation-id", b"in")]
    if form != "missing":
        expected.insert(0, (b"content-type", b"text/plain"))
    assert list(sent[0]["headers"]) == expected
    assert theirs[1] == (b"X-Correlation-ID", b"endpoint's")
    assert len(theirs) == 2


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"correlation_header": 42}, TypeError, "correlation_header must be an HTTP header"),
        ({"correlation_header": "X Bad"}, ValueError, "correlation_header .* got 'X Bad'"),
        ({"correlation_header": ""}, ValueError, "correlation_header .* got ''"),
        ({"deadline_header": "X:Timeout"}, ValueError, "deadline_header .* got 'X:Timeout'"),
        ({"deadline_header": b"X-T"}, TypeError, "deadline_header .* got b'X-T'"),
        ({"request_deadline": 0}, ValueError, "request_deadline must be .* > 0 .* got 0"),
        ({"request_deadline": "5"}, TypeError, "request_deadline must be .* got '5'"),
        ({"request_deadline": float("nan")}, ValueError, "request_deadline .* got nan"),
        ({"max_request_deadline": -1}, ValueError, "max_request_deadline .* got -1"),
        ({"max_request_deadline": None}, TypeError, "max_request_deadline .* got None"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], error: type[Exception], match: str):
    """Each bad option raises at construction, naming the parameter and the value."""
    with pytest.raises(error, match=match):
        StalwartMiddleware(Starlette(), **options)
    with pytest.raises(error, match=match):
        install(Starlette(), **options)


def test_timedelta_options():
    """Durations may be timedeltas (meaning their seconds)."""
    middleware = StalwartMiddleware(
        Starlette(), request_deadline=timedelta(seconds=2), max_request_deadline=timedelta(1)
    )
    assert middleware._deadline == 2
    assert middleware._maximum == 86400
