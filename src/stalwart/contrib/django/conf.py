"""The ``STALWART`` setting: every key, its default, and how it is read.

.. code-block:: python

    STALWART = {
        "DEFAULTS": {"failure_threshold": 5, "recovery_timeout": 60},
        "BREAKERS": {"servicenow": {}, "jira": {"failure_threshold": 3}},
        "STORAGE": "redis://127.0.0.1:6379/0",
    }

The setting is read once and cached; `override_settings` (Django's
``setting_changed`` signal) clears the cache, so tests that change it see the change.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from ...breaker import Storage

__all__ = [
    "DEFAULTS",
    "REDIS_SCHEMES",
    "SETTING",
    "STORAGE_KEYS",
    "Settings",
    "make_storage",
    "redis_url",
    "stalwart_settings",
]

SETTING = "STALWART"
"""The name of the Django setting."""

DEFAULTS: dict[str, Any] = {
    # The default registry's breaker defaults (`stalwart.breaker.BreakerOptions`).
    "DEFAULTS": {},
    # Breakers made at start-up, by name, with their own options.
    "BREAKERS": {},
    # Where breakers keep their state: None (memory, per process), a Redis URL
    # ("redis://..." or "rediss://...": shared across processes), a dict
    # {"URL": "redis://...", "OPTIONS": {...}} whose OPTIONS go to RedisStorage
    # (prefix, max_staleness, socket_timeout, retry_interval), or the dotted path
    # of a `stalwart.breaker.Storage` instance or of a callable returning one.
    "STORAGE": None,
    # Who may read health and stats: "public", "authenticated", "staff", "superuser",
    # or a permission "app_label.codename".
    "HEALTH_ACCESS": "staff",
    # Whether anyone may read the overall status alone (a liveness-style summary,
    # without breaker names).
    "PUBLIC_SUMMARY": False,
    # Who may reset, force open or disable a breaker, revoke a task or list the
    # running tasks: as HEALTH_ACCESS, but never public.
    "ADMIN_ACCESS": "staff",
    # Who may read a task's status (the task status views): as HEALTH_ACCESS.
    "TASK_STATUS_ACCESS": "authenticated",
    # The HTTP status of the overall health when it is critical.
    "CRITICAL_STATUS": 503,
    # Middleware: a deadline (seconds) for every request, or None.
    "REQUEST_DEADLINE": None,
    # Middleware: a request header carrying the caller's budget in seconds (for
    # example "X-Request-Timeout"), or None to ignore callers' budgets.
    "DEADLINE_HEADER": None,
    # Middleware: the largest deadline a caller's header may ask for, in seconds.
    "MAX_REQUEST_DEADLINE": 60.0,
    # Middleware: the header carrying the correlation id, in and out.
    "CORRELATION_HEADER": "X-Correlation-ID",
    # Task status views: the dotted path of the Celery app, or None for Celery's
    # current app.
    "CELERY_APP": None,
}
"""Every key of ``STALWART`` and its default."""


@dataclass(frozen=True)
class Settings:
    """``STALWART`` read, with the defaults filled in (see `DEFAULTS`).

    .. versionadded:: 0.1.0
    """

    raw: dict[str, Any] = field(default_factory=dict)
    """The setting as given."""

    def __getitem__(self, key: str) -> Any:
        return self.raw.get(key, DEFAULTS[key])


_cached: Settings | None = None

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
"""How a ``STORAGE`` string that is a Redis URL starts."""
STORAGE_KEYS = frozenset({"URL", "OPTIONS"})
"""The keys of a ``STORAGE`` dict."""


def redis_url(value: object) -> tuple[str, dict[str, Any]] | None:
    """Return the Redis URL and `RedisStorage` options ``STORAGE`` names, if it does.

    Raises:
        TypeError: A ``STORAGE`` dict has unknown keys, or values of the wrong type.
        ValueError: A ``STORAGE`` dict's URL is not a Redis URL.
    """
    if isinstance(value, str):
        return (value, {}) if value.startswith(REDIS_SCHEMES) else None
    if not isinstance(value, dict):
        return None
    unknown = sorted(set(value) - STORAGE_KEYS, key=str)
    if unknown:
        raise TypeError(
            f"STORAGE has unknown keys {unknown!r}; a STORAGE dict takes URL and OPTIONS"
        )
    url, options = value.get("URL"), value.get("OPTIONS", {})
    if not isinstance(url, str) or not url.startswith(REDIS_SCHEMES):
        raise ValueError(f"STORAGE['URL'] must be a Redis URL (redis://...), got {url!r}")
    if not isinstance(options, dict):
        raise TypeError(f"STORAGE['OPTIONS'] must be a dict, got {options!r}")
    return url, dict(options)


def make_storage(value: object) -> Storage | None:
    """Return the storage ``STORAGE`` names (``None``: the registry's own).

    A Redis URL becomes a `stalwart.contrib.redis.RedisStorage`, which connects on
    its first use, not here.

    Raises:
        TypeError: The value is of the wrong type, or names no storage.
        ValueError: A value is out of range.
        ImportError: A dotted path does not import.
    """
    if value is None:
        return None
    redis = redis_url(value)
    if redis is not None:
        from ..redis import RedisStorage  # noqa: PLC0415 - only when asked for

        url, options = redis
        return RedisStorage(url, **options)
    if not isinstance(value, str):
        raise TypeError(
            f"STORAGE must be None, a Redis URL, a dict with URL, or a dotted path; got {value!r}"
        )
    found = import_string(value)
    storage = found
    if isinstance(found, type) or (callable(found) and not hasattr(found, "bind")):
        storage = found()  # a class, or a factory
    if not callable(getattr(storage, "bind", None)):
        raise TypeError(f"STORAGE {value!r} names {found!r}, which is not a stalwart Storage")
    return storage  # type: ignore[no-any-return]


def stalwart_settings() -> Settings:
    """Return ``STALWART`` as read now (cached until a test changes it)."""
    global _cached  # noqa: PLW0603 - a cache of one value
    cached = _cached
    if cached is None:
        raw = getattr(django_settings, SETTING, None) or {}
        cached = _cached = Settings(dict(raw) if isinstance(raw, dict) else {})
    return cached


def _changed(*, setting: str, **_: Any) -> None:
    global _cached  # noqa: PLW0603 - a cache of one value
    if setting == SETTING:
        _cached = None


setting_changed.connect(_changed, dispatch_uid="stalwart.contrib.django.conf")
