"""Exception handlers: ``503`` for an open circuit, ``504`` for a timeout; Starlette and FastAPI.

.. code-block:: python

    from stalwart.contrib.fastapi import exception_handlers

    app = Starlette(routes=..., exception_handlers=exception_handlers())
    # or, on an existing app (FastAPI too):
    for exc_type, handler in exception_handlers().items():
        app.add_exception_handler(exc_type, handler)

`stalwart.contrib.fastapi.install` registers them for you. The replies themselves
(status, ``Retry-After``, problem details or plain text) are written by
`stalwart.contrib._web.error_reply`, shared with the Django middleware.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Final, cast

from starlette.responses import Response

from ...errors import CircuitOpenError, TimeoutExceeded
from .._web import error_reply, wants_json

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection
    from starlette.types import ExceptionHandler
    from starlette.websockets import WebSocket

    from .._reply import Reply

__all__ = ["HANDLED", "exception_handler", "exception_handlers", "to_response"]

HANDLED: Final[tuple[type[Exception], ...]] = (CircuitOpenError, TimeoutExceeded)
"""The exceptions the handlers answer: `CircuitOpenError` (503) and `TimeoutExceeded` (504)."""

# WebSocket close codes (RFC 6455 section 7.4, IANA registry): "try again later" for an
# open circuit, "internal error" for a timeout.
_WS_TRY_AGAIN_LATER: Final = 1013
_WS_INTERNAL_ERROR: Final = 1011


def to_response(reply: Reply) -> Response:
    """Return `reply` as a Starlette response: its status, content, type and headers.

    .. versionadded:: 0.1.0
    """
    response = Response(reply.content, status_code=reply.status, media_type=reply.content_type)
    for name, value in reply.headers:
        response.headers[name] = value
    return response


async def exception_handler(conn: HTTPConnection, exc: Exception) -> Response | None:
    """Answer a `CircuitOpenError` with 503 and a `TimeoutExceeded` with 504.

    ``503 Service Unavailable`` carries ``Retry-After`` (whole seconds, rounded up, at
    least 1; none when an operator holds the breaker open) and names the breaker;
    ``504 Gateway Timeout`` says the request ran out of time. Both are RFC 9457
    problem details (``application/problem+json``), or plain text when the request's
    ``Accept`` header prefers text; the exception's message is never sent. On a
    WebSocket the connection is closed instead (code 1013, "try again later", or
    1011). Any other exception is raised again.

    An ``async def``, so Starlette calls it on the event loop rather than in a thread.

    .. versionadded:: 0.1.0
    """
    if conn.scope["type"] == "websocket":
        if not isinstance(exc, HANDLED):
            raise exc
        code = _WS_TRY_AGAIN_LATER if isinstance(exc, CircuitOpenError) else _WS_INTERNAL_ERROR
        await cast("WebSocket", conn).close(code)
        return None
    reply = error_reply(exc, as_json=wants_json(conn.headers.get("accept")))
    if reply is None:
        raise exc
    return to_response(reply)


def handled_types(handlers: bool | Iterable[type[Exception]]) -> tuple[type[Exception], ...]:
    """Return the exception types `handlers` selects (see `exception_handlers`).

    Raises:
        TypeError: `handlers` is neither a bool nor a collection of exception types.
        ValueError: It names a type the handlers do not answer.
    """
    if isinstance(handlers, bool):
        return HANDLED if handlers else ()
    what = (
        "handlers must be True, False, or a collection of the exception types to handle"
        f" (CircuitOpenError, TimeoutExceeded), got {handlers!r}"
    )
    given: object = handlers
    if isinstance(given, (str, bytes)) or not isinstance(given, Iterable):
        raise TypeError(what)
    chosen = list(given)
    for kind in chosen:
        if not isinstance(kind, type):
            raise TypeError(what)
        if kind not in HANDLED:
            raise ValueError(what)
    return tuple(kind for kind in HANDLED if kind in chosen)


def exception_handlers(
    handlers: bool | Iterable[type[Exception]] = True,
) -> dict[type[Exception], ExceptionHandler]:
    """Return the exception handlers, by exception type, for Starlette or FastAPI.

    Give the result to ``Starlette(exception_handlers=...)`` or register each with
    ``app.add_exception_handler``. Every value is `exception_handler`.

    =================================  ===========================================
    ``True`` (the default)             `CircuitOpenError` and `TimeoutExceeded`.
    ``{stalwart.CircuitOpenError}``    Only those named (opt out of the others).
    ``False`` or ``()``                None.
    =================================  ===========================================

    Raises:
        TypeError: `handlers` is neither a bool nor a collection of exception types.
        ValueError: It names a type other than `CircuitOpenError` and
            `TimeoutExceeded` (a subclass or a base class included).

    .. versionadded:: 0.1.0
    """
    # Starlette types a handler as HTTP-only or WebSocket-only; this one serves both.
    handler = cast("ExceptionHandler", exception_handler)
    return dict.fromkeys(handled_types(handlers), handler)
