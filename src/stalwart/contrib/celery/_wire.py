"""What travels between publisher, worker, broker and result backend.

The names here are the contract between the parts of `stalwart.contrib.celery`: the
task base class writes them, the dead-letter helpers and `task_status` read them.
"""

from __future__ import annotations

from typing import Final, Literal

from ...errors import StalwartError

__all__ = [
    "CORRELATION_HEADER",
    "DEAD_LETTER_EXCEPTION_HEADER",
    "DEAD_LETTER_QUEUE_HEADER",
    "DEAD_LETTER_REASON_HEADER",
    "DEAD_LETTER_TASK_HEADER",
    "MAX_REDELIVERIES",
    "MAX_RETRIES_EXCEEDED",
    "POISON_PILL",
    "DeadLetterReason",
    "DeadLettered",
    "RedeliveryLimitExceeded",
]

CORRELATION_HEADER: Final = "stalwart_correlation_id"
"""The message header carrying the caller's `stalwart.correlation_id`."""

DEAD_LETTER_REASON_HEADER: Final = "x-stalwart-dead-letter-reason"
"""Header of a dead letter: why it was dead-lettered (one of the reasons below)."""
DEAD_LETTER_TASK_HEADER: Final = "x-stalwart-task"
"""Header of a dead letter: the task's name."""
DEAD_LETTER_EXCEPTION_HEADER: Final = "x-stalwart-exception-type"
"""Header of a dead letter: the qualified type name of the exception (never its
message), absent when there was none (a redelivery limit)."""
DEAD_LETTER_QUEUE_HEADER: Final = "x-stalwart-original-queue"
"""Header of a dead letter: the queue it was taken from, where a replay sends it."""

DeadLetterReason = Literal["poison_pill", "max_retries_exceeded", "max_redeliveries"]
POISON_PILL: Final = "poison_pill"
"""A message that can never succeed: undecodable, ill-typed arguments, a poison class."""
MAX_RETRIES_EXCEEDED: Final = "max_retries_exceeded"
"""A transient failure that was still failing when the retry policy's attempts ran out."""
MAX_REDELIVERIES: Final = "max_redeliveries"
"""A message redelivered by the broker (its worker died) more than allowed."""


class DeadLettered(StalwartError):
    """The result of a task whose message went to the dead-letter queue.

    Stored as the task's failure in the result backend, so that `task_status` and
    ``AsyncResult`` show the final state rather than a stale ``STARTED`` or
    ``RETRY``. It never holds the original exception's message or the task's
    arguments.

    Attributes:
        reason: ``"poison_pill"``, ``"max_retries_exceeded"`` or ``"max_redeliveries"``.
        task: The task's name.
        exception_type: The qualified type name of the exception that sent it there,
            or ``None`` (a redelivery limit has none).
        correlation_id: The correlation id the task ran with, if any.

    .. versionadded:: 0.1.0
    """

    __module__ = "stalwart.contrib.celery"

    def __init__(
        self,
        reason: str,
        task: str,
        exception_type: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        # args hold every attribute: Celery's JSON result backend rebuilds from them.
        super().__init__(reason, task, exception_type, correlation_id)

    @property
    def reason(self) -> str:
        """Why the message was dead-lettered."""
        return str(self.args[0])

    @property
    def task(self) -> str:
        """The task's name."""
        return str(self.args[1])

    @property
    def exception_type(self) -> str | None:
        """The qualified type name of the exception, if any."""
        value = self.args[2] if len(self.args) > 2 else None
        return None if value is None else str(value)

    @property
    def correlation_id(self) -> str | None:
        """The correlation id the task ran with, if any."""
        value = self.args[3] if len(self.args) > 3 else None
        return None if value is None else str(value)

    def __str__(self) -> str:
        cause = f" ({self.exception_type})" if self.exception_type else ""
        return f"task {self.task} was dead-lettered: {self.reason}{cause}"


class RedeliveryLimitExceeded(StalwartError):
    """The failure of a task redelivered more than allowed, with dead-lettering off.

    A `ResilientTask` with a ``redeliveries`` tracker and ``dead_letter=False`` raises
    it instead of running a message that its broker redelivered more than
    ``max_redeliveries`` times: the task ends ``FAILURE`` with it (the message is
    acknowledged and dropped), rather than running and killing another worker.

    Attributes:
        task: The task's name.
        count: The redeliveries counted for this delivery, or ``None``.
        max_redeliveries: The limit it passed, or ``None``.
        correlation_id: The correlation id the task ran with, if any.

    .. versionadded:: 0.1.0
    """

    __module__ = "stalwart.contrib.celery"

    def __init__(
        self,
        task: str,
        count: int | None = None,
        max_redeliveries: int | None = None,
        correlation_id: str | None = None,
    ) -> None:
        # args hold every attribute: Celery's JSON result backend rebuilds from them.
        super().__init__(task, count, max_redeliveries, correlation_id)

    @property
    def task(self) -> str:
        """The task's name."""
        return str(self.args[0])

    @property
    def count(self) -> int | None:
        """The redeliveries counted for this delivery, if known."""
        return self._number(1)

    @property
    def max_redeliveries(self) -> int | None:
        """The limit it passed, if known."""
        return self._number(2)

    @property
    def correlation_id(self) -> str | None:
        """The correlation id the task ran with, if any."""
        value = self.args[3] if len(self.args) > 3 else None
        return None if value is None else str(value)

    def _number(self, index: int) -> int | None:
        value = self.args[index] if len(self.args) > index else None
        return value if isinstance(value, int) else None

    def __str__(self) -> str:
        times = "" if self.count is None else f" {self.count} times"
        limit = "" if self.max_redeliveries is None else f" (limit {self.max_redeliveries})"
        return (
            f"task {self.task} was redelivered{times}{limit}, more than allowed;"
            " dead-lettering is off, so it failed without running"
        )
