"""Policy: fallback, deadline, retry, hedge, breaker, bulkhead and timeout in one order.

A `Policy` stacks the existing strategies (each already sync and async) when it
decorates a function, innermost first: the per-attempt timeout, the bulkhead, the
breaker, the hedge, the retry, the deadline, the fallback. Only the fallback layer is new here.
"""

from __future__ import annotations

import functools
import inspect
from contextlib import AsyncExitStack, ExitStack
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from . import _validate
from ._deadline import Deadline
from ._run import is_async_callable, refuse_generator_function
from .breaker.circuit import CircuitBreaker
from .bulkhead import Bulkhead
from .errors import CircuitOpenError
from .hedge import Hedger
from .retry import RetryPolicy
from .timeout import Timeout

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from contextlib import AbstractAsyncContextManager, AbstractContextManager
    from datetime import timedelta
    from types import TracebackType

    from typing_extensions import Self

__all__ = ["Policy"]

P = ParamSpec("P")
T = TypeVar("T")

# The exit stacks of the `with` / `async with` blocks open in this context, innermost
# last: one `Policy` may guard blocks in many threads and tasks at once.
_blocks: ContextVar[tuple[ExitStack, ...]] = ContextVar("stalwart_policy_blocks", default=())
_async_blocks: ContextVar[tuple[AsyncExitStack, ...]] = ContextVar(
    "stalwart_policy_async_blocks", default=()
)


def _never_circuit_open(retry: RetryPolicy) -> RetryPolicy:
    """Return a copy of `retry` that never retries `CircuitOpenError`, else unchanged."""
    should_retry = retry.should_retry

    def retryable(exc: BaseException) -> bool:
        return not isinstance(exc, CircuitOpenError) and should_retry(exc)

    return retry.replace(on=retryable)


def _with_fallback(
    fn: Callable[..., Any], fallback: Callable[..., Any], is_async: bool
) -> Callable[..., Any]:
    """Wrap `fn` so that an `Exception` it raises is handed to `fallback`.

    Cancellation, `KeyboardInterrupt`, `SystemExit` and `GeneratorExit` are not
    `Exception` and pass through untouched.
    """
    if is_async:

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except Exception as exc:
                result = fallback(exc, *args, **kwargs)
                return await result if inspect.isawaitable(result) else result

        return async_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            return fallback(exc, *args, **kwargs)

    return wrapper


class Policy:
    """Fallback, deadline, retry, hedge, circuit breaker, bulkhead and timeout, as one plan.

    .. code-block:: python

        policy = stalwart.Policy(
            fallback=lambda exc, sku: CACHED_PRICES[sku],
            deadline=10,
            retry=stalwart.retry(attempts=3),
            breaker=stalwart.CircuitBreaker("prices"),
            bulkhead=stalwart.bulkhead("prices", max_concurrent=20),
            timeout=2,
        )

        @policy
        def price(sku: str) -> Decimal: ...

    Every argument is optional; a layer that is not given is left out. The layers
    always nest in this order, outermost first::

        fallback( deadline( retry( hedge( breaker( bulkhead( timeout( call ) ) ) ) ) ) )

    ========  ==========  ===============================================================
    Order     Layer       What it does there
    ========  ==========  ===============================================================
    1         fallback    Replaces any `Exception` from everything inside with
                          ``fallback(exc, *args, **kwargs)``.
    2         deadline    Opens a `stalwart.deadline` for the whole call: retries never
                          sleep past it, and no attempt runs past it.
    3         retry       Runs the attempts; never retries `CircuitOpenError`.
    4         hedge       Async only: races copies of each attempt, a copy more after
                          each hedging delay; the first good result wins and the
                          others are cancelled.
    5         breaker     Admits or rejects each attempt and counts its outcome.
    6         bulkhead    Holds a slot for each attempt (waiting in its queue if it
                          may); a full one raises `BulkheadFull` for that attempt.
    7         timeout     Limits each attempt to its seconds and to what is left of
                          the deadline.
    8         the call
    ========  ==========  ===============================================================

    Args:
        fallback: Called as ``fallback(exc, *args, **kwargs)`` when everything inside
            failed with an `Exception`; what it returns is returned instead. Never
            called for cancellation, `KeyboardInterrupt`, `SystemExit` or
            `GeneratorExit`. For an ``async def`` function it may be a plain function
            or a coroutine function (an awaitable result is awaited); for a sync
            function it must not be a coroutine function.
        deadline: The budget for the whole call, in seconds or a `timedelta`, set as
            a `stalwart.deadline` around the retries. Without `timeout`, each attempt
            still gets a `stalwart.timeout(None)`, so it is stopped when the deadline
            passes.
        retry: A `RetryPolicy` from `stalwart.retry`. Whatever its `on` says,
            `CircuitOpenError` is never retried: an open breaker ends the retries.
        hedge: A `Hedger` (``stalwart.hedge(name, ...)`` or built directly), for
            ``async def`` functions only: each attempt is hedged, and every copy
            goes through the breaker, the bulkhead and the timeout on its own. A
            copy cancelled because another won counts neither as a failure nor as
            a success. Decorating a sync function, or guarding a ``with`` block,
            raises `TypeError`.
        breaker: A `CircuitBreaker`; each attempt is one call through it.
        bulkhead: A `Bulkhead` (``stalwart.bulkhead(name, ...)`` or built directly);
            each attempt takes a slot. An attempt the breaker rejects never queues
            for a slot; the time an attempt waits in the queue does not count
            against its `timeout`, only against the deadline. `BulkheadFull` is
            retried only if `retry`'s ``on`` says so (it is not transient by
            default).
        timeout: The limit on each attempt: seconds, a `timedelta` or a `Timeout`.

    Raises:
        TypeError: An argument has the wrong type (named in the message, with the
            value).
        ValueError: `deadline` or `timeout` is zero, negative, NaN or infinite.

    Use it as a decorator on sync and async functions, or through `call` and
    `call_async`. As a ``with`` / ``async with`` block it applies the deadline, the
    breaker, the bulkhead and the timeout to the block; a block cannot be run again nor replaced by
    a value, so entering one raises `TypeError` when `retry` or `fallback` is set.

    .. versionadded:: 0.1.0
    """

    __module__ = "stalwart"
    __slots__ = (
        "_attempt_timeout",
        "_retry",
        "breaker",
        "bulkhead",
        "deadline",
        "fallback",
        "hedge",
        "retry",
        "timeout",
    )

    def __init__(
        self,
        *,
        fallback: Callable[..., Any] | None = None,
        deadline: float | timedelta | None = None,
        retry: RetryPolicy | None = None,
        hedge: Hedger | None = None,
        breaker: CircuitBreaker | None = None,
        bulkhead: Bulkhead | None = None,
        timeout: float | timedelta | Timeout | None = None,
    ) -> None:
        if fallback is not None and not callable(fallback):
            raise TypeError(f"fallback must be callable or None, got {fallback!r}")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(
                f"retry must be a RetryPolicy (stalwart.retry()) or None, got {retry!r}"
            )
        if hedge is not None and not isinstance(hedge, Hedger):
            raise TypeError(f"hedge must be a Hedger (stalwart.hedge()) or None, got {hedge!r}")
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise TypeError(f"breaker must be a CircuitBreaker or None, got {breaker!r}")
        if bulkhead is not None and not isinstance(bulkhead, Bulkhead):
            raise TypeError(
                f"bulkhead must be a Bulkhead (stalwart.bulkhead()) or None, got {bulkhead!r}"
            )
        if timeout is not None and not isinstance(timeout, Timeout):
            timeout = Timeout(_validate.seconds("timeout", timeout, positive=True))
        self.fallback = fallback
        self.deadline = (
            None if deadline is None else _validate.seconds("deadline", deadline, positive=True)
        )
        self.retry = retry
        self.hedge = hedge
        self.breaker = breaker
        self.bulkhead = bulkhead
        self.timeout: Timeout | None = timeout
        self._retry = None if retry is None else _never_circuit_open(retry)
        self._attempt_timeout = (
            Timeout(None) if timeout is None and self.deadline is not None else timeout
        )

    def __repr__(self) -> str:
        layers = (
            ("fallback", self.fallback),
            ("deadline", self.deadline),
            ("retry", self.retry),
            ("hedge", self.hedge),
            ("breaker", self.breaker),
            ("bulkhead", self.bulkhead),
            ("timeout", self.timeout),
        )
        given = ", ".join(f"{name}={value!r}" for name, value in layers if value is not None)
        return f"stalwart.Policy({given})"

    # -- decorator and calls -----------------------------------------------------------

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        """Decorate `fn`, sync or async, keeping its signature.

        Raises:
            TypeError: `fn` is a generator function, a sync function given a
                coroutine function as fallback, or a sync function with a `hedge`.
        """
        refuse_generator_function(
            fn, "stalwart.Policy", "apply the policy to the code inside its body instead"
        )
        is_async = is_async_callable(fn)
        if self.fallback is not None and not is_async and is_async_callable(self.fallback):
            raise TypeError(
                f"fallback {self.fallback!r} is a coroutine function,"
                f" but {fn!r} is not: its result would never be awaited"
            )
        # Innermost first; the class docstring has the order.
        wrapped: Callable[..., Any] = fn
        if self._attempt_timeout is not None:
            wrapped = self._attempt_timeout(wrapped)
        if self.bulkhead is not None:
            wrapped = self.bulkhead(wrapped)
        if self.breaker is not None:
            wrapped = self.breaker(wrapped)
        if self.hedge is not None:
            wrapped = self.hedge(wrapped)  # refuses a sync function, saying why
        if self._retry is not None:
            wrapped = self._retry(wrapped)
        if self.deadline is not None:
            wrapped = Deadline(self.deadline)(wrapped)
        if self.fallback is not None:
            wrapped = _with_fallback(wrapped, self.fallback, is_async)
        return cast("Callable[P, T]", wrapped)

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn(*args, **kwargs)`` through the policy.

        The layers are stacked anew on every call: decorate a function that is called
        often instead.

        Raises:
            TypeError: `fn` is a coroutine function (use `call_async`).
        """
        if is_async_callable(fn):
            raise TypeError(f"call() needs a sync function, got {fn!r}; use call_async()")
        return self(fn)(*args, **kwargs)

    async def call_async(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Await ``fn(*args, **kwargs)`` through the policy.

        Raises:
            TypeError: `fn` is not a coroutine function (use `call`).
        """
        if not is_async_callable(fn):
            raise TypeError(f"call_async() needs an async function, got {fn!r}; use call()")
        return await self(fn)(*args, **kwargs)

    # -- with and async with: deadline, breaker, bulkhead and timeout for a block -------

    def _block_layers(self) -> tuple[Any, ...]:
        """The context managers a block enters, outermost first."""
        if self.retry is not None or self.fallback is not None or self.hedge is not None:
            raise TypeError(
                f"{self!r} cannot guard a with block: a block cannot be retried,"
                " hedged or replaced by a fallback; decorate a function or use call()"
                " instead"
            )
        layers: list[Any] = []
        if self.deadline is not None:
            layers.append(Deadline(self.deadline))
        if self.breaker is not None:
            layers.append(self.breaker)
        if self.bulkhead is not None:
            layers.append(self.bulkhead)
        if self._attempt_timeout is not None:
            layers.append(self._attempt_timeout)
        return tuple(layers)

    def __enter__(self) -> Self:
        with ExitStack() as stack:
            for layer in self._block_layers():
                stack.enter_context(cast("AbstractContextManager[Any]", layer))
            _blocks.set((*_blocks.get(), stack.pop_all()))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        *outer, stack = _blocks.get()
        _blocks.set(tuple(outer))
        stack.__exit__(exc_type, exc, tb)

    async def __aenter__(self) -> Self:
        async with AsyncExitStack() as stack:
            for layer in self._block_layers():
                await stack.enter_async_context(cast("AbstractAsyncContextManager[Any]", layer))
            _async_blocks.set((*_async_blocks.get(), stack.pop_all()))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        *outer, stack = _async_blocks.get()
        _async_blocks.set(tuple(outer))
        await stack.__aexit__(exc_type, exc, tb)
