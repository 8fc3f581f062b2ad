"""A Celery app whose one `ResilientTask` fails as its arguments say: a `celery worker`
subprocess for the "nothing is lost" test.

``celery -A celery_accounting_app worker`` (with ``tests/`` on the path) reads its queue
and the redelivery tracker's key prefix from the environment (`QUEUE_ENV`,
`PREFIX_ENV`); the test builds the same app with `build` to publish and to read.

``work(kind, k)`` decides its own outcome from its arguments and the retry it is on:

======================  ==========================================================
kind                    what the run does
======================  ==========================================================
``success``             returns
``transient``           raises `stalwart.TransientError` on retries ``< k``, then
                        returns (``k < ATTEMPTS``)
``exhausted``           always raises `stalwart.TransientError`
``permanent``           raises `stalwart.PermanentError`
``poison``              raises `KeyError`
======================  ==========================================================
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

import stalwart
from stalwart.contrib.celery import RedeliveryTracker, ResilientTask, configure_dead_letters

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
REDIS_URL = "redis://127.0.0.1:6379/0"
BACKEND_URL = "redis://127.0.0.1:6379/2"
QUEUE_ENV = "STALWART_ACCOUNTING_QUEUE"
PREFIX_ENV = "STALWART_ACCOUNTING_PREFIX"
ATTEMPTS = 4
"""Runs in all per message (the first included): 3 retries."""
MAX_REDELIVERIES = 3

POLICY = stalwart.retry(
    attempts=ATTEMPTS,
    backoff=stalwart.exponential(initial=0.01, multiplier=2, max=0.05, jitter="none"),
    log=False,  # a thousand messages: the worker's log keeps the dead letters only
)


def build(queue: str, prefix: str) -> Celery:
    """The app: `queue` on RabbitMQ with its dead-letter queue, results in Redis."""
    app = Celery(queue, broker=RABBITMQ_URL, backend=BACKEND_URL, set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_extended=True,
        result_expires=600,
        result_backend_transport_options={"global_keyprefix": f"{queue}:"},
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        control_exchange=queue,
    )
    configure_dead_letters(app)
    tracker = RedeliveryTracker(
        REDIS_URL, max_redeliveries=MAX_REDELIVERIES, ttl=600, prefix=prefix
    )

    @app.task(
        base=ResilientTask,
        bind=True,
        shared=False,
        name=f"{queue}.work",
        retry_with=POLICY,
        redeliveries=tracker,
    )
    def work(self: ResilientTask[Any, Any], kind: str, k: int) -> dict[str, Any]:
        """Succeed or fail as `kind` and `k` say (see the module's table)."""
        retries = self.request.retries
        if kind == "success" or (kind == "transient" and retries >= k):
            return {"kind": kind, "retries": retries}
        if kind in {"transient", "exhausted"}:
            raise stalwart.TransientError(f"{kind} failure on retry {retries}")
        if kind == "permanent":
            raise stalwart.PermanentError("a permanent failure")
        if kind == "poison":
            raise KeyError("missing")  # as a lookup of an absent key would
        raise AssertionError(kind)  # pragma: no cover - the plan has no other kinds

    return app


app = build(
    os.environ.get(QUEUE_ENV, "stalwart-accounting-unset"),
    os.environ.get(PREFIX_ENV, "stalwart-accounting-unset"),
)
