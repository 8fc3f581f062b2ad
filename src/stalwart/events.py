"""Event records, listener protocols and the default logging listener.

A listener is any object with one or more of the hook methods (``on_retry``,
``on_give_up``; the circuit breaker adds its own). Each hook receives one frozen
record. Nothing is built on the success path: records exist only when something
failed and someone listens. A listener that raises is logged and never breaks the
call it observes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

__all__ = [
    "LoggingListener",
    "RetryDetails",
    "RetryListener",
    "emit",
    "hooks",
    "logger",
]

logger = logging.getLogger("stalwart")
"""The logger stalwart writes to (child loggers: ``stalwart.retry``, ...)."""

_retry_logger = logging.getLogger("stalwart.retry")


@dataclass(frozen=True, slots=True)
class RetryDetails:
    """What happened in a retried call, given to ``on_retry`` and ``on_give_up``.

    Attributes:
        name: The retried function's qualified name, or the block's name.
        attempt: The number of the attempt that just failed (1 for the first).
        delay: Seconds until the next attempt (``0.0`` on give-up).
        elapsed: Seconds since the first attempt started.
        exception: What the attempt raised, or ``None`` when its result was retried.
        result: The attempt's result when ``retry_if_result`` asked for a retry.

    .. versionadded:: 0.1.0
    """

    name: str
    attempt: int
    delay: float
    elapsed: float
    exception: BaseException | None = None
    result: Any = None

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


_HOOKS = ("on_retry", "on_give_up")


def hooks(
    listeners: Iterable[object], names: Sequence[str] = _HOOKS, *, parameter: str = "listeners"
) -> dict[str, tuple[Callable[[Any], object], ...]]:
    """Collect each listener's bound hook methods, by hook name.

    Raises:
        TypeError: A listener has none of the hooks `names`; the message names
            `parameter` and the listener.
    """
    found: dict[str, list[Callable[[Any], object]]] = {name: [] for name in names}
    for listener in listeners:
        methods = [(n, getattr(listener, n, None)) for n in names]
        if not any(callable(m) for _, m in methods):
            raise TypeError(
                f"{parameter} must hold objects with a method among {list(names)},"
                f" got {listener!r}"
            )
        for name, method in methods:
            if callable(method):
                found[name].append(method)
    return {name: tuple(methods) for name, methods in found.items()}


def emit(handlers: Iterable[Callable[[Any], object]], record: object) -> None:
    """Call every handler with `record`; log, and otherwise ignore, any that raise."""
    for handler in handlers:
        try:
            handler(record)
        except Exception:
            logger.exception("stalwart listener %r raised; ignoring it", handler)


class LoggingListener:
    """Logs each retry and each give-up through stdlib `logging`.

    Records go to the ``stalwart.retry`` logger at WARNING with structured ``extra``
    fields: ``stalwart_event``, ``function``, ``attempt``, ``delay``, ``elapsed`` and
    ``exception_type`` (never the exception's message, which may hold secrets).

    .. versionadded:: 0.1.0
    """

    __module__ = "stalwart"

    def __init__(self, logger: logging.Logger = _retry_logger) -> None:
        self.logger = logger

    def on_retry(self, details: RetryDetails) -> None:
        """Log one scheduled retry."""
        if not self.logger.isEnabledFor(logging.WARNING):
            return
        self.logger.warning(
            "retrying %s in %.3fs after attempt %d failed with %s",
            details.name,
            details.delay,
            details.attempt,
            details.exception_type or "a retried result",
            extra=_extra("retry", details),
        )

    def on_give_up(self, details: RetryDetails) -> None:
        """Log that retries ended without success."""
        if not self.logger.isEnabledFor(logging.WARNING):
            return
        self.logger.warning(
            "giving up on %s after %d attempt%s over %.3fs; last failure: %s",
            details.name,
            details.attempt,
            "" if details.attempt == 1 else "s",
            details.elapsed,
            details.exception_type or "a retried result",
            extra=_extra("give_up", details),
        )


def _extra(event: str, details: RetryDetails) -> dict[str, object]:
    return {
        "stalwart_event": event,
        "function": details.name,
        "attempt": details.attempt,
        "delay": details.delay,
        "elapsed": details.elapsed,
        "exception_type": details.exception_type,
    }
