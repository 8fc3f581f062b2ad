"""Retry budgets: retries allowed only while they stay a small share of the calls.

A budget counts first attempts (`RetryBudget.deposit`) and retries
(`RetryBudget.withdraw`) over a sliding time window, and allows a retry only while

    retries in the window  <=  ratio x first attempts in the window
                               + min_per_second x window

so that, however many attempts each call may make, retries add at most ``ratio`` to
the calls once the floor is spent. This is Finagle's ``RetryBudget``
(its defaults too: 20 % on top of 10 retries a second, over 10 s); gRPC's retry
throttling keeps a token count that successes refill and failures drain, to the same
end. The window is kept in `SLOTS` slots of ``window / SLOTS`` seconds each: memory is
fixed. A first attempt costs a clock read and one step of an `itertools.count`, with no
lock; a retry costs a clock read, one lock and a few integer additions.
"""

from __future__ import annotations

import itertools
import math
import sys
import threading
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, TypedDict

from . import _clock, _validate
from ._named import Named

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import timedelta

    from typing_extensions import Unpack

__all__ = [
    "DEFAULT_MIN_PER_SECOND",
    "DEFAULT_RATIO",
    "DEFAULT_WINDOW",
    "SLOTS",
    "BudgetStats",
    "RetryBudget",
    "RetryBudgetOptions",
    "budgets",
    "retry_budget",
]

DEFAULT_RATIO = 0.2
"""Retries allowed per first attempt, on top of the floor (Finagle's default)."""
DEFAULT_MIN_PER_SECOND = 10.0
"""Retries allowed per second of the window whatever the traffic (Finagle's default)."""
DEFAULT_WINDOW = 10.0
"""Seconds a first attempt or a retry counts for (Finagle's default)."""
SLOTS = 10
"""Slots the window is kept in: an event leaves the window between ``window - window /
SLOTS`` and ``window`` seconds after it happened, when its slot leaves."""


_ATOMIC_NEXT: bool = getattr(sys, "_is_gil_enabled", lambda: True)()
"""Whether ``next()`` on an `itertools.count` is atomic: with the GIL, it is one step
that no other thread can split. Without the GIL (a free-threaded build), counting
takes the lock."""


def slot_of(now: float, width: float) -> int:
    """The slot `now` falls in: the largest ``k`` with ``now >= k * width``.

    Computed from the same product the budget compares with, so that rounding can
    never put a time in one slot for the comparison and in another for the index.
    """
    slot = math.floor(now / width)
    while now >= (slot + 1) * width:
        slot += 1
    while now < slot * width:
        slot -= 1
    return slot


@dataclass(frozen=True, slots=True)
class BudgetStats:
    """A snapshot of one retry budget, JSON-ready through `as_dict`.

    Attributes:
        name: The budget's name.
        deposits: First attempts counted since creation.
        retries_allowed: Retries `RetryBudget.withdraw` allowed since creation.
        retries_refused: Retries it refused since creation.
        window_deposits: First attempts in the window now.
        window_retries: Retries allowed in the window now.
        balance: Retries the window would allow now (``ratio x window_deposits +
            min_per_second x window - window_retries``; may be fractional, and
            below 0 once first attempts leave the window before the retries they paid
            for).
        exhausted: Whether the next retry would be refused now (``balance < 1``).
        config: ``ratio``, ``min_per_second`` and ``window``.

    .. versionadded:: 0.1.0
    """

    __module__ = "stalwart"

    name: str
    deposits: int
    retries_allowed: int
    retries_refused: int
    window_deposits: int
    window_retries: int
    balance: float
    exhausted: bool
    config: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        """Return the snapshot as plain JSON-serialisable data."""
        return asdict(self)


class RetryBudget:
    """Allows retries only while they stay under a share of first attempts.

    .. code-block:: python

        budget = stalwart.RetryBudget(ratio=0.2, min_per_second=10, window=10)

        @stalwart.retry(attempts=3, budget=budget)
        def fetch(url: str) -> bytes: ...

    Whoever drives the retries calls `deposit` once per call (for its first attempt)
    and `withdraw` before each retry: it returns ``True`` when the retry may go, and
    ``False`` when the budget is spent (the retry loop then re-raises the error at
    once). A budget shared by every caller of a service (``stalwart.retry_budget(name)``,
    or one object passed around) caps the extra load their retries add to about
    `ratio` of their calls, plus a floor of `min_per_second` for quiet periods.

    The budget never waits and never blocks for more than a lock held for a few
    additions, so sync and async code use the same object. It is thread-safe, and
    counts in this process only.

    Args:
        name: The budget's name, in notes, logs and stats.
        ratio: Retries allowed per first attempt in the window (default 0.2: one
            retry for every five calls); ``0`` for the floor alone.
        min_per_second: Retries allowed per second of the window whatever the
            traffic (default 10), so that a quiet client can still retry: the window
            allows ``min_per_second x window`` of them on top of the ratio.
        window: Seconds a first attempt or a retry counts for, or a `timedelta`
            (default 10; at least 0.001).
        clock: A monotonic clock in seconds (`stalwart.testing.ManualClock` in
            tests); by default stalwart's clock, which a installed ``ManualClock``
            replaces.

    Raises:
        ValueError: `ratio` or `min_per_second` is negative, NaN or infinite, or
            `window` is not a duration of at least 0.001 s, or `name` is empty.
        TypeError: An option is not a number, or `clock` is not callable.

    .. versionadded:: 0.1.0
    """

    __module__ = "stalwart"
    __slots__ = (
        "_count",
        "_counted",
        "_lock",
        "_next_slot_at",
        "_own_clock",
        "_past_deposits",
        "_past_retries",
        "_refused",
        "_reserve",
        "_retries",
        "_ring_deposits",
        "_ring_retries",
        "_slot",
        "_slot_retries",
        "_slot_starts_at",
        "_width",
        "clock",
        "min_per_second",
        "name",
        "ratio",
        "window",
    )

    def __init__(
        self,
        name: str = "retry-budget",
        *,
        ratio: float = DEFAULT_RATIO,
        min_per_second: float = DEFAULT_MIN_PER_SECOND,
        window: float | timedelta = DEFAULT_WINDOW,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.name = _validate.name(name, "RetryBudget", "retry budget")
        self.ratio = _validate.number("ratio", ratio, minimum=0)
        self.min_per_second = _validate.number("min_per_second", min_per_second, minimum=0)
        self.window = _validate.seconds("window", window, minimum=0.001)
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds, got {clock!r}")
        self.clock: Callable[[], float] = _clock.current if clock is None else clock
        self._own_clock = clock  # None: read `_clock.now` itself, one call less
        self._reserve = self.min_per_second * self.window
        self._width = self.window / SLOTS
        self._lock = threading.Lock()
        # First attempts are counted by an `itertools.count`, without the lock (see
        # `deposit`); under the lock, `_deposited` reads the count by drawing from it
        # too, and `_counted` is how many draws were such readings.
        self._count = itertools.count().__next__
        self._counted = 0
        # Totals since creation.
        self._retries = 0
        self._refused = 0
        # The window: the current slot's retries and where its deposits start in the
        # count, the sum of the SLOTS - 1 slots before it, and each of those in a ring
        # (index: slot number modulo SLOTS).
        self._slot = slot_of(self.clock(), self._width)
        self._next_slot_at = (self._slot + 1) * self._width
        self._slot_starts_at = 0
        self._slot_retries = 0
        self._past_deposits = 0
        self._past_retries = 0
        self._ring_deposits = [0] * SLOTS
        self._ring_retries = [0] * SLOTS

    def __repr__(self) -> str:
        return (
            f"RetryBudget({self.name!r}, ratio={self.ratio!r},"
            f" min_per_second={self.min_per_second!r}, window={self.window!r})"
        )

    def options(self) -> dict[str, float]:
        """The options that define the budget: ``ratio``, ``min_per_second``, ``window``."""
        return {"ratio": self.ratio, "min_per_second": self.min_per_second, "window": self.window}

    def _deposited(self) -> int:
        """The first attempts counted since creation (called with the lock held)."""
        drawn = self._count()  # the draws before this one: deposits and readings
        deposits = drawn - self._counted
        self._counted += 1
        return deposits

    def _move_to(self, now: float) -> None:
        """Start the slot `now` falls in, dropping the slots that leave the window.

        Called with the lock held, once `now` reached the next slot's start.
        """
        slot = slot_of(now, self._width)
        if slot <= self._slot:  # a clock that went back, or rounding: stay
            return
        deposited = self._deposited()
        slot_deposits = deposited - self._slot_starts_at
        ring_deposits, ring_retries = self._ring_deposits, self._ring_retries
        index = self._slot % SLOTS
        ring_deposits[index] = slot_deposits
        ring_retries[index] = self._slot_retries
        self._past_deposits += slot_deposits
        self._past_retries += self._slot_retries
        self._slot_starts_at = deposited
        self._slot_retries = 0
        # Slot s starting pushes slot s - SLOTS out, whose counts sit at s % SLOTS.
        for started in range(self._slot + 1, min(slot, self._slot + SLOTS) + 1):
            index = started % SLOTS
            self._past_deposits -= ring_deposits[index]
            self._past_retries -= ring_retries[index]
            ring_deposits[index] = ring_retries[index] = 0
        self._slot = slot
        self._next_slot_at = (slot + 1) * self._width

    if _ATOMIC_NEXT:

        def deposit(self) -> None:
            """Count a first attempt: each allows `ratio` retries while in the window.

            Takes no lock unless a new slot starts: the count is an
            `itertools.count`, whose ``next()`` is one step under the GIL.
            """
            clock = self._own_clock
            now = _clock.now() if clock is None else clock()
            if now >= self._next_slot_at:
                with self._lock:
                    self._move_to(now)
            self._count()

    else:  # pragma: no cover - free-threaded Python: every count takes the lock

        def deposit(self) -> None:
            """Count a first attempt: each allows `ratio` retries while in the window."""
            clock = self._own_clock
            now = _clock.now() if clock is None else clock()
            with self._lock:
                if now >= self._next_slot_at:
                    self._move_to(now)
                self._count()

    def withdraw(self) -> bool:
        """Ask for one retry: ``True`` (and counted) if the window allows it, else ``False``.

        A refusal is counted too (`BudgetStats.retries_refused`).
        """
        clock = self._own_clock
        now = _clock.now() if clock is None else clock()
        with self._lock:
            if now >= self._next_slot_at:
                self._move_to(now)
            deposits = self._past_deposits + self._deposited() - self._slot_starts_at
            retries = self._past_retries + self._slot_retries + 1
            if retries <= self.ratio * deposits + self._reserve:
                self._slot_retries += 1
                self._retries += 1
                return True
            self._refused += 1
            return False

    def stats(self) -> BudgetStats:
        """Return a frozen, JSON-ready snapshot of the budget."""
        now = self.clock()
        with self._lock:
            if now >= self._next_slot_at:
                self._move_to(now)
            deposits = self._deposited()
            window_deposits = self._past_deposits + deposits - self._slot_starts_at
            window_retries = self._past_retries + self._slot_retries
            balance = self.ratio * window_deposits + self._reserve - window_retries
            return BudgetStats(
                name=self.name,
                deposits=deposits,
                retries_allowed=self._retries,
                retries_refused=self._refused,
                window_deposits=window_deposits,
                window_retries=window_retries,
                balance=balance,
                exhausted=not window_retries + 1 <= self.ratio * window_deposits + self._reserve,
                config=self.options(),
            )

    def stats_dict(self) -> dict[str, Any]:
        """`stats` as a JSON-ready dict (what health checks and admin views show)."""
        return self.stats().as_dict()


budgets: Named[RetryBudget] = Named("retry budget")
"""The retry budgets shared by name (`retry_budget`)."""


class RetryBudgetOptions(TypedDict, total=False):
    """The options `retry_budget` accepts besides the name.

    .. versionadded:: 0.1.0
    """

    ratio: float
    min_per_second: float
    window: float | timedelta
    clock: Callable[[], float]


def retry_budget(name: str, **options: Unpack[RetryBudgetOptions]) -> RetryBudget:
    """Return the retry budget called `name`, shared by everyone who asks for it.

    .. code-block:: python

        @stalwart.retry(budget=stalwart.retry_budget("billing", ratio=0.1))
        def charge(order: Order) -> Receipt: ...

    The first call builds it with the options given (the defaults of `RetryBudget`
    for the others). A later call with no options returns it; with options, the
    budget's options must be those asked for, the ones left out at their defaults.

    Raises:
        ValueError: An option is out of range, or the budget exists with other
            options (each difference named).
        TypeError: An option is unknown or has the wrong kind of value.

    .. versionadded:: 0.1.0
    """
    return budgets.share(
        name,
        options,
        RetryBudget,
        allowed=RetryBudgetOptions.__optional_keys__,
        spelling="stalwart.retry_budget",
    )
