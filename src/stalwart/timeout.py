"""Timeouts: a limit on one call or block, sync or async, within any deadline in force.

`timeout(seconds)` returns a `Timeout`, usable as a decorator and as a context manager
(``with`` and ``async with``). The effective limit is the smaller of `seconds` and what
is left of the current `deadline`.

How a limit is enforced depends on the colour and the thread:

- async code runs inside an anyio cancel scope (asyncio and trio alike);
- sync code in the main thread on Unix is interrupted by a ``SIGALRM`` timer, and
  nested timers, stalwart's or anyone else's, are put back as they were;
- sync code elsewhere cannot be interrupted: the decorator runs the call in a worker
  thread and stops waiting for it, and the context manager reports the overrun when
  the block ends.
"""

from __future__ import annotations

import functools
import signal
import sys
import threading
import time
from contextvars import Context, ContextVar, copy_context
from typing import TYPE_CHECKING, Any, NamedTuple, ParamSpec, TypeVar, cast, overload

from . import _clock, _validate
from ._clock import MAX_WAIT
from ._deadline import Deadline, deadline, remaining
from ._run import is_async_callable, refuse_generator_function
from .errors import TimeoutExceeded
from .events import report_timeout, subscribed

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine
    from datetime import timedelta
    from types import FrameType, TracebackType

    import anyio
    from typing_extensions import Self

    _Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers

__all__ = ["Deadline", "Timeout", "deadline", "remaining", "timeout"]
# Not exported: `timeout_expired`, which the retry engine reads, and
# `add_worker_cleanup`, through which integrations release what a worker thread holds.

_P = ParamSpec("_P")
_T = TypeVar("_T")

# Seconds, as `signal.setitimer` understands them: zero would disarm the timer, so a
# timer that is already due is re-armed with this instead and fires at once.
_AT_ONCE = 1e-6
# Seconds an alarm that fired inside stalwart's own bookkeeping waits before firing
# again: long enough for the handler and the bookkeeping to finish first.
_SOON = 1e-3
# `time.monotonic`, through a module attribute so tests can move it.
_monotonic = time.monotonic


class _Limit(NamedTuple):
    """The limit that applies to one run: its seconds and what to say when it passes."""

    seconds: float
    message: str | None


def _expired(limit: _Limit, name: str | None = None) -> TimeoutExceeded:
    """Tell the ``on_timeout`` subscribers that `limit` passed; return the error to raise.

    A limit with a message of its own is the deadline's (see `Timeout._limit`).
    """
    if subscribed.on_timeout:
        report_timeout(limit.seconds, "timeout" if limit.message is None else "deadline", name)
    return TimeoutExceeded(*limit)


class _Guard:
    """Enforces one limit on one run of a sync block; the base does nothing at all."""

    __slots__ = ()

    def close(self, failed: bool) -> None:
        """End the run; raise `TimeoutExceeded` if the limit passed unnoticed."""

    def expired(self) -> bool:
        """Whether the limit has passed (the run may still be going, or unwinding)."""
        return False


_NO_LIMIT = _Guard()


class _Late(_Guard):
    """Detects an overrun when the block ends (for threads that signals cannot reach)."""

    __slots__ = ("limit", "started")

    def __init__(self, limit: _Limit) -> None:
        self.limit = limit
        self.started = _clock.now()

    def close(self, failed: bool) -> None:
        """Raise `TimeoutExceeded` if the block ended normally but after its limit."""
        if not failed and self.expired():
            raise _expired(self.limit)

    def expired(self) -> bool:
        """Whether the block has run past its limit (on the stalwart clock)."""
        return _clock.now() - self.started > self.limit.seconds


class _Alarm(_Guard):
    """A ``SIGALRM`` timer for one run in the main thread, nested inside whatever is armed.

    Opening reads the timer and handler already in place. If that outer timer fires
    first, it is left alone (an inner limit never extends an outer one). Otherwise
    this alarm installs its own handler and timer, and closing disarms them, puts the
    outer handler back and re-arms the outer timer for what is left of it.

    Each alarm installs its own bound handler, so the handler that runs always knows
    which limit passed; an outer alarm's handler only comes back once the inner alarm
    is closed. The timer uses real time (`time.monotonic`), not the stalwart clock:
    the kernel counts real seconds.
    """

    __slots__ = (
        "armed",
        "closed",
        "expires",
        "fired",
        "limit",
        "name",
        "outer_delay",
        "outer_handler",
        "outer_interval",
        "started",
    )

    def __init__(self, limit: _Limit, outer_handler: _Handler, name: str | None = None) -> None:
        self.limit = limit
        self.name = name
        self.fired = False
        self.outer_handler = outer_handler
        self.started = _monotonic()
        self.expires = self.started + limit.seconds
        self.outer_delay, self.outer_interval = signal.getitimer(signal.ITIMER_REAL)
        self.armed = False
        self.closed = False

    @classmethod
    def open(cls, limit: _Limit, name: str | None = None) -> _Alarm | None:
        """Arm an alarm for `limit`, or return `None` if ``SIGALRM`` is out of reach."""
        outer = signal.getsignal(signal.SIGALRM)
        if outer is None:  # installed from C: it could not be put back afterwards
            return None
        alarm = cls(limit, outer, name)
        alarm.arm()
        return alarm

    def arm(self) -> None:
        """Install the handler and start the timer, unless the outer timer comes first."""
        if self.outer_delay and self.outer_delay <= self.limit.seconds:
            return
        signal.signal(signal.SIGALRM, self._on_alarm)
        self.armed = True
        signal.setitimer(signal.ITIMER_REAL, self.limit.seconds)

    def close(self, failed: bool) -> None:  # noqa: ARG002 - the signal already reported any overrun
        """Disarm, then restore the outer handler and timer (once, whoever gets here first).

        An alarm that fired is reported to the ``on_timeout`` subscribers here, once
        the run has unwound, rather than in the signal handler: a subscriber taking a
        lock there could wait forever on one the interrupted code holds.
        """
        if self.armed and not self.closed:
            self._restore()
        if self.fired:
            self.fired = False
            _expired(self.limit, self.name)

    def expired(self) -> bool:
        """Whether the limit has passed; the handler raises only once it has."""
        return _monotonic() >= self.expires

    def _restore(self) -> None:
        # Order matters. Closed first, so that a signal still pending for this alarm
        # is ignored; disarm before restoring the outer handler, so that this alarm's
        # timer can never reach the outer handler and raise in the outer's name.
        self.closed = True
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.outer_handler)
        if self.outer_delay:
            left = self.outer_delay - (_monotonic() - self.started)
            # An outer timer that is already due fires at once.
            signal.setitimer(signal.ITIMER_REAL, max(left, _AT_ONCE), self.outer_interval)

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:  # noqa: ARG002 - the signal.signal protocol
        if self.closed:
            return  # the run ended as the timer fired: it finished in time
        now = _monotonic()
        # A timer re-armed below may fire inside this very handler: judge by the frame
        # that the first call of the handler interrupted, not by the handler's own.
        while frame is not None and frame.f_code is _HANDLER:
            frame = frame.f_back
        if now < self.expires:  # early: someone else's SIGALRM; wait for our time
            signal.setitimer(signal.ITIMER_REAL, max(self.expires - now, _AT_ONCE))
            return
        if frame is not None and _unsafe_to_raise(frame):
            # Inside our own setup or teardown, where raising would skip the other
            # half, or inside a hook (see `_unsafe_to_raise`): try again in a moment,
            # once out of it (not at once, which would fire in here).
            signal.setitimer(signal.ITIMER_REAL, _SOON)
            return
        # Restore before raising: whatever the exception skips on its way out, the
        # outer handler and timer are already back in place.
        self._restore()
        self.fired = True  # reported by `close`
        raise TimeoutExceeded(*self.limit)


_HANDLER = _Alarm._on_alarm.__code__  # noqa: SLF001 - the class's own signal handler

# Python 3.10 runs signal handlers in places where 3.11 and later do not.
_PY310 = sys.version_info < (3, 11)
# Python 3.10's opcodes at which a frame waits while a hook runs for it: a generator
# resumed at its ``yield``, a frame returning (the tests check them against `dis`).
_HOOK_OPCODES = frozenset({86, 83})  # YIELD_VALUE, RETURN_VALUE


def _unsafe_to_raise(frame: FrameType) -> bool:
    """Whether raising `TimeoutExceeded` in `frame`, interrupted by the alarm, would break it.

    An alarm that finds the interrupted code in one of these places waits a moment
    and fires again: each of them lasts only moments.

    - stalwart's own bookkeeping, where raising would skip the other half of it;
    - a trace or profile hook (`sys.settrace`, `sys.setprofile`), such as coverage's
      tracer or a debugger: raising there unwinds the hook halfway. Coverage takes a
      lock in Python code (``Collector.lock_data``): a timeout raised between its
      acquire and its release leaves the lock held, and the next traced call
      deadlocks. It also fails the traced call itself, before its first line: a
      timeout's ``__exit__`` would never run;
    - on Python 3.10 only, a frame entering an exception handler, before its first
      instruction. If that handler is a ``with`` block's exit, raising there replaces
      the exception in flight and the block's ``__exit__`` is never called.
    """
    return (
        frame.f_code in _BOOKKEEPING
        or _inside_hook(frame)
        or (_PY310 and _entering_handler(frame))
    )


def _entering_handler(frame: FrameType) -> bool:
    """Whether `frame` stands at the start of an exception handler, none of it run yet.

    The exception being handled was last seen at the instruction `frame` ran last.
    """
    tb = sys.exc_info()[2]
    return tb is not None and tb.tb_frame is frame and tb.tb_lasti == frame.f_lasti


def _code(function: object) -> object:
    """The code object a Python function (or bound method) runs, else `None`."""
    return getattr(getattr(function, "__func__", function), "__code__", None)


def _inside_hook(frame: FrameType) -> bool:
    """Whether `frame`, interrupted by a signal, runs inside a trace or profile hook.

    Read on every frame from `frame` outwards: a frame running the trace or profile
    function in force, or the local trace function of the frame it was called from,
    is the hook itself (or `frame` runs inside it). Python 3.10 also runs signal
    handlers inside hooks written in C, such as coverage's tracer, which calls Python
    code: there, a caller frame that has not started yet (no instruction run), or
    stands at a ``yield`` or ``return`` (which call nothing), has code above it only
    because a hook is handling that frame's call or return.
    """
    hooks = {_code(sys.gettrace()), _code(sys.getprofile())}
    callee = True  # `frame` itself: the handler may interrupt a frame about to start
    current: FrameType | None = frame
    while current is not None:
        caller = current.f_back
        if current.f_code in hooks or (
            caller is not None and current.f_code is _code(caller.f_trace)
        ):
            return True
        if (
            _PY310
            and not callee
            and (current.f_lasti < 0 or current.f_code.co_code[current.f_lasti] in _HOOK_OPCODES)
        ):
            return True
        callee = False
        current = caller
    return False


def _alarms_usable() -> bool:
    """Whether this thread can be interrupted by a ``SIGALRM`` timer."""
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


def _running_loop() -> str | None:
    """Return the name of the event loop running in this thread ("asyncio", "trio"), if any.

    Neither framework is imported for this: a loop can only run once its module is.
    """
    asyncio = sys.modules.get("asyncio")
    if asyncio is not None and asyncio._get_running_loop() is not None:  # noqa: SLF001 - the cheap, public-in-practice probe
        return "asyncio"
    lowlevel = getattr(sys.modules.get("trio"), "lowlevel", None)
    if lowlevel is None:
        return None
    in_trio_run = getattr(lowlevel, "in_trio_run", None)
    if in_trio_run is not None:
        return "trio" if in_trio_run() else None
    try:  # trio before 0.26
        lowlevel.current_trio_token()
    except RuntimeError:
        return None
    return "trio"


def _blocking_in_loop(fn: Callable[..., Any], loop: str) -> TypeError:
    name = getattr(fn, "__qualname__", None) or repr(fn)
    short = getattr(fn, "__name__", None) or "fn"
    return TypeError(
        f"{name}: a sync function limited by stalwart.timeout cannot be called in a thread"
        f" that runs an event loop ({loop}): it would block the loop, and its SIGALRM could"
        f" fire into it. Decorate an async def instead, or call it in a worker thread"
        f" (await anyio.to_thread.run_sync({short}, ...))"
    )


class _Worker(_Guard):
    """The limit on a call handed to a worker thread, as the worker sees it.

    Nothing enforces it inside the worker (Python cannot stop a thread), but it stands
    on the worker's stack of runs, so that a retry running there stops retrying once
    the caller has stopped waiting: an abandoned call ends after its current attempt.
    """

    __slots__ = ("abandoned", "expires")

    def __init__(self, limit: _Limit) -> None:
        self.expires = _monotonic() + limit.seconds
        self.abandoned = False

    def expired(self) -> bool:
        """Whether the caller gave up waiting, or its limit (real time) has passed."""
        return self.abandoned or _monotonic() >= self.expires


class _Outcome:
    """What a call in a worker thread returned or raised."""

    __slots__ = ("error", "value")

    def __init__(self) -> None:
        self.value: Any = None
        self.error: BaseException | None = None


# Called with no arguments in each worker thread `_call_in_worker` starts, once its
# call has ended (returned, raised, or run on after the caller stopped waiting).
_worker_cleanups: tuple[Callable[[], object], ...] = ()
_cleanups_lock = threading.Lock()


def add_worker_cleanup(hook: Callable[[], object]) -> Callable[[], None]:
    """Run `hook()` in every worker thread a sync timeout starts, after its call ends.

    Off the main thread (and on Windows) a sync `timeout` decorator runs each call in
    a worker thread of its own, which ends with the call. Whatever that thread opened
    for itself, such as a framework's thread-local database connections, would
    otherwise stay open until garbage collection: a hook closes it, in the thread
    that opened it. Hooks run in the caller's context (a copy), in the order they were
    added; one that raises is logged on the ``stalwart.timeout`` logger and the others
    still run. The caller waits for them as long as the call's limit allows. Calls in
    the main thread (``SIGALRM``) run in the caller's own thread and run no hook.

    Adding a hook that is already there does nothing.

    Args:
        hook: A callable taking no arguments.

    Returns:
        A function that removes the hook again (idempotent).

    Raises:
        TypeError: `hook` is not callable.

    .. versionadded:: 0.1.0
    """
    global _worker_cleanups  # noqa: PLW0603 - the hooks of the process
    if not callable(hook):
        raise TypeError(f"hook must be callable (taking no arguments), got {hook!r}")
    with _cleanups_lock:
        if hook not in _worker_cleanups:
            _worker_cleanups = (*_worker_cleanups, hook)

    def remove() -> None:
        global _worker_cleanups  # noqa: PLW0603 - the hooks of the process
        with _cleanups_lock:
            _worker_cleanups = tuple(h for h in _worker_cleanups if h != hook)

    return remove


def _clean_up(context: Context, cleanups: tuple[Callable[[], object], ...]) -> None:
    """Run the cleanup hooks in this worker thread; log, and otherwise ignore, failures."""
    for hook in cleanups:
        try:
            context.run(hook)
        except Exception:  # a cleanup never breaks the call it follows
            import logging  # noqa: PLC0415 - only once a hook failed

            logging.getLogger("stalwart.timeout").exception(
                "stalwart: worker thread cleanup %r raised; ignoring it", hook
            )


def _call_in_worker(
    fn: Callable[_P, _T], limit: _Limit, *args: _P.args, **kwargs: _P.kwargs
) -> _T:
    """Run ``fn(*args, **kwargs)`` in a daemon thread and wait for it up to `limit`.

    The call runs in a copy of the caller's context, so context variables (the
    deadline among them) are visible. On timeout the thread is abandoned, not
    stopped: Python cannot stop a thread.
    """
    context = copy_context()
    run = _Worker(limit)  # before the wait starts: it expires no later than the wait
    context.run(_sync_runs.set, (*_sync_runs.get(), run))
    done = threading.Event()
    outcome = _Outcome()
    cleanups = _worker_cleanups
    cleaned = threading.Event() if cleanups else None

    def work() -> None:
        try:
            outcome.value = context.run(fn, *args, **kwargs)
        except BaseException as exc:  # handed to the caller as it is
            outcome.error = exc
        finally:
            done.set()
            if cleaned is not None:
                _clean_up(context, cleanups)
                cleaned.set()

    name = f"stalwart-timeout:{getattr(fn, '__qualname__', 'call')}"
    threading.Thread(target=work, name=name, daemon=True).start()
    if not done.wait(limit.seconds):
        run.abandoned = True
        raise _expired(limit, getattr(fn, "__qualname__", None))
    if cleaned is not None:
        # What the worker releases (database connections) is released by the time the
        # call returns, as long as that fits in the limit; past it, in the background.
        cleaned.wait(max(run.expires - _monotonic(), 0.0))
    error, outcome.error = outcome.error, None  # no cycle through the traceback
    if error is not None:
        raise error
    return cast("_T", outcome.value)


class _AsyncGuard:
    """An anyio cancel scope for one run of an async block, turning its expiry into ours."""

    __slots__ = ("limit", "name", "scope")

    def __init__(self, limit: _Limit | None, name: str | None = None) -> None:
        self.limit = limit
        self.name = name
        self.scope: anyio.CancelScope | None = None

    def __enter__(self) -> None:
        if self.limit is None:
            return
        import anyio  # noqa: PLC0415 - anyio is imported only once async code runs

        # anyio deadlines are read on the event loop's clock, not stalwart's.
        self.scope = anyio.CancelScope(deadline=anyio.current_time() + self.limit.seconds)
        self.scope.__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.scope is None or self.limit is None:
            return
        # The scope is private, so only its deadline can have cancelled it, and it
        # catches only its own cancellation: anyone else's is not caught here and goes
        # on its way untouched. (What `__exit__` returns differs between backends.)
        self.scope.__exit__(exc_type, exc, tb)
        if self.scope.cancelled_caught:
            raise _expired(self.limit, self.name) from exc


# The sync runs (`with` blocks and decorated calls) open in this context, innermost
# last: the per-thread record of the timers entered. Each thread and each task has a
# context of its own, so one `Timeout` may be entered by many at once.
_sync_runs: ContextVar[tuple[_Guard, ...]] = ContextVar("stalwart_timeout_runs", default=())
_async_runs: ContextVar[tuple[_AsyncGuard, ...]] = ContextVar(
    "stalwart_timeout_async_runs", default=()
)


def timeout_expired() -> bool:
    """Return whether a sync timeout entered in this context has run out of time.

    Nothing inside an expired timeout may start another attempt: the retry engine
    asks this before each retry, and gives up when it is true. A ``SIGALRM`` timer
    fires once, inside one attempt; without this check a retry around it would carry
    on with no limit at all. A per-attempt timeout inside the retry has already been
    left when the retry decides, so it does not count. Async timeouts need no record:
    their cancellation is never retried.
    """
    return any(run.expired() for run in _sync_runs.get())


class _Entered:
    """Puts one decorated call's guard on the record for the call's duration."""

    __slots__ = ("guard",)

    def __init__(self, guard: _Guard) -> None:
        self.guard = guard

    def __enter__(self) -> None:
        _sync_runs.set((*_sync_runs.get(), self.guard))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        *outer, guard = _sync_runs.get()
        _sync_runs.set(tuple(outer))
        guard.close(exc_type is not None)


def _milliseconds(seconds: float) -> str:
    """`seconds` rounded to the millisecond for messages: ``0.3``, not ``0.299995``."""
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return "<0.001" if text == "0" else text


class Timeout:
    """A time limit for a call or a block, sync or async.

    Returned by `stalwart.timeout()`; see there. One `Timeout` may be shared: every
    ``with`` or call gets its own limit, counted from its own start.

    **Usage**::

        timeout(2.5)                   # at most 2.5 s (and within any deadline)
        timeout(timedelta(minutes=1))  # at most a minute
        timeout(None)                  # no limit of its own; any deadline still applies

        @timeout(2)                    # each call of a sync or async function
        def fetch(): ...

        with timeout(2): ...           # a block of sync code
        async with timeout(2): ...     # a block of async code

    Attributes:
        seconds: The limit in seconds, or `None` for no limit of its own.

    .. versionadded:: 0.1.0
    """

    __module__ = "stalwart"
    __slots__ = ("seconds",)

    def __init__(self, seconds: float | timedelta | None) -> None:
        self.seconds = (
            None
            if seconds is None
            else _validate.seconds("seconds", seconds, positive=True, decorator="stalwart.timeout")
        )

    def __repr__(self) -> str:
        return f"stalwart.timeout({self.seconds!r})"

    def _limit(self) -> _Limit | None:
        """Return the limit for a run starting now, or `None` when there is none.

        Raises:
            TimeoutExceeded: The deadline in force has already passed.
        """
        left = remaining()
        if left is None or (self.seconds is not None and self.seconds <= left):
            if self.seconds is None or self.seconds > MAX_WAIT:
                return None  # no limit, or one that no timer can reach: never passes
            return _Limit(self.seconds, None)
        if left <= 0:
            raise _expired(_Limit(0.0, "the deadline had already passed"))
        if left > MAX_WAIT:
            return None
        return _Limit(
            left,
            f"call did not finish before its deadline ({_milliseconds(left)}s were left"
            " when it started)",
        )

    def _open(self) -> _Guard:
        """Start enforcing the limit on a sync run in this thread."""
        limit = self._limit()
        if limit is None:
            return _NO_LIMIT
        if _alarms_usable():
            alarm = _Alarm.open(limit)
            if alarm is not None:
                return alarm
        return _Late(limit)

    # Sync context manager

    def __enter__(self) -> Self:
        loop = _running_loop()
        if loop is not None:
            raise TypeError(
                f"a sync `with stalwart.timeout(...)` cannot limit code in a thread that runs"
                f" an event loop ({loop}): its SIGALRM would fire into the loop, in whichever"
                f" task runs. Use `async with stalwart.timeout(...)` instead"
            )
        _sync_runs.set((*_sync_runs.get(), self._open()))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        *outer, guard = _sync_runs.get()
        _sync_runs.set(tuple(outer))
        guard.close(exc_type is not None)

    # Async context manager

    async def __aenter__(self) -> Self:
        guard = _AsyncGuard(self._limit())
        guard.__enter__()
        _async_runs.set((*_async_runs.get(), guard))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        *outer, guard = _async_runs.get()
        _async_runs.set(tuple(outer))
        guard.__exit__(exc_type, exc, tb)

    # Decorator

    @overload
    def __call__(
        self, fn: Callable[_P, Coroutine[Any, Any, _T]]
    ) -> Callable[_P, Coroutine[Any, Any, _T]]: ...

    @overload
    def __call__(self, fn: Callable[_P, _T]) -> Callable[_P, _T]: ...

    def __call__(self, fn: Callable[_P, Any]) -> Callable[_P, Any]:
        """Limit every call of `fn`, a sync or an async function.

        Async functions (coroutine functions, `functools.partial` objects of them and
        objects with an ``async def __call__``) run in a cancel scope. Sync
        functions are interrupted by ``SIGALRM`` in the main thread on Unix; elsewhere
        each call runs in a daemon worker thread that keeps running in the background
        after a timeout, since Python cannot stop a thread.
        """
        refuse_generator_function(
            fn,
            "stalwart.timeout",
            "limit the code inside its body instead (with stalwart.timeout(...):, or"
            " async with in an async generator)",
        )
        name: str | None = getattr(fn, "__qualname__", None)
        if is_async_callable(fn):
            afn = cast("Callable[_P, Awaitable[Any]]", fn)

            @functools.wraps(fn)
            async def async_wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Any:
                with _AsyncGuard(self._limit(), name):
                    return await afn(*args, **kwargs)

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Any:
            loop = _running_loop()
            if loop is not None:
                raise _blocking_in_loop(fn, loop)
            limit = self._limit()
            if limit is None:
                return fn(*args, **kwargs)
            if _alarms_usable():
                alarm = _Alarm.open(limit, name)
                if alarm is not None:
                    with _Entered(alarm):  # on the record, so retries inside see it expire
                        return fn(*args, **kwargs)
            return _call_in_worker(fn, limit, *args, **kwargs)

        return wrapper


# Frames where a firing alarm waits instead of raising: between a run's bookkeeping
# (its place on the stack of runs) and its timer, an exception would leave the two
# out of step. Everywhere else, raising is safe: the handler restores before raising.
_BOOKKEEPING = frozenset(
    {
        Timeout.__enter__.__code__,
        Timeout.__exit__.__code__,
        _Entered.__enter__.__code__,
        _Entered.__exit__.__code__,
    }
)


def timeout(seconds: float | timedelta | None) -> Timeout:
    """Limit how long a call or a block may run.

    Usable as a decorator on sync and async functions, as ``with`` and as
    ``async with``. The limit in force is the smaller of `seconds` and what is left of
    the current `stalwart.deadline`; a deadline that has already passed raises at once,
    without running the call or the block. When the limit passes, the call or block
    is stopped with `TimeoutExceeded`, whose ``seconds`` is that limit.

    ======================================  ===========================================
    Where it runs                           How the limit is enforced
    ======================================  ===========================================
    ``async def`` / ``async with``          An anyio cancel scope (asyncio, trio):
                                            the code is cancelled at its next await.
                                            Cancellation from outside passes through
                                            untouched.
    Sync, main thread, Unix                 A ``SIGALRM`` timer interrupts the code
                                            (blocking waits included). Nested timers
                                            keep the earliest end and are restored on
                                            exit.
    Sync decorator, other threads           The call runs in a daemon worker thread
    or Windows                              with a copy of the caller's context; on
                                            timeout the caller stops waiting, but the
                                            worker keeps running in the background
                                            (Python cannot kill a thread).
    Sync ``with``, other threads            The block cannot be interrupted: it runs
    or Windows                              to the end, then raises `TimeoutExceeded`
                                            if it took too long (unless it raised its
                                            own exception).
    ======================================  ===========================================

    The ``SIGALRM`` timer replaces the process-wide ``SIGALRM`` handler while it is
    armed, and restores it (and any timer that was running) afterwards; code inside
    the block that installs its own ``SIGALRM`` handler takes the timer over. In async
    code use ``async with`` or decorate the ``async def``: a sync ``with`` around an
    ``await`` would let the timer fire in whichever task runs meanwhile.

    Args:
        seconds: The limit, in seconds or as a `timedelta`, or `None` for no limit of
            its own (any deadline in force still applies).

    Returns:
        A `Timeout`, reusable and safe to share between threads and tasks.

    Raises:
        TypeError: `seconds` is neither a number, a `timedelta` nor `None`.
        ValueError: `seconds` is zero, negative, NaN or infinite.

    Example::

        @stalwart.timeout(2)
        def fetch(url): ...

        async with stalwart.timeout(0.5):
            await client.get(url)

    .. versionadded:: 0.1.0
    """
    return Timeout(seconds)
