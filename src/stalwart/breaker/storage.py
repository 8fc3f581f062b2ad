"""Where a breaker's state lives: the `Storage` protocol and `MemoryStorage`.

A storage does not decide anything itself: it holds each breaker's state and applies
the state machine's rules to it atomically. `MemoryStorage` keeps a `Machine` per
breaker behind a lock. A shared storage (Redis) runs the same rules server-side, one
round trip per decision, and offers the same operations, with ``_async`` twins for
async code when it does I/O.

A breaker binds to its storage once (`Storage.bind`) and then talks to the returned
`BreakerState` only.
"""

from __future__ import annotations

import math
import sys
import threading
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from .. import _clock
from .._record import Record
from ..errors import CircuitOpenError
from ..events import subscribed
from .machine import REJECTED, Machine, State

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from .machine import BreakerConfig, Transition

__all__ = ["BreakerState", "Counts", "MemoryState", "MemoryStorage", "Storage", "shielded"]

T = TypeVar("T")


class Counts(Record):
    """A consistent reading of one breaker's state, taken under its lock.

    Frozen, as a dataclass: ``counts._replace(degraded=True)`` makes a changed copy.
    """

    __slots__ = (  # noqa: RUF023 - fields in order
        "state",
        "generation",
        "successes",
        "failures",
        "rejected",
        "slow_calls",
        "consecutive_failures",
        "window_calls",
        "window_failures",
        "window_slow",
        "opened_at",
        "last_failure_at",
        "last_failure_type",
        "retry_after",
        "now",
        "degraded",
    )
    state: State
    generation: int
    successes: int
    failures: int
    rejected: int
    slow_calls: int
    consecutive_failures: int
    window_calls: int | None
    window_failures: int
    window_slow: int
    opened_at: float | None
    last_failure_at: float | None
    last_failure_type: str | None
    retry_after: float | None
    now: float
    degraded: bool

    def __init__(  # noqa: PLR0917 - positional, as the fields of a dataclass are
        self,
        state: State,
        generation: int,
        successes: int,
        failures: int,
        rejected: int,
        slow_calls: int,
        consecutive_failures: int,
        window_calls: int | None,
        window_failures: int,
        window_slow: int,
        opened_at: float | None,
        last_failure_at: float | None,
        last_failure_type: str | None,
        retry_after: float | None,
        now: float,
        degraded: bool = False,
    ) -> None:
        # Field by field rather than `_set`: a breaker's `state` reads one each time.
        init = object.__setattr__
        init(self, "state", state)
        init(self, "generation", generation)
        init(self, "successes", successes)
        init(self, "failures", failures)
        init(self, "rejected", rejected)
        init(self, "slow_calls", slow_calls)
        init(self, "consecutive_failures", consecutive_failures)
        init(self, "window_calls", window_calls)
        init(self, "window_failures", window_failures)
        init(self, "window_slow", window_slow)
        init(self, "opened_at", opened_at)
        init(self, "last_failure_at", last_failure_at)
        init(self, "last_failure_type", last_failure_type)
        init(self, "retry_after", retry_after)
        init(self, "now", now)
        init(self, "degraded", degraded)


@runtime_checkable
class BreakerState(Protocol):
    """One breaker's state inside a storage, as the breaker sees it.

    `fast_generation` is read without a lock on every call: while it is not negative,
    calls are admitted in that generation without asking `admit`.
    """

    fast_generation: int
    io: bool
    """Whether the methods do I/O: async code then must use the ``_async`` twins."""

    def admit(self) -> tuple[int, float | None, Transition | None]:
        """Decide on a call: ``(generation or REJECTED, retry_after, transition)``."""

    async def admit_async(self) -> tuple[int, float | None, Transition | None]:
        """`admit` for async code."""

    async def record_async(
        self, generation: int, failed: bool, duration: float | None, failure_type: str | None
    ) -> Transition | None:
        """`record` for async code."""

    async def record_success_async(self, generation: int) -> Transition | None:
        """`record_success` for async code."""

    async def release_async(self, generation: int) -> None:
        """`release` for async code."""

    async def change_async(self, operation: str) -> Transition:
        """`change` for async code."""

    async def counts_async(self) -> Counts:
        """`counts` for async code."""

    def record(
        self, generation: int, failed: bool, duration: float | None, failure_type: str | None
    ) -> Transition | None:
        """Record an admitted call's outcome; return the transition it caused."""

    def record_success(self, generation: int) -> Transition | None:
        """Record a success whose duration does not matter (the hot path)."""

    def release(self, generation: int) -> None:
        """Give back an admitted call's permit without an outcome (cancellation)."""

    def change(self, operation: str) -> Transition:
        """Apply an operator's ``"reset"``, ``"force_open"`` or ``"disable"``."""

    def counts(self) -> Counts:
        """Read the state and its counters."""


@runtime_checkable
class Storage(Protocol):
    """Holds the state of breakers by name.

    .. versionadded:: 0.1.0
    """

    def bind(self, name: str, config: BreakerConfig, clock: Callable[[], float]) -> BreakerState:
        """Return the state of breaker `name`, creating it if needed."""


_REJECTING = frozenset({State.OPEN, State.FORCED_OPEN})
new_open_error = CircuitOpenError.__new__
"""``new_open_error(CircuitOpenError, name, retry_after)``: the error without its
Python ``__init__``, for the rejection paths (see errors.py)."""


class MemoryState:
    """A breaker's state in this process: a `Machine` behind a lock."""

    __slots__ = ("_clock", "_lock", "fast_generation", "machine")

    io = False

    def __init__(self, config: BreakerConfig, clock: Callable[[], float]) -> None:
        self.machine = Machine(config)
        self._clock = clock
        self._lock = threading.Lock()
        self.fast_generation = self.machine.fast_generation

    def admit(self) -> tuple[int, float | None, Transition | None]:
        """See `BreakerState.admit`."""
        machine = self.machine
        now = self._clock()
        until = machine.open_until
        if now < until:
            # Open with no probe due, or forced open: nothing to decide, only to count.
            # (`until` was read without the lock: a call racing an operator's reset
            # may still be rejected, as it would have been a moment earlier.)
            with self._lock:
                machine.rejected += 1
            return REJECTED, (None if until == math.inf else until - now), None
        with self._lock:
            answer = machine.admission(self._clock())
            if answer[2] is not None:  # a transition
                self.fast_generation = self.machine.fast_generation
            return answer

    def rejecting(self, name: str, admit: Callable[[], int]) -> Callable[[], int]:
        """Return `admit` behind a check that rejects calls in an open period itself.

        While breaker `name` is open with no probe due, or forced open, the function
        returned counts the rejection and raises `CircuitOpenError` in its own frame:
        the only one between a decorated call's wrapper and the raise. Any other call
        goes on to `admit` (the breaker's), which decides, announces and notifies, as
        do all calls while a process-wide subscriber hears rejections. For breakers
        with no ``on_rejected`` listener.
        """
        machine, lock, clock = self.machine, self._lock, self._clock
        stalwart_clock = clock is _clock.current  # then read `_clock.now`: a frame less

        def admit_or_reject() -> int:
            now = _clock.now() if stalwart_clock else clock()
            until = machine.open_until
            # As in `admit`: nothing to decide, only to count, unless a subscriber
            # hears rejections (they come and go after the wrapper was made).
            if now < until and not subscribed.on_rejected:
                with lock:
                    machine.rejected += 1
                retry_after = None if until == math.inf else until - now
                raise new_open_error(CircuitOpenError, name, retry_after)
            return admit()

        return admit_or_reject

    def record(
        self, generation: int, failed: bool, duration: float | None, failure_type: str | None
    ) -> Transition | None:
        """See `BreakerState.record`."""
        with self._lock:
            transition = self.machine.record(
                generation, failed, self._clock(), duration, failure_type
            )
            if transition is not None:
                self.fast_generation = self.machine.fast_generation
            return transition

    def record_success(self, generation: int) -> Transition | None:
        """See `BreakerState.record_success`."""
        with self._lock:
            machine = self.machine
            if machine.record_success(generation):
                return None
            transition = machine.record(generation, False, self._clock())
            if transition is not None:
                self.fast_generation = machine.fast_generation
            return transition

    def release(self, generation: int) -> None:
        """See `BreakerState.release`."""
        with self._lock:
            self.machine.release(generation)

    def change(self, operation: str) -> Transition:
        """See `BreakerState.change`."""
        with self._lock:
            machine = self.machine
            now = self._clock()
            if operation == "reset":
                transition = machine.reset(now)
            elif operation == "force_open":
                transition = machine.force_open(now)
            elif operation == "disable":
                transition = machine.disable(now)
            else:
                raise ValueError(
                    f"operation must be reset, force_open or disable, got {operation!r}"
                )
            self.fast_generation = machine.fast_generation
            return transition

    def counts(self) -> Counts:
        """See `BreakerState.counts`."""
        with self._lock:
            m = self.machine
            now = self._clock()
            calls, failures, slow = m.window_counts(now)
            return Counts(
                state=m.state,
                generation=m.generation,
                successes=m.successes,
                failures=m.failures,
                rejected=m.rejected,
                slow_calls=m.slow_calls,
                consecutive_failures=m.consecutive_failures,
                window_calls=calls,
                window_failures=failures,
                window_slow=slow,
                opened_at=m.opened_at,
                last_failure_at=m.last_failure_at,
                last_failure_type=m.last_failure_type,
                retry_after=m.retry_after(now)
                if m.state in {State.OPEN, State.FORCED_OPEN}
                else None,
                now=now,
            )

    # No I/O: the async twins are the sync methods.

    async def admit_async(self) -> tuple[int, float | None, Transition | None]:
        """See `BreakerState.admit`."""
        return self.admit()

    async def record_async(
        self, generation: int, failed: bool, duration: float | None, failure_type: str | None
    ) -> Transition | None:
        """See `BreakerState.record`."""
        return self.record(generation, failed, duration, failure_type)

    async def record_success_async(self, generation: int) -> Transition | None:
        """See `BreakerState.record_success`."""
        return self.record_success(generation)

    async def release_async(self, generation: int) -> None:
        """See `BreakerState.release`."""
        self.release(generation)

    async def change_async(self, operation: str) -> Transition:
        """See `BreakerState.change`."""
        return self.change(operation)

    async def counts_async(self) -> Counts:
        """See `BreakerState.counts`."""
        return self.counts()


class MemoryStorage:
    """Breaker state kept in this process (the default storage).

    Each breaker's state is private to the `CircuitBreaker` bound to it: two breakers
    with the same name in one `MemoryStorage` share nothing. Use a registry to share
    one breaker per name.

    .. versionadded:: 0.1.0
    """

    __module__ = "stalwart.breaker"

    def bind(self, name: str, config: BreakerConfig, clock: Callable[[], float]) -> MemoryState:
        """Return a fresh in-memory state for breaker `name`."""
        del name
        return MemoryState(config, clock)


async def shielded(operation: Coroutine[Any, Any, T]) -> T:
    """Await `operation` to its end even if the caller is cancelled meanwhile.

    For what a storage doing I/O must finish once begun: an outcome recorded, a permit
    released. Cancelled, its probe slot would stay taken (until it expires), and the
    transition it caused would go unannounced. An anyio cancel scope (or trio's) waits
    behind a shield and takes effect at the caller's next checkpoint; a native asyncio
    cancellation (`asyncio.timeout`, `asyncio.wait_for`, `Task.cancel`) cannot be
    held back, so the operation runs as a task of its own, awaited to its end, and the
    cancellation is raised again once it is over.
    """
    from anyio import CancelScope  # noqa: PLC0415 - anyio only for async callers

    loaded = sys.modules.get("asyncio")
    if loaded is None or loaded.events._get_running_loop() is None:  # noqa: SLF001
        # trio: its cancel scopes are the only way to cancel
        with CancelScope(shield=True):
            return await operation
    import asyncio  # noqa: PLC0415 - loaded already: an asyncio loop is running

    task = asyncio.ensure_future(operation)
    cancelled: BaseException | None = None
    with CancelScope(shield=True):  # anyio's own cancellation waits behind the shield
        while not task.done():
            try:
                await asyncio.wait((task,))
            except asyncio.CancelledError as exc:  # native: held until the task is done
                cancelled = exc
    if cancelled is not None:
        if not task.cancelled():
            task.exception()  # retrieved: the caller gets its cancellation instead
        raise cancelled
    return task.result()
