"""Listener validation in `stalwart.events.hooks`, shared by retries and breakers."""

from __future__ import annotations

import copy
import dataclasses
import logging
import pickle
import threading
from typing import TYPE_CHECKING, Any

import pytest

import stalwart
from stalwart.errors import TimeoutExceeded
from stalwart.events import (
    BREAKER_HOOKS,
    BreakerEvent,
    RetryDetails,
    StateChange,
    emit,
    hooks,
    listener_tuple,
)
from stalwart.testing import ManualClock

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable


class AsyncRetryListener:
    """A retry listener whose ``on_retry`` is a coroutine function."""

    async def on_retry(self, details: RetryDetails) -> None:
        """Would make a coroutine nobody awaits."""


class AsyncGeneratorListener:
    """A breaker listener whose ``on_rejected`` is an async generator function."""

    async def on_rejected(self, event: BreakerEvent) -> AsyncIterator[None]:
        """Would make an async generator nobody iterates."""
        yield


class AsyncCallable:
    """An object whose ``__call__`` is a coroutine function."""

    async def __call__(self, event: object) -> None:
        """Would make a coroutine nobody awaits."""


class SyncCallable:
    """An object whose ``__call__`` is a plain method."""

    def __init__(self) -> None:
        self.seen: list[object] = []

    def __call__(self, event: object) -> None:
        """Keep the event."""
        self.seen.append(event)


class HookAttributes:
    """A listener whose hooks are callable objects set as attributes."""

    def __init__(self, on_success: object, on_failure: object = None) -> None:
        self.on_success = on_success
        self.on_failure = on_failure


@pytest.mark.parametrize(
    ("listener", "names", "hook"),
    [
        (AsyncRetryListener(), None, "on_retry"),
        (AsyncGeneratorListener(), BREAKER_HOOKS, "on_rejected"),
        (HookAttributes(SyncCallable(), AsyncCallable()), BREAKER_HOOKS, "on_failure"),
    ],
    ids=["coroutine-method", "async-generator", "async-callable-object"],
)
def test_async_hooks_are_refused_naming_listener_and_hook(
    listener: object, names: tuple[str, ...] | None, hook: str
) -> None:
    """An async hook raises TypeError naming the parameter, the hook and the listener."""
    kwargs: dict[str, Any] = {} if names is None else {"names": names}
    with pytest.raises(TypeError) as info:
        hooks([listener], parameter="listeners", **kwargs)
    message = str(info.value)
    assert message.startswith("listeners: ")
    assert f"{hook} of {listener!r} is async" in message


def test_retry_refuses_async_listeners() -> None:
    """`stalwart.retry` refuses an async ``on_retry`` when it is made, not when it retries."""
    with pytest.raises(TypeError, match="on_retry of .*AsyncRetryListener.* is async"):
        stalwart.retry(listeners=[AsyncRetryListener()])


def test_sync_callable_objects_are_accepted_as_hooks() -> None:
    """A hook that is an object with a plain ``__call__`` is collected as it is."""
    hook = SyncCallable()
    found = hooks([HookAttributes(hook)], BREAKER_HOOKS)
    assert found["on_success"] == (hook,)
    assert found["on_failure"] == ()


@pytest.mark.parametrize("value", [3, None, 2.5, AsyncRetryListener()])
def test_a_non_iterable_listeners_value_is_a_type_error_naming_it(value: object) -> None:
    """`listeners=3` (or one listener not in a list) raises naming the parameter and value."""
    for call in (lambda: hooks(value), lambda: listener_tuple(value)):  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^listeners must be an iterable") as info:
            call()
        assert f"got {value!r}" in str(info.value)
    with pytest.raises(TypeError, match=r"^registry_listeners must be an iterable"):
        hooks(value, parameter="registry_listeners")  # type: ignore[arg-type]


def test_listener_tuple_keeps_order_and_accepts_any_iterable() -> None:
    """Lists, tuples and generators of listeners become one tuple, in order."""
    a, b = SyncCallable(), SyncCallable()
    assert listener_tuple([a, b]) == (a, b)
    assert listener_tuple(x for x in (b, a)) == (b, a)
    assert listener_tuple(()) == ()


RECORDS = [
    (
        RetryDetails("f", 2, 0.5, 1.25, None, ("status", 503)),
        (
            "RetryDetails(name='f', attempt=2, delay=0.5, elapsed=1.25, exception=None,"
            " result=('status', 503))"
        ),
    ),
    (
        StateChange("db", "closed", "open", "5 failures", 3),
        "StateChange(name='db', old='closed', new='open', reason='5 failures', generation=3)",
    ),
    (
        BreakerEvent("db", "open", retry_after=3.0),
        (
            "BreakerEvent(name='db', state='open', duration=None, exception_type=None,"
            " retry_after=3.0)"
        ),
    ),
]


@pytest.mark.parametrize(("record", "text"), RECORDS, ids=lambda r: type(r).__name__)
def test_records_behave_as_frozen_dataclasses(record: Any, text: str) -> None:
    """Event records compare, hash, print, pickle and refuse changes as frozen dataclasses."""
    assert repr(record) == text
    fields = record.__match_args__
    twin = type(record)(**{name: getattr(record, name) for name in fields})
    assert twin == record
    assert hash(twin) == hash(record)
    assert record != type(record)(*["other", *[getattr(record, n) for n in fields[1:]]])
    assert record != tuple(getattr(record, name) for name in fields)
    assert pickle.loads(pickle.dumps(record)) == record  # noqa: S301 - our own bytes
    assert copy.copy(record) == record
    assert copy.deepcopy(record) == record
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.name = "other"
    with pytest.raises(dataclasses.FrozenInstanceError):
        del record.name
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.extra = 1
    assert not hasattr(record, "__dict__")


def test_retry_details_defaults_and_pattern_matching() -> None:
    """`RetryDetails` defaults its exception and result, and matches by position."""
    details = RetryDetails("f", 1, 0.0, 0.0)
    assert (details.exception, details.result, details.exception_type) == (None, None, None)
    match details:
        case RetryDetails(name, attempt):
            assert (name, attempt) == ("f", 1)
        case _:  # pragma: no cover - the case above matches
            pytest.fail("no match")


def _raise(exc: BaseException) -> Any:
    raise exc


def test_emit_lets_an_expired_enclosing_timeout_through() -> None:
    """A TimeoutExceeded raised while an enclosing sync timeout has expired is not swallowed."""
    expired = TimeoutExceeded(1.0)

    def run() -> None:
        with ManualClock() as clock, stalwart.timeout(1):
            clock.advance(2)
            emit([lambda record: _raise(expired)], "record")

    outcome: list[BaseException] = []
    thread = threading.Thread(target=lambda: _capture(run, outcome))
    thread.start()
    thread.join()
    assert outcome == [expired]


def test_emit_swallows_a_listener_timeout_when_no_enclosing_one_expired(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A listener's own TimeoutExceeded, with no expired timeout around, is logged and ignored."""
    with caplog.at_level(logging.ERROR, logger="stalwart"):
        emit([lambda record: _raise(TimeoutExceeded(1.0))], "record")
    assert any("listener" in r.getMessage() for r in caplog.records)


def _capture(fn: Callable[[], object], outcome: list[BaseException]) -> None:
    try:
        fn()
    except BaseException as exc:  # handed to the test thread
        outcome.append(exc)
