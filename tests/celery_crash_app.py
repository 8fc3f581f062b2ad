"""A Celery app whose task kills its own worker: run as a `celery worker` subprocess.

``celery -A celery_crash_app worker`` (with ``tests/`` on the path) reads its queue,
key prefix and queue type from the environment (`QUEUE_ENV`, `PREFIX_ENV`,
`QUORUM_ENV`); the test that starts it builds the same app with `build` to publish.

The task base checks each delivery with a `RedeliveryTracker` before the task runs,
and appends what it saw to the Redis list ``<prefix>:log`` (one JSON object per
delivery), where the test reads it.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import redis
from celery import Celery, Task
from kombu import Queue

from stalwart.contrib.celery.redelivery import RedeliveryCheck, RedeliveryTracker, delivery_of

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
REDIS_URL = "redis://127.0.0.1:6379/0"
BACKEND_URL = "redis://127.0.0.1:6379/2"
QUEUE_ENV = "STALWART_CRASH_QUEUE"
PREFIX_ENV = "STALWART_CRASH_PREFIX"
QUORUM_ENV = "STALWART_CRASH_QUORUM"
MAX_REDELIVERIES = 3


def build(queue: str, prefix: str, *, quorum: bool = False) -> Celery:
    """The app: `queue` on RabbitMQ (a quorum queue if `quorum`), results in Redis."""
    app = Celery(queue, broker=RABBITMQ_URL, backend=BACKEND_URL, set_as_current=False)
    arguments = {"x-queue-type": "quorum"} if quorum else {}
    app.conf.update(
        task_queues=[Queue(queue, queue_arguments=arguments, durable=True)],
        task_default_queue=queue,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=600,
        result_backend_transport_options={"global_keyprefix": f"{queue}:"},
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
    )
    log_key = f"{prefix}:log"

    class Tracked(Task):  # type: ignore[type-arg]
        """Checks every delivery with the tracker before running the task."""

        _tracker: RedeliveryTracker | None = None
        last_check: RedeliveryCheck

        @property
        def tracker(self) -> RedeliveryTracker:
            if self._tracker is None:  # in the process that runs tasks (after a fork)
                client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
                type(self)._tracker = RedeliveryTracker(
                    client, max_redeliveries=MAX_REDELIVERIES, ttl=600, prefix=prefix
                )
            assert self._tracker is not None
            return self._tracker

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            delivery = delivery_of(self.request)
            check = self.tracker.check(
                delivery.id,
                redelivered=delivery.redelivered,
                delivery_count=delivery.delivery_count,
            )
            entry = {
                "id": delivery.id,
                "retries": self.request.retries,
                "redelivered": delivery.redelivered,
                "delivery_count": delivery.delivery_count,
                "count": check.count,
                "exceeded": check.exceeded,
                "degraded": check.degraded,
            }
            self.tracker.client.rpush(log_key, json.dumps(entry))
            if check.exceeded:
                # Where ResilientTask dead-letters the message: here, a result saying so.
                return {"exceeded": check.count, "retries": self.request.retries}
            self.last_check = check
            return super().__call__(*args, **kwargs)

    @app.task(bind=True, base=Tracked, name=f"{queue}.crash", max_retries=10)
    def crash(self: Tracked, plan: list[int]) -> dict[str, int]:
        """Kill this process while this delivery was redelivered fewer than
        ``plan[retries]`` times; then retry if the plan goes on, else succeed."""
        retries = self.request.retries
        if self.last_check.count < plan[retries]:
            os.kill(os.getpid(), signal.SIGKILL)
        if retries + 1 < len(plan):
            raise self.retry(countdown=0)
        return {"retries": retries, "count": self.last_check.count}

    return app


app = build(
    os.environ.get(QUEUE_ENV, "stalwart-crash-unset"),
    os.environ.get(PREFIX_ENV, "stalwart-crash-unset"),
    quorum=os.environ.get(QUORUM_ENV) == "1",
)
