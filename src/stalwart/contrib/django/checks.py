"""System checks of the ``STALWART`` setting (``manage.py check``).

========  ==================================================================
id        what it reports
========  ==================================================================
E001      ``STALWART`` is not a dict
E002      an unknown key in ``STALWART``
E003      ``DEFAULTS``: not a dict, an unknown breaker option, or a bad value
E004      ``BREAKERS``: not a dict, a bad name, an unknown option or a bad value
E005      ``STORAGE``: not a Redis URL, a ``{"URL", "OPTIONS"}`` dict nor a
          dotted path to a storage
E006      ``HEALTH_ACCESS``, ``ADMIN_ACCESS`` or ``TASK_STATUS_ACCESS`` is not an
          access level nor a permission (``ADMIN_ACCESS`` may not be public)
E007      ``PUBLIC_SUMMARY`` is not True or False
E008      ``CRITICAL_STATUS`` is not an HTTP status code (200 to 599)
E009      a middleware value (``REQUEST_DEADLINE``, ``DEADLINE_HEADER``,
          ``MAX_REQUEST_DEADLINE``, ``CORRELATION_HEADER``) is bad
E010      ``CELERY_APP`` is not None nor a dotted path
W001      the Redis of ``STORAGE`` does not answer (the check connects to it,
          with a short timeout)
W002      breakers made before the settings were applied keep another storage
          than ``STORAGE``
========  ==================================================================

Breaker options are checked by the same validation the breakers use, so the message
names the option and the value as the breaker would.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings as django_settings
from django.core.checks import CheckMessage, Error, Warning, register  # noqa: A004
from django.utils.module_loading import import_string

from ... import _validate
from ...breaker.registry import BreakerRegistry, registry
from .. import _admin
from . import conf

if TYPE_CHECKING:
    from collections.abc import Sequence

    from django.apps import AppConfig

__all__ = ["REDIS_CHECK_TIMEOUT", "check_redis", "check_settings"]

REDIS_CHECK_TIMEOUT = 0.5
"""Seconds the Redis check waits to connect and for the answer to ``PING``."""

_HEADER = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_HINT = "See the STALWART setting in stalwart's Django docs."


def _error(check_id: int, message: str) -> Error:
    return Error(message, hint=_HINT, obj=conf.SETTING, id=f"stalwart.E{check_id:03d}")


def _problem(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _defaults(raw: dict[str, Any]) -> tuple[list[CheckMessage], BreakerRegistry]:
    defaults = raw.get("DEFAULTS", {})
    if not isinstance(defaults, dict):
        return [_error(3, f"STALWART['DEFAULTS'] must be a dict, got {defaults!r}")], (
            BreakerRegistry()
        )
    try:
        return [], BreakerRegistry(**defaults)
    except (TypeError, ValueError) as exc:
        return [_error(3, f"STALWART['DEFAULTS'] is invalid: {_problem(exc)}")], (
            BreakerRegistry()
        )


def _breakers(raw: dict[str, Any], scratch: BreakerRegistry) -> list[CheckMessage]:
    breakers = raw.get("BREAKERS", {})
    if not isinstance(breakers, dict):
        return [_error(4, f"STALWART['BREAKERS'] must be a dict, got {breakers!r}")]
    errors: list[CheckMessage] = []
    for name, given in breakers.items():
        where = f"STALWART['BREAKERS'][{name!r}]"
        options = {} if given is None else given
        if not isinstance(options, dict):
            errors.append(_error(4, f"{where} must be a dict of options, got {options!r}"))
            continue
        try:
            scratch.get(name, **options)  # a scratch registry in memory: no I/O
        except (TypeError, ValueError) as exc:
            errors.append(_error(4, f"{where} is invalid: {_problem(exc)}"))
    return errors


def _storage(raw: dict[str, Any]) -> list[CheckMessage]:
    value = raw.get("STORAGE")
    try:
        redis = conf.redis_url(value)
        if redis is not None:
            from ..redis import RedisStorage  # noqa: PLC0415 - only when asked for

            RedisStorage(redis[0], **redis[1]).close()  # validates; connects to nothing
        elif value is not None:
            if not isinstance(value, str):
                raise TypeError(  # noqa: TRY301 - reported below, as make_storage's
                    f"STORAGE must be None, a Redis URL, a dict with URL, or a dotted"
                    f" path; got {value!r}"
                )
            found = import_string(value)  # a factory is not called: it may connect
            if not callable(getattr(found, "bind", None)) and not callable(found):
                raise TypeError(  # noqa: TRY301
                    f"STORAGE {value!r} names {found!r}, which is not a stalwart Storage"
                )
    except (TypeError, ValueError, ImportError) as exc:
        return [_error(5, f"STALWART['STORAGE'] is invalid: {_problem(exc)}")]
    return []


def _access(raw: dict[str, Any]) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    for key, public in (
        ("HEALTH_ACCESS", True),
        ("ADMIN_ACCESS", False),
        ("TASK_STATUS_ACCESS", True),
    ):
        if key in raw:
            try:
                _admin.check_access(f"STALWART[{key!r}]", raw[key], public=public)
            except (TypeError, ValueError) as exc:
                errors.append(_error(6, _problem(exc)))
    return errors


def _plain(raw: dict[str, Any]) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    summary = raw.get("PUBLIC_SUMMARY", False)
    if not isinstance(summary, bool):
        errors.append(
            _error(7, f"STALWART['PUBLIC_SUMMARY'] must be True or False, got {summary!r}")
        )
    status = raw.get("CRITICAL_STATUS", 503)
    if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
        errors.append(
            _error(
                8,
                f"STALWART['CRITICAL_STATUS'] must be an HTTP status code from 200 to 599,"
                f" got {status!r}",
            )
        )
    app = raw.get("CELERY_APP")
    if app is not None and (not isinstance(app, str) or not app):
        errors.append(
            _error(10, f"STALWART['CELERY_APP'] must be a dotted path or None, got {app!r}")
        )
    return errors


def _middleware(raw: dict[str, Any]) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    for key, optional in (("REQUEST_DEADLINE", True), ("MAX_REQUEST_DEADLINE", False)):
        value = raw.get(key, conf.DEFAULTS[key])
        if value is None and optional:
            continue
        try:
            _validate.seconds(f"STALWART[{key!r}]", value, positive=True)
        except (TypeError, ValueError) as exc:
            errors.append(_error(9, _problem(exc)))
    for key, optional in (("DEADLINE_HEADER", True), ("CORRELATION_HEADER", False)):
        value = raw.get(key, conf.DEFAULTS[key])
        if value is None and optional:
            continue
        if not isinstance(value, str) or not _HEADER.match(value):
            errors.append(
                _error(9, f"STALWART[{key!r}] must be an HTTP header name, got {value!r}")
            )
    return errors


@register("stalwart")
def check_settings(
    app_configs: Sequence[AppConfig] | None = None,  # noqa: ARG001 - as Django calls it
    **_: Any,
) -> list[CheckMessage]:
    """Check every key of ``STALWART`` (E001 to E010, W002); no network call.

    .. versionadded:: 0.1.0
    """
    raw = getattr(django_settings, conf.SETTING, None)
    if raw is None:
        return []
    if not isinstance(raw, dict):
        return [_error(1, f"STALWART must be a dict, got {type(raw).__name__}")]
    messages: list[CheckMessage] = [
        _error(
            2, f"STALWART has an unknown key {key!r}; keys are {', '.join(sorted(conf.DEFAULTS))}"
        )
        for key in sorted(set(raw) - set(conf.DEFAULTS), key=str)
    ]
    found, scratch = _defaults(raw)
    messages += found
    messages += _breakers(raw, scratch)
    messages += _storage(raw)
    messages += _access(raw)
    messages += _plain(raw)
    messages += _middleware(raw)
    messages += _stray_breakers(raw)
    return messages


def _stray_breakers(raw: dict[str, Any]) -> list[CheckMessage]:
    if raw.get("STORAGE") is None:
        return []
    stray = sorted(b.name for b in registry if b.storage is not registry.storage)
    if not stray:
        return []
    return [
        Warning(
            f"breakers {stray!r} keep another storage than STALWART['STORAGE']: they were"
            f" made before the settings were applied, or with a storage of their own",
            hint="Make breakers with stalwart.circuit_breaker() in code that runs after"
            " the apps are ready, or name them in STALWART['BREAKERS'].",
            obj=conf.SETTING,
            id="stalwart.W002",
        )
    ]


def _safe_url(url: str) -> str:
    """The URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@register("stalwart")
def check_redis(
    app_configs: Sequence[AppConfig] | None = None,  # noqa: ARG001 - as Django calls it
    **_: Any,
) -> list[CheckMessage]:
    """Warn (W001) when the Redis named by ``STORAGE`` does not answer ``PING``.

    Connects, with a timeout of `REDIS_CHECK_TIMEOUT` seconds. Only for a Redis URL
    (or a ``{"URL": ...}`` dict); a storage given by dotted path is not tried.

    .. versionadded:: 0.1.0
    """
    raw = getattr(django_settings, conf.SETTING, None)
    if not isinstance(raw, dict):
        return []
    try:
        redis_storage = conf.redis_url(raw.get("STORAGE"))
    except (TypeError, ValueError):
        return []  # E005 says so
    if redis_storage is None:
        return []
    import redis  # noqa: PLC0415 - only when a Redis URL is configured

    url = redis_storage[0]
    client = redis.Redis.from_url(
        url, socket_timeout=REDIS_CHECK_TIMEOUT, socket_connect_timeout=REDIS_CHECK_TIMEOUT
    )
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        return [
            Warning(
                f"the Redis of STALWART['STORAGE'] ({_safe_url(url)}) does not answer:"
                f" {type(exc).__name__}",
                hint="Breakers work on with a state of their own in each process while"
                " Redis is unavailable, and share it again when Redis is back.",
                obj=conf.SETTING,
                id="stalwart.W001",
            )
        ]
    finally:
        client.close()
    return []
