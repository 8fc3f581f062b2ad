"""Event records, listener protocols and the default logging listener.

A listener is any object with one or more of the hook methods (``on_retry``,
``on_give_up``; the circuit breaker adds its own). Each hook receives one frozen
record. Nothing is built on the success path: records exist only when something
failed and someone listens. A listener that raises is logged and never breaks the
call it observes.

Listeners are given to each policy or breaker. A *subscriber* (`subscribe`) hears the
rare events of every one of them, present and future, in the whole process: what a
metrics exporter needs.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ._correlation import current_correlation_id
from ._record import Record

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

__all__ = [
    "BREAKER_HOOKS",
    "BreakerEvent",
    "BreakerListener",
    "BulkheadEvent",
    "LoggingListener",
    "RetryDetails",
    "RetryListener",
    "StateChange",
    "Subscriber",
    "TimeoutEvent",
    "emit",
    "hooks",
    "listener_tuple",
    "logger",
    "subscribe",
]

logger = logging.getLogger("stalwart")
"""The logger stalwart writes to (child loggers: ``stalwart.retry``, ...)."""

_retry_logger = logging.getLogger("stalwart.retry")
_breaker_logger = logging.getLogger("stalwart.breaker")


class RetryDetails(Record):
    """What happened in a retried call, given to ``on_retry`` and ``on_give_up``.

    Attributes:
        name: The retried function's qualified name, or the block's name.
        attempt: The number of the attempt that just failed (1 for the first).
        delay: Seconds until the next attempt (``0.0`` on give-up).
        elapsed: Seconds since the first attempt started.
        exception: What the attempt raised, or ``None`` when its result was retried.
        result: The attempt's result when ``retry_if_result`` asked for a retry.
        reason: On give-up, what stopped the retries: ``"3 attempts"``, ``"the
            deadline"``, ``"a timeout around the call"``, ``"retry budget 'api'"``
            (the budget refused a retry), ...; ``None`` for ``on_retry``.

    .. versionadded:: 0.1.0
    .. versionchanged:: Unreleased
       ``reason``.
    """

    __slots__ = ("name", "attempt", "delay", "elapsed", "exception", "result", "reason")  # noqa: RUF023 - fields in order
    name: str
    attempt: int
    delay: float
    elapsed: float
    exception: BaseException | None
    result: Any
    reason: str | None

    def __init__(  # noqa: PLR0917 - positional, as the fields of a dataclass are
        self,
        name: str,
        attempt: int,
        delay: float,
        elapsed: float,
        exception: BaseException | None = None,
        result: Any = None,
        reason: str | None = None,
    ) -> None:
        # Field by field rather than `_set`: one record per retry, on the failure path.
        init = object.__setattr__
        init(self, "name", name)
        init(self, "attempt", attempt)
        init(self, "delay", delay)
        init(self, "elapsed", elapsed)
        init(self, "exception", exception)
        init(self, "result", result)
        init(self, "reason", reason)

    def __repr__(self) -> str:
        # `reason` shows only when set: a retry's record reads as it always did.
        fields = self.__slots__ if self.reason is not None else self.__slots__[:-1]
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in fields)
        return f"RetryDetails({shown})"

    @property
    def exception_type(self) -> str | None:
        """The exception's qualified type name (safe to log), or ``None``."""
        if self.exception is None:
            return None
        cls = type(self.exception)
        return f"{cls.__module__}.{cls.__qualname__}"


@runtime_checkable
class RetryListener(Protocol):
    """Hooks a retry calls. Implement either or both; missing ones are skipped.

    .. versionadded:: 0.1.0
    """

    def on_retry(self, details: RetryDetails) -> None:
        """Called after a failed attempt, before sleeping `details.delay`."""

    def on_give_up(self, details: RetryDetails) -> None:
        """Called once when retries end without success."""


class StateChange(Record):
    """A circuit breaker changed state; given to ``on_state_change``.

    Attributes:
        name: The breaker's name.
        old: The state it left (a `stalwart.breaker.State` value, e.g. ``"closed"``).
        new: The state it entered.
        reason: Why, in words ("5 failures within 60s", "reset", ...).
        generation: The number of the state entered: every state change starts the
            next one, in the breaker's storage (shared by every process, with Redis).
            Listeners may hear of changes out of order (two threads, two processes);
            the highest generation is the latest state. ``None`` when not known.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("name", "old", "new", "reason", "generation")  # noqa: RUF023 - fields in order
    name: str
    old: str
    new: str
    reason: str
    generation: int | None

    def __init__(
        self, name: str, old: str, new: str, reason: str, generation: int | None = None
    ) -> None:
        self._set(name, old, new, reason, generation)


class BreakerEvent(Record):
    """A call through a circuit breaker, given to its success, failure or rejected hook.

    Attributes:
        name: The breaker's name.
        state: The breaker's state when the event happened.
        duration: How long the call took, when the breaker measures it.
        exception_type: The qualified type name of the call's exception, if any.
        retry_after: For a rejection, seconds until the breaker probes again.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("name", "state", "duration", "exception_type", "retry_after")  # noqa: RUF023 - fields in order
    name: str
    state: str
    duration: float | None
    exception_type: str | None
    retry_after: float | None

    def __init__(
        self,
        name: str,
        state: str,
        duration: float | None = None,
        exception_type: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self._set(name, state, duration, exception_type, retry_after)


@runtime_checkable
class BreakerListener(Protocol):
    """Hooks a circuit breaker calls. Implement any of them; missing ones are skipped.

    .. versionadded:: 0.1.0
    """

    def on_state_change(self, change: StateChange) -> None:
        """Called after the breaker changed state."""

    def on_success(self, event: BreakerEvent) -> None:
        """Called after a call the breaker counts as a success."""

    def on_failure(self, event: BreakerEvent) -> None:
        """Called after a call the breaker counts as a failure."""

    def on_rejected(self, event: BreakerEvent) -> None:
        """Called when the breaker rejects a call."""


_HOOKS = ("on_retry", "on_give_up")
BREAKER_HOOKS = ("on_state_change", "on_success", "on_failure", "on_rejected")


class TimeoutEvent(Record):
    """A timeout or a deadline stopped a call; given to a subscriber's ``on_timeout``.

    Attributes:
        seconds: The limit that passed, in seconds (``0.0`` when a deadline had
            already passed before the call started).
        where: ``"timeout"`` when the timeout's own limit passed, ``"deadline"`` when
            the `stalwart.deadline` in force was the nearer limit.
        name: The limited function's qualified name, or ``None`` for a block.
        correlation_id: The correlation id in force, or ``None``.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("seconds", "where", "name", "correlation_id")  # noqa: RUF023 - fields in order
    seconds: float
    where: str
    name: str | None
    correlation_id: str | None

    def __init__(
        self,
        seconds: float,
        where: str,
        name: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        self._set(seconds, where, name, correlation_id)


class BulkheadEvent(Record):
    """A bulkhead refused a call; given to a subscriber's ``on_bulkhead_full``.

    Only refusals are reported: a call let in, at once or after waiting, builds
    nothing.

    Attributes:
        name: The bulkhead's name.
        reason: ``"queue full"`` (every slot and queue place was taken) or ``"timed
            out"`` (the wait ended, at its ``queue_timeout`` or the deadline in force,
            without a slot): the refused call's `BulkheadFull.reason`.
        in_use: Slots held when the call was refused.
        queued: Calls waiting when the call was refused (the refused one not among
            them).
        correlation_id: The correlation id in force, or ``None``.

    .. versionadded:: Unreleased
    """

    __slots__ = ("name", "reason", "in_use", "queued", "correlation_id")  # noqa: RUF023 - fields in order
    name: str
    reason: str
    in_use: int
    queued: int
    correlation_id: str | None

    def __init__(
        self,
        name: str,
        reason: str,
        in_use: int,
        queued: int,
        correlation_id: str | None = None,
    ) -> None:
        self._set(name, reason, in_use, queued, correlation_id)


@runtime_checkable
class Subscriber(Protocol):
    """What `subscribe` accepts: an object with any of these hooks.

    Each receives the frozen record the per-object listeners receive. There is no
    ``on_success`` or ``on_failure``: they would run on every call, and the counts
    they would give are kept by the breakers already (`CircuitBreaker.stats`).

    .. versionadded:: 0.1.0
    """

    def on_retry(self, details: RetryDetails) -> None:
        """A retried call failed an attempt and will try again."""

    def on_give_up(self, details: RetryDetails) -> None:
        """A retried call ended without success."""

    def on_state_change(self, change: StateChange) -> None:
        """A circuit breaker changed state."""

    def on_rejected(self, event: BreakerEvent) -> None:
        """A circuit breaker rejected a call."""

    def on_timeout(self, event: TimeoutEvent) -> None:
        """A timeout or a deadline stopped a call."""

    def on_bulkhead_full(self, event: BulkheadEvent) -> None:
        """A bulkhead refused a call (its queue was full, or the wait timed out)."""

    def on_dead_letter(self, event: Any) -> None:
        """A resilient Celery task sent a message to the dead-letter queue.

        The record is a `stalwart.contrib.celery.DeadLetterEvent`.
        """

    def on_rollback(self, event: Any) -> None:
        """A retried database transaction rolled an attempt back.

        The record is a `TransactionRollback` (from `stalwart.contrib.django.db` or
        `stalwart.contrib.sqlalchemy`).
        """


SUBSCRIBER_HOOKS = (
    "on_retry",
    "on_give_up",
    "on_state_change",
    "on_rejected",
    "on_timeout",
    "on_bulkhead_full",
    "on_dead_letter",
    "on_rollback",
)
"""The hooks a subscriber may have."""

_Handlers = tuple["Callable[[Any], object]", ...]


class _Subscribed:
    """Every subscriber's handlers, by hook: one tuple each, replaced whole on a change.

    Emitters read one attribute, and only where a rare event happens: a tuple read
    while another thread subscribes is the old one or the new one, never half of one.
    """

    __slots__ = SUBSCRIBER_HOOKS

    def __init__(self) -> None:
        for name in SUBSCRIBER_HOOKS:
            setattr(self, name, ())

    on_retry: _Handlers
    on_give_up: _Handlers
    on_state_change: _Handlers
    on_rejected: _Handlers
    on_timeout: _Handlers
    on_bulkhead_full: _Handlers
    on_dead_letter: _Handlers
    on_rollback: _Handlers


subscribed = _Subscribed()
"""The subscribers' handlers, read by the code that emits rare events."""

_subscriptions: dict[object, dict[str, _Handlers]] = {}
_subscribing = threading.Lock()


def subscribe(listener: object) -> Callable[[], None]:
    """Hear the rare events of every retry, breaker, timeout, bulkhead, task and transaction.

    `listener` has any of the hooks of `Subscriber`: ``on_retry``, ``on_give_up``,
    ``on_state_change``, ``on_rejected``, ``on_timeout``, ``on_bulkhead_full``,
    ``on_dead_letter``, ``on_rollback``. It hears the events of every policy, breaker,
    timeout, bulkhead, resilient Celery task and retried transaction in the process,
    those made before and after it subscribed, whatever listeners each was given (and
    with ``log=False``).

    Hooks are called synchronously, in the thread where the event happens, after the
    object's own listeners. A hook that raises is logged and ignored: it never breaks
    the call. Calls that succeed never reach a subscriber, and pay nothing for one:
    subscribers are read only where a rare event is emitted. Subscribing and
    unsubscribing are thread-safe; the same object subscribed twice hears each event
    twice.

    Args:
        listener: The object whose hooks are called.

    Returns:
        A function that unsubscribes it (calling it again does nothing).

    Raises:
        TypeError: `listener` has none of the hooks, or one of them is ``async``.

    Example::

        class CountOpens:
            opens = 0

            def on_state_change(self, change):
                if change.new == "open":
                    self.opens += 1

        unsubscribe = stalwart.events.subscribe(CountOpens())

    .. versionadded:: 0.1.0
    """
    if not any(callable(getattr(listener, name, None)) for name in SUBSCRIBER_HOOKS):
        raise TypeError(
            f"listener must have a method among {list(SUBSCRIBER_HOOKS)}, got {listener!r}"
        )
    found = hooks((listener,), SUBSCRIBER_HOOKS, parameter="listener")
    key = object()
    with _subscribing:
        _subscriptions[key] = found
        _publish()

    def unsubscribe() -> None:
        with _subscribing:
            if _subscriptions.pop(key, None) is not None:
                _publish()

    return unsubscribe


def _publish() -> None:
    """Rebuild every hook's tuple from the subscriptions (with `_subscribing` held)."""
    for name in SUBSCRIBER_HOOKS:
        setattr(
            subscribed,
            name,
            tuple(handler for found in _subscriptions.values() for handler in found[name]),
        )


def forward(hook: str) -> Callable[[Any], None]:
    """Return a handler that passes its record on to the subscribers of `hook`.

    For emitters whose handlers are resolved once (a task's dead-letter hooks): the
    subscribers are read when the record comes, not when the handler was made.
    """
    if hook not in SUBSCRIBER_HOOKS:
        raise ValueError(f"hook must be one of {list(SUBSCRIBER_HOOKS)}, got {hook!r}")

    def to_subscribers(record: Any) -> None:
        handlers: _Handlers = getattr(subscribed, hook)
        if handlers:
            emit(handlers, record)

    to_subscribers.__qualname__ = f"subscribers.{hook}"
    return to_subscribers


def report_timeout(seconds: float, where: str, name: str | None = None) -> None:
    """Tell the ``on_timeout`` subscribers that a limit passed; build nothing if none."""
    handlers = subscribed.on_timeout
    if handlers:
        emit(handlers, TimeoutEvent(seconds, where, name, current_correlation_id()))


def report_bulkhead_full(name: str, reason: str, in_use: int, queued: int) -> None:
    """Tell the ``on_bulkhead_full`` subscribers that a bulkhead refused a call.

    Builds nothing when nobody subscribed. Call it outside the bulkhead's lock: a
    subscriber may read the bulkhead's stats.
    """
    handlers = subscribed.on_bulkhead_full
    if handlers:
        emit(handlers, BulkheadEvent(name, reason, in_use, queued, current_correlation_id()))


def listener_tuple(
    listeners: Iterable[object], parameter: str = "listeners"
) -> tuple[object, ...]:
    """Return `listeners` as a tuple.

    Raises:
        TypeError: `listeners` is not iterable (one listener given alone, say); the
            message names `parameter` and the value.
    """
    try:
        return tuple(listeners)
    except TypeError:
        raise TypeError(
            f"{parameter} must be an iterable of listeners (a list or tuple), got"
            f" {listeners!r}; for one listener, pass {parameter}=[listener]"
        ) from None


def _is_async(method: Callable[..., object]) -> bool:
    """Whether calling `method` makes a coroutine or async generator (never awaited)."""
    import inspect  # noqa: PLC0415 - used only when listeners are given; ~4 ms at import

    call = type(method).__call__  # an object with ``async def __call__`` is async too
    return any(
        inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f) for f in (method, call)
    )


def hooks(
    listeners: Iterable[object], names: Sequence[str] = _HOOKS, *, parameter: str = "listeners"
) -> dict[str, tuple[Callable[[Any], object], ...]]:
    """Collect each listener's bound hook methods, by hook name.

    Hooks are called synchronously, from sync and async code alike, so an ``async def``
    hook is refused: its coroutine would never be awaited.

    Raises:
        TypeError: `listeners` is not iterable, a listener has none of the hooks
            `names`, or one of its hooks is ``async``; the message names `parameter`
            and the listener (and the hook).
    """
    found: dict[str, list[Callable[[Any], object]]] = {name: [] for name in names}
    for listener in listener_tuple(listeners, parameter):
        methods = [(n, getattr(listener, n, None)) for n in names]
        if not any(callable(m) for _, m in methods):
            raise TypeError(
                f"{parameter} must hold objects with a method among {list(names)},"
                f" got {listener!r}"
            )
        for name, method in methods:
            if not callable(method):
                continue
            if _is_async(method):
                raise TypeError(
                    f"{parameter}: {name} of {listener!r} is async, but hooks are called"
                    " synchronously and a coroutine would never be awaited; make it a"
                    " plain def (it may hand work to a task or a queue)"
                )
            found[name].append(method)
    return {name: tuple(methods) for name, methods in found.items()}


def emit(handlers: Iterable[Callable[[Any], object]], record: object) -> None:
    """Call every handler with `record`; log, and otherwise ignore, any that raise.

    One exception is let through: a `TimeoutExceeded` raised while a sync
    `stalwart.timeout` around the call has expired. That is the timeout's ``SIGALRM``
    firing while a listener ran, and it must end the call it limits.
    """
    for handler in handlers:
        try:
            handler(record)
        except Exception as exc:
            if _enclosing_timeout(exc):
                raise
            logger.exception("stalwart listener %r raised; ignoring it", handler)


def _enclosing_timeout(exc: Exception) -> bool:
    """Whether `exc` is the expiry of a sync timeout around the running call."""
    from .errors import TimeoutExceeded  # noqa: PLC0415 - only once a listener failed
    from .timeout import timeout_expired  # noqa: PLC0415

    # A listener's own timeout has been left by now: only an enclosing one is in force.
    return isinstance(exc, TimeoutExceeded) and timeout_expired()


class _ListenerClass(type):
    """The type of `LoggingListener`: checks the class-wide retry level as it is set."""

    _retry_level: int

    @property
    def retry_level(cls) -> int:
        """The level of retry records for every listener without one of its own."""
        return cls._retry_level

    @retry_level.setter
    def retry_level(cls, value: int) -> None:
        cls._retry_level = _level("retry_level", value)

    @retry_level.deleter
    def retry_level(cls) -> None:  # back to the default (``monkeypatch`` undoes so)
        cls._retry_level = logging.INFO


class LoggingListener(metaclass=_ListenerClass):
    """Logs retries, give-ups and breaker state changes through stdlib `logging`.

    Retry records go to the ``stalwart.retry`` logger, each retry at `retry_level`
    (INFO unless set) and each give-up at WARNING, with structured ``extra`` fields:
    ``stalwart_event``, ``function``, ``attempt``, ``delay``, ``elapsed`` and
    ``exception_type`` (never the exception's message, which may hold secrets).
    Breaker state changes go to ``stalwart.breaker`` at WARNING with
    ``stalwart_event="state_change"``, ``breaker``, ``old_state``, ``state`` and
    ``reason``. Every record also carries ``correlation_id``: the id set with
    `stalwart.correlation_id`, or ``None``.

    Retries are INFO so that a system under stress does not pay for, nor flood its
    logs with, one WARNING per failed attempt: the calls that failed for good are the
    WARNINGs. To see every retry, let INFO through on ``stalwart.retry``
    (``logging.getLogger("stalwart.retry").setLevel(logging.INFO)``); to have them at
    WARNING, set ``stalwart.LoggingListener.retry_level = logging.WARNING`` once at
    start-up (every listener without a level of its own follows, the default ones
    included), or give one listener ``retry_level=``.

    Args:
        logger: One logger for every record, instead of the two above.
        retry_level: The level of retry records for this listener; ``None`` follows
            the class-wide ``LoggingListener.retry_level`` (INFO unless set; ``del``
            sets it back to INFO).

    Raises:
        TypeError: `retry_level` is not an int (here, or set on the class).
        ValueError: `retry_level` is not a level from DEBUG (10) to CRITICAL (50).

    .. versionadded:: 0.1.0
    .. versionchanged:: Unreleased
       Retries are logged at INFO, not WARNING; ``retry_level``.
    """

    __module__ = "stalwart"

    _retry_level = logging.INFO

    def __init__(
        self, logger: logging.Logger | None = None, *, retry_level: int | None = None
    ) -> None:
        self.logger = logger or _retry_logger
        self.breaker_logger = logger or _breaker_logger
        self._own_level = None if retry_level is None else _level("retry_level", retry_level)

    def on_state_change(self, change: StateChange) -> None:
        """Log one breaker state change."""
        self.breaker_logger.warning(
            "circuit breaker %s: %s -> %s (%s)",
            change.name,
            change.old,
            change.new,
            change.reason,
            extra={
                "stalwart_event": "state_change",
                "breaker": change.name,
                "old_state": change.old,
                "state": change.new,
                "reason": change.reason,
                "correlation_id": current_correlation_id(),
            },
        )

    def on_retry(self, details: RetryDetails) -> None:
        """Log one scheduled retry."""
        logger = self.logger
        level = self._own_level
        if level is None:
            level = self._retry_level
        if not logger.isEnabledFor(level):
            return
        kind = details.exception_type
        _log(
            logger,
            level,
            "retrying %s in %.3fs after attempt %d failed with %s",
            (details.name, details.delay, details.attempt, _failure_of(kind, details)),
            _extra("retry", details, kind),
        )

    def on_give_up(self, details: RetryDetails) -> None:
        """Log that retries ended without success."""
        logger = self.logger
        if not logger.isEnabledFor(logging.WARNING):
            return
        kind = details.exception_type
        _log(
            logger,
            logging.WARNING,
            "giving up on %s after %d attempt%s over %.3fs; last failure: %s",
            (
                details.name,
                details.attempt,
                "" if details.attempt == 1 else "s",
                details.elapsed,
                _failure_of(kind, details),
            ),
            _extra("give_up", details, kind),
        )


def _level(name: str, value: object) -> int:
    """Check a logging level given as `name`: an int from DEBUG to CRITICAL."""
    if not isinstance(value, int) or isinstance(value, bool):
        msg = f"{name} must be a logging level such as logging.INFO, got {value!r}"
        raise TypeError(msg)
    if not logging.DEBUG <= value <= logging.CRITICAL:
        msg = f"{name} must be a logging level from DEBUG (10) to CRITICAL (50), got {value!r}"
        raise ValueError(msg)
    return value


def _log(
    logger: logging.Logger, level: int, msg: str, args: tuple[object, ...], extra: Any
) -> None:
    """Log at `level` (the caller checked it) as ``logger.log`` would.

    The message is formatted only if a handler formats it, and no traceback is
    attached. A plain `logging.Logger` gets the record straight from `makeRecord`
    and `handle`: the caller's file, line and function are those of this function's
    caller, which ``logger.log`` would find by walking the stack (a third of the
    cost of a record). Another logger class gets ``logger.log`` itself.
    """
    if type(logger) is not logging.Logger:
        logger.log(level, msg, *args, extra=extra, stacklevel=2)
        return
    caller = sys._getframe(1)  # noqa: SLF001 - what findCaller would find, for free
    code = caller.f_code
    record = logger.makeRecord(
        logger.name,
        level,
        code.co_filename,
        caller.f_lineno,
        msg,
        args,
        None,
        code.co_name,
        extra,
    )
    logger.handle(record)


def _failure_of(kind: str | None, details: RetryDetails) -> str:
    """Name what an attempt failed with: an exception type, an HTTP status, or a result."""
    if kind:
        return kind
    status = getattr(details.result, "status_code", None)
    if isinstance(status, int) and not isinstance(status, bool):
        return f"HTTP {status}"
    return "a retried result"


def _extra(event: str, details: RetryDetails, kind: str | None) -> dict[str, object]:
    return {
        "stalwart_event": event,
        "function": details.name,
        "attempt": details.attempt,
        "delay": details.delay,
        "elapsed": details.elapsed,
        "exception_type": kind,
        "correlation_id": current_correlation_id(),
    }
