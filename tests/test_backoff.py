"""Backoff strategies: documented bounds, monotonicity, caps, tenacity interop, validation."""

from __future__ import annotations

import itertools
import math
import random
from datetime import timedelta
from typing import Any

import pytest
import tenacity
from hypothesis import given
from hypothesis import strategies as st

import stalwart
from stalwart.backoff import Decorrelated

seconds = st.floats(0, 1_000, allow_nan=False)
initials = st.floats(0, 1_000, allow_nan=False, exclude_min=True)  # exponential refuses 0
attempts = st.integers(1, 10_000)
unit = st.floats(0, 1, exclude_max=True)
jitters = st.sampled_from(["none", "full", "equal"])


def fixed(value: float) -> Any:
    """A random source that always returns `value`."""
    return lambda: value


def bounds(d: float, jitter: str) -> tuple[float, float]:
    """The documented range of a jittered delay around the computed value `d`."""
    return {"none": (d, d), "full": (0.0, d), "equal": (d / 2, d)}[jitter]


@given(
    initial=initials, growth=st.floats(1, 10), extra=seconds, jitter=jitters, n=attempts, u=unit
)
def test_exponential_within_documented_bounds(
    initial: float, growth: float, extra: float, jitter: Any, n: int, u: float
) -> None:
    """Exponential delays lie in the jitter's range around min(max, initial*m**(n-1))."""
    cap = initial + extra
    backoff = stalwart.exponential(initial, growth, cap, jitter)
    try:
        d = min(initial * growth ** (n - 1), cap)
    except OverflowError:
        d = cap
    low, high = bounds(d, jitter)
    assert low - 1e-9 <= backoff.delay(n, fixed(u)) <= high + 1e-9


@given(initial=initials, growth=st.floats(1, 10), extra=seconds)
def test_unjittered_exponential_is_monotone_and_capped(
    initial: float, growth: float, extra: float
) -> None:
    """Without jitter, exponential delays never decrease and never pass the cap."""
    cap = initial + extra
    delays = list(
        itertools.islice(stalwart.exponential(initial, growth, cap, "none").delays(), 60)
    )
    assert all(a <= b for a, b in itertools.pairwise(delays))
    assert all(d <= cap for d in delays)
    assert delays[0] == initial


def test_exponential_doubles_from_initial() -> None:
    """The default multiplier doubles the wait each attempt until the cap."""
    backoff = stalwart.exponential(initial=0.5, max=3, jitter="none")
    assert [backoff.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


@given(initial=seconds, step=seconds, extra=seconds, jitter=jitters, n=attempts, u=unit)
def test_linear_within_documented_bounds(
    initial: float, step: float, extra: float, jitter: Any, n: int, u: float
) -> None:
    """Linear delays lie in the jitter's range around min(max, initial + step*(n-1))."""
    cap = initial + extra
    d = min(initial + step * (n - 1), cap)
    low, high = bounds(d, jitter)
    assert (
        low - 1e-9 <= stalwart.linear(initial, step, cap, jitter).delay(n, fixed(u)) <= high + 1e-9
    )


def test_linear_grows_by_step() -> None:
    """Linear backoff adds `step` per attempt."""
    backoff = stalwart.linear(1, 0.5, 2.2, "none")
    assert [backoff.delay(n) for n in range(1, 5)] == [1.0, 1.5, 2.0, 2.2]


@given(delay=seconds, jitter=jitters, n=attempts, u=unit)
def test_constant_within_documented_bounds(delay: float, jitter: Any, n: int, u: float) -> None:
    """Constant delays lie in the jitter's range around the delay."""
    low, high = bounds(delay, jitter)
    assert low <= stalwart.constant(delay, jitter).delay(n, fixed(u)) <= high


@given(
    base=st.floats(0, 100, exclude_min=True, allow_subnormal=False),
    extra=seconds,
    n=attempts,
    us=st.lists(unit, min_size=1),
)
def test_decorrelated_within_base_and_max(
    base: float, extra: float, n: int, us: list[float]
) -> None:
    """Decorrelated delays stay within [base, max] at every attempt and in sequences."""
    cap = base + extra
    backoff = stalwart.decorrelated(base, cap)
    rng = itertools.cycle(us).__next__
    assert base <= backoff.delay(n, rng) <= cap
    for value in itertools.islice(backoff.delays(rng), 80):
        assert base <= value <= cap


def test_decorrelated_grows_and_stays_jittered_at_the_cap() -> None:
    """Decorrelated waits grow on average, and at the cap they are spread, not pinned."""
    backoff = stalwart.decorrelated(base=0.1, max=5.0)
    rng = random.Random(7).random
    runs = [list(itertools.islice(backoff.delays(rng), 12)) for _ in range(500)]
    means = [sum(run[i] for run in runs) / len(runs) for i in range(12)]
    assert means[0] < means[3] < means[6]
    late = [run[-1] for run in runs]
    assert sum(1 for v in late if v == 5.0) < len(late) / 10
    assert min(late) >= 2.5


def test_decorrelated_first_delay_is_near_base() -> None:
    """The first decorrelated wait is about base above the floor: within [base, 3*base]."""
    backoff = stalwart.decorrelated(base=1.0, max=100.0)
    rng = random.Random(3).random
    firsts = [backoff.step(1, 0.0, rng)[0] for _ in range(1000)]
    assert all(1.0 <= v <= 3.0 for v in firsts)


def test_decorrelated_keeps_state_between_tenacity_calls() -> None:
    """As a tenacity wait, decorrelated carries its sequence on the retry state."""
    backoff = stalwart.decorrelated(0.01, 1.0)
    sleeps: list[float] = []

    @tenacity.retry(
        wait=backoff, stop=tenacity.stop_after_attempt(5), sleep=sleeps.append, reraise=True
    )
    def fail() -> None:
        raise ConnectionError

    with pytest.raises(ConnectionError):
        fail()
    assert len(sleeps) == 4
    assert all(0.01 <= s <= 1.0 for s in sleeps)


def test_decorrelated_past_overflow_is_at_cap() -> None:
    """Very late attempts neither overflow nor leave [base, max]."""
    backoff = stalwart.decorrelated(1.0, 10.0)
    value, state = backoff.step(10_000, 0.0)
    assert 5.0 <= value <= 10.0
    assert state == math.inf


def test_full_jitter_is_the_default() -> None:
    """exponential() and linear() default to full jitter; constant() to none."""
    assert stalwart.exponential().jitter == "full"
    assert stalwart.linear().jitter == "full"
    assert stalwart.constant().jitter == "none"


def test_backoffs_are_tenacity_wait_strategies() -> None:
    """Each backoff works as tenacity's `wait=`, and combines with `+` either way."""
    sleeps: list[float] = []

    @tenacity.retry(
        wait=stalwart.constant(0.5) + tenacity.wait_fixed(1),
        stop=tenacity.stop_after_attempt(3),
        sleep=sleeps.append,
        reraise=True,
    )
    def fail() -> None:
        raise ConnectionError

    with pytest.raises(ConnectionError):
        fail()
    assert sleeps == [1.5, 1.5]
    combined = tenacity.wait_fixed(1) + stalwart.constant(2)
    state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    assert combined(state) == 3.0
    assert (stalwart.constant(2) + stalwart.constant(1))(state) == 3.0
    assert sum([stalwart.constant(1), stalwart.constant(2)])(state) == 3.0  # type: ignore[operator]


def test_adding_a_non_strategy_is_refused() -> None:
    """Adding a number other than 0 to a backoff is a TypeError, not a broken strategy."""
    with pytest.raises(TypeError):
        _ = 3 + stalwart.constant(1)  # type: ignore[operator]


def test_timedelta_is_accepted_as_seconds() -> None:
    """Time parameters accept timedelta, meaning seconds."""
    backoff = stalwart.exponential(timedelta(milliseconds=250), 2, timedelta(seconds=1), "none")
    assert backoff.delays().__next__() == 0.25
    assert backoff.max == 1.0


def test_reprs_name_the_public_constructor() -> None:
    """Reprs read like the call that made them."""
    assert repr(stalwart.exponential(1, 2, 3, "none")) == (
        "stalwart.exponential(initial=1.0, multiplier=2.0, max=3.0, jitter='none')"
    )
    assert repr(stalwart.linear(1, 1, 2)).startswith("stalwart.linear(initial=1.0, step=1.0")
    assert repr(stalwart.constant(1)) == "stalwart.constant(1.0, jitter='none')"
    assert repr(stalwart.decorrelated(1, 2)) == "stalwart.decorrelated(base=1.0, max=2.0)"


def test_base_class_delay_is_abstract() -> None:
    """The Backoff base class does not pretend to compute delays."""
    with pytest.raises(NotImplementedError):
        stalwart.Backoff().delay(1)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: stalwart.exponential(initial=-1), ValueError, "initial .* got -1"),
        (lambda: stalwart.exponential(initial=math.nan), ValueError, "initial .* got nan"),
        (lambda: stalwart.exponential(multiplier=0.5), ValueError, "multiplier .* got 0.5"),
        (lambda: stalwart.exponential(multiplier=math.inf), ValueError, "multiplier .* got inf"),
        (lambda: stalwart.exponential(initial=5, max=1), ValueError, "max must be >= initial"),
        (
            lambda: stalwart.exponential(jitter="half"),
            ValueError,
            "jitter must be one of .*'half'",
        ),
        (lambda: stalwart.linear(step=-1), ValueError, "step .* got -1"),
        (lambda: stalwart.linear(initial=2, max=1), ValueError, "max must be >= initial .* got 1"),
        (lambda: stalwart.constant(-0.1), ValueError, "delay .* got -0.1"),
        (lambda: stalwart.constant(1, jitter="x"), ValueError, "jitter .* 'x'"),
        (lambda: stalwart.decorrelated(base=2, max=1), ValueError, "max must be >= base"),
        (lambda: stalwart.decorrelated(base="1"), TypeError, "base must be .* got '1'"),
        (lambda: stalwart.decorrelated(base=0), ValueError, r"base must be .* > 0 .*, got 0"),
        (lambda: stalwart.decorrelated(base=timedelta(0)), ValueError, "base .* got datetime"),
        (lambda: stalwart.decorrelated(base=-1), ValueError, "base .* got -1"),
        (lambda: stalwart.exponential(jitter=["full"]), TypeError, r"jitter .* got \['full'\]"),
        (lambda: stalwart.linear(jitter={"full"}), TypeError, r"jitter .* got \{'full'\}"),
        (lambda: stalwart.constant(1, jitter=None), TypeError, "jitter .* got None"),
        (lambda: stalwart.exponential(jitter=1), TypeError, "jitter must be one of .* got 1"),
        (lambda: stalwart.exponential(max=math.inf), ValueError, "max .* got inf"),
    ],
)
def test_bad_arguments_fail_at_construction(make: Any, error: type[Exception], match: str) -> None:
    """Bad backoff arguments raise at construction, naming the parameter and the value."""
    with pytest.raises(error, match=match):
        make()


def test_decorrelated_class_is_public() -> None:
    """decorrelated() returns the public Decorrelated class."""
    assert isinstance(stalwart.decorrelated(), Decorrelated)


# --- Very late attempts --------------------------------------------------------------------

huge_attempts = st.one_of(
    st.integers(1, 10_000), st.integers(1, 2**64), st.integers(1, 10**400), st.just(1025)
)
caps = st.floats(0, 1e12, allow_nan=False)
positive = st.floats(1e-300, 1e3, allow_nan=False)


def backoffs() -> st.SearchStrategy[tuple[stalwart.Backoff, float, float, bool]]:
    """Every backoff kind, as (backoff, lowest delay, highest delay, monotone unjittered)."""
    exponential = st.builds(
        lambda initial, growth, extra, jitter: (
            stalwart.exponential(initial, growth, initial + extra, jitter),
            0.0,
            initial + extra,
            jitter == "none",
        ),
        positive,
        st.floats(1, 1e3),
        caps,
        jitters,
    )
    linear = st.builds(
        lambda initial, step, extra, jitter: (
            stalwart.linear(initial, step, initial + extra, jitter),
            0.0,
            initial + extra,
            jitter == "none",
        ),
        seconds,
        seconds,
        caps,
        jitters,
    )
    constant = st.builds(
        lambda delay, jitter: (stalwart.constant(delay, jitter), 0.0, delay, jitter == "none"),
        seconds,
        jitters,
    )
    decorrelated = st.builds(
        lambda base, extra: (stalwart.decorrelated(base, base + extra), base, base + extra, False),
        positive,
        caps,
    )
    return st.one_of(exponential, linear, constant, decorrelated)


@given(kind=backoffs(), first=huge_attempts, step=huge_attempts, u=unit)
def test_every_backoff_is_total_bounded_and_monotone_at_any_attempt(
    kind: tuple[stalwart.Backoff, float, float, bool], first: int, step: int, u: float
) -> None:
    """At any attempt, however late, delays never raise, stay in bounds, and never fall back."""
    backoff, low, high, monotone = kind
    earlier, later = backoff.delay(first, fixed(u)), backoff.delay(first + step, fixed(u))
    for value in (earlier, later):
        assert math.isfinite(value)
        assert low - 1e-9 * max(1.0, low) <= value <= high * (1 + 1e-12)
    if monotone:
        assert earlier <= later


@pytest.mark.parametrize("attempt", [1, 2, 1024, 1025, 1026, 10**6, 10**400])
def test_exponential_past_float_overflow_stays_on_its_curve(attempt: int) -> None:
    """exponential never jumps: past where the power overflows, the delay is the cap it reached."""
    assert stalwart.exponential(1e-300, 2, 30, "none").delay(attempt) <= 30.0
    assert stalwart.exponential(1.0, 1, 30, "none").delay(attempt) == 1.0
    assert stalwart.linear(1.0, 0, 30, "none").delay(attempt) == 1.0


def test_exponential_refuses_initial_zero() -> None:
    """exponential(initial=0) would wait 0.0 for ever: refused, pointing to constant(0)."""
    with pytest.raises(ValueError, match=r"initial must be .* > 0 .*, got 0\b.*constant\(0\)"):
        stalwart.exponential(initial=0, max=30)
    with pytest.raises(ValueError, match=r"initial must be .* > 0"):
        stalwart.exponential(initial=timedelta(0))
