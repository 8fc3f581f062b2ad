"""Breaker windows: exact forgetting, no negative counts, fixed memory, validation."""

from __future__ import annotations

import math
import tracemalloc
from collections import deque
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stalwart.breaker import window as window_module
from stalwart.breaker.window import DEFAULT_BUCKETS, CountWindow, TimeWindow
from strategies import window_steps

Outcome = tuple[float, bool, bool]


def epoch(t: float, width: float) -> int:
    """The documented bucket of time `t`: ``floor(t / width)``, in exact arithmetic."""
    return math.floor(Fraction(t) / Fraction(width))


def reference_counts(
    outcomes: list[Outcome], now: float, width: float, buckets: int
) -> tuple[int, int, int]:
    """``(calls, failures, slow)`` of the outcomes the documented rule keeps at `now`."""
    kept = [(f, s) for t, f, s in outcomes if epoch(now, width) - epoch(t, width) < buckets]
    return len(kept), sum(f for f, _ in kept), sum(s for _, s in kept)


@given(
    seconds=st.floats(0.01, 1_000, allow_nan=False),
    buckets=st.integers(1, 30),
    start=st.sampled_from([0.0, 0.3, 1_000.0, 1e6 + 0.1]),
    steps=st.lists(window_steps, max_size=60),
)
def test_time_window_forgets_exactly_what_left_it(
    seconds: float,
    buckets: int,
    start: float,
    steps: list[tuple[float, float, bool, bool, bool]],
) -> None:
    """A TimeWindow counts exactly the outcomes the bucket rule keeps, late ones included."""
    w = TimeWindow(seconds, buckets)
    now = start
    recorded: list[Outcome] = []
    for advance, lag, failed, slow, observe in steps:
        now += advance
        at = max(now - lag, 0.0)  # lag > 0: a late report
        w.record(at, failed, slow)
        recorded.append((at, failed, slow))
        if observe:
            got = w.counts(now)
            assert got == reference_counts(recorded, now, w.width, buckets)
            assert min(got) >= 0
    assert w.counts(now) == reference_counts(recorded, now, w.width, buckets)


@given(
    seconds=st.floats(0.01, 100, allow_nan=False),
    start=st.floats(0, 1e7, allow_nan=False),
    flags=st.lists(st.tuples(st.booleans(), st.booleans()), max_size=30),
    after=st.floats(0, 1e6, allow_nan=False),
)
def test_time_window_counts_never_negative(
    seconds: float, start: float, flags: list[tuple[bool, bool]], after: float
) -> None:
    """Counts stay between zero and the calls recorded, and slow/failures <= calls."""
    w = TimeWindow(seconds)
    for i, (failed, slow) in enumerate(flags):
        w.record(start + i * w.width / 3, failed, slow)
    for probe in (start, start + after, start + seconds, start + 2 * seconds):
        calls, failures, slow_calls = w.counts(probe)
        assert 0 <= failures <= calls <= len(flags)
        assert 0 <= slow_calls <= calls


@given(
    size=st.integers(1, 20),
    outcomes=st.lists(st.tuples(st.booleans(), st.booleans()), max_size=100),
)
def test_count_window_is_the_last_size_outcomes(
    size: int, outcomes: list[tuple[bool, bool]]
) -> None:
    """A CountWindow's counts are those of the last `size` outcomes, after every call."""
    w = CountWindow(size)
    last: deque[tuple[bool, bool]] = deque(maxlen=size)
    for failed, slow in outcomes:
        w.record(failed, slow)
        last.append((failed, slow))
        assert (w.calls, w.failures, w.slow) == (
            len(last),
            sum(f for f, _ in last),
            sum(s for _, s in last),
        )
        assert 0 <= w.failures <= w.calls <= size
        assert 0 <= w.slow <= w.calls


@given(
    size=st.integers(1, 10),
    before=st.lists(st.tuples(st.booleans(), st.booleans()), max_size=30),
    after=st.lists(st.tuples(st.booleans(), st.booleans()), max_size=30),
)
def test_count_window_reset_empties(
    size: int, before: list[tuple[bool, bool]], after: list[tuple[bool, bool]]
) -> None:
    """After reset a CountWindow is empty and then counts only what followed."""
    w = CountWindow(size)
    for failed, slow in before:
        w.record(failed, slow)
    w.reset()
    assert (w.calls, w.failures, w.slow) == (0, 0, 0)
    for failed, slow in after:
        w.record(failed, slow)
    last = after[-size:]
    assert (w.calls, w.failures, w.slow) == (
        len(last),
        sum(f for f, _ in last),
        sum(s for _, s in last),
    )


@given(
    start=st.sampled_from([0.0, 5.0, 1_000.0, 1e6 + 0.1]),
    before=st.lists(st.tuples(st.booleans(), st.booleans()), max_size=20),
    gap=st.sampled_from([0.0, 1.0, 30.0, 1e5]),
    after=st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=20),
)
def test_time_window_reset_empties(
    start: float,
    before: list[tuple[bool, bool]],
    gap: float,
    after: list[tuple[bool, bool]],
) -> None:
    """After reset a TimeWindow is empty and then counts every outcome that followed."""
    w = TimeWindow(60.0)
    for failed, slow in before:
        w.record(start, failed, slow)
    w.reset()
    assert w.counts(start) == (0, 0, 0)
    now = start + gap
    for failed, slow in after:
        w.record(now, failed, slow)
    assert w.counts(now) == (len(after), sum(f for f, _ in after), sum(s for _, s in after))


def test_time_window_counts_the_first_bucket_at_a_late_start() -> None:
    """Outcomes in the first bucket are counted when the clock starts far from zero."""
    w = TimeWindow(60.0)
    w.record(1_000.0, True, False)
    w.record(1_000.5, True, True)
    assert w.counts(1_000.5) == (2, 2, 1)


def test_time_window_edges() -> None:
    """An outcome stays counted while floor(now/width) - floor(t/width) < buckets."""
    w = TimeWindow(10.0, buckets=10)  # width 1.0
    w.record(5.5, True, False)
    assert w.counts(14.999) == (1, 1, 0)  # 14 - 5 = 9 buckets later
    assert w.counts(15.0) == (0, 0, 0)  # 15 - 5 = 10: gone
    assert (w.seconds, w.buckets, w.width) == (10.0, 10, 1.0)
    assert TimeWindow(60).buckets == DEFAULT_BUCKETS


def test_late_report_older_than_the_window_is_ignored() -> None:
    """An outcome reported with a time the window has already forgotten is not counted."""
    w = TimeWindow(10.0, buckets=10)
    w.record(100.0, False, False)
    w.record(90.5, True, True)  # bucket 90, 10 buckets behind 100
    w.record(3.0, True, False)
    assert w.counts(100.0) == (1, 0, 0)


def test_late_report_within_the_window_is_counted() -> None:
    """An outcome reported late into an older bucket still in the window is counted."""
    w = TimeWindow(10.0, buckets=10)
    w.record(100.0, False, False)
    w.record(91.0, True, False)  # bucket 91, 9 buckets behind 100
    w.record(99.9, True, True)
    assert w.counts(100.0) == (3, 2, 1)
    assert w.counts(100.999) == (3, 2, 1)
    assert w.counts(101.0) == (2, 1, 1)  # bucket 91 has left


def test_late_report_after_a_jump_is_counted() -> None:
    """After the clock jumps past the whole window, late reports into it still count."""
    w = TimeWindow(10.0, buckets=10)
    w.record(5.0, True, False)
    w.counts(10_000.0)  # jump: everything forgotten
    w.record(9_995.0, True, False)  # 5 buckets behind, inside the window
    assert w.counts(10_000.0) == (1, 1, 0)


@pytest.mark.parametrize(
    "seconds", [0, -1, 0.0, 5e-324, 1e-4, math.inf, -math.inf, math.nan, "60", None, True]
)
def test_time_window_rejects_bad_seconds(seconds: object) -> None:
    """A window that is not a finite number of seconds >= MIN_WINDOW raises, naming it."""
    with pytest.raises(ValueError, match=r"^window must be .*got ") as info:
        TimeWindow(seconds)  # type: ignore[arg-type]
    assert repr(seconds) in str(info.value)


@pytest.mark.parametrize("buckets", [0, -3, 1.5, "20", None, True])
def test_time_window_rejects_bad_buckets(buckets: object) -> None:
    """A bucket count that is not an integer >= 1 raises, naming it."""
    with pytest.raises(ValueError, match=r"^buckets must be .*got ") as info:
        TimeWindow(60.0, buckets)  # type: ignore[arg-type]
    assert repr(buckets) in str(info.value)


@pytest.mark.parametrize("size", [0, -1, 1.5, "10", None, True])
def test_count_window_rejects_bad_size(size: object) -> None:
    """A count window size that is not an integer >= 1 raises, naming window_calls."""
    with pytest.raises(ValueError, match=r"^window_calls must be .*got ") as info:
        CountWindow(size)  # type: ignore[arg-type]
    assert repr(size) in str(info.value)


def _window_memory() -> int:
    """Bytes currently allocated by lines of the window module (tracemalloc)."""
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, window_module.__file__)]
    )
    return sum(stat.size for stat in snapshot.statistics("filename"))


def test_memory_does_not_grow_with_calls() -> None:
    """Recording 200,000 outcomes takes no more memory than recording 1,000.

    The time window rolls over 200 times; a leak of one byte a call would show as 199 KB.
    """
    time_window, count_window = TimeWindow(1.0), CountWindow(100)
    tracemalloc.start()
    try:
        record_time, record_count = time_window.record, count_window.record
        for i in range(1_000):
            record_time(i * 0.001, i % 3 == 0, i % 5 == 0)
            record_count(i % 3 == 0, i % 5 == 0)
        early = _window_memory()
        for i in range(1_000, 200_000):
            record_time(i * 0.001, i % 3 == 0, i % 5 == 0)
            record_count(i % 3 == 0, i % 5 == 0)
        late = _window_memory()
    finally:
        tracemalloc.stop()
    assert late - early < 2_048, (early, late)
    assert count_window.calls == 100
    assert 0 < time_window.counts(199.999)[0] <= 1_000
