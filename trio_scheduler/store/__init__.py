"""The shared store: one :class:`Store` interface, an embedded and a Redis backend.

:func:`open_store` is the one place that picks the backend from configuration: no Redis URL
means the embedded :class:`MemoryStore` (one instance, no dependency), a URL means
:class:`~trio_scheduler.store.redis.RedisStore` with its bridge task running, on one Redis or
on a Redis Cluster (``redis+cluster://``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from trio_scheduler.store.base import Reservation, Store, StoreUnavailable, reservation_member
from trio_scheduler.store.memory import MemoryStore

__all__ = [
    "MemoryStore",
    "Reservation",
    "Store",
    "StoreUnavailable",
    "open_store",
    "reservation_member",
]


@asynccontextmanager
async def open_store(
    redis_url: str | None,
    *,
    key_prefix: str = "ts:",
    socket_timeout_s: float = 5.0,
    call_timeout_s: float = 0.5,
    startup_wait_s: float | None = None,
) -> AsyncIterator[Store]:
    """Yield the configured store for the block's duration.

    ``redis_url=None`` gives a fresh :class:`MemoryStore` (``key_prefix`` and
    ``startup_wait_s`` do not apply); otherwise the store of
    :func:`~trio_scheduler.store.redis.open_redis_store`.
    """
    if redis_url is None:
        yield MemoryStore()
        return
    # Imported here so the embedded default never imports redis-py.
    from trio_scheduler.store.redis import open_redis_store

    async with open_redis_store(
        redis_url,
        key_prefix=key_prefix,
        socket_timeout_s=socket_timeout_s,
        call_timeout_s=call_timeout_s,
        startup_wait_s=startup_wait_s,
    ) as store:
        yield store
