"""The breaker's state machine: a stateful test against a reference model, transitions,
reasons, retry_after, generations and configuration validation."""

from __future__ import annotations

import contextlib
import json
import math
import threading
from collections import deque
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
)

from stalwart import CircuitBreaker, StateChange
from stalwart.breaker.machine import (
    DEFAULT_MINIMUM_CALLS,
    DEFAULT_WINDOW_CALLS,
    REJECTED,
    BreakerConfig,
    Machine,
    State,
    Transition,
)
from stalwart.breaker.storage import MemoryState
from stalwart.breaker.window import DEFAULT_BUCKETS, MIN_WINDOW
from strategies import TICK, breaker_configs, breaker_start_times

CLOSED, OPEN, HALF_OPEN = State.CLOSED, State.OPEN, State.HALF_OPEN
FORCED_OPEN, DISABLED = State.FORCED_OPEN, State.DISABLED

# --- the reference model ---------------------------------------------------------------


class Model:
    """The documented breaker semantics, written plainly (lists, no buckets, no tricks)."""

    def __init__(self, config: BreakerConfig) -> None:
        self.c = config
        self.rates = config.failure_rate is not None or config.slow_call_rate is not None
        # Rates use the count window when window_calls is given or there is no time window.
        self.count_size: int | None = None
        if self.rates and (config.window_calls is not None or config.window is None):
            self.count_size = config.window_calls or DEFAULT_WINDOW_CALLS
        self.width = None if config.window is None else config.window / DEFAULT_BUCKETS
        self.state = CLOSED
        self.generation = 0
        self.consecutive = 0
        self.timed: list[tuple[float, bool, bool]] = []  # (time, failed, slow)
        self.last: deque[tuple[bool, bool]] = deque(maxlen=self.count_size or 1)
        self.probes: list[float] = []  # admission times of the probes holding a slot
        self.probe_successes = 0
        self.opened_at: float | None = None
        self.successes = self.failures = self.rejected = self.slow_calls = 0

    # windows

    def in_time_window(self, t: float, now: float) -> bool:
        assert self.width is not None
        return math.floor(now / self.width) - math.floor(t / self.width) < DEFAULT_BUCKETS

    def time_counts(self, now: float) -> tuple[int, int, int]:
        kept = [(f, s) for t, f, s in self.timed if self.in_time_window(t, now)]
        return len(kept), sum(f for f, _ in kept), sum(s for _, s in kept)

    def count_counts(self) -> tuple[int, int, int]:
        return len(self.last), sum(f for f, _ in self.last), sum(s for _, s in self.last)

    def rate_counts(self, now: float) -> tuple[int, int, int]:
        return self.count_counts() if self.count_size else self.time_counts(now)

    def window_counts(self, now: float) -> tuple[int | None, int, int]:
        if self.width is not None:
            calls, failures, slow = self.time_counts(now)
        elif self.count_size:
            calls, failures, slow = self.count_counts()
        else:
            return None, self.consecutive, 0
        return (calls if self.rates else None), failures, slow

    # transitions

    def move(self, new: State, now: float, reason: str) -> tuple[State, State, str]:
        old, self.state = self.state, new
        self.generation += 1
        self.probes.clear()
        self.probe_successes = 0
        if new is OPEN:
            self.opened_at = now
        if new in (CLOSED, DISABLED):
            self.opened_at = None
            self.consecutive = 0
            self.timed.clear()
            self.last.clear()
        return old, new, reason

    def admit(self, now: float) -> tuple[int, tuple[State, State, str] | None]:
        moved = None
        if self.state in (CLOSED, DISABLED):
            return self.generation, None
        if self.state is OPEN:
            assert self.opened_at is not None
            if now < self.opened_at + self.c.recovery_timeout:
                self.rejected += 1
                return REJECTED, None
            moved = self.move(HALF_OPEN, now, "recovery timeout elapsed")
        if self.state is HALF_OPEN:
            # A slot lasts recovery_timeout from its probe's admission.
            self.probes = [t for t in self.probes if now < t + self.c.recovery_timeout]
            if len(self.probes) < self.c.half_open_max_calls:
                self.probes.append(now)
                return self.generation, moved
        self.rejected += 1
        return REJECTED, moved

    def retry_after(self, now: float) -> float | None:
        if self.state is FORCED_OPEN:
            return None
        if self.state is OPEN:
            assert self.opened_at is not None
            return max(0.0, self.opened_at + self.c.recovery_timeout - now)
        return 0.0

    def release(self, generation: int) -> None:
        if generation == self.generation and self.state is HALF_OPEN and self.probes:
            self.probes.pop(0)

    def record(
        self, generation: int, failed: bool, now: float, duration: float | None
    ) -> tuple[State, State, str] | None:
        c = self.c
        limit = c.slow_call_duration
        slow = limit is not None and duration is not None and duration >= limit
        self.failures += failed
        self.successes += not failed
        self.slow_calls += slow
        if generation != self.generation:
            return None  # stale: counted, never acted on
        if self.state is HALF_OPEN:
            return self.record_probe(failed or slow, now)
        if self.state is CLOSED:
            return self.record_closed(failed, slow, now)
        return None  # disabled: nothing trips it

    def record_probe(self, failed: bool, now: float) -> tuple[State, State, str] | None:
        if self.probes:
            self.probes.pop(0)  # the oldest slot
        if failed:
            return self.move(OPEN, now, "probe failed")
        self.probe_successes += 1
        if self.probe_successes >= self.c.success_threshold:
            return self.move(CLOSED, now, "probes succeeded")
        return None

    def record_closed(
        self, failed: bool, slow: bool, now: float
    ) -> tuple[State, State, str] | None:
        c = self.c
        if self.width is not None:
            self.timed.append((now, failed, slow))
        if self.count_size:
            self.last.append((failed, slow))
        self.consecutive = self.consecutive + 1 if failed else 0
        if failed and c.failure_threshold is not None:
            if self.width is None and self.consecutive >= c.failure_threshold:
                return self.move(OPEN, now, f"{c.failure_threshold} consecutive failures")
            if self.width is not None and self.time_counts(now)[1] >= c.failure_threshold:
                reason = f"{c.failure_threshold} failures within {c.window:g}s"
                return self.move(OPEN, now, reason)
        # Rates are judged after every recorded call, as Resilience4j does.
        if self.rates:
            return self.judge_rates(now)
        return None

    def judge_rates(self, now: float) -> tuple[State, State, str] | None:
        c = self.c
        calls, failures, slow_calls = self.rate_counts(now)
        if calls < c.minimum_calls:
            return None
        if c.failure_rate is not None and failures / calls >= c.failure_rate:
            reason = f"failure rate {failures / calls:.0%} over {calls} calls"
            return self.move(OPEN, now, reason)
        if c.slow_call_rate is not None and slow_calls / calls >= c.slow_call_rate:
            reason = f"slow call rate {slow_calls / calls:.0%} over {calls} calls"
            return self.move(OPEN, now, reason)
        return None


def as_tuple(
    transition: Transition | None, now: float, generation_after: int
) -> tuple[State, State, str] | None:
    """A machine's transition in the model's form, checking its time and generation."""
    if transition is None:
        return None
    assert transition.at == now
    assert transition.generation == generation_after
    return transition.old, transition.new, transition.reason


# --- the stateful test -------------------------------------------------------------------

durations = st.sampled_from([None, 0.0, 0.25 - TICK, 0.25, 1.0 - TICK, 1.0, 5.0])


class BreakerMachine(RuleBasedStateMachine):
    """Drives a Machine and the Model with the same events and compares them."""

    calls = Bundle("calls")

    def __init__(self) -> None:
        super().__init__()
        self.machine: Machine
        self.model: Model
        self.now = 0.0

    @initialize(config=breaker_configs(), start=breaker_start_times)
    def start(self, config: dict[str, Any], start: float) -> None:
        self.config = BreakerConfig(**config)
        self.machine = Machine(self.config)
        self.model = Model(self.config)
        self.now = start

    # events

    def _admit(self) -> int:
        m = self.machine
        generation, transition = m.admit(self.now)
        expected, moved = self.model.admit(self.now)
        assert (generation, as_tuple(transition, self.now, m.generation)) == (expected, moved)
        if generation == REJECTED and m.state is OPEN:
            retry_after = m.retry_after(self.now)
            assert retry_after is not None
            assert retry_after > 0  # rejected while open: a wait is owed
        return generation

    @rule(target=calls)
    def admit(self) -> Any:
        generation = self._admit()
        return multiple() if generation == REJECTED else generation

    def _outcome(
        self, generation: int, failed: bool, duration: float | None, simple: bool
    ) -> None:
        m = self.machine
        before = (m.state, m.generation)
        stale = generation != m.generation
        if not failed and simple and m.record_success(generation):
            transition = None  # counted without a time: only resets the failure run
        else:
            transition = m.record(generation, failed, self.now, duration, "Boom")
        expected = self.model.record(generation, failed, self.now, duration)
        assert as_tuple(transition, self.now, m.generation) == expected
        if stale:
            assert transition is None
            assert (m.state, m.generation) == before
        if failed:
            assert (m.last_failure_at, m.last_failure_type) == (self.now, "Boom")
        self.check_windows()

    @rule(call=consumes(calls), duration=durations, simple=st.booleans())
    def succeed(self, call: int, duration: float | None, simple: bool) -> None:
        self._outcome(call, False, duration, simple and duration is None)

    @rule(call=consumes(calls), duration=durations)
    def fail(self, call: int, duration: float | None) -> None:
        self._outcome(call, True, duration, False)

    @rule(call=consumes(calls))
    def release(self, call: int) -> None:
        self.machine.release(call)
        self.model.release(call)
        self.check_windows()

    @rule(
        kind=st.sampled_from(
            ["zero", "tick", "width", "window", "recovery", "almost", "random", "jump"]
        ),
        ticks=st.integers(0, 64 * 40),
    )
    def advance(self, kind: str, ticks: int) -> None:
        c = self.config
        width = c.window / DEFAULT_BUCKETS if c.window else 4 * TICK
        self.now += {
            "zero": 0.0,
            "tick": TICK,
            "width": width,
            "window": c.window or width,
            "recovery": c.recovery_timeout,
            "almost": c.recovery_timeout - TICK,
            "random": ticks * TICK,
            "jump": 1_000_000.0,
        }[kind]
        # Windows are not read here, so the next record moves them on by itself.

    @rule(
        call=st.sampled_from(["fail", "succeed", "slow"]),
        duration=durations,
        simple=st.booleans(),
    )
    def call(self, call: str, duration: float | None, simple: bool) -> None:
        generation = self._admit()
        if generation == REJECTED:
            return
        if call == "slow":
            self._outcome(generation, False, 5.0, False)
        else:
            self._outcome(generation, call == "fail", duration, simple and duration is None)

    @rule(which=st.sampled_from(["reset", "force_open", "disable"]), roll=st.integers(0, 9))
    def operator(self, which: str, roll: int) -> None:
        # Operators act rarely, or the machine would seldom trip on its own; a reset
        # comes more often out of the operator states.
        held = self.machine.state in (FORCED_OPEN, DISABLED)
        if roll > (4 if held and which == "reset" else 0):
            return
        transition = getattr(self.machine, which)(self.now)
        reason = {"reset": "reset", "force_open": "forced open", "disable": "disabled"}
        new = {"reset": CLOSED, "force_open": FORCED_OPEN, "disable": DISABLED}
        expected = self.model.move(new[which], self.now, reason[which])
        assert as_tuple(transition, self.now, self.machine.generation) == expected
        self.check_windows()

    # checks

    def check_windows(self) -> None:
        m, model = self.machine, self.model
        assert m.window_counts(self.now) == model.window_counts(self.now)
        if model.rates:
            assert m.rate_counts(self.now) == model.rate_counts(self.now)

    @invariant()
    def agrees_with_the_model(self) -> None:
        m, model = self.machine, self.model
        assert m.state is model.state
        assert m.generation == model.generation
        assert (m.successes, m.failures, m.rejected, m.slow_calls) == (
            model.successes,
            model.failures,
            model.rejected,
            model.slow_calls,
        )
        assert m.consecutive_failures == model.consecutive
        assert m.half_open_in_flight == len(model.probes)
        assert m.probe_deadlines == [t + self.config.recovery_timeout for t in model.probes]
        assert m.half_open_successes == model.probe_successes
        assert m.opened_at == model.opened_at
        assert m.retry_after(self.now) == model.retry_after(self.now)

    @invariant()
    def invariants_hold(self) -> None:
        m = self.machine
        counts = (m.successes, m.failures, m.rejected, m.slow_calls, m.consecutive_failures)
        assert min(counts) >= 0
        assert 0 <= m.half_open_in_flight <= self.config.half_open_max_calls
        assert 0 <= m.half_open_successes < self.config.success_threshold
        assert m.slow_calls <= m.successes + m.failures
        fast = m.state in (CLOSED, DISABLED)
        assert m.fast_generation == (m.generation if fast else REJECTED)
        simple = m.state is CLOSED and not m.success_needs_time
        assert m.simple_generation == (m.generation if simple else -2)
        if m.state is not HALF_OPEN:
            assert m.half_open_in_flight == 0


BreakerMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=50, deadline=None
)
TestBreakerMachine = BreakerMachine.TestCase
TestBreakerMachine.__doc__ = "The machine agrees with the reference model after every step."


# --- transitions and reasons ---------------------------------------------------------


def fail(m: Machine, now: float, duration: float | None = None) -> Transition | None:
    """Admit a call at `now` and record it as failed."""
    generation, _ = m.admit(now)
    assert generation != REJECTED
    return m.record(generation, True, now, duration, "Boom")


def succeed(m: Machine, now: float, duration: float | None = None) -> Transition | None:
    """Admit a call at `now` and record it as succeeded."""
    generation, _ = m.admit(now)
    assert generation != REJECTED
    return m.record(generation, False, now, duration)


def opened(**config: Any) -> Machine:
    """A machine opened at time 10 by consecutive failures."""
    m = Machine(BreakerConfig(failure_threshold=1, window=None, **config))
    assert fail(m, 10.0) is not None
    assert m.state is OPEN
    return m


def test_consecutive_failures_open() -> None:
    """Without a window, failure_threshold failures in a row open; a success in between resets."""
    m = Machine(BreakerConfig(failure_threshold=3, window=None))
    fail(m, 0.0)
    fail(m, 0.0)
    generation, _ = m.admit(0.0)
    assert m.record_success(generation)
    assert m.consecutive_failures == 0
    assert fail(m, 1.0) is None
    assert fail(m, 2.0) is None
    assert m.window_counts(2.0) == (None, 2, 0)
    assert fail(m, 3.0) == Transition(CLOSED, OPEN, "3 consecutive failures", 3.0, 1)
    assert (m.state, m.opened_at, m.generation, m.fast_generation) == (OPEN, 3.0, 1, REJECTED)


def test_failures_within_window_open() -> None:
    """failure_threshold failures inside the time window open, whatever succeeds between."""
    m = Machine(BreakerConfig(failure_threshold=3, window=60.0))
    fail(m, 100.0)
    succeed(m, 101.0)
    fail(m, 130.0)
    assert m.window_counts(130.0) == (None, 2, 0)  # successes are not windowed
    assert fail(m, 150.0) == Transition(CLOSED, OPEN, "3 failures within 60s", 150.0, 1)


def test_old_failures_leave_the_window() -> None:
    """Failures older than the window no longer count towards the threshold."""
    m = Machine(BreakerConfig(failure_threshold=2, window=60.0))
    fail(m, 100.0)
    assert fail(m, 160.0) is None  # the first left the window
    assert m.state is CLOSED


def test_failure_rate_opens_over_count_window() -> None:
    """The failure rate is judged over window_calls calls once minimum_calls were made."""
    config = BreakerConfig(
        failure_threshold=None, failure_rate=0.5, minimum_calls=4, window_calls=4
    )
    m = Machine(config)
    assert fail(m, 0.0) is None  # 1 call: below minimum_calls
    assert fail(m, 0.0) is None
    succeed(m, 0.0)
    assert m.rate_counts(0.0) == (3, 2, 0)
    assert fail(m, 1.0) == Transition(CLOSED, OPEN, "failure rate 75% over 4 calls", 1.0, 1)


def test_failure_rate_over_time_window() -> None:
    """Without window_calls, the failure rate is judged over the time window."""
    config = BreakerConfig(failure_threshold=None, window=10.0, failure_rate=1.0, minimum_calls=2)
    m = Machine(config)
    fail(m, 0.0)
    assert fail(m, 10.0) is None  # the first left the window
    assert m.rate_counts(10.0) == m.window_counts(10.0) == (1, 1, 0)
    assert fail(m, 11.0) == Transition(CLOSED, OPEN, "failure rate 100% over 2 calls", 11.0, 1)


def test_slow_call_rate_opens() -> None:
    """Calls at least slow_call_duration long count as slow and their rate opens."""
    config = BreakerConfig(
        failure_threshold=None,
        window=None,
        slow_call_duration=1.0,
        slow_call_rate=0.3,
        minimum_calls=2,
    )
    m = Machine(config)
    assert succeed(m, 0.0, duration=0.999) is None
    assert succeed(m, 0.0, duration=None) is None  # untimed: never slow
    assert succeed(m, 0.0, duration=1.0) == Transition(
        CLOSED, OPEN, "slow call rate 33% over 3 calls", 0.0, 1
    )
    assert (m.slow_calls, m.successes, m.failures) == (1, 3, 0)


def test_success_reaching_minimum_calls_judges_rates() -> None:
    """A plain success that brings the window to minimum_calls judges the rate and opens."""
    config = BreakerConfig(failure_threshold=None, failure_rate=0.5, minimum_calls=2)
    m = Machine(config)
    fail(m, 0.0)
    assert succeed(m, 0.0) is not None
    assert m.state is OPEN


def test_recovery_timeout_half_opens_on_admit() -> None:
    """Open rejects until recovery_timeout passed; the next admit half-opens and probes."""
    m = opened(recovery_timeout=30.0)
    assert m.admit(39.999) == (REJECTED, None)
    assert m.rejected == 1
    generation, transition = m.admit(40.0)
    assert transition == Transition(OPEN, HALF_OPEN, "recovery timeout elapsed", 40.0, 2)
    assert (generation, m.state, m.half_open_in_flight) == (2, HALF_OPEN, 1)
    assert m.opened_at == 10.0  # half-open keeps the time it opened


def test_half_open_limits_concurrent_probes() -> None:
    """Half-open admits half_open_max_calls probes at once; a release frees a permit."""
    m = opened(recovery_timeout=1.0, half_open_max_calls=2, success_threshold=3)
    first, _ = m.admit(20.0)
    second, _ = m.admit(20.0)
    assert m.admit(20.0) == (REJECTED, None)
    assert m.retry_after(20.0) == 0.0
    m.release(second)
    third, _ = m.admit(20.0)
    assert first == third != REJECTED
    assert m.half_open_in_flight == 2


def test_probe_slot_expires_recovery_timeout_after_its_admission() -> None:
    """A probe that never reports frees its slot recovery_timeout after its admission."""
    m = opened(recovery_timeout=5.0)  # opened at 10: probes from 15
    lost, _ = m.admit(15.0)  # its process dies: no outcome, no release
    assert m.admit(20.0 - TICK) == (REJECTED, None)
    assert m.half_open_in_flight == 1
    probe, transition = m.admit(20.0)  # the lost probe's slot has expired
    assert (probe, transition, m.state) == (lost, None, HALF_OPEN)
    assert m.half_open_in_flight == 1
    assert m.admit(20.0) == (REJECTED, None)  # one slot, taken again
    assert m.record(probe, False, 21.0) == Transition(
        HALF_OPEN, CLOSED, "probes succeeded", 21.0, 3
    )


def test_probe_slots_expire_oldest_first_and_stay_bounded() -> None:
    """Slots expire one by one, oldest first; an outcome frees the oldest; never more than
    half_open_max_calls slots are held."""
    m = opened(recovery_timeout=4.0, half_open_max_calls=2, success_threshold=3)
    first, _ = m.admit(14.0)
    second, _ = m.admit(16.0)
    assert m.probe_deadlines == [18.0, 20.0]
    assert m.admit(17.0) == (REJECTED, None)
    third, _ = m.admit(18.0)  # the first slot expired
    assert m.probe_deadlines == [20.0, 22.0]
    assert m.record(first, False, 18.5) is None  # a late outcome: a probe's success
    assert (m.probe_deadlines, m.half_open_successes) == ([22.0], 1)
    m.release(second)
    assert m.probe_deadlines == []
    m.release(third)  # nothing left to free
    assert m.half_open_in_flight == 0
    for at in (30.0, 30.0):
        assert m.admit(at)[0] == first
    assert m.admit(30.0) == (REJECTED, None)
    assert len(m.probe_deadlines) == 2


def test_probes_succeeding_close() -> None:
    """success_threshold probe successes close and clear the failure run and windows."""
    m = opened(recovery_timeout=1.0, half_open_max_calls=2, success_threshold=2)
    a, _ = m.admit(20.0)
    b, _ = m.admit(20.0)
    assert m.record(a, False, 21.0) is None
    assert m.half_open_successes == 1
    assert m.record(b, False, 22.0) == Transition(HALF_OPEN, CLOSED, "probes succeeded", 22.0, 3)
    assert (m.consecutive_failures, m.opened_at, m.fast_generation) == (0, None, m.generation)
    assert m.window_counts(22.0) == (None, 0, 0)


@pytest.mark.parametrize(("failed", "duration"), [(True, None), (False, 2.0)])
def test_probe_failing_or_slow_reopens(failed: bool, duration: float | None) -> None:
    """A failed probe, or a slow one when slow calls are judged, reopens at once."""
    m = Machine(
        BreakerConfig(failure_threshold=1, window=None, slow_call_duration=1.0, slow_call_rate=1.0)
    )
    fail(m, 0.0)
    generation, _ = m.admit(100.0)
    transition = m.record(generation, failed, 101.0, duration)
    assert transition == Transition(HALF_OPEN, OPEN, "probe failed", 101.0, 3)
    assert (m.opened_at, m.half_open_in_flight) == (101.0, 0)


def test_outcome_after_release_keeps_in_flight_at_zero() -> None:
    """An outcome reported after its permit was released never makes in-flight negative."""
    m = opened(recovery_timeout=1.0, success_threshold=2)
    generation, _ = m.admit(20.0)
    m.release(generation)
    m.release(generation)
    assert m.half_open_in_flight == 0
    assert m.record(generation, False, 20.0) is None
    assert m.half_open_in_flight == 0


def test_operator_states() -> None:
    """reset, force_open and disable move from any state, each with its reason."""
    m = opened()
    assert m.force_open(11.0) == Transition(OPEN, FORCED_OPEN, "forced open", 11.0, 2)
    assert m.admit(1e9) == (REJECTED, None)
    assert m.retry_after(1e9) is None
    assert m.disable(12.0) == Transition(FORCED_OPEN, DISABLED, "disabled", 12.0, 3)
    for _ in range(10):
        assert fail(m, 13.0) is None  # disabled: nothing trips it
    assert (m.state, m.failures, m.consecutive_failures) == (DISABLED, 11, 0)
    assert m.reset(14.0) == Transition(DISABLED, CLOSED, "reset", 14.0, 4)
    assert m.reset(15.0) == Transition(CLOSED, CLOSED, "reset", 15.0, 5)
    assert (m.generation, m.fast_generation) == (5, 5)


def test_reset_clears_windows_and_keeps_totals() -> None:
    """reset forgets the windows and the failure run but keeps the totals."""
    m = Machine(BreakerConfig(failure_threshold=None, failure_rate=1.0, window_calls=5))
    fail(m, 0.0)
    succeed(m, 0.0)
    m.reset(1.0)
    assert m.rate_counts(1.0) == m.window_counts(1.0) == (0, 0, 0)
    assert (m.successes, m.failures, m.consecutive_failures) == (1, 1, 0)


def test_retry_after() -> None:
    """retry_after counts down while open, is 0 otherwise and None when forced open."""
    m = Machine(BreakerConfig(window=None, failure_threshold=1, recovery_timeout=30.0))
    assert m.retry_after(0.0) == 0.0
    fail(m, 10.0)
    assert m.retry_after(10.0) == 30.0
    assert m.retry_after(25.0) == 15.0
    assert m.retry_after(45.0) == 0.0
    m.force_open(46.0)
    assert m.retry_after(46.0) is None


@pytest.mark.parametrize("opened_at", [0.1, 0.7, 3.3, 12_345.678, 1e6 + 0.1])
@pytest.mark.parametrize("recovery_timeout", [0.05, 0.2, 0.3, 30.0])
def test_probe_admitted_once_retry_after_is_zero(
    opened_at: float, recovery_timeout: float
) -> None:
    """Once retry_after says 0, the next call is admitted as a probe (no float gap)."""
    m = Machine(BreakerConfig(window=None, failure_threshold=1, recovery_timeout=recovery_timeout))
    fail(m, opened_at)
    deadline = opened_at + recovery_timeout
    assert m.retry_after(deadline) == 0.0
    generation, _ = m.admit(deadline)
    assert generation != REJECTED
    assert m.state is HALF_OPEN


def test_stale_outcomes_count_but_do_not_act() -> None:
    """Outcomes from an older generation reach the totals but not state or windows."""
    m = Machine(BreakerConfig(failure_threshold=1, window=60.0))
    generation, _ = m.admit(0.0)
    m.reset(1.0)
    assert not m.record_success(generation)
    assert m.record(generation, True, 2.0) is None
    assert m.record(generation, False, 2.0) is None
    assert (m.state, m.failures, m.successes) == (CLOSED, 1, 1)
    assert m.window_counts(2.0) == (None, 0, 0)
    m.release(generation)
    assert m.consecutive_failures == 0


def test_release_outside_half_open_does_nothing() -> None:
    """Releasing a closed-state call changes nothing."""
    m = Machine(BreakerConfig())
    generation, _ = m.admit(0.0)
    m.release(generation)
    assert (m.state, m.half_open_in_flight, m.successes, m.failures) == (CLOSED, 0, 0, 0)


# --- the generation rule (issue 3) ------------------------------------------------------


def test_slow_call_failing_after_reopen_cannot_drive_a_transition() -> None:
    """A slow call admitted while closed that fails once half-open is counted, not acted on."""
    config = BreakerConfig(
        failure_threshold=1,
        window=None,
        recovery_timeout=30.0,
        slow_call_duration=5.0,
        slow_call_rate=1.0,
        minimum_calls=100,
    )
    m = Machine(config)
    slow_call, _ = m.admit(0.0)  # admitted while closed
    assert fail(m, 1.0) is not None  # another call opens the breaker
    probe, transition = m.admit(31.0)
    assert transition is not None
    assert m.state is HALF_OPEN
    assert m.record(slow_call, True, 40.0, duration=40.0, failure_type="Late") is None
    assert (m.state, m.half_open_in_flight) == (HALF_OPEN, 1)
    assert (m.failures, m.slow_calls, m.last_failure_type) == (2, 1, "Late")
    assert m.record(probe, False, 41.0, duration=0.1) is not None
    assert m.state is CLOSED


def test_late_failure_cannot_reopen_a_closed_again_breaker() -> None:
    """A call from before open, half-open and close again cannot reopen it by failing."""
    m = Machine(BreakerConfig(failure_threshold=1, window=None, recovery_timeout=1.0))
    old, _ = m.admit(0.0)
    fail(m, 0.0)
    probe, _ = m.admit(5.0)
    m.record(probe, False, 5.0)
    assert m.state is CLOSED
    assert m.record(old, True, 6.0) is None
    assert (m.state, m.consecutive_failures, m.failures) == (CLOSED, 0, 2)


# --- configuration -----------------------------------------------------------------------


def test_defaults() -> None:
    """The defaults follow the issue: 5 failures, 60 s window and recovery, 1 probe, 1 success."""
    c = BreakerConfig()
    assert (c.failure_threshold, c.window, c.recovery_timeout) == (5, 60.0, 60.0)
    assert (c.half_open_max_calls, c.success_threshold, c.minimum_calls) == (1, 1, 10)
    assert (c.failure_rate, c.window_calls, c.slow_call_duration, c.slow_call_rate) == (
        None,
        None,
        None,
        None,
    )
    m = Machine(c)
    assert (m.state, m.generation, m.fast_generation, m.simple_generation) == (CLOSED, 0, 0, 0)
    assert Machine(BreakerConfig(failure_rate=0.5)).simple_generation == -2
    assert str(State.HALF_OPEN) == "half_open"


BAD_VALUES = [
    *[("failure_threshold", v) for v in (0, -1, 1.5, True, "5")],
    *[("window", v) for v in (0, -1.0, 5e-324, 1e-4, 0.000999, math.inf, math.nan, True, "60")],
    *[("failure_rate", v) for v in (0, 0.0, -0.5, 1.01, math.nan, math.inf, True, "0.5")],
    *[("minimum_calls", v) for v in (0, -2, 2.0, False)],
    *[("window_calls", v) for v in (0, -1, 3.5, True)],
    *[("slow_call_duration", v) for v in (0, -1.0, math.inf, math.nan, False)],
    *[("slow_call_rate", v) for v in (0, 2.0, math.nan, True)],
    *[("recovery_timeout", v) for v in (0, -1, math.inf, math.nan, None, True, "30")],
    *[("half_open_max_calls", v) for v in (0, -1, 1.0, True, None)],
    *[("success_threshold", v) for v in (0, -1, 2.5, True, None)],
]


_COUNTS = {
    "failure_threshold",
    "minimum_calls",
    "window_calls",
    "half_open_max_calls",
    "success_threshold",
}


def _wrong_type(name: str, value: object) -> bool:
    """Whether `value` is of a type option `name` never takes (not merely out of range)."""
    if isinstance(value, bool) or value is None:
        return True
    return not isinstance(value, int if name in _COUNTS else (int, float))


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_config_rejects_bad_values(name: str, value: object) -> None:
    """A wrong type is a TypeError, a wrong value a ValueError; both name it and show it."""
    pair = {"slow_call_duration": 1.0, "slow_call_rate": 0.5}
    kwargs: dict[str, Any] = {**pair, name: value} if name in pair else {name: value}
    error = TypeError if _wrong_type(name, value) else ValueError
    with pytest.raises(error, match=rf"^{name} must be ") as info:
        BreakerConfig(**kwargs)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"slow_call_duration": 1.0},
        {"slow_call_rate": 0.5},
        {"slow_call_duration": 1.0, "slow_call_rate": None, "failure_rate": 0.5},
    ],
)
def test_slow_call_settings_go_together(kwargs: dict[str, Any]) -> None:
    """slow_call_duration without slow_call_rate, or the reverse, raises naming both."""
    with pytest.raises(ValueError, match="slow_call_duration and slow_call_rate go together"):
        BreakerConfig(**kwargs)


def test_config_needs_a_way_to_trip() -> None:
    """No failure_threshold and no rate raises: the breaker could never open."""
    with pytest.raises(ValueError, match="a way to trip.*failure_threshold=None"):
        BreakerConfig(failure_threshold=None)
    assert BreakerConfig(failure_threshold=None, slow_call_duration=1, slow_call_rate=1).uses_rates


@pytest.mark.parametrize(
    ("kwargs", "size"),
    [
        ({}, None),
        ({"failure_rate": 0.5, "window_calls": 7}, 7),
        ({"failure_rate": 0.5, "window_calls": 7, "window": None}, 7),
        ({"failure_rate": 0.5}, None),  # the time window
        ({"failure_rate": 0.5, "window": None}, DEFAULT_WINDOW_CALLS),
        ({"slow_call_duration": 1, "slow_call_rate": 0.5, "window": None}, DEFAULT_WINDOW_CALLS),
        ({"slow_call_duration": 1, "slow_call_rate": 0.5, "window_calls": 3}, 3),
    ],
)
def test_rate_window_calls(kwargs: dict[str, Any], size: int | None) -> None:
    """Rates use window_calls, else the time window, else a count window of 100 calls."""
    config = BreakerConfig(**kwargs)
    assert config.rate_window_calls == size
    assert config.uses_rates == ("failure_rate" in kwargs or "slow_call_rate" in kwargs)


@pytest.mark.parametrize(
    ("kwargs", "minimum"),
    [
        ({}, DEFAULT_MINIMUM_CALLS),  # no rate: the default, unused
        ({"failure_rate": 0.5}, DEFAULT_MINIMUM_CALLS),  # the time window: no cap
        ({"failure_rate": 0.5, "window": None}, DEFAULT_MINIMUM_CALLS),  # 100 calls
        ({"failure_rate": 0.5, "window_calls": 5}, 5),
        ({"failure_rate": 0.5, "window_calls": 1, "window": None}, 1),
        ({"slow_call_duration": 1, "slow_call_rate": 0.5, "window_calls": 3}, 3),
        ({"failure_rate": 0.5, "window_calls": 12}, DEFAULT_MINIMUM_CALLS),
        ({"failure_rate": 0.5, "window_calls": 5, "minimum_calls": 5}, 5),
        ({"failure_rate": 0.5, "window_calls": 5, "minimum_calls": 2}, 2),
        ({"failure_rate": 0.5, "minimum_calls": 500}, 500),  # a time window holds any number
    ],
)
def test_default_minimum_calls_is_capped_at_the_count_window(
    kwargs: dict[str, Any], minimum: int
) -> None:
    """minimum_calls not given is 10, or the count window's size when that is smaller."""
    config = BreakerConfig(**kwargs)
    assert config.minimum_calls == minimum
    assert BreakerConfig(**config.as_dict()) == config  # the resolved value round-trips


def test_a_count_window_smaller_than_ten_calls_trips_on_its_rate() -> None:
    """With window_calls=5 and no minimum_calls, a 60% failure rate over 5 calls opens."""
    m = Machine(
        BreakerConfig(failure_threshold=None, failure_rate=0.5, window=None, window_calls=5)
    )
    for step in (fail, succeed, fail, succeed):
        assert step(m, 0.0) is None
    moved = fail(m, 0.0)
    assert moved is not None
    assert (moved.new, moved.reason) == (OPEN, "failure rate 60% over 5 calls")


@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [
        ({"window_calls": 5, "minimum_calls": 6}, "minimum_calls=6 and window_calls=5"),
        ({"window_calls": 1, "minimum_calls": 10}, "minimum_calls=10 and window_calls=1"),
        (
            {"window": None, "minimum_calls": 101},
            "minimum_calls=101 and window=None (a count window of 100 calls)",
        ),
    ],
)
def test_minimum_calls_larger_than_the_count_window_raises(
    kwargs: dict[str, Any], shown: str
) -> None:
    """A minimum_calls given outright above the count window's size raises, naming both."""
    with pytest.raises(ValueError, match="^minimum_calls must be at most window_calls") as info:
        BreakerConfig(failure_threshold=None, failure_rate=0.5, **kwargs)
    assert shown in str(info.value)


@pytest.mark.parametrize("kwargs", [{}, {"window": None}, {"minimum_calls": 3}])
def test_window_calls_without_a_rate_raises(kwargs: dict[str, Any]) -> None:
    """window_calls with neither failure_rate nor slow_call_rate raises, naming it."""
    with pytest.raises(ValueError, match="^window_calls .*no rate") as info:
        BreakerConfig(window_calls=7, **kwargs)
    assert "window_calls=7" in str(info.value)


def test_the_shortest_time_window_records_and_forgets() -> None:
    """A window of MIN_WINDOW seconds counts and forgets failures without error."""
    m = Machine(BreakerConfig(failure_threshold=2, window=MIN_WINDOW))
    now = 1e9  # far along a monotonic clock: epochs are large
    assert fail(m, now) is None
    assert fail(m, now + 2 * MIN_WINDOW) is None  # the first has left the window
    moved = fail(m, now + 2 * MIN_WINDOW)
    assert moved is not None
    assert moved.new is OPEN


def test_as_dict() -> None:
    """as_dict gives every field, with seconds as floats, and is JSON-ready."""
    config = BreakerConfig(
        failure_threshold=3,
        window=30,
        failure_rate=1,
        minimum_calls=4,
        window_calls=8,
        slow_call_duration=2,
        slow_call_rate=0.5,
        recovery_timeout=10,
        half_open_max_calls=2,
        success_threshold=3,
    )
    expected = {
        "failure_threshold": 3,
        "window": 30.0,
        "failure_rate": 1.0,
        "minimum_calls": 4,
        "window_calls": 8,
        "slow_call_duration": 2.0,
        "slow_call_rate": 0.5,
        "recovery_timeout": 10.0,
        "half_open_max_calls": 2,
        "success_threshold": 3,
    }
    assert config.as_dict() == expected
    assert all(type(config.as_dict()[k]) is type(v) for k, v in expected.items())
    assert json.loads(json.dumps(config.as_dict())) == expected
    assert BreakerConfig(window=None).as_dict()["window"] is None


# --- generations order the transitions that listeners hear of -------------------------


class _Gated(MemoryState):
    """A memory state whose first recorded outcome waits, once decided, until `go`."""

    __slots__ = ("decided", "go")

    def record(
        self, generation: int, failed: bool, duration: float | None, failure_type: str | None
    ) -> Transition | None:
        transition = super().record(generation, failed, duration, failure_type)
        if not self.decided.is_set():
            self.decided.set()
            assert self.go.wait(30)
        return transition


class _GatedStorage:
    def __init__(self) -> None:
        self.state: _Gated | None = None

    def bind(self, name: str, config: BreakerConfig, clock: Any) -> _Gated:
        del name
        state = self.state = _Gated(config, clock)
        state.decided, state.go = threading.Event(), threading.Event()
        return state


def test_transitions_announced_out_of_order_carry_their_generations() -> None:
    """A transition announced after a later one (two threads) never sets the breaker's
    state back; every event carries its generation, so listeners can tell the latest."""
    storage = _GatedStorage()
    heard: list[StateChange] = []

    class Listener:
        def on_state_change(self, change: StateChange) -> None:
            heard.append(change)

    breaker = CircuitBreaker(
        "gated", storage=storage, failure_threshold=1, listeners=[Listener()], log=False
    )
    state = storage.state
    assert state is not None

    def fail() -> None:
        with contextlib.suppress(OSError):
            breaker.call(_raise_os_error)

    failing = threading.Thread(target=fail)
    failing.start()
    assert state.decided.wait(30)  # it opened the breaker (generation 1), not yet announced
    breaker.reset()  # generation 2, announced first
    state.go.set()
    failing.join(30)
    assert [(c.old, c.new, c.generation) for c in heard] == [
        ("open", "closed", 2),
        ("closed", "open", 1),
    ]
    assert max(heard, key=lambda c: c.generation or 0).new == "closed"
    assert repr(breaker) == "<CircuitBreaker 'gated' closed>"  # not set back to open
    assert breaker.state is CLOSED


def _raise_os_error() -> None:
    raise OSError("down")
