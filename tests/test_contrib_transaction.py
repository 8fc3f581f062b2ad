"""Transaction retry rules without a framework: rollback reasons, the event, its reporting."""

from __future__ import annotations

import dataclasses
import logging
import pickle
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

import stalwart
from stalwart.contrib import _transaction as tx

SQLSTATE_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
sqlstates = st.one_of(
    st.sampled_from(["40001", "40P01", "08000", "08006", "57P01", "57P02", "57P03", "23505"]),
    st.text(alphabet=SQLSTATE_CHARS, min_size=5, max_size=5),
)


class Psycopg2Error(Exception):
    """Shaped as psycopg2's errors: the SQLSTATE in ``pgcode``."""

    def __init__(self, pgcode: str | None) -> None:
        super().__init__("psycopg2-style error")
        self.pgcode = pgcode


class WrapperError(Exception):
    """Shaped as SQLAlchemy's ``DBAPIError``: the driver's error in ``orig``."""

    def __init__(self, orig: BaseException, *, invalidated: bool = False) -> None:
        super().__init__("wrapper")
        self.orig = orig
        self.connection_invalidated = invalidated


def wrapped(driver: BaseException) -> Exception:
    """An error that wraps `driver` as Django does (the driver's error as ``__cause__``)."""
    try:
        raise RuntimeError("wrapped") from driver
    except RuntimeError as exc:
        return exc


@given(sqlstates)
def test_every_sqlstate_maps_to_exactly_one_reason(code: str) -> None:
    """Any SQLSTATE has one reason; retried exactly for 40001, 40P01, class 08 and 57P01-3."""
    reason = tx.reason_for_sqlstate(code)
    expected_retried = code in {"40001", "40P01", "57P01", "57P02", "57P03"} or code.startswith(
        "08"
    )
    assert reason in {tx.SERIALIZATION_FAILURE, tx.DEADLOCK, tx.NETWORK_ERROR, tx.ERROR}
    assert (reason in tx.RETRIED_REASONS) is expected_retried
    assert (reason == tx.SERIALIZATION_FAILURE) is (code == "40001")
    assert (reason == tx.DEADLOCK) is (code == "40P01")


@given(sqlstates, st.booleans())
def test_sqlstate_decides_before_the_connection(code: str, lost: bool) -> None:
    """A retried SQLSTATE gives its reason whether or not the connection is lost."""
    reason = tx.reason_for_sqlstate(code)
    exc = wrapped(Psycopg2Error(code))
    if reason != tx.ERROR:
        assert tx.rollback_reason(exc, connection_lost=lost) == reason
    else:  # not a driver's OperationalError/InterfaceError: never a network error
        assert tx.rollback_reason(exc, connection_lost=lost) == tx.ERROR


def test_reads_psycopg3_sqlstate_through_a_wrapper() -> None:
    """psycopg 3's ``sqlstate`` is read on the driver's error Django keeps as ``__cause__``."""
    failure = wrapped(psycopg.errors.SerializationFailure("could not serialize"))
    deadlock = wrapped(psycopg.errors.DeadlockDetected("deadlock detected"))
    unique = wrapped(psycopg.errors.UniqueViolation("duplicate key"))
    assert tx.sqlstate_of(failure) == "40001"
    assert tx.rollback_reason(failure) == tx.SERIALIZATION_FAILURE
    assert tx.rollback_reason(deadlock) == tx.DEADLOCK
    assert tx.sqlstate_of(unique) == "23505"
    assert tx.rollback_reason(unique, connection_lost=True) == tx.ERROR


def test_reads_psycopg2_pgcode_and_sqlalchemy_orig() -> None:
    """psycopg2's ``pgcode`` is read, also through a SQLAlchemy-style ``orig``."""
    assert tx.sqlstate_of(Psycopg2Error("40P01")) == "40P01"
    assert tx.sqlstate_of(WrapperError(Psycopg2Error("40001"))) == "40001"
    assert tx.sqlstate_of(Psycopg2Error(None)) is None
    assert tx.sqlstate_of(Psycopg2Error("4000")) is None  # not a SQLSTATE
    assert tx.sqlstate_of(ValueError("no code")) is None


def test_a_cycle_of_causes_ends() -> None:
    """Errors that cause each other in a cycle are looked through once, without a hang."""
    first, second = ValueError("a"), ValueError("b")
    first.__cause__, second.__cause__ = second, first
    assert tx.sqlstate_of(first) is None
    assert tx.rollback_reason(first, connection_lost=True) == tx.ERROR


def test_a_driver_operational_error_is_a_network_error_only_when_the_connection_is_lost() -> None:
    """A driver's OperationalError/InterfaceError is retried only when the connection is lost."""
    lost = wrapped(psycopg.OperationalError("server closed the connection unexpectedly"))
    interface = psycopg.InterfaceError("the connection is closed")
    timeout = wrapped(psycopg.errors.QueryCanceled("canceling statement due to timeout"))
    assert tx.rollback_reason(lost, connection_lost=True) == tx.NETWORK_ERROR
    assert tx.rollback_reason(lost, connection_lost=False) == tx.ERROR
    assert tx.rollback_reason(interface, connection_lost=True) == tx.NETWORK_ERROR
    assert tx.rollback_reason(timeout, connection_lost=False) == tx.ERROR  # 57014
    # The server ended the session as it cancelled (idle_in_transaction_session_timeout):
    # the connection is gone, so the transaction may run again on a new one.
    assert tx.rollback_reason(timeout, connection_lost=True) == tx.NETWORK_ERROR
    assert tx.rollback_reason(ValueError("mine"), connection_lost=True) == tx.ERROR
    assert tx.rollback_reason(ConnectionError("not a driver's"), connection_lost=True) == tx.ERROR


def test_server_ending_the_session_is_a_network_error() -> None:
    """``pg_terminate_backend`` (57P01) and class 08 are network errors."""
    assert tx.rollback_reason(wrapped(psycopg.errors.AdminShutdown("terminating"))) == (
        tx.NETWORK_ERROR
    )
    assert tx.rollback_reason(Psycopg2Error("08006")) == tx.NETWORK_ERROR


def test_an_invalidated_sqlalchemy_connection_is_a_network_error() -> None:
    """SQLAlchemy's ``connection_invalidated`` marks a lost connection by itself."""
    exc = WrapperError(Exception("gone"), invalidated=True)
    assert tx.rollback_reason(exc, connection_lost=True) == tx.NETWORK_ERROR


class Raw:
    """A DB-API connection's state, as psycopg 3 or psycopg2 report it."""

    def __init__(self, closed: Any = False, broken: bool = False) -> None:
        self.closed = closed
        self.broken = broken


class Unknowable:
    """A connection whose state cannot be read."""

    @property
    def closed(self) -> bool:
        raise RuntimeError("no idea")


def test_connection_closed_reads_psycopg3_and_psycopg2_states() -> None:
    """Closed or broken (psycopg 3), non-zero ``closed`` (psycopg2), or none at all."""
    assert tx.connection_closed(None)
    assert tx.connection_closed(Raw(closed=True))
    assert tx.connection_closed(Raw(broken=True))
    assert tx.connection_closed(Raw(closed=2))
    assert tx.connection_closed(Unknowable())
    assert not tx.connection_closed(Raw(closed=0))
    assert not tx.connection_closed(Raw())


def event(**changes: Any) -> tx.TransactionRollback:
    fields: dict[str, Any] = {
        "name": "app.transfer",
        "reason": tx.SERIALIZATION_FAILURE,
        "attempt": 1,
        "database": "default",
        "will_retry": True,
        "exception_type": "django.db.utils.OperationalError",
        "sqlstate": "40001",
        "correlation_id": None,
    }
    return tx.TransactionRollback(**{**fields, **changes})


def test_the_event_is_a_frozen_value() -> None:
    """A rollback event compares by value, pickles, and refuses assignment."""
    first = event()
    assert first == event()
    assert first != event(attempt=2)
    assert hash(first) == hash(event())
    assert pickle.loads(pickle.dumps(first)) == first  # noqa: S301 - our own bytes
    assert "reason='serialization_failure'" in repr(first)
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.attempt = 3  # type: ignore[misc]


class Recorder:
    def __init__(self) -> None:
        self.events: list[tx.TransactionRollback] = []

    def on_rollback(self, event: tx.TransactionRollback) -> None:
        self.events.append(event)


class Broken:
    def on_rollback(self, event: tx.TransactionRollback) -> None:
        raise RuntimeError("listener broke")


def report(rollbacks: tx.Rollbacks, exc: BaseException, **changes: Any) -> None:
    fields: dict[str, Any] = {
        "name": "app.transfer",
        "reason": tx.rollback_reason(exc),
        "attempt": 1,
        "database": "default",
        "will_retry": True,
    }
    rollbacks.report(exc, **{**fields, **changes})


def test_report_builds_the_event_from_the_exception() -> None:
    """The event carries the reason, the type name, the SQLSTATE and the correlation id."""
    recorder = Recorder()
    rollbacks = tx.Rollbacks([recorder], log=False)
    exc = wrapped(psycopg.errors.DeadlockDetected("deadlock detected"))
    with stalwart.correlation_id("req-7"):
        report(rollbacks, exc, attempt=2, will_retry=False)
    assert recorder.events == [
        tx.TransactionRollback(
            "app.transfer",
            tx.DEADLOCK,
            2,
            "default",
            False,
            "builtins.RuntimeError",
            "40P01",
            "req-7",
        )
    ]


def test_a_failing_listener_never_breaks_the_report(caplog: pytest.LogCaptureFixture) -> None:
    """A listener that raises is logged; the listeners after it still hear the event."""
    recorder = Recorder()
    rollbacks = tx.Rollbacks([Broken(), recorder], log=False)
    with caplog.at_level(logging.ERROR, logger="stalwart"):
        report(rollbacks, Psycopg2Error("40001"))
    assert len(recorder.events) == 1
    assert any("listener" in r.getMessage() for r in caplog.records)


def test_nobody_listening_builds_nothing() -> None:
    """Without listeners and without logging, there is nothing to report to."""
    assert not tx.Rollbacks([], log=False)
    assert tx.Rollbacks([])  # the logging listener
    assert not tx.Rollbacks([object()], log=False)  # no on_rollback: heard elsewhere


def test_async_on_rollback_is_refused() -> None:
    """An ``async def on_rollback`` is refused: its coroutine would never be awaited."""

    class Async:
        async def on_rollback(self, event: tx.TransactionRollback) -> None:
            return None

    with pytest.raises(TypeError, match="async"):
        tx.Rollbacks([Async()])


def test_retried_rollbacks_follow_the_retry_level(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stalwart.LoggingListener.retry_level moves retried rollbacks too."""
    monkeypatch.setattr(stalwart.LoggingListener, "retry_level", logging.WARNING)
    with caplog.at_level(logging.WARNING, logger="stalwart.transaction"):
        report(tx.Rollbacks(), Psycopg2Error("40001"))
    [record] = caplog.records
    assert (record.levelno, record.__dict__["will_retry"]) == (logging.WARNING, True)


def test_rollbacks_are_logged_by_reason(caplog: pytest.LogCaptureFixture) -> None:
    """Retried rollbacks log as retries (INFO), the last of a retried reason at WARNING."""
    rollbacks = tx.Rollbacks()
    with caplog.at_level(logging.INFO, logger="stalwart.transaction"):
        report(rollbacks, Psycopg2Error("40001"))
        report(rollbacks, Psycopg2Error("23505"), will_retry=False)
        report(rollbacks, Psycopg2Error("40P01"), will_retry=False)
    retried, error, gave_up = caplog.records
    assert retried.levelno == logging.INFO
    assert error.levelno == logging.INFO
    assert gave_up.levelno == logging.WARNING
    assert gave_up.__dict__["reason"] == tx.DEADLOCK
    assert "serialization_failure" in retried.getMessage()
    assert "retrying" in retried.getMessage()
    assert "not retrying" in error.getMessage()
    assert retried.__dict__["stalwart_event"] == "rollback"
    assert retried.__dict__["reason"] == tx.SERIALIZATION_FAILURE
    assert error.__dict__["sqlstate"] == "23505"
    assert error.__dict__["will_retry"] is False


def test_nested_transaction_error_is_a_runtime_error_of_stalwart() -> None:
    """The nesting error is caught as `RuntimeError` and as `stalwart.StalwartError`."""
    assert issubclass(tx.NestedTransactionError, RuntimeError)
    assert issubclass(tx.NestedTransactionError, stalwart.StalwartError)
