"""Backoff strategies: how long to wait before each new attempt.

Every strategy is a tenacity wait strategy (call it with a `RetryCallState`; combine
it with ``+``), and also a plain object you can ask for delays:
``exponential().delay(3)`` or ``list(islice(exponential().delays(), 5))``.

Jitter spreads retries from many clients so they do not arrive in waves:

========  ==============================  =====================================
jitter    delay for a computed value *d*  notes
========  ==============================  =====================================
"full"    uniform in ``[0, d]``           the default; least total work in
                                          AWS's published simulation
"equal"   uniform in ``[d/2, d]``         keeps at least half of the wait
"none"    exactly ``d``                   for tests and strict schedules
========  ==============================  =====================================
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal, get_args

from . import _validate

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from datetime import timedelta

    from tenacity import RetryCallState

__all__ = [
    "DEFAULT_INITIAL",
    "DEFAULT_MAX",
    "DEFAULT_MULTIPLIER",
    "Backoff",
    "Constant",
    "Decorrelated",
    "Exponential",
    "Jitter",
    "Linear",
    "constant",
    "decorrelated",
    "exponential",
    "linear",
]

Jitter = Literal["none", "full", "equal"]
_JITTERS: frozenset[str] = frozenset(get_args(Jitter))

DEFAULT_INITIAL = 0.1
DEFAULT_MULTIPLIER = 2.0
DEFAULT_MAX = 30.0


def _random() -> float:
    """Return `random.random()`; `random` is imported on first use (~1 ms at import)."""
    import random  # noqa: PLC0415 - most programs never draw a jittered wait

    return random.random()


def _check_jitter(jitter: object) -> Jitter:
    # The type first: a list or a dict is unhashable, and would fail the lookup obscurely.
    if not isinstance(jitter, str):
        raise TypeError(f"jitter must be one of {sorted(_JITTERS)}, got {jitter!r}")
    if jitter not in _JITTERS:
        raise ValueError(f"jitter must be one of {sorted(_JITTERS)}, got {jitter!r}")
    return jitter  # type: ignore[return-value]


def _check_cap(initial: float, cap: float | timedelta, initial_name: str) -> float:
    seconds = _validate.seconds("max", cap)
    if seconds < initial:
        raise ValueError(f"max must be >= {initial_name} ({initial!r}), got {cap!r}")
    return seconds


def _jittered(value: float, jitter: Jitter, rng: Callable[[], float]) -> float:
    if jitter == "full":
        return value * rng()
    if jitter == "equal":
        half = value / 2
        return half + half * rng()
    return value


class Backoff:
    """Base class of the backoff strategies.

    Subclasses implement `delay`; this class makes them tenacity wait strategies.
    """

    __slots__ = ()

    def delay(self, attempt: int, rng: Callable[[], float] = _random) -> float:
        """Return the wait in seconds after failed attempt number `attempt` (from 1)."""
        raise NotImplementedError

    def delays(self, rng: Callable[[], float] = _random) -> Iterator[float]:
        """Yield the waits after attempts 1, 2, 3, ... without end."""
        attempt = 1
        while True:
            yield self.delay(attempt, rng)
            attempt += 1

    def __call__(self, retry_state: RetryCallState) -> float:
        """Return the wait after the attempt `retry_state` describes (tenacity protocol)."""
        return self.delay(retry_state.attempt_number)

    def __add__(self, other: Callable[[RetryCallState], float]) -> Any:
        """Combine with another wait strategy: the waits add up (as in tenacity)."""
        from tenacity.wait import wait_combine  # noqa: PLC0415 - tenacity loads on demand

        return wait_combine(self, other)

    def __radd__(self, other: object) -> Any:
        if other == 0:  # sum() starts from 0
            return self
        if not callable(other):
            return NotImplemented
        from tenacity.wait import wait_combine  # noqa: PLC0415

        return wait_combine(other, self)


class Exponential(Backoff):
    """``initial * multiplier ** (attempt - 1)``, capped at `max`, then jittered.

    Bounds: with ``d = min(max, initial * multiplier ** (attempt - 1))`` the delay
    lies in ``[0, d]`` (full jitter), ``[d/2, d]`` (equal) or is ``d`` (none).
    """

    __module__ = "stalwart"
    __slots__ = ("initial", "jitter", "max", "multiplier")

    def __init__(
        self,
        initial: float | timedelta = DEFAULT_INITIAL,
        multiplier: float = DEFAULT_MULTIPLIER,
        max: float | timedelta = DEFAULT_MAX,  # noqa: A002 - the public name
        jitter: Jitter = "full",
    ) -> None:
        try:  # from 0, every wait would be 0.0, however many attempts
            self.initial = _validate.seconds("initial", initial, positive=True)
        except ValueError as exc:
            raise ValueError(f"{exc}; for no wait at all, use stalwart.constant(0)") from None
        self.multiplier = _validate.number("multiplier", multiplier, minimum=1)
        self.max = _check_cap(self.initial, max, "initial")
        self.jitter = _check_jitter(jitter)

    def __repr__(self) -> str:
        return (
            f"stalwart.exponential(initial={self.initial!r}, multiplier={self.multiplier!r},"
            f" max={self.max!r}, jitter={self.jitter!r})"
        )

    def delay(self, attempt: int, rng: Callable[[], float] = _random) -> float:
        """Return the wait after failed attempt number `attempt` (from 1)."""
        try:
            value = self.initial * self.multiplier ** (attempt - 1)
        except OverflowError:
            # Past any float: a growing curve is far beyond its cap, a flat one is not.
            value = self.max if self.multiplier > 1 else self.initial
        return _jittered(min(value, self.max), self.jitter, rng)


class Linear(Backoff):
    """``initial + step * (attempt - 1)``, capped at `max`, then jittered."""

    __module__ = "stalwart"
    __slots__ = ("initial", "jitter", "max", "step")

    def __init__(
        self,
        initial: float | timedelta = DEFAULT_INITIAL,
        step: float | timedelta = DEFAULT_INITIAL,
        max: float | timedelta = DEFAULT_MAX,  # noqa: A002 - the public name
        jitter: Jitter = "full",
    ) -> None:
        self.initial = _validate.seconds("initial", initial)
        self.step = _validate.seconds("step", step)
        self.max = _check_cap(self.initial, max, "initial")
        self.jitter = _check_jitter(jitter)

    def __repr__(self) -> str:
        return (
            f"stalwart.linear(initial={self.initial!r}, step={self.step!r},"
            f" max={self.max!r}, jitter={self.jitter!r})"
        )

    def delay(self, attempt: int, rng: Callable[[], float] = _random) -> float:
        """Return the wait after failed attempt number `attempt` (from 1)."""
        try:
            value = self.initial + self.step * (attempt - 1)
        except OverflowError:  # an attempt number past any float: count exactly
            from fractions import Fraction  # noqa: PLC0415 - only for such attempts

            value = float(
                min(
                    Fraction(self.initial) + Fraction(self.step) * (attempt - 1),
                    Fraction(self.max),
                )
            )
        return _jittered(min(value, self.max), self.jitter, rng)


class Constant(Backoff):
    """The same `delay` before every attempt, jittered."""

    __module__ = "stalwart"
    __slots__ = ("jitter", "seconds")

    def __init__(
        self, delay: float | timedelta = DEFAULT_INITIAL, jitter: Jitter = "none"
    ) -> None:
        self.seconds = _validate.seconds("delay", delay)
        self.jitter = _check_jitter(jitter)

    def __repr__(self) -> str:
        return f"stalwart.constant({self.seconds!r}, jitter={self.jitter!r})"

    def delay(self, attempt: int, rng: Callable[[], float] = _random) -> float:  # noqa: ARG002
        """Return the wait (the same after every attempt, up to jitter)."""
        return _jittered(self.seconds, self.jitter, rng)


# Polly's "decorrelated jitter V2": an exponential curve sampled at a random point in
# each attempt's interval; the delay is the difference between consecutive samples.
_P_FACTOR = 4.0
_RP_SCALING = 1 / 1.4
_MAX_T = 60.0  # 2**60 base delays is past any cap; avoid overflow


def _curve(t: float) -> float:
    return math.pow(2.0, t) * math.tanh(math.sqrt(_P_FACTOR * t))


class Decorrelated(Backoff):
    """Decorrelated jitter, the "V2" form Polly uses, bounded to ``[base, max]``.

    Each delay is `base` plus the growth of ``2**t * tanh(sqrt(4t))`` between two
    random points ``t`` one attempt apart, scaled so the first retry waits about
    `base` beyond the floor. Delays grow exponentially on average yet stay random at
    every attempt; unlike the older ``min(max, uniform(base, 3 * previous))`` form,
    which sits exactly on the cap two times in three once it gets there, delays that
    reach the cap are spread over ``[max(base, max / 2), max]``.
    """

    __module__ = "stalwart"
    __slots__ = ("base", "max")

    _STATE_ATTR = "_stalwart_decorrelated_prev"

    def __init__(
        self,
        base: float | timedelta = DEFAULT_INITIAL,
        max: float | timedelta = DEFAULT_MAX,  # noqa: A002 - the public name
    ) -> None:
        # Every delay is a multiple of base: zero would wait 0.0 after every attempt.
        self.base = _validate.seconds("base", base, positive=True)
        self.max = _check_cap(self.base, max, "base")

    def __repr__(self) -> str:
        return f"stalwart.decorrelated(base={self.base!r}, max={self.max!r})"

    def step(
        self, attempt: int, previous: float, rng: Callable[[], float] = _random
    ) -> tuple[float, float]:
        """Return ``(delay, state)`` for attempt `attempt` given the previous state.

        The state starts at ``0.0``; pass each returned state to the next call.
        """
        if attempt - 1 >= _MAX_T:  # also before `t`: a huge attempt is past any float
            return self._at_cap(rng), math.inf
        t = attempt - 1 + rng()
        if t >= _MAX_T:
            return self._at_cap(rng), math.inf
        sample = _curve(t)
        value = self.base + max(sample - previous, 0.0) * _RP_SCALING * self.base
        if value > self.max:
            return self._at_cap(rng), sample
        return value, sample

    def _at_cap(self, rng: Callable[[], float]) -> float:
        low = max(self.base, self.max / 2)
        return low + (self.max - low) * rng()

    def delay(self, attempt: int, rng: Callable[[], float] = _random) -> float:
        """Return a wait for `attempt` as if the previous sample was the curve's mean."""
        previous = _curve(min(attempt, _MAX_T + 2) - 1.5) if attempt > 1 else 0.0
        return self.step(attempt, previous, rng)[0]

    def delays(self, rng: Callable[[], float] = _random) -> Iterator[float]:
        """Yield one decorrelated sequence of waits, without end."""
        attempt, previous = 1, 0.0
        while True:
            value, previous = self.step(attempt, previous, rng)
            yield value
            attempt += 1

    def __call__(self, retry_state: RetryCallState) -> float:
        """Return the next wait, keeping the sequence's state on `retry_state`."""
        previous: float = getattr(retry_state, self._STATE_ATTR, 0.0)
        value, state = self.step(retry_state.attempt_number, previous)
        setattr(retry_state, self._STATE_ATTR, state)
        return value


def exponential(
    initial: float | timedelta = DEFAULT_INITIAL,
    multiplier: float = DEFAULT_MULTIPLIER,
    max: float | timedelta = DEFAULT_MAX,  # noqa: A002 - the public name
    jitter: Jitter = "full",
) -> Exponential:
    """Exponential backoff: ``initial * multiplier ** (attempt - 1)``, capped, jittered.

    Args:
        initial: The wait after the first failure before jitter, in seconds.
        multiplier: Growth per attempt (>= 1).
        max: The cap on the wait before jitter (>= `initial`).
        jitter: ``"full"`` (default), ``"equal"`` or ``"none"``.

    Raises:
        ValueError: A negative or NaN delay, `initial` zero (every wait would be
            zero: use `constant` ``(0)``), ``max < initial``, ``multiplier < 1``, or
            an unknown jitter name.
        TypeError: A delay that is not a number or a `timedelta`, or a jitter that is
            not a string.

    .. versionadded:: 0.1.0
    """
    return Exponential(initial, multiplier, max, jitter)


def linear(
    initial: float | timedelta = DEFAULT_INITIAL,
    step: float | timedelta = DEFAULT_INITIAL,
    max: float | timedelta = DEFAULT_MAX,  # noqa: A002 - the public name
    jitter: Jitter = "full",
) -> Linear:
    """Linear backoff: ``initial + step * (attempt - 1)``, capped at `max`, jittered.

    .. versionadded:: 0.1.0
    """
    return Linear(initial, step, max, jitter)


def constant(delay: float | timedelta = DEFAULT_INITIAL, jitter: Jitter = "none") -> Constant:
    """The same wait before every attempt (no jitter unless asked).

    .. versionadded:: 0.1.0
    """
    return Constant(delay, jitter)


def decorrelated(
    base: float | timedelta = DEFAULT_INITIAL,
    max: float | timedelta = DEFAULT_MAX,  # noqa: A002 - the public name
) -> Decorrelated:
    """Decorrelated jitter (Polly's V2 form) between `base` and `max`.

    Args:
        base: The shortest wait and the scale of the growth, in seconds (> 0).
        max: The longest wait (>= `base`).

    Raises:
        ValueError: `base` zero, negative or NaN, or ``max < base``.

    .. versionadded:: 0.1.0
    """
    return Decorrelated(base, max)
