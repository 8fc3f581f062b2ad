"""Transactions that retry, for SQLAlchemy `Session` and `AsyncSession`.

.. code-block:: python

    from sqlalchemy.orm import Session, sessionmaker
    from stalwart.contrib.sqlalchemy import run_transaction, transactional

    Sessions = sessionmaker(engine)

    @transactional(Sessions)             # a new session per attempt, passed first
    def transfer(session: Session, source: int, target: int, amount: int) -> None:
        ...

    transfer(1, 2, 100)                  # runs in Sessions.begin(), retried whole

    run_transaction(Sessions, lambda session: ...)   # the same, for one call

    @transactional                       # or: the session comes with the arguments
    def close_day(session: Session, day: date) -> None: ...

The whole transaction runs again, after a backoff with jitter, when the database
reports a serialization failure (SQLSTATE ``40001``), a deadlock (``40P01``) or the
connection is lost (SQLAlchemy invalidated it, a ``DisconnectionError``, SQLSTATE class
``08`` or ``57P01``-``57P03``); any other error is raised at once. Every failed
attempt is rolled back and reported as a `TransactionRollback` to the listeners'
``on_rollback`` and to the process-wide subscribers (`stalwart.events.subscribe`).
``async def`` functions run the same way with `async_sessionmaker` and `AsyncSession`.

The rules are those of Django's `stalwart.contrib.django.db.atomic_retry`: one
framework-free core decides for both (see the ``stalwart.contrib._transaction``
module).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import contextvars
import functools
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    Final,
    ParamSpec,
    Protocol,
    TypeVar,
    cast,
    overload,
)

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_scoped_session,
    async_sessionmaker,
)
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from .._run import is_async_callable, refuse_generator_function
from ._transaction import DEFAULT_ATTEMPTS as _DEFAULT_ATTEMPTS
from ._transaction import (
    NestedTransactionError,
    RollbackListener,
    TransactionRetry,
    TransactionRollback,
    rollback_reason,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterable
    from datetime import timedelta

    from tenacity import RetryCallState

__all__ = [
    "DEFAULT_ATTEMPTS",
    "NestedTransactionError",
    "RollbackListener",
    "TransactionRollback",
    "Transactional",
    "run_transaction",
    "transactional",
]

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_ATTEMPTS: Final = _DEFAULT_ATTEMPTS
"""Attempts in all (the first included) unless `attempts` says otherwise."""
S = TypeVar("S", bound=Session)
AS = TypeVar("AS", bound=AsyncSession)
S_co = TypeVar("S_co", bound=Session, covariant=True)
AS_co = TypeVar("AS_co", bound=AsyncSession, covariant=True)

_AnySession = Session | AsyncSession


class _Call:
    """One call of a transactional function: its name, its session, its attempts."""

    __slots__ = ("attempt", "name", "owner", "session")

    def __init__(self, owner: Transactional, name: str, session: _AnySession | None) -> None:
        self.owner = owner
        self.name = name
        self.session = session  # None: a new session from the factory per attempt
        self.attempt = 0

    def database(self) -> str:
        """The name of the database the transaction runs on, as its engine's URL says."""
        bind = self.owner.bind if self.session is None else self.session.bind
        return _database_of(bind)


_RUNNING: contextvars.ContextVar[_Call | None] = contextvars.ContextVar(
    "stalwart_sqlalchemy_transaction", default=None
)
"""The transactional call running in this context (thread or task), if any."""


def _database_of(bind: object) -> str:
    """The database name in the URL of an engine or connection (``""`` when unknown)."""
    name = getattr(getattr(bind, "url", None), "database", None)
    return name if isinstance(name, str) else ""


def _running_database() -> str:
    running = _RUNNING.get()
    return "" if running is None else running.database()


def _qualified_name(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return f"{module}.{qualname}" if module else str(qualname)


def _check_factory(factory: object) -> None:
    """Refuse what is not a `sessionmaker` or `async_sessionmaker`, saying what to pass."""
    if isinstance(factory, (sessionmaker, async_sessionmaker)):
        return
    if isinstance(factory, (Engine, AsyncEngine)):
        hint = "pass a session factory made from it: sessionmaker(engine)"
    elif isinstance(factory, (scoped_session, async_scoped_session)):
        hint = "pass its session_factory, or decorate a function that takes the session"
    elif isinstance(factory, type) and issubclass(factory, (Session, AsyncSession)):
        hint = "pass a sessionmaker (or async_sessionmaker) bound to an engine"
    elif isinstance(factory, (Session, AsyncSession)):
        hint = "decorate a function that takes the session as an argument (@transactional)"
    else:
        hint = "pass a sessionmaker or an async_sessionmaker"
    raise TypeError(
        f"factory must be a sessionmaker or an async_sessionmaker, got {factory!r}: {hint}"
    )


def _bind_in_transaction(bind: object) -> bool:
    """Whether `bind` is a connection already in a transaction (a session would join it)."""
    return isinstance(bind, (Connection, AsyncConnection)) and bind.in_transaction()


def _find_session(args: tuple[Any, ...], kwargs: dict[str, Any]) -> _AnySession | None:
    """The first `Session` or `AsyncSession` among the arguments, by position then keyword."""
    for value in args:
        if isinstance(value, (Session, AsyncSession)):
            return value
    for value in kwargs.values():
        if isinstance(value, (Session, AsyncSession)):
            return value
    return None


class _SessionDecorator(Protocol[S_co]):
    """Decorates a function whose first parameter is the session it is given."""

    def __call__(self, fn: Callable[Concatenate[S_co, P], T], /) -> Callable[P, T]: ...


class _AsyncSessionDecorator(Protocol[AS_co]):
    """Decorates a coroutine function whose first parameter is the session it is given."""

    def __call__(
        self, fn: Callable[Concatenate[AS_co, P], Coroutine[Any, Any, T]], /
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...


class Transactional:
    """Runs a function in a transaction and retries the whole transaction.

    Made by `transactional` (see there for the arguments); used as a decorator.
    Immutable and reusable: one instance can decorate any number of functions.

    Attributes:
        factory: The `sessionmaker` or `async_sessionmaker` that opens a session per
            attempt, or ``None`` when the session comes with the arguments.
        bind: The engine (or connection) the factory binds its sessions to, if any.
        attempts: The most attempts in all.
        listeners: The listeners given.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_retry", "attempts", "bind", "factory", "listeners")

    def __init__(
        self,
        factory: sessionmaker[Any] | async_sessionmaker[Any] | None = None,
        *,
        attempts: int = DEFAULT_ATTEMPTS,
        deadline: float | timedelta | None = None,
        backoff: Callable[[RetryCallState], float] | None = None,
        listeners: Iterable[object] = (),
        log: bool = True,
    ) -> None:
        if factory is not None:
            _check_factory(factory)
        self.factory = factory
        self.bind: object = None if factory is None else factory.kw.get("bind")
        self._retry = TransactionRetry(
            rollback_reason,
            _running_database,
            attempts=attempts,
            deadline=deadline,
            backoff=backoff,
            listeners=listeners,
            log=log,
        )
        self.listeners = self._retry.listeners
        self.attempts = self._retry.attempts

    def __repr__(self) -> str:
        return (
            f"transactional({self.factory!r}, attempts={self.attempts!r},"
            f" backoff={self._retry.policy.backoff!r})"
        )

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        """Decorate `fn`, sync or async.

        With a factory, `fn`'s first parameter is the session: the decorated function
        takes the others. Without, it keeps its signature and finds the session among
        its arguments.

        Raises:
            TypeError: `fn` is not callable, is a generator function, or its colour
                does not match the factory's (an ``async def`` needs an
                `async_sessionmaker`, a plain ``def`` a `sessionmaker`).
        """
        if not callable(fn) or isinstance(fn, type):
            raise TypeError(f"transactional decorates a function, got {fn!r}")
        name = _qualified_name(fn)
        refuse_generator_function(
            fn, "transactional", "make the transaction a function that returns a list"
        )
        is_async = is_async_callable(fn)
        factory = self.factory
        if isinstance(factory, async_sessionmaker) and not is_async:
            raise TypeError(
                f"transactional(async_sessionmaker) decorates coroutine functions, but {name}"
                " is a plain def: make it `async def`, or pass a sessionmaker"
            )
        if isinstance(factory, sessionmaker) and is_async:
            raise TypeError(
                f"transactional(sessionmaker) decorates plain functions, but {name} is a"
                " coroutine function: pass an async_sessionmaker (AsyncSession)"
            )
        attempt: Callable[..., Any] = (
            _async_attempt(self, cast("Callable[..., Coroutine[Any, Any, Any]]", fn))
            if is_async
            else _sync_attempt(self, fn)
        )
        # The retry engine names the call after `attempt`: give it the function's name.
        functools.update_wrapper(
            attempt, fn, assigned=("__module__", "__name__", "__qualname__"), updated=()
        )
        retried: Callable[..., Any] = self._retry.policy(attempt)
        if is_async:

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                call = self._start(name, args, kwargs, is_async=True)
                token = _RUNNING.set(call)
                try:
                    return await retried(call, args, kwargs)
                finally:
                    _RUNNING.reset(token)

            wrapper: Callable[..., Any] = async_wrapper
        else:

            @functools.wraps(fn)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                call = self._start(name, args, kwargs, is_async=False)
                token = _RUNNING.set(call)
                try:
                    return retried(call, args, kwargs)
                finally:
                    _RUNNING.reset(token)

            wrapper = sync_wrapper
        if factory is not None:
            _drop_first_parameter(wrapper, fn)
        return cast("Callable[P, T]", wrapper)  # with a factory, the overloads type it

    def _start(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], *, is_async: bool
    ) -> _Call:
        """Check that the call may start a transaction of its own, and return its state.

        Raises:
            NestedTransactionError: Another transactional call runs in this context,
                the session given is in a transaction, or the factory's (or the
                session's) bind is a connection already in a transaction.
            TypeError: No session of the right kind among the arguments.
        """
        running = _RUNNING.get()
        if running is not None:
            raise NestedTransactionError(
                f"{name} is transactional but was called inside {running.name}, another"
                " transactional call: a transaction cannot be retried from inside another"
                " one (a retry of the outer transaction would run the inner one again, and"
                " its separate connection could wait on the outer one's locks for ever)."
                " Call the inner function's body directly, passing the session along"
            )
        session = None
        if self.factory is None:
            session = _find_session(args, kwargs)
            wanted = AsyncSession if is_async else Session
            if not isinstance(session, wanted):
                got = "none" if session is None else type(session).__name__
                raise TypeError(
                    f"{name} is transactional without a session factory, so it takes"
                    f" a {wanted.__name__} among its arguments; got {got}. Pass one, or"
                    " decorate with @transactional(sessionmaker) to open one per attempt"
                )
            if session.in_transaction():
                raise NestedTransactionError(
                    f"{name} is transactional but the session it was given is already in a"
                    " transaction (begun explicitly, or by autobegin on its first query):"
                    " a transaction cannot be retried from inside another one. Commit or"
                    " roll back first, or give it a session that is not in a transaction"
                )
            bind: object = session.bind
        else:
            bind = self.bind
        if _bind_in_transaction(bind):
            raise NestedTransactionError(
                f"{name} is transactional but its session is bound to a connection already"
                " in a transaction, which the session would join: a transaction cannot be"
                " retried from inside another one. Bind the sessions to an engine"
            )
        return _Call(self, name, session)


def _drop_first_parameter(wrapper: Callable[..., Any], fn: Callable[..., Any]) -> None:
    """Show `wrapper`'s signature as `fn`'s without its first parameter, the session."""
    import inspect  # noqa: PLC0415 - used only when decorating; it costs ~4 ms at import

    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # pragma: no cover - a callable without a signature
        return
    parameters = list(signature.parameters.values())[1:]
    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]


# The two shells: the only difference between colours is `with`/`async with` and the
# call/await. What is retried, when, and what is reported is decided by TransactionRetry.


def _sync_attempt(owner: Transactional, fn: Callable[..., T]) -> Callable[..., T]:
    factory = cast("sessionmaker[Session]", owner.factory)
    report = owner._retry.failed  # noqa: SLF001 - the owner's own plan

    def attempt(call: _Call, args: Any, kwargs: Any) -> T:
        call.attempt += 1
        try:
            if call.session is None:
                with factory.begin() as session:
                    return fn(session, *args, **kwargs)
            with cast("Session", call.session).begin():
                return fn(*args, **kwargs)
        except BaseException as exc:
            report(exc, name=call.name, attempt=call.attempt)
            raise

    return attempt


def _async_attempt(
    owner: Transactional, fn: Callable[..., Coroutine[Any, Any, T]]
) -> Callable[..., Coroutine[Any, Any, T]]:
    factory = cast("async_sessionmaker[AsyncSession]", owner.factory)
    report = owner._retry.failed  # noqa: SLF001 - the owner's own plan

    async def attempt(call: _Call, args: Any, kwargs: Any) -> T:
        call.attempt += 1
        try:
            if call.session is None:
                async with factory.begin() as session:
                    return await fn(session, *args, **kwargs)
            async with cast("AsyncSession", call.session).begin():
                return await fn(*args, **kwargs)
        except BaseException as exc:
            report(exc, name=call.name, attempt=call.attempt)
            raise

    return attempt


@overload
def transactional(  # type: ignore[overload-overlap]  # a sessionmaker is callable too
    factory: sessionmaker[S],
    /,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    deadline: float | timedelta | None = None,
    backoff: Callable[[RetryCallState], float] | None = None,
    listeners: Iterable[object] = (),
    log: bool = True,
) -> _SessionDecorator[S]: ...


@overload
def transactional(  # type: ignore[overload-overlap]  # so is an async_sessionmaker
    factory: async_sessionmaker[AS],
    /,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    deadline: float | timedelta | None = None,
    backoff: Callable[[RetryCallState], float] | None = None,
    listeners: Iterable[object] = (),
    log: bool = True,
) -> _AsyncSessionDecorator[AS]: ...


@overload
def transactional(fn: Callable[P, T], /) -> Callable[P, T]: ...


@overload
def transactional(
    factory: None = None,
    /,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    deadline: float | timedelta | None = None,
    backoff: Callable[[RetryCallState], float] | None = None,
    listeners: Iterable[object] = (),
    log: bool = True,
) -> Transactional: ...


def transactional(
    factory: Any = None,
    /,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    deadline: float | timedelta | None = None,
    backoff: Callable[[RetryCallState], float] | None = None,
    listeners: Iterable[object] = (),
    log: bool = True,
) -> Any:
    """Run a function in a transaction, and retry the whole transaction when it may succeed.

    Two forms, sync and async alike:

    .. code-block:: python

        Sessions = sessionmaker(engine)          # or async_sessionmaker(async_engine)

        @transactional(Sessions, attempts=3)
        def transfer(session: Session, source: int, target: int, amount: int) -> None: ...

        transfer(1, 2, 100)   # each attempt: `with Sessions.begin() as session`

        @transactional                            # or @transactional(attempts=3)
        async def close_day(session: AsyncSession, day: date) -> None: ...

        await close_day(session, day)   # each attempt: `async with session.begin()`

    - **With a factory** (a `sessionmaker` or an `async_sessionmaker`), each attempt
      opens a new session in a transaction (``factory.begin()``), passes it as the
      function's first argument, commits when the function returns, rolls back and
      closes the session when it raises. The decorated function takes the other
      arguments. The session is closed when the call returns: return plain values,
      or make the factory with ``expire_on_commit=False`` to use the ORM objects after.
    - **Without**, the function takes the session among its arguments (the first
      `Session`, or `AsyncSession` for an ``async def``, by position then by keyword):
      each attempt runs in ``session.begin()`` on that session, which stays open.

    A transaction runs again, after a backoff with jitter, when it fails with a
    serialization failure (SQLSTATE ``40001``), a deadlock (``40P01``), or a lost
    connection: SQLAlchemy invalidated it (``DBAPIError.connection_invalidated``), a
    ``DisconnectionError``, SQLSTATE class ``08`` or ``57P01``-``57P03`` (the server
    ended the session). The next attempt runs on a fresh connection from the pool.
    The SQLSTATE is read from psycopg 3, psycopg2 and asyncpg errors through
    SQLAlchemy's ``orig``. Anything else (``IntegrityError``, a statement timeout, the
    function's own exceptions) is raised at once, after the rollback. When attempts
    run out, the last error is raised as it was, with a note (PEP 678). A
    `stalwart.deadline` in force caps the retries, as for `stalwart.retry`.

    It never runs inside a transaction it did not start: the call raises
    `NestedTransactionError`, before the function runs, when the session given is
    already in a transaction (``session.in_transaction()``, autobegin included), when
    the sessions are bound to a connection already in a transaction, or when another
    transactional call is running in the same thread or task.

    Args:
        factory: The `sessionmaker` or `async_sessionmaker` to open a session per
            attempt with; ``None`` (or a bare ``@transactional``) when the session
            comes with the arguments. Given the function itself, it is decorated
            with the defaults.
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
        A decorator; or, given the function (bare ``@transactional``), the function
        decorated with the defaults.

    Raises:
        TypeError: `factory` is neither a session factory nor a function (an engine,
            a `Session` class, a `scoped_session`...), an option has the wrong type,
            a listener has none of the hooks (or an async one), or the function's
            colour does not match the factory's.
        ValueError: `attempts` < 1 or `deadline` not positive.

    .. versionadded:: 0.1.0
    """
    options: dict[str, Any] = {
        "attempts": attempts,
        "deadline": deadline,
        "backoff": backoff,
        "listeners": listeners,
        "log": log,
    }
    if (
        factory is None
        or isinstance(factory, (sessionmaker, async_sessionmaker))
        or not callable(factory)
        or isinstance(factory, (type, scoped_session, async_scoped_session))
    ):
        return Transactional(factory, **options)
    return Transactional(**options)(factory)


@overload
def run_transaction(
    factory: async_sessionmaker[AS],
    fn: Callable[[AS], Coroutine[Any, Any, T]],
    /,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    deadline: float | timedelta | None = None,
    backoff: Callable[[RetryCallState], float] | None = None,
    listeners: Iterable[object] = (),
    log: bool = True,
) -> Coroutine[Any, Any, T]: ...


@overload
def run_transaction(
    factory: sessionmaker[S],
    fn: Callable[[S], T],
    /,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    deadline: float | timedelta | None = None,
    backoff: Callable[[RetryCallState], float] | None = None,
    listeners: Iterable[object] = (),
    log: bool = True,
) -> T: ...


def run_transaction(
    factory: Any,
    fn: Callable[[Any], Any],
    /,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    deadline: float | timedelta | None = None,
    backoff: Callable[[RetryCallState], float] | None = None,
    listeners: Iterable[object] = (),
    log: bool = True,
) -> Any:
    """Run ``fn(session)`` in a transaction of a new session, retried as `transactional` does.

    .. code-block:: python

        balance = run_transaction(Sessions, lambda session: read_balance(session, 7))
        balance = await run_transaction(AsyncSessions, read_balance_async)

    The same as ``transactional(factory, ...)(fn)()``, for one call: each attempt
    opens a session with ``factory.begin()`` and calls `fn` with it. With an
    `async_sessionmaker`, `fn` is a coroutine function and the result is awaited.

    Args:
        factory: A `sessionmaker` or an `async_sessionmaker`.
        fn: The transaction: takes the session, returns the result.
        attempts: As for `transactional`.
        deadline: As for `transactional`.
        backoff: As for `transactional`.
        listeners: As for `transactional`.
        log: As for `transactional`.

    Returns:
        What `fn` returned on the attempt that committed (a coroutine to await, with
        an `async_sessionmaker`).

    Raises:
        TypeError: As for `transactional`; also when `factory` is not a session
            factory.
        ValueError: As for `transactional`.
        NestedTransactionError: Called inside another transactional call, or the
            factory binds to a connection already in a transaction.

    .. versionadded:: 0.1.0
    """
    if factory is None:
        _check_factory(factory)
    decorated = Transactional(
        factory,
        attempts=attempts,
        deadline=deadline,
        backoff=backoff,
        listeners=listeners,
        log=log,
    )(fn)
    return cast("Callable[[], Any]", decorated)()
