"""Retry: one behaviour table for sync and async, blocks, deadlines, listeners, cancellation."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import math
import re
import sys
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import anyio
import pytest
import tenacity
from hypothesis import given, settings
from hypothesis import strategies as st

import stalwart
from stalwart import presets
from stalwart._clock import MAX_WAIT
from stalwart.classify import Verdict
from stalwart.retry import _MAX_NOTES, RetryPolicy, _add_note
from stalwart.testing import ManualClock

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator


class Boom(Exception):
    """An exception the default classifier does not know."""


@dataclasses.dataclass
class Script:
    """What each successive attempt does: raise the exception or return the value."""

    steps: list[Any]
    calls: int = 0

    def step(self) -> Any:
        item = self.steps[min(self.calls, len(self.steps) - 1)]
        self.calls += 1
        if isinstance(item, BaseException):
            raise item
        return item


def run_script(mode: str, policy: RetryPolicy, script: Script) -> Any:
    """Decorate a sync or async function that follows `script` and call it once."""
    if mode == "sync":
        return policy(script.step)()

    async def step() -> Any:
        await anyio.lowlevel.checkpoint()
        return script.step()

    wrapped = policy(step)
    return anyio.run(wrapped, backend=mode)


MODES = ["sync", "asyncio", "trio"]

# (id, policy arguments, script, expected result or exception type, expected calls, note)
TABLE: list[tuple[str, dict[str, Any], list[Any], Any, int, str | None]] = [
    ("first-success", {}, ["ok"], "ok", 1, None),
    ("transient-then-ok", {}, [ConnectionError(), TimeoutError(), "ok"], "ok", 3, None),
    ("exhausted", {"attempts": 3}, [ConnectionError("down")], ConnectionError, 3, "gave up"),
    ("one-attempt", {"attempts": 1}, [ConnectionError()], ConnectionError, 1, "1 attempt "),
    ("permanent-value-error", {}, [ValueError("bad")], ValueError, 1, None),
    ("permanent-marker", {}, [stalwart.PermanentError("no")], stalwart.PermanentError, 1, None),
    ("transient-marker", {}, [stalwart.TransientError("x"), 7], 7, 2, None),
    ("unknown-not-retried", {}, [Boom()], Boom, 1, None),
    ("circuit-open", {}, [stalwart.CircuitOpenError("db")], stalwart.CircuitOpenError, 1, None),
    ("on-types", {"on": Boom}, [Boom(), Boom(), "ok"], "ok", 3, None),
    ("on-tuple-miss", {"on": (KeyError,)}, [Boom()], Boom, 1, None),
    ("on-predicate", {"on": lambda e: "again" in str(e)}, [Boom("again"), 1], 1, 2, None),
    (
        "permanent-after-transient",
        {},
        [ConnectionError(), ValueError("bad")],
        ValueError,
        2,
        "not retried",
    ),
    ("result-retried", {"retry_if_result": lambda r: r is None}, [None, None, 5], 5, 3, None),
    ("result-exhausted", {"retry_if_result": lambda r: r is None}, [None], None, 3, None),
    ("system-exit", {}, [SystemExit(3)], SystemExit, 1, None),
    (
        "custom-classifier",
        {"classifier": lambda e: Verdict.TRANSIENT},
        [Boom(), "ok"],
        "ok",
        2,
        None,
    ),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("kwargs", "steps", "expected", "calls", "note"),
    [pytest.param(*row[1:], id=row[0]) for row in TABLE],
)
def test_behaviour_table(
    mode: str,
    kwargs: dict[str, Any],
    steps: list[Any],
    expected: Any,
    calls: int,
    note: str | None,
    instant_retries: None,
) -> None:
    """Sync and async (asyncio, trio) retries behave alike for every row of the table."""
    script = Script(steps)
    policy = stalwart.retry(**kwargs)
    if isinstance(expected, type) and issubclass(expected, BaseException):
        with pytest.raises(expected) as info:
            run_script(mode, policy, script)
        notes = getattr(info.value, "__notes__", [])
        if note is None:
            assert notes == []
        else:
            assert any(note in n for n in notes), notes
            assert notes[-1].startswith("stalwart: ")
    else:
        assert run_script(mode, policy, script) == expected
    assert script.calls == calls


def test_give_up_reraises_the_last_exception_itself() -> None:
    """Giving up raises the very exception of the last attempt, not a wrapper."""
    raised: list[Exception] = []

    @stalwart.retry(attempts=2, backoff=stalwart.constant(0))
    def fail() -> None:
        raised.append(ConnectionError(len(raised)))
        raise raised[-1]

    with pytest.raises(ConnectionError) as info:
        fail()
    assert info.value is raised[-1]
    assert len(raised) == 2
    assert info.value.__context__ is None  # no chaining onto earlier attempts


def test_note_names_attempts_and_elapsed_time() -> None:
    """The give-up note states attempts and the elapsed time on stalwart's clock."""
    with ManualClock() as clock:

        @stalwart.retry(attempts=3, backoff=stalwart.constant(2.5))
        def fail() -> None:
            clock.advance(1)
            raise ConnectionError

        with pytest.raises(ConnectionError) as info:
            fail()
    assert clock.sleeps == [2.5, 2.5]
    name = f"{__name__}.test_note_names_attempts_and_elapsed_time.<locals>.fail"
    assert info.value.__notes__ == [
        f"stalwart: gave up on {name} after 3 attempts over 8.000s (stopped by 3 attempts)"
    ]


def test_happy_path_builds_no_retry_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """A first attempt that succeeds never starts the retry machinery."""

    def boom(*args: object) -> None:
        raise AssertionError("retry state built on the happy path")

    monkeypatch.setattr(RetryPolicy, "_begin", boom)
    assert stalwart.retry()(lambda x: x + 1)(1) == 2


@pytest.mark.asyncio
async def test_async_happy_path_builds_no_retry_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """The async wrapper also succeeds without touching the retry machinery."""
    monkeypatch.setattr(RetryPolicy, "_begin", lambda *a: pytest.fail("built state"))

    async def one() -> int:
        return 1

    assert await stalwart.retry()(one)() == 1


def test_wraps_keeps_name_and_doc() -> None:
    """The decorated function keeps its name, docstring and wrapped reference."""

    def fetch(url: str) -> str:
        """Fetch a URL."""
        return url

    wrapped = stalwart.retry()(fetch)
    assert wrapped.__name__ == "fetch"
    assert wrapped.__doc__ == "Fetch a URL."
    assert wrapped.__wrapped__ is fetch  # type: ignore[attr-defined]


def test_generator_functions_are_refused() -> None:
    """Decorating a generator function fails at decoration time, not at call time."""

    def gen() -> Iterator[int]:
        yield 1

    with pytest.raises(TypeError, match="generator function"):
        stalwart.retry()(gen)


# --- Retry-After and deadlines -------------------------------------------------------


def test_retry_after_raises_the_wait() -> None:
    """A Retry-After hint on the exception makes the next wait at least the hint."""
    script = Script([stalwart.TransientError("busy", retry_after=5.0), "ok"])
    with ManualClock() as clock:
        assert stalwart.retry(backoff=stalwart.constant(0.1))(script.step)() == "ok"
    assert clock.sleeps == [5.0]


def test_retry_after_shorter_than_backoff_keeps_backoff() -> None:
    """A hint shorter than the backoff does not shorten the wait."""
    script = Script([stalwart.TransientError("busy", retry_after=0.5), "ok"])
    with ManualClock() as clock:
        stalwart.retry(backoff=stalwart.constant(2.0))(script.step)()
    assert clock.sleeps == [2.0]


class HTTPError(Exception):
    """An exception shaped like httpx's and requests': the response carries the headers."""

    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__("503 Service Unavailable")
        self.response = SimpleNamespace(status_code=503, headers=headers)


def http_date(seconds_from_now: float) -> str:
    """An IMF-fixdate (the HTTP date format), `seconds_from_now` seconds from now."""
    return format_datetime(
        datetime.now(timezone.utc) + timedelta(seconds=seconds_from_now), usegmt=True
    )


def test_retry_after_header_in_seconds_raises_the_wait() -> None:
    """A response's Retry-After header in seconds, on an HTTP-style exception, sets the wait."""
    script = Script([HTTPError({"retry-after": "7"}), "ok"])
    with ManualClock() as clock:
        assert stalwart.retry(on=HTTPError, backoff=stalwart.constant(0.1))(script.step)() == "ok"
    assert clock.sleeps == [7.0]


def test_retry_after_header_as_http_date_raises_the_wait() -> None:
    """A Retry-After header holding an HTTP date waits until that date."""
    script = Script([HTTPError({"Retry-After": http_date(120)}), "ok"])
    with ManualClock() as clock:
        stalwart.retry(on=HTTPError, backoff=stalwart.constant(0.1))(script.step)()
    [wait] = clock.sleeps
    assert 118 < wait <= 120  # the date has whole seconds; a little time has passed


def test_max_retry_after_caps_the_hint() -> None:
    """A hint longer than max_retry_after is cut to it; the backoff still applies below it."""
    script = Script([HTTPError({"Retry-After": "3600"}), HTTPError({"Retry-After": "3600"}), 1])
    with ManualClock() as clock:
        stalwart.retry(
            on=HTTPError, attempts=3, backoff=stalwart.constant(0.1), max_retry_after=30
        )(script.step)()
    assert clock.sleeps == [30.0, 30.0]
    script = Script([HTTPError({"Retry-After": "3600"}), 1])
    with ManualClock() as clock:
        stalwart.retry(on=HTTPError, backoff=stalwart.constant(5), max_retry_after=2)(
            script.step
        )()
    assert clock.sleeps == [5.0]


def test_max_retry_after_is_validated_and_kept() -> None:
    """RetryPolicy(max_retry_after=) refuses negative values and survives replace()."""
    with pytest.raises(ValueError, match="max_retry_after .* got -1"):
        RetryPolicy(max_retry_after=-1)
    policy = RetryPolicy(max_retry_after=timedelta(minutes=1))
    assert policy.max_retry_after == 60.0
    assert policy.replace(attempts=5).max_retry_after == 60.0
    assert RetryPolicy().max_retry_after is None


def test_retried_result_with_retry_after_raises_the_wait() -> None:
    """A retried result carrying Retry-After in its headers (an HTTP response) sets the wait."""
    busy = SimpleNamespace(status_code=429, headers={"Retry-After": "4"})
    done = SimpleNamespace(status_code=200, headers={})
    script = Script([busy, done])
    with ManualClock() as clock:
        result = stalwart.retry(
            retry_if_result=lambda r: r.status_code == 429, backoff=stalwart.constant(0.1)
        )(script.step)()
    assert result is done
    assert clock.sleeps == [4.0]


def test_retry_after_past_deadline_gives_up_without_sleeping() -> None:
    """A hint that would end past the deadline ends the retries at once."""
    script = Script([stalwart.TransientError("busy", retry_after=30.0)])
    with ManualClock() as clock, pytest.raises(stalwart.TransientError) as info:
        stalwart.retry(deadline=10, backoff=stalwart.constant(0))(script.step)()
    assert clock.sleeps == []
    assert script.calls == 1
    assert "stopped by the deadline" in info.value.__notes__[0]


def test_ambient_deadline_caps_retries() -> None:
    """A `stalwart.deadline` in force stops retries whose next sleep would pass it."""
    script = Script([ConnectionError()])
    with ManualClock() as clock, stalwart.deadline(1.0), pytest.raises(ConnectionError):
        stalwart.retry(attempts=10, backoff=stalwart.constant(0.6))(script.step)()
    assert clock.sleeps == [0.6]
    assert script.calls == 2


def test_inner_retry_deadline_is_capped_by_ambient_deadline() -> None:
    """retry(deadline=) never outlives a shorter deadline around it."""
    script = Script([ConnectionError()])
    with ManualClock() as clock, stalwart.deadline(1.0), pytest.raises(ConnectionError):
        stalwart.retry(attempts=10, deadline=100, backoff=stalwart.constant(0.4))(script.step)()
    assert clock.sleeps == [0.4, 0.4]


@pytest.mark.parametrize("mode", ["sync", "asyncio"])
@settings(max_examples=200, deadline=None)
@given(
    attempts=st.integers(1, 12),
    deadline=st.none() | st.floats(0.01, 50),
    durations=st.lists(st.floats(0, 5), min_size=1, max_size=12),
    initial=st.floats(0, 3, exclude_min=True),
    jitter=st.sampled_from(["none", "full", "equal"]),
)
def test_never_exceeds_attempts_nor_sleeps_past_deadline(
    mode: str,
    attempts: int,
    deadline: float | None,
    durations: list[float],
    initial: float,
    jitter: Any,
) -> None:
    """Property, sync and async: calls <= attempts, and no sleep ends past the deadline."""
    clock = ManualClock()
    start = clock()
    calls = 0
    sleeps_end: list[float] = []

    class Watching(ManualClock):
        def sleep(self, seconds: float) -> None:
            sleeps_end.append(clock() + seconds)
            clock.sleep(seconds)

        def monotonic(self) -> float:
            return clock()

    def work() -> None:
        nonlocal calls
        clock.advance(durations[calls % len(durations)])
        calls += 1
        raise ConnectionError

    policy = stalwart.retry(
        attempts=attempts,
        deadline=deadline,
        backoff=stalwart.exponential(initial, 2, max(initial, 10), jitter),
        log=False,
    )

    async def async_work() -> None:
        work()

    with Watching(), pytest.raises(ConnectionError):
        if mode == "sync":
            policy(work)()
        else:
            anyio.run(policy(async_work), backend=mode)
    assert 1 <= calls <= attempts
    if deadline is not None:
        assert all(end <= start + deadline + 1e-9 for end in sleeps_end)
    if deadline is None:
        assert calls == attempts


# --- Blocks ---------------------------------------------------------------------------


def test_retrying_block_retries_until_success(instant_retries: None) -> None:
    """`for attempt in retrying()` reruns the block until it succeeds."""
    script = Script([ConnectionError(), ConnectionError(), "done"])
    numbers = []
    for attempt in stalwart.retrying(attempts=5):
        with attempt:
            numbers.append(attempt.number)
            script.step()
    assert numbers == [1, 2, 3]
    assert repr(attempt) == "<stalwart.Attempt number=3>"


def test_retrying_block_gives_up_with_note(instant_retries: None) -> None:
    """The block loop re-raises the last exception, with a note, from the loop."""
    with pytest.raises(ConnectionError) as info:
        for attempt in stalwart.retrying(attempts=2, name="connect"):
            with attempt:
                raise ConnectionError
    assert "gave up on connect after 2 attempts" in info.value.__notes__[0]


def test_retrying_block_does_not_retry_permanent_errors() -> None:
    """A permanent error in the block ends the loop at once."""
    count = 0
    with pytest.raises(KeyError):
        for attempt in stalwart.retrying(attempts=5):
            with attempt:
                count += 1
                raise KeyError("k")
    assert count == 1


def test_retrying_block_lets_keyboard_interrupt_through() -> None:
    """KeyboardInterrupt in the block is not recorded, swallowed or retried."""
    count = 0
    with pytest.raises(KeyboardInterrupt):
        for attempt in stalwart.retrying(attempts=5):
            with attempt:
                count += 1
                raise KeyboardInterrupt
    assert count == 1


def test_retrying_block_requires_with_attempt() -> None:
    """Forgetting `with attempt:` is reported, instead of looping silently."""
    with pytest.raises(RuntimeError, match="with attempt"):
        for _attempt in stalwart.retrying(attempts=3):
            pass


@pytest.mark.anyio
async def test_async_retrying_block(instant_retries: None) -> None:
    """`async for attempt in retrying()` retries async blocks."""
    script = Script([ConnectionError(), "done"])
    async for attempt in stalwart.retrying(attempts=3):
        with attempt:
            await anyio.lowlevel.checkpoint()
            script.step()
    assert script.calls == 2


@pytest.mark.anyio
async def test_async_retrying_block_requires_with_attempt() -> None:
    """The async loop also reports a missing `with attempt:`."""
    with pytest.raises(RuntimeError, match="with attempt"):
        async for _attempt in stalwart.retrying(attempts=3):
            pass


@pytest.mark.anyio
async def test_async_retrying_block_gives_up(instant_retries: None) -> None:
    """The async loop re-raises the last exception when attempts run out."""
    count = 0
    with pytest.raises(TimeoutError):
        async for attempt in presets.TRANSIENT.retrying("probe"):
            with attempt:
                count += 1
                raise TimeoutError
    assert count == 2


# --- Cancellation ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_cancellation_during_backoff_ends_retry_at_once() -> None:
    """Cancelling a task asleep between attempts ends it; nothing more is attempted."""
    failed = anyio.Event()
    gave_up: list[Any] = []
    script = Script([ConnectionError()])

    class Listener:
        def on_retry(self, details: Any) -> None:
            failed.set()

        def on_give_up(self, details: Any) -> None:
            gave_up.append(details)

    @stalwart.retry(attempts=5, backoff=stalwart.constant(3600), listeners=[Listener()])
    async def call() -> None:
        script.step()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await failed.wait()
            tg.cancel_scope.cancel()
    assert script.calls == 1
    assert gave_up == []


@pytest.mark.anyio
async def test_cancellation_raised_by_the_call_is_not_retried() -> None:
    """A cancellation raised inside an attempt propagates after a single attempt."""
    calls = 0

    @stalwart.retry(attempts=5, on=BaseException)
    async def call() -> None:
        nonlocal calls
        calls += 1
        await anyio.sleep(3600)

    with anyio.move_on_after(0.01):
        await call()
    assert calls == 1


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(1), GeneratorExit()])
def test_base_exceptions_are_never_retried(exc: BaseException) -> None:
    """KeyboardInterrupt, SystemExit and GeneratorExit pass through, even with on=BaseException."""
    script = Script([exc])
    with pytest.raises(type(exc)):
        stalwart.retry(on=BaseException, attempts=5)(script.step)()
    assert script.calls == 1


# --- Listeners and logging ------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.retries: list[stalwart.RetryDetails] = []
        self.give_ups: list[stalwart.RetryDetails] = []

    def on_retry(self, details: stalwart.RetryDetails) -> None:
        self.retries.append(details)

    def on_give_up(self, details: stalwart.RetryDetails) -> None:
        self.give_ups.append(details)


def test_listeners_receive_each_retry_and_the_give_up() -> None:
    """on_retry sees each failed attempt with its delay; on_give_up fires once."""
    recorder = Recorder()
    script = Script([ConnectionError("a"), TimeoutError("b"), ConnectionError("c")])
    with ManualClock(), pytest.raises(ConnectionError):
        stalwart.retry(attempts=3, backoff=stalwart.constant(1.5), listeners=[recorder])(
            script.step
        )()
    assert [(d.attempt, d.delay) for d in recorder.retries] == [(1, 1.5), (2, 1.5)]
    assert [d.exception_type for d in recorder.retries] == [
        "builtins.ConnectionError",
        "builtins.TimeoutError",
    ]
    assert len(recorder.give_ups) == 1
    assert recorder.give_ups[0].attempt == 3
    assert recorder.give_ups[0].elapsed == 3.0


def test_result_retries_report_the_result() -> None:
    """A retried result reaches the listener as `result`, with no exception."""
    recorder = Recorder()
    stalwart.retry(
        attempts=2,
        retry_if_result=lambda r: r == "busy",
        backoff=stalwart.constant(0),
        listeners=[recorder],
    )(lambda: "busy")()
    assert recorder.retries[0].result == "busy"
    assert recorder.retries[0].exception is None
    assert recorder.retries[0].exception_type is None


def test_failing_listener_never_breaks_the_call(
    caplog: pytest.LogCaptureFixture, instant_retries: None
) -> None:
    """A listener that raises is logged, and the retry carries on."""

    class Broken:
        def on_retry(self, details: Any) -> None:
            raise RuntimeError("listener bug")

    script = Script([ConnectionError(), "ok"])
    with caplog.at_level(logging.ERROR, logger="stalwart"):
        assert stalwart.retry(listeners=[Broken()])(script.step)() == "ok"
    assert any("listener" in r.getMessage() for r in caplog.records)


def test_logging_listener_logs_structured_extra(caplog: pytest.LogCaptureFixture) -> None:
    """The default logging listener logs each retry with structured fields, no message text."""
    script = Script([ConnectionError("secret-token"), ConnectionError("secret-token")])
    with (
        ManualClock(),
        caplog.at_level(logging.INFO, logger="stalwart.retry"),
        pytest.raises(ConnectionError),
    ):
        stalwart.retry(attempts=2, backoff=stalwart.constant(1.5))(script.step)()
    retry_record, give_up_record = caplog.records
    assert (retry_record.levelno, give_up_record.levelno) == (logging.INFO, logging.WARNING)
    assert retry_record.stalwart_event == "retry"  # type: ignore[attr-defined]
    assert retry_record.attempt == 1  # type: ignore[attr-defined]
    assert retry_record.delay == 1.5  # type: ignore[attr-defined]
    assert give_up_record.delay == 0.0  # type: ignore[attr-defined]
    assert retry_record.exception_type == "builtins.ConnectionError"  # type: ignore[attr-defined]
    assert retry_record.function.endswith("Script.step")  # type: ignore[attr-defined]
    assert give_up_record.stalwart_event == "give_up"  # type: ignore[attr-defined]
    assert all("secret-token" not in r.getMessage() for r in caplog.records)


def test_log_false_silences_the_logging_listener(
    caplog: pytest.LogCaptureFixture, instant_retries: None
) -> None:
    """retry(log=False) logs nothing."""
    with caplog.at_level(logging.DEBUG, logger="stalwart"), pytest.raises(ConnectionError):
        stalwart.retry(attempts=2, log=False)(Script([ConnectionError()]).step)()
    assert caplog.records == []


def test_logging_listener_skips_work_when_disabled(instant_retries: None) -> None:
    """With the stalwart logger above WARNING, nothing is formatted or emitted."""
    log = logging.getLogger("stalwart.retry")
    handler_records: list[logging.LogRecord] = []

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            handler_records.append(record)

    handler = Handler()
    log.addHandler(handler)
    old = log.level
    log.setLevel(logging.ERROR)
    try:
        with pytest.raises(ConnectionError):
            stalwart.retry(attempts=2)(Script([ConnectionError()]).step)()
    finally:
        log.setLevel(old)
        log.removeHandler(handler)
    assert handler_records == []


def test_retries_are_info_so_a_warning_logger_builds_nothing(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, instant_retries: None
) -> None:
    """Under a WARNING logger, retries build no record; only the give-up is logged."""
    built: list[object] = []
    module = sys.modules["stalwart.retry"]
    details = module.RetryDetails

    def counting(*args: Any) -> Any:
        built.append(args)
        return details(*args)

    monkeypatch.setattr(module, "RetryDetails", counting)
    with caplog.at_level(logging.WARNING, logger="stalwart.retry"):
        assert (
            stalwart.retry(attempts=3)(Script([ConnectionError(), ConnectionError(), "ok"]).step)()
            == "ok"
        )
        assert (built, caplog.records) == ([], [])
        with pytest.raises(ConnectionError):
            stalwart.retry(attempts=2)(Script([ConnectionError(), ConnectionError()]).step)()
    [give_up] = caplog.records
    assert (give_up.levelno, give_up.stalwart_event) == (logging.WARNING, "give_up")  # type: ignore[attr-defined]
    assert len(built) == 1


def test_retry_level_for_every_default_listener(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, instant_retries: None
) -> None:
    """Setting LoggingListener.retry_level once moves the default listeners' retries too."""
    monkeypatch.setattr(stalwart.LoggingListener, "retry_level", logging.WARNING)
    with caplog.at_level(logging.WARNING, logger="stalwart.retry"):
        assert stalwart.retry(attempts=2)(Script([ConnectionError(), "ok"]).step)() == "ok"
    [record] = caplog.records
    assert (record.levelno, record.stalwart_event) == (logging.WARNING, "retry")  # type: ignore[attr-defined]
    del stalwart.LoggingListener.retry_level  # back to the default
    assert stalwart.LoggingListener.retry_level == logging.INFO


def test_retry_level_of_one_listener(
    caplog: pytest.LogCaptureFixture, instant_retries: None
) -> None:
    """A listener's own retry_level wins over the class's; give-ups stay WARNING."""
    listener = stalwart.LoggingListener(retry_level=logging.DEBUG)
    assert stalwart.LoggingListener.retry_level == logging.INFO
    policy = stalwart.retry(attempts=2, listeners=[listener], log=False)
    with caplog.at_level(logging.DEBUG, logger="stalwart.retry"), pytest.raises(ConnectionError):
        policy(Script([ConnectionError(), ConnectionError()]).step)()
    assert [r.levelno for r in caplog.records] == [logging.DEBUG, logging.WARNING]


@pytest.mark.parametrize(
    ("value", "error"),
    [("INFO", TypeError), (True, TypeError), (20.0, TypeError), (5, ValueError), (60, ValueError)],
)
def test_retry_level_is_checked(value: object, error: type[Exception]) -> None:
    """A retry_level that is not a level from DEBUG to CRITICAL is refused, by name."""
    with pytest.raises(error, match=r"retry_level .*" + re.escape(repr(value))):
        stalwart.LoggingListener(retry_level=value)  # type: ignore[arg-type]
    with pytest.raises(error, match=r"retry_level .*" + re.escape(repr(value))):
        stalwart.LoggingListener.retry_level = value  # type: ignore[assignment]
    assert stalwart.LoggingListener.retry_level == logging.INFO


# --- Validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"attempts": 0}, ValueError, "attempts must be an integer >= 1, got 0"),
        ({"attempts": -2}, ValueError, "attempts .* got -2"),
        ({"attempts": 1.5}, TypeError, "attempts .* got 1.5"),
        ({"attempts": True}, TypeError, "attempts .* got True"),
        ({"deadline": -1}, ValueError, "deadline .* got -1"),
        ({"deadline": math.nan}, ValueError, "deadline .* got nan"),
        ({"deadline": 0}, ValueError, r"deadline must be .* > 0 .*, got 0"),
        ({"deadline": "soon"}, TypeError, "deadline .* got 'soon'"),
        ({"on": int}, TypeError, "on must be exception types or a predicate, got <class 'int'>"),
        ({"on": (ValueError, 3)}, TypeError, "on must be .* got \\(<class 'ValueError'>, 3\\)"),
        ({"on": ()}, TypeError, "on must be"),
        ({"on": "ValueError"}, TypeError, "on must be .* got 'ValueError'"),
        ({"backoff": 3}, TypeError, "backoff must be .* got 3"),
        (
            {"backoff": stalwart.exponential},
            TypeError,
            r"backoff .*factory .*stalwart\.exponential\(\)",
        ),
        ({"backoff": stalwart.linear}, TypeError, r"backoff .*factory .*stalwart\.linear\(\)"),
        ({"backoff": stalwart.constant}, TypeError, r"backoff .*factory .*stalwart\.constant\(\)"),
        (
            {"backoff": stalwart.decorrelated},
            TypeError,
            r"backoff .*factory .*stalwart\.decorrelated\(\)",
        ),
        (
            {"backoff": stalwart.Exponential},
            TypeError,
            r"backoff .*class .*stalwart\.exponential\(\)",
        ),
        ({"backoff": tenacity.wait_fixed}, TypeError, "backoff .* class .*wait_fixed"),
        ({"max_retry_after": -1}, ValueError, "max_retry_after .* got -1"),
        ({"max_retry_after": math.nan}, ValueError, "max_retry_after .* got nan"),
        ({"retry_if_result": "x"}, TypeError, "retry_if_result must be .* got 'x'"),
        ({"classifier": 1}, TypeError, "classifier must be .* got 1"),
        ({"listeners": [object()]}, TypeError, "listeners must hold objects"),
    ],
)
def test_bad_arguments_fail_at_construction(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    """Every bad argument raises at construction, naming the parameter and the value."""
    with pytest.raises(error, match=match):
        stalwart.retry(**kwargs)


def test_retrying_validates_too() -> None:
    """retrying() validates like retry()."""
    with pytest.raises(ValueError, match="attempts"):
        stalwart.retrying(attempts=0)


# --- Policies, presets, tenacity interop ----------------------------------------------


def test_presets_are_configured_as_documented() -> None:
    """The presets carry the attempts and waits their documentation promises."""
    assert presets.DEFAULT.attempts == 3
    assert presets.TRANSIENT.attempts == 2
    assert presets.SLOW_SERVICE.attempts == 5
    assert presets.NO_RETRY.attempts == 1
    default_backoff = presets.DEFAULT.backoff
    assert isinstance(default_backoff, stalwart.Exponential)
    assert (default_backoff.initial, default_backoff.max) == (1.0, 10.0)
    slow = presets.SLOW_SERVICE.backoff
    assert isinstance(slow, stalwart.Exponential)
    assert (slow.initial, slow.max) == (2.0, 30.0)


def test_replace_changes_only_what_is_named() -> None:
    """replace() copies the policy with the named changes and validates them."""
    policy = presets.DEFAULT.replace(attempts=5)
    assert policy.attempts == 5
    assert policy.backoff is presets.DEFAULT.backoff
    assert presets.DEFAULT.attempts == 3
    with pytest.raises(TypeError, match="unknown arguments \\['tries'\\]"):
        presets.DEFAULT.replace(tries=2)
    with pytest.raises(ValueError, match="attempts"):
        presets.DEFAULT.replace(attempts=0)


def test_repr_shows_the_configuration() -> None:
    """The policy's repr names its main settings."""
    assert repr(stalwart.retry(attempts=4, deadline=2)).startswith(
        "stalwart.retry(on=None, attempts=4, deadline=2.0"
    )


def test_any_tenacity_wait_strategy_is_a_backoff() -> None:
    """A tenacity wait strategy works as backoff=."""
    import tenacity

    script = Script([ConnectionError(), "ok"])
    with ManualClock() as clock:
        stalwart.retry(backoff=tenacity.wait_fixed(0.25))(script.step)()
    assert clock.sleeps == [0.25]


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"on": lambda exc: 1 / 0}, id="on"),
        pytest.param({"classifier": lambda exc: 1 / 0}, id="classifier"),
    ],
)
def test_failing_predicate_is_chained_to_the_failure(kwargs: dict[str, Any]) -> None:
    """A predicate that raises propagates its error, with the judged failure as its cause."""
    original = ConnectionError("the real failure")
    script = Script([original, "ok"])
    with pytest.raises(ZeroDivisionError) as info:
        stalwart.retry(**kwargs)(script.step)()
    assert info.value.__cause__ is original
    assert script.calls == 1


def test_predicate_reraising_the_failure_is_not_chained_to_itself() -> None:
    """A predicate that re-raises the failure it judges raises it as it is."""
    original = ConnectionError("down")

    def reraise(exc: BaseException) -> bool:
        raise exc

    with pytest.raises(ConnectionError) as info:
        stalwart.retry(on=reraise)(Script([original]).step)()
    assert info.value is original
    assert info.value.__cause__ is None


class AsyncFlaky:
    """An object whose async __call__ fails with a transient error, then returns."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, value: str) -> str:
        await anyio.lowlevel.checkpoint()
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError
        return value


@pytest.mark.anyio
async def test_async_callable_objects_and_partials_are_retried(instant_retries: None) -> None:
    """An object with an async __call__, and a partial of one, get the async retry shell."""
    for make in (AsyncFlaky, lambda: functools.partial(AsyncFlaky(), "ok")):
        target = make()
        wrapped = stalwart.retry()(target)
        assert inspect.iscoroutinefunction(wrapped)
        args = () if isinstance(target, functools.partial) else ("ok",)
        assert await wrapped(*args) == "ok"
        flaky = target.func if isinstance(target, functools.partial) else target
        assert flaky.calls == 2


@pytest.mark.anyio
async def test_breaker_protects_async_callable_objects() -> None:
    """A breaker around an object with an async __call__ awaits it and counts its failures."""
    flaky = AsyncFlaky()
    breaker = stalwart.CircuitBreaker("async-object", failure_threshold=1, window=None)
    protected = breaker(flaky)
    assert inspect.iscoroutinefunction(protected)
    with pytest.raises(ConnectionError):
        await protected("ok")
    assert breaker.state is stalwart.State.OPEN
    assert flaky.calls == 1


def test_sync_callable_objects_and_classes_stay_sync(instant_retries: None) -> None:
    """A sync callable object, or a class with an async __call__, keeps the sync shell."""

    class Sync:
        def __call__(self) -> str:
            return "sync"

    assert stalwart.retry()(Sync())() == "sync"
    wrapped = stalwart.retry()(AsyncFlaky)
    assert not inspect.iscoroutinefunction(wrapped)
    assert isinstance(wrapped(), AsyncFlaky)


def test_should_retry_never_for_base_exceptions() -> None:
    """should_retry() refuses anything that is not an Exception."""
    policy = stalwart.retry(on=BaseException)
    assert policy.should_retry(ConnectionError())
    assert not policy.should_retry(KeyboardInterrupt())


def test_add_note_falls_back_to_notes_attribute() -> None:
    """Without add_note (Python 3.10) the note is kept in __notes__ as 3.11 expects."""

    class Old(Exception):
        add_note = None

    exc = Old()
    _add_note(exc, "first")
    _add_note(exc, "second")
    assert exc.__notes__ == ["first", "second"]


def test_decorated_methods_work(instant_retries: None) -> None:
    """Methods decorated with retry get self and retry like functions."""

    class Client:
        def __init__(self) -> None:
            self.calls = 0

        @stalwart.retry(attempts=3)
        def get(self, key: str) -> str:
            self.calls += 1
            if self.calls < 2:
                raise ConnectionError
            return key

    client = Client()
    assert client.get("k") == "k"
    assert client.calls == 2


def test_no_attempt_starts_exactly_at_the_deadline() -> None:
    """A sleep that would end exactly at the deadline is not taken: no attempt without time."""
    script = Script([ConnectionError()])
    with ManualClock() as clock, stalwart.deadline(1.0), pytest.raises(ConnectionError):
        stalwart.retry(attempts=10, backoff=stalwart.constant(0.5))(script.step)()
    assert clock.sleeps == [0.5]
    assert script.calls == 2


# --- Waits too long to make -------------------------------------------------------------

HUGE_HINTS = [
    pytest.param(lambda: stalwart.TransientError("busy", retry_after=1e10), id="retry_after"),
    pytest.param(lambda: HTTPError({"Retry-After": "9999999999"}), id="header-seconds"),
    pytest.param(
        lambda: HTTPError({"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"}), id="header-date"
    ),
]


@pytest.mark.parametrize("make", HUGE_HINTS)
def test_hint_too_long_to_wait_gives_up_with_the_error_on_the_real_clock(make: Any) -> None:
    """A Retry-After longer than any wait re-raises the caller's error, never OverflowError."""
    script = Script([make(), "ok"])
    with pytest.raises((stalwart.TransientError, HTTPError)) as info:
        stalwart.retry(on=(stalwart.TransientError, HTTPError), log=False)(script.step)()
    assert info.value is script.steps[0]
    assert script.calls == 1
    assert "stopped by a wait too long to make" in info.value.__notes__[-1]


@pytest.mark.parametrize("mode", MODES)
def test_hint_too_long_to_wait_is_never_waited(mode: str) -> None:
    """Sync and async alike: a wait past MAX_WAIT is not started; the error is re-raised."""
    script = Script([stalwart.TransientError("busy", retry_after=1e10), "ok"])
    with ManualClock() as clock, pytest.raises(stalwart.TransientError):
        run_script(mode, stalwart.retry(log=False), script)
    assert clock.sleeps == []
    assert script.calls == 1


def test_max_retry_after_cuts_a_huge_hint_to_a_wait() -> None:
    """With max_retry_after, a huge hint is cut to the cap and waited, as any other hint."""
    script = Script([stalwart.TransientError("busy", retry_after=1e10), "ok"])
    with ManualClock() as clock:
        assert stalwart.retry(max_retry_after=60, log=False)(script.step)() == "ok"
    assert clock.sleeps == [60.0]


def test_backoff_too_long_to_wait_gives_up() -> None:
    """A wait strategy asking for more than MAX_WAIT ends the retries with the last error."""
    script = Script([ConnectionError("down"), "ok"])
    with pytest.raises(ConnectionError) as info:
        stalwart.retry(backoff=tenacity.wait_fixed(1e12), log=False)(script.step)()
    assert script.calls == 1
    assert "stopped by a wait too long to make" in info.value.__notes__[-1]


def test_hint_within_max_wait_is_waited() -> None:
    """A long hint that the platform can wait is waited in full (on the manual clock)."""
    script = Script([stalwart.TransientError("busy", retry_after=MAX_WAIT), "ok"])
    with ManualClock() as clock:
        assert stalwart.retry(log=False)(script.step)() == "ok"
    assert clock.sleeps == [MAX_WAIT]


# --- Give-up notes --------------------------------------------------------------------------


def test_notes_do_not_pile_up_on_a_shared_exception(instant_retries: None) -> None:
    """One exception raised by many retried calls keeps one stalwart note per retry, not one per call."""
    shared = ConnectionError("down")
    shared.__notes__ = ["the caller's own note"]  # add_note is new in Python 3.11

    @stalwart.retry(attempts=2, log=False)
    def fail() -> None:
        raise shared

    for _ in range(1000):
        with pytest.raises(ConnectionError):
            fail()
    notes = shared.__notes__
    assert notes[0] == "the caller's own note"
    assert len(notes) == 2
    assert notes[1].startswith("stalwart: gave up on ")


def test_notes_of_nested_retries_are_kept_and_bounded(instant_retries: None) -> None:
    """Distinct retries each leave their note, but no exception carries more than a few."""
    shared = ConnectionError("down")
    for name in ("outer", "inner"):
        with pytest.raises(ConnectionError):
            for attempt in stalwart.retrying(attempts=2, log=False, name=name):
                with attempt:
                    raise shared
    assert [n.split(" after")[0] for n in shared.__notes__] == [
        "stalwart: gave up on outer",
        "stalwart: gave up on inner",
    ]
    for i in range(100):
        with pytest.raises(ConnectionError):
            for attempt in stalwart.retrying(attempts=2, log=False, name=f"block-{i}"):
                with attempt:
                    raise shared
    assert 1 <= len(shared.__notes__) <= _MAX_NOTES
    assert shared.__notes__[-1].startswith("stalwart: gave up on block-99 ")


def test_notes_that_cannot_be_added_never_replace_the_error(instant_retries: None) -> None:
    """An exception whose __notes__ is not a list is still re-raised as it is."""
    odd = ConnectionError("down")
    odd.__notes__ = ("frozen",)  # type: ignore[attr-defined]
    with pytest.raises(ConnectionError) as info:
        stalwart.retry(attempts=2, log=False)(Script([odd]).step)()
    assert info.value is odd
    assert odd.__notes__ == ("frozen",)  # type: ignore[attr-defined]


# --- Bare decorator and generator functions ---------------------------------------------


def test_bare_decorator_retries_with_the_defaults(instant_retries: None) -> None:
    """`@stalwart.retry` without parentheses retries a sync function with the defaults."""
    script = Script([ConnectionError(), ConnectionError(), "ok"])

    @stalwart.retry
    def call() -> str:
        return str(script.step())

    assert call() == "ok"
    assert script.calls == 3
    assert call.__name__ == "call"


@pytest.mark.anyio
async def test_bare_decorator_on_async_functions(instant_retries: None) -> None:
    """`@stalwart.retry` without parentheses retries an async function with the defaults."""
    script = Script([ConnectionError(), "ok"])

    @stalwart.retry
    async def call() -> str:
        await anyio.lowlevel.checkpoint()
        return str(script.step())

    assert inspect.iscoroutinefunction(call)
    assert await call() == "ok"
    assert script.calls == 2


def test_exception_types_stay_positional() -> None:
    """`stalwart.retry(SomeError)` still names what to retry, and predicates go by keyword."""
    assert stalwart.retry(Boom).on is Boom
    assert stalwart.retry((Boom, KeyError)).on == (Boom, KeyError)

    def predicate(exc: BaseException) -> bool:
        return True

    assert stalwart.retry(on=predicate).on is predicate


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((print,), {"attempts": 2}, "without parentheses takes no options"),
        ((Boom, KeyError), {}, "at most one positional argument"),
        ((Boom,), {"on": KeyError}, "on given twice"),
        ((3,), {}, "on must be exception types or a predicate, got 3"),
    ],
)
def test_bare_decorator_misuse_is_a_type_error(
    args: tuple[Any, ...], kwargs: dict[str, Any], match: str
) -> None:
    """Options or extra arguments beside a decorated function fail at once, saying why."""
    with pytest.raises(TypeError, match=match):
        stalwart.retry(*args, **kwargs)


def test_generator_functions_are_refused_naming_them() -> None:
    """@retry on a generator or async generator function says which, and what to do instead."""

    def numbers() -> Iterator[int]:
        yield 1

    async def stream() -> AsyncIterator[int]:
        yield 1

    for fn, kind in ((numbers, "a generator"), (stream, "an async generator")):
        for decorate in (stalwart.retry(), stalwart.retry):
            with pytest.raises(TypeError) as info:
                decorate(fn)
            message = str(info.value)
            assert f"{fn.__qualname__} is {kind} function" in message
            assert "stalwart.retrying" in message
