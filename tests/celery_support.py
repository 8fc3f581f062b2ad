"""What the Celery tests share: apps on the real brokers, and workers in this process.

Every app gets queues and result keys of its own (a random name), so tests never see
each other's messages, and leaves nothing behind on the brokers when it is closed.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

if TYPE_CHECKING:
    from collections.abc import Iterator

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
REDIS_BROKER_URL = "redis://127.0.0.1:6379/1"
REDIS_BACKEND_URL = "redis://127.0.0.1:6379/2"

BROKERS = {"rabbitmq": RABBITMQ_URL, "redis": REDIS_BROKER_URL}
"""Both brokers the integration is proven on, by name (the pytest marker of each)."""

broker_params = pytest.mark.parametrize(
    "broker",
    [
        pytest.param("rabbitmq", marks=[pytest.mark.rabbitmq, pytest.mark.redis]),
        pytest.param("redis", marks=pytest.mark.redis),
    ],
)
"""Run a test on each broker (a `broker` argument: its name); results go to Redis."""


def make_app(broker: str, **conf: Any) -> Celery:
    """A Celery app on `broker` ("rabbitmq" or "redis"), results in Redis, JSON only.

    Its default queue has a name of its own; `conf` overrides any setting.
    """
    name = f"stalwart-test-{uuid.uuid4().hex[:12]}"
    app = Celery(name, broker=BROKERS[broker], backend=REDIS_BACKEND_URL, set_as_current=False)
    app.conf.update(
        task_default_queue=name,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_extended=True,
        result_expires=600,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        # A worker thread in this process has no event loop to send heartbeats from:
        # with them on, RabbitMQ deliveries and shutdown wait for a 10 s poll.
        broker_heartbeat=0,
        result_backend_transport_options={"global_keyprefix": f"{name}:"},
        worker_hijack_root_logger=False,
        worker_prefetch_multiplier=1,
    )
    app.conf.update(conf)
    return app


@contextlib.contextmanager
def running_worker(app: Celery, **options: Any) -> Iterator[Any]:
    """A worker for `app` in this process (a thread, the solo pool), stopped after.

    The ``celery.ping`` task it checks itself with is registered first.
    """
    app.loader.import_module("celery.contrib.testing.tasks")
    with start_worker(app, perform_ping_check=True, shutdown_timeout=10.0, **options) as worker:
        yield worker


def purge(app: Celery) -> None:
    """Drop every message left in the app's queues (at the end of a test)."""
    with app.connection_for_write() as connection:
        app.control.purge(connection=connection)
