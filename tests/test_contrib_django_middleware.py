"""The Django middleware, through Django's test clients, sync and async, on sync and async views.

Every behaviour runs four ways: the sync `Client` (a WSGI-style chain, async views run
through ``async_to_sync``) and the `AsyncClient` (an ASGI-style chain, sync views run
through ``sync_to_async``), each on the sync and the async form of the view.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import TYPE_CHECKING, Any

import pytest
from asgiref.sync import async_to_sync, iscoroutinefunction
from django.http import HttpRequest, HttpResponse
from django.test import AsyncClient, Client

import django_views
import stalwart
from http_server import Reply, ScriptedServer
from stalwart.contrib._web import (
    BAD_DEADLINE_TYPE,
    CIRCUIT_OPEN_TYPE,
    PROBLEM_JSON,
    TEXT_PLAIN,
    TIMEOUT_TYPE,
)
from stalwart.contrib.django.middleware import CorrelationIdFilter, StalwartMiddleware
from stalwart.testing import ManualClock

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pytest_django.fixtures import Settings as SettingsWrapper

MIDDLEWARE = "stalwart.contrib.django.middleware.StalwartMiddleware"
FRESH = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def anyio_backend() -> str:
    """Django's AsyncClient runs on asyncio only."""
    return "asyncio"


@pytest.fixture
def stalwart_settings(settings: SettingsWrapper) -> SettingsWrapper:
    """The middleware first in MIDDLEWARE, and an empty STALWART (restored after the test)."""
    settings.MIDDLEWARE = [MIDDLEWARE, *settings.MIDDLEWARE]
    settings.STALWART = {}
    return settings


@pytest.fixture(autouse=True)
def _release_waits() -> Iterator[None]:
    """The sync timeout view's abandoned wait ends when the test does."""
    django_views.release.clear()
    yield
    django_views.release.set()


class Send:
    """One way of sending a request: a client kind and a view form."""

    def __init__(self, client: str, view: str) -> None:
        self.client = client
        self.prefix = "/t/async/" if view == "async" else "/t/"

    def __repr__(self) -> str:
        return f"{self.client}-client/{self.prefix}"

    def __call__(self, path: str, headers: dict[str, str] | None = None, **query: str) -> Any:
        url = self.prefix + path
        if self.client == "sync":
            return Client().get(url, query, headers=headers)

        async def get() -> Any:  # Django 4.2's AsyncClient.get is not itself async def
            return await AsyncClient().get(url, query, headers=headers)

        return async_to_sync(get)()


@pytest.fixture(
    params=[("sync", "sync"), ("sync", "async"), ("async", "sync"), ("async", "async")],
    ids=[
        "client-sync-view-sync",
        "client-sync-view-async",
        "client-async-view-sync",
        "both-async",
    ],
)
def send(request: pytest.FixtureRequest, stalwart_settings: SettingsWrapper) -> Send:
    """Send a GET to a test view, each of the four ways."""
    client, view = request.param
    return Send(client, view)


def seen(response: Any) -> dict[str, Any]:
    """What the state view saw: the correlation id and the deadline in force."""
    return dict(json.loads(response.content))


def problem(response: Any) -> dict[str, Any]:
    """The problem details of `response`, checked to be JSON as `json.dumps` writes it."""
    assert response["Content-Type"] == PROBLEM_JSON
    body = dict(json.loads(response.content))
    assert response.content == json.dumps(body).encode()
    return body


# --- correlation ids -----------------------------------------------------------------------


def test_correlation_id_in_and_out(send: Send):
    """The caller's id is current in the view and echoed on the response."""
    response = send("state/", {"X-Correlation-ID": "order-42"})
    assert response.status_code == 200
    assert response["X-Correlation-ID"] == "order-42"
    assert seen(response)["correlation_id"] == "order-42"


def test_fresh_correlation_id_when_missing(send: Send):
    """Without a header the request gets a fresh id, the same in the view and the response."""
    response = send("state/")
    assert FRESH.fullmatch(response["X-Correlation-ID"])
    assert seen(response)["correlation_id"] == response["X-Correlation-ID"]
    assert send("state/")["X-Correlation-ID"] != response["X-Correlation-ID"]


@pytest.mark.parametrize("bad", ["has space", "x" * 129, "caf\u00e9", "tab\there"])
def test_invalid_correlation_id_is_replaced_not_echoed(stalwart_settings: Any, bad: str):
    """An unsafe id is dropped: a fresh one is used and echoed instead."""
    response = Client().get("/t/state/", headers={"X-Correlation-ID": bad})
    assert response.status_code == 200
    assert FRESH.fullmatch(response["X-Correlation-ID"])
    assert seen(response)["correlation_id"] == response["X-Correlation-ID"]
    assert bad.encode("utf-8") not in response.content


def test_correlation_header_is_configurable(stalwart_settings: SettingsWrapper):
    """CORRELATION_HEADER names the header read and written."""
    stalwart_settings.STALWART = {"CORRELATION_HEADER": "X-Request-ID"}
    response = Client().get("/t/state/", headers={"X-Request-ID": "req-7"})
    assert response["X-Request-ID"] == "req-7"
    assert "X-Correlation-ID" not in response
    assert seen(response)["correlation_id"] == "req-7"


def test_correlation_can_be_turned_off(stalwart_settings: SettingsWrapper):
    """CORRELATION_HEADER None: no id is set, read or echoed."""
    stalwart_settings.STALWART = {"CORRELATION_HEADER": None}
    response = Client().get("/t/state/", headers={"X-Correlation-ID": "order-42"})
    assert "X-Correlation-ID" not in response
    assert seen(response)["correlation_id"] is None


def test_response_carries_the_request_id(stalwart_settings: Any):
    """The response's correlation header is the request's id, even if the view set another."""
    response = Client().get("/t/own-header/", headers={"X-Correlation-ID": "order-42"})
    assert response["X-Correlation-ID"] == "order-42"


def test_log_records_carry_correlation_id(send: Send, caplog: pytest.LogCaptureFixture):
    """Records logged in the view carry the request's id through CorrelationIdFilter."""
    caplog.handler.addFilter(CorrelationIdFilter())
    with caplog.at_level(logging.INFO, logger="django_views"):
        response = send("state/", {"X-Correlation-ID": "order-42"})
    records = [r for r in caplog.records if r.name == "django_views"]
    assert [getattr(r, "correlation_id", None) for r in records] == ["order-42"]
    assert response["X-Correlation-ID"] == "order-42"


@pytest.mark.anyio
async def test_concurrent_requests_keep_their_own_ids(stalwart_settings: Any):
    """Concurrent async requests each see and echo their own correlation id."""
    client = AsyncClient()
    ids = [f"req-{n}" for n in range(20)]
    responses = await asyncio.gather(
        *(client.get("/t/async/state/", headers={"X-Correlation-ID": i}) for i in ids)
    )
    assert [r["X-Correlation-ID"] for r in responses] == ids
    assert [seen(r)["correlation_id"] for r in responses] == ids


# --- errors to responses -------------------------------------------------------------------


@pytest.fixture
def clock() -> Iterator[ManualClock]:
    with ManualClock(1000.0) as manual:
        yield manual


def test_open_breaker_gives_503_with_retry_after(
    send: Send, clock: ManualClock, caplog: pytest.LogCaptureFixture
):
    """A real breaker opened by a failure makes the view's next call a 503 with Retry-After."""
    stalwart.registry.get("jira", failure_threshold=1, window=None, recovery_timeout=30)
    with caplog.at_level(logging.WARNING, logger="stalwart.breaker"):
        tripped = send("breaker/jira/", {"X-Correlation-ID": "trip-1"}, fail="1")
    assert tripped.status_code == 200
    assert stalwart.registry.get("jira").state is stalwart.State.OPEN
    # stalwart's own log of the state change carries the request's correlation id
    changes = [r for r in caplog.records if r.name == "stalwart.breaker"]
    assert [getattr(r, "correlation_id", None) for r in changes] == ["trip-1"]
    clock.advance(10.5)
    response = send("breaker/jira/", {"X-Correlation-ID": "order-42"})
    assert response.status_code == 503
    assert response["Retry-After"] == "20"
    assert response["X-Correlation-ID"] == "order-42"
    assert problem(response) == {
        "type": CIRCUIT_OPEN_TYPE,
        "title": "Circuit open",
        "status": 503,
        "detail": "The dependency 'jira' is unavailable: its circuit breaker is open."
        " Try again in 20 s.",
        "breaker": "jira",
        "retry_after": 20,
    }


def test_forced_open_breaker_gives_503_without_retry_after(send: Send):
    """A breaker held open by an operator gives 503 with no Retry-After, retry_after null."""
    stalwart.registry.get("jira").force_open()
    response = send("breaker/jira/")
    assert response.status_code == 503
    assert "Retry-After" not in response
    assert problem(response)["retry_after"] is None


def test_text_reply_for_browsers(stalwart_settings: Any):
    """A client preferring HTML gets the 503 as plain text, Retry-After included."""
    stalwart.registry.get("jira", failure_threshold=1, window=None, recovery_timeout=30)
    stalwart.registry.get("jira").call(lambda: None)
    with pytest.raises(stalwart.TransientError):
        stalwart.registry.get("jira").call(django_views._boom)
    accept = "text/html,application/xhtml+xml,*/*;q=0.8"
    response = Client().get("/t/breaker/jira/", headers={"Accept": accept})
    assert response.status_code == 503
    assert response["Content-Type"] == TEXT_PLAIN
    assert response["Retry-After"] in {"29", "30"}
    assert response.content.startswith(b"Circuit open: The dependency 'jira' is unavailable")


def test_timeout_gives_504(send: Send):
    """A real stalwart.timeout expiring in the view gives the pinned 504 problem."""
    response = send("timeout/", {"X-Correlation-ID": "order-42"})
    assert response.status_code == 504
    assert response["X-Correlation-ID"] == "order-42"
    assert problem(response) == {
        "type": TIMEOUT_TYPE,
        "title": "Timeout",
        "status": 504,
        "detail": "The request did not finish within its time limit.",
    }


def test_other_exceptions_are_left_to_django(stalwart_settings: Any):
    """An exception that is not stalwart's goes on to Django (a 500), untouched."""
    with pytest.raises(RuntimeError, match="not stalwart's"):
        Client().get("/t/error/")
    response = Client(raise_request_exception=False).get("/t/error/")
    assert response.status_code == 500


def test_without_the_middleware_errors_are_500(settings: SettingsWrapper):
    """Control: the same open breaker without the middleware is Django's 500."""
    settings.STALWART = {}
    stalwart.registry.get("jira").force_open()
    response = Client(raise_request_exception=False).get("/t/breaker/jira/")
    assert response.status_code == 500
    assert "X-Correlation-ID" not in response


# --- deadlines -----------------------------------------------------------------------------


def test_no_deadline_by_default(send: Send):
    """Without REQUEST_DEADLINE or DEADLINE_HEADER no deadline is in force, header or not."""
    response = send("state/", {"X-Request-Timeout": "abc"})
    assert response.status_code == 200
    assert seen(response)["remaining"] is None


def test_request_deadline_setting(send: Send, stalwart_settings: SettingsWrapper):
    """REQUEST_DEADLINE puts a deadline on every request."""
    stalwart_settings.STALWART = {"REQUEST_DEADLINE": 2.0}
    remaining = seen(send("state/"))["remaining"]
    assert 0 < remaining <= 2.0


@pytest.mark.parametrize(
    ("value", "at_most", "at_least"),
    [
        ("0.5", 0.5, 0.0),
        ("30", 2.0, 1.0),  # the server's REQUEST_DEADLINE is smaller
        ("200m", 0.2, 0.0),
        ("1S", 1.0, 0.0),
    ],
)
def test_deadline_header_asks_for_less(
    send: Send, stalwart_settings: SettingsWrapper, value: str, at_most: float, at_least: float
):
    """The caller's budget applies when smaller than the server's; gRPC form too."""
    stalwart_settings.STALWART = {"REQUEST_DEADLINE": 2.0, "DEADLINE_HEADER": "X-Request-Timeout"}
    remaining = seen(send("state/", {"X-Request-Timeout": value}))["remaining"]
    assert at_least < remaining <= at_most


def test_grpc_timeout_header(stalwart_settings: SettingsWrapper):
    """DEADLINE_HEADER may be grpc-timeout itself."""
    stalwart_settings.STALWART = {"DEADLINE_HEADER": "grpc-timeout"}
    remaining = seen(Client().get("/t/state/", headers={"grpc-timeout": "300m"}))["remaining"]
    assert 0 < remaining <= 0.3


def test_huge_deadline_header_is_capped(send: Send, stalwart_settings: SettingsWrapper):
    """A header asking for more than MAX_REQUEST_DEADLINE gets the maximum."""
    stalwart_settings.STALWART = {
        "DEADLINE_HEADER": "X-Request-Timeout",
        "MAX_REQUEST_DEADLINE": 5,
    }
    for value in ("1000000", "99999999H", "9" * 60):
        remaining = seen(send("state/", {"X-Request-Timeout": value}))["remaining"]
        assert 4 < remaining <= 5


@pytest.mark.parametrize("value", ["abc", "-1", "0", "0m", "1e3", "nan", "1.5s", "1, 2", "9" * 65])
def test_malformed_deadline_header_gets_400(
    send: Send, stalwart_settings: SettingsWrapper, caplog: pytest.LogCaptureFixture, value: str
):
    """A malformed or zero header gets the pinned 400; the view is not called."""
    stalwart_settings.STALWART = {"DEADLINE_HEADER": "X-Request-Timeout"}
    with caplog.at_level(logging.INFO, logger="django_views"):
        response = send("state/", {"X-Request-Timeout": value, "X-Correlation-ID": "order-42"})
    assert response.status_code == 400
    assert response["X-Correlation-ID"] == "order-42"
    assert problem(response) == {
        "type": BAD_DEADLINE_TYPE,
        "title": "Bad deadline",
        "status": 400,
        "detail": "The X-Request-Timeout header must be a positive number of seconds (2.5)"
        " or a gRPC timeout (100m, 2S).",
    }
    assert not [r for r in caplog.records if r.name == "django_views"]


def test_blank_deadline_header_is_absent(stalwart_settings: SettingsWrapper):
    """An empty header counts as no header: the server's deadline applies."""
    stalwart_settings.STALWART = {"REQUEST_DEADLINE": 3, "DEADLINE_HEADER": "X-Request-Timeout"}
    response = Client().get("/t/state/", headers={"X-Request-Timeout": ""})
    assert 2 < seen(response)["remaining"] <= 3


@pytest.fixture
def upstream() -> Iterator[ScriptedServer]:
    """A loopback server whose every request hangs until the test ends."""
    with ScriptedServer() as server:
        server.default = Reply(action="hang")
        yield server


def test_deadline_header_cuts_upstream_call(
    send: Send, stalwart_settings: SettingsWrapper, upstream: ScriptedServer
):
    """The caller's 0.3 s budget cuts the view's hanging HTTP call through stalwart."""
    stalwart_settings.STALWART = {"DEADLINE_HEADER": "X-Request-Timeout"}
    headers = {"X-Request-Timeout": "0.3", "X-Correlation-ID": "order-42"}
    response = send("upstream/", headers, url=f"{upstream.url}/slow")
    report = seen(response)
    assert response.status_code == 200
    assert 0 < report["remaining"] <= 0.3
    assert report["outcome"] in {"ReadTimeout", "ConnectTimeout", "PoolTimeout", "WriteTimeout"}
    assert report["elapsed"] < 3  # httpx's own default is 5 s; the server never answers
    assert upstream.hits("/slow") == 1
    assert upstream.seen[0].headers["x-correlation-id"] == "order-42"


def test_without_deadline_the_upstream_call_is_not_cut(
    stalwart_settings: SettingsWrapper, upstream: ScriptedServer
):
    """Control: a fast upstream answers inside the budget, so only the deadline cut it."""
    stalwart_settings.STALWART = {"DEADLINE_HEADER": "X-Request-Timeout"}
    upstream.default = Reply(200)
    response = Client().get(
        "/t/upstream/", {"url": f"{upstream.url}/fast"}, headers={"X-Request-Timeout": "5"}
    )
    assert seen(response)["outcome"] == "200"


# --- the middleware object -----------------------------------------------------------------


def test_middleware_is_sync_and_async():
    """It declares both modes and is a coroutine function exactly in an async chain."""
    assert StalwartMiddleware.sync_capable
    assert StalwartMiddleware.async_capable

    def sync_view(request: HttpRequest) -> HttpResponse:
        return HttpResponse()

    async def async_view(request: HttpRequest) -> HttpResponse:
        return HttpResponse()

    assert not iscoroutinefunction(StalwartMiddleware(sync_view))
    assert iscoroutinefunction(StalwartMiddleware(async_view))
