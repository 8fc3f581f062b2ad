"""`CircuitBreaker`: the facade users decorate with, over a storage and its machine."""

from __future__ import annotations

import threading
import time
from contextvars import ContextVar
from types import CoroutineType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from .. import _clock, _validate
from .._record import Record
from .._run import protect
from ..classify import DEFAULT_CLASSIFIER, Verdict
from ..errors import BulkheadFull, CircuitOpenError
from ..events import (
    BREAKER_HOOKS,
    BreakerEvent,
    LoggingListener,
    StateChange,
    emit,
    hooks,
    listener_tuple,
    subscribed,
)
from .machine import (
    DEFAULT_FAILURE_THRESHOLD,
    DEFAULT_HALF_OPEN_MAX_CALLS,
    DEFAULT_RECOVERY_TIMEOUT,
    DEFAULT_SUCCESS_THRESHOLD,
    DEFAULT_WINDOW,
    REJECTED,
    BreakerConfig,
    Machine,
    State,
)
from .storage import MemoryState, MemoryStorage, new_open_error, shielded

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable
    from datetime import timedelta
    from types import TracebackType

    from typing_extensions import Self

    from .machine import Transition
    from .registry import BreakerRegistry
    from .storage import BreakerState, Counts, Storage

__all__ = ["BreakerStats", "CircuitBreaker", "RecordSpec"]

P = ParamSpec("P")
T = TypeVar("T")

RecordSpec = Any
"""What `record=` accepts: exception types, or a predicate returning True for failures."""

_HEALTH = {
    State.CLOSED: 100,
    State.HALF_OPEN: 50,
    State.OPEN: 0,
    State.FORCED_OPEN: 0,
    State.DISABLED: 100,
}
_DEFAULT_LISTENERS: tuple[object, ...] = (LoggingListener(),)


class _DefaultRegistry:
    """The default of ``registry=``: `stalwart.registry`, looked up when needed."""

    def __repr__(self) -> str:
        return "stalwart.registry"


DEFAULT_REGISTRY: Any = _DefaultRegistry()


def _seconds(name: str, value: Any) -> Any:
    """Seconds from a number or a `timedelta`; an error shows the value as given."""
    return None if value is None else _validate.seconds(name, value, positive=True)


def check_name(name: object, spelling: str) -> str:
    """Return `name` if it is a valid breaker name, else raise saying what is wrong.

    `spelling` is how the caller is written (``@CircuitBreaker``, say): a function
    given for a name is a decorator used without its name, and the error shows the
    call to write instead.
    """
    if isinstance(name, str):
        if not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        return name
    if callable(name):
        raise TypeError(
            f'{spelling} takes the breaker\'s name first: write {spelling}("name"),'
            f" got the function {name!r}"
        )
    raise TypeError(f"name must be a string, got {name!r}")


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    return f"{cls.__module__}.{cls.__qualname__}"


def _failure_predicate(record: object) -> Callable[[BaseException], bool]:
    """Validate `record=` and turn it into "is this exception a failure?"."""
    if record is None:
        match = DEFAULT_CLASSIFIER.match
        return lambda exc: match(exc) is not Verdict.PERMANENT
    if isinstance(record, type) and issubclass(record, BaseException):
        types: tuple[type[BaseException], ...] = (record,)
    elif (
        isinstance(record, tuple)
        and record
        and all(isinstance(t, type) and issubclass(t, BaseException) for t in record)
    ):
        types = record
    elif callable(record) and not isinstance(record, type):
        return record
    else:
        raise TypeError(f"record must be exception types or a predicate, got {record!r}")
    return lambda exc: isinstance(exc, types)


class BreakerStats(Record):
    """A snapshot of one breaker, JSON-ready through `as_dict`; frozen, as a dataclass.

    It never holds exception messages (they can carry secrets), only type names.
    Times (`opened_at`, `last_failure_at`) are Unix timestamps. `calls`, `successes`
    and `failures` count since creation; `window_failures` counts the sliding window.
    `window_calls` and `failure_rate` are ``None`` unless a rate is configured: only
    then are successes windowed (it costs a clock read per call).

    .. versionadded:: 0.1.0
    .. versionchanged:: Unreleased
       No longer a `dataclasses` dataclass: `dataclasses.asdict`, ``fields`` and
       ``replace`` do not apply to it; use `as_dict` (and ``_replace``).
    """

    __slots__ = (  # noqa: RUF023 - fields in order
        "name",
        "state",
        "health",
        "calls",
        "successes",
        "failures",
        "rejected",
        "slow_calls",
        "consecutive_failures",
        "window_calls",
        "window_failures",
        "failure_rate",
        "opened_at",
        "last_failure_at",
        "last_failure_type",
        "retry_after",
        "storage_degraded",
        "config",
    )
    name: str
    state: str
    health: int
    calls: int
    successes: int
    failures: int
    rejected: int
    slow_calls: int
    consecutive_failures: int
    window_calls: int | None
    window_failures: int
    failure_rate: float | None
    opened_at: float | None
    last_failure_at: float | None
    last_failure_type: str | None
    retry_after: float | None
    storage_degraded: bool
    config: dict[str, Any]

    def __init__(  # noqa: PLR0917 - positional, as the fields of a dataclass are
        self,
        name: str,
        state: str,
        health: int,
        calls: int,
        successes: int,
        failures: int,
        rejected: int,
        slow_calls: int,
        consecutive_failures: int,
        window_calls: int | None,
        window_failures: int,
        failure_rate: float | None,
        opened_at: float | None,
        last_failure_at: float | None,
        last_failure_type: str | None,
        retry_after: float | None,
        storage_degraded: bool,
        config: dict[str, Any],
    ) -> None:
        # Field by field rather than `_set`: metrics exporters take one per breaker per scrape.
        init = object.__setattr__
        init(self, "name", name)
        init(self, "state", state)
        init(self, "health", health)
        init(self, "calls", calls)
        init(self, "successes", successes)
        init(self, "failures", failures)
        init(self, "rejected", rejected)
        init(self, "slow_calls", slow_calls)
        init(self, "consecutive_failures", consecutive_failures)
        init(self, "window_calls", window_calls)
        init(self, "window_failures", window_failures)
        init(self, "failure_rate", failure_rate)
        init(self, "opened_at", opened_at)
        init(self, "last_failure_at", last_failure_at)
        init(self, "last_failure_type", last_failure_type)
        init(self, "retry_after", retry_after)
        init(self, "storage_degraded", storage_degraded)
        init(self, "config", config)

    def as_dict(self) -> dict[str, Any]:
        """Return the snapshot as plain JSON-serialisable data."""
        values = self._asdict()
        values["config"] = dict(self.config)  # a copy, as the caller may change it
        return values


_ANNOUNCING = threading.Lock()
"""Held while a breaker compares a transition with the last it announced (rarely)."""
_RENUMBERED = 1 << 47
"""How far below the last generation announced a new numbering starts."""

_open_calls: ContextVar[tuple[tuple[CircuitBreaker, int, float], ...]] = ContextVar(
    "stalwart_breaker_calls", default=()
)


class CircuitBreaker:
    """Stops calling a failing dependency for a while, then probes it carefully.

    .. code-block:: python

        breaker = stalwart.CircuitBreaker("jira", failure_threshold=5, window=60)

        @breaker
        def search(query: str) -> list[Issue]: ...

    While **closed**, calls flow and failures are counted in a sliding window. When
    they cross a threshold the breaker **opens**: calls fail at once with
    `CircuitOpenError` for `recovery_timeout` seconds. Then it goes **half-open** and
    lets `half_open_max_calls` probe calls through: `success_threshold` successes
    close it, a failure opens it again.

    Args:
        name: The breaker's name, in errors, logs, stats and registries.
        failure_threshold: Failures that open the breaker: within the sliding
            `window` (seconds), or in a row when `window` is ``None`` (as pybreaker's
            ``fail_max``). ``None`` to trip on rates only.
        window: The sliding time window, in seconds or a `timedelta` (default 60;
            at least 0.001 s).
        failure_rate: Also open when this fraction of calls (0-1] fail, once at least
            `minimum_calls` were made, over the last `window_calls` calls (or the time
            window when `window_calls` is not given).
        minimum_calls: Calls needed before rates are judged (default 10, or
            `window_calls` when that is smaller); at most `window_calls`.
        window_calls: Size of the count window that rates are measured over; only
            with `failure_rate` or `slow_call_rate`.
        slow_call_duration: Calls taking at least this long are slow...
        slow_call_rate: ...and this fraction of slow calls opens the breaker.
        recovery_timeout: How long it stays open before probing (default 60 s).
        half_open_max_calls: Concurrent probe calls allowed while half-open (1).
        success_threshold: Probe successes needed to close again (1).
        record: Which exceptions count as failures: exception types, or a predicate
            returning True for a failure. By default transient and unknown exceptions
            are failures, and permanent ones (the dependency answered, say "not
            found") count as successes. Cancellation is never counted.
        storage: Where the state lives (`MemoryStorage` by default; a Redis storage
            shares it across processes).
        clock: A monotonic clock (seconds); `stalwart.testing.ManualClock` in tests.
        listeners: Objects with any of ``on_state_change``, ``on_success``,
            ``on_failure``, ``on_rejected``.
        log: Whether state changes are logged (WARNING, logger ``stalwart.breaker``).
        registry: The `BreakerRegistry` the breaker joins, so that its ``health()``,
            ``snapshot()`` and ``get(name)`` include it: `stalwart.registry` by
            default, ``None`` for none. The registry holds it weakly: a breaker
            nobody references any more leaves it. It keeps its own storage, clock
            and listeners.

    Raises:
        ValueError: An option is out of range (named in the message, with the value),
            or `registry` holds a live breaker of that name already (the message
            names the options that differ).
        TypeError: `name` is not a string (``@CircuitBreaker`` used without a name),
            or `record`, `storage`, `listeners` or `registry` hold the wrong kind of
            object.

    .. versionadded:: 0.1.0
    """

    __module__ = "stalwart"
    __slots__ = (
        "__weakref__",
        "_is_failure",
        "_last_generation",
        "_last_state",
        "_on_failure",
        "_on_rejected",
        "_on_state_change",
        "_on_success",
        "_state",
        "clock",
        "config",
        "listeners",
        "name",
        "record",
        "storage",
    )

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int | None = DEFAULT_FAILURE_THRESHOLD,
        window: float | timedelta | None = DEFAULT_WINDOW,
        failure_rate: float | None = None,
        minimum_calls: int | None = None,
        window_calls: int | None = None,
        slow_call_duration: float | timedelta | None = None,
        slow_call_rate: float | None = None,
        recovery_timeout: float | timedelta = DEFAULT_RECOVERY_TIMEOUT,
        half_open_max_calls: int = DEFAULT_HALF_OPEN_MAX_CALLS,
        success_threshold: int = DEFAULT_SUCCESS_THRESHOLD,
        record: RecordSpec = None,
        storage: Storage | None = None,
        clock: Callable[[], float] | None = None,
        listeners: Iterable[object] = (),
        log: bool = True,
        registry: BreakerRegistry | None = DEFAULT_REGISTRY,
    ) -> None:
        self.name = check_name(name, "@CircuitBreaker")
        self.config = BreakerConfig(
            failure_threshold=failure_threshold,
            window=_seconds("window", window),
            failure_rate=failure_rate,
            minimum_calls=minimum_calls,
            window_calls=window_calls,
            slow_call_duration=_seconds("slow_call_duration", slow_call_duration),
            slow_call_rate=slow_call_rate,
            recovery_timeout=_seconds("recovery_timeout", recovery_timeout),
            half_open_max_calls=half_open_max_calls,
            success_threshold=success_threshold,
        )
        self.record = record
        self._is_failure = _failure_predicate(record)
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds, got {clock!r}")
        self.clock: Callable[[], float] = _clock.current if clock is None else clock
        self.storage: Storage = MemoryStorage() if storage is None else storage
        bind = getattr(self.storage, "bind", None)
        if not callable(bind):
            raise TypeError(f"storage must be a stalwart Storage, got {storage!r}")
        self._state: BreakerState = bind(name, self.config, self.clock)
        self._last_state = State.CLOSED  # as last seen here; for event records only
        self._last_generation = 0  # the generation of `_last_state`
        self.listeners = listener_tuple(listeners)
        found = hooks(
            (*_DEFAULT_LISTENERS, *self.listeners) if log else self.listeners, BREAKER_HOOKS
        )
        self._on_state_change = found["on_state_change"]
        self._on_success = found["on_success"]
        self._on_failure = found["on_failure"]
        self._on_rejected = found["on_rejected"]
        if registry is not None:  # last: only a valid breaker joins a registry
            # Imported here: the registry module imports this one.
            from .registry import BreakerRegistry  # noqa: PLC0415
            from .registry import registry as default_registry  # noqa: PLC0415

            if registry is DEFAULT_REGISTRY:
                registry = default_registry
            elif not isinstance(registry, BreakerRegistry):
                raise TypeError(f"registry must be a BreakerRegistry or None, got {registry!r}")
            options = {**self.config.as_dict(), "record": record, "log": bool(log)}
            registry._adopt(self, options, self.listeners)  # noqa: SLF001 - its own registry

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self._last_state.value}>"

    def _isolate(self) -> Callable[[], None]:
        """Give the breaker a fresh state until the function returned puts back its own.

        For `stalwart.testing.fresh_breakers`. Only a state kept in memory is
        replaced: a shared storage's state belongs to others too, and stays.
        """
        state, last = self._state, self._last_state
        if not isinstance(state, MemoryState):
            return lambda: None
        # The machine is kept and its fields swapped: hot paths hold it (see
        # `MemoryState.rejecting`).
        machine = state.machine
        fresh = Machine(machine.config)
        with state._lock:  # noqa: SLF001 - the state's own lock, as its methods take it
            saved = [(slot, getattr(machine, slot)) for slot in Machine.__slots__]
            saved_fast = state.fast_generation
            for slot in Machine.__slots__:
                setattr(machine, slot, getattr(fresh, slot))
            state.fast_generation = fresh.fast_generation
        self._last_state = State.CLOSED

        def restore() -> None:
            with state._lock:  # noqa: SLF001
                for slot, value in saved:
                    setattr(machine, slot, value)
                state.fast_generation = saved_fast
            self._last_state = last

        return restore

    # -- the protocol every wrapper follows: admit, call, record -----------------------

    def admit(self) -> int:
        """Ask to make one call; return its token, or raise `CircuitOpenError`.

        Report the outcome with the token: `record_success`, `record_exception`,
        `record_failure`, or `release` when the call ended without one. For code that
        cannot use the decorator or the context managers (an HTTP transport, say).
        Async code uses the ``_async`` twins, which a storage doing I/O requires.
        """
        token = self._state.fast_generation
        if token >= 0:
            return token
        token, retry_after, transition = self._state.admit()
        if transition is not None or self._on_rejected or subscribed.on_rejected:
            self._admitted(token, retry_after, transition)
        if token == REJECTED:
            # Raised here, not in a helper: one frame less for every rejection.
            raise new_open_error(CircuitOpenError, self.name, retry_after)
        return token

    async def admit_async(self) -> int:
        """`admit` for async code."""
        token = self._state.fast_generation
        if token >= 0:
            return token
        token, retry_after, transition = await self._state.admit_async()
        if transition is not None or self._on_rejected or subscribed.on_rejected:
            self._admitted(token, retry_after, transition)
        if token == REJECTED:
            raise new_open_error(CircuitOpenError, self.name, retry_after)
        return token

    def record_success(self, token: int, duration: float | None = None) -> None:
        """Report that the call admitted with `token` succeeded."""
        if duration is None:
            transition = self._state.record_success(token)
        else:
            transition = self._state.record(token, False, duration, None)
        self._succeeded(transition, duration)

    async def record_success_async(self, token: int, duration: float | None = None) -> None:
        """`record_success` for async code.

        With a storage that does I/O, the outcome is recorded and announced even if the
        caller is cancelled meanwhile (see `stalwart.breaker.storage.shielded`).
        """
        state = self._state
        if state.io:
            await shielded(self._record_success_async(token, duration))
            return
        # Memory: no I/O to cancel, and no extra coroutine on a success.
        if duration is None:
            transition = await state.record_success_async(token)
        else:
            transition = await state.record_async(token, False, duration, None)
        self._succeeded(transition, duration)

    async def _record_success_async(self, token: int, duration: float | None) -> None:
        if duration is None:
            transition = await self._state.record_success_async(token)
        else:
            transition = await self._state.record_async(token, False, duration, None)
        self._succeeded(transition, duration)

    def record_failure(
        self, token: int, failure_type: str = "failure", duration: float | None = None
    ) -> None:
        """Report a failure that raised nothing (a 503 response, say).

        `failure_type` names the failure in stats and events.
        """
        transition = self._state.record(token, True, duration, failure_type)
        self._failed(transition, failure_type, duration)

    async def record_failure_async(
        self, token: int, failure_type: str = "failure", duration: float | None = None
    ) -> None:
        """`record_failure` for async code (shielded as `record_success_async` is)."""
        if self._state.io:
            await shielded(self._record_failure_async(token, failure_type, duration))
        else:
            await self._record_failure_async(token, failure_type, duration)

    async def _record_failure_async(
        self, token: int, failure_type: str, duration: float | None
    ) -> None:
        transition = await self._state.record_async(token, True, duration, failure_type)
        self._failed(transition, failure_type, duration)

    def record_exception(
        self, token: int, exc: BaseException, duration: float | None = None
    ) -> None:
        """Report that the call admitted with `token` raised `exc`.

        Cancellation and other non-`Exception` errors release the call uncounted;
        otherwise `record=` (or the classifier) decides failure or success.
        """
        failed = self._verdict(exc)
        if failed is None:
            self._state.release(token)
        elif failed:
            self.record_failure(token, _type_name(exc), duration)
        else:
            self.record_success(token, duration)

    async def record_exception_async(
        self, token: int, exc: BaseException, duration: float | None = None
    ) -> None:
        """`record_exception` for async code."""
        failed = self._verdict(exc)
        if failed is None:
            await self._release_shielded(token)
        elif failed:
            await self.record_failure_async(token, _type_name(exc), duration)
        else:
            await self.record_success_async(token, duration)

    def release(self, token: int) -> None:
        """Give back the permit of a call that ended without an outcome."""
        self._state.release(token)

    async def release_async(self, token: int) -> None:
        """`release` for async code (shielded as `record_success_async` is)."""
        await self._release_shielded(token)

    async def _release_shielded(self, token: int) -> None:
        """Release a call's permit, even inside a cancelled scope or task."""
        if not self._state.io:
            await self._state.release_async(token)  # no I/O, so no checkpoint to fail
            return
        await shielded(self._state.release_async(token))

    # What both colours do with the storage's answers.

    def _admitted(
        self, token: int, retry_after: float | None, transition: Transition | None
    ) -> None:
        """Announce what an admission changed, and tell listeners of a rejection."""
        if transition is not None:
            self.announce(transition)
        if token != REJECTED:
            return
        handlers, everywhere = self._on_rejected, subscribed.on_rejected
        if handlers or everywhere:
            state = self._last_state
            if retry_after is None:
                state = State.FORCED_OPEN
            elif state in {State.CLOSED, State.DISABLED}:  # opened elsewhere
                state = State.OPEN
            event = BreakerEvent(self.name, state.value, retry_after=retry_after)
            emit(handlers, event)
            if everywhere:
                emit(everywhere, event)

    def _succeeded(self, transition: Transition | None, duration: float | None) -> None:
        if transition is not None:
            self.announce(transition)
        if self._on_success:
            state = transition.new if transition is not None else self._last_state
            emit(self._on_success, BreakerEvent(self.name, state.value, duration))

    def _failed(
        self, transition: Transition | None, failure_type: str, duration: float | None
    ) -> None:
        if transition is not None:
            self.announce(transition)
        if self._on_failure:
            state = transition.new if transition is not None else self._last_state
            emit(
                self._on_failure,
                BreakerEvent(self.name, state.value, duration, failure_type),
            )

    def _verdict(self, exc: BaseException) -> bool | None:
        """True for a failure, False for a success, None for "not an outcome".

        Cancellation and exits are no outcome, nor is a `BulkheadFull`: that call never
        reached the dependency.
        """
        if not isinstance(exc, Exception) or isinstance(exc, BulkheadFull):
            return None
        try:
            return bool(self._is_failure(exc))
        except Exception:  # a broken predicate must not hide the call's own error
            return True

    @property
    def fast_state(self) -> BreakerState:
        """The storage state the hot path reads (for `stalwart._run.protect`)."""
        return self._state

    @property
    def fast_admit(self) -> Callable[[], int]:
        """`admit` for the decorator's hot path: the same answers, in fewer frames.

        With memory storage and no ``on_rejected`` listener, a call made while the
        breaker is open is counted and rejected in one frame below the wrapper (while
        a subscriber hears rejections, it goes through `admit`). A closed breaker's
        calls never come here.
        """
        rejecting = getattr(self._state, "rejecting", None)
        if rejecting is None or self._on_rejected:
            return self.admit
        return cast("Callable[[], int]", rejecting(self.name, self.admit))

    @property
    def notify_success(self) -> bool:
        """Whether a listener wants every success."""
        return bool(self._on_success)

    @property
    def timed(self) -> bool:
        """Whether calls are timed for slow-call tracking."""
        return self.config.slow_call_duration is not None

    def announce(self, transition: Transition) -> None:
        """Tell the state-change listeners about `transition`.

        Transitions may arrive out of order (made by two threads, say): each event
        carries the transition's generation, and the state kept for event records
        follows the latest generation only.
        """
        with _ANNOUNCING:
            last = self._last_generation
            # Lower, it is older; unless far lower: a storage numbering afresh (a shared
            # storage's local stand-in numbers from far above, and hands back).
            if transition.generation > last or last - transition.generation > _RENUMBERED:
                self._last_generation = transition.generation
                self._last_state = transition.new
        handlers, everywhere = self._on_state_change, subscribed.on_state_change
        if handlers or everywhere:
            change = StateChange(
                self.name,
                transition.old.value,
                transition.new.value,
                transition.reason,
                transition.generation,
            )
            emit(handlers, change)
            if everywhere:
                emit(everywhere, change)

    # -- decorator, call(), context managers -----------------------------------------

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        """Protect `fn`, sync or async, keeping its signature."""
        return protect(fn, self)

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn(*args, **kwargs)`` through the breaker.

        Raises:
            CircuitOpenError: The breaker rejected the call; `fn` was not called.
            TypeError: `fn` is async (it returned a coroutine, which is closed and
                not counted): use ``await breaker.call_async(fn, ...)``.
        """
        token = self.admit()
        start = self.clock()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self.record_exception(token, exc, self.clock() - start)
            raise
        if type(result) is CoroutineType:
            self._refuse_coroutine(token, fn, cast("CoroutineType[Any, Any, Any]", result))
        self.record_success(token, self._duration(start))
        return result

    def _refuse_coroutine(
        self, token: int, fn: object, coroutine: CoroutineType[Any, Any, Any]
    ) -> None:
        """Undo a `call` of an async function: give the permit back, close, raise."""
        self._state.release(token)
        coroutine.close()  # never awaited, and no warning saying so
        raise TypeError(
            f"{fn!r} is async: breaker.call() would return its coroutine unawaited;"
            f" write await breaker.call_async(fn, ...)"
        )

    async def call_async(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Await ``fn(*args, **kwargs)`` through the breaker."""
        token = await self.admit_async()
        start = self.clock()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            await self.record_exception_async(token, exc, self.clock() - start)
            raise
        await self.record_success_async(token, self._duration(start))
        return result

    def _duration(self, start: float) -> float | None:
        if self.config.slow_call_duration is None:
            return None
        return self.clock() - start

    def __enter__(self) -> Self:
        token = self.admit()
        _open_calls.set((*_open_calls.get(), (self, token, self.clock())))
        return self

    def _pop_call(self) -> tuple[int, float]:
        """Take this breaker's innermost open block in this context: (token, start)."""
        calls = _open_calls.get()
        for i in range(len(calls) - 1, -1, -1):
            if calls[i][0] is self:
                _, token, start = calls[i]
                _open_calls.set(calls[:i] + calls[i + 1 :])
                return token, start
        raise RuntimeError(f"{self!r}: exit without a matching enter in this context")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        token, start = self._pop_call()
        if exc is None:
            self.record_success(token, self._duration(start))
        else:
            self.record_exception(token, exc, self.clock() - start)

    async def __aenter__(self) -> Self:
        token = await self.admit_async()
        _open_calls.set((*_open_calls.get(), (self, token, self.clock())))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        token, start = self._pop_call()
        if exc is None:
            await self.record_success_async(token, self._duration(start))
        else:
            await self.record_exception_async(token, exc, self.clock() - start)

    # -- state, operators, stats -------------------------------------------------------

    @property
    def state(self) -> State:
        """The current state (read from the storage: shared state is fresh)."""
        return self._state.counts().state

    def reset(self) -> None:
        """Close the breaker and forget its windows (totals are kept)."""
        self.announce(self._state.change("reset"))

    def force_open(self) -> None:
        """Hold the breaker open, rejecting every call, until `reset`."""
        self.announce(self._state.change("force_open"))

    def disable(self) -> None:
        """Let every call through and never trip, until `reset`."""
        self.announce(self._state.change("disable"))

    def stats(self) -> BreakerStats:
        """Return a frozen, JSON-ready snapshot of the breaker."""
        return _stats(self.name, self.config, self._state.counts())

    async def reset_async(self) -> None:
        """`reset` for async code."""
        self.announce(await self._state.change_async("reset"))

    async def force_open_async(self) -> None:
        """`force_open` for async code."""
        self.announce(await self._state.change_async("force_open"))

    async def disable_async(self) -> None:
        """`disable` for async code."""
        self.announce(await self._state.change_async("disable"))

    async def stats_async(self) -> BreakerStats:
        """`stats` for async code (reads a shared storage without blocking)."""
        return _stats(self.name, self.config, await self._state.counts_async())


def _stats(name: str, config: BreakerConfig, counts: Counts) -> BreakerStats:
    wall_now = time.time()

    def wall(at: float | None) -> float | None:
        return None if at is None else wall_now - (counts.now - at)

    calls = counts.window_calls
    return BreakerStats(
        name=name,
        state=counts.state.value,
        health=_HEALTH[counts.state],
        calls=counts.successes + counts.failures,
        successes=counts.successes,
        failures=counts.failures,
        rejected=counts.rejected,
        slow_calls=counts.slow_calls,
        consecutive_failures=counts.consecutive_failures,
        window_calls=calls,
        window_failures=counts.window_failures,
        failure_rate=counts.window_failures / calls if calls else None,
        opened_at=wall(counts.opened_at),
        last_failure_at=wall(counts.last_failure_at),
        last_failure_type=counts.last_failure_type,
        retry_after=counts.retry_after,
        storage_degraded=counts.degraded,
        config=config.as_dict(),
    )
