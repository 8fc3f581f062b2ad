"""The exceptions stalwart raises, and the markers users raise to classify their own.

`TransientError` and `PermanentError` are markers: raise them (or subclass them) to
tell retries and breakers whether trying again can help. `StalwartError` is the base
of everything stalwart itself raises.
"""

from __future__ import annotations

import copyreg
from typing import cast

__all__ = [
    "BulkheadFull",
    "CircuitOpenError",
    "PermanentError",
    "StalwartError",
    "TimeoutExceeded",
    "TransientError",
]


_newobj = copyreg.__newobj__  # type: ignore[attr-defined]  # cls.__new__(cls, *args)


class _ClassifiedError(Exception):
    """Shared shape of the two marker exceptions.

    `args` are what rebuilds the exception, ``type(exc)(*exc.args)`` (which Celery's
    JSON result backend does): the message, then the status code and the retry-after
    when set. Pickling and copying restore the attributes without calling `__init__`,
    so that subclasses with an `__init__` of their own survive them too.
    """

    def __init__(
        self,
        message: str = "",
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        if retry_after is not None:
            super().__init__(message, status_code, retry_after)
        elif status_code is not None:
            super().__init__(message, status_code)
        else:
            super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.retry_after = retry_after

    def __str__(self) -> str:
        return str(self.message)

    def __reduce__(self) -> tuple[object, ...]:
        return (_newobj, (type(self), *self.args), self.__dict__)

    def __repr__(self) -> str:
        parts = [repr(self.message)]
        if self.status_code is not None:
            parts.append(f"status_code={self.status_code!r}")
        if self.retry_after is not None:
            parts.append(f"retry_after={self.retry_after!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


class TransientError(_ClassifiedError):
    """A failure that may go away if the call is tried again.

    Args:
        message: What went wrong.
        status_code: The HTTP status code behind the failure, if any.
        retry_after: Seconds the remote side asked us to wait before trying again.
            Retries wait at least this long (within their deadline).

    .. versionadded:: 0.1.0
    """

    __module__ = "stalwart"


class PermanentError(_ClassifiedError):
    """A failure that trying again cannot fix (bad input, missing resource, ...).

    Retries never retry it, and circuit breakers count it as a success: the
    dependency answered.

    .. versionadded:: 0.1.0
    """

    __module__ = "stalwart"


class StalwartError(Exception):
    """Base class of the exceptions stalwart itself raises.

    .. versionadded:: 0.1.0
    """

    __module__ = "stalwart"


class CircuitOpenError(StalwartError):
    """Raised instead of calling the protected function while a breaker is open.

    Attributes:
        name: The breaker's name.
        retry_after: Seconds until the breaker lets a probe call through again,
            or ``None`` when it is held open by an operator (`force_open`): the
            message then says "forced open".

    .. versionadded:: 0.1.0
    """

    __module__ = "stalwart"

    # Rejections are a hot path: the breaker makes them with `CircuitOpenError.__new__`,
    # which keeps the arguments in `args` (also what pickles them) and runs no Python
    # `__init__`; the attributes read `args`, and the message is formatted only when
    # asked for.
    def __init__(self, name: str, retry_after: float | None = None) -> None:
        Exception.__init__(self, name, retry_after)  # args, whatever mixins follow in the MRO

    @property
    def name(self) -> str:
        """The breaker's name."""
        return cast("str", self.args[0])

    @property
    def retry_after(self) -> float | None:
        """Seconds until a probe is let through, or None when forced open."""
        return cast("float | None", self.args[1] if len(self.args) > 1 else None)

    def __str__(self) -> str:
        if self.retry_after is None:
            return f"circuit {self.name!r} is forced open"
        return f"circuit {self.name!r} is open; retry after {self.retry_after:.3f}s"


class TimeoutExceeded(StalwartError, TimeoutError):
    """Raised when a call runs past its timeout or its deadline.

    It is a `TimeoutError`, so code that already handles the built-in keeps working,
    and it is classified as transient.

    Args:
        seconds: The limit that was exceeded, in seconds.
        message: What to say instead of "call did not finish within {seconds}s".

    `args` are ``(seconds,)`` or ``(seconds, message)``: they rebuild the exception.

    Attributes:
        seconds: The limit that was exceeded, in seconds.

    Raises:
        TypeError: `seconds` is not a number (a message given first, say).

    .. versionadded:: 0.1.0
    """

    __module__ = "stalwart"

    def __init__(self, seconds: float, message: str | None = None) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(
                f"seconds must be a number, got {seconds!r}; the message comes second:"
                f" TimeoutExceeded(seconds, message)"
            )
        super().__init__()
        # The arguments, which rebuild it (`type(exc)(*exc.args)`, pickling); set here
        # rather than passed up, where `OSError` would read two as (errno, strerror).
        self.args = (seconds,) if message is None else (seconds, message)
        self.seconds = seconds

    def __str__(self) -> str:
        if len(self.args) > 1 and self.args[1]:
            return str(self.args[1])
        return f"call did not finish within {self.seconds:g}s"


class BulkheadFull(StalwartError):
    """Raised when a bulkhead has no room for another concurrent call; the call never started.

    `args` are ``(name, reason)``: they rebuild it.

    Attributes:
        name: The bulkhead's name.
        reason: ``"queue full"`` (every slot busy and no room left to wait) or
            ``"timed out"`` (the wait for a slot ended, by the bulkhead's
            ``queue_timeout`` or the deadline in force, without one).

    .. versionadded:: 0.1.0
    """

    __module__ = "stalwart"

    def __init__(self, name: str = "", reason: str = "queue full") -> None:
        Exception.__init__(self, name, reason)

    @property
    def name(self) -> str:
        """The bulkhead's name."""
        return cast("str", self.args[0]) if self.args else ""

    @property
    def reason(self) -> str:
        """Why: ``"queue full"`` or ``"timed out"``."""
        return cast("str", self.args[1]) if len(self.args) > 1 else "queue full"

    def __str__(self) -> str:
        return f"bulkhead {self.name!r} is full: {self.reason}"
