"""A Celery app whose tasks kill their own worker: run as a `celery worker` subprocess.

``celery -A celery_crash_app worker`` (with ``tests/`` on the path) reads its queue,
key prefix, queue type and broker from the environment (`QUEUE_ENV`, `PREFIX_ENV`,
`QUORUM_ENV`, `BROKER_ENV`); the test that starts it builds the same app with `build`
to publish.

Two tasks:

- ``<queue>.crash`` has a hand-made base that checks each delivery with a
  `RedeliveryTracker` before the task runs, and appends what it saw to the Redis list
  ``<prefix>:log`` (one JSON object per delivery), where the test reads it;
- ``<queue>.resilient_crash`` is a `ResilientTask` with a tracker of its own (keys
  under ``<prefix>:resilient``): it appends each run to ``<prefix>:resilient:runs``
  and kills its process, on every delivery, until the tracker stops it and the task
  dead-letters the message.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import redis
from celery import Celery, Task
from kombu import Queue

from stalwart.contrib.celery import ResilientTask, configure_dead_letters
from stalwart.contrib.celery.redelivery import RedeliveryCheck, RedeliveryTracker, delivery_of

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
REDIS_BROKER_URL = "redis://127.0.0.1:6379/1"
REDIS_URL = "redis://127.0.0.1:6379/0"
BACKEND_URL = "redis://127.0.0.1:6379/2"
QUEUE_ENV = "STALWART_CRASH_QUEUE"
PREFIX_ENV = "STALWART_CRASH_PREFIX"
QUORUM_ENV = "STALWART_CRASH_QUORUM"
BROKER_ENV = "STALWART_CRASH_BROKER"
MAX_REDELIVERIES = 3
VISIBILITY_TIMEOUT = 2
"""Seconds before the Redis broker gives back a message its (dead) worker never
acknowledged; another worker's sweep, once a second, puts it back in the queue."""


def broker_options(queue: str) -> dict[str, Any]:
    """The Redis broker's transport options: a short visibility timeout, swept often,
    and keys under ``<queue>:`` (its unacknowledged messages are the app's alone)."""
    return {
        "visibility_timeout": VISIBILITY_TIMEOUT,
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
        "global_keyprefix": f"{queue}:",
    }


def build(queue: str, prefix: str, *, quorum: bool = False, broker: str = "rabbitmq") -> Celery:
    """The app: `queue` on `broker` ("rabbitmq", where it may be a quorum queue if
    `quorum`, or "redis"), with its dead-letter queue; results in Redis."""
    url = {"rabbitmq": RABBITMQ_URL, "redis": REDIS_BROKER_URL}[broker]
    app = Celery(queue, broker=url, backend=BACKEND_URL, set_as_current=False)
    arguments = {"x-queue-type": "quorum"} if quorum else {}
    app.conf.update(
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
        control_exchange=queue,
    )
    if broker == "redis":
        app.conf.broker_transport_options = broker_options(queue)
    configure_dead_letters(app, Queue(queue, queue_arguments=arguments, durable=True))
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

    # A URL: the tracker makes its client, without I/O, and a forked pool process
    # opens connections of its own (redis-py's pool checks the process id).
    tracker = RedeliveryTracker(
        REDIS_URL,
        max_redeliveries=MAX_REDELIVERIES,
        ttl=600,
        prefix=f"{prefix}:resilient",
        socket_timeout=2,
    )
    runs_key = f"{prefix}:resilient:runs"

    @app.task(
        base=ResilientTask,
        bind=True,
        shared=False,
        name=f"{queue}.resilient_crash",
        redeliveries=tracker,
    )
    def resilient_crash(self: ResilientTask[Any, Any]) -> None:
        """Record this run, then kill this process: on every delivery."""
        delivery = delivery_of(self.request)
        run = {"id": delivery.id, "redelivered": delivery.redelivered, "pid": os.getpid()}
        tracker.client.rpush(runs_key, json.dumps(run))
        os.kill(os.getpid(), signal.SIGKILL)

    return app


app = build(
    os.environ.get(QUEUE_ENV, "stalwart-crash-unset"),
    os.environ.get(PREFIX_ENV, "stalwart-crash-unset"),
    quorum=os.environ.get(QUORUM_ENV) == "1",
    broker=os.environ.get(BROKER_ENV, "rabbitmq"),
)
