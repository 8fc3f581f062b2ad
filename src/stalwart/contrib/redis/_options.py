"""The storages' options: defaults, validation, and the client made from a URL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from ... import _validate

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import timedelta

    import redis.asyncio.retry
    from redis.retry import Retry

DEFAULT_URL = "redis://127.0.0.1:6379/0"
"""The Redis a storage built without a client talks to."""
DEFAULT_PREFIX = "stalwart"
"""The first part of every key."""
DEFAULT_SOCKET_TIMEOUT = 0.25
"""Seconds to wait for Redis (connecting, or answering) before going local."""
DEFAULT_RETRY_INTERVAL = 1.0
"""Seconds between attempts to reach Redis again while it is down."""


def _prefix(value: object) -> str:
    if not isinstance(value, str) or not value or "{" in value or "}" in value:
        raise ValueError(f"prefix must be a non-empty string without {{ or }}, got {value!r}")
    return value


def _clock(value: object) -> Callable[[], float] | None:
    if value is not None and not callable(value):
        raise TypeError(f"clock must be a callable returning seconds, got {value!r}")
    return value


class Options:
    """The validated options both storages share."""

    __slots__ = (
        "clock",
        "max_staleness",
        "owns_client",
        "prefix",
        "retry_interval",
        "socket_timeout",
    )

    def __init__(
        self,
        *,
        client: object,
        prefix: object,
        max_staleness: float | timedelta | None,
        socket_timeout: float | timedelta,
        retry_interval: float | timedelta,
        clock: object,
    ) -> None:
        self.prefix = _prefix(prefix)
        self.max_staleness = (
            None
            if max_staleness is None
            else _validate.seconds("max_staleness", max_staleness, positive=True)
        )
        self.socket_timeout = _validate.seconds("socket_timeout", socket_timeout, positive=True)
        self.retry_interval = _validate.seconds("retry_interval", retry_interval)
        self.clock = _clock(clock)
        self.owns_client = client is None or isinstance(client, str)

    def client_kwargs(
        self, retry_class: type[Retry | redis.asyncio.retry.Retry]
    ) -> dict[str, Any]:
        """What ``from_url`` gets for a client the storage makes itself."""
        return {
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.socket_timeout,
            "retry": client_retry(retry_class),
        }


def client_retry(retry_class: type[Retry | redis.asyncio.retry.Retry]) -> Any:
    """The retry policy of a client made from a URL: once, at once, after a connection error.

    A connection error is retried (a stale pooled connection, a restarted server); a
    timeout is not: a Redis that hangs costs the call one `socket_timeout`, not two.
    """
    return retry_class(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
