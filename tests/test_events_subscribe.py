"""Process-wide subscribers: `stalwart.events.subscribe`."""

from __future__ import annotations

import logging
import sys
import threading
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stalwart
from stalwart import events
from stalwart.contrib._transaction import Rollbacks
from stalwart.events import (
    BreakerEvent,
    RetryDetails,
    StateChange,
    TimeoutEvent,
    emit,
    subscribe,
)

if TYPE_CHECKING:
    from collections.abc import Iterator


class Recorder:
    """A subscriber with every hook, keeping what it hears."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, Any]] = []

    def _keep(self, hook: str, record: Any) -> None:
        self.heard.append((hook, record))

    def on_retry(self, details: RetryDetails) -> None:
        self._keep("on_retry", details)

    def on_give_up(self, details: RetryDetails) -> None:
        self._keep("on_give_up", details)

    def on_state_change(self, change: StateChange) -> None:
        self._keep("on_state_change", change)

    def on_rejected(self, event: BreakerEvent) -> None:
        self._keep("on_rejected", event)

    def on_timeout(self, event: TimeoutEvent) -> None:
        self._keep("on_timeout", event)

    def on_dead_letter(self, event: Any) -> None:
        self._keep("on_dead_letter", event)

    def on_rollback(self, event: Any) -> None:
        self._keep("on_rollback", event)

    def hooks(self) -> list[str]:
        return [hook for hook, _ in self.heard]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    unsubscribe = subscribe(rec)
    yield rec
    unsubscribe()


def _flaky(failures: int) -> Any:
    calls = [0]

    @stalwart.retry(attempts=3, on=ConnectionError, backoff=stalwart.constant(0), log=False)
    def flaky() -> str:
        calls[0] += 1
        if calls[0] <= failures:
            raise ConnectionError
        return "ok"

    return flaky


def test_retries_and_give_ups_reach_a_subscriber(recorder: Recorder) -> None:
    """A policy given no listener still tells subscribers of each retry and the give-up."""
    assert _flaky(1)() == "ok"
    with pytest.raises(ConnectionError):
        _flaky(5)()
    assert recorder.hooks() == ["on_retry", "on_retry", "on_retry", "on_give_up"]
    give_up = recorder.heard[-1][1]
    assert give_up.attempt == 3
    assert give_up.name.endswith("flaky")


def test_state_changes_and_rejections_reach_a_subscriber(recorder: Recorder) -> None:
    """A breaker made before subscribing announces its opening and rejections to it."""
    breaker = stalwart.CircuitBreaker("sub-a", failure_threshold=1, log=False, registry=None)

    @breaker
    def down() -> None:
        raise ConnectionError

    with pytest.raises(ConnectionError):
        down()
    with pytest.raises(stalwart.CircuitOpenError):
        down()
    with pytest.raises(stalwart.CircuitOpenError):
        breaker.call(lambda: None)
    assert recorder.hooks() == ["on_state_change", "on_rejected", "on_rejected"]
    change = recorder.heard[0][1]
    assert (change.name, change.old, change.new) == ("sub-a", "closed", "open")
    rejected = recorder.heard[1][1]
    assert (rejected.name, rejected.state) == ("sub-a", "open")
    assert breaker.stats().rejected == 2


def test_the_fast_rejection_path_returns_once_nobody_listens() -> None:
    """With no subscriber, an open breaker still rejects (and counts) every call."""
    breaker = stalwart.CircuitBreaker("sub-b", failure_threshold=1, log=False, registry=None)
    wrapped = breaker(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        wrapped()
    for _ in range(3):
        with pytest.raises(stalwart.CircuitOpenError):
            wrapped()
    assert breaker.stats().rejected == 3


def test_a_sync_timeout_reaches_a_subscriber(recorder: Recorder) -> None:
    """A SIGALRM timeout is reported once, as a timeout, with the function's name."""

    @stalwart.timeout(0.05)
    def stuck() -> None:
        threading.Event().wait(5)

    with pytest.raises(stalwart.TimeoutExceeded):
        stuck()
    assert recorder.hooks() == ["on_timeout"]
    event = recorder.heard[0][1]
    assert (event.seconds, event.where) == (0.05, "timeout")
    assert event.name is not None
    assert event.name.endswith("stuck")


def test_a_block_timeout_in_a_thread_reaches_a_subscriber(recorder: Recorder) -> None:
    """A `with` block overrunning off the main thread is reported, without a name."""
    caught: list[BaseException] = []

    def run() -> None:
        try:
            with stalwart.timeout(0.01):
                threading.Event().wait(0.05)
        except stalwart.TimeoutExceeded as exc:
            caught.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert len(caught) == 1
    assert recorder.hooks() == ["on_timeout"]
    assert recorder.heard[0][1] == TimeoutEvent(0.01, "timeout", None, None)


def test_a_passed_deadline_is_reported_as_a_deadline(recorder: Recorder) -> None:
    """A deadline already passed when a timeout starts is reported with where="deadline"."""
    with stalwart.correlation_id("c-1"), stalwart.deadline(0.001):
        threading.Event().wait(0.01)
        with pytest.raises(stalwart.TimeoutExceeded), stalwart.timeout(1):
            pass  # pragma: no cover - never runs
    assert recorder.heard == [("on_timeout", TimeoutEvent(0.0, "deadline", None, "c-1"))]


@pytest.mark.anyio
async def test_an_async_timeout_reaches_a_subscriber(recorder: Recorder) -> None:
    """An async timeout is reported with the coroutine function's name."""

    @stalwart.timeout(0.01)
    async def stuck() -> None:
        await anyio.sleep(5)

    with pytest.raises(stalwart.TimeoutExceeded):
        await stuck()
    assert recorder.hooks() == ["on_timeout"]
    assert recorder.heard[0][1].name.endswith("stuck")


def test_rollbacks_reach_a_subscriber(recorder: Recorder) -> None:
    """A transaction's rollback report reaches subscribers even with no listener."""
    rollbacks = Rollbacks(log=False)
    assert rollbacks
    rollbacks.report(
        ConnectionError("gone"),
        name="app.save",
        reason="network_error",
        attempt=1,
        database="default",
        will_retry=True,
    )
    assert recorder.hooks() == ["on_rollback"]
    event = recorder.heard[0][1]
    assert (event.name, event.reason, event.exception_type) == (
        "app.save",
        "network_error",
        "builtins.ConnectionError",
    )


def test_dead_letters_reach_a_subscriber(recorder: Recorder) -> None:
    """A resilient task's dead-letter hooks pass the event on to subscribers."""
    from celery import Celery

    from stalwart.contrib.celery import DeadLetterEvent, ResilientTask

    app = Celery("sub", broker="memory://", set_as_current=False)

    @app.task(base=ResilientTask, shared=False, name="sub.task")
    def task() -> None: ...

    event = DeadLetterEvent("poison_pill", "sub.task", "id-1", "builtins.ValueError")
    hooks = app.tasks["sub.task"]._stalwart_dead_letter_hooks  # type: ignore[attr-defined]
    emit(hooks, event)  # as the task's _dead_letter does
    assert recorder.heard == [("on_dead_letter", event)]


def test_unsubscribe_stops_the_events_and_is_idempotent() -> None:
    """After unsubscribing, nothing more is heard; unsubscribing twice does nothing."""
    rec = Recorder()
    unsubscribe = subscribe(rec)
    unsubscribe()
    unsubscribe()
    with pytest.raises(ConnectionError):
        _flaky(5)()
    assert rec.heard == []
    assert events.subscribed.on_retry == ()


def test_a_failing_subscriber_never_breaks_the_call(caplog: pytest.LogCaptureFixture) -> None:
    """A subscriber that raises is logged; the retried call still returns its value."""

    class Broken:
        def on_retry(self, details: RetryDetails) -> None:
            raise RuntimeError("broken exporter")

    unsubscribe = subscribe(Broken())
    try:
        with caplog.at_level(logging.ERROR, "stalwart"):
            assert _flaky(2)() == "ok"
    finally:
        unsubscribe()
    assert sum("raised; ignoring it" in r.getMessage() for r in caplog.records) == 2


def test_bad_subscribers_are_refused() -> None:
    """Objects with no hook, or with an async hook, are refused with a TypeError."""

    class Async:
        async def on_retry(self, details: RetryDetails) -> None: ...

    with pytest.raises(TypeError, match="listener must have a method among"):
        subscribe(object())
    with pytest.raises(TypeError, match="is async"):
        subscribe(Async())
    assert events.subscribed.on_retry == ()


def test_per_call_hooks_are_not_subscriber_hooks() -> None:
    """on_success alone is not a subscriber: per-call hooks are refused."""

    class PerCall:
        def on_success(self, event: BreakerEvent) -> None: ...

    with pytest.raises(TypeError):
        subscribe(PerCall())


def test_no_record_is_built_when_nobody_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no listener and no subscriber, retries and timeouts build no record."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a record was built")

    monkeypatch.setattr(sys.modules["stalwart.retry"], "RetryDetails", refuse)
    monkeypatch.setattr(events, "TimeoutEvent", refuse)
    with pytest.raises(ConnectionError):
        _flaky(5)()

    @stalwart.timeout(0.01)
    def stuck() -> None:
        threading.Event().wait(5)

    with pytest.raises(stalwart.TimeoutExceeded):
        stuck()


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=6))
def test_concurrent_subscriptions_leave_exactly_the_live_ones(counts: list[int]) -> None:
    """Threads subscribing and unsubscribing at once leave only the live subscribers."""
    kept: list[Any] = []
    lock = threading.Lock()
    start = threading.Barrier(len(counts))

    def churn(n: int) -> None:
        start.wait(5)
        for _ in range(n):
            subscribe(Recorder())()  # on and off again
        rec = Recorder()
        unsubscribe = subscribe(rec)
        with lock:
            kept.append(unsubscribe)

    threads = [threading.Thread(target=churn, args=(n,)) for n in counts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    try:
        assert len(events.subscribed.on_retry) == len(counts)
    finally:
        for unsubscribe in kept:
            unsubscribe()
    assert events.subscribed.on_retry == ()
