"""Bulkheads: a limit on concurrent calls, with a bounded, fair queue in front of it.

One admission core serves threads and async tasks alike, at the same time: a
`threading.Lock` guards the count of slots in use and one FIFO queue of waiters. A
thread waits on a lock of its own; a task waits on an event of its event loop, which a
release made in another thread sets through the loop's thread-safe entry
(``call_soon_threadsafe``, trio's ``run_sync_soon``). A release hands its slot straight
to the first waiter, so no newcomer overtakes the queue, and the slot count never
drops and rises again in between.

A waiter leaves the queue when its wait ends (`queue_timeout`, the deadline in force)
or when it is cancelled; a slot handed to a waiter that was cancelled at that moment is
passed on at once. No path keeps a slot: every admission is paired with one release.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypedDict, TypeVar, cast

from . import _clock, _validate
from ._deadline import remaining
from ._named import Named
from ._record import Record
from ._run import is_async_callable, refuse_generator_function
from .errors import BulkheadFull
from .events import report_bulkhead_full

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from datetime import timedelta
    from types import TracebackType

    from typing_extensions import Self, Unpack

__all__ = [
    "DEFAULT_MAX_CONCURRENT",
    "DEFAULT_MAX_QUEUED",
    "QUEUE_FULL",
    "SATURATED_FOR",
    "TIMED_OUT",
    "Bulkhead",
    "BulkheadOptions",
    "BulkheadStats",
    "bulkhead",
    "bulkheads",
]

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_MAX_CONCURRENT: Final = 10
"""Concurrent calls a bulkhead admits when `max_concurrent` is not given."""
DEFAULT_MAX_QUEUED: Final = 0
"""Calls that may wait for a slot when `max_queued` is not given: none."""
SATURATED_FOR: Final = 60.0
"""Seconds a bulkhead reads as saturated (in stats and health) after a rejection."""

QUEUE_FULL: Final = "queue full"
"""`BulkheadFull.reason` when every slot was busy and the queue had no room left."""
TIMED_OUT: Final = "timed out"
"""`BulkheadFull.reason` when a call waited its `queue_timeout`, or until the deadline
in force, without getting a slot."""


class BulkheadOptions(TypedDict, total=False):
    """The options `stalwart.bulkhead` takes, as `Bulkhead` does."""

    max_concurrent: int
    max_queued: int
    queue_timeout: float | timedelta | None


_OPTION_NAMES: Final = frozenset(BulkheadOptions.__annotations__)


class BulkheadStats(Record):
    """A snapshot of one bulkhead, JSON-ready through `as_dict`; frozen, as a dataclass.

    Attributes:
        name: The bulkhead's name.
        max_concurrent: Its limit on concurrent calls.
        max_queued: How many calls may wait for a slot.
        queue_timeout: The longest a call waits, in seconds (``None``: no limit
            but the deadline in force).
        in_use: Slots held now.
        queued: Calls waiting now.
        peak_in_use: The most slots ever held at once.
        peak_queued: The most calls ever waiting at once.
        admitted: Calls let in since creation (at once or after waiting).
        waited: Of those, how many waited in the queue first.
        rejected: Calls refused since creation (`rejected_queue_full` plus
            `rejected_timed_out`).
        rejected_queue_full: Refused because every slot and queue place was taken.
        rejected_timed_out: Refused because their wait ended without a slot.
        cancelled: Calls cancelled while waiting (they are not counted as rejected).
        full: Whether a call arriving now would be refused at once: every slot in
            use and the queue full.
        saturated: Whether the bulkhead refused a call within the last
            `SATURATED_FOR` seconds; health reads "degraded" while one is.
        last_rejected_at: When it last refused a call (a Unix timestamp), or None.

    .. versionadded:: 0.1.0
    """

    __slots__ = (  # noqa: RUF023 - fields in order
        "name",
        "max_concurrent",
        "max_queued",
        "queue_timeout",
        "in_use",
        "queued",
        "peak_in_use",
        "peak_queued",
        "admitted",
        "waited",
        "rejected",
        "rejected_queue_full",
        "rejected_timed_out",
        "cancelled",
        "full",
        "saturated",
        "last_rejected_at",
    )
    name: str
    max_concurrent: int
    max_queued: int
    queue_timeout: float | None
    in_use: int
    queued: int
    peak_in_use: int
    peak_queued: int
    admitted: int
    waited: int
    rejected: int
    rejected_queue_full: int
    rejected_timed_out: int
    cancelled: int
    full: bool
    saturated: bool
    last_rejected_at: float | None

    def __init__(
        self,
        *,
        name: str,
        max_concurrent: int,
        max_queued: int,
        queue_timeout: float | None,
        in_use: int,
        queued: int,
        peak_in_use: int,
        peak_queued: int,
        admitted: int,
        waited: int,
        rejected: int,
        rejected_queue_full: int,
        rejected_timed_out: int,
        cancelled: int,
        full: bool,
        saturated: bool,
        last_rejected_at: float | None,
    ) -> None:
        self._set(
            name,
            max_concurrent,
            max_queued,
            queue_timeout,
            in_use,
            queued,
            peak_in_use,
            peak_queued,
            admitted,
            waited,
            rejected,
            rejected_queue_full,
            rejected_timed_out,
            cancelled,
            full,
            saturated,
            last_rejected_at,
        )

    def as_dict(self) -> dict[str, Any]:
        """Return the snapshot as plain JSON-serialisable data."""
        return dict(zip(self.__slots__, self._values(), strict=True))


_Refusal = tuple[str, int, int]
"""A refusal counted under the lock: its reason, the slots in use and the calls queued."""


# -- waiters ---------------------------------------------------------------------------


class _ThreadWaiter:
    """A thread waiting for a slot: it blocks on a lock that `wake` releases."""

    __slots__ = ("granted", "lock")

    def __init__(self) -> None:
        self.granted = False
        self.lock = threading.Lock()
        self.lock.acquire()

    def wake(self) -> None:
        self.lock.release()


class _TaskWaiter:
    """A task waiting for a slot: it awaits an event of its loop that `wake` sets.

    A wake from the loop's own thread sets the event directly; from another thread
    it goes through the loop's thread-safe entry.
    """

    __slots__ = ("call_soon", "event", "granted", "thread")

    def __init__(self) -> None:
        import anyio  # noqa: PLC0415 - only async code waits, and it has anyio loaded

        self.granted = False
        self.event = anyio.Event()
        self.thread = threading.get_ident()
        self.call_soon = _thread_safe_call_soon()

    def wake(self) -> None:
        if threading.get_ident() == self.thread:
            self.event.set()
        else:
            self.call_soon(self.event.set)


def _thread_safe_call_soon() -> Callable[[Callable[[], object]], object]:
    """Return how another thread schedules a call in the running event loop."""
    asyncio = sys.modules.get("asyncio")  # not loaded: no asyncio loop runs
    if asyncio is not None:
        try:
            return cast(
                "Callable[[Callable[[], object]], object]",
                asyncio.get_running_loop().call_soon_threadsafe,
            )
        except RuntimeError:  # no asyncio loop in this thread
            pass
    import trio  # noqa: PLC0415 - the other backend anyio runs on

    return trio.lowlevel.current_trio_token().run_sync_soon


_Waiter = _ThreadWaiter | _TaskWaiter


def _queue_size(value: object) -> int:
    what = f"max_queued must be an integer >= 0, got {value!r}"
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(what)
    if value < 0:
        raise ValueError(what)
    return value


class Bulkhead:
    """Limits how many calls run at once; calls beyond wait in a bounded FIFO queue.

    .. code-block:: python

        reports = stalwart.Bulkhead("reports", max_concurrent=4, max_queued=20,
                                    queue_timeout=2.0)

        @reports
        def render(report_id: int) -> bytes: ...

    A call takes a slot if one is free and nobody waits; otherwise it joins the queue,
    if the queue has room, and waits its turn (first come, first served) for at most
    `queue_timeout` seconds, and never past the deadline in force
    (`stalwart.deadline`). A call that finds the queue full, or whose wait ends
    without a slot, raises `BulkheadFull` without running.

    ==========================  ===================================================
    Options                     A call arriving while every slot is busy...
    ==========================  ===================================================
    ``max_queued=0`` (default)  is refused at once (``reason="queue full"``)
    ``max_queued=20``           waits, unless 20 calls wait already
    ``queue_timeout=2.0``       waits at most 2 s (``reason="timed out"``)
    ``queue_timeout=None``      waits until a slot frees, or the deadline passes
    ==========================  ===================================================

    One bulkhead may be shared by threads and async tasks at once (a sync view in a
    worker thread and an async one on the event loop, say): they take slots from the
    same count and wait in the same queue. Async code runs on asyncio or trio.

    Use it as a decorator (sync and async functions keep their signatures), as a
    ``with`` / ``async with`` block, through `call` / `call_async`, or with
    `acquire` / `acquire_async` and `release` where a block does not fit.

    Args:
        name: The bulkhead's name, in errors, stats and health.
        max_concurrent: Calls allowed to run at once (default 10).
        max_queued: Calls allowed to wait for a slot (default 0: none wait).
        queue_timeout: The longest a call waits, in seconds or a `timedelta`;
            ``None`` (the default) waits until a slot frees or the deadline in force
            passes.
        clock: A monotonic clock (seconds) for the times in stats;
            `stalwart.testing.ManualClock` in tests.

    Raises:
        ValueError: An option is out of range (named in the message, with the value).
        TypeError: An option has the wrong type, or `name` is not a string
            (``@Bulkhead`` used without a name).

    .. versionadded:: 0.1.0
    """

    __module__ = "stalwart"
    __slots__ = (
        "_admitted",
        "_cancelled",
        "_in_use",
        "_last_rejected_at",
        "_last_rejected_wall",
        "_lock",
        "_peak_in_use",
        "_peak_queued",
        "_rejected_queue_full",
        "_rejected_timed_out",
        "_waited",
        "_waiters",
        "clock",
        "max_concurrent",
        "max_queued",
        "name",
        "queue_timeout",
    )

    def __init__(
        self,
        name: str,
        *,
        max_concurrent: int = DEFAULT_MAX_CONCURRENT,
        max_queued: int = DEFAULT_MAX_QUEUED,
        queue_timeout: float | timedelta | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.name = _validate.name(name, "@Bulkhead", "bulkhead")
        self.max_concurrent = _validate.count("max_concurrent", max_concurrent)
        self.max_queued = _queue_size(max_queued)
        self.queue_timeout = (
            None
            if queue_timeout is None
            else _validate.seconds("queue_timeout", queue_timeout, positive=True)
        )
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds, got {clock!r}")
        self.clock: Callable[[], float] = _clock.current if clock is None else clock
        self._lock = threading.Lock()
        self._waiters: deque[_Waiter] = deque()
        self._in_use = 0
        self._peak_in_use = 0
        self._peak_queued = 0
        self._admitted = 0
        self._waited = 0
        self._rejected_queue_full = 0
        self._rejected_timed_out = 0
        self._cancelled = 0
        self._last_rejected_at: float | None = None
        self._last_rejected_wall: float | None = None

    def __repr__(self) -> str:
        return (
            f"<Bulkhead {self.name!r} {self._in_use}/{self.max_concurrent} in use,"
            f" {len(self._waiters)}/{self.max_queued} queued>"
        )

    def options(self) -> dict[str, Any]:
        """The options that shape the bulkhead, as `stalwart.bulkhead` compares them."""
        return {
            "max_concurrent": self.max_concurrent,
            "max_queued": self.max_queued,
            "queue_timeout": self.queue_timeout,
        }

    # -- the admission core: every path below holds `_lock` -----------------------------

    def _take_free_slot(self) -> bool:
        """Take a slot if one is free and nobody waits for it (lock held)."""
        if self._in_use < self.max_concurrent and not self._waiters:
            self._in_use += 1
            self._admitted += 1
            if self._in_use > self._peak_in_use:  # noqa: PLR1730 - cheaper than max() here
                self._peak_in_use = self._in_use
            return True
        return False

    def _refusal(self, reason: str) -> _Refusal:
        """Count a rejection and return it, with the slots in use and calls queued (lock held).

        Raise it with `_refused`, once the lock is released.
        """
        if reason == QUEUE_FULL:
            self._rejected_queue_full += 1
        else:
            self._rejected_timed_out += 1
        self._last_rejected_at = self.clock()
        self._last_rejected_wall = time.time()
        return reason, self._in_use, len(self._waiters)

    def _refused(self, refusal: _Refusal) -> BulkheadFull:
        """Tell the subscribers of a refusal; return the error to raise.

        Called with the lock released: a subscriber may read the stats.
        """
        reason, in_use, queued = refusal
        report_bulkhead_full(self.name, reason, in_use, queued)
        return BulkheadFull(self.name, reason)

    def _enqueue(self, waiter: _Waiter, limit: float | None) -> _Refusal | None:
        """Queue `waiter`; or, when it may not wait, return the refusal (lock held)."""
        if len(self._waiters) >= self.max_queued:
            return self._refusal(QUEUE_FULL)
        if limit is not None and limit <= 0:  # the deadline in force has passed
            return self._refusal(TIMED_OUT)
        self._waiters.append(waiter)
        self._peak_queued = max(self._peak_queued, len(self._waiters))
        return None

    def _hand_on(self) -> _Waiter | None:
        """Give a freed slot to the first waiter, or free it; return whom to wake.

        The slot stays counted in `_in_use` when it passes to a waiter (lock held).
        """
        if self._waiters:
            waiter = self._waiters.popleft()
            waiter.granted = True
            self._admitted += 1
            self._waited += 1
            return waiter
        if self._in_use <= 0:
            raise RuntimeError(f"{self!r}: release() without a matching acquire()")
        self._in_use -= 1
        return None

    def _leave(self, waiter: _Waiter) -> _Waiter | None:
        """End the wait of a waiter that stops waiting (timed out, cancelled, ...).

        Returns whom to wake: a slot already handed to `waiter` goes to the next
        waiter, or is freed (lock held).
        """
        if waiter.granted:
            self._admitted -= 1
            self._waited -= 1
            return self._hand_on()
        self._waiters.remove(waiter)
        return None

    def _wake(self, waiter: _Waiter | None) -> None:
        """Wake `waiter`, which now holds a slot (outside the lock)."""
        if waiter is None:
            return
        try:
            waiter.wake()
        except RuntimeError:  # its event loop is closed: nobody will use the slot
            with self._lock:
                waiter = self._leave(waiter)
            self._wake(waiter)

    def _wait_limit(self) -> float | None:
        """How long a call may wait: `queue_timeout`, or less if the deadline is nearer."""
        limit = self.queue_timeout
        left = remaining()
        if left is not None and (limit is None or left < limit):
            limit = left
        return None if limit is None else min(limit, _clock.MAX_WAIT)

    # -- acquire and release -------------------------------------------------------------

    def acquire(self) -> None:
        """Take a slot, waiting in the queue if need be; pair it with one `release`.

        Raises:
            BulkheadFull: The queue was full, or the wait ended without a slot.
        """
        with self._lock:
            if self._take_free_slot():
                return
            limit = self._wait_limit()
            waiter = _ThreadWaiter()
            refusal = self._enqueue(waiter, limit)
        if refusal is not None:
            raise self._refused(refusal)
        try:
            got = waiter.lock.acquire(timeout=-1 if limit is None else limit)
        except BaseException:  # KeyboardInterrupt in the main thread, say
            with self._lock:
                self._cancelled += 1
                handed = self._leave(waiter)
            self._wake(handed)
            raise
        if got:
            return
        with self._lock:
            if waiter.granted:  # handed a slot as the wait ended: keep it
                return
            self._waiters.remove(waiter)
            refusal = self._refusal(TIMED_OUT)
        raise self._refused(refusal)

    async def acquire_async(self) -> None:
        """`acquire` for async code; a task cancelled while waiting leaves the queue.

        Raises:
            BulkheadFull: The queue was full, or the wait ended without a slot.
        """
        with self._lock:
            if self._take_free_slot():
                return
            limit = self._wait_limit()
            waiter = _TaskWaiter()
            refusal = self._enqueue(waiter, limit)
        if refusal is not None:
            raise self._refused(refusal)
        try:
            if limit is None:
                await waiter.event.wait()
            else:
                import anyio  # noqa: PLC0415 - loaded by the waiter already

                with anyio.move_on_after(limit):
                    await waiter.event.wait()
        except BaseException:  # cancelled: give up the place, or the slot handed over
            with self._lock:
                self._cancelled += 1
                handed = self._leave(waiter)
            self._wake(handed)
            raise
        with self._lock:
            if waiter.granted:
                return
            self._waiters.remove(waiter)
            refusal = self._refusal(TIMED_OUT)
        raise self._refused(refusal)

    def release(self) -> None:
        """Give back a slot taken by `acquire` or `acquire_async` (from any thread).

        Raises:
            RuntimeError: No slot is held.
        """
        with self._lock:
            waiter = self._hand_on()
        if waiter is not None:
            self._wake(waiter)

    # -- decorator, call(), context managers ---------------------------------------------

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        """Limit the calls of `fn`, sync or async, keeping its signature.

        Raises:
            TypeError: `fn` is a generator or async generator function.
        """
        refuse_generator_function(
            fn, "a bulkhead", "use the bulkhead as a with block inside its body instead"
        )
        if is_async_callable(fn):
            afn = cast("Callable[..., Awaitable[Any]]", fn)

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                await self.acquire_async()
                try:
                    return await afn(*args, **kwargs)
                finally:
                    self.release()

            return cast("Callable[P, T]", async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            self.acquire()
            try:
                return fn(*args, **kwargs)
            finally:
                self.release()

        return wrapper

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn(*args, **kwargs)`` in a slot of the bulkhead.

        Raises:
            BulkheadFull: No slot was had; `fn` was not called.
        """
        self.acquire()
        try:
            return fn(*args, **kwargs)
        finally:
            self.release()

    async def call_async(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Await ``fn(*args, **kwargs)`` in a slot of the bulkhead."""
        await self.acquire_async()
        try:
            return await fn(*args, **kwargs)
        finally:
            self.release()

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    async def __aenter__(self) -> Self:
        await self.acquire_async()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    # -- stats ---------------------------------------------------------------------------

    @property
    def in_use(self) -> int:
        """Slots held now."""
        return self._in_use

    @property
    def queued(self) -> int:
        """Calls waiting now."""
        return len(self._waiters)

    def stats(self) -> BulkheadStats:
        """Return a frozen, JSON-ready snapshot of the bulkhead."""
        with self._lock:
            in_use, queued, last = self._in_use, len(self._waiters), self._last_rejected_at
            last_wall = self._last_rejected_wall
            counts = (
                self._peak_in_use,
                self._peak_queued,
                self._admitted,
                self._waited,
                self._rejected_queue_full,
                self._rejected_timed_out,
                self._cancelled,
            )
        peak_in_use, peak_queued, admitted, waited, full_, timed_out, cancelled = counts
        now = self.clock()
        return BulkheadStats(
            name=self.name,
            max_concurrent=self.max_concurrent,
            max_queued=self.max_queued,
            queue_timeout=self.queue_timeout,
            in_use=in_use,
            queued=queued,
            peak_in_use=peak_in_use,
            peak_queued=peak_queued,
            admitted=admitted,
            waited=waited,
            rejected=full_ + timed_out,
            rejected_queue_full=full_,
            rejected_timed_out=timed_out,
            cancelled=cancelled,
            full=in_use >= self.max_concurrent and queued >= self.max_queued,
            saturated=last is not None and now - last < SATURATED_FOR,
            last_rejected_at=last_wall,
        )

    def stats_dict(self) -> dict[str, Any]:
        """`stats` as a JSON-ready dict (for health checks and admin views)."""
        return self.stats().as_dict()


bulkheads: Named[Bulkhead] = Named("bulkhead")
"""The bulkheads made by `stalwart.bulkhead`, by name."""


def bulkhead(name: str, **options: Unpack[BulkheadOptions]) -> Bulkhead:
    """Return the bulkhead called `name`, shared by every caller that names it.

    .. code-block:: python

        @stalwart.bulkhead("db", max_concurrent=10, max_queued=50, queue_timeout=1.0)
        def query(sql: str) -> list[Row]: ...

        @stalwart.bulkhead("db")   # the same bulkhead, whatever its options
        async def query_async(sql: str) -> list[Row]: ...

    The first call makes it. Later calls without options return it; with options,
    they describe the whole bulkhead (options not given take their defaults) and must
    match it. The bulkheads made here appear in stats and health
    (`stalwart.contrib` admin views); a `Bulkhead` built directly does not.

    Args:
        name: The bulkhead's name.
        **options: `max_concurrent`, `max_queued`, `queue_timeout`, as `Bulkhead`
            takes them.

    Raises:
        ValueError: An option is out of range, or the bulkhead exists with other
            options (each difference named, with both values).
        TypeError: An option is unknown or has the wrong type, or `name` is not a
            string (``@stalwart.bulkhead`` used without a name).

    .. versionadded:: 0.1.0
    """
    return bulkheads.share(
        name, options, Bulkhead, allowed=_OPTION_NAMES, spelling="@stalwart.bulkhead"
    )
