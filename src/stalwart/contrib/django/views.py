"""Health, stats and operator views: JSON, over `stalwart.contrib._admin`.

Mounted by `stalwart.contrib.django.urls`. Who may call them is a setting
(``HEALTH_ACCESS``, ``PUBLIC_SUMMARY``, ``ADMIN_ACCESS``). They answer JSON, errors
included (RFC 9457 problem details): an anonymous caller gets 401, not a redirect to
a login page, because the callers are API clients, load balancers and scripts; a
logged-in caller without the right gets 403. The operator actions take POST only
(405 otherwise) and are CSRF protected like every Django view: a session-authenticated
client sends the ``csrftoken`` cookie's value in the ``X-CSRFToken`` header.

The views are sync: breakers on the sync `stalwart.contrib.redis.RedisStorage` (what
a Redis URL in ``STORAGE`` makes) answer in one Redis round trip each, bounded by its
socket timeout. Under ASGI, Django runs them in its thread for sync code.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.middleware.csrf import get_token

from ...breaker.registry import registry
from .. import _admin
from ._response import to_response
from .conf import stalwart_settings

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponse

__all__ = ["breaker", "breaker_action", "breakers", "caller", "health"]

_READ = ("GET", "HEAD")


def caller(request: HttpRequest) -> _admin.Caller:
    """Return who makes `request`, from ``request.user`` (anonymous without one).

    An inactive user counts as anonymous.

    .. versionadded:: 0.1.0
    """
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not getattr(user, "is_active", True):
        return _admin.ANONYMOUS
    return _admin.Caller(
        authenticated=True,
        staff=bool(getattr(user, "is_staff", False)),
        superuser=bool(getattr(user, "is_superuser", False)),
        has_perm=user.has_perm,
        name=user.get_username(),
    )


def not_allowed(*methods: str) -> HttpResponse:
    """Return the 405 problem reply with its ``Allow`` header."""
    return to_response(_admin.method_not_allowed(*methods))


def _with_csrf(request: HttpRequest, reply: _admin.Reply) -> HttpResponse:
    """`to_response`, setting the CSRF cookie for the actions when the reply is 200."""
    if reply.status == 200:
        get_token(request)  # the middleware sets the cookie on the response
    return to_response(reply)


def health(request: HttpRequest) -> HttpResponse:
    """``GET health/``: the overall health (or the public summary), 503 when critical.

    .. versionadded:: 0.1.0
    """
    if request.method not in _READ:
        return not_allowed(*_READ)
    settings = stalwart_settings()
    return to_response(
        _admin.health_reply(
            registry,
            caller(request),
            access=settings["HEALTH_ACCESS"],
            public_summary=settings["PUBLIC_SUMMARY"] is True,
            critical_status=settings["CRITICAL_STATUS"],
        )
    )


def breakers(request: HttpRequest) -> HttpResponse:
    """``GET breakers/``: every breaker's stats.

    .. versionadded:: 0.1.0
    """
    if request.method not in _READ:
        return not_allowed(*_READ)
    access = stalwart_settings()["HEALTH_ACCESS"]
    return _with_csrf(request, _admin.breakers_reply(registry, caller(request), access=access))


def breaker(request: HttpRequest, name: str) -> HttpResponse:
    """``GET breakers/<name>/``: one breaker's stats, 404 for an unknown name.

    .. versionadded:: 0.1.0
    """
    if request.method not in _READ:
        return not_allowed(*_READ)
    access = stalwart_settings()["HEALTH_ACCESS"]
    return _with_csrf(
        request, _admin.breaker_reply(registry, name, caller(request), access=access)
    )


def breaker_action(request: HttpRequest, name: str, action: str) -> HttpResponse:
    """``POST breakers/<name>/<action>/``: reset, force-open or disable a breaker.

    Replies ``{"name", "action", "state"}`` and logs the action with the user at
    WARNING on the ``stalwart.admin`` logger.

    .. versionadded:: 0.1.0
    """
    if request.method != "POST":
        return not_allowed("POST")
    access = stalwart_settings()["ADMIN_ACCESS"]
    plan = _admin.plan_action(registry, name, action, caller(request), access=access)
    return to_response(_admin.operator_action(plan))
