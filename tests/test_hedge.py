"""Hedged calls: the delay, who wins, losers cancelled and released, deadlines, stats."""

from __future__ import annotations

import math
import re
from collections import deque
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stalwart
from stalwart import _clock
from stalwart.hedge import (
    DEFAULT_DELAY,
    HedgedCall,
    Hedger,
    hedge,
    hedgers,
)
from stalwart.testing import ManualClock

if TYPE_CHECKING:
    from collections.abc import Iterator


class Timer:
    """stalwart's clock for these tests: a hedge's wait ends only when the test fires it.

    `monotonic` reads `now`, which moves only when a wait is fired (by its length).
    """

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.cancelled = 0
        self._pending: deque[tuple[anyio.Event, float]] = deque()
        self._arrived: anyio.Event | None = None

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:  # pragma: no cover - hedging never blocks
        raise AssertionError("a hedger slept a thread")

    async def async_sleep(self, seconds: float) -> None:
        if seconds == 0:  # a retry's zero backoff: a checkpoint only
            await anyio.lowlevel.checkpoint()
            return
        self.sleeps.append(seconds)
        done = anyio.Event()
        self._pending.append((done, seconds))
        if self._arrived is not None:
            self._arrived.set()
        try:
            await done.wait()
        except anyio.get_cancelled_exc_class():
            self.cancelled += 1
            self._pending.remove((done, seconds))
            raise

    async def fire(self) -> None:
        """Wait for the next hedge timer to start waiting, then end its wait."""
        while not self._pending:
            self._arrived = anyio.Event()
            await self._arrived.wait()
        done, seconds = self._pending.popleft()
        self.now += seconds
        done.set()

    @property
    def waiting(self) -> int:
        return len(self._pending)


@pytest.fixture
def timer() -> Iterator[Timer]:
    """A `Timer` installed as stalwart's clock."""
    source = Timer()
    with _clock.use(source):
        yield source


class Attempts:
    """A function whose successive calls are held until the test releases each one.

    Each call waits for its own `release` event, then returns ``("ok", index)`` or raises
    what `fail` says; `entered`, `ended` and `cancelled` record what became of each.
    """

    def __init__(self, n: int, fail: dict[int, BaseException] | None = None) -> None:
        self.release = [anyio.Event() for _ in range(n)]
        self.started = [anyio.Event() for _ in range(n)]
        self.finished = [anyio.Event() for _ in range(n)]
        self.fail = fail or {}
        self.entered: list[int] = []
        self.ended: list[int] = []
        self.cancelled: list[int] = []

    async def __call__(self) -> tuple[str, int]:
        index = len(self.entered)
        self.entered.append(index)
        self.started[index].set()
        try:
            await self.release[index].wait()
        except anyio.get_cancelled_exc_class():
            self.cancelled.append(index)
            raise
        finally:
            self.ended.append(index)
            self.finished[index].set()
        if index in self.fail:
            raise self.fail[index]
        return ("ok", index)


# --- construction -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"delay": -1}, ValueError, "delay must be"),
        ({"delay": math.nan}, ValueError, "delay must be"),
        ({"delay": "1"}, TypeError, "delay must be"),
        ({"percentile": 0.95}, ValueError, "percentile must be a number in [50, 100), got 0.95"),
        ({"percentile": 100}, ValueError, "percentile must be"),
        ({"percentile": "95"}, TypeError, "percentile must be"),
        ({"max_hedges": 0}, ValueError, "max_hedges must be an integer >= 1, got 0"),
        ({"max_hedges": 1.0}, TypeError, "max_hedges must be"),
        ({"min_delay": -0.1}, ValueError, "min_delay must be"),
        ({"window": 0}, ValueError, "window must be"),
        ({"min_samples": 0}, ValueError, "min_samples must be"),
        ({"window": 10, "min_samples": 11}, ValueError, "min_samples must be at most window"),
        ({"clock": 3}, TypeError, "clock must be callable, got 3"),
    ],
)
def test_bad_options_are_refused_by_name(
    options: dict[str, Any], error: type[Exception], words: str
) -> None:
    """A bad option raises at construction, naming the parameter and the value."""
    with pytest.raises(error, match=re.escape(words)):
        Hedger("h", **options)


def test_name_must_be_given() -> None:
    """An empty name is refused."""
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        Hedger("")


def test_defaults_and_timedelta() -> None:
    """Defaults are documented constants; a timedelta is seconds."""
    hedger = Hedger("h", delay=timedelta(milliseconds=20))
    assert hedger.current_delay() == pytest.approx(0.02)
    assert Hedger("d").current_delay() == DEFAULT_DELAY
    assert repr(hedger) == "Hedger('h', delay=0.02, max_hedges=1)"


def test_sync_functions_are_refused() -> None:
    """A sync function is not hedged: the error says why."""
    sync: Any = lambda: 1  # noqa: E731 - a sync function, typed as anything
    with pytest.raises(TypeError, match="async functions only.*could not be cancelled"):
        Hedger("h")(sync)


def test_async_generators_are_refused() -> None:
    """An async generator function cannot be hedged."""

    async def numbers() -> Any:
        yield 1

    with pytest.raises(TypeError, match="async generator function"):
        Hedger("h")(numbers)


# --- shared by name -------------------------------------------------------------------


def test_hedge_shares_one_hedger_per_name() -> None:
    """Same options give the same hedger; no options, whatever is there; others raise."""
    first = hedge("search", delay=0.1)
    assert hedge("search", delay=0.1) is first
    assert hedge("search", delay=timedelta(milliseconds=100)) is first
    assert hedge("search") is first
    assert hedgers.find("search") is first
    with pytest.raises(ValueError, match=r"delay=0\.1 \(asked 0\.2\)"):
        hedge("search", delay=0.2)
    with pytest.raises(ValueError, match=r"max_hedges=1 \(asked 2\)"):
        hedge("search", delay=0.1, max_hedges=2)
    assert hedgers.stats()["search"]["calls"] == 0


def test_hedge_without_options_builds_the_default() -> None:
    """The first `hedge(name)` builds a default hedger, which default options match."""
    made = hedge("a")
    assert made.options() == Hedger("x").options()
    assert hedge("a", delay=DEFAULT_DELAY) is made


def test_hedge_refuses_unknown_options() -> None:
    """A misspelt option is a TypeError naming it."""
    with pytest.raises(TypeError, match="unknown options: dealy"):
        hedge("a", dealy=1)  # type: ignore[call-arg]


# --- calls ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_hedge_starts_after_the_delay_and_wins(timer: Timer) -> None:
    """A slow first attempt is hedged after the delay; the hedge's result wins."""
    hedger = Hedger("h", delay=0.05)
    attempts = Attempts(2)
    async with anyio.create_task_group() as group:
        results: list[Any] = []

        async def run() -> None:
            results.append(await hedger.call(attempts))

        group.start_soon(run)
        await attempts.started[0].wait()
        assert attempts.entered == [0]
        await timer.fire()
        await attempts.started[1].wait()
        attempts.release[1].set()
    assert results == [("ok", 1)]
    assert attempts.cancelled == [0]
    assert sorted(attempts.ended) == [0, 1]
    assert timer.sleeps == [0.05]
    stats = hedger.stats()
    assert (stats.calls, stats.hedges, stats.hedge_wins, stats.cancelled, stats.failed) == (
        1,
        1,
        1,
        1,
        0,
    )


@pytest.mark.anyio
async def test_a_fast_first_attempt_starts_no_hedge(timer: Timer) -> None:
    """The first attempt answering before the delay ends the call; the timer is cancelled."""
    hedger = Hedger("h", delay=0.05)
    attempts = Attempts(1)
    attempts.release[0].set()
    assert await hedger.call(attempts) == ("ok", 0)
    assert attempts.entered == [0]
    assert timer.waiting == 0
    stats = hedger.stats_dict()
    assert (stats["calls"], stats["hedges"], stats["hedge_wins"], stats["cancelled"]) == (
        1,
        0,
        0,
        0,
    )


@pytest.mark.anyio
async def test_the_first_attempt_can_still_win_after_a_hedge(timer: Timer) -> None:
    """When the first attempt answers after the hedge started, it wins; the hedge is cancelled."""
    hedger = Hedger("h", delay=0.05)
    attempts = Attempts(2)
    async with anyio.create_task_group() as group:
        results: list[Any] = []

        async def run() -> None:
            results.append(await hedger.call(attempts))

        group.start_soon(run)
        await timer.fire()
        await attempts.started[1].wait()
        attempts.release[0].set()
    assert results == [("ok", 0)]
    assert attempts.cancelled == [1]
    assert hedger.stats().hedge_wins == 0
    assert hedger.stats().cancelled == 1


@pytest.mark.anyio
async def test_losers_errors_are_swallowed(timer: Timer) -> None:
    """A failed attempt, while another runs, is not raised: the other's result is."""
    hedger = Hedger("h", delay=0.05)
    attempts = Attempts(2, fail={0: ConnectionError("primary down")})
    async with anyio.create_task_group() as group:
        results: list[Any] = []

        async def run() -> None:
            results.append(await hedger.call(attempts))

        group.start_soon(run)
        await timer.fire()
        await attempts.started[1].wait()
        attempts.release[0].set()  # fails while the hedge runs
        await attempts.finished[0].wait()
        attempts.release[1].set()
    assert results == [("ok", 1)]
    assert hedger.stats().failed == 0


@pytest.mark.anyio
async def test_when_every_attempt_fails_the_last_failure_is_raised(timer: Timer) -> None:
    """Every attempt failing raises the last failure, with a note naming the earlier ones."""
    hedger = Hedger("h", delay=0.05)
    attempts = Attempts(2, fail={0: KeyError("first"), 1: ConnectionError("second")})
    caught: list[BaseException] = []
    async with anyio.create_task_group() as group:

        async def run() -> None:
            try:
                await hedger.call(attempts)
            except ConnectionError as exc:
                caught.append(exc)

        group.start_soon(run)
        await timer.fire()
        await attempts.started[1].wait()
        attempts.release[0].set()
        await attempts.finished[0].wait()
        attempts.release[1].set()
    assert len(caught) == 1
    notes = getattr(caught[0], "__notes__", [])
    assert notes == ["stalwart: hedged call h: all 2 attempts failed; earlier: KeyError"]
    assert hedger.stats().failed == 1


@pytest.mark.anyio
async def test_a_failure_never_starts_a_hedge_early(timer: Timer) -> None:
    """A first attempt failing before the delay fails the call at once: no hedge."""
    hedger = Hedger("h", delay=0.05)
    attempts = Attempts(1, fail={0: ConnectionError("down")})
    attempts.release[0].set()
    with pytest.raises(ConnectionError) as caught:
        await hedger.call(attempts)
    assert not hasattr(caught.value, "__notes__")
    assert attempts.entered == [0]
    assert hedger.stats().hedges == 0
    assert hedger.stats().failed == 1


@pytest.mark.anyio
async def test_max_hedges_bounds_the_attempts(timer: Timer) -> None:
    """Hedges start every delay until `max_hedges` have started, no more."""
    hedger = Hedger("h", delay=0.05, max_hedges=2)
    attempts = Attempts(3)
    async with anyio.create_task_group() as group:
        results: list[Any] = []

        async def run() -> None:
            results.append(await hedger.call(attempts))

        group.start_soon(run)
        await timer.fire()
        await attempts.started[1].wait()
        await timer.fire()
        await attempts.started[2].wait()
        assert timer.waiting == 0  # no third hedge is waited for
        attempts.release[2].set()
    assert results == [("ok", 2)]
    assert sorted(attempts.cancelled) == [0, 1]
    assert timer.sleeps == [0.05, 0.05]
    stats = hedger.stats()
    assert (stats.hedges, stats.hedge_wins, stats.cancelled) == (2, 1, 2)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("budget", "hedges"), [(0.04, 0), (0.05, 0), (0.09, 1), (0.12, 2), (0.2, 3)]
)
async def test_no_hedge_starts_past_a_deadline(timer: Timer, budget: float, hedges: int) -> None:
    """A hedge that would start at or after the deadline in force is not waited for."""
    hedger = Hedger("h", delay=0.05, max_hedges=3)
    attempts = Attempts(4)
    async with anyio.create_task_group() as group:
        results: list[Any] = []

        async def run() -> None:
            with stalwart.deadline(budget):
                results.append(await hedger.call(attempts))

        group.start_soon(run)
        await attempts.started[0].wait()
        for n in range(hedges):
            await timer.fire()
            await attempts.started[n + 1].wait()
        await anyio.lowlevel.checkpoint()
        assert timer.waiting == 0
        attempts.release[0].set()
    assert results == [("ok", 0)]
    assert len(attempts.entered) == 1 + hedges


@pytest.mark.anyio
async def test_cancelling_the_caller_cancels_every_attempt(timer: Timer) -> None:
    """A cancelled caller leaves no attempt running, and counts no failure."""
    hedger = Hedger("h", delay=0.05, max_hedges=2)
    attempts = Attempts(3)
    async with anyio.create_task_group() as group:

        async def run() -> None:
            await hedger.call(attempts)

        group.start_soon(run)
        await timer.fire()
        await attempts.started[1].wait()
        group.cancel_scope.cancel()
    assert sorted(attempts.cancelled) == [0, 1]
    assert sorted(attempts.ended) == [0, 1]  # every attempt finished inside the call
    assert timer.cancelled == 1  # and the timer of the second hedge
    stats = hedger.stats()
    assert (stats.calls, stats.failed, stats.cancelled, stats.hedges) == (1, 0, 0, 1)


@pytest.mark.anyio
async def test_a_loser_result_arriving_late_is_discarded(timer: Timer) -> None:
    """A result that comes in after the winner's is handed to `discard`, never returned."""
    hedger = Hedger("h", delay=0.05)
    held = anyio.Event()
    discarded: list[str] = []

    async def discard(value: str) -> None:
        await anyio.lowlevel.checkpoint()  # shielded: runs to its end in a cancelled scope
        discarded.append(value)

    count = 0

    async def attempt() -> str:
        nonlocal count
        count += 1
        if count == 1:
            with anyio.CancelScope(shield=True):  # finishes although cancelled
                await held.wait()
            return "late"
        held.set()  # the first attempt is let go only after this one won
        return "winner"

    async with anyio.create_task_group() as group:
        results: list[str] = []

        async def run() -> None:
            results.append(await hedger.race(attempt, discard=discard))

        group.start_soon(run)
        await timer.fire()
    assert results == ["winner"]
    assert discarded == ["late"]


@pytest.mark.anyio
async def test_refused_results_wait_for_a_better_one(timer: Timer) -> None:
    """A result `accept` refuses counts as a failure; it is discarded when overtaken."""
    hedger = Hedger("h", delay=0.05)
    attempts = Attempts(2)
    discarded: list[Any] = []

    async def discard(value: Any) -> None:
        discarded.append(value)

    async with anyio.create_task_group() as group:
        results: list[Any] = []

        async def run() -> None:
            results.append(
                await hedger.race(attempts, accept=lambda r: r[1] != 0, discard=discard)
            )

        group.start_soon(run)
        await timer.fire()
        await attempts.started[1].wait()
        attempts.release[0].set()
        await attempts.finished[0].wait()
        attempts.release[1].set()
    assert results == [("ok", 1)]
    assert discarded == [("ok", 0)]


@pytest.mark.anyio
async def test_when_every_result_is_refused_the_last_is_returned(timer: Timer) -> None:
    """With nothing better, the last refused result is returned; the others discarded."""
    hedger = Hedger("h", delay=0.05)
    attempts = Attempts(2)
    discarded: list[Any] = []

    async def discard(value: Any) -> None:
        discarded.append(value)

    async with anyio.create_task_group() as group:
        results: list[Any] = []

        async def run() -> None:
            results.append(await hedger.race(attempts, accept=lambda _: False, discard=discard))

        group.start_soon(run)
        await timer.fire()
        await attempts.started[1].wait()
        attempts.release[1].set()
        await attempts.finished[1].wait()
        attempts.release[0].set()
    assert results == [("ok", 0)]
    assert discarded == [("ok", 1)]


@pytest.mark.anyio
async def test_the_winner_is_discarded_when_the_caller_is_cancelled(timer: Timer) -> None:
    """A caller cancelled after the winner answered, before the call returned, releases it."""
    hedger = Hedger("h", delay=0.05)
    discarded: list[str] = []

    async def discard(value: str) -> None:
        discarded.append(value)

    with anyio.CancelScope() as scope:

        async def attempt() -> str:
            scope.cancel()  # the caller is cancelled as the answer comes in
            return "answer"

        await hedger.race(attempt, discard=discard)
    assert discarded == ["answer"]
    assert hedger.stats().calls == 1


@pytest.mark.anyio
async def test_decorator_keeps_the_function(timer: Timer) -> None:
    """The decorated function keeps its name and arguments, and is hedged."""
    hedger = hedge("deco", delay=0.01)

    @hedger
    async def double(x: int, *, times: int = 2) -> int:
        return x * times

    assert double.__name__ == "double"
    assert await double(4, times=3) == 12
    assert hedger.stats().calls == 1


# --- the percentile -------------------------------------------------------------------


def _finish(hedger: Hedger, latency: float, loser_elapsed: float | None = None) -> None:
    """One call through the decision object, won after `latency` s (a hedge losing)."""
    call = hedger.begin()
    start = call.started_at
    call.start(start)
    if loser_elapsed is None:
        call.succeeded(0, start + latency)
    else:
        call.start(start + latency - loser_elapsed)
        call.succeeded(0, start + latency)


def test_percentile_waits_for_enough_samples() -> None:
    """Until `min_samples` latencies are seen, the delay is `delay`; then the percentile."""
    hedger = Hedger("p", percentile=90, delay=0.5, min_samples=10, window=20, clock=lambda: 0.0)
    for i in range(9):
        _finish(hedger, 0.01 * (i + 1))
    assert hedger.current_delay() == 0.5
    _finish(hedger, 0.10)
    assert hedger.current_delay() == pytest.approx(0.09)  # nearest rank 9 of 10
    assert hedger.stats().samples == 10


def test_percentile_has_a_floor() -> None:
    """The percentile delay is never below `min_delay`."""
    hedger = Hedger("p", percentile=50, min_samples=1, min_delay=0.002, clock=lambda: 0.0)
    _finish(hedger, 0.0001)
    assert hedger.current_delay() == 0.002


def test_losers_time_keeps_the_tail_in_the_window() -> None:
    """A loser cut short counts with the time it ran, a lower bound of its latency."""
    hedger = Hedger("p", percentile=50, min_samples=2, clock=lambda: 0.0)
    _finish(hedger, 0.3, loser_elapsed=0.25)  # the first attempt won at 0.3 s
    assert sorted(hedger._latencies.sorted) == [0.25, 0.3]


@settings(max_examples=150, deadline=None)
@given(
    latencies=st.lists(st.floats(0, 10, allow_nan=False), min_size=0, max_size=80),
    percentile=st.floats(50, 99.9),
    window=st.integers(1, 30),
    min_samples=st.integers(1, 30),
    min_delay=st.floats(0, 0.5),
)
def test_percentile_is_the_nearest_rank_over_the_window(
    latencies: list[float], percentile: float, window: int, min_samples: int, min_delay: float
) -> None:
    """The delay is the nearest-rank percentile of the last `window` latencies, floored."""
    min_samples = min(min_samples, window)
    hedger = Hedger(
        "p",
        percentile=percentile,
        window=window,
        min_samples=min_samples,
        min_delay=min_delay,
        delay=0.7,
        clock=lambda: 100.0,
    )
    for latency in latencies:
        _finish(hedger, latency)
    held = sorted(latencies[-window:])
    if len(held) < min_samples:
        assert hedger.current_delay() == 0.7
    else:
        rank = max(math.ceil(percentile / 100 * len(held)), 1)
        assert hedger.current_delay() == pytest.approx(max(held[rank - 1], min_delay))
    assert hedger.stats().calls == len(latencies)


# --- properties of the race -----------------------------------------------------------

plans = st.lists(
    st.tuples(st.integers(0, 6), st.booleans()),  # checkpoints before the end, fails
    min_size=4,
    max_size=4,
)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=60, deadline=None)
@given(plan=plans, max_hedges=st.integers(1, 3), cancel_after=st.none() | st.integers(0, 8))
def test_race_properties(
    backend: str,
    plan: list[tuple[int, bool]],
    max_hedges: int,
    cancel_after: int | None,
) -> None:
    """Whatever the timing, the race keeps its promises.

    At most 1 + max_hedges attempts, every one ended with the call, a result only from
    an attempt that returned, a failure only when all failed, and the counts agree.
    """
    clock = ManualClock(0.0)
    hedger = Hedger("prop", delay=0.01, max_hedges=max_hedges)
    started: list[int] = []
    finished: set[int] = set()
    outcome: list[Any] = []

    async def attempt() -> int:
        index = len(started)
        started.append(index)
        checkpoints, fails = plan[index]
        try:
            for _ in range(checkpoints):
                await anyio.lowlevel.checkpoint()
        finally:
            finished.add(index)
        if fails:
            raise ConnectionError(index)
        return index

    async def main() -> None:
        with anyio.CancelScope() as scope:
            if cancel_after is not None:

                async def cancel() -> None:
                    for _ in range(cancel_after):
                        await anyio.lowlevel.checkpoint()
                    scope.cancel()

                async with anyio.create_task_group() as group:
                    group.start_soon(cancel)
                    await _record(hedger.race(attempt), outcome)
                    group.cancel_scope.cancel()
            else:
                await _record(hedger.race(attempt), outcome)
        assert finished == set(started)  # nothing outlives the call

    with clock:
        anyio.run(main, backend=backend)
    assert 1 <= len(started) <= 1 + max_hedges
    stats = hedger.stats()
    assert stats.calls == 1
    assert stats.hedges == len(started) - 1
    if outcome:
        kind, value = outcome[0]
        if kind == "ok":
            assert not plan[value][1]
            assert stats.hedge_wins == (1 if value > 0 else 0)
            assert stats.failed == 0
        else:
            assert all(plan[i][1] for i in started)
            assert stats.failed == 1
    assert stats.cancelled <= stats.hedges


async def _record(awaitable: Any, outcome: list[Any]) -> None:
    try:
        outcome.append(("ok", await awaitable))
    except ConnectionError as exc:
        outcome.append(("raised", exc.args[0]))


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(st.sampled_from(["hedge", "fail", "win"]), max_size=12),
    max_hedges=st.integers(1, 3),
)
def test_decisions_never_start_after_the_end(events: list[str], max_hedges: int) -> None:
    """The decision object: no hedge past `max_hedges` or after the outcome; counts add up."""
    hedger = Hedger("d", delay=0.0, max_hedges=max_hedges, clock=lambda: 0.0)
    call: HedgedCall = hedger.begin()
    call.start(0.0)
    for event in events:
        if event == "hedge":
            if call.may_hedge():
                call.start(0.0)
        elif call.running:
            index = min(call.running)
            if event == "fail":
                call.failed(index)
            else:
                losers = call.succeeded(index, 1.0)
                assert index not in losers
        assert len(call.starts) <= 1 + max_hedges
        if call.over:
            assert not call.may_hedge()
            assert not call.running
    stats = hedger.stats()
    assert stats.calls == (1 if call.over else 0)
    if call.over:
        assert stats.hedges == len(call.starts) - 1


@pytest.mark.anyio
async def test_a_failing_accept_fails_the_attempt(timer: Timer) -> None:
    """An `accept` that raises makes the attempt a failure; its result is discarded."""
    hedger = Hedger("h", delay=0.05)
    discarded: list[str] = []

    async def discard(value: str) -> None:
        discarded.append(value)

    def accept(value: str) -> bool:
        raise LookupError(value)

    async def attempt() -> str:
        return "judged"

    with pytest.raises(LookupError, match="judged"):
        await hedger.race(attempt, accept=accept, discard=discard)
    assert discarded == ["judged"]
    assert hedger.stats().failed == 1


def test_hedge_used_bare_says_what_to_write() -> None:
    """`@stalwart.hedge` without a name is a TypeError showing the call to write."""

    async def search() -> None: ...

    with pytest.raises(TypeError, match=r'write @stalwart.hedge\("name"\)'):
        hedge(search)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_retry_outside_retries_a_hedged_call_that_failed(timer: Timer) -> None:
    """Retries wrap hedging: a hedged call that failed is retried, as a new hedged call."""
    hedger = Hedger("h", delay=0.05)
    outcomes: Iterator[str | Exception] = iter([ConnectionError("a"), ConnectionError("b"), "ok"])

    @stalwart.retry(attempts=3, backoff=stalwart.constant(0), log=False)
    @hedger
    async def fetch() -> str:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert await fetch() == "ok"
    stats = hedger.stats()
    assert (stats.calls, stats.failed) == (3, 2)
