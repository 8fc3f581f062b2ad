"""Closing stalwart's Redis clients when an ASGI application shuts down.

.. code-block:: python

    from fastapi import FastAPI
    from stalwart.contrib.fastapi.lifespan import lifespan

    app = FastAPI(lifespan=lifespan)

`stalwart.contrib.fastapi.install` and `stalwart.contrib.fastapi.admin_router` do this
for you (``close_on_shutdown=True``); use `lifespan` or `aclose_resources` when you
compose the application's lifespan yourself.

What is closed: the Redis storages (`stalwart.contrib.redis.AsyncRedisStorage` and
`stalwart.contrib.redis.RedisStorage`) of the registry and of its breakers, each once.
A storage closes only a client it made itself (from a URL); a client you passed in is
yours to close. An asyncio client is closed on the loop that used it, which is why this
belongs in the lifespan: left open until the loop is gone, its connections can only be
dropped by the garbage collector, with warnings. A sync client is closed in a worker
thread, so the loop does not block on it.

Closing releases the connections; it does not break the storage. A breaker used after
shutdown (a test, a second lifespan) connects again on its next call.

Nothing here imports a web framework: the lifespan works on any ASGI application that
takes ``lifespan=`` (Starlette, FastAPI).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import logging
import sys
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from ...breaker.registry import BreakerRegistry
from ...breaker.registry import registry as default_registry

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ...breaker import Storage

__all__ = ["aclose_resources", "lifespan"]

logger = logging.getLogger("stalwart.contrib.fastapi")


def _redis_storages(registry: BreakerRegistry) -> list[Storage]:
    """The distinct Redis storages of `registry` and its breakers, the registry's first."""
    redis = sys.modules.get("stalwart.contrib.redis")
    if redis is None:  # no Redis storage can exist before the module is imported
        return []
    kinds = (redis.RedisStorage, redis.AsyncRedisStorage)
    found: dict[int, Storage] = {}
    for storage in (registry.storage, *(breaker.storage for breaker in registry)):
        if isinstance(storage, kinds):
            found.setdefault(id(storage), storage)
    return list(found.values())


async def _close(storage: Storage) -> None:
    aclose = getattr(storage, "aclose", None)
    if aclose is not None:
        await aclose()
        return
    from anyio import to_thread  # noqa: PLC0415 - anyio only for async callers

    await to_thread.run_sync(storage.close)  # type: ignore[attr-defined]


async def aclose_resources(registry: BreakerRegistry | None = None) -> None:
    """Close the Redis clients stalwart made for `registry`'s storages.

    Every distinct Redis storage of the registry (its own ``storage`` and each of its
    breakers') is closed once: an `~stalwart.contrib.redis.AsyncRedisStorage` with
    ``await storage.aclose()``, a `~stalwart.contrib.redis.RedisStorage` with
    ``storage.close()`` in a worker thread. Each closes only a client it made from a
    URL. An error is logged (WARNING, logger ``stalwart.contrib.fastapi``) and the
    others are still closed; nothing is raised. Calling it again is harmless.

    Args:
        registry: The registry whose storages to close; the default registry
            (`stalwart.registry`) when ``None``.

    Raises:
        TypeError: `registry` is not a `stalwart.BreakerRegistry`.

    .. versionadded:: 0.1.0
    """
    if registry is None:
        registry = default_registry
    elif not isinstance(registry, BreakerRegistry):
        raise TypeError(f"registry must be a stalwart BreakerRegistry or None, got {registry!r}")
    for storage in _redis_storages(registry):
        try:
            await _close(storage)
        except Exception:  # a storage that fails to close must not stop the others
            logger.warning(
                "could not close %r on shutdown",
                storage,
                exc_info=True,
                extra={"storage": repr(storage)},
            )


@asynccontextmanager
async def lifespan(app: object) -> AsyncIterator[None]:
    """An ASGI lifespan that closes the default registry's Redis clients on shutdown.

    Pass it as ``FastAPI(lifespan=lifespan)`` or ``Starlette(lifespan=lifespan)``, or
    enter it inside your own lifespan (``async with lifespan(app): yield``). It starts
    nothing; after the application stops serving it runs `aclose_resources`.

    Args:
        app: The application (unused: the ASGI lifespan protocol passes it).

    .. versionadded:: 0.1.0
    """
    del app
    yield
    await aclose_resources()
