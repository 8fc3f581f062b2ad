"""What the Celery tests share: apps on the real brokers, and workers in this process.

Every app gets queues and result keys of its own (a random name), so tests never see
each other's messages, and leaves nothing behind on the brokers when it is closed.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
import uuid
import warnings
from typing import TYPE_CHECKING, Any

import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

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
        # Revoke and inspect reach this app's workers only, not those of other tests.
        control_exchange=name,
    )
    app.conf.update(conf)
    return app


def delete_exchanges(app: Celery) -> None:
    """Delete the exchanges the app's name gave RabbitMQ (its queue's, its control's)."""
    if not app.conf.broker_url.startswith("amqp"):
        return
    name = app.main
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for exchange in (name, f"{name}.pidbox", f"reply.{name}.pidbox"):
            channel.exchange_delete(exchange)


def close_app(app: Celery) -> None:
    """Purge the app's queue, delete its results and exchanges, close its connections."""
    purge(app)
    delete_exchanges(app)
    results = redis.Redis.from_url(REDIS_BACKEND_URL)
    try:
        keys = list(results.scan_iter(match=f"{app.main}:*"))
        if keys:
            results.delete(*keys)
    finally:
        results.close()
    close_backend(app)
    app.close()
    flush_garbage()


def close_backend(app: Celery) -> None:
    """Close the connections of the app's result backend (its result consumer's too)."""
    backend = app.backend
    consumer = getattr(backend, "result_consumer", None)
    if consumer is not None:
        consumer.stop()
    client = getattr(backend, "client", None)
    if client is not None:
        client.close()  # else an unclosed socket warns, as an error, in a later test


@pytest.fixture
def celery_apps() -> Iterator[Callable[..., Celery]]:
    """Make apps with `make_app`; each is closed (`close_app`) after the test."""
    made: list[Celery] = []

    def make(broker: str = "redis", **conf: Any) -> Celery:
        app = make_app(broker, **conf)
        made.append(app)
        return app

    yield make
    for app in made:
        close_app(app)


@contextlib.contextmanager
def running_worker(app: Celery, **options: Any) -> Iterator[Any]:
    """A worker for `app` in this process (a thread, the solo pool), stopped after.

    The ``celery.ping`` task it checks itself with is registered first. The worker
    sets up logging for the whole process (the root logger's level and handlers):
    that is put back after, or later tests would not see warnings.
    """
    app.loader.import_module("celery.contrib.testing.tasks")
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        with start_worker(
            app, perform_ping_check=True, shutdown_timeout=10.0, **options
        ) as worker:
            yield worker
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        flush_garbage()


def flush_garbage() -> None:
    """Collect what the worker and results left (Redis connections of finished threads).

    Their sockets are closed by the garbage collector, which warns about each: collected
    here, at a known time, rather than inside whichever test runs when it next passes.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def wait_for(
    condition: Callable[[], Any], what: str = "a condition", timeout: float = 20.0
) -> Any:
    """Poll `condition` until it returns something true (returned); fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)  # polling a broker or a result backend, bounded by the deadline


def purge(app: Celery) -> None:
    """Drop every message left in the app's queues (at the end of a test)."""
    with app.connection_for_write() as connection:
        app.control.purge(connection=connection)
