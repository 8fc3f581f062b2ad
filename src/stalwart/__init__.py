"""stalwart: retries, circuit breakers, bulkheads, timeouts and deadlines, sync and async.

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

# `bulkhead` and `hedge` are imported here, unlike the breaker: `stalwart.bulkhead` and
# `stalwart.hedge` must be the functions, not their modules (which `Policy` and the HTTP
# transports import), and both modules are light.
from .bulkhead import Bulkhead, BulkheadStats, bulkhead
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
from .hedge import Hedger, HedgeStats, hedge
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
    from .budget import BudgetStats, RetryBudget, retry_budget
    from .policy import Policy

    registry: BreakerRegistry

__all__ = [
    "Attempt",
    "Backoff",
    "BreakerEvent",
    "BreakerListener",
    "BreakerRegistry",
    "BreakerStats",
    "BudgetStats",
    "Bulkhead",
    "BulkheadFull",
    "BulkheadStats",
    "CircuitBreaker",
    "CircuitOpenError",
    "Constant",
    "CorrelationId",
    "Deadline",
    "Decorrelated",
    "Exponential",
    "HedgeStats",
    "Hedger",
    "Linear",
    "LoggingListener",
    "PermanentError",
    "Policy",
    "RegistryHealth",
    "RetryBlock",
    "RetryBudget",
    "RetryDetails",
    "RetryListener",
    "RetryPolicy",
    "StalwartError",
    "State",
    "StateChange",
    "Timeout",
    "TimeoutExceeded",
    "TransientError",
    "bulkhead",
    "circuit_breaker",
    "constant",
    "correlation_id",
    "current_correlation_id",
    "deadline",
    "decorrelated",
    "exponential",
    "hedge",
    "linear",
    "registry",
    "remaining",
    "retry",
    "retry_budget",
    "retrying",
    "timeout",
]


# The breaker, Policy and retry budgets load on first use: code that only retries never
# pays for them.
_LAZY = {
    "BreakerRegistry": "breaker",
    "BreakerStats": "breaker",
    "CircuitBreaker": "breaker",
    "RegistryHealth": "breaker",
    "State": "breaker",
    "circuit_breaker": "breaker",
    "registry": "breaker",
    "Policy": "policy",
    "BudgetStats": "budget",
    "RetryBudget": "budget",
    "retry_budget": "budget",
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
