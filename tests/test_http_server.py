"""The scripted HTTP test server: replies in order, faults as scripted, nothing left behind."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import httpx
import pytest
import requests

from http_server import Reply, ScriptedServer, Seen

if TYPE_CHECKING:
    from collections.abc import Iterator

HTTPX_CONNECTION_ERRORS = (httpx.ReadError, httpx.RemoteProtocolError)
SHORT = httpx.Timeout(5.0, read=0.2)


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


@pytest.fixture
def client(server: ScriptedServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=5.0) as c:
        yield c


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def chunks() -> Iterator[bytes]:
    yield b"first,"
    yield b""  # an empty piece must not end the chunked body early
    yield b"second," * 1000
    yield b"last"


CHUNKED = b"first," + b"second," * 1000 + b"last"


def test_scripted_statuses_come_in_order_then_the_default(
    server: ScriptedServer, client: httpx.Client
) -> None:
    """Scripted replies are served in order, ints as statuses, then `default`, settable."""
    server.script("/x", 500, 502, Reply(201, b"made"))
    got = [client.get("/x") for _ in range(4)]
    assert [(r.status_code, r.content) for r in got] == [
        (500, b"ok"),
        (502, b"ok"),
        (201, b"made"),
        (200, b"ok"),
    ]
    server.default = Reply(404, b"gone")
    assert (client.get("/x").status_code, client.get("/other").content) == (404, b"gone")
    assert server.connections_opened == 1  # keep-alive: one connection served them all


def test_requests_sees_scripted_statuses_on_one_connection(
    server: ScriptedServer, session: requests.Session
) -> None:
    """requests gets scripted statuses in order on a single kept-alive connection."""
    server.script("/r", 503, 429)
    assert [session.get(server.url + "/r").status_code for _ in range(3)] == [503, 429, 200]
    assert server.connections_opened == 1


def test_scripts_are_per_path_and_ignore_the_query_string(
    server: ScriptedServer, client: httpx.Client
) -> None:
    """A script belongs to its path; the query string plays no part in matching."""
    server.script("/a", 500)
    server.script("/b", 418)
    assert client.get("/b", params={"q": "1"}).status_code == 418
    assert client.get("/a?x=y").status_code == 500
    assert client.get("/a").status_code == 200
    assert (server.hits("/a"), server.hits("/b"), server.hits()) == (2, 1, 3)
    server.script("/a", 502)  # a new script replaces the old queue
    assert client.get("/a").status_code == 502


def test_retry_after_header_arrives(
    server: ScriptedServer, client: httpx.Client, session: requests.Session
) -> None:
    """Scripted headers such as Retry-After reach both clients."""
    server.script("/busy", *[Reply(503, b"busy", {"Retry-After": "1"})] * 2)
    response = client.get("/busy")
    assert (response.status_code, response.headers["retry-after"]) == (503, "1")
    assert session.get(server.url + "/busy").headers["Retry-After"] == "1"


def test_bodyless_statuses_and_head_keep_the_connection_in_step(
    server: ScriptedServer, client: httpx.Client
) -> None:
    """204, 304 and HEAD send no body, so the next reply on the connection is intact."""
    server.script("/n", 204, 304)
    assert client.get("/n").content == b""
    assert client.get("/n").content == b""
    head = client.head("/n")
    assert (head.content, head.headers["content-length"]) == (b"", "2")
    assert client.get("/n").content == b"ok"
    assert server.connections_opened == 1


def test_reset_gives_a_connection_error(
    server: ScriptedServer, client: httpx.Client, session: requests.Session
) -> None:
    """A reset aborts the connection: httpx and requests raise connection errors."""
    server.script("/r", *[Reply(action="reset")] * 2)
    with pytest.raises(HTTPX_CONNECTION_ERRORS):
        client.get("/r")
    with pytest.raises(requests.ConnectionError):
        session.get(server.url + "/r")
    assert client.get("/r").status_code == 200  # a fresh connection works
    assert server.hits("/r") == 3


def test_reset_sends_rst_not_fin(server: ScriptedServer, client: httpx.Client) -> None:
    """A reset reaches httpx as a reset (ReadError), not as a clean disconnect."""
    server.script("/r", Reply(action="reset"))
    with pytest.raises(httpx.ReadError):
        client.get("/r")


def test_close_gives_a_connection_error(
    server: ScriptedServer, client: httpx.Client, session: requests.Session
) -> None:
    """A close without a response: httpx RemoteProtocolError, requests ConnectionError."""
    server.script("/c", *[Reply(action="close")] * 2)
    with pytest.raises(httpx.RemoteProtocolError):
        client.get("/c")
    with pytest.raises(requests.ConnectionError):
        session.get(server.url + "/c")
    assert client.get("/c").status_code == 200


def test_hang_times_out_the_client_and_stop_returns_promptly() -> None:
    """A hang makes short read timeouts fire, and stop() still returns at once after."""
    before = set(threading.enumerate())
    server = ScriptedServer().start()
    server.default = Reply(action="hang")
    with httpx.Client(base_url=server.url, timeout=SHORT) as client, requests.Session() as s:
        with pytest.raises(httpx.ReadTimeout):
            client.get("/slow")
        with pytest.raises(requests.ReadTimeout):
            s.get(server.url + "/slow", timeout=(5.0, 0.2))
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 1.0
    assert server.hits("/slow") == 2
    # Threads started before the test (an idle worker of an earlier test) may end meanwhile:
    # what must hold is that none was left behind by this one.
    assert set(threading.enumerate()) - before == set()


def test_release_ends_hangs_and_reset_rearms_them(
    server: ScriptedServer, client: httpx.Client
) -> None:
    """Once `release` is set a hang closes at once; `reset()` clears it so hangs block again."""
    server.release.set()
    server.script("/h", Reply(action="hang"))
    with pytest.raises(httpx.RemoteProtocolError):
        client.get("/h")
    server.reset()
    assert not server.release.is_set()
    server.script("/h", Reply(action="hang"))
    with pytest.raises(httpx.ReadTimeout):
        client.get("/h", timeout=SHORT)


def test_outage_resets_everything_until_lifted(
    server: ScriptedServer, client: httpx.Client, session: requests.Session
) -> None:
    """outage(True) resets every path whatever the script; outage(False) restores the script."""
    server.script("/a", 503)
    server.outage(True)
    for path in ("/a", "/b", "/a"):
        with pytest.raises(HTTPX_CONNECTION_ERRORS):
            client.get(path)
    with pytest.raises(requests.ConnectionError):
        session.get(server.url + "/b")
    server.outage(False)
    assert [client.get("/a").status_code, client.get("/a").status_code] == [503, 200]
    assert server.hits() == 6  # faulted requests are recorded too


def test_chunked_generator_bodies_are_read(
    server: ScriptedServer, client: httpx.Client, session: requests.Session
) -> None:
    """Generator bodies sent chunked are read in full and de-chunked, on a kept connection."""
    assert client.post("/up", content=chunks()).status_code == 200
    assert session.post(server.url + "/up", data=chunks()).status_code == 200
    assert client.post("/up", content=b"after").status_code == 200  # framing stayed in step
    bodies = [(s.headers.get("transfer-encoding"), s.body) for s in server.seen]
    assert bodies == [("chunked", CHUNKED), ("chunked", CHUNKED), (None, b"after")]


def test_seen_records_method_path_headers_and_body(
    server: ScriptedServer, client: httpx.Client
) -> None:
    """`seen` records method, path without query, the query, lower-cased headers and body."""
    client.put("/items/7?v=2", content=b"payload", headers={"X-Trace-ID": "abc"})
    client.delete("/items/7")
    first, second = server.seen
    assert isinstance(first, Seen)
    assert (first.method, first.path, first.query, first.body) == (
        "PUT",
        "/items/7",
        "v=2",
        b"payload",
    )
    assert first.headers["x-trace-id"] == "abc"
    assert first.headers["content-length"] == "7"
    assert all(name == name.lower() for name in first.headers)
    assert (second.method, second.body) == ("DELETE", b"")
    server.seen.clear()  # a copy: the record is unchanged
    assert len(server.seen) == 2


def test_reset_clears_state(server: ScriptedServer, client: httpx.Client) -> None:
    """reset() clears scripts, seen, outage and default (the connection count stays)."""
    server.script("/a", 500)
    server.default = Reply(404)
    server.outage(True)
    with pytest.raises(HTTPX_CONNECTION_ERRORS):
        client.get("/a")
    server.reset()
    assert (server.seen, server.hits()) == ([], 0)
    assert client.get("/a").status_code == 200
    assert server.connections_opened == 2


def test_stop_leaves_no_threads_even_with_idle_and_hung_connections() -> None:
    """stop() joins the accept thread and every handler, idle keep-alive and hung alike."""
    before = set(threading.enumerate())
    server = ScriptedServer().start()
    server.script("/hang", Reply(action="hang"))
    with httpx.Client(base_url=server.url, timeout=5.0) as idle, requests.Session() as s:
        idle.get("/")
        s.get(server.url + "/")
        outcome: list[BaseException] = []
        hung = threading.Thread(target=lambda: _catch(outcome, idle.get, "/hang"))
        hung.start()
        assert server.connections_opened >= 2
        server.stop()
        server.stop()  # idempotent
        hung.join()
    # Threads started before the test (an idle worker of an earlier test) may end meanwhile:
    # what must hold is that none was left behind by this one.
    assert set(threading.enumerate()) - before == set()
    # The hang either started (then stop closed it) or came after the listener closed.
    assert len(outcome) == 1
    assert isinstance(outcome[0], httpx.TransportError)


def _catch(outcome: list[BaseException], fn: object, *args: object) -> None:
    try:
        fn(*args)  # type: ignore[operator]
    except BaseException as exc:
        outcome.append(exc)


def test_server_api_guards() -> None:
    """url needs a started server, start works once, stop before start is harmless."""
    server = ScriptedServer()
    server.stop()
    with pytest.raises(RuntimeError):
        _ = server.url
    assert server.connections_opened == 0
    with server:
        assert server.url.startswith("http://127.0.0.1:")
        with pytest.raises(RuntimeError):
            server.start()
    with pytest.raises(ValueError, match="action"):
        Reply(action="explode")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_async_httpx_sees_statuses_and_faults(server: ScriptedServer) -> None:
    """httpx.AsyncClient gets scripted statuses, reset/close errors and hang timeouts."""
    server.script("/a", 500, Reply(action="reset"), Reply(action="close"), Reply(action="hang"))
    async with httpx.AsyncClient(base_url=server.url, timeout=SHORT) as client:
        assert (await client.get("/a")).status_code == 500
        with pytest.raises(HTTPX_CONNECTION_ERRORS):
            await client.get("/a")
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/a")
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/a")
        assert (await client.post("/a", content=b"x")).status_code == 200
    assert server.hits("/a") == 5
