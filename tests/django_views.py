"""Views of the Django tests (what the middleware tests call), each in a sync and an async form.

Mounted under ``t/`` by django_urls.py; the async forms under ``t/async/``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import httpx
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

import stalwart
from stalwart.contrib.httpx import AsyncResilientTransport, ResilientTransport

logger = logging.getLogger("django_views")

release = threading.Event()
"""Ends the wait that the sync timeout view abandons (tests set it when done)."""


def _state() -> dict[str, Any]:
    return {
        "correlation_id": stalwart.current_correlation_id(),
        "remaining": stalwart.remaining(),
    }


def state(request: HttpRequest) -> HttpResponse:
    """The correlation id and deadline in force; logs one record."""
    logger.info("handled")
    return JsonResponse(_state())


async def state_async(request: HttpRequest) -> HttpResponse:
    """The correlation id and deadline in force; logs one record."""
    logger.info("handled")
    return JsonResponse(_state())


def _nothing() -> None:
    return None


async def _nothing_async() -> None:
    return None


def _boom() -> None:
    raise stalwart.TransientError("upstream down")


async def _boom_async() -> None:
    raise stalwart.TransientError("upstream down")


def breaker(request: HttpRequest, name: str) -> HttpResponse:
    """A call through the default registry's breaker `name` (?fail=1 makes it fail)."""
    guarded = stalwart.registry.get(name)
    if request.GET.get("fail"):
        try:
            guarded.call(_boom)
        except stalwart.TransientError:
            return JsonResponse({"failed": True})
    guarded.call(_nothing)
    return JsonResponse({"called": True})


async def breaker_async(request: HttpRequest, name: str) -> HttpResponse:
    """A call through the default registry's breaker `name` (?fail=1 makes it fail)."""
    guarded = stalwart.registry.get(name)
    if request.GET.get("fail"):
        try:
            await guarded.call_async(_boom_async)
        except stalwart.TransientError:
            return JsonResponse({"failed": True})
    await guarded.call_async(_nothing_async)
    return JsonResponse({"called": True})


def timeout(request: HttpRequest) -> HttpResponse:
    """A call limited to 50 ms that waits until the test sets `release` (at most 30 s)."""
    finished = stalwart.timeout(0.05)(release.wait)(30)
    return JsonResponse({"finished": finished})


async def timeout_async(request: HttpRequest) -> HttpResponse:
    """A block limited to 50 ms that waits for an event nobody sets."""
    async with stalwart.timeout(0.05):
        await asyncio.Event().wait()
    return JsonResponse({"finished": True})


def _report(before: float | None, start: float, outcome: str) -> HttpResponse:
    return JsonResponse(
        {"remaining": before, "elapsed": time.monotonic() - start, "outcome": outcome}
    )


_NO_RETRY = stalwart.retry(attempts=1, log=False)


def upstream(request: HttpRequest) -> HttpResponse:
    """GET ?url= through stalwart's httpx transport; report the budget seen and the outcome."""
    before, start = stalwart.remaining(), time.monotonic()
    transport = ResilientTransport(per_host=False, retry=_NO_RETRY)
    with httpx.Client(transport=transport) as client:
        try:
            outcome = str(client.get(request.GET["url"]).status_code)
        except httpx.TimeoutException as exc:
            outcome = type(exc).__name__
    return _report(before, start, outcome)


async def upstream_async(request: HttpRequest) -> HttpResponse:
    """GET ?url= through stalwart's async httpx transport; report budget and outcome."""
    before, start = stalwart.remaining(), time.monotonic()
    transport = AsyncResilientTransport(per_host=False, retry=_NO_RETRY)
    async with httpx.AsyncClient(transport=transport) as client:
        try:
            outcome = str((await client.get(request.GET["url"])).status_code)
        except httpx.TimeoutException as exc:
            outcome = type(exc).__name__
    return _report(before, start, outcome)


def own_header(request: HttpRequest) -> HttpResponse:
    """A response that sets the correlation header itself."""
    response = HttpResponse("own")
    response["X-Correlation-ID"] = "set-by-view"
    return response


def error(request: HttpRequest) -> HttpResponse:
    """An exception that is not stalwart's."""
    raise RuntimeError("not stalwart's")


urlpatterns: list[Any] = [
    path("state/", state),
    path("async/state/", state_async),
    path("breaker/<str:name>/", breaker),
    path("async/breaker/<str:name>/", breaker_async),
    path("timeout/", timeout),
    path("async/timeout/", timeout_async),
    path("upstream/", upstream),
    path("async/upstream/", upstream_async),
    path("own-header/", own_header),
    path("error/", error),
]
