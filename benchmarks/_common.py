"""What the breaker benchmarks share: the protected functions and the timed loop."""

from __future__ import annotations

from typing import Any

import pyperf


class Down(ConnectionError):
    """What the failing dependency raises."""


def plain(x: int) -> int:
    return x


def fail(x: int) -> int:
    raise Down(x)


def sync_loops(fn: Any, *, rejected: bool) -> Any:
    """A pyperf time function calling `fn(1)` `loops` times (catching, if `rejected`)."""

    def time_it(loops: int) -> float:
        t0 = pyperf.perf_counter()
        if rejected:
            for _ in range(loops):
                try:
                    fn(1)
                except Exception:
                    pass
        else:
            for _ in range(loops):
                fn(1)
        return pyperf.perf_counter() - t0

    return time_it
