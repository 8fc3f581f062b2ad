"""Hedged calls: after a delay, start another attempt; the first good result wins.

A slow call is often slow by bad luck (a garbage collection, a busy replica, a lost
packet), and a second attempt sent a little later usually answers first. `Hedger`
runs an async call, starts up to `max_hedges` more attempts of it, spaced by a delay
(fixed, or a percentile of the latencies it has seen), returns the first result and
cancels the others. Only idempotent calls may be hedged: every attempt may reach the
service.

The decisions (the delay, whether a hedge may start, who won, what to count) are made
by `HedgedCall`, which does no I/O; `Hedger.call` is its anyio shell, and the
tail-latency simulation drives the same object with simulated times.

Sync functions are not hedged: a thread cannot be cancelled, so a losing attempt
would run to its end in a thread of its own, holding its connection and doubling the
load it was meant to spare (the hedging page of the docs says more).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import bisect
import functools
import math
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypedDict, TypeVar, cast

from . import _clock, _validate
from ._deadline import remaining
from ._decide import NOTE, add_note
from ._named import Named
from ._record import Record
from ._run import is_async_callable, refuse_generator_function

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine
    from datetime import timedelta

    from typing_extensions import Unpack

__all__ = [
    "DEFAULT_DELAY",
    "DEFAULT_MAX_HEDGES",
    "DEFAULT_MIN_DELAY",
    "DEFAULT_MIN_SAMPLES",
    "DEFAULT_WINDOW",
    "HedgeOptions",
    "HedgeStats",
    "HedgedCall",
    "Hedger",
    "hedge",
    "hedgers",
]

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_DELAY = 0.05
"""Seconds before the first hedge: the fixed delay, or the delay used while a
percentile hedger has fewer than `min_samples` latencies."""
DEFAULT_MAX_HEDGES = 1
"""Extra attempts a call may start: one, as "The Tail at Scale" recommends."""
DEFAULT_MIN_DELAY = 0.001
"""The floor of a percentile delay, in seconds: a service answering in microseconds
is not hedged after microseconds."""
DEFAULT_WINDOW = 1000
"""Latencies a percentile hedger keeps (the most recent)."""
DEFAULT_MIN_SAMPLES = 50
"""Latencies a percentile hedger needs before it trusts its percentile."""


class HedgeStats(Record):
    """A snapshot of one hedger, JSON-ready through `as_dict`.

    Attributes:
        name: The hedger's name.
        calls: Calls that ended (returned, raised or were cancelled).
        hedges: Hedges started: attempts beyond the first.
        hedge_wins: Calls whose result came from a hedge, not the first attempt.
        cancelled: Attempts cancelled because another attempt won.
        failed: Calls that raised because every attempt they started failed.
        delay: The delay the next call waits before its first hedge, in seconds.
        samples: Latencies held for the percentile (0 for a fixed delay).
        config: ``delay``, ``percentile``, ``max_hedges``, ``min_delay``,
            ``window`` and ``min_samples``.

    .. versionadded:: 0.1.0
    """

    __module__ = "stalwart"
    __slots__ = (  # noqa: RUF023 - fields in order
        "name",
        "calls",
        "hedges",
        "hedge_wins",
        "cancelled",
        "failed",
        "delay",
        "samples",
        "config",
    )
    name: str
    calls: int
    hedges: int
    hedge_wins: int
    cancelled: int
    failed: int
    delay: float
    samples: int
    config: dict[str, float | int | None]

    def __init__(
        self,
        *,
        name: str,
        calls: int,
        hedges: int,
        hedge_wins: int,
        cancelled: int,
        failed: int,
        delay: float,
        samples: int,
        config: dict[str, float | int | None],
    ) -> None:
        self._set(name, calls, hedges, hedge_wins, cancelled, failed, delay, samples, config)

    def _key(self) -> tuple[Any, ...]:
        *fields, config = self._values()
        return (*fields, tuple(sorted(config.items())))

    def as_dict(self) -> dict[str, Any]:
        """Return the snapshot as plain JSON-serialisable data."""
        values = dict(zip(self.__slots__, self._values(), strict=True))
        values["config"] = dict(self.config)
        return values


class _Latencies:
    """The last `size` latencies, kept sorted too, so a percentile is one index.

    Recording costs two O(log n) searches and two memmoves of at most `size`
    pointers; reading a percentile costs one index.
    """

    __slots__ = ("order", "size", "sorted")

    def __init__(self, size: int) -> None:
        self.size = size
        self.order: deque[float] = deque()
        self.sorted: list[float] = []

    def __len__(self) -> int:
        return len(self.order)

    def add(self, seconds: float) -> None:
        if len(self.order) == self.size:
            oldest = self.order.popleft()
            del self.sorted[bisect.bisect_left(self.sorted, oldest)]
        self.order.append(seconds)
        bisect.insort(self.sorted, seconds)

    def percentile(self, p: float) -> float:
        """The nearest-rank `p`-th percentile (0 < p < 100) of the latencies held."""
        held = self.sorted
        return held[max(math.ceil(p / 100 * len(held)) - 1, 0)]


class Hedger:
    """Runs idempotent async calls with hedges: extra attempts after a delay.

    .. code-block:: python

        hedger = stalwart.Hedger("search", percentile=95, max_hedges=1)

        @hedger
        async def search(query: str) -> list[Hit]: ...

        hits = await hedger.call(search_replica, "stalwart")   # or call it directly

    A call starts its first attempt at once. If no attempt has succeeded after
    `delay`, it starts a hedge, and so on every `delay` until `max_hedges` have
    started. The first attempt to return wins: the others are cancelled (inside an
    anyio task group, so nothing outlives the call) and their errors are not
    raised. A failure never starts an attempt early: hedging is for latency, not
    errors (put `stalwart.retry` around the hedged call for those). When every
    attempt started has failed, the call raises the last failure, with a note
    naming the earlier ones. No hedge starts when a `stalwart.deadline` in force
    would pass before it.

    ========================================  ======================================
    ``Hedger("a")``                           hedge after 50 ms, at most once
    ``Hedger("a", delay=0.2, max_hedges=2)``  hedges at 200 ms and 400 ms
    ``Hedger("a", percentile=95)``            hedge at the p95 of recent latencies
                                              (50 ms until 50 were seen, at least
                                              1 ms)
    ========================================  ======================================

    With a percentile, the latencies kept are those of attempts that returned, and,
    for attempts cancelled because another won, the time they had run (a lower
    bound of their latency: without it the slow calls that hedging cuts short would
    leave the window, the percentile would fall with every hedge that wins, and
    hedging would feed on itself).

    Args:
        name: Names the hedger in stats and notes.
        delay: Seconds (or a `timedelta`) before each hedge; with `percentile`,
            the delay until `min_samples` latencies were seen.
        percentile: Hedge at this percentile of recent latencies, in [50, 100)
            (95 means p95). ``None``: a fixed `delay`.
        max_hedges: Extra attempts a call may start (at least 1).
        min_delay: The floor of a percentile delay, in seconds.
        window: How many recent latencies the percentile is taken over.
        min_samples: Latencies needed before the percentile is used (at most
            `window`).
        clock: A monotonic clock in seconds for measuring latencies (stalwart's
            clock by default, which `stalwart.testing.ManualClock` replaces). The
            waits go through stalwart's clock.

    Raises:
        ValueError: An option is out of range (named, with its value).
        TypeError: An option has the wrong kind of value.

    .. versionadded:: 0.1.0
    """

    __module__ = "stalwart"
    __slots__ = (
        "_counts",
        "_latencies",
        "_lock",
        "clock",
        "delay",
        "max_hedges",
        "min_delay",
        "min_samples",
        "name",
        "percentile",
        "window",
    )

    def __init__(
        self,
        name: str = "hedger",
        *,
        delay: float | timedelta = DEFAULT_DELAY,
        percentile: float | None = None,
        max_hedges: int = DEFAULT_MAX_HEDGES,
        min_delay: float | timedelta = DEFAULT_MIN_DELAY,
        window: int = DEFAULT_WINDOW,
        min_samples: int = DEFAULT_MIN_SAMPLES,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.name = _validate.name(name, "Hedger", "hedger")
        self.delay = min(_validate.seconds("delay", delay), _clock.MAX_WAIT)
        if percentile is not None:
            p = _validate.number("percentile", percentile)
            if not 50 <= p < 100:
                raise ValueError(f"percentile must be a number in [50, 100), got {percentile!r}")
            percentile = p
        self.percentile = percentile
        self.max_hedges = _validate.count("max_hedges", max_hedges)
        self.min_delay = min(_validate.seconds("min_delay", min_delay), _clock.MAX_WAIT)
        self.window = _validate.count("window", window)
        self.min_samples = _validate.count("min_samples", min_samples)
        if self.min_samples > self.window:
            raise ValueError(
                f"min_samples must be at most window ({self.window}), got {min_samples!r}"
            )
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be callable, got {clock!r}")
        self.clock: Callable[[], float] = _clock.current if clock is None else clock
        self._lock = threading.Lock()
        self._latencies = _Latencies(self.window if percentile is not None else 1)
        # calls, hedges, hedge wins, cancelled, failed
        self._counts = [0, 0, 0, 0, 0]

    def __repr__(self) -> str:
        how = f"percentile={self.percentile!r}" if self.percentile else f"delay={self.delay!r}"
        return f"Hedger({self.name!r}, {how}, max_hedges={self.max_hedges!r})"

    def options(self) -> dict[str, float | int | None]:
        """The options this hedger was built with, normalised (seconds as floats)."""
        return {
            "delay": self.delay,
            "percentile": self.percentile,
            "max_hedges": self.max_hedges,
            "min_delay": self.min_delay,
            "window": self.window,
            "min_samples": self.min_samples,
        }

    def current_delay(self) -> float:
        """Seconds the next call waits before its first hedge."""
        p = self.percentile
        if p is None:
            return self.delay
        latencies = self._latencies
        with self._lock:
            if len(latencies) < self.min_samples:
                return self.delay
            return max(latencies.percentile(p), self.min_delay)

    def begin(self) -> HedgedCall:
        """Start the decisions of one call, at the hedger's clock's current time."""
        return HedgedCall(self, self.clock())

    def _observe(self, latencies: list[float]) -> None:
        if self.percentile is None:
            return
        with self._lock:
            for seconds in latencies:
                self._latencies.add(seconds)

    def _count(self, hedges: int, hedge_win: int, cancelled: int, failed: int) -> None:
        with self._lock:
            counts = self._counts
            counts[0] += 1
            counts[1] += hedges
            counts[2] += hedge_win
            counts[3] += cancelled
            counts[4] += failed

    def stats(self) -> HedgeStats:
        """A snapshot of what this hedger has done."""
        delay = self.current_delay()
        with self._lock:
            calls, hedges, wins, cancelled, failed = self._counts
            samples = len(self._latencies) if self.percentile is not None else 0
        return HedgeStats(
            name=self.name,
            calls=calls,
            hedges=hedges,
            hedge_wins=wins,
            cancelled=cancelled,
            failed=failed,
            delay=delay,
            samples=samples,
            config=self.options(),
        )

    def stats_dict(self) -> dict[str, Any]:
        """`stats` as a JSON-ready dict (what health checks and admin views show)."""
        return self.stats().as_dict()

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``await fn(*args, **kwargs)`` with hedges; return the first result.

        Raises:
            Exception: The last failure, when every attempt started failed.
        """
        return await self.race(functools.partial(fn, *args, **kwargs))

    async def race(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        accept: Callable[[T], bool] | None = None,
        discard: Callable[[T], Awaitable[object]] | None = None,
    ) -> T:
        """Run `attempt` with hedges, as `call` does, with two hooks for resources.

        Args:
            attempt: Makes one attempt; called once per attempt started.
            accept: Whether a result is good. A result it refuses counts as a
                failure: the call waits for the other attempts, and returns that
                result only if nothing better came (as the last failure).
            discard: Releases a result that is not returned (a loser's that
                arrived after the winner's, a refused one overtaken, or the
                winner's when the caller is cancelled), shielded from
                cancellation. An HTTP client closes the response here.

        Raises:
            Exception: The last failure, when every attempt started failed.
        """
        import anyio  # noqa: PLC0415 - the core imports anyio only once async code runs

        run = _Run(self.begin(), attempt, accept, discard)
        try:
            async with anyio.create_task_group() as group:
                run.group = group
                run.spawn()
                await run.schedule()  # the hedge timer runs in this task, cancelled with the rest
        except BaseException:
            run.decided.abandon()
            await run.release(keep_outcome=False)
            raise
        await run.release(keep_outcome=True)
        return run.result()

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        """Decorate the async function `fn`, keeping its signature.

        Raises:
            TypeError: `fn` is not an async function (sync calls are not hedged:
                a thread cannot be cancelled), or is an async generator function.
        """
        refuse_generator_function(fn, "a Hedger", "hedge the calls it makes instead")
        if not is_async_callable(fn):
            name = getattr(fn, "__qualname__", None) or repr(fn)
            raise TypeError(
                f"a Hedger hedges async functions only, got the sync function {name}: a"
                " losing attempt in a thread could not be cancelled and would run on"
                " beside the winner"
            )

        @functools.wraps(fn)
        async def hedged(*args: P.args, **kwargs: P.kwargs) -> T:
            return await self.race(functools.partial(fn, *args, **kwargs))

        return hedged


class HedgedCall:
    """The decisions of one hedged call, without I/O: who starts, who wins, what counts.

    Made by `Hedger.begin`. Its shell (`Hedger.race`, or a simulation) reports each
    event with the time it happened on the hedger's clock, and asks what to do.

    Attributes:
        delay: Seconds between the start of the call and each hedge, fixed for the
            call when it began.
        starts: When each attempt started (index 0 is the first attempt).
        running: The indexes of the attempts still running.
        winner: The index of the attempt that won, or None.
        over: Whether the call has an outcome (a winner, or every attempt failed).

    .. versionadded:: 0.1.0
    """

    __slots__ = (
        "delay",
        "failures",
        "hedger",
        "over",
        "running",
        "started_at",
        "starts",
        "winner",
    )

    def __init__(self, hedger: Hedger, now: float) -> None:
        self.hedger = hedger
        self.started_at = now
        self.delay = hedger.current_delay()
        self.starts: list[float] = []
        self.running: set[int] = set()
        self.winner: int | None = None
        self.failures = 0
        self.over = False

    def may_hedge(self, deadline_left: float | None = None) -> bool:
        """Whether a hedge may start now.

        Args:
            deadline_left: Seconds left before a deadline in force (None: none).
                No hedge starts once it is zero.
        """
        return (
            not self.over
            and bool(self.running)
            and len(self.starts) <= self.hedger.max_hedges
            and (deadline_left is None or deadline_left > 0)
        )

    def worth_waiting(self, deadline_left: float | None) -> bool:
        """Whether to wait `delay` for the next hedge.

        True while a hedge remains to start and the deadline in force (seconds
        left, or None) does not pass first.
        """
        return len(self.starts) <= self.hedger.max_hedges and (
            deadline_left is None or deadline_left > self.delay
        )

    def start(self, now: float) -> int:
        """Record that an attempt started at `now`; return its index."""
        index = len(self.starts)
        self.starts.append(now)
        self.running.add(index)
        return index

    def succeeded(self, index: int, now: float) -> list[int]:
        """Record that attempt `index` returned a good result at `now`: it wins.

        Returns:
            The attempts still running, to cancel (the shell cancels them).
        """
        self.running.discard(index)
        losers = sorted(self.running)
        self.running.clear()
        self.winner = index
        self.over = True
        starts = self.starts
        self.hedger._observe([now - starts[index], *(now - starts[i] for i in losers)])  # noqa: SLF001
        self._finish(cancelled=len(losers), failed=False)
        return losers

    def failed(self, index: int) -> bool:
        """Record that attempt `index` failed; return whether the call is over.

        The call is over when no attempt is running: it ends with this failure.
        """
        self.running.discard(index)
        self.failures += 1
        if self.running:
            return False
        self.over = True
        self._finish(cancelled=0, failed=True)
        return True

    def abandon(self) -> None:
        """Record that the call ended without an outcome (its caller was cancelled)."""
        if not self.over:
            self.over = True
            self.running.clear()
            self._finish(cancelled=0, failed=False)

    def _finish(self, *, cancelled: int, failed: bool) -> None:
        won = self.winner
        self.hedger._count(  # noqa: SLF001 - the hedger's own counters
            hedges=max(len(self.starts) - 1, 0),
            hedge_win=1 if won is not None and won > 0 else 0,
            cancelled=cancelled,
            failed=1 if failed else 0,
        )


class _Run(Generic[T]):
    """The anyio shell of one `HedgedCall`: attempts and the hedge timer as tasks."""

    __slots__ = (
        "accept",
        "decided",
        "discard",
        "errors",
        "fn",
        "group",
        "outcome",
        "pending",
    )

    def __init__(
        self,
        decided: HedgedCall,
        fn: Callable[[], Awaitable[T]],
        accept: Callable[[T], bool] | None,
        discard: Callable[[T], Awaitable[object]] | None,
    ) -> None:
        self.decided = decided
        self.fn = fn
        self.accept = accept
        self.discard = discard
        self.group: Any = None
        self.errors: list[str] = []  # earlier failures, for the note
        self.outcome: tuple[bool, Any] | None = None  # (raised, exception or value)
        self.pending: list[T] = []  # results to discard

    def spawn(self) -> None:
        """Start an attempt: recorded now, so the timer never sees it missing."""
        decided = self.decided
        self.group.start_soon(self.attempt, decided.start(decided.hedger.clock()))

    async def attempt(self, index: int) -> None:
        decided = self.decided
        try:
            value = await self.fn()
        except Exception as exc:  # every failure is an outcome
            self._lost(index, (True, exc))
            return
        if decided.over:  # the call ended while this result was on its way
            await self._release(value)
            return
        if self.accept is not None:
            try:
                good = self.accept(value)
            except Exception as exc:  # judging failed: the attempt failed with that
                await self._release(value)
                self._lost(index, (True, exc))
                return
            if not good:
                self._lost(index, (False, value))
                return
        decided.succeeded(index, decided.hedger.clock())
        self._replace((False, value))
        self.group.cancel_scope.cancel()

    def _lost(self, index: int, outcome: tuple[bool, Any]) -> None:
        if self.decided.over:  # failing after the winner: nothing to keep
            return
        self._replace(outcome)
        if self.decided.failed(index):
            self.group.cancel_scope.cancel()  # no attempt left: stop the hedge timer

    def _replace(self, outcome: tuple[bool, Any]) -> None:
        previous = self.outcome
        if previous is not None:
            raised, what = previous
            if raised:
                self.errors.append(type(what).__qualname__)
            else:
                self.errors.append("a refused result")
                self.pending.append(what)
        self.outcome = outcome

    async def schedule(self) -> None:
        decided = self.decided
        while decided.worth_waiting(remaining()):
            await _clock.async_sleep(decided.delay)
            if not decided.may_hedge(remaining()):
                return
            self.spawn()

    async def _release(self, value: T) -> None:
        if self.discard is None:
            return
        import anyio  # noqa: PLC0415

        with anyio.CancelScope(shield=True):
            await self.discard(value)

    async def release(self, *, keep_outcome: bool) -> None:
        """Discard the results held that will not be returned.

        The outcome's too, unless `keep_outcome`: when the caller was cancelled,
        the call ends without one.
        """
        if not keep_outcome:
            outcome, self.outcome = self.outcome, None
            if outcome is not None and not outcome[0]:
                self.pending.append(outcome[1])
        while self.pending:
            await self._release(self.pending.pop())

    def result(self) -> T:
        outcome = self.outcome
        if outcome is None:  # pragma: no cover - the task group always decides
            raise RuntimeError("a hedged call ended without an outcome")
        raised, what = outcome
        if raised:
            if self.errors:
                add_note(  # Python 3.10 has no BaseException.add_note
                    what,
                    f"{NOTE}hedged call {self.decided.hedger.name}: all"
                    f" {len(self.errors) + 1} attempts failed; earlier: " + ", ".join(self.errors),
                )
            raise what
        return cast("T", what)


class HedgeOptions(TypedDict, total=False):
    """The options `hedge` accepts besides the name.

    .. versionadded:: 0.1.0
    """

    delay: float | timedelta
    percentile: float | None
    max_hedges: int
    min_delay: float | timedelta
    window: int
    min_samples: int
    clock: Callable[[], float] | None


hedgers: Named[Hedger] = Named("hedger")
"""The hedgers shared by name (`hedge`)."""


def hedge(name: str, **options: Unpack[HedgeOptions]) -> Hedger:
    """Return the hedger called `name`, shared by everyone who asks for it.

    .. code-block:: python

        @stalwart.hedge("search", percentile=95)
        async def search(query: str) -> list[Hit]: ...

    The first call builds it with the options given (the defaults of `Hedger` for
    the others); a later call with no options returns it, and with options they
    must describe the same hedger (every option, defaults included).

    Raises:
        ValueError: An option is out of range, or the hedger exists with other
            options (each difference named).
        TypeError: An option is unknown or has the wrong kind of value.

    .. versionadded:: 0.1.0
    """
    return hedgers.share(
        name,
        options,
        Hedger,
        allowed=HedgeOptions.__optional_keys__,
        spelling="@stalwart.hedge",
    )
