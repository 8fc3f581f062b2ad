"""Test helpers: instant_retries, ManualClock and the pytest plugin fixture."""

from __future__ import annotations

import threading

import anyio
import pytest

import stalwart
from stalwart import _clock
from stalwart.breaker import State
from stalwart.testing import ManualClock, instant_retries


def test_instant_retries_skips_waits_but_keeps_attempts() -> None:
    """Under instant_retries a 1-hour backoff costs nothing, and all attempts happen."""
    calls = 0

    @stalwart.retry(attempts=4, backoff=stalwart.constant(3600))
    def fail() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError

    clock = ManualClock()
    with clock, instant_retries(), pytest.raises(ConnectionError):
        fail()
    assert calls == 4
    assert clock() == 0.0


def test_instant_retries_fixture_from_the_plugin(instant_retries: None) -> None:
    """The pytest plugin's fixture turns waits off for the test."""
    assert _clock.instant()


def test_instant_retries_restores_on_exit() -> None:
    """Leaving the block restores real waits."""
    with instant_retries():
        assert _clock.instant()
    assert not _clock.instant()


def test_instant_retries_holds_in_other_threads() -> None:
    """The switch is process-wide: retries in worker threads wait zero too."""
    seen: list[bool] = []
    with instant_retries():
        thread = threading.Thread(target=lambda: seen.append(_clock.instant()))
        thread.start()
        thread.join()
    assert seen == [True]


def test_manual_clock_moves_only_when_told() -> None:
    """A manual clock reads the same until advanced, and records sleeps."""
    clock = ManualClock(100.0)
    assert clock() == clock.monotonic() == 100.0
    assert clock.advance(2.5) == 102.5
    clock.sleep(1.0)
    assert clock() == 103.5
    assert clock.sleeps == [1.0]
    assert repr(clock) == "ManualClock(103.5)"
    with pytest.raises(ValueError, match="seconds .* got -1"):
        clock.advance(-1)


def test_installed_manual_clock_drives_deadlines() -> None:
    """Installed, a manual clock is what deadlines measure."""
    with ManualClock() as clock, stalwart.deadline(10):
        assert stalwart.remaining() == 10.0
        clock.advance(4)
        assert stalwart.remaining() == 6.0
        clock.advance(100)
        assert stalwart.remaining() == 0.0


def test_manual_clock_installs_nest() -> None:
    """Installing clocks nests and restores the previous one."""
    outer, inner = ManualClock(1.0), ManualClock(2.0)
    with outer:
        with inner:
            assert _clock.now() == 2.0
        assert _clock.now() == 1.0
    assert _clock.now is not outer.monotonic


@pytest.mark.anyio
async def test_manual_clock_async_sleep_advances_and_yields() -> None:
    """Async sleeps on a manual clock advance it and still yield to the loop."""
    clock = ManualClock()
    with clock:
        await _clock.async_sleep(5)
    assert clock() == 5.0
    assert clock.sleeps == [5]


@pytest.mark.anyio
async def test_real_async_sleep_zero_is_a_checkpoint() -> None:
    """A zero async wait is a cancellation point."""
    with anyio.CancelScope() as scope:
        scope.cancel()
        await _clock.async_sleep(0)
        pytest.fail("not cancelled")  # pragma: no cover
    assert scope.cancelled_caught


def test_real_sleep_of_zero_returns_at_once() -> None:
    """The real clock's sleep does nothing for zero and negative waits."""
    _clock.sleep(0)
    _clock.sleep(-1)
    _clock.sleep(0.001)


def test_inject_faults_fails_at_the_rate_and_counts() -> None:
    """inject_faults fails about `rate` of calls, repeatably with a seed, and counts them."""
    from stalwart.testing import inject_faults

    def outcomes(seed: int) -> list[bool]:
        flaky = inject_faults(rate=0.3, exc=ConnectionError, seed=seed)
        fn = flaky(lambda: None)
        results = []
        for _ in range(2000):
            try:
                fn()
                results.append(True)
            except ConnectionError:
                results.append(False)
        assert flaky.calls == 2000
        assert flaky.faults == results.count(False)
        return results

    first = outcomes(5)
    assert first == outcomes(5)
    assert 0.25 < first.count(False) / 2000 < 0.35


def test_inject_faults_edges_and_instances() -> None:
    """Rate 0 never fails, rate 1 always raises the given instance."""
    from stalwart.testing import inject_faults

    error = TimeoutError("injected")
    assert inject_faults(rate=0)(lambda: 1)() == 1
    with pytest.raises(TimeoutError) as info:
        inject_faults(rate=1, exc=error)(lambda: 1)()
    assert info.value is error


@pytest.mark.anyio
async def test_inject_faults_on_async_functions() -> None:
    """Async functions fail before they run, and are retried by stalwart like any other."""
    from stalwart.testing import inject_faults

    async def ok() -> str:
        return "ok"

    with pytest.raises(ConnectionError):
        await inject_faults(rate=1)(ok)()
    with instant_retries():
        retried = stalwart.retry(attempts=50)(inject_faults(rate=0.5, seed=2)(ok))
        assert await retried() == "ok"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"rate": 1.5}, ValueError, "rate must be a number in \\[0, 1\\], got 1.5"),
        ({"rate": float("nan")}, ValueError, "rate .* got nan"),
        ({"exc": "boom"}, TypeError, "exc must be an exception type or instance, got 'boom'"),
        ({"exc": int}, TypeError, "exc must be .* got <class 'int'>"),
    ],
)
def test_inject_faults_validates(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    """inject_faults rejects bad rates and non-exceptions at construction."""
    from stalwart.testing import inject_faults

    with pytest.raises(error, match=match):
        inject_faults(**kwargs)  # type: ignore[arg-type]


# -- fresh_breakers -------------------------------------------------------------------


def test_fresh_breakers_gives_fresh_state_and_restores_the_registry() -> None:
    """Inside fresh_breakers breakers start closed; after it, state and registry are back."""
    from stalwart.testing import fresh_breakers

    clock = ManualClock()
    legacy = stalwart.CircuitBreaker("legacy", failure_threshold=1, clock=clock, log=False)
    made = stalwart.registry.get("made", failure_threshold=1, log=False)
    legacy.force_open()
    with pytest.raises(ConnectionError):
        made.call(_refuse)
    with fresh_breakers() as registry:
        assert registry is stalwart.registry
        assert (legacy.state, made.state) == (State.CLOSED, State.CLOSED)
        assert repr(legacy) == "<CircuitBreaker 'legacy' closed>"
        assert made.stats().failures == 0
        assert registry.health().status == "healthy"
        with pytest.raises(ConnectionError):
            legacy.call(_refuse)
        assert legacy.state is State.OPEN
        temp = stalwart.CircuitBreaker("temp", log=False)
        registry.get("other")
    assert (legacy.state, made.state) == (State.FORCED_OPEN, State.OPEN)
    assert made.stats().failures == 1
    assert stalwart.registry.names() == ["legacy", "made"]
    assert temp.name == "temp"


def test_fresh_breakers_takes_a_registry() -> None:
    """fresh_breakers(registry) isolates that registry's breakers."""
    from stalwart.testing import fresh_breakers

    breakers = stalwart.BreakerRegistry(failure_threshold=1, log=False)
    jira = breakers.get("jira")
    jira.force_open()
    with fresh_breakers(breakers) as isolated:
        assert isolated is breakers
        assert jira.state is State.CLOSED
    assert jira.state is State.FORCED_OPEN


def test_fresh_breakers_fixture_isolates_tests(pytester: pytest.Pytester) -> None:
    """The plugin's fresh_breakers fixture: each test starts closed; the rest see the old state."""
    pytester.makepyfile(
        """
        import pytest
        import stalwart

        legacy = stalwart.CircuitBreaker("legacy", log=False)
        legacy.force_open()

        @stalwart.circuit_breaker("search", failure_threshold=1, log=False)
        def search():
            raise ConnectionError

        def test_opens(fresh_breakers):
            assert legacy.state.value == "closed"
            with pytest.raises(ConnectionError):
                search()
            fresh_breakers.get("temp")
            assert fresh_breakers.health().open == ("search",)

        def test_starts_fresh(fresh_breakers):
            assert fresh_breakers is stalwart.registry
            assert fresh_breakers.health().status == "healthy"
            assert "temp" not in fresh_breakers
            with pytest.raises(ConnectionError):
                search()

        def test_without_the_fixture_sees_the_state_restored():
            assert legacy.state.value == "forced_open"
            assert stalwart.registry.names() == ["legacy", "search"]
            assert stalwart.registry.get("search").state.value == "closed"
        """
    )
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    # The inner run shares this process's Django, which pytest-django set up already.
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:django")
    result.assert_outcomes(passed=3)


def _refuse() -> None:
    raise ConnectionError
