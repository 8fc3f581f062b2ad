"""The circuit breaker's state machine: pure logic over times it is given.

No clock, no lock, no I/O: every method takes ``now`` (seconds on some monotonic
scale) and the caller serialises access. `MemoryStorage` wraps one machine in a lock;
the Redis storage runs the same rules in a Lua script, and a differential test keeps
the two equal.

Generations: every state change starts a new generation. An admitted call carries the
generation it was admitted in; its outcome is counted in the totals whatever happens,
but drives the windows and transitions only while that generation is current. So a
slow call admitted while closed cannot, by failing late, reopen a breaker that has
since opened, half-opened and closed again. The generation also numbers the states in
order: a `Transition` carries the one it starts, so whoever hears of transitions late,
or out of order, can tell which is the latest.

Probe slots: while half-open, each admitted probe holds a slot until its outcome or
release, for at most `BreakerConfig.recovery_timeout` after its admission. A slot
older than that has expired: the next admission frees it, so a probe whose process
died, or whose outcome was lost, cannot keep the breaker half-open for ever. A late
outcome of such a probe, while its half-open generation lasts, is a probe's outcome
like any other (it frees the oldest slot still held, if any); once the generation has
ended, it is counted only.
"""

from __future__ import annotations

import enum
import math
from bisect import insort
from typing import Any

from .. import _validate
from .._record import Record
from .window import MIN_WINDOW, CountWindow, TimeWindow

__all__ = [
    "DEFAULT_FAILURE_THRESHOLD",
    "DEFAULT_HALF_OPEN_MAX_CALLS",
    "DEFAULT_MINIMUM_CALLS",
    "DEFAULT_RECOVERY_TIMEOUT",
    "DEFAULT_SUCCESS_THRESHOLD",
    "DEFAULT_WINDOW",
    "DEFAULT_WINDOW_CALLS",
    "REJECTED",
    "BreakerConfig",
    "Machine",
    "State",
    "Transition",
]

DEFAULT_FAILURE_THRESHOLD = 5
DEFAULT_WINDOW = 60.0
DEFAULT_RECOVERY_TIMEOUT = 60.0
DEFAULT_HALF_OPEN_MAX_CALLS = 1
DEFAULT_SUCCESS_THRESHOLD = 1
DEFAULT_MINIMUM_CALLS = 10
"""Calls before rates are judged, when `minimum_calls` is not given (capped at the
count window's size)."""
DEFAULT_WINDOW_CALLS = 100
"""The count window rates use when neither `window_calls` nor a time window is set."""

REJECTED = -1
"""What `Machine.admit` returns for a call it does not let through."""


class State(str, enum.Enum):
    """A breaker's state. The last two are set only by an operator.

    .. versionadded:: 0.1.0
    """

    CLOSED = "closed"
    """Calls flow; failures are counted."""
    OPEN = "open"
    """Calls are rejected until the recovery timeout has passed."""
    HALF_OPEN = "half_open"
    """A few probe calls test whether the dependency has recovered."""
    FORCED_OPEN = "forced_open"
    """Held open by an operator: every call is rejected until `reset()`."""
    DISABLED = "disabled"
    """Switched off by an operator: every call flows, nothing trips it."""

    __str__ = str.__str__  # "closed", not "State.CLOSED"


# Plain module names for the members: reading `State.X` costs an enum lookup each time.
_CLOSED, _OPEN, _HALF_OPEN = State.CLOSED, State.OPEN, State.HALF_OPEN
_FORCED_OPEN, _DISABLED = State.FORCED_OPEN, State.DISABLED


def _count(name: str, value: object, *, optional: bool = False) -> int | None:
    return None if value is None and optional else _validate.count(name, value)


def _seconds(
    name: str, value: Any, *, optional: bool = False, minimum: float = 0.0
) -> float | None:
    if value is None and optional:
        return None
    return _validate.seconds(name, value, positive=True, minimum=minimum)


def _rate(name: str, value: object) -> float | None:
    return None if value is None else _validate.fraction(name, value)


class BreakerConfig(Record):
    """What makes a breaker trip and recover; validated on construction.

    See `stalwart.CircuitBreaker` for the meaning of each field. Frozen, as a
    dataclass: ``_replace`` makes a changed (and validated) copy, `as_dict` the
    fields as a dict.

    .. versionadded:: 0.1.0
    .. versionchanged:: Unreleased
       No longer a `dataclasses` dataclass: use `as_dict`, ``_replace`` and
       ``__slots__`` (the field names) rather than `dataclasses.asdict`, ``replace``
       and ``fields``.
    """

    __slots__ = (  # noqa: RUF023 - fields in order
        "failure_threshold",
        "window",
        "failure_rate",
        "minimum_calls",
        "window_calls",
        "slow_call_duration",
        "slow_call_rate",
        "recovery_timeout",
        "half_open_max_calls",
        "success_threshold",
    )
    failure_threshold: int | None
    window: float | None
    failure_rate: float | None
    minimum_calls: int | None
    """``None`` (not given): `DEFAULT_MINIMUM_CALLS`, capped at the count window's size.
    Always an ``int`` once the config is made."""
    window_calls: int | None
    slow_call_duration: float | None
    slow_call_rate: float | None
    recovery_timeout: float
    half_open_max_calls: int
    success_threshold: int

    def __init__(  # noqa: PLR0917 - positional, as the fields of a dataclass are
        self,
        failure_threshold: int | None = DEFAULT_FAILURE_THRESHOLD,
        window: float | None = DEFAULT_WINDOW,
        failure_rate: float | None = None,
        minimum_calls: int | None = None,
        window_calls: int | None = None,
        slow_call_duration: float | None = None,
        slow_call_rate: float | None = None,
        recovery_timeout: float = DEFAULT_RECOVERY_TIMEOUT,
        half_open_max_calls: int = DEFAULT_HALF_OPEN_MAX_CALLS,
        success_threshold: int = DEFAULT_SUCCESS_THRESHOLD,
    ) -> None:
        self._set(
            failure_threshold,
            window,
            failure_rate,
            minimum_calls,
            window_calls,
            slow_call_duration,
            slow_call_rate,
            recovery_timeout,
            half_open_max_calls,
            success_threshold,
        )
        self._validate()

    def _validate(self) -> None:
        """Check the fields as given and set them normalised (as ``__init__`` only)."""
        set_ = object.__setattr__
        set_(
            self,
            "failure_threshold",
            _count("failure_threshold", self.failure_threshold, optional=True),
        )
        set_(self, "window", _seconds("window", self.window, optional=True, minimum=MIN_WINDOW))
        set_(self, "failure_rate", _rate("failure_rate", self.failure_rate))
        set_(self, "minimum_calls", _count("minimum_calls", self.minimum_calls, optional=True))
        set_(self, "window_calls", _count("window_calls", self.window_calls, optional=True))
        set_(
            self,
            "slow_call_duration",
            _seconds("slow_call_duration", self.slow_call_duration, optional=True),
        )
        set_(self, "slow_call_rate", _rate("slow_call_rate", self.slow_call_rate))
        set_(self, "recovery_timeout", _seconds("recovery_timeout", self.recovery_timeout))
        _count("half_open_max_calls", self.half_open_max_calls)
        _count("success_threshold", self.success_threshold)
        if (self.slow_call_rate is None) != (self.slow_call_duration is None):
            raise ValueError(
                "slow_call_duration and slow_call_rate go together, got"
                f" slow_call_duration={self.slow_call_duration!r},"
                f" slow_call_rate={self.slow_call_rate!r}"
            )
        if (
            self.failure_threshold is None
            and self.failure_rate is None
            and self.slow_call_rate is None
        ):
            raise ValueError(
                "a breaker needs a way to trip: failure_threshold, failure_rate or"
                " slow_call_rate; got failure_threshold=None and no rates"
            )
        if self.window_calls is not None and not self.uses_rates:
            raise ValueError(
                "window_calls sizes the window rates are measured over, but no rate is"
                f" configured: got window_calls={self.window_calls!r} with"
                " failure_rate=None and slow_call_rate=None"
            )
        set_(self, "minimum_calls", self._minimum_calls())

    def _minimum_calls(self) -> int:
        """`minimum_calls` as given, or its default; checked against the count window.

        As in Resilience4j, the default is capped at the count window's size, and a
        larger value given outright is an error: the breaker could never judge a rate.
        """
        size = self.rate_window_calls
        if self.minimum_calls is None:
            return DEFAULT_MINIMUM_CALLS if size is None else min(DEFAULT_MINIMUM_CALLS, size)
        if size is not None and self.minimum_calls > size:
            given = (
                f"window_calls={size!r}"
                if self.window_calls is not None
                else f"window=None (a count window of {size} calls)"
            )
            raise ValueError(
                "minimum_calls must be at most window_calls, or rates are never judged:"
                f" got minimum_calls={self.minimum_calls!r} and {given}"
            )
        return self.minimum_calls

    @property
    def uses_rates(self) -> bool:
        """Whether a failure or slow-call rate can trip the breaker."""
        return self.failure_rate is not None or self.slow_call_rate is not None

    @property
    def rate_window_calls(self) -> int | None:
        """The count window that rates are measured over, if any."""
        if not self.uses_rates:
            return None
        if self.window_calls is not None:
            return self.window_calls
        return None if self.window is not None else DEFAULT_WINDOW_CALLS

    def as_dict(self) -> dict[str, Any]:
        """The configuration as a JSON-ready dict."""
        return self._asdict()


class Transition(Record):
    """One state change, reported by the machine for listeners and logs."""

    __slots__ = ("old", "new", "reason", "at", "generation")  # noqa: RUF023 - fields in order
    old: State
    new: State
    reason: str
    at: float
    generation: int
    """The generation the move starts: it numbers the breaker's states in order."""

    def __init__(self, old: State, new: State, reason: str, at: float, generation: int) -> None:
        self._set(old, new, reason, at, generation)


class Machine:
    """One breaker's state: what it admits, what it counts, when it changes state.

    Not thread-safe; its owner holds a lock around every call.
    """

    __slots__ = (
        "_count_window",
        "_time_window",
        "config",
        "consecutive_failures",
        "failures",
        "fast_generation",
        "generation",
        "half_open_successes",
        "last_failure_at",
        "last_failure_type",
        "open_until",
        "opened_at",
        "probe_deadlines",
        "rejected",
        "simple_generation",
        "slow_calls",
        "state",
        "success_needs_time",
        "successes",
    )

    def __init__(self, config: BreakerConfig) -> None:
        self.config = config
        self.success_needs_time = config.uses_rates or config.slow_call_duration is not None
        """Whether a success must be recorded with its time and duration (else
        `record_success` will do)."""
        self.state = _CLOSED
        self.generation = 0
        self.fast_generation = 0
        """The generation while calls are admitted without a decision, else REJECTED."""
        self.simple_generation = -2 if self.success_needs_time else 0
        """The generation while a success only needs counting (`record_success`)."""
        self.consecutive_failures = 0
        self.probe_deadlines: list[float] = []
        """While half-open: until when each probe in flight holds its slot, oldest first
        (at most `half_open_max_calls` of them)."""
        self.half_open_successes = 0
        self.opened_at: float | None = None
        # Until when calls are rejected without a decision: while open, the end of the
        # recovery timeout; forced open, forever; otherwise never (-inf).
        self.open_until = -math.inf
        self.successes = self.failures = self.rejected = self.slow_calls = 0
        self.last_failure_at: float | None = None
        self.last_failure_type: str | None = None
        self._time_window = TimeWindow(config.window) if config.window is not None else None
        size = config.rate_window_calls
        self._count_window = CountWindow(size) if size is not None else None

    @property
    def half_open_in_flight(self) -> int:
        """Probe slots held (half-open only)."""
        return len(self.probe_deadlines)

    # -- state changes --------------------------------------------------------------

    def _move(self, new: State, now: float, reason: str) -> Transition:
        old = self.state
        self.state = new
        self.generation += 1
        self.probe_deadlines.clear()
        self.half_open_successes = 0
        self.open_until = -math.inf
        if new is _OPEN:
            self.opened_at = now
            self.open_until = now + self.config.recovery_timeout
        elif new is _FORCED_OPEN:
            self.open_until = math.inf
        elif new in {_CLOSED, _DISABLED}:
            self.opened_at = None
            self.consecutive_failures = 0
            self._clear_windows()
        self.fast_generation = self.generation if new in {_CLOSED, _DISABLED} else REJECTED
        self.simple_generation = (
            self.generation if new is _CLOSED and not self.success_needs_time else -2
        )
        return Transition(old, new, reason, now, self.generation)

    def _clear_windows(self) -> None:
        if self._time_window is not None:
            self._time_window.reset()
        if self._count_window is not None:
            self._count_window.reset()

    def reset(self, now: float) -> Transition:
        """Close the breaker and forget the windows (the totals stay)."""
        return self._move(_CLOSED, now, "reset")

    def force_open(self, now: float) -> Transition:
        """Hold the breaker open until `reset`."""
        return self._move(_FORCED_OPEN, now, "forced open")

    def disable(self, now: float) -> Transition:
        """Let every call through and never trip, until `reset`."""
        return self._move(_DISABLED, now, "disabled")

    # -- admission ------------------------------------------------------------------

    def admit(self, now: float) -> tuple[int, Transition | None]:
        """Decide whether a call may go ahead.

        Returns:
            ``(generation, transition)``: the generation to report the outcome with, or
            `REJECTED`; and the transition this decision caused (open to half-open), if
            any.
        """
        generation, _, transition = self.admission(now)
        return generation, transition

    def admission(self, now: float) -> tuple[int, float | None, Transition | None]:
        """`admit`, with the `retry_after` of a rejection (``None`` when admitted).

        One call for what a storage needs to answer a caller, so that rejecting a call
        while open, the breaker's busiest path during an outage, stays short.
        """
        state = self.state
        if state is _CLOSED or state is _DISABLED:
            return self.generation, None, None
        transition = None
        if state is _OPEN:
            opened = self.opened_at if self.opened_at is not None else now
            wait = opened + self.config.recovery_timeout - now  # as retry_after reckons
            if wait > 0:
                self.rejected += 1
                return REJECTED, wait, None
            transition = self._move(_HALF_OPEN, now, "recovery timeout elapsed")
            state = _HALF_OPEN
        if state is _HALF_OPEN:
            probes = self.probe_deadlines
            while probes and probes[0] <= now:
                del probes[0]  # outlived its slot: its process died, or its outcome was lost
            if len(probes) < self.config.half_open_max_calls:
                insort(probes, now + self.config.recovery_timeout)
                return self.generation, None, transition
        self.rejected += 1
        return REJECTED, self.retry_after(now), transition

    def retry_after(self, now: float) -> float | None:
        """Seconds until a rejected caller may be let through, or None (forced open)."""
        if self.state is _OPEN and self.opened_at is not None:
            return max(self.opened_at + self.config.recovery_timeout - now, 0.0)
        if self.state is _FORCED_OPEN:
            return None
        return 0.0

    # -- outcomes -------------------------------------------------------------------

    def release(self, generation: int) -> None:
        """Forget an admitted call that ended without an outcome (cancelled)."""
        if generation == self.generation and self.state is _HALF_OPEN and self.probe_deadlines:
            del self.probe_deadlines[0]

    def record_success(self, generation: int) -> bool:
        """Count a success that needs no time, if it drives nothing; return whether it did.

        True when the call was admitted in the current closed generation and no rate
        is configured: then a success only resets the run of consecutive failures.
        Otherwise nothing is counted and the caller must use `record` with the time.
        """
        if generation != self.simple_generation:
            return False
        self.successes += 1
        self.consecutive_failures = 0
        return True

    def record(
        self,
        generation: int,
        failed: bool,
        now: float,
        duration: float | None = None,
        failure_type: str | None = None,
    ) -> Transition | None:
        """Count one admitted call's outcome and make the transition it calls for."""
        limit = self.config.slow_call_duration
        slow = limit is not None and duration is not None and duration >= limit
        if failed:
            self.failures += 1
            self.last_failure_at = now
            self.last_failure_type = failure_type
        else:
            self.successes += 1
        if slow:
            self.slow_calls += 1
        if generation != self.generation:
            return None  # admitted before the last state change: counted, not acted on
        state = self.state
        if state is _CLOSED:
            return self._record_closed(failed, slow, now)
        if state is _HALF_OPEN:
            if self.probe_deadlines:
                del self.probe_deadlines[0]  # the oldest: a probe's slot never ends early
            if failed or (slow and self.config.slow_call_rate is not None):
                return self._move(_OPEN, now, "probe failed")
            self.half_open_successes += 1
            if self.half_open_successes >= self.config.success_threshold:
                return self._move(_CLOSED, now, "probes succeeded")
        return None

    def _record_closed(self, failed: bool, slow: bool, now: float) -> Transition | None:
        config = self.config
        time_window, count_window = self._time_window, self._count_window
        if time_window is not None:
            time_window.record(now, failed, slow)
        if count_window is not None:
            count_window.record(failed, slow)
        if not failed:
            self.consecutive_failures = 0
        else:
            self.consecutive_failures += 1
        threshold = config.failure_threshold
        if failed and threshold is not None:
            if time_window is None:
                if self.consecutive_failures >= threshold:
                    return self._move(_OPEN, now, f"{threshold} consecutive failures")
            elif time_window.counts(now)[1] >= threshold:
                return self._move(
                    _OPEN, now, f"{threshold} failures within {time_window.seconds:g}s"
                )
        if config.uses_rates:
            return self._check_rates(now)
        return None

    def rate_counts(self, now: float) -> tuple[int, int, int]:
        """``(calls, failures, slow)`` over the window that rates are measured on."""
        if self._count_window is not None:
            w = self._count_window
            return w.calls, w.failures, w.slow
        if self._time_window is not None:
            return self._time_window.counts(now)
        return 0, 0, 0  # pragma: no cover - a rate always has a window

    def window_counts(self, now: float) -> tuple[int | None, int, int]:
        """``(calls, failures, slow)`` in the breaker's main window, for stats.

        `calls` is ``None`` when successes are not windowed (no rate is configured,
        so a success costs no clock read): only failures are counted then.
        """
        if self._time_window is not None:
            calls, failures, slow = self._time_window.counts(now)
        elif self._count_window is not None:
            w = self._count_window
            calls, failures, slow = w.calls, w.failures, w.slow
        else:
            return None, self.consecutive_failures, 0
        return (calls if self.success_needs_time else None), failures, slow

    def _check_rates(self, now: float) -> Transition | None:
        config = self.config
        calls, failures, slow = self.rate_counts(now)
        # `or`: for the type checker only, as __init__ always sets an int.
        if calls < (config.minimum_calls or DEFAULT_MINIMUM_CALLS):
            return None
        if config.failure_rate is not None and failures / calls >= config.failure_rate:
            return self._move(
                _OPEN, now, f"failure rate {failures / calls:.0%} over {calls} calls"
            )
        if config.slow_call_rate is not None and slow / calls >= config.slow_call_rate:
            return self._move(_OPEN, now, f"slow call rate {slow / calls:.0%} over {calls} calls")
        return None
