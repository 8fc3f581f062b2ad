"""Retry budget bookkeeping: what `deposit` and `withdraw` cost, and what a budget adds
to a retried call.

Scenarios, each ``plain`` next to ``stalwart`` in one pyperf run:

- ``budget-deposit``: `RetryBudget.deposit` against a call to an empty method;
- ``budget-withdraw``: `RetryBudget.withdraw` that allows the retry (a budget whose
  floor never runs out), against the same empty method;
- ``budget-refused``: `withdraw` that refuses (a budget of zero), likewise;
- ``budget-retry-sync`` and ``budget-retry-async``: a call that succeeds at once
  through ``stalwart.retry(attempts=3)``, without a budget (``plain``) and with one
  (``stalwart``; it deposits once per call). Their ratio is what a budget costs a
  retried call.

The budgets read stalwart's default clock (``time.monotonic`` through
`stalwart._clock.current`), and move to a new slot of their window every second, as
in use. Run: ``.venv/bin/python benchmarks/retry_budget.py --fast``.
"""

from __future__ import annotations

import inspect
from typing import Any

import pyperf
from _common import async_loops, plain

import stalwart
from stalwart.budget import RetryBudget

HAS_BUDGET = "budget" in inspect.signature(stalwart.retry).parameters
"""Whether `stalwart.retry` takes ``budget=`` (the retry scenarios need it)."""


class Empty:
    """The baseline: a method call that does nothing."""

    def deposit(self) -> None:
        pass

    def withdraw(self) -> bool:
        return True


def method_loops(method: Any) -> Any:
    def time_it(loops: int) -> float:
        call = method
        t0 = pyperf.perf_counter()
        for _ in range(loops):
            call()
        return pyperf.perf_counter() - t0

    return time_it


def call_loops(fn: Any) -> Any:
    def time_it(loops: int) -> float:
        call = fn
        t0 = pyperf.perf_counter()
        for _ in range(loops):
            call(1)
        return pyperf.perf_counter() - t0

    return time_it


async def aplain(x: int) -> int:
    return x


def retried(fn: Any) -> dict[str, Any]:
    wrapped = {"plain": stalwart.retry(on=ConnectionError, attempts=3, log=False)(fn)}
    if HAS_BUDGET:
        budget = RetryBudget("bench")
        wrapped["stalwart"] = stalwart.retry(
            on=ConnectionError,
            attempts=3,
            log=False,
            budget=budget,  # type: ignore[call-arg, unused-ignore]
        )(fn)
    return wrapped


def main() -> None:
    runner = pyperf.Runner()
    runner.metadata["description"] = "retry budget bookkeeping"
    empty = Empty()
    plenty = RetryBudget("bench", ratio=0, min_per_second=1e12)
    spent = RetryBudget("bench", ratio=0, min_per_second=0)
    spent.withdraw()
    runner.bench_time_func("budget-deposit-plain", method_loops(empty.deposit))
    runner.bench_time_func("budget-deposit-stalwart", method_loops(RetryBudget().deposit))
    runner.bench_time_func("budget-withdraw-plain", method_loops(empty.withdraw))
    runner.bench_time_func("budget-withdraw-stalwart", method_loops(plenty.withdraw))
    runner.bench_time_func("budget-refused-plain", method_loops(empty.withdraw))
    runner.bench_time_func("budget-refused-stalwart", method_loops(spent.withdraw))
    for peer, fn in retried(plain).items():
        runner.bench_time_func(f"budget-retry-sync-{peer}", call_loops(fn))
    for peer in retried(aplain):
        runner.bench_time_func(
            f"budget-retry-async-{peer}", async_loops(lambda: retried(aplain), peer)
        )


if __name__ == "__main__":
    main()
