"""Resilient httpx clients: retries, per-host circuit breakers and deadlines, in a transport.

.. code-block:: python

    import httpx
    from stalwart.contrib.httpx import AsyncResilientTransport, ResilientTransport

    client = httpx.Client(transport=ResilientTransport())
    async_client = httpx.AsyncClient(transport=AsyncResilientTransport())

Each request is sent through the wrapped transport (``httpx.HTTPTransport()`` by
default) and:

- **retried** on connection errors and timeouts, and on responses with status 429,
  500, 502, 503 or 504, when its method is idempotent (GET, HEAD, OPTIONS, PUT,
  DELETE, TRACE) or it carries an ``Idempotency-Key`` header. Other requests (POST,
  PATCH) are retried only when they failed before being sent: the connection was
  refused, or none could be had from the pool. A request whose body is a one-shot
  stream (a generator) is sent once. The wait between attempts follows the retry
  policy's backoff, raised to a ``Retry-After`` header (seconds or an HTTP date), up to
  `max_retry_after` and never past a `stalwart.deadline`;
- **guarded** by a circuit breaker per host, ``http:<host>`` in `stalwart.registry`
  (or one `breaker` for all), at most `max_hosts` of them (1,000). Server errors
  (5xx) and connection errors count as failures; other responses, 4xx included, as
  successes (the server answered). An open breaker raises `HttpxCircuitOpenError`
  before any network I/O: a `stalwart.CircuitOpenError` that is also an
  ``httpx.TransportError``, so ``except httpx.HTTPError`` catches it;
- **timed**: with `timeout`, or under a `stalwart.deadline`, httpx's connect, read,
  write and pool timeouts for each attempt are cut to at most that, and what is left
  of the deadline;
- **correlated**: the `stalwart.correlation_id` in force is sent as
  ``X-Correlation-ID``, unless the request has one;
- **hedged**, with `AsyncResilientTransport`'s ``hedge=`` (a `stalwart.Hedger`): an
  idempotent request without an answer after the hedger's delay is sent again, the
  first good response wins and the other requests are cancelled, their connections
  closed. The blocking `ResilientTransport` does not hedge: a blocking request
  cannot be cancelled when another answers first.

When attempts run out on retried responses, the last response is returned, so the
usual ``response.raise_for_status()`` still applies; when they run out on errors, the
last error is raised. A response retried past is read and closed before the next
attempt: no connection is left behind.

Install with ``pip install "stalwart[httpx]"``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, cast

import httpx

from ..errors import CircuitOpenError
from ._http import HttpOptions, HttpRules, Route, shorter

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ..hedge import Hedger

__all__ = ["AsyncResilientTransport", "HttpxCircuitOpenError", "ResilientTransport"]

_TIMEOUT_KEYS = ("connect", "read", "write", "pool")


class HttpxCircuitOpenError(CircuitOpenError, httpx.TransportError):
    """A request refused by an open breaker, before any network I/O.

    It is a `stalwart.CircuitOpenError` (with `name` and `retry_after`) and an
    ``httpx.TransportError``, so code written for httpx (``except httpx.HTTPError``,
    ``except httpx.TransportError``) handles it as a request that could not be sent.
    `request` is the request refused.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self, name: str, retry_after: float | None = None, *, request: httpx.Request | None = None
    ) -> None:
        super().__init__(name, retry_after)
        self._request = request


async def _close(response: httpx.Response) -> None:
    """Release a hedged request's response that lost: its connection is closed."""
    await response.aclose()


def _rejected(exc: CircuitOpenError, request: httpx.Request) -> HttpxCircuitOpenError:
    return HttpxCircuitOpenError(exc.name, exc.retry_after, request=request)


def _not_sent(exc: BaseException) -> bool:
    """Failures before the request left: no connection, or none from the pool."""
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def _describe(request: httpx.Request) -> str:
    """Name a request in logs: method and URL without query or credentials."""
    url = request.url
    return f"{request.method} {url.scheme}://{_host(url)}{url.path}"


def _host(url: httpx.URL) -> str:
    return url.host if url.port is None else f"{url.host}:{url.port}"


def _route(rules: HttpRules, request: httpx.Request) -> Route:
    return rules.route(
        request.method,
        _host(request.url),
        request.headers,
        replayable=isinstance(request.stream, httpx.ByteStream),
        extra=request.extensions.get("timeout"),
    )


def _limit_timeouts(request: httpx.Request, route: Route) -> None:
    """Cut this attempt's httpx timeouts to the transport's timeout and the deadline."""
    limit = route.rules.attempt_timeout()
    if limit is None:
        return
    given = route.extra if isinstance(route.extra, dict) else {}
    request.extensions["timeout"] = {key: shorter(given.get(key), limit) for key in _TIMEOUT_KEYS}


class ResilientTransport(httpx.BaseTransport):
    """An httpx transport that retries, breaks circuits and honours deadlines.

    .. code-block:: python

        client = httpx.Client(transport=ResilientTransport(
            retry=stalwart.retry(attempts=5, deadline=10),
            timeout=2,
        ))

    Args:
        transport: The transport that sends requests (``httpx.HTTPTransport()``).
        **options: `retry`, `breaker`, `per_host`, `registry`, `breaker_options`,
            `max_hosts`, `timeout`, `retry_statuses`, `idempotent_methods`,
            `idempotency_header`, `max_retry_after`, `correlation_header` and `budget`, as the
            HTTP clients page of the docs describes them.

    Raises:
        ValueError: An option is out of range (named, with its value).
        TypeError: An option has the wrong kind of value.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self, transport: httpx.BaseTransport | None = None, **options: Unpack[HttpOptions]
    ) -> None:
        if transport is not None and not isinstance(transport, httpx.BaseTransport):
            raise TypeError(f"transport must be an httpx.BaseTransport, got {transport!r}")
        self.transport = httpx.HTTPTransport() if transport is None else transport
        self.rules = HttpRules(
            not_sent=_not_sent, attempt=self._attempt, describe=_describe, **options
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request`, retrying and guarding it as the options say."""
        route = _route(self.rules, request)
        try:
            return cast("httpx.Response", route.send(request, route))
        except CircuitOpenError:  # opened between attempts: give the last answer
            if route.last is None:
                raise
            return cast("httpx.Response", route.last)

    def _attempt(self, request: httpx.Request, route: Route) -> httpx.Response:
        _limit_timeouts(request, route)
        breaker = route.breaker
        if breaker is None:
            response = self.transport.handle_request(request)
        else:
            try:
                token = breaker.admit()
            except CircuitOpenError as exc:
                raise _rejected(exc, request) from None
            try:
                response = self.transport.handle_request(request)
            except BaseException as exc:
                breaker.record_exception(token, exc)
                raise
            status = response.status_code
            if route.failure(status):
                breaker.record_failure(token, f"HTTP {status}")
            else:
                breaker.record_success(token)
        if route.retried(response):
            try:
                response.read()  # so the connection goes back to the pool
            finally:
                response.close()
        return response

    def close(self) -> None:
        """Close the wrapped transport."""
        self.transport.close()

    def __repr__(self) -> str:
        return f"<ResilientTransport over {self.transport!r}>"


class AsyncResilientTransport(httpx.AsyncBaseTransport):
    """`ResilientTransport` for ``httpx.AsyncClient``: the same options, and hedging.

    .. code-block:: python

        client = httpx.AsyncClient(transport=AsyncResilientTransport(
            timeout=2, hedge=stalwart.hedge("api", percentile=95),
        ))

    Waits between attempts use anyio, so it runs under asyncio and trio.

    Args:
        transport: The transport that sends requests (``httpx.AsyncHTTPTransport()``).
        hedge: Hedges each attempt of a request whose method is idempotent (one of
            `idempotent_methods`) and whose body can be sent again: after the
            hedger's delay without an answer, the same request is sent once more
            (up to its `max_hedges`), the first good response is returned and the
            other requests are cancelled (their connections closed). A response
            that would be retried (a 503, say) does not win while another request
            is on its way. Every request sent goes through the host's breaker.
            ``None``: no hedging.
        **options: As for `ResilientTransport`.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        hedge: Hedger | None = None,
        **options: Unpack[HttpOptions],
    ) -> None:
        if transport is not None and not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError(f"transport must be an httpx.AsyncBaseTransport, got {transport!r}")
        self.transport = httpx.AsyncHTTPTransport() if transport is None else transport
        self.rules = HttpRules(
            not_sent=_not_sent,
            attempt=self._attempt,
            describe=_describe,
            hedge=hedge,
            **options,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request`, retrying and guarding it as the options say."""
        route = _route(self.rules, request)
        try:
            return cast("httpx.Response", await route.send(request, route))
        except CircuitOpenError:  # opened between attempts: give the last answer
            if route.last is None:
                raise
            return cast("httpx.Response", route.last)

    async def _attempt(self, request: httpx.Request, route: Route) -> httpx.Response:
        hedger = route.hedge
        if hedger is None:
            return await self._send(request, route)
        return await hedger.race(
            functools.partial(self._send, request, route), accept=route.good, discard=_close
        )

    async def _send(self, request: httpx.Request, route: Route) -> httpx.Response:
        _limit_timeouts(request, route)
        breaker = route.breaker
        if breaker is None:
            response = await self.transport.handle_async_request(request)
        else:
            try:
                token = await breaker.admit_async()
            except CircuitOpenError as exc:
                raise _rejected(exc, request) from None
            try:
                response = await self.transport.handle_async_request(request)
            except BaseException as exc:
                await breaker.record_exception_async(token, exc)
                raise
            status = response.status_code
            if route.failure(status):
                await breaker.record_failure_async(token, f"HTTP {status}")
            else:
                await breaker.record_success_async(token)
        if route.retried(response):
            try:
                await response.aread()
            finally:
                await response.aclose()
        return response

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self.transport.aclose()

    def __repr__(self) -> str:
        return f"<AsyncResilientTransport over {self.transport!r}>"
