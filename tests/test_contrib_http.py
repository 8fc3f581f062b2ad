"""The HTTP wrappers against a real server on loopback: one behaviour table, three clients.

Every row runs through httpx (sync), httpx (async, on asyncio and trio) and requests,
each talking to `ScriptedServer` over real sockets; nothing of the transports is mocked.
Waits between attempts run on a `ManualClock`, so Retry-After and backoff are observed
exactly and no test sleeps.
"""

from __future__ import annotations

import gc
import logging
import pickle
import socket
import threading
import tracemalloc
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

import stalwart
from http_server import Reply, ScriptedServer
from stalwart import CircuitBreaker, CircuitOpenError, TimeoutExceeded, _clock
from stalwart.contrib import _http as http_rules
from stalwart.contrib._http import DEFAULT_BREAKER_OPTIONS, DEFAULT_MAX_HOSTS, HttpRules
from stalwart.contrib.httpx import (
    AsyncResilientTransport,
    HttpxCircuitOpenError,
    ResilientTransport,
)
from stalwart.contrib.requests import (
    RequestsCircuitOpenError,
    ResilientAdapter,
    resilient_session,
)
from stalwart.testing import ManualClock

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

KINDS = ["httpx", "httpx-asyncio", "httpx-trio", "requests"]


class Recorder:
    """A retry listener that keeps every scheduled delay."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.gave_up = 0

    def on_retry(self, details: stalwart.RetryDetails) -> None:
        self.delays.append(details.delay)

    def on_give_up(self, details: stalwart.RetryDetails) -> None:
        self.gave_up += 1


def fast_retry(recorder: Recorder | None = None, **options: Any) -> stalwart.RetryPolicy:
    options.setdefault("backoff", stalwart.constant(0.01))
    return stalwart.retry(listeners=[recorder] if recorder else [], log=False, **options)


@dataclass
class Outcome:
    """What one request came to: a status and body, or an exception."""

    status: int | None = None
    body: bytes = b""
    error: BaseException | None = None
    headers: dict[str, str] = field(default_factory=dict)


class Client:
    """One kind of client with stalwart's wrapper, behind one blocking interface."""

    def __init__(self, kind: str, options: dict[str, Any]) -> None:
        self.kind = kind
        self.options = options
        self._sync: httpx.Client | requests.Session | None = None
        if kind == "httpx":
            self._sync = httpx.Client(transport=ResilientTransport(**options))
        elif kind == "requests":
            self._sync = resilient_session(**options)

    @property
    def connection_errors(self) -> tuple[type[BaseException], ...]:
        if self.kind == "requests":
            return (requests.ConnectionError,)
        return (httpx.TransportError,)

    @property
    def timeouts(self) -> tuple[type[BaseException], ...]:
        if self.kind == "requests":
            return (requests.Timeout,)
        return (httpx.TimeoutException,)

    def send(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | Callable[[], Iterator[bytes]] | None = None,
    ) -> Outcome:
        """Send one request; return its outcome, exceptions included."""
        try:
            if self.kind.startswith("httpx-"):
                return anyio.run(
                    self._send_async, method, url, headers, content, backend=self.kind[6:]
                )
            return self._send_sync(method, url, headers, content)
        except Exception as exc:
            return Outcome(error=exc)

    def _send_sync(self, method: str, url: str, headers: Any, content: Any) -> Outcome:
        body = content() if callable(content) else content
        if isinstance(self._sync, httpx.Client):
            response = self._sync.request(method, url, headers=headers, content=body)
            return Outcome(response.status_code, response.content, headers=dict(response.headers))
        assert self._sync is not None
        reply = self._sync.request(method, url, headers=headers, data=body)
        return Outcome(reply.status_code, reply.content, headers=dict(reply.headers))

    async def _send_async(self, method: str, url: str, headers: Any, content: Any) -> Outcome:
        body: Any = content
        if callable(content):  # httpx wants an async iterator for async requests
            parts = content()

            async def chunks() -> Any:
                for chunk in parts:
                    yield chunk

            body = chunks()
        transport = AsyncResilientTransport(**self.options)
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.request(method, url, headers=headers, content=body)
            return Outcome(response.status_code, response.content, headers=dict(response.headers))

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as running:
        yield running


@pytest.fixture
def client_of(kind: str) -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(**options: Any) -> Client:
        options.setdefault("per_host", False)
        made.append(Client(kind, options))
        return made[-1]

    yield make
    for client in made:
        client.close()


@pytest.fixture
def clock() -> Iterator[ManualClock]:
    with ManualClock(1000.0) as manual:
        yield manual


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the behaviour table -------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One scripted exchange: replies, the request, and what must come of it."""

    id: str
    replies: tuple[Reply | int, ...]
    method: str = "GET"
    headers: dict[str, str] | None = None
    status: int | None = 200  # None: an error is expected
    hits: int = 1
    attempts: int = 3


RESET = Reply(action="reset")
CLOSE = Reply(action="close")
TABLE = [
    Row("success-first-time", (200,), hits=1),
    Row("503-then-200", (503, 503, 200), hits=3),
    Row("each-retried-status", (429, 500, 502, 504, 200), attempts=5, hits=5),
    Row("503-until-attempts-run-out-returns-it", (503, 503, 503, 200), status=503, hits=3),
    Row("404-not-retried", (404, 200), status=404, hits=1),
    Row("400-not-retried", (400, 200), status=400, hits=1),
    Row("501-not-retried", (501, 200), status=501, hits=1),
    Row("put-is-idempotent", (503, 200), method="PUT", hits=2),
    Row("delete-is-idempotent", (500, 200), method="DELETE", hits=2),
    Row("post-503-not-retried", (503, 200), method="POST", status=503, hits=1),
    Row("patch-503-not-retried", (503, 200), method="PATCH", status=503, hits=1),
    Row(
        "post-with-idempotency-key-retried",
        (503, 200),
        method="POST",
        headers={"Idempotency-Key": "k-1"},
        hits=2,
    ),
    Row("get-reset-retried", (RESET, 200), hits=2),
    Row("get-close-retried", (CLOSE, 200), hits=2),
    Row("post-reset-after-sending-not-retried", (RESET, 200), method="POST", status=None),
    Row("get-reset-every-time-raises", (RESET, RESET, RESET, 200), status=None, hits=3),
]


@pytest.mark.parametrize("row", TABLE, ids=[row.id for row in TABLE])
def test_behaviour_table(row: Row, server: ScriptedServer, client_of: Any, clock: ManualClock):
    """Each client retries, returns and raises as the table says, against a real server."""
    server.script("/r", *row.replies)
    client = client_of(retry=fast_retry(attempts=row.attempts))
    outcome = client.send(row.method, f"{server.url}/r", headers=row.headers, content=b"x")
    if row.status is None:
        assert isinstance(outcome.error, client.connection_errors), outcome
    else:
        assert outcome.error is None, outcome.error
        assert outcome.status == row.status
    assert server.hits("/r") == row.hits


def test_last_response_is_returned_whole(
    server: ScriptedServer, client_of: Any, clock: ManualClock
):
    """When attempts run out on statuses, the caller gets the last response, body and all."""
    server.script("/r", Reply(503, b"one"), Reply(503, b"two"), Reply(503, b"three"))
    outcome = client_of(retry=fast_retry(attempts=3)).send("GET", f"{server.url}/r")
    assert (outcome.status, outcome.body) == (503, b"three")


def test_gives_up_with_the_last_error_and_a_note(
    server: ScriptedServer, client_of: Any, clock: ManualClock
):
    """Connection errors that outlast the attempts raise the last one, with stalwart's note."""
    server.outage(down=True)
    outcome = client_of(retry=fast_retry(attempts=2)).send("GET", f"{server.url}/r")
    assert outcome.error is not None
    assert any("gave up" in note for note in getattr(outcome.error, "__notes__", []))
    assert server.hits() == 2


def test_refused_post_is_retried(kind: str, client_of: Any, clock: ManualClock):
    """A POST whose connection was refused was never sent, so it is retried."""
    recorder = Recorder()
    client = client_of(retry=fast_retry(recorder, attempts=3))
    outcome = client.send("POST", f"http://127.0.0.1:{free_port()}/r", content=b"x")
    assert isinstance(outcome.error, client.connection_errors)
    assert len(recorder.delays) == 2


def test_one_shot_body_is_sent_once(server: ScriptedServer, client_of: Any, clock: ManualClock):
    """A streamed (generator) body cannot be replayed: the request is sent once."""
    server.script("/r", 503, 200)

    def body() -> Iterator[bytes]:
        yield b"part-1,"
        yield b"part-2"

    outcome = client_of(retry=fast_retry(attempts=3)).send("PUT", f"{server.url}/r", content=body)
    assert outcome.status == 503
    assert server.hits("/r") == 1
    assert server.seen[0].body == b"part-1,part-2"


def test_body_is_replayed_on_retry(server: ScriptedServer, client_of: Any, clock: ManualClock):
    """A body given as bytes is sent again, whole, with each attempt."""
    server.script("/r", 503, 200)
    outcome = client_of(retry=fast_retry()).send("PUT", f"{server.url}/r", content=b"payload")
    assert outcome.status == 200
    assert [seen.body for seen in server.seen] == [b"payload", b"payload"]


# --- Retry-After ---------------------------------------------------------------------------


def test_retry_after_seconds_raise_the_wait(
    server: ScriptedServer, client_of: Any, clock: ManualClock
):
    """A Retry-After of 7 s makes the next wait 7 s, above the backoff."""
    recorder = Recorder()
    server.script("/r", Reply(429, headers={"Retry-After": "7"}), 200)
    outcome = client_of(retry=fast_retry(recorder)).send("GET", f"{server.url}/r")
    assert outcome.status == 200
    assert recorder.delays == [7.0]
    assert clock.sleeps == [7.0]


def test_retry_after_http_date(server: ScriptedServer, client_of: Any, clock: ManualClock):
    """A Retry-After HTTP date in the future sets the wait to the time until it."""
    recorder = Recorder()
    when = datetime.now(timezone.utc) + timedelta(seconds=30)
    server.script(
        "/r", Reply(503, headers={"Retry-After": format_datetime(when, usegmt=True)}), 200
    )
    assert client_of(retry=fast_retry(recorder)).send("GET", f"{server.url}/r").status == 200
    assert len(recorder.delays) == 1
    assert 25 <= recorder.delays[0] <= 30


def test_retry_after_is_capped(server: ScriptedServer, client_of: Any, clock: ManualClock):
    """A Retry-After above max_retry_after waits only max_retry_after."""
    recorder = Recorder()
    server.script("/r", Reply(503, headers={"Retry-After": "3600"}), 200)
    client = client_of(retry=fast_retry(recorder), max_retry_after=5)
    assert client.send("GET", f"{server.url}/r").status == 200
    assert recorder.delays == [5.0]


def test_retry_after_past_the_deadline_ends_the_retries(
    server: ScriptedServer, client_of: Any, clock: ManualClock
):
    """A wait that would end past the deadline is not started: the 503 is returned."""
    server.script("/r", Reply(503, headers={"Retry-After": "20"}), 200)
    client = client_of(retry=fast_retry(deadline=10))
    assert client.send("GET", f"{server.url}/r").status == 503
    assert server.hits("/r") == 1
    assert clock.sleeps == []


# --- breakers ------------------------------------------------------------------------------


def test_per_host_breaker_opens_and_rejects_without_io(
    server: ScriptedServer, client_of: Any, clock: ManualClock
):
    """5xx responses open the host's breaker; then requests fail before reaching the server."""
    server.default = Reply(500)
    client = client_of(
        retry=None, per_host=True, breaker_options={"failure_threshold": 3, "window": None}
    )
    for _ in range(3):
        assert client.send("GET", f"{server.url}/r").status == 500
    host = server.url.removeprefix("http://")
    assert stalwart.registry.get(f"http:{host}").state is stalwart.State.OPEN
    outcome = client.send("GET", f"{server.url}/r")
    assert isinstance(outcome.error, CircuitOpenError)
    assert outcome.error.name == f"http:{host}"
    assert server.hits() == 3


def test_4xx_do_not_count_as_breaker_failures(
    server: ScriptedServer, client_of: Any, clock: ManualClock
):
    """A host that answers 404 is healthy: the breaker stays closed."""
    server.default = Reply(404)
    breaker = CircuitBreaker("api", failure_threshold=2, window=None, log=False)
    client = client_of(retry=None, breaker=breaker)
    for _ in range(5):
        assert client.send("GET", f"{server.url}/r").status == 404
    assert breaker.state is stalwart.State.CLOSED
    assert breaker.stats().failures == 0


def test_connection_errors_count_as_breaker_failures(
    server: ScriptedServer, client_of: Any, clock: ManualClock
):
    """Each failed attempt, retried or not, is one failure of the named breaker."""
    server.outage(down=True)
    breaker = CircuitBreaker("api", failure_threshold=100, window=None, log=False)
    client = client_of(retry=fast_retry(attempts=3), breaker=breaker)
    assert client.send("GET", f"{server.url}/r").error is not None
    stats = breaker.stats()
    assert stats.failures == 3
    assert stats.last_failure_type is not None


def test_breaker_opened_during_retries_stops_them(
    server: ScriptedServer, client_of: Any, clock: ManualClock
):
    """Once the breaker opens mid-way the retries end, and the last response is returned."""
    server.script("/r", Reply(503, b"first"), Reply(503, b"second"), 200)
    breaker = CircuitBreaker("api", failure_threshold=2, window=None, log=False)
    client = client_of(retry=fast_retry(attempts=5), breaker=breaker)
    outcome = client.send("GET", f"{server.url}/r")
    assert (outcome.status, outcome.body) == (503, b"second")
    assert server.hits() == 2
    assert breaker.state is stalwart.State.OPEN
    assert isinstance(client.send("GET", f"{server.url}/r").error, CircuitOpenError)
    assert server.hits() == 2


def test_retry_deadline_cuts_the_attempt_timeout(server: ScriptedServer, client_of: Any):
    """The retry policy's own deadline limits each attempt's timeouts, as a deadline block does."""
    server.default = Reply(action="hang")
    client = client_of(retry=fast_retry(attempts=5, deadline=0.3))
    start = stalwart._clock.now()
    outcome = client.send("GET", f"{server.url}/r")
    assert isinstance(outcome.error, client.timeouts), outcome
    assert stalwart._clock.now() - start < 5
    assert server.hits() == 1


# --- timeouts and deadlines ----------------------------------------------------------------


def test_timeout_limits_each_attempt(server: ScriptedServer, client_of: Any):
    """With timeout=0.2 a hanging server times out each attempt; every attempt is made."""
    server.default = Reply(action="hang")
    client = client_of(retry=fast_retry(attempts=2, backoff=stalwart.constant(0)), timeout=0.2)
    outcome = client.send("GET", f"{server.url}/r")
    assert isinstance(outcome.error, client.timeouts), outcome
    assert server.hits() == 2


def test_deadline_cuts_the_attempt_timeout(server: ScriptedServer, client_of: Any):
    """Under a 0.3 s deadline a hanging request times out by then, with no retry after it."""
    server.default = Reply(action="hang")
    client = client_of(retry=fast_retry(attempts=5))
    start = stalwart._clock.now()
    with stalwart.deadline(0.3):
        outcome = client.send("GET", f"{server.url}/r")
    elapsed = stalwart._clock.now() - start
    assert isinstance(outcome.error, client.timeouts), outcome
    assert elapsed < 5  # the client's own default (5 s httpx, none for requests) never applied
    assert server.hits() == 1


def test_spent_deadline_sends_nothing(server: ScriptedServer, client_of: Any, clock: ManualClock):
    """With no time left, the request fails with TimeoutExceeded before any I/O."""
    client = client_of(retry=fast_retry())
    with stalwart.deadline(1):
        clock.advance(2)
        outcome = client.send("GET", f"{server.url}/r")
    assert isinstance(outcome.error, TimeoutExceeded)
    assert server.hits() == 0


# --- correlation ---------------------------------------------------------------------------


def test_correlation_id_is_sent(server: ScriptedServer, client_of: Any):
    """The correlation id in force goes out as X-Correlation-ID on every attempt."""
    server.script("/r", 503, 200)
    client = client_of(retry=fast_retry(backoff=stalwart.constant(0)))
    with stalwart.correlation_id("order-42"):
        assert client.send("GET", f"{server.url}/r").status == 200
    assert [seen.headers.get("x-correlation-id") for seen in server.seen] == ["order-42"] * 2
    client.send("GET", f"{server.url}/r")
    assert "x-correlation-id" not in server.seen[-1].headers


def test_request_header_wins_over_correlation_id(server: ScriptedServer, client_of: Any):
    """A request that sets the header itself keeps its own value."""
    client = client_of(retry=None, correlation_header="X-Request-ID")
    with stalwart.correlation_id("ambient"):
        client.send("GET", f"{server.url}/r", headers={"X-Request-ID": "mine"})
    assert server.seen[0].headers["x-request-id"] == "mine"


# --- connections ---------------------------------------------------------------------------


LEAK_REQUESTS = 1000
"""Retried requests per leak test: a leaked connection shows as one socket per request, and
1,000 is far past httpx's pool limit (100), where a leak would time out waiting for one."""


def test_no_connection_is_leaked_by_retried_requests(
    kind: str, server: ScriptedServer, client_of: Any, clock: ManualClock
):
    """Responses retried past are read and closed: 200 retried requests reuse few sockets."""
    if kind.startswith("httpx-"):
        pytest.skip("covered by the async test below, which keeps one client")
    server.script("/r", *([503, 200] * LEAK_REQUESTS))
    client = client_of(retry=fast_retry(attempts=2, backoff=stalwart.constant(0)))
    for _ in range(LEAK_REQUESTS):
        assert client.send("GET", f"{server.url}/r").status == 200
    gc.collect()  # an unclosed response would raise ResourceWarning (an error here)
    assert server.hits("/r") == 2 * LEAK_REQUESTS
    assert server.connections_opened <= 2


@pytest.mark.anyio
async def test_no_connection_is_leaked_async(server: ScriptedServer, clock: ManualClock):
    """The async transport also closes what it retries past: few sockets for 200 retries."""
    server.script("/r", *([503, 200] * LEAK_REQUESTS))
    transport = AsyncResilientTransport(
        retry=fast_retry(attempts=2, backoff=stalwart.constant(0)), per_host=False
    )
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(LEAK_REQUESTS):
            assert (await client.get(f"{server.url}/r")).status_code == 200
    gc.collect()
    assert server.hits("/r") == 2 * LEAK_REQUESTS
    assert server.connections_opened <= 2


# --- construction --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"timeout": -1}, ValueError, "timeout"),
        ({"timeout": 0}, ValueError, "timeout"),
        ({"max_retry_after": float("nan")}, ValueError, "max_retry_after"),
        ({"retry_statuses": [503, 700]}, ValueError, "retry_statuses"),
        ({"retry_statuses": "503"}, TypeError, "retry_statuses"),
        ({"idempotent_methods": ["GET", 3]}, ValueError, "idempotent_methods"),
        ({"idempotency_header": "Bad Header"}, ValueError, "idempotency_header"),
        ({"correlation_header": ""}, ValueError, "correlation_header"),
        ({"retry": 3}, TypeError, "retry"),
        ({"breaker": "api"}, TypeError, "breaker"),
        ({"registry": {}}, TypeError, "registry"),
        ({"breaker_options": {"failure_threshold": 0}}, ValueError, "failure_threshold"),
        ({"breaker_options": {"colour": "red"}}, TypeError, "colour"),
        ({"breaker_options": {"window": 5}, "per_host": False}, ValueError, "breaker_options"),
        ({"breaker_options": {"minimum_calls": 200}}, ValueError, "minimum_calls"),
        ({"max_hosts": 0}, ValueError, "max_hosts"),
        ({"max_hosts": "10"}, TypeError, "max_hosts"),
        ({"max_hosts": True}, TypeError, "max_hosts"),
    ],
)
@pytest.mark.parametrize("make", [ResilientTransport, AsyncResilientTransport, ResilientAdapter])
def test_bad_options_raise_at_construction(make: Any, options: Any, error: Any, words: str):
    """Every wrapper refuses a bad option when built, naming it."""
    with pytest.raises(error, match=words):
        make(**options)


def test_breaker_options_lay_over_the_defaults():
    """Given options replace the defaults they name; turning the rate off takes its sizes."""
    rules = rules_of(breaker_options={"recovery_timeout": 5})
    assert rules.breaker_options == {**DEFAULT_BREAKER_OPTIONS, "recovery_timeout": 5}
    rules = rules_of(breaker_options={"failure_rate": None, "failure_threshold": 5, "window": 30})
    breaker = guard(rules, "a")
    assert breaker is not None
    config = breaker.config
    assert (config.failure_rate, config.window_calls, config.failure_threshold) == (None, None, 5)
    assert config.window == 30


def test_wrapped_transport_must_be_a_transport():
    """A transport of the wrong colour is refused at once."""
    with pytest.raises(TypeError, match="transport"):
        ResilientTransport(httpx.AsyncHTTPTransport())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="transport"):
        AsyncResilientTransport(httpx.HTTPTransport())  # type: ignore[arg-type]


def test_custom_transport_is_wrapped(server: ScriptedServer, clock: ManualClock):
    """Requests go through the transport given, with stalwart's retries around it."""
    server.script("/r", 503, 200)
    inner = httpx.HTTPTransport(retries=0)
    with httpx.Client(
        transport=ResilientTransport(inner, retry=fast_retry(), per_host=False)
    ) as c:
        assert c.get(f"{server.url}/r").status_code == 200
    assert server.hits("/r") == 2


def test_retries_are_logged_with_the_request_and_status(
    server: ScriptedServer, clock: ManualClock, caplog: pytest.LogCaptureFixture
):
    """A retried response is logged by method, URL (no query) and HTTP status."""
    server.script("/r", 503, 200)
    transport = ResilientTransport(retry=stalwart.retry(backoff=stalwart.constant(0)))
    with (
        caplog.at_level(logging.INFO, "stalwart.retry"),
        httpx.Client(transport=transport) as client,
    ):
        assert client.get(f"{server.url}/r?token=secret").status_code == 200
    [record] = caplog.records
    assert record.getMessage().startswith(f"retrying GET {server.url}/r in ")
    assert record.getMessage().endswith("failed with HTTP 503")
    assert "secret" not in record.getMessage()


def test_response_sent_once_is_left_unread(server: ScriptedServer):
    """Without retries a 503 is handed back as it came: a streamed body is not read first."""
    server.script("/r", Reply(503, b"busy"))
    with httpx.Client(transport=ResilientTransport(retry=None, per_host=False)) as client:
        request = client.build_request("GET", f"{server.url}/r")
        response = client.send(request, stream=True)
        try:
            assert response.status_code == 503
            assert not response.is_stream_consumed
            assert response.read() == b"busy"
        finally:
            response.close()


# --- waits too long to make ----------------------------------------------------------------

HUGE_RETRY_AFTER = ["9999999999", "Fri, 31 Dec 9999 23:59:59 GMT"]


@pytest.mark.parametrize("value", HUGE_RETRY_AFTER)
def test_retry_after_too_long_to_wait_hands_back_the_response(
    value: str, server: ScriptedServer, client_of: Any, clock: ManualClock
):
    """With no cap, a Retry-After longer than any wait is not waited: the 503 comes back."""
    server.script("/r", Reply(503, b"later", headers={"Retry-After": value}), 200)
    outcome = client_of(retry=fast_retry(), max_retry_after=None).send("GET", f"{server.url}/r")
    assert (outcome.status, outcome.body) == (503, b"later"), outcome.error
    assert {k.lower(): v for k, v in outcome.headers.items()}["retry-after"] == value
    assert server.hits("/r") == 1
    assert clock.sleeps == []


@pytest.mark.parametrize("value", HUGE_RETRY_AFTER)
@pytest.mark.parametrize("sync_kind", ["httpx", "requests"])
def test_huge_retry_after_on_the_real_clock(value: str, sync_kind: str, server: ScriptedServer):
    """On the real clock too, a wait too long to make returns the response, not OverflowError."""
    server.script("/r", Reply(503, headers={"Retry-After": value}), 200)
    client = Client(sync_kind, {"retry": fast_retry(), "max_retry_after": None, "per_host": False})
    try:
        outcome = client.send("GET", f"{server.url}/r")
    finally:
        client.close()
    assert outcome.error is None, outcome.error
    assert outcome.status == 503


def test_wait_past_the_core_limit_is_not_waited(
    server: ScriptedServer, client_of: Any, clock: ManualClock
):
    """A Retry-After past stalwart's MAX_WAIT, though within the platform's, comes back unretried."""
    seconds = int(_clock.MAX_WAIT) + 1  # on Linux far below threading.TIMEOUT_MAX
    recorder = Recorder()
    server.script("/r", Reply(503, headers={"Retry-After": str(seconds)}), 200)
    client = client_of(retry=fast_retry(recorder), max_retry_after=None)
    assert client.send("GET", f"{server.url}/r").status == 503
    assert (server.hits("/r"), recorder.gave_up, clock.sleeps) == (1, 0, [])


def test_timeouts_are_cut_to_the_core_limit():
    """A timeout longer than any wait is cut to stalwart's MAX_WAIT, the one limit for all."""
    assert rules_of(timeout=1e300).timeout == _clock.MAX_WAIT
    assert http_rules.MAX_WAIT == _clock.MAX_WAIT


def test_huge_cap_is_no_wait_either(server: ScriptedServer, client_of: Any, clock: ManualClock):
    """A max_retry_after beyond any possible wait behaves as no cap: nothing is waited."""
    server.script("/r", Reply(503, headers={"Retry-After": "9999999999"}), 200)
    outcome = client_of(retry=fast_retry(), max_retry_after=1e300).send("GET", f"{server.url}/r")
    assert outcome.status == 503
    assert clock.sleeps == []


class _Busy(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """An inner transport whose every attempt raises a transient error with a retry hint."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        self.calls = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        raise stalwart.TransientError("busy", retry_after=self.retry_after)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return self.handle_request(request)


def test_error_asking_too_long_a_wait_is_raised_itself():
    """An error whose retry hint is longer than any wait is raised as it came, not retried."""
    inner = _Busy(1e10)
    transport = ResilientTransport(inner, retry=fast_retry(), max_retry_after=None, per_host=False)
    with httpx.Client(transport=transport) as client, pytest.raises(stalwart.TransientError):
        client.get("http://example.invalid/r")
    assert inner.calls == 1


@pytest.mark.anyio
async def test_error_asking_too_long_a_wait_is_raised_itself_async(clock: ManualClock):
    """The async transport also raises an error asking for an impossible wait, unretried."""
    inner = _Busy(1e10)
    transport = AsyncResilientTransport(
        inner, retry=fast_retry(), max_retry_after=None, per_host=False
    )
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(stalwart.TransientError):
            await client.get("http://example.invalid/r")
    assert (inner.calls, clock.sleeps) == (1, [])


@pytest.mark.parametrize("seconds", [1e10, 1e300])
def test_huge_timeout_or_deadline_is_no_error(
    seconds: float, kind: str, server: ScriptedServer, client_of: Any
):
    """A timeout or a deadline longer than any socket timeout sends the request as usual."""
    assert client_of(retry=None, timeout=seconds).send("GET", f"{server.url}/r").status == 200
    with stalwart.deadline(seconds):
        assert client_of(retry=None).send("GET", f"{server.url}/r").status == 200


# --- per-host breakers: bounded ------------------------------------------------------------


def rules_of(**options: Any) -> HttpRules:
    """The rules of a sync transport made with `options` (per-host breakers by default)."""
    return ResilientTransport(**options).rules


def guard(rules: HttpRules, host: str) -> CircuitBreaker | None:
    """The breaker that guards a GET to `host` under `rules`."""
    return rules.route("GET", host, {}, replayable=True).breaker


def test_per_host_breakers_are_capped_least_recently_used_first():
    """Past max_hosts, the least recently used closed breaker leaves the rules and registry."""
    registry = stalwart.BreakerRegistry()
    rules = rules_of(registry=registry, max_hosts=3)
    for host in "abcd":
        assert guard(rules, host) is registry.get(f"http:{host}")
    assert registry.names() == ["http:b", "http:c", "http:d"]
    guard(rules, "b")  # used again: now the most recent
    guard(rules, "e")
    assert registry.names() == ["http:b", "http:d", "http:e"]


def test_open_and_operator_held_breakers_are_never_evicted(caplog: pytest.LogCaptureFixture):
    """Open, half-open, forced-open and disabled breakers stay; a new host goes unguarded."""
    clock = ManualClock()
    registry = stalwart.BreakerRegistry(clock=clock, log=False)
    rules = rules_of(registry=registry, max_hosts=4)
    forced, disabled, opened, probing = [
        guard(rules, host) or pytest.fail("no breaker") for host in "abcd"
    ]
    forced.force_open()
    disabled.disable()
    for _ in range(10):  # ten failures in a row open it
        probing.record_failure(probing.admit())
    clock.advance(30)
    probing.admit()  # recovery timeout passed: half-open, its probe in flight
    for _ in range(10):
        opened.record_failure(opened.admit())
    assert [b.state.value for b in (forced, disabled, opened, probing)] == [
        "forced_open",
        "disabled",
        "open",
        "half_open",
    ]
    with caplog.at_level(logging.WARNING, "stalwart.http"):
        assert guard(rules, "e") is None
        assert guard(rules, "f") is None
    assert registry.names() == ["http:a", "http:b", "http:c", "http:d"]
    assert len(caplog.records) == 1
    assert "max_hosts" in caplog.records[0].getMessage()
    disabled.reset()  # closed again: it can make room
    assert guard(rules, "e") is registry.get("http:e")
    assert registry.names() == ["http:a", "http:c", "http:d", "http:e"]


def test_breakers_made_elsewhere_are_left_in_the_registry():
    """A breaker the rules did not make (configured by the user) is used and never removed."""
    registry = stalwart.BreakerRegistry()
    mine = registry.get("http:x", failure_threshold=3)
    rules = rules_of(registry=registry, max_hosts=1)
    assert guard(rules, "x") is mine
    for host in "yz":
        guard(rules, host)
    assert registry.get("http:x") is mine
    assert registry.names() == ["http:x", "http:z"]


def test_breakers_come_back_after_the_registry_is_cleared():
    """After registry.clear(), the next request makes the host's breaker in the registry again."""
    registry = stalwart.BreakerRegistry()
    rules = rules_of(registry=registry, max_hosts=2)
    first = guard(rules, "a")
    registry.clear()
    again = guard(rules, "a")
    assert again is not first
    assert again is registry.get("http:a")
    for host in "bc":
        guard(rules, host)
    assert registry.names() == ["http:b", "http:c"]


def test_default_cap_bounds_breakers_for_made_up_hosts():
    """5,000 made-up hosts leave at most DEFAULT_MAX_HOSTS breakers in stalwart.registry."""
    rules = rules_of()
    for i in range(5000):
        guard(rules, f"h{i}.example.com")
    assert len(stalwart.registry) == DEFAULT_MAX_HOSTS
    assert stalwart.registry.health().total == DEFAULT_MAX_HOSTS


def test_memory_stays_bounded_past_the_cap():
    """With max_hosts=100, hosts 200 to 5,000 add no memory: breakers are reused, not kept."""
    registry = stalwart.BreakerRegistry()
    rules = rules_of(registry=registry, max_hosts=100)
    tracemalloc.start()  # before the first breaker: freeing one is seen as well
    try:
        for i in range(200):
            guard(rules, f"warm{i}.example.com")
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(5000):
            guard(rules, f"h{i}.example.com")
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(registry) == 100
    assert grown < 64 * 1024, f"{grown} bytes kept for 5,000 hosts"


def test_cap_holds_under_threads():
    """Eight threads routing 2,000 hosts each never leave more than max_hosts breakers."""
    registry = stalwart.BreakerRegistry()
    rules = rules_of(registry=registry, max_hosts=50)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(seed: int) -> None:
        start.wait()
        try:
            for i in range(2000):
                breaker = guard(rules, f"h{(i * 7 + seed) % 300}")
                assert breaker is not None
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(registry) <= 50


@given(
    steps=st.lists(
        st.tuples(st.integers(0, 9), st.sampled_from(["route", "open", "reset"])), max_size=80
    )
)
def test_cap_invariants(steps: list[tuple[int, str]]):
    """Whatever hosts come and whatever their breakers do: at most max_hosts breakers, and
    no breaker leaves the registry unless closed."""
    registry = stalwart.BreakerRegistry(log=False)
    rules = rules_of(registry=registry, max_hosts=3)
    for index, action in steps:
        name = f"http:h{index}"
        before = {b.name: b.state for b in registry}
        if action == "route":
            guard(rules, f"h{index}")
        elif name in registry:
            breaker = registry.get(name)
            breaker.force_open() if action == "open" else breaker.reset()
        assert len(registry) <= 3
        for gone in before.keys() - set(registry.names()):
            assert before[gone] is stalwart.State.CLOSED


@pytest.mark.parametrize("sync_kind", ["httpx", "requests"])
def test_requests_to_many_hosts_keep_the_cap(sync_kind: str):
    """Requests to 30 dead hosts (ports) through a client with max_hosts=10 keep 10 breakers."""
    sockets = [socket.socket() for _ in range(30)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        ports = [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
    client = Client(sync_kind, {"retry": None, "max_hosts": 10})
    try:
        for port in ports:
            assert isinstance(client.send("GET", f"http://127.0.0.1:{port}/").error, Exception)
    finally:
        client.close()
    assert len(stalwart.registry) == 10
    assert stalwart.registry.names() == sorted(f"http:127.0.0.1:{port}" for port in ports[-10:])


# --- per-host breakers: defaults that judge a rate -----------------------------------------


@pytest.mark.parametrize("sync_kind", ["httpx", "requests"])
def test_busy_healthy_host_never_trips(sync_kind: str, server: ScriptedServer, clock: ManualClock):
    """1,000 requests with one 503 in every hundred (retried) leave the host's breaker closed."""
    server.script("/r", *([*[200] * 99, 503] * 10))
    client = Client(sync_kind, {"retry": fast_retry()})
    try:
        outcomes = [client.send("GET", f"{server.url}/r") for _ in range(1000)]
    finally:
        client.close()
    assert [o.error for o in outcomes if o.error is not None] == []
    breaker = stalwart.registry.get(f"http:{server.url.removeprefix('http://')}")
    assert breaker.state is stalwart.State.CLOSED
    assert breaker.stats().failures == 10


def test_dead_host_trips_within_four_requests(kind: str, client_of: Any, clock: ManualClock):
    """A host refusing every connection opens its breaker after ten failed attempts."""
    client = client_of(retry=fast_retry(attempts=3), per_host=True)
    url = f"http://127.0.0.1:{free_port()}/r"
    outcomes = [client.send("GET", url) for _ in range(5)]
    assert [isinstance(o.error, CircuitOpenError) for o in outcomes] == [False] * 3 + [True] * 2
    [breaker] = stalwart.registry
    assert breaker.stats().failures == 10


@settings(max_examples=200)
@given(st.lists(st.booleans(), max_size=400))
def test_default_host_breaker_ignores_sparse_failures(outcomes: list[bool]):
    """With at most one failure in any three calls, the default per-host breaker never opens."""
    breaker = CircuitBreaker("h", **DEFAULT_BREAKER_OPTIONS, clock=ManualClock(), log=False)
    recent: list[bool] = []
    for failed in outcomes:
        failed = failed and not any(recent[-2:])  # noqa: PLW2901 - thinned on purpose
        recent.append(failed)
        token = breaker.admit()
        if failed:
            breaker.record_failure(token)
        else:
            breaker.record_success(token)
    assert breaker.state is stalwart.State.CLOSED


@given(st.lists(st.booleans(), max_size=400))
def test_default_host_breaker_opens_on_ten_failures_in_a_row(history: list[bool]):
    """Whatever came before, ten failed calls in a row open the default per-host breaker."""
    breaker = CircuitBreaker("h", **DEFAULT_BREAKER_OPTIONS, clock=ManualClock(), log=False)
    for failed in [*history, *[True] * 10]:
        if breaker.state is not stalwart.State.CLOSED:
            break
        token = breaker.admit()
        if failed:
            breaker.record_failure(token)
        else:
            breaker.record_success(token)
    assert breaker.state is stalwart.State.OPEN


# --- rejections the client's own way -------------------------------------------------------


def test_rejection_is_the_clients_own_error(kind: str, server: ScriptedServer, client_of: Any):
    """An open breaker's rejection is a CircuitOpenError and the client's connection error."""
    client = client_of(retry=None, per_host=True)
    assert client.send("GET", f"{server.url}/r").status == 200
    [breaker] = stalwart.registry
    breaker.force_open()
    error = client.send("GET", f"{server.url}/r").error
    assert isinstance(error, CircuitOpenError)
    assert isinstance(error, client.connection_errors)
    base = requests.RequestException if kind == "requests" else httpx.HTTPError
    assert isinstance(error, base)
    assert error.name == breaker.name
    assert error.request is not None
    assert server.hits() == 1
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert type(copy) is type(error)
    assert (copy.name, copy.retry_after, str(copy)) == (error.name, None, str(error))


def test_rejection_carries_retry_after_and_pickles():
    """The flavoured rejections keep name and retry_after through pickle, and say so in str."""
    for cls in (HttpxCircuitOpenError, RequestsCircuitOpenError):
        error = cls("http:h", 2.5)
        copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
        assert (type(copy), copy.name, copy.retry_after) == (cls, "http:h", 2.5)
        assert str(copy) == str(CircuitOpenError("http:h", 2.5))
    assert RequestsCircuitOpenError("http:h", 1.0).response is None
