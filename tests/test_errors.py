"""The exception hierarchy and what each exception carries."""

from __future__ import annotations

import pickle

import pytest

import stalwart


def test_markers_carry_status_and_retry_after() -> None:
    """TransientError and PermanentError keep message, status code and retry-after."""
    exc = stalwart.TransientError("slow down", status_code=429, retry_after=2.5)
    assert (exc.message, exc.status_code, exc.retry_after) == ("slow down", 429, 2.5)
    assert str(exc) == "slow down"
    assert repr(exc) == "TransientError('slow down', status_code=429, retry_after=2.5)"
    assert repr(stalwart.PermanentError("gone")) == "PermanentError('gone')"


def test_hierarchy() -> None:
    """What stalwart raises derives from StalwartError; TimeoutExceeded is a TimeoutError."""
    assert issubclass(stalwart.CircuitOpenError, stalwart.StalwartError)
    assert issubclass(stalwart.BulkheadFull, stalwart.StalwartError)
    assert issubclass(stalwart.TimeoutExceeded, stalwart.StalwartError)
    assert issubclass(stalwart.TimeoutExceeded, TimeoutError)
    assert not issubclass(stalwart.TransientError, stalwart.StalwartError)


def test_circuit_open_error_names_breaker_and_wait() -> None:
    """CircuitOpenError says which breaker and how long until it probes again."""
    exc = stalwart.CircuitOpenError("payments", 1.5)
    assert (exc.name, exc.retry_after) == ("payments", 1.5)
    assert str(exc) == "circuit 'payments' is open; retry after 1.500s"
    assert str(stalwart.CircuitOpenError("db")) == "circuit 'db' is forced open"


def test_timeout_exceeded_says_the_limit() -> None:
    """TimeoutExceeded keeps the limit in seconds and says it."""
    exc = stalwart.TimeoutExceeded(0.25)
    assert exc.seconds == 0.25
    assert str(exc) == "call did not finish within 0.25s"
    assert str(stalwart.TimeoutExceeded(1, "deadline passed")) == "deadline passed"


@pytest.mark.parametrize(
    "exc",
    [
        stalwart.CircuitOpenError("x", 2.0),
        stalwart.TimeoutExceeded(3.0),
        stalwart.TransientError("t", status_code=503, retry_after=1.0),
    ],
)
def test_exceptions_survive_pickling(exc: Exception) -> None:
    """Exceptions cross process boundaries (Celery, multiprocessing) intact."""
    copy = pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own objects
    assert type(copy) is type(exc)
    assert str(copy) == str(exc)
    assert vars(copy) == vars(exc)
