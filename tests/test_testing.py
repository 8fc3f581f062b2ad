"""Test helpers: instant_retries, ManualClock and the pytest plugin fixture."""

from __future__ import annotations

import threading

import anyio
import pytest

import stalwart
from stalwart import _clock
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
