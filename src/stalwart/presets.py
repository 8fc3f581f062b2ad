"""Ready-made retry policies for common situations.

Each is a `stalwart.RetryPolicy`: decorate with it directly (``@presets.DEFAULT``),
loop with ``presets.DEFAULT.retrying()``, or adjust a copy with
``presets.DEFAULT.replace(attempts=5)``.

==============  ========  ==========================================================
preset          attempts  waits (exponential, full jitter)
==============  ========  ==========================================================
DEFAULT         3         from 1 s, doubling, capped at 10 s
TRANSIENT       2         from 50 ms, capped at 500 ms: one quick second chance
SLOW_SERVICE    5         from 2 s, doubling, capped at 30 s
NO_RETRY        1         never retries (a policy that documents a decision)
==============  ========  ==========================================================

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from .backoff import exponential
from .retry import RetryPolicy

__all__ = ["DEFAULT", "NO_RETRY", "SLOW_SERVICE", "TRANSIENT"]

DEFAULT = RetryPolicy(attempts=3, backoff=exponential(initial=1.0, max=10.0))
TRANSIENT = RetryPolicy(attempts=2, backoff=exponential(initial=0.05, max=0.5))
SLOW_SERVICE = RetryPolicy(attempts=5, backoff=exponential(initial=2.0, max=30.0))
NO_RETRY = RetryPolicy(attempts=1)
