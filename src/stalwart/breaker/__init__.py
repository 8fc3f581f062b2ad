"""Circuit breakers: the breaker, its state machine and windows, storage, registry.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from .circuit import BreakerStats, CircuitBreaker
from .machine import BreakerConfig, State
from .registry import BreakerRegistry, RegistryHealth, circuit_breaker, registry
from .storage import BreakerState, MemoryStorage, Storage

__all__ = [
    "BreakerConfig",
    "BreakerRegistry",
    "BreakerState",
    "BreakerStats",
    "CircuitBreaker",
    "MemoryStorage",
    "RegistryHealth",
    "State",
    "Storage",
    "circuit_breaker",
    "registry",
]
