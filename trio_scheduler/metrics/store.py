"""Store calls timed and their failures counted, by operation.

A thin wrapper with the :class:`~trio_scheduler.store.base.Store` interface: the rest of
the server does not know it is measured. Durations are wall-clock (``perf_counter``): a
store call waits on the network or a worker thread, not on Trio's clock.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram

from trio_scheduler.store.base import Reservation, Store, StoreUnavailable

STORE_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 1.0, 5.0)
OPERATIONS = ("reserve", "release", "in_use", "put_node", "remove_node", "get_node", "ping")

T = TypeVar("T")


class MeasuredStore:
    def __init__(self, store: Store, registry: CollectorRegistry) -> None:
        self.inner = store
        self.answers_at_once = getattr(store, "answers_at_once", False)
        duration = Histogram(
            "trio_scheduler_store_call_duration_seconds",
            "Duration of calls to the store, by operation.",
            ["operation"], buckets=STORE_BUCKETS_S, registry=registry,
        )
        errors = Counter(
            "trio_scheduler_store_errors",
            "Store calls that failed (store unreachable), by operation.",
            ["operation"], registry=registry,
        )
        self._releases_queued = Counter(
            "trio_scheduler_store_releases_queued",
            "Releases handed to the store without waiting for its answer (release_soon).",
            registry=registry,
        )
        # Children bound once: the hot path does no label lookup.
        self._duration = {op: duration.labels(op) for op in OPERATIONS}
        self._errors = {op: errors.labels(op) for op in OPERATIONS}

    async def _measure(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter()
        try:
            return await call()
        except StoreUnavailable:
            self._errors[operation].inc()
            raise
        finally:
            self._duration[operation].observe(time.perf_counter() - started)

    async def reserve(
        self, node_id: str, member: str, capacity: int, now_ms: int, expires_at_ms: int
    ) -> Reservation:
        return await self._measure(
            "reserve",
            lambda: self.inner.reserve(node_id, member, capacity, now_ms, expires_at_ms),
        )

    async def release(self, node_id: str, member: str) -> bool:
        return await self._measure("release", lambda: self.inner.release(node_id, member))

    def release_soon(self, node_id: str, member: str) -> None:
        self._releases_queued.inc()
        self.inner.release_soon(node_id, member)

    async def in_use(self, node_id: str, now_ms: int) -> int:
        return await self._measure("in_use", lambda: self.inner.in_use(node_id, now_ms))

    async def put_node(
        self, node_id: str, fields: Mapping[str, str], ttl_ms: int | None = None
    ) -> None:
        await self._measure("put_node", lambda: self.inner.put_node(node_id, fields, ttl_ms))

    async def put_nodes(
        self, nodes: Mapping[str, Mapping[str, str]], ttl_ms: int | None = None
    ) -> None:
        await self._measure("put_node", lambda: self.inner.put_nodes(nodes, ttl_ms))

    async def remove_node(self, node_id: str) -> None:
        await self._measure("remove_node", lambda: self.inner.remove_node(node_id))

    async def get_node(self, node_id: str) -> dict[str, str] | None:
        return await self._measure("get_node", lambda: self.inner.get_node(node_id))

    async def ping(self) -> bool:
        answered = await self._measure("ping", self.inner.ping)
        if not answered:
            self._errors["ping"].inc()
        return answered

    def __getattr__(self, name: str) -> Any:
        # Anything beyond the interface (a backend's own helpers) goes straight through.
        return getattr(self.inner, name)
