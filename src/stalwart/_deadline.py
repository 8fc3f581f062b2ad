"""Deadlines: a time budget carried in a context variable.

`deadline(seconds)` opens a budget for everything inside it, in this thread or task
and in tasks it starts; an inner deadline never extends an outer one. `remaining()`
reads what is left. Retries, timeouts and the HTTP wrappers all honour it.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, TypeVar, cast

from . import _clock, _validate
from ._run import is_async_callable, refuse_generator_function
from ._scoped import Scoped

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import timedelta
    from types import TracebackType

    from typing_extensions import Self

__all__ = [
    "Deadline",
    "deadline",
    "deadline_at",
    "remaining",
]

_F = TypeVar("_F", bound="Callable[..., Any]")

_scope: Scoped[float | None] = Scoped("stalwart_deadline", None)
_deadline_at = _scope.var


def deadline_at() -> float | None:
    """Return the current deadline as a `stalwart` clock reading, or `None`."""
    return _deadline_at.get()


def remaining() -> float | None:
    """Return the seconds left before the current deadline, or `None` without one.

    The value is never negative: a deadline that has passed leaves ``0.0``.

    .. versionadded:: 0.1.0
    """
    at = _deadline_at.get()
    if at is None:
        return None
    return max(at - _clock.now(), 0.0)


class Deadline:
    """A time budget for a block or a function, usable with `with` and `async with`.

    Returned by `stalwart.deadline()`; see there.
    """

    __module__ = "stalwart"
    __slots__ = ("seconds",)

    def __init__(self, seconds: float | timedelta) -> None:
        self.seconds = _validate.seconds("seconds", seconds, decorator="stalwart.deadline")

    def __repr__(self) -> str:
        return f"stalwart.deadline({self.seconds!r})"

    def __enter__(self) -> Self:
        at = _clock.now() + self.seconds
        outer = _deadline_at.get()
        if outer is not None and outer < at:
            at = outer
        _scope.enter(at)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _scope.leave()

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    @property
    def remaining(self) -> float | None:
        """Seconds left in the innermost deadline in force here, or `None`."""
        return remaining()

    def __call__(self, fn: _F) -> _F:
        """Run every call of `fn` (sync or async) inside a fresh budget.

        Raises:
            TypeError: `fn` is a generator or async generator function.
        """
        refuse_generator_function(
            fn,
            "stalwart.deadline",
            "set the budget inside its body instead (with stalwart.deadline(...):)",
        )
        if is_async_callable(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with Deadline(self.seconds):
                    return await fn(*args, **kwargs)

            return cast("_F", async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with Deadline(self.seconds):
                return fn(*args, **kwargs)

        return cast("_F", wrapper)


def deadline(seconds: float | timedelta) -> Deadline:
    """Cap the total time of everything inside, across retries and timeouts.

    Usable as ``with``, ``async with`` and as a decorator on sync and async functions.
    Retries started inside never sleep past the deadline (they give up instead), and
    `stalwart.timeout` limits each call to what is left.

    Args:
        seconds: The budget, in seconds or as a `timedelta`. Nested deadlines take
            the earlier end.

    Raises:
        ValueError: `seconds` is negative, NaN or infinite.

    .. versionadded:: 0.1.0
    """
    return Deadline(seconds)
