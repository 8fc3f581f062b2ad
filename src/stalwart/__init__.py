"""stalwart: retries, circuit breakers, timeouts and deadlines for sync and async Python.

Everything public is importable from here; `stalwart.classify`, `stalwart.presets`
and `stalwart.testing` are modules of their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._correlation import CorrelationId, correlation_id, current_correlation_id
from ._deadline import Deadline, deadline, remaining
from ._run import Attempt
from .backoff import (
    Backoff,
    Constant,
    Decorrelated,
    Exponential,
    Linear,
    constant,
    decorrelated,
    exponential,
    linear,
)
from .errors import (
    BulkheadFull,
    CircuitOpenError,
    PermanentError,
    StalwartError,
    TimeoutExceeded,
    TransientError,
)
from .events import (
    BreakerEvent,
    BreakerListener,
    LoggingListener,
    RetryDetails,
    RetryListener,
    StateChange,
)
from .retry import RetryBlock, RetryPolicy, retry, retrying
from .timeout import Timeout, timeout

if TYPE_CHECKING:
    from .breaker import (
        BreakerRegistry,
        BreakerStats,
        CircuitBreaker,
        RegistryHealth,
        State,
        circuit_breaker,
    )
    from .policy import Policy

    registry: BreakerRegistry

__all__ = [
    "Attempt",
    "Backoff",
    "BreakerEvent",
    "BreakerListener",
    "BreakerRegistry",
    "BreakerStats",
    "BulkheadFull",
    "CircuitBreaker",
    "CircuitOpenError",
    "Constant",
    "CorrelationId",
    "Deadline",
    "Decorrelated",
    "Exponential",
    "Linear",
    "LoggingListener",
    "PermanentError",
    "Policy",
    "RegistryHealth",
    "RetryBlock",
    "RetryDetails",
    "RetryListener",
    "RetryPolicy",
    "StalwartError",
    "State",
    "StateChange",
    "Timeout",
    "TimeoutExceeded",
    "TransientError",
    "circuit_breaker",
    "constant",
    "correlation_id",
    "current_correlation_id",
    "deadline",
    "decorrelated",
    "exponential",
    "linear",
    "registry",
    "remaining",
    "retry",
    "retrying",
    "timeout",
]


# The breaker and Policy load on first use: code that only retries never pays for them.
_LAZY = {
    "BreakerRegistry": "breaker",
    "BreakerStats": "breaker",
    "CircuitBreaker": "breaker",
    "RegistryHealth": "breaker",
    "State": "breaker",
    "circuit_breaker": "breaker",
    "registry": "breaker",
    "Policy": "policy",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        from importlib import import_module  # noqa: PLC0415 - loaded at start-up anyway

        value = getattr(import_module(f"{__name__}.{module}"), name)
        globals()[name] = value  # later reads find it without coming here
        return value
    if name == "__version__":
        from importlib.metadata import version  # noqa: PLC0415 - computed only when asked

        return version("stalwart")
    raise AttributeError(f"module 'stalwart' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
