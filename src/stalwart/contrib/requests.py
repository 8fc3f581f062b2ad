"""Resilient requests sessions: retries, per-host circuit breakers and deadlines.

.. code-block:: python

    from stalwart.contrib.requests import ResilientAdapter, resilient_session

    session = resilient_session()                  # a requests.Session, ready to use
    session.mount("https://", ResilientAdapter(timeout=2))   # or mount it yourself

`ResilientAdapter` is a ``requests.adapters.HTTPAdapter`` that behaves as
`stalwart.contrib.httpx.ResilientTransport` does, with the same options: retries for
idempotent requests (and for any request that failed before it was sent), retried
statuses 429, 500, 502, 503 and 504 with ``Retry-After`` honoured, a circuit breaker
per host, per-attempt timeouts cut to a `stalwart.deadline`, and the correlation id
header. An open breaker raises `RequestsCircuitOpenError`, a
`stalwart.CircuitOpenError` that is also a ``requests.ConnectionError``. urllib3's
own retries stay off (``max_retries=0``), so each attempt is one request. A body
that is a generator or a file is sent once. Requests are not hedged: a blocking
request cannot be cancelled when another answers first (hedging is offered by
`stalwart.contrib.httpx.AsyncResilientTransport`).

Install with ``pip install "stalwart[requests]"``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError
from urllib3.util import Timeout

from ..errors import CircuitOpenError
from ._http import HttpOptions, HttpRules, Route, shorter

if TYPE_CHECKING:
    from collections.abc import Mapping

    from typing_extensions import Unpack

__all__ = ["RequestsCircuitOpenError", "ResilientAdapter", "resilient_session"]


class RequestsCircuitOpenError(CircuitOpenError, requests.ConnectionError):
    """A request refused by an open breaker, before any network I/O.

    It is a `stalwart.CircuitOpenError` (with `name` and `retry_after`) and a
    ``requests.ConnectionError``, so code written for requests (``except
    requests.RequestException``, ``except requests.ConnectionError``) handles it as a
    request that could not be sent. `request` is the request refused; `response` is
    ``None``.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        name: str,
        retry_after: float | None = None,
        *,
        request: requests.PreparedRequest | None = None,
    ) -> None:
        super().__init__(name, retry_after)
        self.request = request
        self.response = None


def _not_sent(exc: BaseException) -> bool:
    """Failures before the request left: the connection could not be made."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if not isinstance(exc, requests.ConnectionError) or not exc.args:
        return False
    reason = getattr(exc.args[0], "reason", exc.args[0])  # a MaxRetryError's cause
    return isinstance(reason, ConnectTimeoutError)


def _parts(url: str) -> tuple[str, str]:
    """The breaker's ``host[:port]`` and the URL for logs, without query or credentials."""
    split = urlsplit(url)
    host = split.hostname or ""
    if split.port is not None:
        host = f"{host}:{split.port}"
    return host, f"{split.scheme}://{host}{split.path}"


def _describe(request: requests.PreparedRequest) -> str:
    return f"{request.method} {_parts(request.url or '')[1]}"


def _seconds(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _limited(timeout: Any, limit: float) -> Any:
    """A requests timeout (seconds, a pair or urllib3's Timeout) cut to `limit`."""
    if isinstance(timeout, Timeout):
        return Timeout(
            connect=shorter(_seconds(timeout.connect_timeout), limit),
            read=shorter(_seconds(timeout.read_timeout), limit),
        )
    if isinstance(timeout, tuple):
        connect, read = timeout
        return (shorter(_seconds(connect), limit), shorter(_seconds(read), limit))
    return shorter(_seconds(timeout), limit)


class ResilientAdapter(HTTPAdapter):
    """A requests transport adapter that retries, breaks circuits and honours deadlines.

    .. code-block:: python

        session = requests.Session()
        session.mount("https://", ResilientAdapter(retry=stalwart.retry(attempts=5)))

    Args:
        pool_connections: As for ``HTTPAdapter``: connection pools to cache.
        pool_maxsize: As for ``HTTPAdapter``: connections kept per pool.
        pool_block: As for ``HTTPAdapter``: wait for a free connection.
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
        self,
        *,
        pool_connections: int = 10,
        pool_maxsize: int = 10,
        pool_block: bool = False,
        **options: Unpack[HttpOptions],
    ) -> None:
        self.rules = HttpRules(
            not_sent=_not_sent, attempt=self._attempt, describe=_describe, **options
        )
        super().__init__(
            pool_connections=pool_connections,
            pool_maxsize=pool_maxsize,
            max_retries=0,
            pool_block=pool_block,
        )

    def send(  # noqa: PLR0917 - HTTPAdapter.send's own signature
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Send `request`, retrying and guarding it as the options say."""
        route = self.rules.route(
            request.method or "GET",
            _parts(request.url or "")[0],
            request.headers,
            replayable=request.body is None or isinstance(request.body, bytes | str),
            extra=(stream, timeout, verify, cert, proxies),
        )
        try:
            return cast("requests.Response", route.send(request, route))
        except CircuitOpenError:  # opened between attempts: give the last answer
            if route.last is None:
                raise
            return cast("requests.Response", route.last)

    def _attempt(self, request: requests.PreparedRequest, route: Route) -> requests.Response:
        stream, timeout, verify, cert, proxies = route.extra
        limit = route.rules.attempt_timeout()
        if limit is not None:
            timeout = _limited(timeout, limit)
        breaker = route.breaker
        if breaker is None:
            response = super().send(request, stream, timeout, verify, cert, proxies)
        else:
            try:
                token = breaker.admit()
            except CircuitOpenError as exc:
                raise RequestsCircuitOpenError(
                    exc.name, exc.retry_after, request=request
                ) from None
            try:
                response = super().send(request, stream, timeout, verify, cert, proxies)
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
                _ = response.content  # read, so the connection goes back to the pool
            finally:
                response.close()
        return response

    def __repr__(self) -> str:
        return "<ResilientAdapter>"


def resilient_session(**options: Unpack[HttpOptions]) -> requests.Session:
    """Return a ``requests.Session`` with a `ResilientAdapter` for http and https.

    .. code-block:: python

        session = resilient_session(timeout=2)
        session.get("https://api.example.com/orders").raise_for_status()

    Args:
        **options: The options of `ResilientAdapter`; one adapter serves both schemes.

    .. versionadded:: 0.1.0
    """
    adapter = ResilientAdapter(**options)
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
