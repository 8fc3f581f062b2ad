"""Circuit breakers: the breaker, its state machine and windows, storage, registry.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from .circuit import BreakerStats, CircuitBreaker
from .machine import BreakerConfig, State
from .storage import BreakerState, MemoryStorage, Storage

__all__ = [
    "BreakerConfig",
    "BreakerState",
    "BreakerStats",
    "CircuitBreaker",
    "MemoryStorage",
    "State",
    "Storage",
]
