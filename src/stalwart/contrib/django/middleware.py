"""Django middleware: correlation ids, per-request deadlines, 503 and 504 for stalwart errors.

Add it near the top of ``MIDDLEWARE`` (it then covers the views and the middleware
below it):

.. code-block:: python

    MIDDLEWARE = [
        "stalwart.contrib.django.middleware.StalwartMiddleware",
        ...,
    ]
    STALWART = {
        "REQUEST_DEADLINE": 10.0,              # every request: at most 10 s
        "DEADLINE_HEADER": "X-Request-Timeout",  # callers may ask for less
        "MAX_REQUEST_DEADLINE": 30.0,          # ... and never for more than 30 s
    }

The rules themselves (formats, caps, bodies) live in `stalwart.contrib._web`, shared
with the ASGI middleware; this module reads Django's request and writes Django's
response.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, NamedTuple

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from ..._correlation import CorrelationId
from ..._deadline import Deadline
from .._web import (
    CorrelationIdFilter,
    DeadlineHeaderError,
    bad_deadline_reply,
    correlation_id_from,
    error_reply,
    request_deadline,
    wants_json,
)
from ._response import to_response
from .conf import stalwart_settings

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from datetime import timedelta

    from django.http import HttpRequest, HttpResponse
    from django.http.response import HttpResponseBase

    _GetResponse = Callable[[HttpRequest], HttpResponseBase | Awaitable[HttpResponseBase]]

__all__ = ["CorrelationIdFilter", "StalwartMiddleware"]


@functools.lru_cache(maxsize=32)
def _meta_key(header: str) -> str:
    """The ``request.META`` key of a header: ``X-Request-Timeout``, ``HTTP_X_REQUEST_TIMEOUT``."""
    return "HTTP_" + header.upper().replace("-", "_")


def _accepts_json(request: HttpRequest) -> bool:
    return wants_json(request.META.get("HTTP_ACCEPT"))


class _Plan(NamedTuple):
    """What one request runs under, or the reply that refuses it."""

    header: str | None
    correlation: str | None
    seconds: float | timedelta | None
    refusal: HttpResponse | None


def _plan(request: HttpRequest) -> _Plan:
    """Read the settings and the request's headers: correlation id and deadline."""
    settings = stalwart_settings()
    meta = request.META
    header = settings["CORRELATION_HEADER"]
    correlation = correlation_id_from(meta.get(_meta_key(header))) if header else None
    seconds = settings["REQUEST_DEADLINE"]
    deadline_header = settings["DEADLINE_HEADER"]
    if deadline_header:
        try:
            seconds = request_deadline(
                meta.get(_meta_key(deadline_header)),
                default=seconds,
                maximum=settings["MAX_REQUEST_DEADLINE"],
                header=deadline_header,
            )
        except DeadlineHeaderError:
            reply = bad_deadline_reply(deadline_header, as_json=_accepts_json(request))
            return _Plan(header, correlation, None, to_response(reply))
    return _Plan(header, correlation, seconds, None)


def _echo(plan: _Plan, response: HttpResponseBase) -> HttpResponseBase:
    """Put the request's correlation id on the response (replacing any the view set)."""
    if plan.correlation is not None and plan.header:
        response[plan.header] = plan.correlation
    return response


class StalwartMiddleware:
    """Correlation id, deadline and error replies for every request; sync and async.

    For each request:

    - **correlation id**: read from ``STALWART["CORRELATION_HEADER"]``
      (``X-Correlation-ID``) if it is 1 to 128 printable ASCII characters without
      spaces, otherwise a fresh one (the caller's value is dropped, not echoed). It is
      current (`stalwart.correlation_id`) while the request is handled, so stalwart's
      log records and outgoing HTTP calls through stalwart carry it, and it is set on
      the response (replacing a value the view may have set there). Set the key to
      ``None`` to turn this off.
    - **deadline**: ``STALWART["REQUEST_DEADLINE"]`` seconds, or less if the caller
      asks through ``STALWART["DEADLINE_HEADER"]`` (decimal seconds such as ``2.5``,
      or a gRPC timeout such as ``100m``), the header capped at
      ``STALWART["MAX_REQUEST_DEADLINE"]``. The smaller is in force
      (`stalwart.deadline`) for the whole request: retries stop, timeouts and HTTP
      calls through stalwart are cut to what is left. A malformed or zero header gets
      ``400 Bad Request`` (problem details naming the header) and the view is not
      called. Without either setting no deadline is set.
    - **errors**: a `CircuitOpenError` raised by the view becomes
      ``503 Service Unavailable`` with ``Retry-After`` (none when the breaker is held
      open by an operator), a `TimeoutExceeded` ``504 Gateway Timeout``: RFC 9457
      problem details, or plain text when the ``Accept`` header prefers text. Other
      exceptions are left to Django.

    Errors are caught in `process_exception`, which Django calls for exceptions
    raised by the view (and by rendering a template response) only: an error raised
    in another middleware's own code, or while a streaming response is being sent,
    is handled by Django as usual (a 500). The deadline and the correlation id are
    in force until the response is returned, not while a streaming body is read.

    .. versionadded:: 0.1.0
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: _GetResponse) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        """Handle one request (in an async chain, return the coroutine that does)."""
        if self.is_async:
            return self.__acall__(request)
        plan = _plan(request)
        if plan.refusal is not None:
            return _echo(plan, plan.refusal)
        with CorrelationId(plan.correlation) if plan.header else _NOTHING:
            if plan.seconds is None:
                response = self.get_response(request)
            else:
                with Deadline(plan.seconds):
                    response = self.get_response(request)
        return _echo(plan, response)  # type: ignore[arg-type]  # sync chain: never awaitable

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        """Handle one request in an async middleware chain."""
        plan = _plan(request)
        if plan.refusal is not None:
            return _echo(plan, plan.refusal)
        with CorrelationId(plan.correlation) if plan.header else _NOTHING:
            if plan.seconds is None:
                response = await self.get_response(request)  # type: ignore[misc]  # async chain
            else:
                with Deadline(plan.seconds):
                    response = await self.get_response(request)  # type: ignore[misc]
        return _echo(plan, response)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """Answer a `CircuitOpenError` with 503, a `TimeoutExceeded` with 504, else nothing."""
        reply = error_reply(exception, as_json=_accepts_json(request))
        return None if reply is None else to_response(reply)


class _Nothing:
    """A context manager that does nothing (cheaper than `contextlib.nullcontext`)."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        return None


_NOTHING = _Nothing()
