"""Memory of one breaker after 1,000,000 recorded outcomes, time and count windows.

Each breaker records outcomes through its decorator (one failure in ten, never enough
to open it) on a `ManualClock` that moves 1 ms a call, so the time window slides over
its whole length many times. Its memory is read with ``tracemalloc`` after 0, 1,000,
10,000, 100,000 and 1,000,000 outcomes: the growth since creation is what the breaker
kept (the windows are bucketed, so it should not grow). pybreaker, which keeps only
counters, is there for reference.

Run: ``python benchmarks/memory.py`` (about 10 s a breaker: ``--fast`` changes nothing
here); ``--json PATH`` keeps the figures. Growth of a few hundred bytes is the window's
bucket counters passing 256 (Python caches only small ints): bounded by the number of
buckets, not by the number of calls.
"""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import pybreaker
from _common import Down, section_args, write_section

import stalwart
import stalwart.breaker  # loaded before tracing starts: `import stalwart` defers it
from stalwart.testing import ManualClock

STEP = 0.001  # seconds the clock moves per call
FAIL_EVERY = 10


def breakers(clock: ManualClock) -> dict[str, Any]:
    """Each breaker, made by a factory so its construction is measured too."""
    return {
        "stalwart, time window (60 s)": lambda: stalwart.CircuitBreaker(
            "time",
            failure_threshold=None,
            failure_rate=0.5,
            window=60.0,
            clock=clock,
            log=False,
            registry=None,
        ),
        "stalwart, count window (1,000 calls)": lambda: stalwart.CircuitBreaker(
            "count",
            failure_threshold=None,
            failure_rate=0.5,
            window_calls=1000,
            clock=clock,
            log=False,
            registry=None,
        ),
        "stalwart, failure count in a 60 s window": lambda: stalwart.CircuitBreaker(
            "threshold",
            failure_threshold=1_000_000_000,
            window=60.0,
            clock=clock,
            log=False,
            registry=None,
        ),
        "pybreaker (reference)": lambda: pybreaker.CircuitBreaker(
            fail_max=1_000_000_000, reset_timeout=60
        ),
    }


def measure(make: Any, clock: ManualClock, checkpoints: list[int]) -> dict[int, int]:
    def outcome(i: int) -> int:
        clock.advance(STEP)
        if i % FAIL_EVERY == 0:
            raise Down(i)
        return i

    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        breaker = make()
        call = breaker(outcome)
        sizes = {}
        done = 0
        for stop in checkpoints:
            for i in range(done, stop):
                try:
                    call(i)
                except Down:
                    pass
            done = stop
            gc.collect()
            sizes[stop] = tracemalloc.get_traced_memory()[0] - start
        stats = getattr(breaker, "stats", None)
        if stats is not None and stats().state != "closed":
            raise AssertionError(f"{breaker!r} opened; the measurement needs it closed")
        del call, breaker
        return sizes
    finally:
        tracemalloc.stop()


def main() -> None:
    args = section_args(__doc__.splitlines()[0])
    checkpoints = [0, 1_000, 10_000, 100_000, 1_000_000]
    clock = ManualClock()
    sizes = {name: measure(make, clock, checkpoints) for name, make in breakers(clock).items()}
    head = " | ".join(f"after {n:,}" for n in checkpoints)
    lines = [
        (
            "Bytes traced since before the breaker was made (breaker, wrapper and state),"
            f" one failure in {FAIL_EVERY}, clock moving {STEP * 1000:g} ms per call."
        ),
        "",
        f"| breaker | {head} |",
        "|---|" + "---:|" * len(checkpoints),
    ]
    lines += [
        f"| {name} | " + " | ".join(f"{size:,}" for size in found.values()) + " |"
        for name, found in sizes.items()
    ]
    results = {
        "checkpoints": checkpoints,
        "bytes": {k: list(v.values()) for k, v in sizes.items()},
    }
    write_section(args, "memory", "Memory of one breaker", results, "\n".join(lines))


if __name__ == "__main__":
    main()
