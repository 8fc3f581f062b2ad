"""Transaction retry rules shared by the database integrations, and the rollback event.

Framework-free: nothing here imports a database driver or a framework. The rules read
the shape of an exception (its SQLSTATE, its type's name and package) and the state
of a DB-API connection, so every integration that retries whole transactions (Django's
`atomic_retry`, a SQLAlchemy one) decides alike:

- ``serialization_failure``: SQLSTATE ``40001``; retried.
- ``deadlock``: SQLSTATE ``40P01``; retried.
- ``network_error``: SQLSTATE class ``08``, ``57P01`` to ``57P03`` (the server ended
  the session), SQLAlchemy's ``DisconnectionError`` or a ``DBAPIError`` whose
  ``connection_invalidated`` is true, or a driver's ``OperationalError`` /
  ``InterfaceError`` on a connection that is now closed; retried.
- ``error``: anything else (``IntegrityError``, a statement timeout, the code's own
  exceptions, ...); not retried.

Every rolled-back attempt is reported as one `TransactionRollback` to the listeners'
``on_rollback`` hooks, and logged on ``stalwart.transaction`` by default: operators
count ``database_transaction_rollbacks_total{reason}`` from it. `TransactionRetry` is
the retry plan both integrations build on: the retry engine's decisions (attempts,
backoff with jitter, deadline), judged by these rules, reported as these events.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

from .._correlation import current_correlation_id
from .._record import Record
from ..backoff import exponential
from ..errors import StalwartError
from ..events import LoggingListener, emit, hooks, listener_tuple, subscribed
from ..retry import RetryPolicy

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from datetime import timedelta

    from tenacity import RetryCallState

    from ..events import RetryDetails

__all__ = [
    "DEADLOCK",
    "DEFAULT_ATTEMPTS",
    "DEFAULT_INITIAL_WAIT",
    "DEFAULT_MAX_WAIT",
    "ERROR",
    "LISTENER_HOOKS",
    "NETWORK_ERROR",
    "RETRIED_REASONS",
    "ROLLBACK_HOOKS",
    "SERIALIZATION_FAILURE",
    "NestedTransactionError",
    "RollbackListener",
    "RollbackLoggingListener",
    "Rollbacks",
    "TransactionRetry",
    "TransactionRollback",
    "connection_closed",
    "exception_type_name",
    "reason_for_sqlstate",
    "rollback_reason",
    "sqlstate_of",
]

SERIALIZATION_FAILURE: Final = "serialization_failure"
"""The reason of a rollback caused by SQLSTATE ``40001``."""
DEADLOCK: Final = "deadlock"
"""The reason of a rollback caused by SQLSTATE ``40P01``."""
NETWORK_ERROR: Final = "network_error"
"""The reason of a rollback caused by a lost or refused connection."""
ERROR: Final = "error"
"""The reason of a rollback caused by anything else (not retried)."""
RETRIED_REASONS: Final = frozenset({SERIALIZATION_FAILURE, DEADLOCK, NETWORK_ERROR})
"""The reasons worth running the whole transaction again for."""

ROLLBACK_HOOKS: Final = ("on_rollback",)
LISTENER_HOOKS: Final = ("on_rollback", "on_retry", "on_give_up")
"""The hooks a retried transaction's listener may have (at least one)."""

DEFAULT_ATTEMPTS: Final = 5
"""Attempts in all (the first included) unless `attempts` says otherwise."""
DEFAULT_INITIAL_WAIT: Final = 0.05
"""Seconds of the wait after the first failed attempt, before jitter."""
DEFAULT_MAX_WAIT: Final = 1.0
"""The longest wait between two attempts, before jitter."""

_SQLSTATE_REASONS: Final = {
    "40001": SERIALIZATION_FAILURE,  # serialization_failure
    "40P01": DEADLOCK,  # deadlock_detected
    "57P01": NETWORK_ERROR,  # admin_shutdown (pg_terminate_backend, a fast shutdown)
    "57P02": NETWORK_ERROR,  # crash_shutdown
    "57P03": NETWORK_ERROR,  # cannot_connect_now (the server is starting up)
}
_CONNECTION_CLASS: Final = "08"  # connection_exception and its subclasses
_SQLSTATE_LENGTH: Final = 5
_DRIVER_PACKAGES: Final = frozenset(
    {"psycopg", "psycopg2", "django", "sqlalchemy", "asyncpg", "pymysql", "MySQLdb", "sqlite3"}
)
_CONNECTION_ERRORS: Final = frozenset({"OperationalError", "InterfaceError"})
# SQLAlchemy's pool raises it (and its subclass InvalidatePoolError) for a connection
# found dead: its own verdict that the connection is gone.
_DISCONNECTION_ERROR: Final = ("sqlalchemy", "DisconnectionError")
_MAX_DEPTH: Final = 4  # how far down a chain of wrapped errors to look

_logger = logging.getLogger("stalwart.transaction")


class NestedTransactionError(StalwartError, RuntimeError):
    """A retried transaction was called inside another transaction.

    Retrying there cannot work: the failure aborts the enclosing transaction too
    (PostgreSQL refuses every statement until it rolls back), and a serialization
    failure would recur on every attempt, since the enclosing transaction keeps its
    snapshot. Raised before the function runs; call it outside any transaction, or
    retry the outermost transaction instead.

    .. versionadded:: 0.1.0
    """


def _chain(exc: BaseException) -> Iterable[BaseException]:
    """`exc`, then the errors it wraps: ``__cause__`` (Django) or ``orig`` (SQLAlchemy)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    for _ in range(_MAX_DEPTH):
        if current is None or id(current) in seen:
            return
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__


def sqlstate_of(exc: BaseException) -> str | None:
    """Return the SQLSTATE behind `exc`, or `None` when it carries none.

    Reads psycopg 3's ``sqlstate`` and psycopg2's ``pgcode``, on `exc` and on the
    driver errors it wraps (Django keeps the driver's error as ``__cause__``,
    SQLAlchemy as ``orig``).

    .. versionadded:: 0.1.0
    """
    for error in _chain(exc):
        for attribute in ("sqlstate", "pgcode"):
            try:
                code = getattr(error, attribute, None)
            except Exception:  # a broken property is no SQLSTATE
                code = None
            if isinstance(code, str) and len(code) == _SQLSTATE_LENGTH:
                return code
    return None


def reason_for_sqlstate(sqlstate: str) -> str:
    """Return the rollback reason for a SQLSTATE: one of the four reasons (see the module).

    .. versionadded:: 0.1.0
    """
    reason = _SQLSTATE_REASONS.get(sqlstate)
    if reason is not None:
        return reason
    return NETWORK_ERROR if sqlstate.startswith(_CONNECTION_CLASS) else ERROR


def _disconnected(exc: BaseException) -> bool:
    """Whether SQLAlchemy judged the connection lost: invalidated, or a ``DisconnectionError``."""
    for error in _chain(exc):
        try:
            invalidated = getattr(error, "connection_invalidated", None) is True
        except Exception:  # a broken property says nothing
            invalidated = False
        if invalidated:
            return True
        for cls in type(error).__mro__:
            if (cls.__module__.partition(".")[0], cls.__name__) == _DISCONNECTION_ERROR:
                return True
    return False


def _is_connection_error(exc: BaseException) -> bool:
    """Whether a driver's (or a framework's) ``OperationalError``/``InterfaceError`` is there."""
    for error in _chain(exc):
        for cls in type(error).__mro__:
            package = cls.__module__.partition(".")[0]
            if cls.__name__ in _CONNECTION_ERRORS and package in _DRIVER_PACKAGES:
                return True
    return False


def connection_closed(raw: object) -> bool:
    """Whether a DB-API connection is closed or broken (`None`: there is none, so yes).

    psycopg 3 says ``closed`` (true once the connection is lost) and ``broken``;
    psycopg2's ``closed`` is a non-zero number once closed or lost.

    .. versionadded:: 0.1.0
    """
    if raw is None:
        return True
    try:
        return bool(getattr(raw, "closed", False)) or bool(getattr(raw, "broken", False))
    except Exception:  # a connection that cannot say is not usable
        return True


def rollback_reason(exc: BaseException, *, connection_lost: bool = False) -> str:
    """Return why a transaction that raised `exc` was rolled back, as a reason.

    A retried SQLSTATE decides first (see the module). Otherwise SQLAlchemy's own
    verdict that the connection is gone (``connection_invalidated``, a
    ``DisconnectionError``) makes a ``network_error``; so does a driver's (or a
    framework's) ``OperationalError`` or ``InterfaceError`` when the connection is lost
    (`connection_lost`, as the caller found it after the rollback), whatever its
    SQLSTATE: the session is gone, so the transaction can only run again on a new one.
    With the connection still open it is an ``error`` (a statement timeout, a lock
    timeout, ...), as is anything else.

    .. versionadded:: 0.1.0
    """
    code = sqlstate_of(exc)
    if code is not None:
        reason = reason_for_sqlstate(code)
        if reason != ERROR:
            return reason
    if _disconnected(exc) or (connection_lost and _is_connection_error(exc)):
        return NETWORK_ERROR
    return ERROR


def exception_type_name(exc: BaseException) -> str:
    """The qualified name of `exc`'s type (safe to log, unlike its message)."""
    cls = type(exc)
    return f"{cls.__module__}.{cls.__qualname__}"


class TransactionRollback(Record):
    """One attempt of a retried transaction was rolled back; given to ``on_rollback``.

    Attributes:
        name: The transaction function's qualified name.
        reason: ``"serialization_failure"``, ``"deadlock"``, ``"network_error"`` or
            ``"error"`` (see the module).
        attempt: The number of the attempt rolled back (1 for the first).
        database: The database the transaction ran on: the Django alias, or the
            database name in the URL of the SQLAlchemy engine.
        will_retry: Whether the transaction runs again; ``False`` on the last
            attempt and for errors that are not retried.
        exception_type: The qualified type name of what the attempt raised (never
            its message).
        sqlstate: The SQLSTATE behind it, when the database gave one.
        correlation_id: The correlation id in force, or ``None``.

    .. versionadded:: 0.1.0
    """

    __slots__ = (  # noqa: RUF023 - fields in order
        "name",
        "reason",
        "attempt",
        "database",
        "will_retry",
        "exception_type",
        "sqlstate",
        "correlation_id",
    )
    name: str
    reason: str
    attempt: int
    database: str
    will_retry: bool
    exception_type: str
    sqlstate: str | None
    correlation_id: str | None

    def __init__(  # noqa: PLR0917 - positional, as the fields of a dataclass are
        self,
        name: str,
        reason: str,
        attempt: int,
        database: str,
        will_retry: bool,
        exception_type: str,
        sqlstate: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        self._set(
            name, reason, attempt, database, will_retry, exception_type, sqlstate, correlation_id
        )


@runtime_checkable
class RollbackListener(Protocol):
    """The hook a retried transaction calls for every rolled-back attempt.

    .. versionadded:: 0.1.0
    """

    def on_rollback(self, event: TransactionRollback) -> None:
        """Called after an attempt was rolled back, before any retry."""


class RollbackLoggingListener:
    """Logs rolled-back attempts on the ``stalwart.transaction`` logger.

    As retries are logged: a rollback that will be retried at
    ``stalwart.LoggingListener.retry_level`` (INFO unless set), one of a retried reason
    that is not retried again (the attempts or the deadline ran out) at WARNING, and
    other errors (the application's own, which propagate anyway) at INFO, with
    structured ``extra``: ``stalwart_event``
    (``"rollback"``), ``function``, ``reason``, ``attempt``, ``database``,
    ``will_retry``, ``exception_type``, ``sqlstate`` and ``correlation_id``.

    Args:
        logger: The logger to write to instead.

    .. versionadded:: 0.1.0
    .. versionchanged:: Unreleased
       A rollback that will be retried logs at the retry level (INFO), not WARNING.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or _logger

    def on_rollback(self, event: TransactionRollback) -> None:
        """Log one rolled-back attempt."""
        if event.reason not in RETRIED_REASONS:
            level = logging.INFO
        elif event.will_retry:
            level = LoggingListener._retry_level  # noqa: SLF001 - the level retries log at
        else:
            level = logging.WARNING
        if not self.logger.isEnabledFor(level):
            return
        self.logger.log(
            level,
            "transaction %s on %r rolled back on attempt %d (%s, %s%s); %s",
            event.name,
            event.database,
            event.attempt,
            event.reason,
            event.exception_type,
            "" if event.sqlstate is None else f", SQLSTATE {event.sqlstate}",
            "retrying" if event.will_retry else "not retrying",
            extra={
                "stalwart_event": "rollback",
                "function": event.name,
                "reason": event.reason,
                "attempt": event.attempt,
                "database": event.database,
                "will_retry": event.will_retry,
                "exception_type": event.exception_type,
                "sqlstate": event.sqlstate,
                "correlation_id": event.correlation_id,
            },
        )


_LOGGING = RollbackLoggingListener()


class Rollbacks:
    """Where the rollbacks of one retried transaction are reported.

    Args:
        listeners: Objects with an ``on_rollback`` method (others are ignored here:
            a listener may also hear the retries, through ``on_retry``).
        log: Whether the logging listener logs each rollback too.

    Raises:
        TypeError: `listeners` is not iterable, or an ``on_rollback`` is async.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_handlers",)

    def __init__(self, listeners: Iterable[object] = (), *, log: bool = True) -> None:
        chosen = [
            listener
            for listener in listener_tuple(listeners)
            if callable(getattr(listener, "on_rollback", None))
        ]
        if log:
            chosen.insert(0, _LOGGING)
        self._handlers: tuple[Callable[[TransactionRollback], object], ...] = hooks(
            chosen, ROLLBACK_HOOKS
        )["on_rollback"]

    def __bool__(self) -> bool:
        return bool(self._handlers or subscribed.on_rollback)

    def report(
        self,
        exc: BaseException,
        *,
        name: str,
        reason: str,
        attempt: int,
        database: str,
        will_retry: bool,
    ) -> None:
        """Build the event for an attempt that raised `exc` and tell every listener.

        Nothing is built when nobody listens; a listener that raises is logged and
        ignored.
        """
        handlers, everywhere = self._handlers, subscribed.on_rollback
        if not (handlers or everywhere):
            return
        event = TransactionRollback(
            name,
            reason,
            attempt,
            database,
            will_retry,
            exception_type_name(exc),
            sqlstate_of(exc),
            current_correlation_id(),
        )
        emit(handlers, event)
        if everywhere:
            emit(everywhere, event)


class _Reporter:
    """Turns the retry engine's retries and give-ups into rollback events."""

    __slots__ = ("owner",)

    def __init__(self, owner: TransactionRetry) -> None:
        self.owner = owner

    def on_retry(self, details: RetryDetails) -> None:
        self._report(details, will_retry=True)

    def on_give_up(self, details: RetryDetails) -> None:
        self._report(details, will_retry=False)

    def _report(self, details: RetryDetails, *, will_retry: bool) -> None:
        exc = details.exception
        owner = self.owner
        if exc is None or not owner.rollbacks:  # pragma: no cover - retried on exceptions only
            return
        owner.rollbacks.report(
            exc,
            name=details.name,
            reason=owner.reason(exc),
            attempt=details.attempt,
            database=owner.database(),
            will_retry=will_retry,
        )


class TransactionRetry:
    """The retry plan of a retried transaction: what runs again, when, and who hears.

    A framework-free core for the integrations that retry whole transactions. It
    holds a `stalwart.RetryPolicy` that retries exactly the attempts `reason` calls
    ``serialization_failure``, ``deadlock`` or ``network_error``, with a backoff and
    jitter, and reports every rolled-back attempt as one `TransactionRollback`:
    retried ones and the last one through the retry engine's ``on_retry`` /
    ``on_give_up`` (so ``will_retry`` is the engine's own decision), the others
    through `failed`, which the attempt calls as it fails.

    Args:
        reason: Returns the rollback reason of an attempt that raised an exception
            (`rollback_reason`, with what the integration knows of its connection).
        database: Returns the database name of the call being retried, for the events
            (called only when there is an event to build).
        attempts: The most attempts in all, the first included (>= 1).
        deadline: Seconds (or a `timedelta`) all attempts may take.
        backoff: The wait between attempts (`stalwart.exponential` from
            `DEFAULT_INITIAL_WAIT` up to `DEFAULT_MAX_WAIT`, full jitter, by default).
        listeners: Objects with ``on_rollback``, ``on_retry`` and/or ``on_give_up``.
        log: Whether rolled-back attempts are logged on ``stalwart.transaction``.

    Raises:
        TypeError: A listener has none of the hooks (or an async one), or an option
            has the wrong type; the message names the option.
        ValueError: `attempts` < 1 or `deadline` not positive.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("attempts", "database", "listeners", "policy", "reason", "rollbacks")

    def __init__(
        self,
        reason: Callable[[BaseException], str],
        database: Callable[[], str],
        *,
        attempts: int = DEFAULT_ATTEMPTS,
        deadline: float | timedelta | None = None,
        backoff: Callable[[RetryCallState], float] | None = None,
        listeners: Iterable[object] = (),
        log: bool = True,
    ) -> None:
        self.reason = reason
        self.database = database
        self.listeners = listener_tuple(listeners)
        hooks(self.listeners, LISTENER_HOOKS)  # refuses listeners with none, or async ones
        self.rollbacks = Rollbacks(self.listeners, log=log)
        retry_listeners = [
            listener
            for listener in self.listeners
            if callable(getattr(listener, "on_retry", None))
            or callable(getattr(listener, "on_give_up", None))
        ]
        self.policy = RetryPolicy(
            on=self.retryable,
            attempts=attempts,
            deadline=deadline,
            backoff=(
                exponential(initial=DEFAULT_INITIAL_WAIT, max=DEFAULT_MAX_WAIT)
                if backoff is None
                else backoff
            ),
            listeners=[_Reporter(self), *retry_listeners],
            log=False,  # the rollback events are logged instead
        )
        self.attempts = self.policy.attempts

    def retryable(self, exc: BaseException) -> bool:
        """Return whether a transaction that raised `exc` runs again."""
        return self.reason(exc) in RETRIED_REASONS

    def failed(self, exc: BaseException, *, name: str, attempt: int) -> str:
        """Report the attempt that raised `exc` unless the retry engine will; return its reason.

        The engine hears only ``Exception`` s it retries (or gives up on): anything
        else (an ``error``, a cancellation) is reported here, with ``will_retry`` false.
        """
        reason = self.reason(exc)
        if (reason not in RETRIED_REASONS or not isinstance(exc, Exception)) and self.rollbacks:
            self.rollbacks.report(
                exc,
                name=name,
                reason=reason,
                attempt=attempt,
                database=self.database(),
                will_retry=False,
            )
        return reason
