"""Redelivery tracking: how often the broker gave a task's message back after a crash.

With ``acks_late=True`` a message is acknowledged only once its task has run; with
``reject_on_worker_lost=True`` too, a message whose worker process died is given back
to the broker rather than acknowledged. Both are what at-least-once processing needs,
and together they have a failure mode: a message that kills its worker (a segfault in
a C extension, the OOM killer, a 20 GB input) is delivered again, kills the next
worker, and so on, forever. Celery does not count these redeliveries, and a counter
keyed by the task id would mix them with `Task.retry`, which keeps the id.

`RedeliveryTracker` counts them in Redis, per *delivery*: a task id and its retry
number (``f"{task_id}:{retries}"``, see `delivery_of`), so that a retry, a new message
with ``retries + 1``, starts again from zero. Only real redeliveries count: the
broker's ``redelivered`` flag, and RabbitMQ's ``x-delivery-count`` header (quorum
queues) where present, which is taken as the truth.

.. code-block:: python

    import redis
    from stalwart.contrib.celery import RedeliveryTracker, delivery_of

    tracker = RedeliveryTracker(
        redis.Redis(host="cache", socket_timeout=0.25, socket_connect_timeout=0.25),
        max_redeliveries=3,
    )

    d = delivery_of(task.request)
    check = tracker.check(d.id, redelivered=d.redelivered, delivery_count=d.delivery_count)
    if check.exceeded:
        ...  # dead-letter the message instead of running the task

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ... import _validate

if TYPE_CHECKING:
    from datetime import timedelta

    import redis
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.cluster

__all__ = [
    "DEFAULT_MAX_REDELIVERIES",
    "DEFAULT_REDELIVERY_PREFIX",
    "DEFAULT_REDELIVERY_TTL",
    "DEFAULT_SOCKET_TIMEOUT",
    "DELIVERY_COUNT_HEADER",
    "AsyncRedeliveryTracker",
    "Delivery",
    "RedeliveryCheck",
    "RedeliveryTracker",
    "delivery_of",
]

DEFAULT_MAX_REDELIVERIES: Final = 3
"""Redeliveries of one delivery allowed before `RedeliveryCheck.exceeded` says stop."""
DEFAULT_REDELIVERY_TTL: Final = 3600.0
"""Seconds a delivery's count lives after its last redelivery."""
DEFAULT_REDELIVERY_PREFIX: Final = "stalwart:redelivery"
"""The first part of every key: ``<prefix>:<delivery id>``."""
DEFAULT_SOCKET_TIMEOUT: Final = 0.25
"""Seconds a client made from a URL waits to connect or for an answer (as
`stalwart.contrib.redis`'s)."""
DELIVERY_COUNT_HEADER: Final = "x-delivery-count"
"""The header in which RabbitMQ quorum queues say how often a message was given back."""

logger = logging.getLogger("stalwart.celery")

# KEYS[1]: the delivery's counter. ARGV[1]: the TTL in milliseconds; ARGV[2]: the
# broker's delivery count, or "" when the broker does not count (then this call is
# one more redelivery). Reply: the delivery's count after this redelivery.
# A counter holding anything but a count is refused with an error reply (the caller
# fails open and says so), never overwritten.
_SCRIPT = """
local count = 0
local stored = redis.call('GET', KEYS[1])
if stored then
  count = tonumber(stored)
  if not count or count < 0 or count ~= math.floor(count) then
    return redis.error_reply('ERR stalwart: ' .. KEYS[1] .. ' does not hold a count')
  end
end
if ARGV[2] == '' then
  count = count + 1
else
  count = math.max(count, tonumber(ARGV[2]))
end
redis.call('SET', KEYS[1], string.format('%d', count), 'PX', ARGV[1])
return count
"""
_SHA: Final = hashlib.sha1(_SCRIPT.encode()).hexdigest()  # noqa: S324 - how Redis names scripts


def _failures() -> tuple[type[Exception], ...]:
    """What makes a check fail open.

    Redis unavailable (refused, timed out, including asyncio's timeouts, which are
    OSErrors), an error reply (a read-only replica, a key that does not hold a count),
    or a reply that is not a count. (redis is imported here, not by the module:
    ``stalwart[celery]`` does not install it.)
    """
    from redis.exceptions import RedisError  # noqa: PLC0415 - see above

    return (RedisError, OSError, ValueError, TypeError)


@dataclass(frozen=True, slots=True)
class RedeliveryCheck:
    """What a tracker says about one delivery of a message.

    Attributes:
        count: Redeliveries seen for this delivery, this one included (0 for a first
            delivery; while Redis is unavailable, the broker's ``x-delivery-count``
            if it sent one, else 0).
        exceeded: Whether `count` is more than the tracker's `max_redeliveries`: the
            message should be dead-lettered rather than run.
        degraded: Whether Redis failed, so that the answer is the fail-open one
            (`exceeded` is False unless the broker's own count exceeds the limit).

    .. versionadded:: 0.1.0
    """

    __module__ = "stalwart.contrib.celery"

    count: int
    exceeded: bool
    degraded: bool = False


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery of a task's message, as `delivery_of` reads it from the request.

    Attributes:
        id: ``f"{task_id}:{retries}"``: the same for every redelivery of one message,
            new for each retry (`Task.retry` sends a new message with the same task id
            and ``retries + 1``).
        redelivered: The broker's ``redelivered`` flag.
        delivery_count: RabbitMQ's ``x-delivery-count`` header (quorum queues), or
            ``None`` where the broker does not send it.

    .. versionadded:: 0.1.0
    """

    __module__ = "stalwart.contrib.celery"

    id: str
    redelivered: bool
    delivery_count: int | None = None


def delivery_of(request: Any) -> Delivery:
    """Read which delivery of which message a task is running, from its request.

    Args:
        request: The task's ``self.request`` (a `celery.app.task.Context`).

    The ``redelivered`` flag is read from the request's ``delivery_info``, where both
    brokers put it: RabbitMQ sets it on a message given back unacknowledged, and
    kombu's Redis transport on a message it restores (a worker's requeue, or one
    whose worker died, restored once the ``visibility_timeout`` has passed). The Redis
    transport also adds a ``redelivered`` message header; that one is not read, as
    `Task.retry` copies a message's headers into the next attempt's message, which
    would then look redelivered.

    Returns:
        The delivery's id (task id and retry number), the broker's ``redelivered``
        flag (False when the task is not run from a message, as in eager mode), and
        ``x-delivery-count`` when the broker sent a readable one.

    .. versionadded:: 0.1.0
    """
    delivery_info = getattr(request, "delivery_info", None) or {}
    redelivered = bool(delivery_info.get("redelivered", False))
    # Celery makes the message's headers attributes of the request.
    raw = getattr(request, DELIVERY_COUNT_HEADER, None)
    if raw is None:
        headers = getattr(request, "headers", None) or {}
        raw = headers.get(DELIVERY_COUNT_HEADER)
    return Delivery(
        f"{request.id}:{getattr(request, 'retries', 0) or 0}",
        redelivered,
        _delivery_count(raw),
    )


def _delivery_count(raw: object) -> int | None:
    """A header's delivery count, or None if it is missing or not a count."""
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "replace")
    if isinstance(raw, str) and raw.isascii() and raw.isdigit():
        return int(raw)
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        return raw
    return None


def _prefix(value: object) -> str:
    what = f"prefix must be a non-empty string, got {value!r}"
    if not isinstance(value, str):
        raise TypeError(what)
    if not value:
        raise ValueError(what)
    return value


def _no_script(exc: BaseException) -> bool:
    """Whether Redis does not have the script (after a restart or a ``SCRIPT FLUSH``)."""
    from redis.exceptions import NoScriptError  # noqa: PLC0415 - see _failures

    return isinstance(exc, NoScriptError)


def _trouble(exc: BaseException) -> str:
    """What went wrong, for the warning's first words."""
    from redis.exceptions import ConnectionError as RedisConnectionError  # noqa: PLC0415
    from redis.exceptions import RedisError, ResponseError  # noqa: PLC0415
    from redis.exceptions import TimeoutError as RedisTimeoutError  # noqa: PLC0415

    if isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError)):
        return "Redis is unavailable for redelivery tracking"
    if isinstance(exc, ResponseError):
        return "Redis answered redelivery tracking with an error"
    if isinstance(exc, RedisError):
        return "Redis failed for redelivery tracking"
    return "Redis sent redelivery tracking a reply that cannot be read"


class _Tracker:
    """What both trackers share, without I/O: arguments, answers, outages."""

    __slots__ = (
        "_down",
        "_epoch",
        "_failures",
        "_lock",
        "_owns_client",
        "_ttl_ms",
        "max_redeliveries",
        "prefix",
        "ttl",
    )

    def __init__(
        self,
        *,
        max_redeliveries: int,
        ttl: float | timedelta,
        prefix: str,
        owns_client: bool,
    ) -> None:
        self.max_redeliveries = _validate.count("max_redeliveries", max_redeliveries)
        self.ttl = _validate.seconds("ttl", ttl, positive=True)
        self.prefix = _prefix(prefix)
        self._ttl_ms = str(max(1, math.ceil(self.ttl * 1000)))
        self._owns_client = owns_client
        self._lock = threading.Lock()
        self._failures = _failures()
        self._down = False
        self._epoch = 0
        """Bumped when an outage begins and when it ends: an answer to a request sent
        in an earlier epoch says nothing about the current one."""

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} prefix={self.prefix!r}"
            f" max_redeliveries={self.max_redeliveries} ttl={self.ttl:g}>"
        )

    @property
    def degraded(self) -> bool:
        """Whether Redis failed at the last check, and has not answered since."""
        return self._down

    def key(self, delivery_id: str) -> str:
        """The Redis key holding the count of `delivery_id`."""
        return f"{self.prefix}:{delivery_id}"

    def _command(
        self, delivery_id: object, redelivered: object, delivery_count: object
    ) -> tuple[str, ...] | None:
        """The script's EVALSHA for a redelivery, or None for a first delivery."""
        if not isinstance(delivery_id, str):
            raise TypeError(f"delivery_id must be a non-empty string, got {delivery_id!r}")
        if not delivery_id:
            raise ValueError(f"delivery_id must be a non-empty string, got {delivery_id!r}")
        if delivery_count is not None:
            what = f"delivery_count must be an integer >= 0 or None, got {delivery_count!r}"
            if not isinstance(delivery_count, int) or isinstance(delivery_count, bool):
                raise TypeError(what)
            if delivery_count < 0:
                raise ValueError(what)
        if not (redelivered or delivery_count):
            return None  # a first delivery: nothing to count, no round trip
        count = "" if delivery_count is None else str(delivery_count)
        return ("EVALSHA", _SHA, "1", self.key(delivery_id), self._ttl_ms, count)

    def _answer(self, raw: object, epoch: int) -> RedeliveryCheck:
        """The check for the script's reply; raises one of `_failures()` if it is not one."""
        if type(raw) is not int or raw < 0:
            raise TypeError(f"the redelivery script answered {raw!r}, not a count")
        if self._down:
            with self._lock:
                if self._down and self._epoch == epoch:
                    self._down = False
                    self._epoch += 1
                    logger.info(
                        "Redis answers again for redelivery tracking; counting redeliveries",
                        extra={"prefix": self.prefix},
                    )
        return RedeliveryCheck(raw, raw > self.max_redeliveries)

    def _failed(
        self, exc: BaseException, epoch: int, delivery_count: int | None
    ) -> RedeliveryCheck:
        """Redis failed: the fail-open answer, and a warning if an outage begins."""
        with self._lock:
            if not self._down and self._epoch == epoch:
                self._down = True
                self._epoch += 1
                logger.warning(
                    "%s (%s: %s); redelivered tasks run without a redelivery limit"
                    " (but for the broker's x-delivery-count) until Redis answers again",
                    _trouble(exc),
                    type(exc).__name__,
                    exc,
                    extra={"prefix": self.prefix},
                )
        count = delivery_count or 0
        return RedeliveryCheck(count, count > self.max_redeliveries, degraded=True)


_FIRST = RedeliveryCheck(0, False)


class RedeliveryTracker(_Tracker):
    """Counts the broker's redeliveries of each delivery in Redis, through a sync client.

    A first delivery costs nothing (no round trip: there is nothing to count). Each
    redelivery is one atomic round trip to Redis (a small Lua script, called by its
    SHA): without ``x-delivery-count`` the delivery's count goes up by one; with it,
    the count becomes the larger of the broker's count and the stored one (so
    checking one redelivery twice counts it once). Either way the count's TTL is set
    to `ttl` again.

    If Redis fails (refuses connections, does not answer within the client's socket
    timeout, answers with an error), the check fails open: ``exceeded=False,
    degraded=True`` (unless the broker's own ``x-delivery-count`` is over the limit),
    and one WARNING per outage is logged on the ``stalwart.celery`` logger; an INFO
    says when Redis answers again. A check never raises because of Redis. How long a
    check waits for a Redis that hangs is the client's to bound: give it
    ``socket_timeout`` and ``socket_connect_timeout``, and few retries (redis-py
    retries 10 times by default), or pass a URL. A check that timed out may still
    have been counted, if Redis ran it after the client stopped waiting.

    What it counts is what the broker says: every message given back after its
    worker's connection was lost. Those prefetched by a worker that died, but never
    started, are counted too; so the count is the most crashes this delivery can
    have caused.

    Args:
        client: A `redis.Redis` (or `redis.cluster.RedisCluster`) client, used as it
            is configured; or a URL, from which the tracker makes a client with
            `socket_timeout` and one immediate retry after a connection error.
        max_redeliveries: Redeliveries of one delivery allowed (an integer >= 1,
            default 3); one more and `RedeliveryCheck.exceeded` is True.
        ttl: How long a delivery's count lives after its last redelivery (seconds or
            a `timedelta`, default an hour). Redeliveries further apart than this
            start again from one.
        prefix: The first part of every key (``<prefix>:<delivery id>``).
        socket_timeout: For a client made from a URL: how long to wait to connect
            or for an answer before failing open (seconds, default 0.25).

    Raises:
        TypeError: `client` is not a sync Redis client nor a URL, or an option has
            the wrong type (named in the message, with the value).
        ValueError: An option is out of range (named in the message, with the value).

    .. versionadded:: 0.1.0
    """

    __module__ = "stalwart.contrib.celery"
    __slots__ = ("client",)

    def __init__(
        self,
        client: redis.Redis | redis.cluster.RedisCluster | str,
        *,
        max_redeliveries: int = DEFAULT_MAX_REDELIVERIES,
        ttl: float | timedelta = DEFAULT_REDELIVERY_TTL,
        prefix: str = DEFAULT_REDELIVERY_PREFIX,
        socket_timeout: float | timedelta = DEFAULT_SOCKET_TIMEOUT,
    ) -> None:
        import redis  # noqa: PLC0415 - see _failures
        import redis.cluster  # noqa: PLC0415
        from redis.retry import Retry  # noqa: PLC0415

        from ..redis import _client_retry  # noqa: PLC0415

        timeout = _validate.seconds("socket_timeout", socket_timeout, positive=True)
        built: redis.Redis | redis.cluster.RedisCluster
        if isinstance(client, str):
            built = redis.Redis.from_url(
                client,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=_client_retry(Retry),
            )
        elif isinstance(client, (redis.Redis, redis.cluster.RedisCluster)):
            built = client
        else:
            raise TypeError(
                f"client must be a redis.Redis client or a URL, got {client!r}"
                " (use AsyncRedeliveryTracker for redis.asyncio clients)"
            )
        super().__init__(
            max_redeliveries=max_redeliveries,
            ttl=ttl,
            prefix=prefix,
            owns_client=isinstance(client, str),
        )
        self.client: redis.Redis | redis.cluster.RedisCluster = built

    def check(
        self, delivery_id: str, *, redelivered: bool, delivery_count: int | None = None
    ) -> RedeliveryCheck:
        """Count this delivery if it is a redelivery, and say whether it is one too many.

        Args:
            delivery_id: Which delivery: ``f"{task_id}:{retries}"`` (`delivery_of`).
            redelivered: The broker's ``redelivered`` flag.
            delivery_count: RabbitMQ's ``x-delivery-count``, where present.

        Returns:
            The count and whether it exceeds `max_redeliveries` (fail-open when Redis
            fails; never raises because of Redis).

        Raises:
            TypeError, ValueError: `delivery_id` is not a non-empty string, or
                `delivery_count` is not an integer >= 0.
        """
        command = self._command(delivery_id, redelivered, delivery_count)
        if command is None:
            return _FIRST
        epoch = self._epoch
        try:
            return self._answer(self._execute(command), epoch)
        except self._failures as exc:
            return self._failed(exc, epoch, delivery_count)

    async def check_async(
        self, delivery_id: str, *, redelivered: bool, delivery_count: int | None = None
    ) -> RedeliveryCheck:
        """`check` from async code: the round trip in a worker thread (asyncio or trio).

        A first delivery is answered at once, without a thread.
        """
        if self._command(delivery_id, redelivered, delivery_count) is None:
            return _FIRST
        from anyio import to_thread  # noqa: PLC0415 - anyio only for async callers

        def check() -> RedeliveryCheck:
            return self.check(delivery_id, redelivered=redelivered, delivery_count=delivery_count)

        return await to_thread.run_sync(check)

    def reset(self, delivery_id: str) -> None:
        """Forget the count of `delivery_id` (say, before replaying a dead letter).

        Raises:
            redis.RedisError: Redis failed (an operator's action is not failed open).
        """
        self.client.delete(self.key(delivery_id))

    def close(self) -> None:
        """Close the client if the tracker made it (from a URL); else leave it be."""
        if self._owns_client:
            self.client.close()

    def _execute(self, command: tuple[str, ...]) -> Any:
        """One EVALSHA (after loading the script, if Redis does not have it)."""
        client = self.client
        try:
            return client.execute_command(*command)  # type: ignore[no-untyped-call]
        except self._failures as exc:
            if not _no_script(exc):
                raise
            client.script_load(_SCRIPT)
            return client.execute_command(*command)  # type: ignore[no-untyped-call]


class AsyncRedeliveryTracker(_Tracker):
    """`RedeliveryTracker` for asyncio code, through a `redis.asyncio.Redis` client.

    Takes the same arguments, with an asyncio client (or a URL), and counts alike;
    its methods are ``async``. redis.asyncio runs on asyncio only: under trio, use
    `RedeliveryTracker.check_async`, which runs the sync client in a worker thread.

    Raises:
        TypeError: `client` is not an asyncio Redis client nor a URL, or an option
            has the wrong type.
        ValueError: An option is out of range.

    .. versionadded:: 0.1.0
    """

    __module__ = "stalwart.contrib.celery"
    __slots__ = ("client",)

    def __init__(
        self,
        client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster | str,
        *,
        max_redeliveries: int = DEFAULT_MAX_REDELIVERIES,
        ttl: float | timedelta = DEFAULT_REDELIVERY_TTL,
        prefix: str = DEFAULT_REDELIVERY_PREFIX,
        socket_timeout: float | timedelta = DEFAULT_SOCKET_TIMEOUT,
    ) -> None:
        import redis.asyncio  # noqa: PLC0415 - see _failures
        import redis.asyncio.cluster  # noqa: PLC0415
        import redis.asyncio.retry  # noqa: PLC0415

        from ..redis import _client_retry  # noqa: PLC0415

        timeout = _validate.seconds("socket_timeout", socket_timeout, positive=True)
        built: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster
        if isinstance(client, str):
            built = redis.asyncio.Redis.from_url(
                client,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=_client_retry(redis.asyncio.retry.Retry),
            )
        elif isinstance(client, (redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster)):
            built = client
        else:
            raise TypeError(
                f"client must be a redis.asyncio.Redis client or a URL, got {client!r}"
                " (use RedeliveryTracker for sync clients)"
            )
        super().__init__(
            max_redeliveries=max_redeliveries,
            ttl=ttl,
            prefix=prefix,
            owns_client=isinstance(client, str),
        )
        self.client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster = built

    async def check_async(
        self, delivery_id: str, *, redelivered: bool, delivery_count: int | None = None
    ) -> RedeliveryCheck:
        """See `RedeliveryTracker.check`."""
        command = self._command(delivery_id, redelivered, delivery_count)
        if command is None:
            return _FIRST
        epoch = self._epoch
        try:
            return self._answer(await self._execute(command), epoch)
        except self._failures as exc:
            return self._failed(exc, epoch, delivery_count)

    async def reset_async(self, delivery_id: str) -> None:
        """See `RedeliveryTracker.reset`."""
        await self.client.delete(self.key(delivery_id))

    async def aclose(self) -> None:
        """Close the client if the tracker made it (from a URL); else leave it be."""
        if self._owns_client:
            await self.client.aclose()

    async def _execute(self, command: tuple[str, ...]) -> Any:
        client = self.client
        try:
            return await client.execute_command(*command)
        except self._failures as exc:
            if not _no_script(exc):
                raise
            await client.script_load(_SCRIPT)
            return await client.execute_command(*command)
