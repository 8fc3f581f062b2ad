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
)

__all__ = [
    "MAX_REDELIVERIES",
    "MAX_RETRIES_EXCEEDED",
    "POISON_PILL",
    "DeadLetterReason",
    "DeadLettered",
]
