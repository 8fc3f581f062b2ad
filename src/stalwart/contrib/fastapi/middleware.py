"""ASGI middleware: correlation ids and per-request deadlines, for Starlette and FastAPI.

A pure ASGI middleware (no ``BaseHTTPMiddleware``): it costs a header scan and two
context variables per request, and streaming responses still stream.

.. code-block:: python

    from stalwart.contrib.fastapi import StalwartMiddleware

    app.add_middleware(
        StalwartMiddleware,
        request_deadline=10.0,                # every request: at most 10 s
        deadline_header="X-Request-Timeout",  # callers may ask for less
        max_request_deadline=30.0,            # ... and never for more than 30 s
    )

`stalwart.contrib.fastapi.install` adds it for you, with the exception handlers. The
rules themselves (formats, caps, bodies) live in `stalwart.contrib._web`, shared with
the Django middleware; this module reads ASGI scopes and writes ASGI messages. It
imports Starlette only for its types, and FastAPI not at all.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final

from ... import _clock, _validate
from ..._correlation import _scope as _correlation
from ..._deadline import _scope as _deadline_scope
from .._web import (
    CorrelationIdFilter,
    DeadlineHeaderError,
    bad_deadline_reply,
    correlation_id_from,
    fresh_correlation_id,
    request_deadline,
    wants_json,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Sequence
    from datetime import timedelta

    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from .._reply import Reply

__all__ = [
    "CORRELATION_HEADER",
    "MAX_REQUEST_DEADLINE",
    "CorrelationIdFilter",
    "StalwartMiddleware",
    "send_reply",
]

CORRELATION_HEADER: Final = "X-Correlation-ID"
"""The header carrying the correlation id, in and out, unless configured otherwise."""
MAX_REQUEST_DEADLINE: Final = 60.0
"""The largest deadline, in seconds, a caller's header may ask for by default."""

# An HTTP field name (RFC 9110 token): what may go in a header's name.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


# How many deadline header values a middleware keeps parsed.
_BUDGETS: Final = 64


def _header_name(name: str, value: object) -> bytes | None:
    """Return a header option as the lower-case bytes ASGI uses, or ``None`` for off."""
    if value is None:
        return None
    what = (
        f"{name} must be an HTTP header name (such as 'X-Request-Timeout') or None, got {value!r}"
    )
    if not isinstance(value, str):
        raise TypeError(what)
    if not _TOKEN.fullmatch(value):
        raise ValueError(what)
    return value.lower().encode("ascii")


async def send_reply(send: Send, reply: Reply, extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """Send `reply` as a whole ASGI response (start and body), with `extra` headers.

    .. versionadded:: 0.1.0
    """
    body = reply.content
    headers = [
        (b"content-type", reply.content_type.encode("latin-1")),
        (b"content-length", str(len(body)).encode("ascii")),
    ]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
    headers.extend(extra)
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _accepts_json(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"accept":
            return wants_json(value.decode("latin-1"))
    return wants_json(None)


class StalwartMiddleware:
    """Correlation id and deadline for every HTTP request; a pure ASGI middleware.

    For each HTTP request (WebSocket and lifespan scopes pass through untouched):

    - **correlation id**: read from `correlation_header` if it is 1 to 128 printable
      ASCII characters without spaces, otherwise a fresh one (the caller's value is
      dropped, not echoed). It is current (`stalwart.correlation_id`) for the whole
      request, so stalwart's log records (with
      `stalwart.contrib._web.CorrelationIdFilter`, re-exported here) and outgoing HTTP
      calls through stalwart carry it, and it is set on the response (replacing a value
      the endpoint may have set). ``None`` turns this off.
    - **deadline**: `request_deadline` seconds, or less if the caller asks through
      `deadline_header` (decimal seconds such as ``2.5``, or a gRPC timeout such as
      ``100m``), the header capped at `max_request_deadline`. The smaller is in force
      (`stalwart.deadline`) for the whole request, streaming body included: retries
      stop, timeouts and HTTP calls through stalwart are cut to what is left. A
      malformed or zero header gets ``400 Bad Request`` (problem details naming the
      header, or plain text when ``Accept`` prefers it) and the app is not called.
      Several values of the header count as malformed. Without either option no
      deadline is set.

    Both are context variables, set in the request's task: plain ``def`` endpoints,
    which Starlette runs in a worker thread, see them too (AnyIO copies the context
    into the thread), as do tasks the endpoint starts. Errors are not handled here:
    the exception handlers (`stalwart.contrib.fastapi.install`) answer
    `CircuitOpenError` and `TimeoutExceeded`. A response Starlette makes outside the
    user middleware (its ``500 Internal Server Error``) does not carry the
    correlation id.

    Args:
        app: The ASGI application to wrap.
        correlation_header: The header carrying the correlation id, in and out, or
            ``None`` for no correlation id.
        request_deadline: A deadline for every request, in seconds, or ``None``.
        deadline_header: A request header carrying the caller's budget (for example
            ``"X-Request-Timeout"`` or ``"grpc-timeout"``), or ``None`` to ignore
            callers' budgets.
        max_request_deadline: The largest budget `deadline_header` may ask for, in
            seconds; larger values are cut to it.

    Raises:
        TypeError: An option is of the wrong type.
        ValueError: A header name is not a valid HTTP field name, or a duration is not
            a finite number of seconds greater than zero.

    .. versionadded:: 0.1.0
    """

    __slots__ = (
        "_budgets",
        "_correlation_key",
        "_deadline",
        "_deadline_key",
        "_maximum",
        "app",
        "deadline_header",
    )

    def __init__(
        self,
        app: ASGIApp,
        *,
        correlation_header: str | None = CORRELATION_HEADER,
        request_deadline: float | timedelta | None = None,
        deadline_header: str | None = None,
        max_request_deadline: float | timedelta = MAX_REQUEST_DEADLINE,
    ) -> None:
        self.app = app
        self._correlation_key = _header_name("correlation_header", correlation_header)
        self._deadline_key = _header_name("deadline_header", deadline_header)
        self.deadline_header = deadline_header
        self._deadline = (
            None
            if request_deadline is None
            else _validate.seconds("request_deadline", request_deadline, positive=True)
        )
        self._maximum = _validate.seconds(
            "max_request_deadline", max_request_deadline, positive=True
        )
        # The deadline header values seen, parsed, capped and held against
        # `request_deadline` (see `_budget`).
        self._budgets: dict[bytes, float | None] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: C901, PLR0912, PLR0915 - the hot path, in one frame
        """Handle one ASGI connection: HTTP requests get the correlation id and deadline."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        correlation_key = self._correlation_key
        deadline_key = self._deadline_key
        raw_id: bytes | None = None
        raw_deadline: bytes | None = None
        for name, value in scope["headers"]:
            if name == correlation_key:
                if raw_id is None:
                    raw_id = value
            elif name == deadline_key:
                # Several values, even equal ones, are malformed: ", " never parses.
                raw_deadline = value if raw_deadline is None else raw_deadline + b", " + value

        seconds = self._deadline
        if raw_deadline is not None:
            try:
                seconds = self._budget(raw_deadline)
            except DeadlineHeaderError:
                await self._refuse(scope, send, raw_id)
                return

        if correlation_key is None:
            if seconds is None:
                await self.app(scope, receive, send)
                return
            token = None
            send_on = send
        else:
            value = (
                fresh_correlation_id()
                if raw_id is None
                else correlation_id_from(raw_id.decode("latin-1"))
            )
            field = (correlation_key, value.encode("ascii"))

            # A plain function handing back `send`'s awaitable: no coroutine frame of
            # its own for each message.
            def send_with_id(message: Message) -> Awaitable[None]:
                if message["type"] == "http.response.start":
                    # A new list (the response may own the one it sent; any iterable
                    # is read once), without a correlation header of the endpoint's:
                    # rarely there, so looked for before the list is filtered.
                    headers = list(message.get("headers", ()))
                    for name, _ in headers:
                        if name.lower() == correlation_key:
                            headers = [h for h in headers if h[0].lower() != correlation_key]
                            break
                    headers.append(field)
                    message["headers"] = headers
                return send(message)

            # What `stalwart.correlation_id(value)` does, without its checks (the id is
            # valid by construction) and with the undo token in this frame, which ends
            # the block.
            token = _correlation.var.set(value)
            send_on = send_with_id
        try:
            if seconds is None:
                await self.app(scope, receive, send_on)
            else:
                # What `with stalwart.deadline(seconds)` does, likewise: the smaller of
                # this deadline and one already in force, undone by this frame.
                at = _clock.now() + seconds
                outer = _deadline_scope.var.get()
                if outer is not None and outer < at:
                    at = outer
                deadline_token = _deadline_scope.var.set(at)
                try:
                    await self.app(scope, receive, send_on)
                finally:
                    _deadline_scope.var.reset(deadline_token)
        finally:
            if token is not None:
                _correlation.var.reset(token)

    def _budget(self, raw: bytes) -> float | None:
        """Return the deadline a request with deadline header `raw` runs under.

        Raises:
            DeadlineHeaderError: The header is malformed.
        """
        budgets = self._budgets
        if raw in budgets:  # entries are added, never removed
            return budgets[raw]
        seconds = request_deadline(
            raw.decode("latin-1"),
            default=self._deadline,
            maximum=self._maximum,
            header=self.deadline_header,
        )
        # Callers tend to send the same few budgets ("5", "30"): the first _BUDGETS
        # values seen are kept, parsed. Malformed ones raised above and are not kept.
        if len(budgets) < _BUDGETS:
            budgets[raw] = seconds
        return seconds

    async def _refuse(self, scope: Scope, send: Send, raw_id: bytes | None) -> None:
        """Answer a malformed deadline header with 400, echoing the correlation id."""
        reply = bad_deadline_reply(self.deadline_header or "", as_json=_accepts_json(scope))
        extra: list[tuple[bytes, bytes]] = []
        if self._correlation_key is not None:
            value = correlation_id_from(None if raw_id is None else raw_id.decode("latin-1"))
            extra.append((self._correlation_key, value.encode("ascii")))
        await send_reply(send, reply, extra)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.app!r})"


def _options(**options: Any) -> dict[str, Any]:
    """Validate middleware options by building a throwaway middleware; return them."""
    StalwartMiddleware(_nothing, **options)
    return options


async def _nothing(scope: Scope, receive: Receive, send: Send) -> None:  # pragma: no cover
    """An ASGI app that does nothing (for validating options)."""
