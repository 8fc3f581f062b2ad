"""What a resilient task tells listeners when it sends a message to the dead-letter queue.

Retries and give-ups of a task reach listeners as `stalwart.RetryDetails`, through the
same ``on_retry`` and ``on_give_up`` hooks as any retried call. Dead-lettering is new:
a listener with an ``on_dead_letter`` method receives one `DeadLetterEvent` per
message sent there (metrics count ``messages_sent_to_dlq_total{reason}`` from it).
"""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

from ..._record import Record

__all__ = ["DeadLetterEvent", "DeadLetterListener", "log_dead_letter", "logger"]

logger = logging.getLogger("stalwart.celery")
"""The logger the Celery integration writes to."""


class DeadLetterEvent(Record):
    """A message went to the dead-letter queue; given to ``on_dead_letter``.

    Attributes:
        reason: ``"poison_pill"``, ``"max_retries_exceeded"`` or ``"max_redeliveries"``.
        task: The task's name, or ``None`` for a message that could not be decoded.
        task_id: The task's id, or ``None`` for a message that could not be decoded.
        exception_type: The qualified type name of the exception that sent it there
            (never its message), or ``None`` (a redelivery limit has none).
        correlation_id: The correlation id the task ran with, if any.
        attempt: The attempt that ended there (1 for the first run), or ``None``.

    .. versionadded:: 0.1.0
    """

    __module__ = "stalwart.contrib.celery"
    __slots__ = ("reason", "task", "task_id", "exception_type", "correlation_id", "attempt")  # noqa: RUF023 - fields in order
    reason: str
    task: str | None
    task_id: str | None
    exception_type: str | None
    correlation_id: str | None
    attempt: int | None

    def __init__(  # noqa: PLR0917 - positional, as the fields of a dataclass are
        self,
        reason: str,
        task: str | None,
        task_id: str | None,
        exception_type: str | None = None,
        correlation_id: str | None = None,
        attempt: int | None = None,
    ) -> None:
        self._set(reason, task, task_id, exception_type, correlation_id, attempt)


@runtime_checkable
class DeadLetterListener(Protocol):
    """The hook a resilient task calls when it dead-letters a message.

    A listener may also implement ``on_retry`` and ``on_give_up``
    (`stalwart.RetryListener`); pass it in the task's ``listeners`` option.

    .. versionadded:: 0.1.0
    """

    def on_dead_letter(self, event: DeadLetterEvent) -> None:
        """Called once per message, before it is sent to the dead-letter queue."""


def exception_type_of(exc: BaseException | None) -> str | None:
    """Return the qualified type name of `exc` (safe to log), or ``None``."""
    if exc is None:
        return None
    cls = type(exc)
    return f"{cls.__module__}.{cls.__qualname__}"


def log_dead_letter(event: DeadLetterEvent) -> None:
    """Log one dead letter at WARNING on ``stalwart.celery``, with structured ``extra``.

    The fields are ``stalwart_event="dead_letter"``, ``reason``, ``task``,
    ``task_id``, ``exception_type``, ``attempt`` and ``correlation_id``.
    """
    logger.warning(
        "dead-lettering task %s[%s]: %s%s",
        event.task,
        event.task_id,
        event.reason,
        f" ({event.exception_type})" if event.exception_type else "",
        extra={
            "stalwart_event": "dead_letter",
            "reason": event.reason,
            "task": event.task,
            "task_id": event.task_id,
            "exception_type": event.exception_type,
            "attempt": event.attempt,
            "correlation_id": event.correlation_id,
        },
    )
