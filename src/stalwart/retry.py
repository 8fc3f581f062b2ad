"""Retry: a decorator and a block loop, deciding through tenacity, entered on failure.

`retry()` returns a `RetryPolicy`, which decorates sync and async functions alike.
The first attempt runs with no retry machinery at all; only when it fails (or its
result asks for a retry) is tenacity's decision engine built for that call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeAlias, TypeVar, overload

from . import _clock, _validate
from ._deadline import deadline_at
from ._run import Done, aiterate, iterate, wrap
from .backoff import constant, decorrelated, exponential, linear
from .classify import Verdict, classify, retry_after_of
from .events import LoggingListener, RetryDetails, emit, hooks, listener_tuple, subscribed
from .timeout import timeout_expired

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Iterator
    from datetime import timedelta

    from tenacity import RetryCallState

    from ._run import Attempt

__all__ = [
    "DEFAULT_ATTEMPTS",
    "ExceptionSpec",
    "RetryBlock",
    "RetryPolicy",
    "retry",
    "retrying",
]

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_ATTEMPTS = 3

ExceptionSpec: TypeAlias = (
    type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool] | None
)
"""What `on=` accepts: exception types, a predicate, or None for the classifier."""

_DEFAULT_LISTENERS: tuple[object, ...] = (LoggingListener(),)
_UNSET: Any = object()


def _exception_predicate(on: object) -> Callable[[BaseException], bool] | None:
    """Validate `on=` and turn it into a predicate (None: use the classifier)."""
    if on is None:
        return None
    if isinstance(on, type):
        if not issubclass(on, BaseException):
            raise TypeError(f"on must be exception types or a predicate, got {on!r}")
        types: tuple[type[BaseException], ...] = (on,)
    elif isinstance(on, tuple):
        if not on or not all(isinstance(t, type) and issubclass(t, BaseException) for t in on):
            raise TypeError(f"on must be exception types or a predicate, got {on!r}")
        types = on
    elif callable(on):
        return on
    else:
        raise TypeError(f"on must be exception types or a predicate, got {on!r}")
    return lambda exc: isinstance(exc, types)


_FACTORIES = (exponential, linear, constant, decorrelated)


def _check_backoff(backoff: object) -> None:
    """Refuse what is not a wait strategy, and the classes and factories that make one."""
    if isinstance(backoff, type):
        raise TypeError(
            f"backoff must be a wait strategy, got the class {backoff!r}: pass an instance,"
            " such as backoff=stalwart.exponential()"
        )
    if any(backoff is factory for factory in _FACTORIES):
        name = getattr(backoff, "__name__", "exponential")
        raise TypeError(
            f"backoff must be a wait strategy, got the factory stalwart.{name} itself:"
            f" call it, as in backoff=stalwart.{name}()"
        )
    if backoff is not None and not callable(backoff):
        raise TypeError(f"backoff must be a wait strategy (callable), got {backoff!r}")


class RetryPolicy:
    """How to retry: what, how often, how long to wait, and who to tell.

    Made by `stalwart.retry` (see there for the arguments). Decorate a function with
    it, or loop over `RetryPolicy.retrying()` for a block. Immutable and reusable:
    one policy can serve any number of functions and threads.

    .. versionadded:: 0.1.0
    """

    __module__ = "stalwart"
    __slots__ = (
        "_on_give_up",
        "_on_retry",
        "_should_retry",
        "attempts",
        "backoff",
        "classifier",
        "deadline",
        "listeners",
        "log",
        "max_retry_after",
        "on",
        "retry_if_result",
    )

    def __init__(
        self,
        on: ExceptionSpec = None,
        *,
        attempts: int = DEFAULT_ATTEMPTS,
        deadline: float | timedelta | None = None,
        backoff: Callable[[RetryCallState], float] | None = None,
        retry_if_result: Callable[[Any], bool] | None = None,
        classifier: Callable[[BaseException], Verdict] | None = None,
        listeners: Iterable[object] = (),
        log: bool = True,
        max_retry_after: float | timedelta | None = None,
    ) -> None:
        predicate = _exception_predicate(on)
        self.on = on
        self.attempts = _validate.count("attempts", attempts)
        self.deadline = (
            None if deadline is None else _validate.seconds("deadline", deadline, positive=True)
        )
        _check_backoff(backoff)
        self.backoff: Callable[[RetryCallState], float] = (
            exponential() if backoff is None else backoff
        )
        if retry_if_result is not None and not callable(retry_if_result):
            raise TypeError(f"retry_if_result must be callable or None, got {retry_if_result!r}")
        self.retry_if_result = retry_if_result
        if classifier is not None and not callable(classifier):
            raise TypeError(f"classifier must be a Classifier or callable, got {classifier!r}")
        self.classifier: Callable[[BaseException], Verdict] = (
            classify if classifier is None else classifier
        )
        self.max_retry_after = (
            None
            if max_retry_after is None
            else _validate.seconds("max_retry_after", max_retry_after)
        )
        self.listeners = listener_tuple(listeners)
        self.log = bool(log)
        found = hooks((*_DEFAULT_LISTENERS, *self.listeners) if log else self.listeners)
        self._on_retry = found["on_retry"]
        self._on_give_up = found["on_give_up"]
        if predicate is None:
            verdict = self.classifier
            self._should_retry: Callable[[BaseException], bool] = lambda exc: (
                verdict(exc) is Verdict.TRANSIENT
            )
        else:
            self._should_retry = predicate

    def __repr__(self) -> str:
        return (
            f"stalwart.retry(on={self.on!r}, attempts={self.attempts!r},"
            f" deadline={self.deadline!r}, backoff={self.backoff!r})"
        )

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        """Decorate `fn`, sync or async, keeping its signature."""
        return wrap(fn, self._begin, self.retry_if_result)

    def retrying(self, name: str = "block") -> RetryBlock:
        """Return a loop of attempts for ``for`` (sync) or ``async for`` (async) code."""
        return RetryBlock(self, name)

    def replace(self, **changes: Any) -> RetryPolicy:
        """Return a copy with some arguments changed: ``DEFAULT.replace(attempts=5)``."""
        current: dict[str, Any] = {
            "on": self.on,
            "attempts": self.attempts,
            "deadline": self.deadline,
            "backoff": self.backoff,
            "retry_if_result": self.retry_if_result,
            "classifier": self.classifier,
            "listeners": self.listeners,
            "log": self.log,
            "max_retry_after": self.max_retry_after,
        }
        unknown = set(changes) - set(current)
        if unknown:
            raise TypeError(f"replace() got unknown arguments {sorted(unknown)}")
        return RetryPolicy(**{**current, **changes})

    def should_retry(self, exc: BaseException) -> bool:
        """Return whether this policy retries a call that raised `exc`.

        Raises:
            Exception: Whatever `on` or the classifier raised while judging `exc`,
                chained to `exc` (its ``__cause__``), so the original failure is kept.
        """
        if not isinstance(exc, Exception):
            return False
        try:
            return bool(self._should_retry(exc))
        except Exception as err:
            if err is exc:  # the predicate re-raised the failure itself
                raise
            raise err from exc

    def _begin(self, name: str, start: float, fn: Any, args: Any, kwargs: Any) -> _Call:
        """Start the retry state of one call whose first attempt began at `start`."""
        return _Call(self, name, start, fn, args, kwargs)


_GIVE_UP: Any = object()

_MAX_NOTES = 4
"""The most notes stalwart leaves on one exception, however many retries raise it."""


_NOTE = "stalwart: "


def _speaks_for(note: object, name: str) -> bool:
    """Whether `note` is the note of a retry of `name` (see `_Call`'s two notes)."""
    return isinstance(note, str) and (
        note.startswith(f"{_NOTE}gave up on {name} after ")
        or (note.startswith(f"{_NOTE}not retried; attempt ") and note.endswith(f" of {name}"))
    )


def _add_note(exc: BaseException, note: str, name: str | None = None) -> None:
    """Add a PEP 678 note to `exc`, keeping stalwart's notes on it few.

    One exception may be raised by many retried calls (a shared failed future, a
    cached error): each would add its note. A note for the retry of `name` replaces
    the earlier note of a retry of the same name, and at most `_MAX_NOTES` of
    stalwart's notes stay, the oldest going first. The caller's own notes are kept.
    An exception that cannot take a note is left as it is: it is never replaced.
    """
    notes = getattr(exc, "__notes__", None)
    if notes is None:
        notes = []
        try:
            exc.__notes__ = notes  # type: ignore[attr-defined]
        except (AttributeError, TypeError):  # pragma: no cover - an exception that refuses
            return
    elif not isinstance(notes, list):  # Python refuses to add a note there too
        return
    if name is not None:
        notes[:] = [n for n in notes if not _speaks_for(n, name)]
    ours = [i for i, n in enumerate(notes) if isinstance(n, str) and n.startswith(_NOTE)]
    for i in reversed(ours[: max(len(ours) - _MAX_NOTES + 1, 0)]):
        del notes[i]
    notes.append(note)


class _Call:
    """One retried call: the state tenacity's engine decides on, and the decisions."""

    __slots__ = ("_engine", "_state", "deadline_at", "name", "policy", "start", "stopped_by")

    def __init__(  # noqa: PLR0917 - mirrors RetryCallState's (fn, args, kwargs)
        self, policy: RetryPolicy, name: str, start: float, fn: Any, args: Any, kwargs: Any
    ) -> None:
        from tenacity import RetryCallState, Retrying  # noqa: PLC0415 - only on failure

        self.policy = policy
        self.name = name
        self.start = start
        self.stopped_by = ""
        limits = [at for at in (deadline_at(),) if at is not None]
        if policy.deadline is not None:
            limits.append(start + policy.deadline)
        self.deadline_at = min(limits) if limits else None
        self._engine = Retrying(
            stop=self._stop,
            wait=self._wait,
            retry=self._retry,
            before_sleep=self._before_sleep,
            retry_error_callback=_give_up,
        )
        self._engine.begin()
        self._state = RetryCallState(self._engine, fn, args, kwargs)

    @property
    def attempt(self) -> int:
        return self._state.attempt_number

    @property
    def recorded(self) -> bool:
        return self._state.outcome is not None

    def failed(self, exc: BaseException) -> _Call:
        self._state.set_exception((type(exc), exc, exc.__traceback__))
        return self

    def returned(self, value: object) -> _Call:
        self._state.set_result(value)
        return self

    # tenacity callbacks: pure decisions over the recorded state

    def _retry(self, state: RetryCallState) -> bool:
        outcome = state.outcome
        if outcome is None:  # pragma: no cover - tenacity asks only after an outcome
            return False
        if outcome.failed:
            exc = outcome.exception()
            return exc is not None and self.policy.should_retry(exc)
        check = self.policy.retry_if_result
        return check is not None and bool(check(outcome.result()))

    def _wait(self, state: RetryCallState) -> float:
        if _clock.instant():
            return 0.0
        delay = float(self.policy.backoff(state))
        outcome = state.outcome
        if outcome is None:  # pragma: no cover - tenacity waits only after an outcome
            return delay
        # A failure's hint, or a retried result's: an HTTP response with Retry-After.
        hint = retry_after_of(outcome.exception() if outcome.failed else outcome.result())
        if hint is not None:
            cap = self.policy.max_retry_after
            if cap is not None:
                hint = min(hint, cap)
            delay = max(delay, hint)
        return delay

    def _stop(self, state: RetryCallState) -> bool:
        if state.attempt_number >= self.policy.attempts:
            self.stopped_by = f"{state.attempt_number} attempts"
            return True
        # A sync timeout around the retry has passed: its SIGALRM fired (once) inside
        # the attempt, or its worker was abandoned. Another attempt would run unlimited.
        if timeout_expired():
            self.stopped_by = "a timeout around the call"
            return True
        at = self.deadline_at
        # At the deadline exactly, an attempt would start with no time left: stop.
        if at is not None and _clock.now() + state.upcoming_sleep >= at:
            self.stopped_by = "the deadline"
            return True
        # Longer than the platform can wait (a Retry-After of years): never started.
        if state.upcoming_sleep > _clock.MAX_WAIT:
            self.stopped_by = f"a wait too long to make ({state.upcoming_sleep:g}s)"
            return True
        return False

    def _details(self, state: RetryCallState, delay: float) -> RetryDetails:
        outcome = state.outcome
        failed = outcome is not None and outcome.failed
        return RetryDetails(
            name=self.name,
            attempt=state.attempt_number,
            delay=delay,
            elapsed=_clock.now() - self.start,
            exception=outcome.exception() if outcome is not None and failed else None,
            result=outcome.result() if outcome is not None and not failed else None,
        )

    def _before_sleep(self, state: RetryCallState) -> None:
        handlers, everywhere = self.policy._on_retry, subscribed.on_retry  # noqa: SLF001 - the policy's own call state
        if handlers or everywhere:
            details = self._details(state, state.upcoming_sleep)
            emit(handlers, details)
            if everywhere:
                emit(everywhere, details)

    def next(self) -> float | Done[Any]:
        """Decide what follows the recorded attempt: a sleep, or the end."""
        from tenacity import DoSleep  # noqa: PLC0415 - loaded with the engine

        state = self._state
        try:
            action = self._engine.iter(state)
        except Exception as exc:
            # The engine re-raises an outcome it will not retry.
            if state.attempt_number > 1 and exc is _exception_of(state):
                _add_note(
                    exc,
                    f"{_NOTE}not retried; attempt {state.attempt_number} of {self.name}",
                    self.name,
                )
            raise
        if isinstance(action, DoSleep):
            # The listeners told of this retry have run: a timeout around the call may
            # have expired meanwhile (and a listener swallowed it). Start nothing more.
            if timeout_expired():
                self.stopped_by = "a timeout around the call"
                return self._give_up()
            state.prepare_for_next_attempt()
            return float(action)
        if action is _GIVE_UP:
            return self._give_up()
        return Done(action)

    def _give_up(self) -> Done[Any]:
        state = self._state
        handlers, everywhere = self.policy._on_give_up, subscribed.on_give_up  # noqa: SLF001
        if handlers or everywhere:
            details = self._details(state, 0.0)
            emit(handlers, details)
            if everywhere:
                emit(everywhere, details)
        exc = _exception_of(state)
        if exc is None:  # retried on results: hand back the last one
            return Done(state.outcome.result() if state.outcome is not None else None)
        elapsed = _clock.now() - self.start
        plural = "s" if state.attempt_number != 1 else ""
        _add_note(
            exc,
            f"{_NOTE}gave up on {self.name} after {state.attempt_number} attempt{plural}"
            f" over {elapsed:.3f}s (stopped by {self.stopped_by})",
            self.name,
        )
        raise exc


def _exception_of(state: RetryCallState) -> BaseException | None:
    outcome = state.outcome
    return outcome.exception() if outcome is not None and outcome.failed else None


def _give_up(_state: RetryCallState) -> Any:
    return _GIVE_UP


class RetryBlock:
    """A loop of attempts, for code that cannot be a decorated function.

    ``for attempt in stalwart.retrying(...): with attempt: ...`` in sync code, and
    ``async for`` in async code. Each loop starts afresh.

    .. versionadded:: 0.1.0
    """

    __module__ = "stalwart"
    __slots__ = ("name", "policy")

    def __init__(self, policy: RetryPolicy, name: str = "block") -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be a string, got {name!r}")
        self.policy = policy
        self.name = name

    def __iter__(self) -> Iterator[Attempt]:
        return iterate(self.policy._begin, self.name)  # noqa: SLF001 - the policy's own loop

    def __aiter__(self) -> AsyncIterator[Attempt]:
        return aiterate(self.policy._begin, self.name)  # noqa: SLF001


ExceptionTypes: TypeAlias = type[BaseException] | tuple[type[BaseException], ...]
"""What `on` accepts by position: exception types (a predicate goes by keyword)."""


# An exception class is callable too: it matches the bare form below, but this first
# overload wins, as at run time.
@overload
def retry(  # type: ignore[overload-overlap]
    on: ExceptionTypes | None = None,
    /,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    deadline: float | timedelta | None = None,
    backoff: Callable[[RetryCallState], float] | None = None,
    retry_if_result: Callable[[Any], bool] | None = None,
    classifier: Callable[[BaseException], Verdict] | None = None,
    listeners: Iterable[object] = (),
    log: bool = True,
    max_retry_after: float | timedelta | None = None,
) -> RetryPolicy: ...


@overload
def retry(fn: Callable[P, T], /) -> Callable[P, T]: ...


@overload
def retry(
    *,
    on: ExceptionSpec = None,
    attempts: int = DEFAULT_ATTEMPTS,
    deadline: float | timedelta | None = None,
    backoff: Callable[[RetryCallState], float] | None = None,
    retry_if_result: Callable[[Any], bool] | None = None,
    classifier: Callable[[BaseException], Verdict] | None = None,
    listeners: Iterable[object] = (),
    log: bool = True,
    max_retry_after: float | timedelta | None = None,
) -> RetryPolicy: ...


def retry(
    *args: Any,
    on: ExceptionSpec = None,
    attempts: int = DEFAULT_ATTEMPTS,
    deadline: float | timedelta | None = None,
    backoff: Callable[[RetryCallState], float] | None = None,
    retry_if_result: Callable[[Any], bool] | None = None,
    classifier: Callable[[BaseException], Verdict] | None = None,
    listeners: Iterable[object] = (),
    log: bool = True,
    max_retry_after: float | timedelta | None = None,
) -> Any:
    """Retry a function (sync or async) when it fails with a transient error.

    .. code-block:: python

        @stalwart.retry(attempts=5, deadline=10)
        def fetch(url: str) -> bytes: ...

        @stalwart.retry                 # no parentheses: the defaults
        async def ping() -> None: ...

    Args:
        *args: Nothing; or `on` as exception types; or, for a bare
            ``@stalwart.retry``, the function to decorate.
        on: What to retry: an exception type, a tuple of them (both also by
            position, ``stalwart.retry(ConnectionError)``), or a predicate taking the
            exception (by keyword only, ``on=is_transient``: a function given by
            position is the function to decorate). ``None`` (the default) retries what
            the classifier calls transient. Cancellation, `KeyboardInterrupt`,
            `SystemExit` and `GeneratorExit` are never retried, whatever `on` says.
        attempts: The most attempts in all, the first included (>= 1).
        deadline: Seconds (or a `timedelta`) the call may take in all, counted from the
            first attempt's start; no sleep is started that would end past it, and a
            `stalwart.deadline` in force caps it further.
        backoff: The wait strategy (`exponential` with full jitter by default; any
            tenacity wait strategy works). A ``Retry-After`` hint carried by the
            exception (or by a retried result, such as an HTTP response with a
            ``Retry-After`` header) raises the wait to at least the hint.
        retry_if_result: A predicate on the return value that asks for another
            attempt; when attempts run out the last result is returned.
        classifier: Decides transient versus permanent when `on` is ``None``
            (`stalwart.classify.classify` by default).
        listeners: Objects with ``on_retry`` and/or ``on_give_up`` methods, each
            called with a `stalwart.RetryDetails`.
        log: Whether the logging listener logs each retry and give-up (default on).
        max_retry_after: The longest wait a ``Retry-After`` hint may impose, in
            seconds; a longer hint is cut to it. ``None`` (the default): no cap but
            the deadline.

    Returns:
        A `RetryPolicy`, used as a decorator; or, given the function itself (bare
        ``@stalwart.retry``), that function retried with the defaults.

    Raises:
        ValueError: `attempts` < 1, `deadline` negative, zero or NaN, or
            `max_retry_after` negative or NaN.
        TypeError: An option has the wrong type (`attempts` not an `int`, `deadline`
            neither a number nor a `timedelta`, ...), `on` holds something other
            than exception types or a predicate, `backoff` is not a wait strategy
            (a class, or a factory such as ``stalwart.exponential`` not called),
            options are given beside a function to decorate, or the function is a
            generator function.

    When retries end, the last exception is re-raised as it was, with a note (PEP 678)
    saying how many attempts were made over how long. A predicate (`on`, the
    classifier) that raises ends the call with its own error, chained to the failure
    it was judging. Inside a sync `stalwart.timeout` that has expired, nothing is
    retried.

    .. versionadded:: 0.1.0
    .. versionchanged:: Unreleased
       ``@stalwart.retry`` without parentheses; a predicate goes by keyword.
    """
    options = (attempts, deadline, backoff, retry_if_result, classifier, listeners, log)
    if args:
        if len(args) > 1:
            raise TypeError(
                "retry() takes at most one positional argument (exception types, or the"
                f" function to decorate), got {len(args)}"
            )
        [first] = args
        if callable(first) and not isinstance(first, type):
            if on is not None or max_retry_after is not None or options != _DEFAULTS:
                raise TypeError(
                    f"@stalwart.retry without parentheses takes no options, got {first!r}"
                    " and options: write @stalwart.retry(...) with the options, and pass a"
                    " predicate by keyword (on=...)"
                )
            return RetryPolicy()(first)
        if on is not None:
            raise TypeError(f"retry() got on given twice: {first!r} and on={on!r}")
        on = first
    return RetryPolicy(
        on,
        attempts=attempts,
        deadline=deadline,
        backoff=backoff,
        retry_if_result=retry_if_result,
        classifier=classifier,
        listeners=listeners,
        log=log,
        max_retry_after=max_retry_after,
    )


_DEFAULTS = (DEFAULT_ATTEMPTS, None, None, None, None, (), True)
"""The options of `retry` at their defaults, to tell a bare ``@stalwart.retry``."""


def retrying(
    on: ExceptionSpec = None,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    deadline: float | timedelta | None = None,
    backoff: Callable[[RetryCallState], float] | None = None,
    classifier: Callable[[BaseException], Verdict] | None = None,
    listeners: Iterable[object] = (),
    log: bool = True,
    max_retry_after: float | timedelta | None = None,
    name: str = "block",
) -> RetryBlock:
    """Retry a block of code, attempt by attempt, in a ``for`` or ``async for`` loop.

    .. code-block:: python

        for attempt in stalwart.retrying(attempts=5):
            with attempt:
                connect()


    Takes the arguments of `retry` (but `retry_if_result`), and `name` for logs.
    Works with ``async for`` in async code.

    .. versionadded:: 0.1.0
    """
    policy = RetryPolicy(
        on,
        attempts=attempts,
        deadline=deadline,
        backoff=backoff,
        classifier=classifier,
        listeners=listeners,
        log=log,
        max_retry_after=max_retry_after,
    )
    return RetryBlock(policy, name)
