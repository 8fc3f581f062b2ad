"""Closing stalwart's Redis clients on shutdown: aclose_resources, lifespan, the router's."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
import uuid
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
import redis
from fastapi import FastAPI, Request
from starlette.applications import Starlette

import stalwart
from stalwart import BreakerRegistry, CircuitBreaker
from stalwart.contrib.fastapi.lifespan import aclose_resources, lifespan
from stalwart.contrib.fastapi.router import admin_router
from stalwart.contrib.redis import AsyncRedisStorage, RedisStorage
from uvicorn_support import running_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.redis

URL = "redis://127.0.0.1:6379/0"
asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])


def _named_url() -> tuple[str, str]:
    """A URL whose connections carry a client name of their own, and that name."""
    name = f"stalwart-lifespan-{uuid.uuid4().hex[:12]}"
    return f"{URL}?client_name={name}", name


def _connected(client: redis.Redis, name: str) -> int:
    """How many connections Redis holds for the client name `name`."""
    return sum(1 for entry in client.client_list() if entry.get("name") == name)


def _wait_gone(client: redis.Redis, name: str, within: float = 10.0) -> None:
    """Poll (bounded) until Redis holds no connection named `name`."""
    deadline = time.monotonic() + within
    while _connected(client, name):
        assert time.monotonic() < deadline, f"connections named {name} still open"
        time.sleep(0.01)


class CountingAsyncStorage(AsyncRedisStorage):
    """An AsyncRedisStorage that counts its `aclose` calls."""

    __slots__ = ("closes", "error")

    def __init__(self, *args: Any, error: Exception | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.closes = 0
        self.error = error

    async def aclose(self) -> None:
        self.closes += 1
        if self.error is not None:
            raise self.error
        await super().aclose()


class ThreadRecordingStorage(RedisStorage):
    """A RedisStorage that records the thread its `close` runs in."""

    __slots__ = ("threads",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.threads: list[threading.Thread] = []

    def close(self) -> None:
        self.threads.append(threading.current_thread())
        super().close()


# -- aclose_resources ----------------------------------------------------------------------


@pytest.mark.anyio
@asyncio_only
async def test_each_distinct_storage_closed_once(prefix: str) -> None:
    """The registry's storage and each breaker's are closed once, however many share one."""
    shared = CountingAsyncStorage(URL, prefix=prefix)
    own = CountingAsyncStorage(URL, prefix=prefix)
    breakers = BreakerRegistry(storage=shared, log=False)
    for name in ("a", "b", "c"):
        breakers.get(name)
    kept = CircuitBreaker("d", storage=own, registry=breakers)
    await aclose_resources(breakers)
    assert (shared.closes, own.closes) == (1, 1)
    assert kept.name in breakers


@pytest.mark.anyio
@asyncio_only
async def test_clients_it_made_are_closed(client: redis.Redis, prefix: str) -> None:
    """A client made from a URL loses its connections, locally and on the server."""
    url, name = _named_url()
    storage = AsyncRedisStorage(url, prefix=prefix)
    breakers = BreakerRegistry(storage=storage, log=False)
    await breakers.get("jira").stats_async()  # connects
    assert _connected(client, name) == 1
    await aclose_resources(breakers)
    pool: Any = storage.client.connection_pool  # type: ignore[union-attr]
    assert not any(c.is_connected for c in pool._available_connections)
    _wait_gone(client, name)


@pytest.mark.anyio
@asyncio_only
async def test_clients_passed_in_are_left_open(client: redis.Redis, prefix: str) -> None:
    """A client the user passed in is theirs: it stays connected."""
    url, name = _named_url()
    mine = redis.asyncio.Redis.from_url(url)
    try:
        breakers = BreakerRegistry(storage=AsyncRedisStorage(mine, prefix=prefix), log=False)
        await breakers.get("jira").stats_async()
        await aclose_resources(breakers)
        assert _connected(client, name) == 1
        assert await mine.ping()
    finally:
        await mine.aclose()
    _wait_gone(client, name)


@pytest.mark.anyio
async def test_sync_storages_closed_in_a_worker_thread(client: redis.Redis, prefix: str) -> None:
    """A sync RedisStorage is closed off the event loop's thread, and its client is closed."""
    url, name = _named_url()
    storage = ThreadRecordingStorage(url, prefix=prefix)
    breakers = BreakerRegistry(storage=storage, log=False)
    breakers.get("jira").stats()  # connects
    assert _connected(client, name) == 1
    await aclose_resources(breakers)
    assert len(storage.threads) == 1
    assert storage.threads[0] is not threading.current_thread()
    _wait_gone(client, name)


@pytest.mark.anyio
@asyncio_only
async def test_errors_are_logged_and_the_rest_closed(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A storage failing to close is logged; the others are still closed; nothing raised."""
    failing = CountingAsyncStorage(URL, prefix=prefix, error=RuntimeError("boom"))
    healthy = CountingAsyncStorage(URL, prefix=prefix)
    breakers = BreakerRegistry(storage=failing, log=False)
    breakers.get("a")
    kept = CircuitBreaker("b", storage=healthy, registry=breakers)  # held weakly
    with caplog.at_level(logging.WARNING, logger="stalwart.contrib.fastapi"):
        await aclose_resources(breakers)
    assert (failing.closes, healthy.closes) == (1, 1)
    [record] = [r for r in caplog.records if r.name == "stalwart.contrib.fastapi"]
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)
    assert kept.name in breakers
    await AsyncRedisStorage.aclose(failing)


@pytest.mark.anyio
@asyncio_only
async def test_closing_twice_is_harmless_and_storage_reconnects(prefix: str) -> None:
    """A second close does nothing wrong; a breaker used after it connects again."""
    storage = AsyncRedisStorage(URL, prefix=prefix)
    breakers = BreakerRegistry(storage=storage, log=False)
    jira = breakers.get("jira")
    await jira.force_open_async()
    await aclose_resources(breakers)
    await aclose_resources(breakers)
    assert (await jira.stats_async()).state == "forced_open"
    assert not (await jira.stats_async()).storage_degraded
    await storage.aclose()


@pytest.mark.anyio
async def test_default_registry_and_bad_registry() -> None:
    """None means the default registry; anything but a registry is a TypeError."""
    await aclose_resources()
    await aclose_resources(stalwart.registry)
    with pytest.raises(TypeError, match="registry must be a stalwart BreakerRegistry.*'x'"):
        await aclose_resources("x")  # type: ignore[arg-type]


def test_memory_only_never_imports_redis() -> None:
    """Closing a memory-only registry does not import Redis (nothing of it can be open)."""
    code = (
        "import asyncio, sys\n"
        "from stalwart.contrib.fastapi.lifespan import aclose_resources\n"
        "asyncio.run(aclose_resources())\n"
        "assert 'redis' not in sys.modules, 'redis imported'\n"
        "assert 'stalwart.contrib.redis' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- lifespan, driven explicitly ----------------------------------------------------------


@pytest.mark.anyio
@asyncio_only
async def test_lifespan_closes_after_the_app_stops(client: redis.Redis, prefix: str) -> None:
    """`lifespan` closes nothing at startup and the default registry's clients at shutdown."""
    url, name = _named_url()
    storage = AsyncRedisStorage(url, prefix=prefix)
    jira = CircuitBreaker("jira", storage=storage)  # joins the default registry
    async with lifespan(Starlette()):
        await jira.stats_async()
        assert _connected(client, name) == 1
    _wait_gone(client, name)


async def _drive_lifespan(app: Any, between: Any) -> None:
    """Run `app`'s ASGI lifespan: startup, `between()`, shutdown; as a server does."""
    to_app, app_receives = anyio.create_memory_object_stream[dict[str, Any]](4)
    app_sends, from_app = anyio.create_memory_object_stream[dict[str, Any]](4)
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    async with anyio.create_task_group() as tasks, to_app, from_app, app_receives, app_sends:
        tasks.start_soon(app, scope, app_receives.receive, app_sends.send)
        await to_app.send({"type": "lifespan.startup"})
        assert (await from_app.receive())["type"] == "lifespan.startup.complete"
        await between()
        await to_app.send({"type": "lifespan.shutdown"})
        assert (await from_app.receive())["type"] == "lifespan.shutdown.complete"


@pytest.mark.anyio
@asyncio_only
async def test_router_lifespan_through_the_asgi_protocol(client: redis.Redis, prefix: str) -> None:
    """An included router's lifespan closes its registry's clients at lifespan.shutdown."""
    url, name = _named_url()
    storage = AsyncRedisStorage(url, prefix=prefix)
    breakers = BreakerRegistry(storage=storage, log=False)
    app = FastAPI()
    app.include_router(admin_router(breakers, actions=()), prefix="/ops")

    async def serve() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            breakers.get("jira")
            assert (await http.get("/ops/health")).status_code == 200
        assert _connected(client, name) == 1

    await _drive_lifespan(app, serve)
    _wait_gone(client, name)


@pytest.mark.anyio
@asyncio_only
async def test_router_without_close_on_shutdown_leaves_clients(
    client: redis.Redis, prefix: str
) -> None:
    """close_on_shutdown=False gives the router no closing lifespan."""
    url, name = _named_url()
    storage = AsyncRedisStorage(url, prefix=prefix)
    breakers = BreakerRegistry(storage=storage, log=False)
    app = FastAPI()
    app.include_router(admin_router(breakers, actions=(), close_on_shutdown=False))

    async def use() -> None:
        await breakers.get("jira").stats_async()

    await _drive_lifespan(app, use)
    assert _connected(client, name) == 1
    await storage.aclose()
    _wait_gone(client, name)


# -- a real uvicorn ---------------------------------------------------------------------------


def test_uvicorn_shutdown_closes_the_router_clients(client: redis.Redis, prefix: str) -> None:
    """Served by uvicorn, the router's Redis client is open while serving, closed after."""
    url, name = _named_url()
    storage = AsyncRedisStorage(url, prefix=prefix)
    breakers = BreakerRegistry(storage=storage, log=False)
    breakers.get("jira")
    seen: dict[str, Any] = {}

    @asynccontextmanager
    async def own(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        yield {"greeting": "hello"}
        seen["own shutdown"] = True  # the user's shutdown code still runs

    app = FastAPI(lifespan=own)
    app.include_router(admin_router(breakers, actions=()), prefix="/ops")

    @app.get("/greeting")
    async def greeting(request: Request) -> str:
        return str(request.state.greeting)

    with running_server(app) as base:
        assert httpx.get(f"{base}/greeting").json() == "hello"
        assert httpx.get(f"{base}/ops/breakers/jira").json()["state"] == "closed"
        assert _connected(client, name) == 1
    _wait_gone(client, name)
    pool: Any = storage.client.connection_pool  # type: ignore[union-attr]
    assert not any(c.is_connected for c in pool._available_connections)
    assert "own shutdown" in seen


def test_uvicorn_shutdown_with_the_plain_lifespan(client: redis.Redis, prefix: str) -> None:
    """``FastAPI(lifespan=lifespan)`` under uvicorn closes the default registry's clients."""
    url, name = _named_url()
    jira = CircuitBreaker("jira", storage=AsyncRedisStorage(url, prefix=prefix))
    app = FastAPI(lifespan=lifespan)

    @app.get("/state")
    async def state() -> str:
        return (await jira.stats_async()).state

    with running_server(app) as base:
        assert httpx.get(f"{base}/state").json() == "closed"
        assert _connected(client, name) == 1
    _wait_gone(client, name)
