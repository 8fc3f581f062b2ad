"""The breaker admin router for FastAPI: health, stats and operator actions, as JSON.

.. code-block:: python

    from fastapi import Depends, FastAPI
    from stalwart.contrib.fastapi import admin_router

    app = FastAPI()
    app.include_router(
        admin_router(
            read_dependencies=[Depends(require_staff)],
            admin_dependencies=[Depends(require_admin)],
        ),
        prefix="/resilience",
    )

Routes (under the prefix given to ``include_router``):

- ``GET health``: the overall health (healthy, degraded or critical), HTTP 503 (or
  `critical_status`) when critical;
- ``GET breakers``: every breaker's stats; ``GET breakers/{name}``: one breaker's
  (404 for a name the registry does not hold);
- ``POST breakers/{name}/reset``, ``.../force-open``, ``.../disable``: an operator
  action, logged with the actor at WARNING on the ``stalwart.admin`` logger.

Who may call them is decided by FastAPI dependencies you pass in, as with
fastapi-users: the read routes run `read_dependencies`, the actions
`admin_dependencies`; a dependency refuses a caller by raising
``HTTPException(401)`` or ``HTTPException(403)``.

The replies are those of the Django views (`stalwart.contrib.django.views`), byte for
byte apart from the timestamps: both adapters answer with the replies of
`stalwart.contrib._admin`, which this module turns into Starlette responses with
`to_response`. The breakers are read with the async variants, so breakers on an
`stalwart.contrib.redis.AsyncRedisStorage` are read on the event loop without
blocking it (a sync `stalwart.contrib.redis.RedisStorage` is read in a worker thread).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, cast

from fastapi import APIRouter, Depends, Request
from fastapi.params import Depends as DependsMarker
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.responses import Response  # noqa: TC002 - FastAPI reads the annotations

from ...breaker.registry import BreakerRegistry
from ...breaker.registry import registry as default_registry
from .. import _admin
from .handlers import to_response
from .lifespan import aclose_resources

__all__ = [
    "ACTIONS",
    "DEFAULT_ACTIONS",
    "MAX_ACTOR_LENGTH",
    "admin_router",
    "user_name",
]

logger = logging.getLogger("stalwart.contrib.fastapi")

ACTIONS: Final = tuple(_admin.ACTIONS)
"""Every operator action, by its URL spelling: ``reset``, ``force-open``, ``disable``."""
DEFAULT_ACTIONS: Final = ACTIONS
"""The operator actions `admin_router` serves unless told otherwise: all of them."""
MAX_ACTOR_LENGTH: Final = 200
"""An actor's name longer than this is cut to this length in the logs."""

_READ_METHODS: Final = ("GET", "HEAD")
_NOT_READ: Final = ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_NOT_POST: Final = ["GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"]
_USER_NAME_ATTRIBUTES: Final = ("display_name", "username", "email", "name")
_REFUSED: Final = frozenset({401, 403})


def user_name(user: object) -> str | None:
    """Return how the logs name `user`, or ``None`` for nobody (or an anonymous user).

    A string is the name itself. Another object is asked, in order, for
    ``display_name`` (Starlette's ``BaseUser``), ``username``, ``email`` and ``name``;
    the first non-empty string wins. An object whose ``is_authenticated`` is false
    (Starlette's ``UnauthenticatedUser``) is nobody. Characters that are not printable
    become ``?`` and the name is cut to `MAX_ACTOR_LENGTH`, so a name cannot forge a
    log line.

    .. versionadded:: 0.1.0
    """
    if user is None:
        return None
    if isinstance(user, str):
        name: str | None = user
    elif _attribute(user, "is_authenticated") is False:
        return None
    else:
        found = (_attribute(user, attribute) for attribute in _USER_NAME_ATTRIBUTES)
        name = next((value for value in found if isinstance(value, str) and value), None)
    if not name:
        return None
    return "".join(char if char.isprintable() else "?" for char in name[:MAX_ACTOR_LENGTH])


def _attribute(user: object, attribute: str) -> object:
    try:
        return getattr(user, attribute, None)
    except Exception:  # a property that raises (Starlette's BaseUser.display_name)
        return None


def _actor(given: object, request: Request) -> str | None:
    """The actor: what the ``actor`` dependency gave, else the request's user."""
    for user in (given, getattr(request.state, "user", None), request.scope.get("user")):
        name = user_name(user)
        if name is not None:
            return name
    return None


async def _no_actor() -> None:
    """The ``actor`` dependency when none is given: the request's user names the actor."""


# -- options -----------------------------------------------------------------------------


def _registry(value: object) -> BreakerRegistry:
    if value is None:
        return default_registry
    if not isinstance(value, BreakerRegistry):
        raise TypeError(f"registry must be a stalwart BreakerRegistry or None, got {value!r}")
    return value


def _dependencies(parameter: str, value: object) -> list[DependsMarker]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{parameter} must be a sequence of Depends(...), got {value!r}")
    items = list(value)
    for item in items:
        if not isinstance(item, DependsMarker):
            raise TypeError(
                f"{parameter} must hold Depends(...) or Security(...) markers,"
                f" got {item!r} (write Depends({getattr(item, '__name__', 'function')}))"
            )
    return items


def _flag(parameter: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{parameter} must be True or False, got {value!r}")
    return value


def _status(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"critical_status must be an HTTP status code, got {value!r}")
    if not 200 <= value <= 599:
        raise ValueError(
            f"critical_status must be an HTTP status code from 200 to 599, got {value!r}"
        )
    return value


def _actions(value: object) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"actions must be a collection of action names, got {value!r}")
    items = list(value)
    for item in items:
        if item not in ACTIONS:
            raise ValueError(
                f"actions must hold only {', '.join(map(repr, ACTIONS))}, got {item!r}"
            )
    return tuple(dict.fromkeys(items))


def _actor_dependency(value: object) -> DependsMarker:
    if value is None:
        return cast("DependsMarker", Depends(_no_actor))
    if not isinstance(value, DependsMarker):
        raise TypeError(f"actor must be Depends(...) returning the actor's name, got {value!r}")
    return value


@dataclass(frozen=True)
class _Options:
    """`admin_router`'s options, checked."""

    registry: BreakerRegistry
    read_dependencies: list[DependsMarker]
    admin_dependencies: list[DependsMarker]
    actor: DependsMarker
    critical_status: int
    public_summary: bool
    actions: tuple[str, ...]
    close_on_shutdown: bool


def _options(
    registry: object,
    *,
    read_dependencies: object,
    admin_dependencies: object,
    actor: object,
    allow_unauthenticated_admin: object,
    critical_status: object,
    public_summary: object,
    actions: object,
    close_on_shutdown: object,
) -> _Options:
    """Check `admin_router`'s options; refuse actions served to anyone unless asked."""
    options = _Options(
        registry=_registry(registry),
        read_dependencies=_dependencies("read_dependencies", read_dependencies),
        admin_dependencies=(
            []
            if admin_dependencies is None
            else _dependencies("admin_dependencies", admin_dependencies)
        ),
        actor=_actor_dependency(actor),
        critical_status=_status(critical_status),
        public_summary=_flag("public_summary", public_summary),
        actions=_actions(actions),
        close_on_shutdown=_flag("close_on_shutdown", close_on_shutdown),
    )
    unauthenticated = _flag("allow_unauthenticated_admin", allow_unauthenticated_admin)
    served = options.actions
    if served and not options.admin_dependencies:
        if not unauthenticated:
            raise ValueError(
                "admin_dependencies must be given (for example"
                " [Depends(require_admin)]) to serve the operator actions"
                f" {', '.join(served)}, got {admin_dependencies!r}; pass"
                " allow_unauthenticated_admin=True to serve them to anyone, or actions=()"
            )
        logger.warning(
            "admin_router serves the operator actions %s without authentication"
            " (allow_unauthenticated_admin=True)",
            ", ".join(served),
        )
    return options


# -- routes ------------------------------------------------------------------------------


def _summary_route(fallback: Callable[[], Awaitable[Response]]) -> type[APIRoute]:
    """A route class that answers `fallback` when a dependency refuses the caller.

    FastAPI runs a route's dependencies inside the handler `get_route_handler` makes;
    a 401 or 403 raised there becomes the public summary instead.
    """

    class SummaryRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def guarded(request: Request) -> Response:
                try:
                    return await handler(request)
                except HTTPException as exc:
                    if exc.status_code not in _REFUSED:
                        raise
                return await fallback()

            return guarded

    return SummaryRoute


async def _read_only() -> Response:
    """405 for a read route asked with another method."""
    return to_response(_admin.method_not_allowed(*_READ_METHODS))


async def _post_only() -> Response:
    """405 for an operator action asked with another method than POST."""
    return to_response(_admin.method_not_allowed("POST"))


def admin_router(
    registry: BreakerRegistry | None = None,
    *,
    read_dependencies: Sequence[DependsMarker] = (),
    admin_dependencies: Sequence[DependsMarker] | None = None,
    actor: DependsMarker | None = None,
    allow_unauthenticated_admin: bool = False,
    critical_status: int = 503,
    public_summary: bool = False,
    actions: Iterable[str] = DEFAULT_ACTIONS,
    close_on_shutdown: bool = True,
) -> APIRouter:
    """Return a `fastapi.APIRouter` serving the health, stats and operator actions.

    Include it with ``app.include_router(admin_router(...), prefix="/resilience")``.

    =================================  =====================================================
    route                              reply
    =================================  =====================================================
    ``GET health``                     ``{"status", "timestamp", "total", "totals", "open"}``;
                                       200, or `critical_status` when critical
    ``GET breakers``                   ``{"timestamp", "breakers": {name: stats}}``
    ``GET breakers/{name}``            the breaker's stats; 404 for an unknown name
    ``POST breakers/{name}/{action}``  ``{"name", "action", "state"}``; 404 for an unknown
                                       name or an action not served
    =================================  =====================================================

    Errors are RFC 9457 problem details (``application/problem+json``). Another method
    on these paths gets 405 with ``Allow``. No reply may be cached.

    Args:
        registry: The breakers to serve; the default registry (`stalwart.registry`)
            when ``None``.
        read_dependencies: FastAPI dependencies (``Depends(...)``) the read routes run
            first: one that raises ``HTTPException(401)`` or ``(403)`` refuses the
            caller. None: the read routes are public.
        admin_dependencies: Dependencies the operator actions run first. Required
            (non-empty) when any action is served, unless
            `allow_unauthenticated_admin`.
        actor: A dependency returning who acts, for the log of an operator action:
            a name, or a user object (named as `user_name` says). Without it, or when
            it returns ``None``, the actor is ``request.state.user``, else
            ``request.scope["user"]`` (set by Starlette's ``AuthenticationMiddleware``),
            else ``"unknown"``.
        allow_unauthenticated_admin: Serve the operator actions without
            `admin_dependencies`: anyone who reaches the router may reset, force open
            or disable a breaker. A warning is logged when the router is built.
        critical_status: The HTTP status of ``GET health`` when the health is
            critical (200 to 599; 503 by default, for load balancers).
        public_summary: When a read dependency refuses the caller (401 or 403),
            ``GET health`` answers the status alone (``{"status", "timestamp"}``, no
            breaker names) instead, as the Django setting ``PUBLIC_SUMMARY`` does.
        actions: The operator actions to serve (``"reset"``, ``"force-open"``,
            ``"disable"``); empty for none, and then no `admin_dependencies` are
            needed.
        close_on_shutdown: Give the router a lifespan that closes the registry's Redis
            clients when the application shuts down
            (`stalwart.contrib.fastapi.lifespan.aclose_resources`; FastAPI runs an
            included router's lifespan).

    Raises:
        ValueError: Actions are served without `admin_dependencies` and without
            `allow_unauthenticated_admin`; or `critical_status` or an action is out
            of range.
        TypeError: An option has the wrong type (a dependency given without
            ``Depends``, for instance).

    .. versionadded:: 0.1.0
    """
    options = _options(
        registry,
        read_dependencies=read_dependencies,
        admin_dependencies=admin_dependencies,
        actor=actor,
        allow_unauthenticated_admin=allow_unauthenticated_admin,
        critical_status=critical_status,
        public_summary=public_summary,
        actions=actions,
        close_on_shutdown=close_on_shutdown,
    )
    breakers, critical, served = options.registry, options.critical_status, options.actions
    actor_dependency = options.actor
    router = APIRouter(lifespan=_closing(breakers) if options.close_on_shutdown else None)

    async def health() -> Response:
        """The overall health: healthy, degraded or critical."""
        reply = await _admin.health_reply_async(
            breakers, _admin.ANONYMOUS, access="public", critical_status=critical
        )
        return to_response(reply)

    async def health_summary() -> Response:
        reply = await _admin.health_reply_async(
            breakers,
            _admin.ANONYMOUS,
            access="authenticated",
            public_summary=True,
            critical_status=critical,
        )
        return to_response(reply)

    async def all_breakers() -> Response:
        """Every breaker's stats."""
        reply = await _admin.breakers_reply_async(breakers, _admin.ANONYMOUS, access="public")
        return to_response(reply)

    async def one_breaker(name: str) -> Response:
        """One breaker's stats."""
        reply = await _admin.breaker_reply_async(breakers, name, _admin.ANONYMOUS, access="public")
        return to_response(reply)

    async def breaker_action(
        request: Request, name: str, action: str, given: Any = actor_dependency
    ) -> Response:
        """Reset, force open or disable a breaker."""
        if action not in served and action in ACTIONS:
            return to_response(_admin.unknown_action(action))
        caller = _admin.Caller(authenticated=True, staff=True, name=_actor(given, request))
        plan = _admin.plan_action(breakers, name, action, caller, access="staff")
        return to_response(await _admin.operator_action_async(plan))

    reads = options.read_dependencies
    health_route = _summary_route(health_summary) if options.public_summary and reads else APIRoute
    for path, endpoint, name, route_class in (
        ("/health", health, "stalwart_health", health_route),
        ("/breakers", all_breakers, "stalwart_breakers", APIRoute),
        ("/breakers/{name}", one_breaker, "stalwart_breaker", APIRoute),
    ):
        for method, documented in (("GET", True), ("HEAD", False)):  # one operation id each
            router.add_api_route(
                path,
                endpoint,
                methods=[method],
                dependencies=reads,
                name=name,
                route_class_override=route_class,
                include_in_schema=documented,
            )
        router.add_api_route(path, _read_only, methods=_NOT_READ, include_in_schema=False)
    if served:
        router.add_api_route(
            "/breakers/{name}/{action}",
            breaker_action,
            methods=["POST"],
            dependencies=options.admin_dependencies,
            name="stalwart_breaker_action",
        )
        router.add_api_route(
            "/breakers/{name}/{action}", _post_only, methods=_NOT_POST, include_in_schema=False
        )
    return router


def _closing(registry: BreakerRegistry) -> Callable[[object], AbstractAsyncContextManager[None]]:
    """A lifespan closing `registry`'s Redis clients on shutdown."""

    @asynccontextmanager
    async def lifespan(app: object) -> AsyncIterator[None]:
        del app
        yield
        await aclose_resources(registry)

    return lifespan
