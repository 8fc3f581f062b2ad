"""Tests for `stalwart.budget`: the retry budget, its window, its stats and its names."""

from __future__ import annotations

import itertools
import json
import math
import re
import sys
import threading
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stalwart import budget as budget_module
from stalwart._named import Named
from stalwart.budget import (
    DEFAULT_MIN_PER_SECOND,
    DEFAULT_RATIO,
    DEFAULT_WINDOW,
    SLOTS,
    BudgetStats,
    RetryBudget,
    budgets,
    retry_budget,
    slot_of,
)
from stalwart.testing import ManualClock

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(autouse=True)
def _no_named_budgets() -> Iterator[None]:
    """Every test starts and ends with no budget shared by name."""
    budgets.clear()
    yield
    budgets.clear()


def make(
    ratio: float = 0.5, min_per_second: float = 0.0, window: float = 10.0, start: float = 0.0
) -> tuple[RetryBudget, ManualClock]:
    clock = ManualClock(start)
    return (
        RetryBudget(ratio=ratio, min_per_second=min_per_second, window=window, clock=clock),
        clock,
    )


# --- options ----------------------------------------------------------------------------


def test_defaults_are_finagles() -> None:
    """The defaults allow 20 % of calls on top of 10 retries a second, over 10 s."""
    budget = RetryBudget()
    assert (budget.ratio, budget.min_per_second, budget.window) == (0.2, 10.0, 10.0)
    assert (DEFAULT_RATIO, DEFAULT_MIN_PER_SECOND, DEFAULT_WINDOW) == (0.2, 10.0, 10.0)
    assert budget.name == "retry-budget"
    assert not budget.stats().exhausted  # the floor: 100 retries over the window


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("ratio", -0.1),
        ("ratio", math.nan),
        ("ratio", math.inf),
        ("min_per_second", -1),
        ("min_per_second", math.nan),
        ("window", 0),
        ("window", 0.0001),
        ("window", -5),
        ("window", math.inf),
        ("window", timedelta(0)),
    ],
)
def test_out_of_range_options_raise_value_error(option: str, value: object) -> None:
    """An out-of-range option raises ValueError naming the option and the value."""
    with pytest.raises(ValueError, match=rf"^{option} must be .* got {re.escape(repr(value))}$"):
        RetryBudget(**{option: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("option", "value"),
    [("ratio", "0.2"), ("ratio", True), ("min_per_second", None), ("window", "10")],
)
def test_wrong_kinds_raise_type_error(option: str, value: object) -> None:
    """An option of the wrong kind raises TypeError naming it."""
    with pytest.raises(TypeError, match=rf"^{option} must be"):
        RetryBudget(**{option: value})  # type: ignore[arg-type]


def test_bad_name_and_clock_are_refused() -> None:
    """An empty or non-string name, or a clock that cannot be called, is refused."""
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        RetryBudget("")
    with pytest.raises(TypeError, match="name must be a string"):
        RetryBudget(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="clock must be a callable"):
        RetryBudget(clock=5.0)  # type: ignore[arg-type]


def test_window_takes_a_timedelta() -> None:
    """A timedelta window means its seconds."""
    assert RetryBudget(window=timedelta(minutes=1)).window == 60.0


# --- decisions --------------------------------------------------------------------------


def test_ratio_of_first_attempts() -> None:
    """With no floor, each first attempt allows `ratio` retries."""
    budget, _ = make(ratio=0.25)
    assert not budget.withdraw()
    for _ in range(8):
        budget.deposit()
    assert [budget.withdraw() for _ in range(3)] == [True, True, False]


def test_floor_alone() -> None:
    """With ratio 0, the window allows min_per_second x window retries, then none."""
    budget, _ = make(ratio=0, min_per_second=0.5, window=4)
    assert [budget.withdraw() for _ in range(3)] == [True, True, False]
    budget.deposit()
    assert not budget.withdraw()


def test_floor_and_ratio_add_up() -> None:
    """The floor comes on top of the ratio."""
    budget, _ = make(ratio=0.5, min_per_second=0.1, window=10)
    for _ in range(4):
        budget.deposit()
    assert sum(budget.withdraw() for _ in range(10)) == 3


def test_counts_leave_with_their_slot() -> None:
    """An event counts until its slot leaves: at `window` after its slot's start."""
    budget, clock = make(ratio=1.0, window=10)
    clock.advance(0.5)
    budget.deposit()
    clock.advance(9.49)  # t = 9.99: slot 0 is still in the window
    assert budget.stats().window_deposits == 1
    clock.advance(0.01)  # t = 10.0: slot 10 starts, slot 0 leaves
    assert budget.stats().window_deposits == 0
    assert not budget.withdraw()


def test_retries_leave_the_window_too() -> None:
    """A spent window refills as its retries leave, even with no new first attempts."""
    budget, clock = make(ratio=0.0, min_per_second=0.1, window=10)
    assert budget.withdraw()
    assert not budget.withdraw()
    clock.advance(9.9)
    assert not budget.withdraw()
    clock.advance(0.1)
    assert budget.withdraw()


def test_partial_expiry_keeps_the_later_slots() -> None:
    """Moving a few slots on drops only the slots that left the window."""
    budget, clock = make(ratio=1.0, window=10)
    budget.deposit()  # slot 0
    clock.advance(3)
    budget.deposit()  # slot 3
    clock.advance(4)
    budget.deposit()  # slot 7
    clock.advance(4)  # t = 11: slot 0 left, slots 3 and 7 stay
    assert budget.stats().window_deposits == 2
    clock.advance(1000)  # far ahead: everything left at once
    stats = budget.stats()
    assert (stats.window_deposits, stats.window_retries, stats.deposits) == (0, 0, 3)


def test_a_clock_going_back_changes_nothing() -> None:
    """A clock that steps back keeps the current slot instead of reopening old ones."""
    times = iter([100.0, 100.0, 50.0, 50.0])
    budget = RetryBudget(ratio=1.0, min_per_second=0, clock=lambda: next(times))
    budget.deposit()
    assert budget.withdraw()
    assert not budget.withdraw()


def test_follows_an_installed_manual_clock() -> None:
    """Without a clock of its own, a budget reads the clock stalwart has installed."""
    with ManualClock(1000.0) as clock:
        budget = RetryBudget(ratio=1.0, min_per_second=0, window=10)
        budget.deposit()
        clock.advance(10)
        assert not budget.withdraw()


# --- stats ------------------------------------------------------------------------------


def test_stats_count_everything() -> None:
    """Stats give the totals, the window and the balance."""
    budget, _ = make(ratio=0.5, min_per_second=0.1, window=10)
    for _ in range(4):
        budget.deposit()
    results = [budget.withdraw() for _ in range(5)]
    assert results == [True, True, True, False, False]
    stats = budget.stats()
    assert stats == BudgetStats(
        name="retry-budget",
        deposits=4,
        retries_allowed=3,
        retries_refused=2,
        window_deposits=4,
        window_retries=3,
        balance=0.0,
        exhausted=True,
        config={"ratio": 0.5, "min_per_second": 0.1, "window": 10.0},
    )
    assert json.loads(json.dumps(budget.stats_dict())) == stats.as_dict()


# --- shared by name ---------------------------------------------------------------------


def test_same_name_same_budget() -> None:
    """The factory returns one budget per name; asking without options returns it."""
    first = retry_budget("billing", ratio=0.1, window=timedelta(seconds=5))
    assert retry_budget("billing", ratio=0.1, window=5) is first
    assert retry_budget("billing") is first
    assert budgets.find("billing") is first
    assert first.name == "billing"
    assert list(budgets.stats()) == ["billing"]


def test_other_options_raise() -> None:
    """Asking for a budget with other options raises ValueError naming the difference."""
    retry_budget("billing", ratio=0.1)
    with pytest.raises(ValueError, match=r"ratio=0.1 \(asked 0.3\)"):
        retry_budget("billing", ratio=0.3)


def test_options_left_out_mean_the_defaults() -> None:
    """Options left out are compared at their defaults, whoever asked first."""
    first = retry_budget("search")
    assert retry_budget("search", ratio=DEFAULT_RATIO, window=DEFAULT_WINDOW) is first
    retry_budget("billing", ratio=0.1, window=5)
    with pytest.raises(ValueError, match=r"window=5.0 \(asked 10.0\)"):
        retry_budget("billing", ratio=0.1)


def test_asking_without_options_while_another_thread_builds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Asked for with no options, the budget another thread built meanwhile is returned."""

    class Late(Named[RetryBudget]):
        """Names whose first look-up misses, as if another thread built it just after."""

        looked = False

        def find(self, name: str) -> RetryBudget | None:
            if not self.looked:
                self.looked = True
                return None
            return super().find(name)

    late = Late("retry budget")
    monkeypatch.setattr(budget_module, "budgets", late)
    other = retry_budget("search", ratio=0.5)
    late.looked = False
    assert retry_budget("search") is other


def test_factory_checks_its_input() -> None:
    """Unknown options, bad values and empty names are refused before anything is shared."""
    with pytest.raises(TypeError, match="unknown options: ration"):
        retry_budget("x", ration=0.1)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="ratio must be"):
        retry_budget("x", ratio=-1)
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        retry_budget("")
    assert len(budgets) == 0


def test_factory_defaults() -> None:
    """A budget first asked for without options gets the defaults."""
    budget = retry_budget("search")
    assert budget.options() == {"ratio": 0.2, "min_per_second": 10.0, "window": 10.0}


# --- properties -------------------------------------------------------------------------


def reference_slot(now: float, width: float) -> int:
    """The largest k with now >= k * width, by walking from a rough guess."""
    k = int(now // width) - 2
    while now >= (k + 1) * width:
        k += 1
    return k


def test_slot_of_matches_the_reference() -> None:
    """`slot_of` agrees with the walking reference on boundaries that round badly."""
    for width in (0.1, 0.3, 1 / 3, 1.0, 6.0):
        for k in range(-50, 5000, 7):
            for now in (k * width, math.nextafter(k * width, -math.inf), k * width + width / 2):
                assert slot_of(now, width) == reference_slot(now, width)


operations = st.lists(
    st.one_of(
        st.just("deposit"),
        st.just("withdraw"),
        # Steps in windows: whole slots (to land on slot boundaries) or any fraction.
        st.integers(min_value=0, max_value=25).map(lambda k: ("advance", k / SLOTS)),
        st.floats(min_value=0, max_value=2.5, allow_nan=False).map(lambda w: ("advance", w)),
    ),
    max_size=120,
)


@given(
    ratio=st.sampled_from([0.0, 0.1, 0.2, 1 / 3, 0.5, 1.0, 2.5]),
    min_per_second=st.sampled_from([0.0, 0.1, 0.25, 1.0]),
    window=st.sampled_from([0.5, 1.0, 3.0, 10.0]),
    start=st.floats(min_value=0, max_value=1e5, allow_nan=False),
    ops=operations,
)
def test_each_retry_fits_the_ratio_of_its_window(
    ratio: float, min_per_second: float, window: float, start: float, ops: list[object]
) -> None:
    """A retry is allowed exactly when, counting it, the retries in the window stay within
    ratio x first attempts in the window + min_per_second x window; nothing is lost."""
    budget, clock = make(ratio, min_per_second, window, start)
    width = window / SLOTS
    events: list[tuple[int, str]] = []  # (slot, "deposit" | "retry")
    refused = 0
    for op in ops:
        if isinstance(op, tuple):
            clock.advance(op[1] * window)
            continue
        now_slot = reference_slot(clock(), width)
        in_window = [kind for slot, kind in events if slot > now_slot - SLOTS]
        deposits, retries = in_window.count("deposit"), in_window.count("retry")
        if op == "deposit":
            budget.deposit()
            events.append((now_slot, "deposit"))
            continue
        allowed = retries + 1 <= ratio * deposits + min_per_second * window
        assert budget.withdraw() is allowed
        if allowed:
            events.append((now_slot, "retry"))
        else:
            refused += 1
    now_slot = reference_slot(clock(), width)
    in_window = [kind for slot, kind in events if slot > now_slot - SLOTS]
    stats = budget.stats()
    assert stats.deposits == [kind for _, kind in events].count("deposit")
    assert stats.retries_allowed == [kind for _, kind in events].count("retry")
    assert stats.retries_refused == refused
    assert stats.window_deposits == in_window.count("deposit")
    assert stats.window_retries == in_window.count("retry")
    assert stats.exhausted is not (
        stats.window_retries + 1 <= ratio * stats.window_deposits + min_per_second * window
    )
    assert stats.balance == pytest.approx(
        ratio * stats.window_deposits + min_per_second * window - stats.window_retries
    )


@settings(max_examples=15)
@given(
    threads=st.integers(min_value=2, max_value=6),
    per_thread=st.lists(st.booleans(), min_size=50, max_size=400),
    ratio=st.sampled_from([0.1, 0.5, 1.0]),
)
def test_no_count_is_lost_under_threads(
    threads: int, per_thread: list[bool], ratio: float
) -> None:
    """Threads depositing and withdrawing at once lose no count, and never overdraw."""
    budget, _ = make(ratio=ratio, min_per_second=0.5, window=10)
    allowed = [0] * threads
    barrier = threading.Barrier(threads)

    def work(index: int) -> None:
        barrier.wait()
        for is_deposit in per_thread:
            if is_deposit:
                budget.deposit()
            elif budget.withdraw():
                allowed[index] += 1

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(switch)
    deposits = per_thread.count(True) * threads
    withdrawals = per_thread.count(False) * threads
    stats = budget.stats()
    assert stats.deposits == stats.window_deposits == deposits
    assert stats.retries_allowed == stats.window_retries == sum(allowed)
    assert stats.retries_allowed + stats.retries_refused == withdrawals
    assert stats.retries_allowed <= ratio * deposits + 0.5 * 10


def test_counts_survive_slots_moving_under_threads() -> None:
    """Threads counting while others move the window to new slots lose no count."""
    ticks = itertools.count()
    budget = RetryBudget(ratio=0.5, min_per_second=1, window=1, clock=lambda: next(ticks) / 1000)
    threads, rounds = 4, 3000
    allowed = [0] * threads
    barrier = threading.Barrier(threads)

    def work(index: int) -> None:
        barrier.wait()
        for round_ in range(rounds):
            budget.deposit()
            if round_ % 3 == 0 and budget.withdraw():
                allowed[index] += 1

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(switch)
    stats = budget.stats()
    assert stats.deposits == threads * rounds
    assert stats.retries_allowed == sum(allowed)
    assert stats.retries_allowed + stats.retries_refused == threads * len(range(0, rounds, 3))
    assert 0 <= stats.window_deposits <= stats.deposits
    assert 0 <= stats.window_retries <= stats.retries_allowed
