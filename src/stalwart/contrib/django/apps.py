"""The app's configuration: label ``stalwart``; ``STALWART`` applied to the registry."""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from django.apps import AppConfig
from django.core.signals import setting_changed

from ...breaker.registry import registry
from .. import _admin
from . import conf

if TYPE_CHECKING:
    from collections.abc import Callable

    from ...breaker import CircuitBreaker, Storage

__all__ = ["StalwartConfig", "apply_settings", "restore_registry"]

logger = logging.getLogger("stalwart.contrib.django")

_undo: Callable[[], None] | None = None
"""Puts the default registry's storage and defaults back as they were before the
settings were applied (``None``: nothing applied)."""
_made: dict[str, CircuitBreaker] = {}
"""The breakers made from ``BREAKERS`` by the last `apply_settings`."""
_owned: list[Storage] = []
"""Storages made from ``STORAGE`` by the last `apply_settings`, closed by `restore_registry`."""


def restore_registry() -> None:
    """Undo `apply_settings`: forget its breakers, restore the registry's configuration.

    Breakers made from ``BREAKERS`` leave the default registry (code that holds one
    keeps it), and a Redis storage made from a URL is closed.

    .. versionadded:: 0.1.0
    """
    global _undo  # noqa: PLW0603 - the state of one registry
    for name, breaker in _made.items():
        if _admin.find_breaker(registry, name) is breaker:
            registry.remove(name)
    _made.clear()
    if _undo is not None:
        _undo()
        _undo = None
    while _owned:
        close = getattr(_owned.pop(), "close", None)
        if callable(close):
            close()


def apply_settings() -> None:
    """Apply ``STALWART`` to the default registry, in place of what was applied before.

    Sets the registry's defaults (``DEFAULTS``) and storage (``STORAGE``) and makes the
    breakers of ``BREAKERS``, without any network call (a Redis storage connects on
    its first use). What is invalid is left out here and reported by the system checks
    (``manage.py check``), so a typo never stops the project from starting.

    Runs in `StalwartConfig.ready` and whenever a test changes ``STALWART``
    (``override_settings``); `restore_registry` undoes it.

    .. versionadded:: 0.1.0
    """
    global _undo  # noqa: PLW0603 - the state of one registry
    restore_registry()
    settings = conf.stalwart_settings()
    storage: Any = None
    try:
        storage = conf.make_storage(settings["STORAGE"])
    except (TypeError, ValueError, ImportError):
        logger.warning("STALWART['STORAGE'] is invalid; see manage.py check", exc_info=True)
    if storage is not None:
        _owned.append(storage)
    defaults = settings["DEFAULTS"]
    keep: dict[str, Any] = {} if storage is None else {"storage": storage}
    try:
        _undo = registry.configure(**keep, **(defaults if isinstance(defaults, dict) else {}))
    except (TypeError, ValueError):
        logger.warning("STALWART['DEFAULTS'] is invalid; see manage.py check", exc_info=True)
        _undo = registry.configure(**keep)
    breakers = settings["BREAKERS"]
    for name, options in breakers.items() if isinstance(breakers, dict) else ():
        try:
            _made[name] = registry.get(name, **(options or {}))
        except (TypeError, ValueError):
            logger.warning("STALWART['BREAKERS'][%r] is invalid; see manage.py check", name)


def _setting_changed(*, setting: str, **_: Any) -> None:
    if setting == conf.SETTING:
        apply_settings()


_cleanup_installed = False


def _install_thread_cleanup() -> None:
    """Close database connections of stalwart's worker threads (see the ``db`` module)."""
    global _cleanup_installed  # noqa: PLW0603 - once per process
    if _cleanup_installed:
        return
    try:
        db = importlib.import_module(f"{__package__}.db")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.db":
            raise
        return
    db.install_thread_cleanup()
    _cleanup_installed = True


class StalwartConfig(AppConfig):
    """stalwart's Django app: applies ``STALWART`` to the default registry when ready.

    `ready` does no database query and no network call: it sets the default
    registry's defaults and storage, makes the breakers named in ``BREAKERS`` (so
    health shows them before their first call), and registers the system checks.

    .. versionadded:: 0.1.0
    """

    name = "stalwart.contrib.django"
    label = "stalwart"
    verbose_name = "stalwart"

    def ready(self) -> None:
        """Apply the settings; follow changes to them (tests); register the checks."""
        from . import checks  # noqa: F401, PLC0415 - registers the checks

        apply_settings()
        setting_changed.connect(_setting_changed, dispatch_uid="stalwart.contrib.django.apps")
        _install_thread_cleanup()
