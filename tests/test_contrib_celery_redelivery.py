"""Redelivery tracking: counted in the real Redis, proven with real crashing workers."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis
import redis.asyncio
from celery.app.task import Context
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import celery_crash_app
from celery_support import (
    broker_params,
    close_app,
    close_backend,
    delete_exchanges,
    flush_garbage,
    make_app,
    running_worker,
)
from redis_support import URL, PrivateRedis, delete_prefix, free_port, new_prefix
from stalwart.contrib.celery import (
    AsyncRedeliveryTracker,
    Delivery,
    RedeliveryCheck,
    RedeliveryLimitExceeded,
    RedeliveryTracker,
    ResilientTask,
    dead_letter_queue_name,
    dead_letters,
    delivery_of,
    task_status,
)
from stalwart.contrib.celery.redelivery import (
    DEFAULT_MAX_REDELIVERIES,
    DEFAULT_REDELIVERY_PREFIX,
    DEFAULT_REDELIVERY_TTL,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

LOGGER = "stalwart.celery"


@pytest.fixture
def tracker(client: redis.Redis, prefix: str) -> RedeliveryTracker:
    """A tracker on the shared Redis, under the test's own prefix."""
    return RedeliveryTracker(client, prefix=prefix, ttl=60)


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == level]


def model(
    stored: dict[str, int], delivery_id: str, redelivered: bool, delivery_count: int | None
) -> int:
    """The counting rule, as simply as it can be said."""
    if not redelivered and not delivery_count:
        return 0
    if delivery_count is None:
        stored[delivery_id] = stored.get(delivery_id, 0) + 1
    else:
        stored[delivery_id] = max(stored.get(delivery_id, 0), delivery_count)
    return stored[delivery_id]


# --- what the tracker reads from a request ----------------------------------------


def test_delivery_of_reads_task_id_retries_flag_and_count() -> None:
    """The delivery id is task id and retry number; flag and x-delivery-count are read."""
    request = Context(
        id="t1", retries=2, delivery_info={"redelivered": True}, **{"x-delivery-count": 3}
    )
    assert delivery_of(request) == Delivery("t1:2", True, 3)
    assert delivery_of(Context(id="t1", retries=0)) == Delivery("t1:0", False, None)
    assert delivery_of(Context(id="t1", retries=None, delivery_info=None)).id == "t1:0"
    headers = Context(id="t", retries=0, headers={"x-delivery-count": "4"})
    assert delivery_of(headers).delivery_count == 4


def test_delivery_of_ignores_a_redelivered_header() -> None:
    """Only delivery_info says redelivered: the Redis transport's header of that name
    is copied by Task.retry into the next attempt, which is not a redelivery."""
    carried = Context(id="t", retries=1, delivery_info={}, headers={"redelivered": True})
    assert delivery_of(carried) == Delivery("t:1", False, None)
    restored = Context(
        id="t", retries=1, delivery_info={"redelivered": True}, headers={"redelivered": True}
    )
    assert delivery_of(restored) == Delivery("t:1", True, None)


@pytest.mark.parametrize(
    ("raw", "expected"), [(2, 2), (0, 0), ("5", 5), (b"6", 6), (-1, None), (True, None),
                          ("x", None), ("²", None), (1.5, None), (None, None)]
)  # fmt: skip
def test_delivery_of_ignores_a_count_that_is_not_one(raw: object, expected: int | None) -> None:
    """A malformed x-delivery-count header is ignored (None), never trusted or raised."""
    assert delivery_of(Context(id="t", **{"x-delivery-count": raw})).delivery_count == expected


# --- construction -----------------------------------------------------------------


def test_importing_the_package_does_not_import_redis() -> None:
    """stalwart[celery] does not install redis: the package imports without it."""
    code = (
        "import sys; import stalwart.contrib.celery as c; c.RedeliveryTracker;"
        " print(sorted(m for m in sys.modules if m == 'redis' or m.startswith('redis.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def test_socket_timeout_default_is_the_redis_storages() -> None:
    """A tracker made from a URL waits for Redis as long as a RedisStorage does."""
    from stalwart.contrib import redis as contrib_redis
    from stalwart.contrib.celery import redelivery

    assert redelivery.DEFAULT_SOCKET_TIMEOUT == contrib_redis.DEFAULT_SOCKET_TIMEOUT
    tracker = RedeliveryTracker(URL)
    kwargs = tracker.client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == 0.25
    tracker.close()


def test_defaults() -> None:
    """Three redeliveries, an hour's TTL, the documented prefix; no I/O at construction."""
    unreachable = RedeliveryTracker(f"redis://127.0.0.1:{free_port()}/0")
    assert unreachable.max_redeliveries == DEFAULT_MAX_REDELIVERIES == 3
    assert unreachable.ttl == DEFAULT_REDELIVERY_TTL == 3600
    assert unreachable.prefix == DEFAULT_REDELIVERY_PREFIX == "stalwart:redelivery"
    assert unreachable.key("t:0") == "stalwart:redelivery:t:0"
    assert "max_redeliveries=3" in repr(unreachable)
    assert RedeliveryTracker(URL, ttl=timedelta(minutes=2)).ttl == 120
    unreachable.close()


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"max_redeliveries": 0}, ValueError, "max_redeliveries must be an integer >= 1, got 0"),
        ({"max_redeliveries": -1}, ValueError, "max_redeliveries"),
        ({"max_redeliveries": 2.0}, TypeError, "max_redeliveries"),
        ({"max_redeliveries": True}, TypeError, "max_redeliveries"),
        ({"ttl": 0}, ValueError, "ttl must be a finite number of seconds > 0"),
        ({"ttl": -5}, ValueError, "got -5"),
        ({"ttl": math.nan}, ValueError, "ttl"),
        ({"ttl": "3600"}, TypeError, "ttl"),
        ({"prefix": ""}, ValueError, "prefix must be a non-empty string, got ''"),
        ({"prefix": 5}, TypeError, "prefix"),
        ({"socket_timeout": 0}, ValueError, "socket_timeout"),
    ],
)
@pytest.mark.parametrize("kind", [RedeliveryTracker, AsyncRedeliveryTracker])
def test_bad_options_raise_at_construction(
    kind: type[Any], options: dict[str, Any], error: type[Exception], words: str
) -> None:
    """A bad option raises at construction, naming the option and the value."""
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        kind(URL, **options)


def test_a_client_of_the_other_colour_is_refused() -> None:
    """A sync tracker refuses an asyncio client and the reverse, saying which to use."""
    with pytest.raises(TypeError, match="use AsyncRedeliveryTracker"):
        RedeliveryTracker(redis.asyncio.Redis())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="use RedeliveryTracker"):
        AsyncRedeliveryTracker(redis.Redis())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="client must be"):
        RedeliveryTracker(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"delivery_id": ""}, ValueError),
        ({"delivery_id": 5}, TypeError),
        ({"delivery_count": -1}, ValueError),
        ({"delivery_count": "2"}, TypeError),
        ({"delivery_count": True}, TypeError),
    ],
)
def test_bad_check_arguments_raise(arguments: dict[str, Any], error: type[Exception]) -> None:
    """A check with a bad delivery id or count raises, naming it (before any I/O)."""
    tracker = RedeliveryTracker(f"redis://127.0.0.1:{free_port()}/0")
    call = {"delivery_id": "t:0", "redelivered": True, **arguments}
    name = next(iter(arguments))
    with pytest.raises(error, match=name):
        tracker.check(**call)
    tracker.close()


# --- counting ---------------------------------------------------------------------


@pytest.mark.redis
def test_first_deliveries_cost_no_round_trip(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """A first delivery sends nothing to Redis, and needs no Redis at all."""
    client = redis.Redis.from_url(private_redis.url)
    tracker = RedeliveryTracker(client, prefix="p")
    client.config_resetstat()
    for i in range(100):
        assert tracker.check(f"t{i}:0", redelivered=False) == RedeliveryCheck(0, False, False)
        assert tracker.check(f"t{i}:1", redelivered=False, delivery_count=0).count == 0
    assert set(client.info("commandstats")) == {"cmdstat_config|resetstat"}
    assert client.dbsize() == 0
    client.close()
    nowhere = RedeliveryTracker(f"redis://127.0.0.1:{free_port()}/0")
    assert nowhere.check("t:0", redelivered=False) == RedeliveryCheck(0, False, False)
    assert not caplog.records
    nowhere.close()


@pytest.mark.redis
def test_a_redelivery_is_one_round_trip(private_redis: PrivateRedis) -> None:
    """Each redelivery is one EVALSHA (its GET and SET run inside the script)."""
    client = redis.Redis.from_url(private_redis.url)
    tracker = RedeliveryTracker(client, prefix="p")
    assert tracker.check("t:0", redelivered=True).count == 1  # loads the script
    client.config_resetstat()
    for _ in range(20):
        tracker.check("t:0", redelivered=True)
        tracker.check("u:0", redelivered=False, delivery_count=4)
    stats = client.info("commandstats")
    top_level = set(stats) - {"cmdstat_get", "cmdstat_set", "cmdstat_config|resetstat"}
    assert top_level == {"cmdstat_evalsha"}
    assert stats["cmdstat_evalsha"]["calls"] == 40
    assert stats["cmdstat_get"]["calls"] == stats["cmdstat_set"]["calls"] == 40
    assert tracker.check("t:0", redelivered=True).count == 22
    client.close()


@pytest.mark.redis
def test_the_script_is_loaded_again_after_a_flush(
    tracker: RedeliveryTracker, client: redis.Redis
) -> None:
    """After SCRIPT FLUSH (a restart, a failover) the script is loaded again, no harm."""
    assert tracker.check("t:0", redelivered=True).count == 1
    client.script_flush()
    assert tracker.check("t:0", redelivered=True) == RedeliveryCheck(2, False)


@pytest.mark.redis
def test_counts_exactly_across_threads(tracker: RedeliveryTracker, client: redis.Redis) -> None:
    """N threads x M redeliveries of one delivery: every count 1..N*M seen exactly once."""
    threads, checks = 8, 50
    start = threading.Barrier(threads)
    seen: list[list[int]] = [[] for _ in range(threads)]

    def work(i: int) -> None:
        start.wait(10)
        for _ in range(checks):
            seen[i].append(tracker.check("t:0", redelivered=True).count)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert not any(w.is_alive() for w in workers)
    counts = sorted(c for s in seen for c in s)
    assert counts == list(range(1, threads * checks + 1))
    assert int(client.get(tracker.key("t:0")) or 0) == threads * checks


@pytest.mark.redis
def test_ttl_is_set_and_refreshed(tracker: RedeliveryTracker, client: redis.Redis) -> None:
    """Each redelivery sets the count's TTL to `ttl` again; a first delivery writes nothing."""
    key = tracker.key("t:0")
    tracker.check("t:0", redelivered=False)
    assert client.exists(key) == 0
    tracker.check("t:0", redelivered=True)
    assert 59_000 < client.pttl(key) <= 60_000
    client.pexpire(key, 5_000)
    tracker.check("t:0", redelivered=True)
    assert 59_000 < client.pttl(key) <= 60_000
    client.pexpire(key, 5_000)
    tracker.check("t:0", redelivered=True, delivery_count=1)  # a lower broker count too
    assert 59_000 < client.pttl(key) <= 60_000
    assert client.get(key) == b"2"


@pytest.mark.redis
def test_x_delivery_count_is_the_truth_maxed_with_the_stored_count(
    tracker: RedeliveryTracker,
) -> None:
    """The broker's count is taken as is (checking it twice counts once), never lowered."""
    check = tracker.check
    assert check("t:0", redelivered=True, delivery_count=5) == RedeliveryCheck(5, True)
    assert check("t:0", redelivered=True, delivery_count=5).count == 5  # the same again
    assert check("t:0", redelivered=True).count == 6  # a broker that does not count
    assert check("t:0", redelivered=True, delivery_count=2).count == 6  # never lowered
    assert check("u:0", redelivered=False, delivery_count=1) == RedeliveryCheck(1, False)
    assert check("u:0", redelivered=True, delivery_count=0).count == 1  # stored wins


@pytest.mark.redis
@pytest.mark.parametrize("limit", [1, 3, 5])
def test_exceeded_after_max_redeliveries(client: redis.Redis, prefix: str, limit: int) -> None:
    """Up to `max_redeliveries` redeliveries run; the next one is exceeded, and so on."""
    tracker = RedeliveryTracker(client, prefix=prefix, max_redeliveries=limit)
    assert not tracker.check("t:0", redelivered=False).exceeded
    for count in range(1, limit + 1):
        assert tracker.check("t:0", redelivered=True) == RedeliveryCheck(count, False)
    assert tracker.check("t:0", redelivered=True) == RedeliveryCheck(limit + 1, True)
    assert tracker.check("t:0", redelivered=True).exceeded
    assert tracker.check("u:0", redelivered=True, delivery_count=limit + 1).exceeded
    assert not tracker.check("v:0", redelivered=True, delivery_count=limit).exceeded


@pytest.mark.redis
def test_a_retry_is_a_new_delivery_and_reset_forgets(tracker: RedeliveryTracker) -> None:
    """Deliveries of one task with different retry numbers count apart; reset forgets one."""
    for _ in range(3):
        tracker.check("t:0", redelivered=True)
    assert tracker.check("t:1", redelivered=False).count == 0
    assert tracker.check("t:1", redelivered=True).count == 1
    tracker.reset("t:0")
    assert tracker.check("t:0", redelivered=True).count == 1


@pytest.mark.redis
def test_the_count_expires(client: redis.Redis, prefix: str) -> None:
    """Redeliveries further apart than the TTL count from one again."""
    tracker = RedeliveryTracker(client, prefix=prefix, ttl=0.05)
    assert tracker.check("t:0", redelivered=True).count == 1
    deadline = time.monotonic() + 5
    while client.exists(tracker.key("t:0")) and time.monotonic() < deadline:
        time.sleep(0.01)  # polling Redis until the key expires, bounded
    assert tracker.check("t:0", redelivered=True).count == 1


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    limit=st.integers(1, 4),
    steps=st.lists(
        st.tuples(st.sampled_from(["a:0", "a:1", "b:0"]), st.booleans(),
                  st.none() | st.integers(0, 7)),
        max_size=25,
    ),
)  # fmt: skip
@pytest.mark.redis
def test_counting_follows_the_model(
    client: redis.Redis, limit: int, steps: list[tuple[str, bool, int | None]]
) -> None:
    """Any sequence of deliveries counts as the simple model says, in Redis."""
    prefix = new_prefix()
    tracker = RedeliveryTracker(client, prefix=prefix, max_redeliveries=limit)
    stored: dict[str, int] = {}
    try:
        for delivery_id, redelivered, delivery_count in steps:
            expected = model(stored, delivery_id, redelivered, delivery_count)
            check = tracker.check(
                delivery_id, redelivered=redelivered, delivery_count=delivery_count
            )
            assert check == RedeliveryCheck(expected, expected > limit)
        for delivery_id, count in stored.items():
            assert int(client.get(tracker.key(delivery_id)) or 0) == count
    finally:
        delete_prefix(client, prefix)


# --- Redis down: fail open --------------------------------------------------------


@pytest.mark.redis
def test_fails_open_with_one_warning_per_outage_and_recovers(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis down: tasks run (degraded), one WARNING per outage, INFO when it is back."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    tracker = RedeliveryTracker(private_redis.url, prefix="p")
    assert tracker.check("t:0", redelivered=True) == RedeliveryCheck(1, False)
    for outage in (1, 2):
        private_redis.kill()
        for _ in range(5):
            assert tracker.check("t:0", redelivered=True) == RedeliveryCheck(0, False, True)
        assert tracker.degraded
        # The broker's own count needs no Redis: still honoured.
        assert tracker.check("t:0", redelivered=True, delivery_count=4) == RedeliveryCheck(
            4, True, True
        )
        assert tracker.check("t:0", redelivered=False) == RedeliveryCheck(0, False, False)
        warnings = records(caplog, logging.WARNING)
        assert len(warnings) == outage
        assert "Redis is unavailable for redelivery tracking" in warnings[-1].getMessage()
        assert "ConnectionError" in warnings[-1].getMessage()
        private_redis.start()  # the same port, empty
        assert tracker.check("t:0", redelivered=True) == RedeliveryCheck(1, False)
        assert not tracker.degraded
        assert len(records(caplog, logging.INFO)) == outage
    tracker.close()


@pytest.mark.redis
def test_a_paused_redis_costs_one_socket_timeout(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis that hangs: the check fails open after the socket timeout, not later."""
    tracker = RedeliveryTracker(private_redis.url, prefix="p", socket_timeout=0.25)
    assert tracker.check("t:0", redelivered=True).count == 1
    private_redis.pause()
    try:
        for _ in range(3):
            started = time.monotonic()
            assert tracker.check("t:0", redelivered=True) == RedeliveryCheck(0, False, True)
            assert time.monotonic() - started < 1.5
    finally:
        private_redis.resume()
    assert len(records(caplog, logging.WARNING)) == 1
    assert "TimeoutError" in records(caplog, logging.WARNING)[0].getMessage()
    # A check that timed out may still have been counted: its request sat in the
    # paused server's socket buffer, and Redis ran it once resumed.
    assert 2 <= tracker.check("t:0", redelivered=True).count <= 5
    assert not tracker.degraded
    tracker.close()


@pytest.mark.redis
def test_a_key_that_is_not_a_count_fails_open_untouched(
    tracker: RedeliveryTracker, client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A counter holding garbage (or another type) is refused, not overwritten; tasks run."""
    client.set(tracker.key("t:0"), "zz")
    client.hset(tracker.key("u:0"), "a", "1")
    assert tracker.check("t:0", redelivered=True) == RedeliveryCheck(0, False, True)
    assert tracker.check("u:0", redelivered=True) == RedeliveryCheck(0, False, True)
    assert client.get(tracker.key("t:0")) == b"zz"
    warnings = records(caplog, logging.WARNING)
    assert len(warnings) == 1
    assert "answered redelivery tracking with an error" in warnings[0].getMessage()


# --- async --------------------------------------------------------------------------


@pytest.fixture
def async_client() -> redis.asyncio.Redis:
    """An asyncio client on the shared Redis (closed by the test, in its loop)."""
    return redis.asyncio.Redis.from_url(URL)


@pytest.mark.redis
@pytest.mark.anyio
async def test_sync_tracker_check_async_on_asyncio_and_trio(
    tracker: RedeliveryTracker, anyio_backend: str
) -> None:
    """The sync tracker's check_async counts alike (in a worker thread) on both loops."""
    assert await tracker.check_async("t:0", redelivered=False) == RedeliveryCheck(0, False)
    for count in (1, 2, 3, 4):
        check = await tracker.check_async("t:0", redelivered=True)
        assert check == RedeliveryCheck(count, count > 3)
    assert (await tracker.check_async("t:0", redelivered=True, delivery_count=9)).count == 9


@pytest.mark.redis
@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # redis.asyncio is asyncio only
async def test_async_tracker_counts_concurrent_checks_exactly(
    async_client: redis.asyncio.Redis, prefix: str, anyio_backend: str
) -> None:
    """AsyncRedeliveryTracker: 80 concurrent redeliveries get the counts 1..80 once each."""
    import anyio

    tracker = AsyncRedeliveryTracker(async_client, prefix=prefix, max_redeliveries=50)
    assert await tracker.check_async("t:0", redelivered=False) == RedeliveryCheck(0, False)
    seen: list[int] = []

    async def one() -> None:
        seen.append((await tracker.check_async("t:0", redelivered=True)).count)

    async with anyio.create_task_group() as tg:
        for _ in range(80):  # below the client pool's 100 connections
            tg.start_soon(one)
    assert sorted(seen) == list(range(1, 81))
    assert (await tracker.check_async("t:0", redelivered=True)).exceeded
    assert (await tracker.check_async("u:0", redelivered=True, delivery_count=3)).count == 3
    assert 59 * 60 < await async_client.ttl(tracker.key("t:0")) <= 3600
    await tracker.reset_async("t:0")
    assert await async_client.exists(tracker.key("t:0")) == 0
    await tracker.aclose()  # not its client: left open
    await async_client.ping()
    await async_client.aclose()


@pytest.mark.redis
@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # redis.asyncio is asyncio only
async def test_async_tracker_fails_open_and_recovers(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture, anyio_backend: str
) -> None:
    """AsyncRedeliveryTracker fails open with one warning, and counts again after."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    tracker = AsyncRedeliveryTracker(private_redis.url, prefix="p")
    assert (await tracker.check_async("t:0", redelivered=True)).count == 1
    private_redis.kill()
    for _ in range(3):
        check = await tracker.check_async("t:0", redelivered=True)
        assert check == RedeliveryCheck(0, False, True)
    assert len(records(caplog, logging.WARNING)) == 1
    private_redis.start()
    assert await tracker.check_async("t:0", redelivered=True) == RedeliveryCheck(1, False)
    assert len(records(caplog, logging.INFO)) == 1
    await tracker.aclose()


# --- real workers that kill themselves ---------------------------------------------

TESTS = Path(__file__).parent


@contextlib.contextmanager
def crash_app(
    quorum: bool = False, broker: str = "rabbitmq"
) -> Iterator[tuple[Any, str, redis.Redis]]:
    """The crash app on a queue of its own; queues, exchanges, keys and results deleted
    after."""
    queue = f"stalwart-crash-{uuid.uuid4().hex[:12]}"
    prefix = new_prefix()
    app = celery_crash_app.build(queue, prefix, quorum=quorum, broker=broker)
    client = redis.Redis.from_url(URL)
    if broker == "rabbitmq":
        with app.connection_for_write() as connection:
            app.amqp.queues[queue].bind(connection.default_channel).declare()
    try:
        yield app, prefix, client
    finally:
        if broker == "rabbitmq":
            with app.connection_for_write() as connection:
                channel = connection.default_channel
                channel.queue_delete(queue)
                channel.queue_delete(dead_letter_queue_name(app))
            delete_exchanges(app)
        else:  # the broker's keys: the queues, the unacknowledged messages, bindings
            broker_keys = redis.Redis.from_url(celery_crash_app.REDIS_BROKER_URL)
            delete_prefix(broker_keys, queue)
            broker_keys.close()
        delete_prefix(client, prefix)
        results = redis.Redis.from_url(celery_crash_app.BACKEND_URL)
        delete_prefix(results, queue)
        results.close()
        client.close()
        close_backend(app)
        app.close()
        flush_garbage()


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a worker we started: a warm shutdown, then SIGKILL if it lingers.

    Called once the results are ready, which the task's last run may store before the
    worker has acknowledged its message (`send_to_dead_letter` stores `DeadLettered`,
    then Celery acknowledges). A warm shutdown (SIGTERM) lets that run end; a cold one
    (SIGQUIT) would cancel it from the signal handler, inside the solo pool's task,
    and Celery would store that error over the result. An idle solo worker can take
    10 s to notice a signal in its blocking read, so it is killed after 3 s: by then
    nothing is unacknowledged.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(3)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def run_until_done(
    app: Any,
    prefix: str,
    quorum: bool,
    pool: str,
    results: list[Any],
    log: Path,
    broker: str = "rabbitmq",
    timeout: float = 90.0,
) -> int:
    """Start a `celery worker` subprocess, again each time one dies, until `results` are
    ready; return how many were started (bounded: 15 workers, `timeout` s)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        celery_crash_app.QUEUE_ENV: app.main,
        celery_crash_app.PREFIX_ENV: prefix,
        celery_crash_app.QUORUM_ENV: "1" if quorum else "0",
        celery_crash_app.BROKER_ENV: broker,
    }
    command = [
        *(sys.executable, "-m", "celery", "-A", "celery_crash_app", "worker"),
        # prefork notices a dead pool process on its 5 s maintenance timer: with 4 of
        # them, both tasks crash side by side and those waits overlap.
        *("--pool", pool, "--concurrency", "1" if pool == "solo" else "4"),
        *("--loglevel", "WARNING", "-Q", app.main),
        *("--without-gossip", "--without-mingle", "--without-heartbeat"),
    ]
    deadline = time.monotonic() + timeout
    started = 0
    with log.open("ab") as output:
        while not all(r.ready() for r in results):
            assert started < 15, f"still not done after {started} workers; see {log}"
            node = f"crash-{uuid.uuid4().hex[:8]}@%h"
            process = subprocess.Popen(
                [*command, "-n", node], cwd=TESTS, env=env, stdout=output, stderr=output
            )
            started += 1
            try:
                while process.poll() is None and not all(r.ready() for r in results):
                    assert time.monotonic() < deadline, f"timed out; see {log}"
                    time.sleep(0.02)  # polling the worker and the results, bounded
            finally:
                stop(process)
    return started


def entries(client: redis.Redis, prefix: str, task_id: str) -> list[tuple[Any, ...]]:
    """What the task base saw for each delivery of `task_id`: (retries, redelivered,
    x-delivery-count, count, exceeded)."""
    seen = [json.loads(e) for e in client.lrange(f"{prefix}:log", 0, -1)]
    assert not any(e["degraded"] for e in seen)
    return [
        (e["retries"], e["redelivered"], e["delivery_count"], e["count"], e["exceeded"])
        for e in seen
        if e["id"].startswith(f"{task_id}:")
    ]


@pytest.mark.redis
@pytest.mark.parametrize(
    ("broker", "pool"),
    [
        pytest.param("rabbitmq", "solo", marks=pytest.mark.rabbitmq),
        pytest.param("rabbitmq", "prefork", marks=pytest.mark.rabbitmq),
        ("redis", "solo"),
    ],
)
def test_a_task_that_kills_its_worker_is_counted_and_a_retry_is_not(
    broker: str, pool: str, tmp_path: Path
) -> None:
    """Killed workers: each redelivery counts, the 4th is exceeded; a retry starts at 0.

    solo: the task kills the worker itself (acks_late: RabbitMQ gives the message back
    when the connection drops; Redis once its visibility timeout has passed) and a new
    worker is started each time. prefork: the task kills its pool process
    (reject_on_worker_lost: the worker requeues the message).
    """
    with crash_app(broker=broker) as (app, prefix, client):
        crash = app.tasks[f"{app.main}.crash"]
        # Killed twice, then retried; the retry killed once, then it succeeds.
        retried = crash.apply_async(([2, 1],))
        # Killed on every delivery: the limit (3) stops it at the 4th redelivery.
        doomed = crash.apply_async(([99],))
        started = run_until_done(
            app, prefix, False, pool, [retried, doomed], tmp_path / "w.log", broker=broker
        )
        assert retried.get(timeout=10) == {"retries": 1, "count": 1}
        assert doomed.get(timeout=10) == {"exceeded": 4, "retries": 0}
        assert entries(client, prefix, retried.id) == [
            (0, False, None, 0, False),
            (0, True, None, 1, False),
            (0, True, None, 2, False),
            (1, False, None, 0, False),  # Task.retry: same task id, a new delivery
            (1, True, None, 1, False),
        ]
        assert entries(client, prefix, doomed.id) == [
            (0, False, None, 0, False),
            (0, True, None, 1, False),
            (0, True, None, 2, False),
            (0, True, None, 3, False),
            (0, True, None, 4, True),
        ]
        kills = 3 + 4
        assert started == (kills + 1 if pool == "solo" else 1)


@pytest.mark.rabbitmq
@pytest.mark.redis
def test_a_quorum_queues_x_delivery_count_is_honoured(tmp_path: Path) -> None:
    """On a quorum queue, the broker's x-delivery-count arrives and is the count."""
    with crash_app(quorum=True) as (app, prefix, client):
        crash = app.tasks[f"{app.main}.crash"]
        doomed = crash.apply_async(([99],))
        run_until_done(app, prefix, True, "solo", [doomed], tmp_path / "w.log")
        assert doomed.get(timeout=10) == {"exceeded": 4, "retries": 0}
        assert entries(client, prefix, doomed.id) == [
            (0, False, None, 0, False),
            (0, True, 1, 1, False),
            (0, True, 2, 2, False),
            (0, True, 3, 3, False),
            (0, True, 4, 4, True),
        ]


def dead_lettered_after_crashes(app: Any, prefix: str, client: redis.Redis, task_id: str) -> None:
    """The message of `task_id` ran 1 + max_redeliveries times, each run killing its
    worker, and was then dead-lettered (reason max_redeliveries) without running:
    once in the DLQ, final in the result backend."""
    limit = celery_crash_app.MAX_REDELIVERIES
    runs = [json.loads(r) for r in client.lrange(f"{prefix}:resilient:runs", 0, -1)]
    assert [(r["id"], r["redelivered"]) for r in runs] == [
        (f"{task_id}:0", False),
        *[(f"{task_id}:0", True)] * limit,
    ]
    # The redelivery that was not run was counted too: one past the limit.
    assert client.get(f"{prefix}:resilient:{task_id}:0") == str(limit + 1).encode()
    letters = [letter for letter in dead_letters(app) if letter.task_id == task_id]
    assert [(x.reason, x.task, x.exception_type) for x in letters] == [
        ("max_redeliveries", f"{app.main}.resilient_crash", None)
    ]
    status = task_status(task_id, app=app)
    assert (status["status"], status["ready"], status["error"], status["dead_lettered"]) == (
        "FAILURE",
        True,
        "stalwart.contrib.celery.DeadLettered",
        {"reason": "max_redeliveries"},
    ), status


@pytest.mark.redis
@pytest.mark.parametrize(
    ("broker", "pool"),
    [
        pytest.param("rabbitmq", "solo", marks=pytest.mark.rabbitmq),
        pytest.param("rabbitmq", "prefork", marks=pytest.mark.rabbitmq),
        ("redis", "solo"),
        ("redis", "prefork"),
    ],
)
def test_a_resilient_task_that_kills_its_worker_is_dead_lettered(
    broker: str, pool: str, tmp_path: Path
) -> None:
    """ResilientTask(redeliveries=tracker): run 1 + max_redeliveries times, then in the
    DLQ as max_redeliveries, and FAILURE/DeadLettered in the backend, never stale.

    On Redis as broker, a dead solo worker's message comes back once its visibility
    timeout (2 s here) has passed, put back by the next worker's sweep; prefork's
    pool process is requeued by its worker at once.
    """
    with crash_app(broker=broker) as (app, prefix, client):
        doomed = app.tasks[f"{app.main}.resilient_crash"].apply_async()
        started = run_until_done(
            app, prefix, False, pool, [doomed], tmp_path / "w.log", broker=broker, timeout=60
        )
        dead_lettered_after_crashes(app, prefix, client, doomed.id)
        kills = 1 + celery_crash_app.MAX_REDELIVERIES
        assert started == (kills + 1 if pool == "solo" else 1)


@broker_params
def test_past_the_limit_with_dead_lettering_off_the_task_fails_without_running(
    broker: str,
) -> None:
    """dead_letter=False: a message past max_redeliveries is not run and ends FAILURE
    with RedeliveryLimitExceeded (count and limit in it), not a stale state.

    The message says it is on its 4th redelivery as a quorum queue does, in
    ``x-delivery-count``: the tracker takes the broker's count as the truth.
    """
    app = make_app(broker)
    prefix = new_prefix()
    tracker = RedeliveryTracker(URL, max_redeliveries=3, ttl=60, prefix=prefix)
    ran: list[str] = []

    @app.task(
        base=ResilientTask,
        bind=True,
        shared=False,
        name=f"{app.main}.limited",
        redeliveries=tracker,
        dead_letter=False,
    )
    def limited(self: ResilientTask[Any, Any]) -> str:
        ran.append(self.request.id)
        return "ran"

    try:
        with running_worker(app):
            fresh = limited.apply_async()
            assert fresh.get(timeout=20) == "ran"
            doomed = limited.apply_async(headers={"x-delivery-count": 4})
            with pytest.raises(RedeliveryLimitExceeded) as raised:
                doomed.get(timeout=20, propagate=True)
        assert ran == [fresh.id]
        failure = raised.value
        assert (failure.task, failure.count, failure.max_redeliveries) == (limited.name, 4, 3)
        assert failure.correlation_id
        status = task_status(doomed.id, app=app)
        assert (status["status"], status["error"], status["dead_lettered"]) == (
            "FAILURE",
            "stalwart.contrib.celery.RedeliveryLimitExceeded",
            None,
        )
        assert status["correlation_id"] == failure.correlation_id
    finally:
        tracker.close()
        with redis.Redis.from_url(URL) as client:
            delete_prefix(client, prefix)
        close_app(app)
