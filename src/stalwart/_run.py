"""The two colours: the only module that runs calls and sleeps, blocking or awaited.

Every decision (retry or not, how long to wait, give up) is made by colour-blind
objects elsewhere; the shells here only call the function, record what happened,
and sleep with `time.sleep` or `anyio.sleep` as the decision says.

A decision object (a "call") offers:

- ``failed(exc) -> call`` and ``returned(value) -> call`` to record an attempt;
- ``next() -> float | Done``: seconds to sleep before the next attempt, or the end
  (it raises the final exception itself when giving up).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar, cast

from . import _clock

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Coroutine, Iterator
    from types import TracebackType

    from typing_extensions import Self

__all__ = [
    "Attempt",
    "Done",
    "Guard",
    "aiterate",
    "is_async_callable",
    "is_generator_function",
    "iterate",
    "protect",
    "refuse_generator_function",
    "retry_async",
    "retry_sync",
    "wrap",
]

P = ParamSpec("P")
T = TypeVar("T")


class Done(Generic[T]):
    """The end of a retry loop, carrying the value to return."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value


class Call(Protocol):
    """The decision side of one retried call (see the module docstring)."""

    @property
    def attempt(self) -> int:
        """The number of the attempt in progress or just recorded."""

    @property
    def recorded(self) -> bool:
        """Whether the current attempt's outcome has been recorded."""

    def failed(self, exc: BaseException) -> Call:
        """Record that the current attempt raised `exc`."""

    def returned(self, value: object) -> Call:
        """Record that the current attempt returned `value`."""

    def next(self) -> float | Done[Any]:
        """Decide: seconds to sleep before the next attempt, or the end."""


Begin = Callable[[str, float, Any, Any, Any], Call]
"""Starts the decision state of one call: ``begin(name, start, fn, args, kwargs)``,
where `start` is when its first attempt began."""


def _name_of(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return f"{module}.{qualname}" if module else str(qualname)


def is_async_callable(fn: object) -> bool:
    """Return whether calling `fn` gives a coroutine, so it needs the async shell.

    True for coroutine functions and methods, for `functools.partial` objects of
    them, and for objects (not classes) whose ``__call__`` is ``async def``, which
    `inspect.iscoroutinefunction` alone does not recognise.
    """
    import inspect  # noqa: PLC0415 - used only when decorating; it costs ~4 ms at import

    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    if inspect.isroutine(fn) or not callable(fn):
        return False
    # A call looks `__call__` up on the type: for a class, that is its metaclass's
    # (making an instance), whatever ``async def __call__`` its instances have.
    return inspect.iscoroutinefunction(type(fn).__call__)


def is_generator_function(fn: object) -> bool:
    """Return whether `fn` is a generator or async generator function.

    Wrapping one would only see the generator being made, never what its iteration
    raises, so the decorators refuse them.
    """
    import inspect  # noqa: PLC0415 - used only when decorating; it costs ~4 ms at import

    return inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)


def refuse_generator_function(fn: object, decorator: str, instead: str) -> None:
    """Raise `TypeError` if `fn` is a generator or async generator function.

    The message names the decorator and the function, says why it cannot work, and
    what to do `instead`.
    """
    if not is_generator_function(fn):
        return
    import inspect  # noqa: PLC0415 - loaded by is_generator_function already

    kind = "an async generator" if inspect.isasyncgenfunction(fn) else "a generator"
    name = getattr(fn, "__qualname__", None) or repr(fn)
    raise TypeError(
        f"{decorator} cannot wrap {name}: {name} is {kind} function, whose body runs only"
        f" as it is iterated, after the wrapper has returned; {instead}"
    )


def wrap(
    fn: Callable[P, T],
    begin: Begin,
    check: Callable[[Any], bool] | None,
    deposit: Callable[[], object] | None = None,
) -> Callable[P, T]:
    """Wrap `fn` (sync or async) so that failures are retried as `begin`'s call decides.

    `check` is the optional predicate on results that asks for another attempt;
    `deposit`, if given, is called once per call before its first attempt (a retry
    budget's).

    The first attempt runs before any retry state exists: a call that succeeds pays
    one clock read and a ``try``.
    """
    refuse_generator_function(
        fn,
        "stalwart.retry",
        "retry the code inside its body instead (for attempt in stalwart.retrying(...)),"
        " or decorate a function that returns a list",
    )
    if is_async_callable(fn):
        afn = cast("Callable[P, Coroutine[Any, Any, T]]", fn)
        awrapped = _wrap_async(afn, begin, check)
        if deposit is not None:
            awrapped = _deposit_async(awrapped, deposit)
        return cast("Callable[P, T]", awrapped)
    wrapped = _wrap_sync(fn, begin, check)
    return wrapped if deposit is None else _deposit_sync(wrapped, deposit)


def _deposit_sync(wrapped: Callable[P, T], deposit: Callable[[], object]) -> Callable[P, T]:
    """`wrapped`, calling `deposit` first: only calls with a budget pay for it."""

    @functools.wraps(wrapped)
    def deposited(*args: P.args, **kwargs: P.kwargs) -> T:
        deposit()
        return wrapped(*args, **kwargs)

    return deposited


def _deposit_async(
    wrapped: Callable[P, Coroutine[Any, Any, T]], deposit: Callable[[], object]
) -> Callable[P, Coroutine[Any, Any, T]]:
    @functools.wraps(wrapped)
    async def deposited(*args: P.args, **kwargs: P.kwargs) -> T:
        deposit()
        return await wrapped(*args, **kwargs)

    return deposited


def _wrap_sync(
    fn: Callable[P, T], begin: Begin, check: Callable[[Any], bool] | None
) -> Callable[P, T]:
    name = _name_of(fn)

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        start = _clock.now()
        try:
            value = fn(*args, **kwargs)
        except Exception as exc:
            call = begin(name, start, fn, args, kwargs).failed(exc)
        else:
            if check is None or not check(value):
                return value
            call = begin(name, start, fn, args, kwargs).returned(value)
        # Outside the `except` block, so later failures do not chain onto this one.
        return retry_sync(call, fn, args, kwargs)

    return wrapper


def _wrap_async(
    fn: Callable[P, Coroutine[Any, Any, T]], begin: Begin, check: Callable[[Any], bool] | None
) -> Callable[P, Coroutine[Any, Any, T]]:
    name = _name_of(fn)

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        start = _clock.now()
        try:
            value = await fn(*args, **kwargs)
        except Exception as exc:
            call = begin(name, start, fn, args, kwargs).failed(exc)
        else:
            if check is None or not check(value):
                return value
            call = begin(name, start, fn, args, kwargs).returned(value)
        return await retry_async(call, fn, args, kwargs)

    return wrapper


def retry_sync(call: Call, fn: Callable[..., T], args: Any, kwargs: Any) -> T:
    """Carry on a call whose first attempt is recorded in `call`, until `call` ends it."""
    while True:
        action = call.next()
        if isinstance(action, Done):
            return cast("T", action.value)
        _clock.sleep(action)
        try:
            value = fn(*args, **kwargs)
        except Exception as exc:
            call.failed(exc)
        else:
            call.returned(value)


async def retry_async(
    call: Call, fn: Callable[..., Coroutine[Any, Any, T]], args: Any, kwargs: Any
) -> T:
    """`retry_sync` for async code: awaits each attempt and sleeps with anyio."""
    while True:
        action = call.next()
        if isinstance(action, Done):
            return cast("T", action.value)
        await _clock.async_sleep(action)
        try:
            value = await fn(*args, **kwargs)
        except Exception as exc:
            call.failed(exc)
        else:
            call.returned(value)


class Attempt:
    """One attempt of a `stalwart.retrying` loop: run its body inside ``with attempt:``.

    An exception raised in the body is recorded and swallowed; the loop then
    retries or re-raises it as the policy decides. Cancellation,
    `KeyboardInterrupt`, `SystemExit` and `GeneratorExit` pass straight through.

    Attributes:
        number: The attempt's number, from 1.

    .. versionadded:: 0.1.0
    """

    __module__ = "stalwart"
    __slots__ = ("_call", "number")

    def __init__(self, call: Call) -> None:
        self._call = call
        self.number = call.attempt

    def __repr__(self) -> str:
        return f"<stalwart.Attempt number={self.number}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None:
            self._call.returned(None)
            return False
        if not isinstance(exc, Exception):
            return False
        self._call.failed(exc)
        return True


def _unused_attempt(name: str) -> RuntimeError:
    return RuntimeError(f"each attempt of retrying() ({name}) must run inside `with attempt:`")


def iterate(
    begin: Begin, name: str, deposit: Callable[[], object] | None = None
) -> Iterator[Attempt]:
    """Yield attempts for a ``for`` loop, sleeping between them (`deposit` first)."""
    if deposit is not None:
        deposit()
    call = begin(name, _clock.now(), None, (), {})
    while True:
        yield Attempt(call)
        if not call.recorded:
            raise _unused_attempt(name)
        action = call.next()
        if isinstance(action, Done):
            return
        _clock.sleep(action)


async def aiterate(
    begin: Begin, name: str, deposit: Callable[[], object] | None = None
) -> AsyncIterator[Attempt]:
    """Yield attempts for an ``async for`` loop, sleeping between them (`deposit` first)."""
    if deposit is not None:
        deposit()
    call = begin(name, _clock.now(), None, (), {})
    while True:
        yield Attempt(call)
        if not call.recorded:
            raise _unused_attempt(name)
        action = call.next()
        if isinstance(action, Done):
            return
        await _clock.async_sleep(action)


class FastState(Protocol):
    """The part of a breaker's state that the hot path touches."""

    fast_generation: int
    io: bool

    def record_success(self, generation: int) -> Any:
        """Record a success; return a transition to announce, or None."""


class Guard(Protocol):
    """What the breaker shells need: permission before a call, its outcome after."""

    @property
    def fast_state(self) -> FastState:
        """The state read on the hot path: no call needs more while all is well."""

    @property
    def notify_success(self) -> bool:
        """Whether successes must go through `record_success` (someone listens)."""

    @property
    def timed(self) -> bool:
        """Whether call durations are measured (slow-call tracking)."""

    @property
    def clock(self) -> Callable[[], float]:
        """The clock the guard's own decisions read; durations are measured on it."""

    def admit(self) -> int:
        """Return a token for the call, or raise `CircuitOpenError`."""

    @property
    def fast_admit(self) -> Callable[[], int]:
        """`admit`, or an equivalent that rejects in fewer frames (for the hot path)."""

    def record_success(self, token: int, duration: float | None = None) -> None:
        """Report that the call with `token` succeeded."""

    def record_exception(
        self, token: int, exc: BaseException, duration: float | None = None
    ) -> None:
        """Report that the call with `token` raised `exc`."""

    async def admit_async(self) -> int:
        """`admit` for async code."""

    async def record_success_async(self, token: int, duration: float | None = None) -> None:
        """`record_success` for async code."""

    async def record_exception_async(
        self, token: int, exc: BaseException, duration: float | None = None
    ) -> None:
        """`record_exception` for async code."""

    def announce(self, transition: Any) -> None:
        """Tell listeners about a state change."""


def protect(fn: Callable[P, T], guard: Guard) -> Callable[P, T]:
    """Wrap `fn` (sync or async) so every call asks `guard` first and reports after.

    While the breaker admits calls without a decision and nobody listens for
    successes, a successful call costs one attribute read and one recorded success.
    Measured calls (slow-call tracking) or success listeners take the full path.
    Durations are measured on the guard's clock, so that they agree with its windows.

    Raises:
        TypeError: `fn` is a generator function: the guard would only see the
            generator being created, never the failures of its iteration.
    """
    refuse_generator_function(
        fn,
        "a circuit breaker",
        "protect the code inside its body instead (with breaker:, or async with)",
    )
    if is_async_callable(fn):
        afn = cast("Callable[P, Coroutine[Any, Any, T]]", fn)
        return cast("Callable[P, T]", _protect_async(afn, guard))
    admit, raised = guard.fast_admit, guard.record_exception

    if guard.timed or guard.notify_success:
        succeeded, now = guard.record_success, guard.clock

        @functools.wraps(fn)
        def full_wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            token = admit()
            start = now()
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                raised(token, exc, now() - start)
                raise
            succeeded(token, now() - start)
            return result

        return full_wrapper

    state, announce = guard.fast_state, guard.announce
    record = state.record_success

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        token = state.fast_generation
        if token < 0:
            token = admit()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            raised(token, exc)
            raise
        transition = record(token)
        if transition is not None:
            announce(transition)
        return result

    return wrapper


def _protect_async(
    fn: Callable[P, Coroutine[Any, Any, T]], guard: Guard
) -> Callable[P, Coroutine[Any, Any, T]]:
    state = guard.fast_state
    if state.io or guard.timed or guard.notify_success:
        admit, succeeded = guard.admit_async, guard.record_success_async
        raised, now = guard.record_exception_async, guard.clock

        @functools.wraps(fn)
        async def full_wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            token = await admit()
            start = now()
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                await raised(token, exc, now() - start)
                raise
            await succeeded(token, now() - start)
            return result

        return full_wrapper

    # Memory state: no I/O, so the sync methods serve async code without blocking.
    admit_now, raised_now, announce = guard.fast_admit, guard.record_exception, guard.announce
    record = state.record_success

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        token = state.fast_generation
        if token < 0:
            token = admit_now()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            raised_now(token, exc)
            raise
        transition = record(token)
        if transition is not None:
            announce(transition)
        return result

    return wrapper
