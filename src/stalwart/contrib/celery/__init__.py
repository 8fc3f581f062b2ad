"""Celery: a resilient task base class, dead letters, redelivery limits, task status.

Install with ``pip install "stalwart[celery]"``. Importing this package imports Celery.

.. code-block:: python

    from stalwart.contrib.celery import ResilientTask

    @app.task(base=ResilientTask, bind=True)
    def sync_incidents(self, tenant: str) -> int: ...

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from ._wire import (
    MAX_REDELIVERIES,
    MAX_RETRIES_EXCEEDED,
    POISON_PILL,
    DeadLettered,
    DeadLetterReason,
    RedeliveryLimitExceeded,
)
from .dead_letter import (
    DeadLetter,
    configure_dead_letters,
    dead_letter_queue_name,
    dead_letters,
    replay,
    send_to_dead_letter,
)
from .events import DeadLetterEvent, DeadLetterListener
from .redelivery import (
    AsyncRedeliveryTracker,
    Delivery,
    RedeliveryCheck,
    RedeliveryTracker,
    delivery_of,
)
from .status import (
    ActiveTask,
    DeadLetterInfo,
    RevokeResult,
    TaskStatus,
    active_tasks,
    revoke,
    task_status,
    track_pending,
)
from .task import (
    DEFAULT_SOFT_TIME_LIMIT,
    DEFAULT_TIME_LIMIT,
    POISON_PILLS,
    ResilientTask,
)

__all__ = [
    "DEFAULT_SOFT_TIME_LIMIT",
    "DEFAULT_TIME_LIMIT",
    "MAX_REDELIVERIES",
    "MAX_RETRIES_EXCEEDED",
    "POISON_PILL",
    "POISON_PILLS",
    "ActiveTask",
    "AsyncRedeliveryTracker",
    "DeadLetter",
    "DeadLetterEvent",
    "DeadLetterInfo",
    "DeadLetterListener",
    "DeadLetterReason",
    "DeadLettered",
    "Delivery",
    "RedeliveryCheck",
    "RedeliveryLimitExceeded",
    "RedeliveryTracker",
    "ResilientTask",
    "RevokeResult",
    "TaskStatus",
    "active_tasks",
    "configure_dead_letters",
    "dead_letter_queue_name",
    "dead_letters",
    "delivery_of",
    "replay",
    "revoke",
    "send_to_dead_letter",
    "task_status",
    "track_pending",
]
