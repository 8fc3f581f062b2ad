"""`AsyncRedisStorage` and `AsyncRedisState`: the shell for a ``redis.asyncio`` client.

Every decision is `SharedState`'s; this module only awaits its commands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
from redis.exceptions import NoScriptError

from ...breaker.storage import MemoryState
from ._options import (
    DEFAULT_PREFIX,
    DEFAULT_RETRY_INTERVAL,
    DEFAULT_SOCKET_TIMEOUT,
    DEFAULT_URL,
    Options,
)
from ._script import SCRIPT
from ._state import FAILURES, Answer, Command, SharedState, degraded

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import timedelta

    from ...breaker.machine import BreakerConfig, Transition
    from ...breaker.storage import Counts


class AsyncRedisState(SharedState):
    """One breaker's state in Redis, through an asyncio client (see `AsyncRedisStorage`).

    Implements `stalwart.breaker.BreakerState` for async code: the ``_async`` methods do
    the I/O. The sync methods do none: `counts` returns what the last answer said (or the
    local state while Redis is unavailable), and the others raise `RuntimeError`.

    .. versionadded:: 0.1.0
    """

    __module__ = "stalwart.contrib.redis"
    __slots__ = ("_client", "_known")

    io = True

    def __init__(
        self,
        storage: AsyncRedisStorage,
        name: str,
        config: BreakerConfig,
        clock: Callable[[], float],
    ) -> None:
        client = storage.client
        super().__init__(storage._options, client.get_encoder().encode, name, config, clock)  # noqa: SLF001
        self._client = client
        self._known = MemoryState(config, clock).counts()

    # -- I/O -----------------------------------------------------------------------

    async def _execute(self, command: Command) -> Any:
        """One EVALSHA (after loading the script, if Redis does not have it)."""
        client = self._client
        try:
            return await client.execute_command(*command)
        except NoScriptError:
            await client.script_load(SCRIPT)
            return await client.execute_command(*command)

    async def _recheck(self) -> MemoryState | None:
        """While local: the local state, or None once Redis is back (see `RedisState`)."""
        local = self._standing_in()
        if local is not None:
            return local
        outages = self._outages
        try:
            reply = self._read(await self._execute(self._check()))
        except FAILURES as exc:
            return self._failed(exc)
        self._answered(reply, outages)
        return self._local

    async def _call(self, command: Command, *, fast: bool = False, counts: bool = False) -> Answer:
        if self._local is not None:
            local = await self._recheck()
            if local is not None:
                return local
        outages = self._outages
        try:
            reply = self._read(await self._execute(command), fast=fast, counts=counts)
        except FAILURES as exc:
            return self._failed(exc)
        self._answered(reply, outages)
        return reply

    async def _peek(self) -> int | MemoryState | None:
        """A closed breaker's generation (one HGET); None: ask the script.

        While Redis is unavailable, the local state instead.
        """
        if self._local is not None:
            local = await self._recheck()
            if local is not None:
                return local
        outages = self._outages
        try:
            value = await self._client.execute_command(*self._peek_command)
        except FAILURES as exc:
            return self._failed(exc)
        return self._peeked(value, outages)

    # -- `stalwart.breaker.BreakerState`: the sync side does no I/O -------------------

    def _sync(self, method: str) -> RuntimeError:
        return RuntimeError(
            f"breaker {self.name!r} keeps its state in an AsyncRedisStorage: call"
            f" {method}_async from async code (or use RedisStorage in sync code)"
        )

    def admit(self) -> tuple[int, float | None, Transition | None]:
        """Raise `RuntimeError`: use `admit_async`."""
        raise self._sync("admit")

    def record(
        self, generation: int, failed: bool, duration: float | None, failure_type: str | None
    ) -> Transition | None:
        """Raise `RuntimeError`: use `record_async`."""
        del generation, failed, duration, failure_type
        raise self._sync("record")

    def record_success(self, generation: int) -> Transition | None:
        """Raise `RuntimeError`: use `record_success_async`."""
        del generation
        raise self._sync("record_success")

    def release(self, generation: int) -> None:
        """Raise `RuntimeError`: use `release_async`."""
        del generation
        raise self._sync("release")

    def change(self, operation: str) -> Transition:
        """Raise `RuntimeError`: use `change_async`."""
        del operation
        raise self._sync("change")

    def counts(self) -> Counts:
        """The counts as of the last answer from Redis, without I/O.

        The state and generation are those of the last answer of any kind; the
        counters those of the last `counts_async`. While Redis is unavailable, the
        local state's counts (``degraded=True``).
        """
        local = self._local
        if local is not None:
            return degraded(local.counts())
        known = self._known
        state, generation = self._last
        if (known.state, known.generation) != (state, generation):
            known = known._replace(state=state, generation=generation)
        return known

    async def admit_async(self) -> tuple[int, float | None, Transition | None]:
        """See `stalwart.breaker.BreakerState.admit`."""
        generation = self._cached_generation()
        if generation >= 0:
            return generation, None, None
        if self._closed:
            peeked = await self._peek()
            if peeked is not None:
                return self._admission(peeked)
        return self._admission(await self._call(self._admit(), fast=True))

    async def record_async(
        self, generation: int, failed: bool, duration: float | None, failure_type: str | None
    ) -> Transition | None:
        """See `stalwart.breaker.BreakerState.record`."""
        answer = await self._call(self._record(generation, failed, duration, failure_type))
        return self._recorded(answer, generation, failed, duration, failure_type)

    async def record_success_async(self, generation: int) -> Transition | None:
        """See `stalwart.breaker.BreakerState.record_success`."""
        plain = self._plain_success(generation)
        if plain is not None:
            try:
                await self._client.execute_command(*plain)
            except FAILURES as exc:
                return self._failed(exc).record_success(generation)
            return None
        answer = await self._call(self._success(generation), fast=True)
        return self._succeeded(answer, generation)

    async def release_async(self, generation: int) -> None:
        """See `stalwart.breaker.BreakerState.release`."""
        self._released(await self._call(self._release(generation), fast=True), generation)

    async def change_async(self, operation: str) -> Transition:
        """See `stalwart.breaker.BreakerState.change`."""
        return self._changed(await self._call(self._change(operation)), operation)

    async def counts_async(self) -> Counts:
        """See `stalwart.breaker.BreakerState.counts` (one round trip)."""
        counts = self._counted(await self._call(self._counts(), counts=True))
        if not counts.degraded:
            self._known = counts
        return counts


class AsyncRedisStorage:
    """Breaker state in Redis for asyncio code, shared like `RedisStorage`'s.

    Takes the same arguments as `RedisStorage`, with a `redis.asyncio.Redis` (or
    `redis.asyncio.cluster.RedisCluster`) client. Breakers on it must be driven from
    async code (the decorator on ``async def``, `call_async`, ``async with``);
    `stats()` in sync code shows the state of the last answer, `stats_async()` reads
    Redis. redis.asyncio runs on asyncio only (not trio).

    Raises:
        ValueError: `prefix` or a duration is invalid (named in the message, with the
            value).
        TypeError: `client` is not an asyncio Redis client nor a URL, or `clock` is not
            callable.

    .. versionadded:: 0.1.0
    """

    __module__ = "stalwart.contrib.redis"
    __slots__ = ("_options", "client")

    def __init__(
        self,
        client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster | str | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        max_staleness: float | timedelta | None = None,
        socket_timeout: float | timedelta = DEFAULT_SOCKET_TIMEOUT,
        retry_interval: float | timedelta = DEFAULT_RETRY_INTERVAL,
        clock: Callable[[], float] | None = None,
    ) -> None:
        options = Options(
            client=client,
            prefix=prefix,
            max_staleness=max_staleness,
            socket_timeout=socket_timeout,
            retry_interval=retry_interval,
            clock=clock,
        )
        if client is None or isinstance(client, str):
            client = redis.asyncio.Redis.from_url(
                DEFAULT_URL if client is None else client,
                **options.client_kwargs(redis.asyncio.retry.Retry),
            )
        elif not isinstance(client, (redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster)):
            raise TypeError(
                f"client must be a redis.asyncio.Redis client or a URL, got {client!r}"
                " (use RedisStorage for sync clients)"
            )
        self._options = options
        self.client = client

    def __repr__(self) -> str:
        return f"<AsyncRedisStorage prefix={self.prefix!r}>"

    @property
    def prefix(self) -> str:
        """The first part of every key."""
        return self._options.prefix

    def bind(
        self, name: str, config: BreakerConfig, clock: Callable[[], float]
    ) -> AsyncRedisState:
        """Return the state of breaker `name` (no I/O: the keys are made on first use)."""
        return AsyncRedisState(self, name, config, clock)

    async def aclose(self) -> None:
        """Close the client if the storage made it (from a URL); else leave it be."""
        if self._options.owns_client:
            await self.client.aclose()
