"""Threads through one breaker: wall time, and no lost counts.

Wall time: 8 threads each make 25 calls of a function that takes 10 ms (it sleeps:
that is the workload, a call to a slow dependency), through one shared breaker,
against the same threads calling it unprotected. A breaker that holds its lock
around the call serialises the threads (8 x 25 x 10 ms = 2 s); one that does not
stays near the unprotected 25 x 10 ms = 0.25 s.

Counts: N threads each make M failing calls through one breaker whose threshold is
never reached, with a tiny GIL switch interval to provoke races; every failure must
be counted (stalwart's consecutive-failure and time-window modes, pybreaker's
``fail_counter``).

Run: ``python benchmarks/threads.py --fast``; ``--json PATH`` keeps the figures.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from typing import Any

import pybreaker
from _common import Down, section_args, write_section

import stalwart

THREADS = 8
CALLS = 25
WORK = 0.010  # seconds per call
COUNT_THREADS = 8


def work(x: int) -> int:
    time.sleep(WORK)
    return x


def fail(x: int) -> int:
    raise Down(x)


def in_threads(fn: Any, threads: int, calls: int) -> float:
    """Run `fn(i)` `calls` times in each of `threads` threads started together."""
    barrier = threading.Barrier(threads + 1)

    def worker() -> None:
        barrier.wait()
        for i in range(calls):
            try:
                fn(i)
            except Down:
                pass

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in pool:
        t.join()
    return time.perf_counter() - t0


def wall_times(runs: int) -> dict[str, list[float]]:
    variants = {
        "unprotected": lambda: work,
        "stalwart": lambda: stalwart.CircuitBreaker("threads", log=False, registry=None)(work),
        "pybreaker": lambda: pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)(work),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(runs):  # interleaved, so a burst of load hits every variant alike
        for name, make in variants.items():
            times[name].append(in_threads(make(), THREADS, CALLS))
    return times


def counts(calls: int) -> dict[str, dict[str, int]]:
    expected = COUNT_THREADS * calls
    never = expected + 1
    consecutive = stalwart.CircuitBreaker(
        "consecutive", failure_threshold=never, window=None, log=False, registry=None
    )
    windowed = stalwart.CircuitBreaker(
        "windowed", failure_threshold=never, window=3600.0, log=False, registry=None
    )
    theirs = pybreaker.CircuitBreaker(fail_max=never, reset_timeout=60)
    saved = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for fn in (consecutive(fail), windowed(fail), theirs(fail)):
            in_threads(fn, COUNT_THREADS, calls)
    finally:
        sys.setswitchinterval(saved)
    a, b = consecutive.stats(), windowed.stats()
    return {
        "stalwart (consecutive)": {
            "expected": expected,
            "failures": a.failures,
            "consecutive_failures": a.consecutive_failures,
        },
        "stalwart (time window)": {
            "expected": expected,
            "failures": b.failures,
            "window_failures": b.window_failures,
        },
        "pybreaker": {"expected": expected, "fail_counter": theirs.fail_counter},
    }


def main() -> None:
    args = section_args(__doc__.splitlines()[0])
    runs = 3 if args.fast else 7
    calls = 2_000 if args.fast else 10_000
    times = wall_times(runs)
    base = statistics.median(times["unprotected"])
    lines = [
        (
            f"{THREADS} threads x {CALLS} calls of a {WORK * 1000:g} ms function, one breaker;"
            f" median of {runs} runs."
        ),
        "",
        "| library | median wall (s) | min (s) | vs unprotected |",
        "|---|---:|---:|---:|",
    ]
    for name, values in times.items():
        median = statistics.median(values)
        lines.append(f"| {name} | {median:.3f} | {min(values):.3f} | {median / base - 1:+.1%} |")
    counted = counts(calls)
    lines += [
        "",
        f"{COUNT_THREADS} threads x {calls:,} failing calls, switch interval 1 us:",
        "",
        "| breaker | expected | counted | exact |",
        "|---|---:|---:|---|",
    ]
    exact = True
    for name, found in counted.items():
        expected = found.pop("expected")
        for key, value in found.items():
            ok = value == expected
            exact = exact and ok
            lines.append(
                f"| {name} `{key}` | {expected:,} | {value:,} | {'yes' if ok else 'NO'} |"
            )
    results = {
        "threads": THREADS,
        "calls": CALLS,
        "work_seconds": WORK,
        "wall_seconds": times,
        "counts": counted,
        "counts_exact": exact,
    }
    write_section(args, "threads", "Threads through one breaker", results, "\n".join(lines))
    if not exact:
        sys.exit("a count was lost")


if __name__ == "__main__":
    main()
