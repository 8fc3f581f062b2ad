"""Transactions that retry on PostgreSQL: `atomic_retry` (alias `transactional`).

.. code-block:: python

    from stalwart.contrib.django.db import atomic_retry

    @atomic_retry                        # or @atomic_retry(using="other", attempts=3)
    def transfer(source: int, target: int, amount: int) -> None:
        ...                              # runs in transaction.atomic(), retried whole

The whole transaction runs again, after a backoff with jitter, when PostgreSQL
reports a serialization failure (SQLSTATE ``40001``), a deadlock (``40P01``) or the
connection is lost; any other error is raised at once. Every failed attempt is rolled
back, so its ``transaction.on_commit`` callbacks never run, and is reported as a
`TransactionRollback` to the listeners' ``on_rollback``.

Also here: `install_thread_cleanup`, which closes the database connections opened in
the worker threads of sync `stalwart.timeout` calls (the app installs it when ready).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar, overload

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction

from ..._run import is_async_callable, refuse_generator_function
from ...timeout import add_worker_cleanup
from .._transaction import DEFAULT_ATTEMPTS as _DEFAULT_ATTEMPTS
from .._transaction import (
    NETWORK_ERROR,
    NestedTransactionError,
    RollbackListener,
    TransactionRetry,
    TransactionRollback,
    connection_closed,
    rollback_reason,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from datetime import timedelta

    from django.db.backends.base.base import BaseDatabaseWrapper
    from tenacity import RetryCallState

__all__ = [
    "DEFAULT_ATTEMPTS",
    "AtomicRetry",
    "NestedTransactionError",
    "RollbackListener",
    "TransactionRollback",
    "atomic_retry",
    "install_thread_cleanup",
    "transactional",
]

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_ATTEMPTS: Final = _DEFAULT_ATTEMPTS
"""Attempts in all (the first included) unless `attempts` says otherwise."""


def _qualified_name(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return f"{module}.{qualname}" if module else str(qualname)


def _discard(connection: BaseDatabaseWrapper) -> None:
    """Close a connection that was lost, so that Django opens a new one when next used."""
    with contextlib.suppress(DatabaseError):  # closing a broken connection may complain
        connection.close()


def _only_test_case_blocks(connection: BaseDatabaseWrapper) -> bool:
    """Whether every enclosing atomic block is one of Django's `TestCase` (marked by it)."""
    blocks = connection.atomic_blocks
    return bool(blocks) and all(getattr(block, "_from_testcase", False) for block in blocks)


class AtomicRetry:
    """Runs a function in ``transaction.atomic`` and retries the whole transaction.

    Made by `atomic_retry` (see there for the arguments); used as a decorator.
    Immutable and reusable: one instance can decorate any number of functions.

    Attributes:
        database: The database alias the transactions run on.
        attempts: The most attempts in all.
        listeners: The listeners given.
        rollbacks: Where rolled-back attempts are reported.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_retry", "attempts", "database", "listeners", "rollbacks")

    def __init__(
        self,
        *,
        using: str | None = None,
        attempts: int = DEFAULT_ATTEMPTS,
        deadline: float | timedelta | None = None,
        backoff: Callable[[RetryCallState], float] | None = None,
        listeners: Iterable[object] = (),
        log: bool = True,
    ) -> None:
        if using is not None and not isinstance(using, str):
            raise TypeError(f"using must be a database alias (a string) or None, got {using!r}")
        if using == "":
            raise ValueError(f"using must be a database alias (a string) or None, got {using!r}")
        alias = DEFAULT_DB_ALIAS if using is None else using
        self.database = alias
        self._retry = TransactionRetry(
            self.reason,
            lambda: alias,
            attempts=attempts,
            deadline=deadline,
            backoff=backoff,
            listeners=listeners,
            log=log,
        )
        self.listeners = self._retry.listeners
        self.rollbacks = self._retry.rollbacks
        self.attempts = self._retry.attempts

    def __repr__(self) -> str:
        return (
            f"atomic_retry(using={self.database!r}, attempts={self.attempts!r},"
            f" backoff={self._retry.policy.backoff!r})"
        )

    def reason(self, exc: BaseException) -> str:
        """Return why an attempt that raised `exc` was rolled back (a rollback reason)."""
        try:
            raw = connections[self.database].connection
        except Exception:  # no usable connection to look at
            raw = None
        return rollback_reason(exc, connection_lost=connection_closed(raw))

    def retryable(self, exc: BaseException) -> bool:
        """Return whether a transaction that raised `exc` runs again."""
        return self._retry.retryable(exc)

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        """Decorate `fn`, a plain (sync) function, keeping its signature.

        Raises:
            TypeError: `fn` is a coroutine function (use ``sync_to_async``), a
                generator function, or not callable.
        """
        if not callable(fn):
            raise TypeError(f"atomic_retry decorates a function, got {fn!r}")
        name = _qualified_name(fn)
        if is_async_callable(fn):
            raise TypeError(
                f"atomic_retry cannot decorate {name}, a coroutine function: Django runs a"
                " transaction in sync code, on one thread's connection. Make the transaction"
                " a plain def decorated with @atomic_retry, and call it from async code with"
                " `await asgiref.sync.sync_to_async(fn)(...)`"
            )
        refuse_generator_function(
            fn, "atomic_retry", "make the transaction a function that returns a list"
        )
        database = self.database
        failed = self._retry.failed

        def attempt(calls: list[int], args: Any, kwargs: Any) -> T:
            calls[0] += 1
            try:
                with transaction.atomic(using=database):
                    return fn(*args, **kwargs)
            except BaseException as exc:
                # Reported here unless the retry engine will; a lost connection is
                # closed, so that the next attempt opens a new one.
                if failed(exc, name=name, attempt=calls[0]) == NETWORK_ERROR:
                    _discard(connections[database])
                raise

        # The retry engine names the call after `attempt`: give it the function's name.
        functools.update_wrapper(
            attempt, fn, assigned=("__module__", "__name__", "__qualname__"), updated=()
        )
        retried = self._retry.policy(attempt)

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            connection = connections[database]
            if connection.in_atomic_block:
                return self._once_inside(connection, fn, name, args, kwargs)
            return retried([0], args, kwargs)

        return wrapper

    def _once_inside(
        self,
        connection: BaseDatabaseWrapper,
        fn: Callable[..., T],
        name: str,
        args: Any,
        kwargs: Any,
    ) -> T:
        """Run `fn` once in a savepoint inside Django's `TestCase`; refuse other nesting."""
        if not _only_test_case_blocks(connection):
            raise NestedTransactionError(
                f"{name} is decorated with atomic_retry but was called inside an atomic"
                f" block on database {self.database!r}: a transaction cannot be retried"
                " from inside another one (the enclosing transaction stays aborted after"
                " a failure, and keeps its snapshot). Call it outside any"
                " transaction.atomic block, or retry the outermost transaction instead"
            )
        # Django's TestCase runs each test in a transaction of its own, which
        # `atomic(durable=True)` ignores too: run once, unretried, in a savepoint.
        try:
            with transaction.atomic(using=self.database):
                return fn(*args, **kwargs)
        except BaseException as exc:
            self.rollbacks.report(
                exc,
                name=name,
                reason=self.reason(exc),
                attempt=1,
                database=self.database,
                will_retry=False,
            )
            raise


@overload
def atomic_retry(fn: Callable[P, T], /) -> Callable[P, T]: ...


@overload
def atomic_retry(
    fn: None = None,
    /,
    *,
    using: str | None = None,
    attempts: int = DEFAULT_ATTEMPTS,
    deadline: float | timedelta | None = None,
    backoff: Callable[[RetryCallState], float] | None = None,
    listeners: Iterable[object] = (),
    log: bool = True,
) -> AtomicRetry: ...


def atomic_retry(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    using: str | None = None,
    attempts: int = DEFAULT_ATTEMPTS,
    deadline: float | timedelta | None = None,
    backoff: Callable[[RetryCallState], float] | None = None,
    listeners: Iterable[object] = (),
    log: bool = True,
) -> Any:
    """Run a function in ``transaction.atomic`` and retry the whole transaction.

    .. code-block:: python

        @atomic_retry
        def transfer(source: int, target: int, amount: int) -> None: ...

        @atomic_retry(using="ledger", attempts=3)
        def close_day() -> None: ...

    A transaction runs again, after a backoff with jitter, when it fails with

    - a serialization failure (SQLSTATE ``40001``), as ``SERIALIZABLE`` and
      ``REPEATABLE READ`` transactions raise under concurrent updates;
    - a deadlock (``40P01``);
    - a lost connection: SQLSTATE class ``08``, the server ending the session
      (``57P01``-``57P03``), or an ``OperationalError``/``InterfaceError`` after which
      the connection is closed. The connection is then closed, so that the next
      attempt opens a new one.

    The SQLSTATE is read from psycopg 3 (``sqlstate``) or psycopg2 (``pgcode``),
    through Django's wrapped errors. Anything else (``IntegrityError``, a statement
    timeout, the function's own exceptions) is raised at once. Every failed attempt is
    rolled back by ``transaction.atomic``, so its ``transaction.on_commit`` callbacks
    never run: only the attempt that commits runs its own, once.

    When attempts run out, the last error is raised as it was, with a note (PEP 678)
    saying how many attempts were made. A `stalwart.deadline` in force caps the
    retries, as for `stalwart.retry`.

    Called inside an atomic block of the same database, it raises
    `NestedTransactionError` before the function runs: a transaction cannot be retried
    from inside another one. The one exception is the transaction Django's
    ``TestCase`` wraps each test in (as for ``atomic(durable=True)``): there the
    function runs once, in a savepoint, without retries; test retries with
    ``TransactionTestCase``.

    Async code: decorating an ``async def`` raises `TypeError`. Decorate a plain
    function and call it with ``await sync_to_async(fn)(...)``: the whole transaction,
    its retries and their waits run in one worker thread.

    Args:
        fn: The function, for a bare ``@atomic_retry``.
        using: The database alias (``"default"`` when ``None``).
        attempts: The most attempts in all, the first included (>= 1).
        deadline: Seconds (or a `timedelta`) all attempts may take, counted from the
            first one's start.
        backoff: The wait between attempts (`stalwart.exponential` from 0.05 s up to
            1 s, with full jitter, by default; any stalwart backoff or tenacity wait).
        listeners: Objects with an ``on_rollback`` method, called with a
            `TransactionRollback` for every rolled-back attempt, and/or ``on_retry``
            and ``on_give_up`` (`stalwart.RetryDetails`).
        log: Whether rolled-back attempts are logged on ``stalwart.transaction``
            (as retries are: one to be retried at INFO, the last of a retried
            reason at WARNING, other errors at INFO).

    Returns:
        An `AtomicRetry` to decorate with; or, given the function (bare
        ``@atomic_retry``), the function decorated with the defaults.

    Raises:
        TypeError: An option has the wrong type, a listener has none of the hooks (or
            an async one), the alias is given by position (``@atomic_retry("other")``),
            or the function is a coroutine or generator function.
        ValueError: `attempts` < 1, `deadline` not positive, or `using` empty.

    .. versionadded:: 0.1.0
    """
    if isinstance(fn, str):
        raise TypeError(
            f"atomic_retry takes the database alias by keyword: write"
            f" @atomic_retry(using={fn!r}), got {fn!r} by position"
        )
    decorator = AtomicRetry(
        using=using,
        attempts=attempts,
        deadline=deadline,
        backoff=backoff,
        listeners=listeners,
        log=log,
    )
    return decorator if fn is None else decorator(fn)


transactional = atomic_retry
"""`atomic_retry` by another name."""


def _close_thread_connections() -> None:
    """Close the database connections this thread opened (every alias)."""
    for connection in connections.all(initialized_only=True):
        with contextlib.suppress(DatabaseError):  # a broken one is closed all the same
            connection.close()


def install_thread_cleanup() -> Callable[[], None]:
    """Close the database connections of the worker threads of sync `stalwart.timeout`.

    Off the main thread, a function decorated with a sync `stalwart.timeout` runs each
    call in a worker thread of its own. Django connections are per thread: those the
    call opens there would stay open, one per call, until garbage collection. Once
    installed, every such worker thread closes its connections when its call ends
    (also a call abandoned on timeout, when it finally ends). The caller's own
    connections are never touched, and calls in the main thread (``SIGALRM``) are
    not affected.

    The app (``stalwart.contrib.django``) installs it when it is ready. Installing it
    again does nothing.

    Returns:
        A function that uninstalls it.

    .. versionadded:: 0.1.0
    """
    return add_worker_cleanup(_close_thread_connections)
