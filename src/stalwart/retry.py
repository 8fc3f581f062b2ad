"""Retry: a decorator and a block loop, whose decisions are made only after a failure.

`retry()` returns a `RetryPolicy`, which decorates sync and async functions alike.
The first attempt runs with no retry machinery at all; only when it fails (or its
result asks for a retry) is a call state built. With stalwart's own wait strategies
that state decides by itself (`OwnCall`); a wait strategy written for
tenacity (``tenacity.wait_random(...)``, or a sum of strategies) is given tenacity's
engine and its `RetryCallState`, here (`_Call`). Both make the same decisions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeAlias, TypeVar, overload

from . import _clock, _validate
from ._decide import (
    MAX_NOTES,
    NOTE,
    STEP,
    add_note,
    budget_name,
    call_deadline,
    explicit_retry,
    hinted,
    not_retried,
    own_steps,
    stop_reason,
)
from ._run import Done, aiterate, iterate, wrap
from .backoff import constant, decorrelated, exponential, linear
from .classify import Verdict, classify
from .events import LoggingListener, RetryDetails, emit, hooks, listener_tuple, subscribed
from .timeout import timeout_expired

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Iterator
    from datetime import timedelta

    from tenacity import RetryCallState

    from ._decide import Budget
    from ._run import Attempt, Call
    from .budget import RetryBudget

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

_DEFAULT_LISTENERS: tuple[LoggingListener, ...] = (LoggingListener(),)
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
        "_log_gate",
        "_on_give_up",
        "_on_retry",
        "_own_steps",
        "_should_retry",
        "attempts",
        "backoff",
        "budget",
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
        budget: RetryBudget | None = None,
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
        self._own_steps = own_steps(self.backoff)
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
        if budget is not None and not all(
            callable(getattr(budget, m, None)) for m in ("deposit", "withdraw")
        ):
            raise TypeError(
                "budget must be a RetryBudget (an object with deposit() and withdraw()),"
                f" or None, got {budget!r}"
            )
        self.budget: Budget | None = budget
        self.listeners = listener_tuple(listeners)
        self.log = bool(log)
        found = hooks((*_DEFAULT_LISTENERS, *self.listeners) if log else self.listeners)
        self._on_retry = found["on_retry"]
        self._on_give_up = found["on_give_up"]
        # The logging listener alone: while its logger drops the level, no record is built.
        self._log_gate: logging.Logger | None = (
            _DEFAULT_LISTENERS[0].logger if log and not self.listeners else None
        )
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
        budget = self.budget
        return wrap(
            fn, self._begin, self.retry_if_result, None if budget is None else budget.deposit
        )

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
            "budget": self.budget,
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

    def _begin(self, name: str, start: float, fn: Any, args: Any, kwargs: Any) -> Call:
        """Start the retry state of one call whose first attempt began at `start`."""
        if self._own_steps:
            return OwnCall(self, name, start, fn, args, kwargs)
        return _Call(self, name, start, fn, args, kwargs)

    def _resume(  # noqa: PLR0917 - `_begin`'s, and the attempt
        self, name: str, start: float, fn: Any, args: Any, kwargs: Any, attempt: int
    ) -> OwnCall | _Call:
        """Start the retry state of a call whose attempt number `attempt` is running.

        For a call whose earlier attempts ran elsewhere (a Celery task's earlier runs).
        """
        if self._own_steps:
            own = OwnCall(self, name, start, fn, args, kwargs)
            own.attempt = attempt
            return own
        call = _Call(self, name, start, fn, args, kwargs)
        call._state.attempt_number = attempt  # noqa: SLF001 - the state it wraps
        return call


_GIVE_UP: Any = object()

_MAX_NOTES = MAX_NOTES
_NOTE = NOTE
_add_note = add_note


def _details(  # noqa: PLR0917 - the record's fields
    name: str,
    attempt: int,
    delay: float,
    start: float,
    exc: BaseException | None,
    result: object,
    reason: str | None = None,
) -> RetryDetails:
    return RetryDetails(name, attempt, delay, _clock.now() - start, exc, result, reason)


def _unheard(policy: RetryPolicy, everywhere: tuple[object, ...], level: int) -> bool:
    """Whether the policy's only hook is the logging listener, whose logger drops `level`."""
    gate = policy._log_gate  # noqa: SLF001 - the policy's own hooks
    return gate is not None and not everywhere and not gate.isEnabledFor(level)


def _tell_retry(  # noqa: PLR0917 - the record's fields
    policy: RetryPolicy,
    name: str,
    attempt: int,
    delay: float,
    start: float,
    exc: BaseException | None,
    result: object,
) -> bool:
    """Call the ``on_retry`` hooks: the policy's listeners, then the subscribers.

    Returns whether any hook ran.
    """
    handlers, everywhere = policy._on_retry, subscribed.on_retry  # noqa: SLF001 - the policy's own hooks
    level = LoggingListener._retry_level  # noqa: SLF001 - not through the checking property
    if not (handlers or everywhere) or _unheard(policy, everywhere, level):
        return False
    details = _details(name, attempt, delay, start, exc, result)
    emit(handlers, details)
    if everywhere:
        emit(everywhere, details)
    return True


def _give_up_call(  # noqa: PLR0917 - the call's state
    policy: RetryPolicy,
    name: str,
    attempt: int,
    start: float,
    exc: BaseException | None,
    result: object,
    stopped_by: str,
) -> Done[Any]:
    """End a call that will not be retried again: tell the hooks, then raise or return.

    Raises the last exception, noted with how many attempts over how long and what
    stopped them; a call retried on its results returns the last result instead.
    """
    _tell_give_up(policy, name, attempt, start, exc, result, stopped_by)
    if exc is None:  # retried on results: hand back the last one
        return Done(result)
    elapsed = _clock.now() - start
    plural = "s" if attempt != 1 else ""
    add_note(
        exc,
        f"{NOTE}gave up on {name} after {attempt} attempt{plural}"
        f" over {elapsed:.3f}s (stopped by {stopped_by})",
        name,
    )
    raise exc


def _refuse(  # noqa: PLR0917 - the call's state
    policy: RetryPolicy,
    name: str,
    attempt: int,
    start: float,
    exc: BaseException | None,
    result: object,
    budget_name: str,
) -> Done[Any]:
    """End a call whose retry the budget `budget_name` refused, as `give_up` does."""
    _tell_give_up(policy, name, attempt, start, exc, result, f"retry budget '{budget_name}'")
    if exc is None:
        return Done(result)
    add_note(exc, f"{NOTE}retry refused by retry budget '{budget_name}'")
    raise exc


def _tell_give_up(  # noqa: PLR0917 - the record's fields
    policy: RetryPolicy,
    name: str,
    attempt: int,
    start: float,
    exc: BaseException | None,
    result: object,
    reason: str,
) -> None:
    handlers, everywhere = policy._on_give_up, subscribed.on_give_up  # noqa: SLF001
    if (handlers or everywhere) and not _unheard(policy, everywhere, logging.WARNING):
        details = _details(name, attempt, 0.0, start, exc, result, reason)
        emit(handlers, details)
        if everywhere:
            emit(everywhere, details)


class OwnCall:
    """One retried call, decided without tenacity (for stalwart's own wait strategies).

    The decisions, the hooks and the notes are those of tenacity's path, attempt for
    attempt: a differential test runs both on the same inputs.
    """

    __slots__ = (
        "_failure",
        "_previous",
        "_recorded",
        "_result",
        "_steps",
        "attempt",
        "deadline_at",
        "name",
        "policy",
        "start",
        "stopped_by",
    )

    def __init__(  # noqa: PLR0917 - the `begin` signature of `stalwart._run`
        self, policy: RetryPolicy, name: str, start: float, fn: Any, args: Any, kwargs: Any
    ) -> None:
        del fn, args, kwargs  # tenacity's state keeps them; no decision reads them
        self.policy = policy
        self.name = name
        self.start = start
        self.stopped_by = ""
        self.deadline_at = call_deadline(policy, start)
        self.attempt = 1
        self._recorded = False
        self._failure: BaseException | None = None
        self._result: object = None
        self._previous = 0.0
        self._steps = policy._own_steps  # noqa: SLF001 - the policy's own strategy

    @property
    def recorded(self) -> bool:
        """Whether the current attempt's outcome has been recorded."""
        return self._recorded

    def failed(self, exc: BaseException) -> OwnCall:
        """Record that the current attempt raised `exc`."""
        self._failure, self._result, self._recorded = exc, None, True
        return self

    def returned(self, value: object) -> OwnCall:
        """Record that the current attempt returned `value`."""
        self._failure, self._result, self._recorded = None, value, True
        return self

    def _wait(self, outcome: object) -> float:
        if _clock.instant():
            return 0.0
        backoff: Any = self.policy.backoff
        if self._steps == STEP:
            delay, self._previous = backoff.step(self.attempt, self._previous)
        else:
            delay = backoff.delay(self.attempt)
        return hinted(self.policy, float(delay), outcome)

    def next(self) -> float | Done[Any]:
        """Decide what follows the recorded attempt: a sleep, or the end."""
        policy, exc = self.policy, self._failure
        if exc is not None:
            if not (explicit_retry(exc) or policy.should_retry(exc)):
                not_retried(exc, self.attempt, self.name)
                raise exc
            outcome: object = exc
        else:
            outcome = self._result
            check = policy.retry_if_result
            if check is None or not check(outcome):
                return Done(outcome)
        delay = self._wait(outcome)
        stopped = stop_reason(policy, self.attempt, self.deadline_at, delay)
        if stopped:
            return self._give_up(stopped)
        budget = policy.budget
        if budget is not None and not budget.withdraw():
            name = budget_name(budget)
            self.stopped_by = f"retry budget '{name}'"
            return _refuse(policy, self.name, self.attempt, self.start, exc, self._result, name)
        told = _tell_retry(policy, self.name, self.attempt, delay, self.start, exc, self._result)
        # The listeners told of this retry have run: a timeout around the call may
        # have expired meanwhile (and a listener swallowed it). Start nothing more.
        if told and timeout_expired():
            return self._give_up("a timeout around the call")
        self.attempt += 1
        self._recorded = False
        return delay

    def _give_up(self, stopped_by: str) -> Done[Any]:
        self.stopped_by = stopped_by
        return _give_up_call(
            self.policy,
            self.name,
            self.attempt,
            self.start,
            self._failure,
            self._result,
            stopped_by,
        )


class _Call:
    """One retried call, decided through tenacity's engine (for tenacity wait strategies).

    The decisions are `stalwart._decide`'s, called back by the engine over its
    `RetryCallState`, which the wait strategy receives.
    """

    __slots__ = (
        "_engine",
        "_refused",
        "_state",
        "deadline_at",
        "name",
        "policy",
        "start",
        "stopped_by",
    )

    def __init__(  # noqa: PLR0917 - mirrors RetryCallState's (fn, args, kwargs)
        self, policy: RetryPolicy, name: str, start: float, fn: Any, args: Any, kwargs: Any
    ) -> None:
        from tenacity import RetryCallState, Retrying  # noqa: PLC0415 - only on failure

        self.policy = policy
        self.name = name
        self.start = start
        self.stopped_by = ""
        self._refused: str | None = None
        self.deadline_at = call_deadline(policy, start)
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
        return hinted(
            self.policy, delay, outcome.exception() if outcome.failed else outcome.result()
        )

    def _stop(self, state: RetryCallState) -> bool:
        self.stopped_by = stop_reason(
            self.policy, state.attempt_number, self.deadline_at, state.upcoming_sleep
        )
        return bool(self.stopped_by)

    def _outcome(self) -> tuple[BaseException | None, object]:
        outcome = self._state.outcome
        if outcome is None:  # pragma: no cover - decided only after an outcome
            return None, None
        if outcome.failed:
            return outcome.exception(), None
        return None, outcome.result()

    def _before_sleep(self, state: RetryCallState) -> None:
        exc, result = self._outcome()
        budget = self.policy.budget
        if budget is not None and not budget.withdraw():
            self._refused = budget_name(budget)
            return
        _tell_retry(
            self.policy,
            self.name,
            state.attempt_number,
            state.upcoming_sleep,
            self.start,
            exc,
            result,
        )

    def next(self) -> float | Done[Any]:
        """Decide what follows the recorded attempt: a sleep, or the end."""
        from tenacity import DoSleep  # noqa: PLC0415 - loaded with the engine

        state = self._state
        try:
            action = self._engine.iter(state)
        except Exception as exc:
            # The engine re-raises an outcome it will not retry.
            if exc is _exception_of(state):
                not_retried(exc, state.attempt_number, self.name)
            raise
        if isinstance(action, DoSleep):
            refused = self._refused
            if refused is not None:
                self.stopped_by = f"retry budget '{refused}'"
                failure, result = self._outcome()
                return _refuse(
                    self.policy,
                    self.name,
                    state.attempt_number,
                    self.start,
                    failure,
                    result,
                    refused,
                )
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
        exc, result = self._outcome()
        return _give_up_call(
            self.policy,
            self.name,
            self._state.attempt_number,
            self.start,
            exc,
            result,
            self.stopped_by,
        )


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
        budget = self.policy.budget
        deposit = None if budget is None else budget.deposit
        return iterate(self.policy._begin, self.name, deposit)  # noqa: SLF001 - the policy's own loop

    def __aiter__(self) -> AsyncIterator[Attempt]:
        budget = self.policy.budget
        deposit = None if budget is None else budget.deposit
        return aiterate(self.policy._begin, self.name, deposit)  # noqa: SLF001


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
    budget: RetryBudget | None = None,
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
    budget: RetryBudget | None = None,
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
    budget: RetryBudget | None = None,
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
        log: Whether the logging listener logs each retry (INFO) and give-up (WARNING)
            (default on).
        max_retry_after: The longest wait a ``Retry-After`` hint may impose, in
            seconds; a longer hint is cut to it. ``None`` (the default): no cap but
            the deadline.
        budget: A `stalwart.RetryBudget` shared by the callers of one service: each
            call deposits into it once, and each retry must withdraw from it. A retry
            it refuses ends the call at once with its last error (or result), noted
            ``stalwart: retry refused by retry budget '<name>'``; the ``on_give_up``
            hooks hear it with ``reason="retry budget '<name>'"``. ``None`` (the
            default): no budget, and no cost.

    Returns:
        A `RetryPolicy`, used as a decorator; or, given the function itself (bare
        ``@stalwart.retry``), that function retried with the defaults.

    Raises:
        ValueError: `attempts` < 1, `deadline` negative, zero or NaN, or
            `max_retry_after` negative or NaN.
        TypeError: An option has the wrong type (`attempts` not an `int`, `deadline`
            neither a number nor a `timedelta`, `budget` without ``deposit()`` and
            ``withdraw()``, ...), `on` holds something other
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
       ``@stalwart.retry`` without parentheses; a predicate goes by keyword; ``budget``.
    """
    options = (attempts, deadline, backoff, retry_if_result, classifier, listeners, log, budget)
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
        budget=budget,
    )


_DEFAULTS = (DEFAULT_ATTEMPTS, None, None, None, None, (), True, None)
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
    budget: RetryBudget | None = None,
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
        budget=budget,
    )
    return RetryBlock(policy, name)
