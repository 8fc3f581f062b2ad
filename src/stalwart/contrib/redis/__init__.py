"""Breaker state shared across processes and hosts through Redis.

.. code-block:: python

    from stalwart import BreakerRegistry, CircuitBreaker
    from stalwart.contrib.redis import AsyncRedisStorage, RedisStorage

    storage = RedisStorage("redis://cache:6379/0")
    jira = CircuitBreaker("jira", failure_threshold=5, storage=storage)
    breakers = BreakerRegistry(storage=storage)           # or one storage per registry

    async_breaker = CircuitBreaker("jira", storage=AsyncRedisStorage("redis://cache:6379/0"))

Every breaker with the same name and prefix, in any process on any host, shares one
state: when one of them opens, all of them reject. `RedisStorage` is for code that
blocks (a sync `redis.Redis` client); `AsyncRedisStorage` for asyncio code (a
`redis.asyncio.Redis` client). Redis 5 or later (or a Redis Cluster) is needed.

The rules of `stalwart.breaker.machine` run inside Redis, in one Lua script
(``script.lua`` in this package), loaded once and called by its SHA: every decision is
one atomic round trip, on Redis server time. Two plain commands stand in for the
script where it would decide nothing: an admission of a breaker last seen closed is an
``HGET`` of its ``closed_generation`` (which the script keeps equal to the generation
while the breaker is closed, and deletes otherwise), and a success that only needs
counting is an ``HINCRBY`` of ``ok:<generation>``, which the script gathers before
anything else it does. A breaker named ``jira`` under the prefix ``stalwart`` keeps
``stalwart:{jira}:state`` (a hash of plain fields), ``stalwart:{jira}:buckets`` (the
time window) and ``stalwart:{jira}:calls`` (the count window), with TTLs. If Redis
fails, or answers with what the script did not write, the breaker carries on with a
local state, logs one WARNING on the ``stalwart.redis`` logger, reports
``storage_degraded=True`` in `stats()`, and goes back to the shared state when a full
check of it succeeds.

The documentation's page "Sharing state across processes" (``docs/redis.md``) gives
the guarantees, the keys and their TTLs, strict and cached mode, and what happens when
Redis is down. The package's modules: ``script.lua`` (the script, shipped as package
data; its header documents its arguments and replies), ``_script`` (its text, SHA,
arguments and replies in Python), ``_state`` (every decision both colours share),
``_sync`` and ``_async`` (the thin shells that send the commands), ``_options``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from . import _options
from ._async import AsyncRedisState, AsyncRedisStorage
from ._options import DEFAULT_PREFIX, DEFAULT_RETRY_INTERVAL, DEFAULT_SOCKET_TIMEOUT, DEFAULT_URL
from ._script import HELD_TTL, IDLE_MARGIN
from ._state import LOCAL_GENERATIONS, PLAIN_SUCCESS_REFRESH
from ._sync import RedisState, RedisStorage

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_RETRY_INTERVAL",
    "DEFAULT_SOCKET_TIMEOUT",
    "DEFAULT_URL",
    "HELD_TTL",
    "IDLE_MARGIN",
    "LOCAL_GENERATIONS",
    "PLAIN_SUCCESS_REFRESH",
    "AsyncRedisState",
    "AsyncRedisStorage",
    "RedisState",
    "RedisStorage",
]

_client_retry = _options.client_retry
"""The retry policy of a client made from a URL; stalwart.contrib.celery's clients use it."""
