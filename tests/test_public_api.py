"""The public surface: what `stalwart` exports, and what importing it costs."""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
import types

import pytest

import stalwart

PUBLIC_MODULES = [
    "stalwart",
    "stalwart.backoff",
    "stalwart.breaker",
    "stalwart.breaker.circuit",
    "stalwart.breaker.machine",
    "stalwart.breaker.registry",
    "stalwart.breaker.storage",
    "stalwart.breaker.window",
    "stalwart.budget",
    "stalwart.bulkhead",
    "stalwart.classify",
    "stalwart.contrib.celery",
    "stalwart.contrib.celery.dead_letter",
    "stalwart.contrib.celery.events",
    "stalwart.contrib.celery.redelivery",
    "stalwart.contrib.celery.status",
    "stalwart.contrib.celery.task",
    "stalwart.contrib.django.db",
    "stalwart.contrib.django.health",
    "stalwart.contrib.django.middleware",
    "stalwart.contrib.fastapi",
    "stalwart.contrib.httpx",
    "stalwart.contrib.opentelemetry",
    "stalwart.contrib.prometheus",
    "stalwart.contrib.redis",
    "stalwart.contrib.requests",
    "stalwart.contrib.sqlalchemy",
    "stalwart.errors",
    "stalwart.events",
    "stalwart.hedge",
    "stalwart.policy",
    "stalwart.presets",
    "stalwart.retry",
    "stalwart.testing",
    "stalwart.timeout",
]

EXPECTED = {
    "Attempt",
    "BreakerEvent",
    "BreakerListener",
    "BreakerRegistry",
    "BreakerStats",
    "RegistryHealth",
    "Policy",
    "circuit_breaker",
    "registry",
    "CircuitBreaker",
    "State",
    "StateChange",
    "Backoff",
    "BudgetStats",
    "Bulkhead",
    "BulkheadFull",
    "BulkheadStats",
    "HedgeStats",
    "Hedger",
    "CircuitOpenError",
    "Constant",
    "CorrelationId",
    "Deadline",
    "Decorrelated",
    "Exponential",
    "Linear",
    "LoggingListener",
    "PermanentError",
    "RetryBlock",
    "RetryDetails",
    "RetryListener",
    "RetryPolicy",
    "StalwartError",
    "Timeout",
    "TimeoutExceeded",
    "TransientError",
    "RetryBudget",
    "bulkhead",
    "constant",
    "correlation_id",
    "current_correlation_id",
    "deadline",
    "decorrelated",
    "exponential",
    "hedge",
    "linear",
    "remaining",
    "retry",
    "retry_budget",
    "retrying",
    "timeout",
}


def isort_style(name: str) -> tuple[int, str]:
    """The order ruff keeps `__all__` in: CONSTANTS, then Classes, then functions."""
    kind = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return (kind, name)


def test_all_is_sorted_and_pinned() -> None:
    """`stalwart.__all__` is sorted and names exactly the agreed public API."""
    assert stalwart.__all__ == sorted(stalwart.__all__)
    assert stalwart.__all__ == sorted(stalwart.__all__, key=isort_style)
    assert set(stalwart.__all__) == EXPECTED


def test_every_public_name_resolves() -> None:
    """Every name in `__all__` exists on the package."""
    for name in stalwart.__all__:
        assert getattr(stalwart, name) is not None, name


def test_public_objects_defined_in_package_are_all_exported() -> None:
    """No public class or function of the top-level modules is left out of `__all__`."""
    missing = {
        name
        for name, value in vars(stalwart).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and (inspect.isclass(value) or inspect.isfunction(value))
        and getattr(value, "__module__", "").startswith("stalwart")
    } - set(stalwart.__all__)
    assert missing == set()


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_every_public_module_has_a_sorted_all(module: str) -> None:
    """Each public module declares a sorted `__all__` whose names all exist."""
    mod = importlib.import_module(module)
    names = mod.__all__
    assert list(names) == sorted(names, key=isort_style)
    for name in names:
        assert hasattr(mod, name), f"{module}.{name}"


def test_classify_stays_a_module() -> None:
    """`stalwart.classify` is the module, and `stalwart.retry`/`timeout` the functions."""
    assert isinstance(stalwart.classify, types.ModuleType)
    from stalwart.classify import Verdict, classify

    assert classify(ConnectionError()) is Verdict.TRANSIENT
    assert callable(stalwart.retry)
    assert not isinstance(stalwart.retry, types.ModuleType)
    assert not isinstance(stalwart.timeout, types.ModuleType)
    importlib.import_module("stalwart.bulkhead")  # the module, which Policy imports too
    assert not isinstance(stalwart.bulkhead, types.ModuleType)
    importlib.import_module("stalwart.hedge")  # the HTTP transports import it
    assert not isinstance(stalwart.hedge, types.ModuleType)


def test_version_comes_from_package_metadata() -> None:
    """`__version__` is read lazily from the installed metadata."""
    from importlib.metadata import version

    assert stalwart.__version__ == version("stalwart")  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = stalwart.nope  # type: ignore[attr-defined]


def test_public_classes_show_the_public_path() -> None:
    """Public classes present themselves as `stalwart.X` in reprs and docs."""
    for name in (
        "RetryPolicy",
        "TransientError",
        "TimeoutExceeded",
        "Timeout",
        "Exponential",
        "Bulkhead",
        "RetryBudget",
        "Hedger",
    ):
        assert getattr(stalwart, name).__module__ == "stalwart", name


FRAMEWORKS = (
    "django",
    "fastapi",
    "celery",
    "httpx",
    "requests",
    "redis",
    "starlette",
    "sqlalchemy",
    "asyncpg",
    "psycopg",
    "psycopg2",
)


def test_import_pulls_in_no_framework() -> None:
    """`import stalwart` in a fresh interpreter loads no framework, nor anyio or tenacity."""
    code = (
        "import sys, json, stalwart, stalwart.presets, stalwart.testing;"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded = set(json.loads(out))
    assert loaded.isdisjoint(FRAMEWORKS), loaded & set(FRAMEWORKS)
    assert "anyio" not in loaded
    assert "tenacity" not in loaded


# Standard modules `import stalwart` leaves for first use: inspect (with ast and dis),
# dataclasses (which imports inspect), datetime and random cost ~8 ms between them.
DEFERRED = ("inspect", "dataclasses", "datetime", "random", "ast", "dis")


def test_import_defers_costly_standard_modules() -> None:
    """`import stalwart` in a fresh interpreter loads none of the `DEFERRED` modules."""
    code = f"import sys, stalwart; print([m for m in {DEFERRED!r} if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_breaker_and_policy_load_on_first_use() -> None:
    """`import stalwart` leaves the breaker, Policy (and json) unloaded until asked for."""
    code = (
        "import sys, stalwart;"
        "before = any(m in sys.modules for m in ('stalwart.breaker', 'stalwart.policy', 'json'));"
        "stalwart.registry.names(); stalwart.Policy;"
        "print(before, 'stalwart.breaker' in sys.modules, 'stalwart.policy' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["False", "True", "True"]
