"""Tests for `stalwart.retry(..., budget=)` with a real `RetryBudget`: what the retry
loop deposits and withdraws, and how a refused retry ends the call."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest

import stalwart
from stalwart.budget import RetryBudget, budgets, retry_budget
from stalwart.testing import ManualClock

if TYPE_CHECKING:
    from collections.abc import Iterator

    from stalwart.events import RetryDetails

pytestmark = pytest.mark.skipif(
    "budget" not in inspect.signature(stalwart.retry).parameters,
    reason="stalwart.retry has no budget= parameter yet",
)

NOTE = "stalwart: retry refused by retry budget 'api'"


@pytest.fixture(autouse=True)
def _no_named_budgets() -> Iterator[None]:
    """Every test starts and ends with no budget shared by name."""
    budgets.clear()
    yield
    budgets.clear()


def floor_only(retries: int) -> RetryBudget:
    """A budget allowing exactly `retries` retries in its window, whatever the calls."""
    return RetryBudget("api", ratio=0, min_per_second=retries / 10, window=10, clock=ManualClock())


def notes(exc: BaseException) -> list[str]:
    """The PEP 678 notes of `exc`."""
    return list(getattr(exc, "__notes__", []))


class Down(ConnectionError):
    """What the failing dependency raises."""


class GiveUps:
    """A listener keeping the give-up records."""

    def __init__(self) -> None:
        self.records: list[RetryDetails] = []

    def on_give_up(self, details: RetryDetails) -> None:
        self.records.append(details)


def always_failing(calls: list[int]) -> Any:
    def call() -> None:
        calls.append(1)
        raise Down(len(calls))

    return call


def test_a_refused_retry_raises_the_error_at_once_with_a_note() -> None:
    """Once the budget refuses, the call ends with its own error, noted and counted."""
    budget = floor_only(2)
    calls: list[int] = []
    give_ups = GiveUps()
    fn = stalwart.retry(
        attempts=5, budget=budget, backoff=stalwart.constant(0), log=False, listeners=[give_ups]
    )(always_failing(calls))
    with pytest.raises(Down) as raised:
        fn()
    assert len(calls) == 3  # the first attempt and the 2 retries the budget allowed
    assert raised.value.args == (3,)  # the last attempt's own error, not a wrapper
    assert NOTE in notes(raised.value)
    assert [record.reason for record in give_ups.records] == ["retry budget 'api'"]
    stats = budget.stats()
    assert (stats.deposits, stats.retries_allowed, stats.retries_refused) == (1, 2, 1)


def test_a_spent_budget_leaves_one_attempt_per_call() -> None:
    """With the budget spent, each call makes its first attempt only."""
    budget = floor_only(0)
    calls: list[int] = []
    fn = stalwart.retry(attempts=3, budget=budget, backoff=stalwart.constant(0), log=False)(
        always_failing(calls)
    )
    for _ in range(4):
        with pytest.raises(Down):
            fn()
    assert len(calls) == 4
    stats = budget.stats()
    assert (stats.deposits, stats.retries_allowed, stats.retries_refused) == (4, 0, 4)


def test_success_deposits_once_and_withdraws_nothing() -> None:
    """A call that succeeds at once counts as one first attempt, and asks for nothing."""
    budget = floor_only(1)
    fn = stalwart.retry(attempts=3, budget=budget)(lambda: "ok")
    assert [fn() for _ in range(3)] == ["ok", "ok", "ok"]
    stats = budget.stats()
    assert (stats.deposits, stats.retries_allowed, stats.retries_refused) == (3, 0, 0)


def test_attempts_run_out_before_the_budget() -> None:
    """Attempts still bound one call; the budget is asked only for retries that would go."""
    budget = floor_only(100)
    calls: list[int] = []
    fn = stalwart.retry(attempts=3, budget=budget, backoff=stalwart.constant(0), log=False)(
        always_failing(calls)
    )
    with pytest.raises(Down) as raised:
        fn()
    assert len(calls) == 3
    assert NOTE not in notes(raised.value)
    stats = budget.stats()
    assert (stats.retries_allowed, stats.retries_refused) == (2, 0)


def test_errors_not_retried_ask_nothing() -> None:
    """A permanent error ends the call without asking the budget."""
    budget = floor_only(5)

    @stalwart.retry(attempts=3, budget=budget, log=False)
    def lookup() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError):
        lookup()
    stats = budget.stats()
    assert (stats.deposits, stats.retries_allowed, stats.retries_refused) == (1, 0, 0)


def test_functions_sharing_a_named_budget_share_its_counts() -> None:
    """Two functions given the budget of one name draw on the same window."""
    shared = retry_budget("api", ratio=0, min_per_second=0.1, window=10, clock=ManualClock())
    first: list[int] = []
    second: list[int] = []
    one = stalwart.retry(attempts=3, budget=shared, backoff=stalwart.constant(0), log=False)(
        always_failing(first)
    )
    other = stalwart.retry(
        attempts=3, budget=retry_budget("api"), backoff=stalwart.constant(0), log=False
    )(always_failing(second))
    with pytest.raises(Down):
        one()
    with pytest.raises(Down) as raised:
        other()
    assert (len(first), len(second)) == (2, 1)  # the only retry went to the first call
    assert NOTE in notes(raised.value)


def test_a_retrying_block_uses_the_budget() -> None:
    """`stalwart.retrying` deposits once and asks before each retry, as the decorator does."""
    budget = floor_only(1)
    calls: list[int] = []
    fail = always_failing(calls)
    with pytest.raises(Down) as raised:
        for attempt in stalwart.retrying(
            attempts=5, budget=budget, backoff=stalwart.constant(0), log=False
        ):
            with attempt:
                fail()
    assert len(calls) == 2
    assert NOTE in notes(raised.value)


@pytest.mark.anyio
async def test_async_refusal() -> None:
    """An async call ends the same way when the budget refuses."""
    budget = floor_only(1)
    calls: list[int] = []

    @stalwart.retry(attempts=5, budget=budget, backoff=stalwart.constant(0), log=False)
    async def fetch() -> None:
        calls.append(1)
        await anyio.lowlevel.checkpoint()
        raise Down(len(calls))

    with pytest.raises(Down) as raised:
        await fetch()
    assert len(calls) == 2
    assert NOTE in notes(raised.value)
    stats = budget.stats()
    assert (stats.deposits, stats.retries_allowed, stats.retries_refused) == (1, 1, 1)


@pytest.mark.anyio
async def test_cancellation_asks_nothing() -> None:
    """A call cancelled in its first attempt is never retried, so it withdraws nothing."""
    budget = floor_only(5)
    started = anyio.Event()

    @stalwart.retry(attempts=3, budget=budget, log=False)
    async def hang() -> None:
        started.set()
        await anyio.sleep_forever()

    async with anyio.create_task_group() as group:
        group.start_soon(hang)
        await started.wait()
        group.cancel_scope.cancel()
    stats = budget.stats()
    assert (stats.deposits, stats.retries_allowed, stats.retries_refused) == (1, 0, 0)
