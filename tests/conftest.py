"""Shared fixtures: global state reset between tests, async backends, services."""

from __future__ import annotations

import importlib
import os
import socket
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

import stalwart
from celery_support import celery_apps  # noqa: F401 - shared fixtures
from redis_support import client, prefix, private_redis  # noqa: F401 - shared fixtures
from stalwart import _clock
from stalwart.testing import ManualClock

if TYPE_CHECKING:
    from collections.abc import Iterator

# Hypothesis judges its own speed by the wall clock; on a loaded 2-core machine (CI runs
# the Redis and process tests beside it) a single slow draw would fail a sound test.
# Examples still run: only the timing checks are off.
settings.register_profile("stalwart", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "stalwart"))

pytest_plugins = ["pytester"]

SERVICES = {
    "redis": ("127.0.0.1", 6379),
    "postgres": ("127.0.0.1", 5432),
    "rabbitmq": ("127.0.0.1", 5672),
}


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """Forget the settings module pytest-django exported, once Django is set up.

    Left in the environment, it would turn on Celery's Django fix-up in every Celery
    app and worker process the tests start, which are not Django programs.
    """
    os.environ.pop("DJANGO_SETTINGS_MODULE", None)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked with a service that is down, or fail them under CI."""
    required = os.environ.get("STALWART_REQUIRE_SERVICES") == "1"
    down: dict[str, bool] = {}
    for item in items:
        for name, (host, port) in SERVICES.items():
            if item.get_closest_marker(name) is None:
                continue
            if name not in down:
                down[name] = not _reachable(host, port)
            if down[name] and not required:
                item.add_marker(
                    pytest.mark.skip(reason=f"{name} is not reachable on {host}:{port}")
                )


@pytest.fixture(autouse=True)
def _reset_clock() -> Iterator[None]:
    """Every test starts and ends on the real clock with real sleeps."""
    saved = (_clock._source, _clock._instant, _clock.now)
    yield
    _clock._source, _clock._instant, _clock.now = saved


@pytest.fixture(autouse=True)
def _clear_default_registry() -> Iterator[None]:
    """Every test starts and ends with an empty default breaker registry."""
    stalwart.registry.clear()
    yield
    stalwart.registry.clear()


_NAMED = (
    ("stalwart.bulkhead", "bulkheads"),
    ("stalwart.budget", "budgets"),
    ("stalwart.hedge", "hedgers"),
)
"""The strategies shared by name: module, and its `stalwart._named.Named`."""


@pytest.fixture(autouse=True)
def _clear_named_strategies() -> Iterator[None]:
    """Every test starts and ends without bulkheads, budgets or hedgers shared by name."""
    held = [getattr(importlib.import_module(module), name) for module, name in _NAMED]
    for named in held:
        named.clear()
    yield
    for named in held:
        named.clear()


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every `@pytest.mark.anyio` test under asyncio and trio."""
    return str(request.param)


@pytest.fixture
def fake_time() -> Iterator[ManualClock]:
    """A manual clock installed as stalwart's clock, starting at 1000 s."""
    with ManualClock(1000.0) as clock:
        yield clock
