"""FastAPI and Starlette: 503 and 504 for stalwart errors, deadlines, correlation ids, health.

Install with ``pip install "stalwart[fastapi]"``, then:

.. code-block:: python

    from fastapi import Depends, FastAPI
    from stalwart.contrib.fastapi import admin_router, install

    app = FastAPI()
    install(app, request_deadline=10.0, deadline_header="X-Request-Timeout")
    app.include_router(
        admin_router(admin_dependencies=[Depends(require_admin)]), prefix="/resilience"
    )

Everything but `admin_router` needs Starlette alone and works on a plain Starlette
application: importing this package imports Starlette, never FastAPI (`admin_router`
is loaded, with FastAPI, when first used).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import contextlib
import weakref
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette

from ...breaker.registry import BreakerRegistry
from .handlers import HANDLED, exception_handler, exception_handlers, handled_types, to_response
from .lifespan import aclose_resources, lifespan
from .middleware import (
    CORRELATION_HEADER,
    MAX_REQUEST_DEADLINE,
    CorrelationIdFilter,
    StalwartMiddleware,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable
    from datetime import timedelta

    from .router import admin_router

__all__ = [
    "HANDLED",
    "CorrelationIdFilter",
    "StalwartMiddleware",
    "aclose_resources",
    "admin_router",
    "exception_handler",
    "exception_handlers",
    "install",
    "lifespan",
    "to_response",
]

# The applications `install` has set up (weakly: an app that goes away leaves the set).
_installed: weakref.WeakSet[Starlette] = weakref.WeakSet()


def __getattr__(name: str) -> Any:
    """Load `admin_router` (and FastAPI with it) on first use."""
    if name == "admin_router":
        from .router import admin_router  # noqa: PLC0415 - FastAPI only when asked for

        return admin_router
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def install(
    app: Starlette,
    *,
    handlers: bool | Iterable[type[Exception]] = True,
    middleware: bool = True,
    close_on_shutdown: bool = True,
    correlation_header: str | None = CORRELATION_HEADER,
    request_deadline: float | timedelta | None = None,
    deadline_header: str | None = None,
    max_request_deadline: float | timedelta = MAX_REQUEST_DEADLINE,
    registry: BreakerRegistry | None = None,
) -> None:
    """Set stalwart up on a Starlette or FastAPI application, once, before it starts.

    ==========================  ===================================================
    `handlers`                  `CircuitOpenError` -> ``503`` with ``Retry-After``,
                                `TimeoutExceeded` -> ``504`` (see
                                `exception_handler`); ``True``, ``False``, or the
                                collection of those to handle, e.g.
                                ``{stalwart.CircuitOpenError}``.
    `middleware`                `StalwartMiddleware` with the options below
                                (correlation id, per-request deadline), added with
                                ``app.add_middleware``: outside the middleware
                                added before, inside any added after.
    `close_on_shutdown`         The app's lifespan, wrapped: after it has exited
                                (the user's own shutdown code first), stalwart's
                                Redis clients of `registry` are closed
                                (`aclose_resources`). The lifespan's state still
                                reaches requests.
    ==========================  ===================================================

    .. code-block:: python

        app = FastAPI(lifespan=my_lifespan)
        install(app, request_deadline=10.0, deadline_header="X-Request-Timeout",
                max_request_deadline=30.0)

    Call it once per application: a second call raises `RuntimeError` (it would add
    the middleware twice) rather than guess which options win. Like
    ``add_middleware``, it must be called before the application serves its first
    request or lifespan event.

    Args:
        app: The application (`starlette.applications.Starlette` or a subclass, such
            as ``fastapi.FastAPI``).
        handlers: Which exception handlers to register.
        middleware: Whether to add `StalwartMiddleware`.
        close_on_shutdown: Whether to close stalwart's Redis clients on shutdown.
        correlation_header: As for `StalwartMiddleware`.
        request_deadline: As for `StalwartMiddleware`.
        deadline_header: As for `StalwartMiddleware`.
        max_request_deadline: As for `StalwartMiddleware`.
        registry: The registry whose clients `close_on_shutdown` closes; the default
            registry (`stalwart.registry`) when ``None``.

    Raises:
        TypeError: `app` is not a Starlette application, or an option is of the
            wrong type.
        ValueError: An option is out of range (see `StalwartMiddleware` and
            `exception_handlers`).
        RuntimeError: stalwart is already installed on `app`, or `app` has started.

    .. versionadded:: 0.1.0
    """
    if not isinstance(app, Starlette):
        raise TypeError(
            f"app must be a Starlette application (starlette.applications.Starlette or"
            f" fastapi.FastAPI), got {app!r}"
        )
    chosen = handled_types(handlers)
    _flag("middleware", middleware)
    _flag("close_on_shutdown", close_on_shutdown)
    if registry is not None and not isinstance(registry, BreakerRegistry):
        raise TypeError(f"registry must be a stalwart BreakerRegistry or None, got {registry!r}")
    options: dict[str, Any] = {
        "correlation_header": correlation_header,
        "request_deadline": request_deadline,
        "deadline_header": deadline_header,
        "max_request_deadline": max_request_deadline,
    }
    StalwartMiddleware(app, **options)  # validates the options, whether used or not
    if app in _installed:
        raise RuntimeError(f"stalwart is already installed on {app!r}: call install() once")
    if app.middleware_stack is not None:
        raise RuntimeError(f"{app!r} has started: call install() before it serves")

    if middleware:
        app.add_middleware(StalwartMiddleware, **options)
    for kind, handler in exception_handlers(chosen).items():
        app.add_exception_handler(kind, handler)
    if close_on_shutdown:
        _close_after(app, registry)
    _installed.add(app)


def _close_after(app: Starlette, registry: BreakerRegistry | None) -> None:
    """Wrap `app`'s lifespan: the user's first, then `aclose_resources`, however it ends."""
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan_then_close(served: Any) -> AsyncIterator[Any]:
        try:
            async with inner(served) as state:
                yield state  # the user's state reaches requests as before
        finally:
            await aclose_resources(registry)

    app.router.lifespan_context = lifespan_then_close
