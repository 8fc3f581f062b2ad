"""`RedisStorage` and `RedisState`: the shell for a blocking ``redis.Redis`` client.

Every decision is `SharedState`'s; this module only sends its commands.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import redis
import redis.cluster
from redis.exceptions import NoScriptError
from redis.retry import Retry

from ._options import (
    DEFAULT_PREFIX,
    DEFAULT_RETRY_INTERVAL,
    DEFAULT_SOCKET_TIMEOUT,
    DEFAULT_URL,
    Options,
)
from ._script import SCRIPT
from ._state import FAILURES, Answer, Command, SharedState

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import timedelta

    from ...breaker.machine import BreakerConfig, Transition
    from ...breaker.storage import Counts, MemoryState

T = TypeVar("T")


class RedisState(SharedState):
    """One breaker's state in Redis, through a blocking client (see `RedisStorage`).

    Implements `stalwart.breaker.BreakerState`. The ``_async`` twins run the blocking
    call in a worker thread (a cached admission needs no thread).

    .. versionadded:: 0.1.0
    """

    __module__ = "stalwart.contrib.redis"
    __slots__ = ("_client",)

    io = True  # async code must use the twins, which keep the round trip off the loop

    def __init__(
        self,
        storage: RedisStorage,
        name: str,
        config: BreakerConfig,
        clock: Callable[[], float],
    ) -> None:
        client = storage.client
        super().__init__(storage._options, client.get_encoder().encode, name, config, clock)  # noqa: SLF001
        self._client = client

    # -- I/O -----------------------------------------------------------------------

    def _execute(self, command: Command) -> Any:
        """One EVALSHA (after loading the script, if Redis does not have it)."""
        client = self._client
        try:
            return client.execute_command(*command)  # type: ignore[no-untyped-call]
        except NoScriptError:
            client.script_load(SCRIPT)
            return client.execute_command(*command)  # type: ignore[no-untyped-call]

    def _recheck(self) -> MemoryState | None:
        """While local: the local state, or None once Redis is back.

        Back means: it is time to try Redis again, and a "check" (the whole state read,
        checked and written back) was answered.
        """
        local = self._standing_in()
        if local is not None:
            return local
        outages = self._outages
        try:
            reply = self._read(self._execute(self._check()))
        except FAILURES as exc:
            return self._failed(exc)
        self._answered(reply, outages)
        return self._local

    def _call(self, command: Command, *, fast: bool = False, counts: bool = False) -> Answer:
        if self._local is not None:
            local = self._recheck()
            if local is not None:
                return local
        outages = self._outages
        try:
            reply = self._read(self._execute(command), fast=fast, counts=counts)
        except FAILURES as exc:
            return self._failed(exc)
        self._answered(reply, outages)
        return reply

    def _peek(self) -> int | MemoryState | None:
        """A closed breaker's generation (one HGET); None: ask the script.

        While Redis is unavailable, the local state instead.
        """
        if self._local is not None:
            local = self._recheck()
            if local is not None:
                return local
        outages = self._outages
        try:
            value = self._client.execute_command(*self._peek_command)  # type: ignore[no-untyped-call]
        except FAILURES as exc:
            return self._failed(exc)
        return self._peeked(value, outages)

    # -- `stalwart.breaker.BreakerState` ---------------------------------------------

    def admit(self) -> tuple[int, float | None, Transition | None]:
        """See `stalwart.breaker.BreakerState.admit`."""
        generation = self._cached_generation()
        if generation >= 0:
            return generation, None, None
        if self._closed:
            peeked = self._peek()
            if peeked is not None:
                return self._admission(peeked)
        return self._admission(self._call(self._admit(), fast=True))

    def record(
        self, generation: int, failed: bool, duration: float | None, failure_type: str | None
    ) -> Transition | None:
        """See `stalwart.breaker.BreakerState.record`."""
        answer = self._call(self._record(generation, failed, duration, failure_type))
        return self._recorded(answer, generation, failed, duration, failure_type)

    def record_success(self, generation: int) -> Transition | None:
        """See `stalwart.breaker.BreakerState.record_success`."""
        plain = self._plain_success(generation)
        if plain is not None:
            try:
                self._client.execute_command(*plain)  # type: ignore[no-untyped-call]
            except FAILURES as exc:
                return self._failed(exc).record_success(generation)
            return None
        return self._succeeded(self._call(self._success(generation), fast=True), generation)

    def release(self, generation: int) -> None:
        """See `stalwart.breaker.BreakerState.release`."""
        self._released(self._call(self._release(generation), fast=True), generation)

    def change(self, operation: str) -> Transition:
        """See `stalwart.breaker.BreakerState.change`."""
        return self._changed(self._call(self._change(operation)), operation)

    def counts(self) -> Counts:
        """See `stalwart.breaker.BreakerState.counts` (one round trip)."""
        return self._counted(self._call(self._counts(), counts=True))

    async def admit_async(self) -> tuple[int, float | None, Transition | None]:
        """`admit` in a worker thread (or at once, from the cache)."""
        generation = self._cached_generation()
        if generation >= 0:
            return generation, None, None
        return await _in_thread(self.admit)

    async def record_async(
        self, generation: int, failed: bool, duration: float | None, failure_type: str | None
    ) -> Transition | None:
        """`record` in a worker thread."""
        return await _in_thread(partial(self.record, generation, failed, duration, failure_type))

    async def record_success_async(self, generation: int) -> Transition | None:
        """`record_success` in a worker thread."""
        return await _in_thread(partial(self.record_success, generation))

    async def release_async(self, generation: int) -> None:
        """`release` in a worker thread, shielded from cancellation.

        The breaker releases a cancelled call's permit from inside the cancelled scope:
        unshielded, the hop to the thread would be cancelled and the permit lost.
        """
        from anyio import CancelScope  # noqa: PLC0415 - anyio only for async callers

        with CancelScope(shield=True):
            await _in_thread(partial(self.release, generation))

    async def change_async(self, operation: str) -> Transition:
        """`change` in a worker thread."""
        return await _in_thread(partial(self.change, operation))

    async def counts_async(self) -> Counts:
        """`counts` in a worker thread."""
        return await _in_thread(self.counts)


async def _in_thread(fn: Callable[[], T]) -> T:
    """Run `fn` in a worker thread of the running event loop (asyncio or trio)."""
    from anyio import to_thread  # noqa: PLC0415 - anyio only for async callers

    return await to_thread.run_sync(fn)


class RedisStorage:
    """Breaker state in Redis, shared by every process that uses the same prefix.

    For code that blocks; async code uses `AsyncRedisStorage` (or this one, through
    worker threads). Pass it as a breaker's or a registry's ``storage=``.

    Args:
        client: A `redis.Redis` (or `redis.cluster.RedisCluster`) client, used as it
            is configured; or a URL such as ``"redis://host:6379/0"``, from which the
            storage makes a client with `socket_timeout` and one immediate retry after
            a connection error (none after a timeout); ``None`` for `DEFAULT_URL`.
        prefix: The first part of every key (no ``{`` or ``}``). Breakers share
            state when they have the same name and prefix; use a prefix per
            application or environment.
        max_staleness: Let a breaker that Redis last reported closed or disabled admit
            calls without asking, for at most this many seconds (a number or a
            `timedelta`) after that answer. ``None`` (the default) asks on every call.
        socket_timeout: How long a client made from a URL waits to connect or for an
            answer before the breaker goes local (seconds, default 0.25).
        retry_interval: While Redis is unavailable, try it again at most this often
            (seconds, default 1; 0 tries on every call).
        clock: For tests: the time the script uses, instead of Redis server time
            (seconds on any scale, the same for every process sharing the breaker).

    Raises:
        ValueError: `prefix` or a duration is invalid (named in the message, with the
            value).
        TypeError: `client` is not a sync Redis client nor a URL, or `clock` is not
            callable.

    .. versionadded:: 0.1.0
    """

    __module__ = "stalwart.contrib.redis"
    __slots__ = ("_options", "client")

    def __init__(
        self,
        client: redis.Redis | redis.cluster.RedisCluster | str | None = None,
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
            client = redis.Redis.from_url(
                DEFAULT_URL if client is None else client, **options.client_kwargs(Retry)
            )
        elif not isinstance(client, (redis.Redis, redis.cluster.RedisCluster)):
            raise TypeError(
                f"client must be a redis.Redis client or a URL, got {client!r}"
                " (use AsyncRedisStorage for redis.asyncio clients)"
            )
        self._options = options
        self.client = client

    def __repr__(self) -> str:
        return f"<RedisStorage prefix={self.prefix!r}>"

    @property
    def prefix(self) -> str:
        """The first part of every key."""
        return self._options.prefix

    def bind(self, name: str, config: BreakerConfig, clock: Callable[[], float]) -> RedisState:
        """Return the state of breaker `name` (no I/O: the keys are made on first use).

        `clock` is the breaker's own clock: the local state that stands in while Redis
        is unavailable reads it.
        """
        return RedisState(self, name, config, clock)

    def close(self) -> None:
        """Close the client if the storage made it (from a URL); else leave it be."""
        if self._options.owns_client:
            self.client.close()
