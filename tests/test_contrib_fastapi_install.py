"""`install()` on Starlette and FastAPI apps, served by a real uvicorn on loopback.

Each test starts its own server (`uvicorn_support.running_server`) and stops it; the
lifespan tests look at what happened once it has stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import sys
import textwrap
import time
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import redis  # noqa: TC002 - a fixture's annotation
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request  # noqa: TC002 - FastAPI reads the annotations
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

import stalwart
import stalwart.contrib.fastapi as stalwart_fastapi
from http_server import Reply, ScriptedServer
from redis_support import URL
from stalwart.contrib.fastapi import StalwartMiddleware, install
from stalwart.contrib.httpx import AsyncResilientTransport, ResilientTransport
from uvicorn_support import UvicornThread, running_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

NO_RETRY = stalwart.retry(attempts=1, log=False)
UPSTREAM_TIMEOUTS = {"ReadTimeout", "ConnectTimeout", "PoolTimeout", "WriteTimeout"}


def snapshot() -> dict[str, Any]:
    """The correlation id and the deadline in force here."""
    return {"correlation_id": stalwart.current_correlation_id(), "remaining": stalwart.remaining()}


async def ok(request: Request) -> Response:
    """A healthy endpoint."""
    return JSONResponse(snapshot())


async def misuse(request: Request) -> Response:
    """A sync ``with stalwart.timeout(...)`` in an ``async def``: a TypeError in the core."""
    with stalwart.timeout(1):
        return PlainTextResponse("never")


async def open_breaker(request: Request) -> Response:
    """Call through a breaker an operator holds open."""
    stalwart.registry.get("jira").force_open()

    async def call() -> None:
        return None

    await stalwart.registry.get("jira").call_async(call)
    return PlainTextResponse("never")


async def timed_out(request: Request) -> Response:
    """A block limited to 50 ms that waits for an event nobody sets."""
    async with stalwart.timeout(0.05):
        await asyncio.Event().wait()
    return PlainTextResponse("never")


def upstream(request: Request) -> Response:
    """GET ?url= through stalwart's sync transport, in the threadpool; report what happened."""
    before, start = stalwart.remaining(), time.monotonic()
    with httpx.Client(transport=ResilientTransport(per_host=False, retry=NO_RETRY)) as client:
        try:
            outcome = str(client.get(request.query_params["url"]).status_code)
        except httpx.TimeoutException as exc:
            outcome = type(exc).__name__
    return JSONResponse(
        {"remaining": before, "elapsed": time.monotonic() - start, "outcome": outcome}
    )


async def upstream_async(request: Request) -> Response:
    """GET ?url= through `AsyncResilientTransport`; report what happened."""
    before, start = stalwart.remaining(), time.monotonic()
    transport = AsyncResilientTransport(per_host=False, retry=NO_RETRY)
    async with httpx.AsyncClient(transport=transport) as client:
        try:
            outcome = str((await client.get(request.query_params["url"])).status_code)
        except httpx.TimeoutException as exc:
            outcome = type(exc).__name__
    return JSONResponse(
        {"remaining": before, "elapsed": time.monotonic() - start, "outcome": outcome}
    )


ROUTES = {
    "/ok": ok,
    "/misuse": misuse,
    "/open": open_breaker,
    "/timeout": timed_out,
    "/upstream": upstream,
    "/async/upstream": upstream_async,
}


def build(kind: str, **app_options: Any) -> Starlette:
    """A Starlette or FastAPI app with the endpoints of this module."""
    if kind == "starlette":
        return Starlette(routes=[Route(p, e) for p, e in ROUTES.items()], **app_options)
    app = FastAPI(**app_options)
    for path, endpoint in ROUTES.items():
        app.add_api_route(path, endpoint, response_model=None)
    return app


@pytest.fixture(params=["starlette", "fastapi"])
def kind(request: pytest.FixtureRequest) -> str:
    """The kind of app: plain Starlette, or FastAPI."""
    return str(request.param)


# --- a real server -------------------------------------------------------------------------


def test_misuse_gives_500_and_the_server_keeps_serving(kind: str):
    """A sync stalwart.timeout in an async endpoint is that request's 500; others are served."""
    app = build(kind)
    install(app)
    server = UvicornThread(app)  # uvicorn sets its loggers up here
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = records.append  # type: ignore[method-assign]
    uvicorn_errors = logging.getLogger("uvicorn.error")
    uvicorn_errors.addHandler(handler)
    # A connection per request: uvicorn closes the one an unhandled exception went through.
    try:
        with server:
            for i in range(3):
                bad = httpx.get(f"{server.base_url}/misuse", headers={"X-Correlation-ID": "b"})
                assert bad.status_code == 500
                good = httpx.get(f"{server.base_url}/ok", headers={"X-Correlation-ID": f"ok-{i}"})
                assert good.status_code == 200
                assert good.json()["correlation_id"] == f"ok-{i}"
    finally:
        uvicorn_errors.removeHandler(handler)
    errors = [r.exc_info[1] for r in records if r.exc_info]
    assert len(errors) == 3
    assert all(isinstance(e, TypeError) for e in errors)
    assert "cannot limit code in a thread that runs an event loop" in str(errors[0])


def test_503_and_504_from_a_real_server(kind: str):
    """A real uvicorn answers an open breaker with 503 and a timeout with 504, ids echoed."""
    app = build(kind)
    install(app)
    with running_server(app) as url, httpx.Client() as http:
        opened = http.get(f"{url}/open", headers={"X-Correlation-ID": "c-503"})
        timed = http.get(f"{url}/timeout", headers={"X-Correlation-ID": "c-504"})
    assert (opened.status_code, opened.headers["x-correlation-id"]) == (503, "c-503")
    assert opened.json()["breaker"] == "jira"
    assert (timed.status_code, timed.headers["x-correlation-id"]) == (504, "c-504")


def test_retry_after_from_a_real_server():
    """A breaker opened by a real failure gives Retry-After in whole seconds, at least 1."""
    breaker = stalwart.registry.get("pay", failure_threshold=1, window=None, recovery_timeout=30)
    with pytest.raises(stalwart.TransientError):
        breaker.call(_fail)

    async def pay(request: Request) -> Response:
        breaker.call(lambda: None)
        return PlainTextResponse("never")

    app = Starlette(routes=[Route("/pay", pay)])
    install(app)
    with running_server(app) as url:
        response = httpx.get(f"{url}/pay")
    assert response.status_code == 503
    assert 1 <= int(response.headers["retry-after"]) <= 30


def _fail() -> None:
    raise stalwart.TransientError("down")


@pytest.fixture
def hanging() -> Iterator[ScriptedServer]:
    """A loopback server whose every request hangs until the test ends."""
    with ScriptedServer() as server:
        server.default = Reply(action="hang")
        yield server


@pytest.mark.parametrize("path", ["/upstream", "/async/upstream"])
def test_deadline_header_cuts_upstream_call_in_a_real_server(
    kind: str, path: str, hanging: ScriptedServer
):
    """Through uvicorn, the caller's 0.3 s budget cuts the endpoint's hanging upstream call."""
    app = build(kind)
    install(app, deadline_header="X-Request-Timeout")
    headers = {"X-Request-Timeout": "0.3", "X-Correlation-ID": "order-42"}
    with running_server(app) as url:
        response = httpx.get(
            f"{url}{path}", params={"url": f"{hanging.url}/slow"}, headers=headers, timeout=10
        )
    report = response.json()
    assert response.status_code == 200
    assert 0 < report["remaining"] <= 0.3
    assert report["outcome"] in UPSTREAM_TIMEOUTS
    assert report["elapsed"] < 3
    assert hanging.seen[0].headers["x-correlation-id"] == "order-42"


def test_bad_and_huge_deadline_headers_in_a_real_server(kind: str):
    """Through uvicorn a malformed header is a 400 (never a 500) and a huge one is capped."""
    app = build(kind)
    install(app, deadline_header="grpc-timeout", max_request_deadline=20)
    with running_server(app) as url, httpx.Client() as http:
        bad = http.get(f"{url}/ok", headers={"grpc-timeout": "9" * 5000})
        huge = http.get(f"{url}/ok", headers={"grpc-timeout": "99999999H"})
        after = http.get(f"{url}/ok")
    assert bad.status_code == 400
    assert bad.headers["content-type"] == "application/problem+json"
    assert 19 < huge.json()["remaining"] <= 20
    assert after.json()["remaining"] is None


def test_streaming_response_still_streams():
    """The first chunk reaches the client before the second is made; both in the request scope."""
    gate = asyncio.Event()

    async def stream(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield json.dumps(snapshot()).encode() + b"\n"
            await gate.wait()  # until the client has read the first chunk
            yield json.dumps(snapshot()).encode() + b"\n"

        return StreamingResponse(body(), media_type="application/x-ndjson")

    async def release(request: Request) -> Response:
        gate.set()
        return PlainTextResponse("released")

    app = Starlette(routes=[Route("/stream", stream), Route("/release", release)])
    install(app, request_deadline=30)
    headers = {"X-Correlation-ID": "s-1"}
    with (
        running_server(app) as url,
        httpx.Client(timeout=10) as http,
        http.stream("GET", f"{url}/stream", headers=headers) as response,
    ):
        assert response.headers["x-correlation-id"] == "s-1"
        lines = response.iter_lines()
        first = json.loads(next(lines))
        assert httpx.get(f"{url}/release", timeout=10).text == "released"
        second = json.loads(next(lines))
    assert first["correlation_id"] == second["correlation_id"] == "s-1"
    assert 0 < second["remaining"] <= first["remaining"] <= 30


# --- lifespan --------------------------------------------------------------------------------


@pytest.fixture
def closes(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Record each `aclose_resources` call that install()'s lifespan makes (its registry)."""
    seen: list[object] = []

    async def record(registry: object = None) -> None:
        seen.append(registry)

    monkeypatch.setattr(stalwart_fastapi, "aclose_resources", record)
    return seen


def test_shutdown_closes_after_the_user_lifespan(kind: str, closes: list[object]):
    """The user's lifespan runs and its state reaches requests; stalwart closes after it exits."""
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def user_lifespan(app: object) -> AsyncIterator[dict[str, str]]:
        events.append("user-start")
        yield {"db": "ready"}
        events.append(f"user-stop (closed {len(closes)})")

    async def db(request: Request) -> Response:
        return PlainTextResponse(request.state.db)

    app = build(kind, lifespan=user_lifespan)
    app.add_route("/db", db)
    registry = stalwart.BreakerRegistry()
    install(app, registry=registry)
    with running_server(app) as url:
        assert httpx.get(f"{url}/db").text == "ready"
        assert closes == []
    assert events == ["user-start", "user-stop (closed 0)"]
    assert closes == [registry]


def test_shutdown_closes_even_if_the_user_shutdown_fails(
    closes: list[object], caplog: pytest.LogCaptureFixture
):
    """A user lifespan that fails on shutdown still lets stalwart close its clients."""

    @contextlib.asynccontextmanager
    async def failing(app: object) -> AsyncIterator[None]:
        yield
        raise RuntimeError("user shutdown failed")

    app = Starlette(lifespan=failing)
    install(app)
    with caplog.at_level(logging.ERROR), running_server(app):
        pass
    assert closes == [None]


def test_no_close_when_turned_off(kind: str, closes: list[object]):
    """close_on_shutdown=False leaves the lifespan alone: nothing is closed."""
    app = build(kind)
    lifespan = app.router.lifespan_context
    install(app, close_on_shutdown=False)
    assert app.router.lifespan_context is lifespan
    with running_server(app):
        pass
    assert closes == []


def _connections(client: redis.Redis, name: str) -> int:
    return sum(1 for c in client.client_list() if c.get("name") == name)


@pytest.mark.redis
def test_shutdown_closes_the_async_redis_storage(client: redis.Redis, prefix: str):
    """A real AsyncRedisStorage of the default registry is disconnected when uvicorn stops."""
    from stalwart.contrib.redis import AsyncRedisStorage

    name = f"stalwart-fastapi-{uuid.uuid4().hex[:8]}"
    storage = AsyncRedisStorage(f"{URL}?client_name={name}", prefix=prefix)
    undo = stalwart.registry.configure(storage=storage)
    try:

        async def guarded(request: Request) -> Response:
            async def call() -> str:
                return "through"

            return PlainTextResponse(await stalwart.registry.get("db").call_async(call))

        app = FastAPI()
        app.add_api_route("/guarded", guarded, response_model=None)
        install(app)
        with running_server(app) as url:
            assert httpx.get(f"{url}/guarded").text == "through"
            assert _connections(client, name) >= 1
        deadline = time.monotonic() + 5
        while _connections(client, name) and time.monotonic() < deadline:
            time.sleep(0.01)  # Redis drops the closed connection on its next loop turn
        assert _connections(client, name) == 0
    finally:
        undo()


# --- install() itself ----------------------------------------------------------------------


def test_install_twice_is_refused(kind: str):
    """A second install() on the same app raises, naming the app; the first stays."""
    app = build(kind)
    install(app)
    with pytest.raises(RuntimeError, match="already installed"):
        install(app, request_deadline=5)
    assert [m.cls for m in app.user_middleware].count(StalwartMiddleware) == 1


def test_install_after_start_is_refused():
    """install() on an app that has served raises rather than half-install."""
    app = Starlette(routes=[Route("/ok", ok)])
    with running_server(app) as url:
        httpx.get(f"{url}/ok")
    with pytest.raises(RuntimeError, match="has started"):
        install(app)


def test_install_adds_what_is_asked(kind: str):
    """middleware=False and handlers=False add neither; the defaults add both."""
    bare = build(kind)
    handlers_before = dict(bare.exception_handlers)
    install(bare, middleware=False, handlers=False, close_on_shutdown=False)
    assert all(m.cls is not StalwartMiddleware for m in bare.user_middleware)
    assert bare.exception_handlers == handlers_before
    full = build(kind)
    install(full)
    assert full.user_middleware[0].cls is StalwartMiddleware
    assert {stalwart.CircuitOpenError, stalwart.TimeoutExceeded} <= set(full.exception_handlers)


@pytest.mark.parametrize(
    ("app", "options", "error", "match"),
    [
        (object(), {}, TypeError, "app must be a Starlette application"),
        (None, {"handlers": "yes"}, TypeError, "handlers must be True, False, or"),
        (None, {"handlers": [ValueError]}, ValueError, r"handlers .* got \[<class 'ValueError'>"),
        (None, {"handlers": {stalwart.StalwartError}}, ValueError, "handlers must be"),
        (None, {"handlers": [1]}, TypeError, r"handlers .* got \[1\]"),
        (None, {"middleware": 1}, TypeError, "middleware must be True or False, got 1"),
        (None, {"close_on_shutdown": "no"}, TypeError, "close_on_shutdown must be .* got 'no'"),
        (None, {"registry": "default"}, TypeError, "registry must be .* got 'default'"),
        (None, {"request_deadline": -1}, ValueError, "request_deadline .* got -1"),
    ],
)
def test_install_refuses_bad_options(
    app: object, options: dict[str, Any], error: type[Exception], match: str
):
    """Bad arguments raise TypeError/ValueError naming them, and leave the app untouched."""
    target = Starlette() if app is None else app
    with pytest.raises(error, match=match):
        install(target, **options)  # type: ignore[arg-type]
    if isinstance(target, Starlette):
        assert target.user_middleware == []
        install(target)  # nothing was half-installed


def test_uvicorn_support_reports_a_failed_startup():
    """The test server helper raises, rather than hangs, when the app's startup fails."""

    @contextlib.asynccontextmanager
    async def broken(app: object) -> AsyncIterator[None]:
        raise RuntimeError("no database")
        yield

    with (
        pytest.raises(RuntimeError, match="failed to start"),
        UvicornThread(Starlette(lifespan=broken)),
    ):
        pass


# --- imports -------------------------------------------------------------------------------

_STARLETTE_ONLY = textwrap.dedent(
    """
    import sys, anyio, httpx
    import stalwart
    assert "starlette" not in sys.modules, "import stalwart imported starlette"
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from stalwart.contrib.fastapi import install

    async def ok(request):
        return PlainTextResponse(stalwart.current_correlation_id())

    app = Starlette(routes=[Route("/", ok)])
    install(app, request_deadline=5)

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            response = await client.get("/", headers={"X-Correlation-ID": "plain"})
            assert response.text == "plain", response.text

    anyio.run(main)
    assert "fastapi" not in sys.modules, sorted(m for m in sys.modules if "fastapi" in m)
    import stalwart.contrib.fastapi as package
    package.admin_router
    assert "fastapi" in sys.modules, "admin_router should load FastAPI"
    print("ok")
    """
)


def test_plain_starlette_works_without_importing_fastapi():
    """A Starlette app gets everything but the router without FastAPI ever being imported."""
    result = subprocess.run(
        [sys.executable, "-c", _STARLETTE_ONLY],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
