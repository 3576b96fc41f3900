"""Embedded in-process store: the default when no Redis URL is configured.

Pure Python with the exact semantics of the Redis scripts for a single instance. It never
awaits anything real, so each call is atomic with respect to other Trio tasks, which is the
same guarantee a Lua script gives on Redis.
"""

from __future__ import annotations

from collections.abc import Mapping

import trio

from trio_scheduler.store.base import Reservation


class MemoryStore:
    answers_at_once = True  # nothing outside the process: see Store.answers_at_once

    def __init__(self) -> None:
        # node_id -> {member: expires_at_ms}
        self._reservations: dict[str, dict[str, int]] = {}
        self._nodes: dict[str, dict[str, str]] = {}

    async def reserve(
        self, node_id: str, member: str, capacity: int, now_ms: int, expires_at_ms: int
    ) -> Reservation:
        await trio.lowlevel.checkpoint()
        held = self._reservations.setdefault(node_id, {})
        self._drop_expired(held, now_ms)
        if member in held:
            held[member] = expires_at_ms
            return Reservation(True, len(held))
        if len(held) >= capacity:
            return Reservation(False, len(held))
        held[member] = expires_at_ms
        return Reservation(True, len(held))

    async def release(self, node_id: str, member: str) -> bool:
        await trio.lowlevel.checkpoint()
        return self._release(node_id, member)

    def release_soon(self, node_id: str, member: str) -> None:
        self._release(node_id, member)

    def _release(self, node_id: str, member: str) -> bool:
        held = self._reservations.get(node_id)
        if held is None or member not in held:
            return False
        del held[member]
        if not held:
            del self._reservations[node_id]
        return True

    async def in_use(self, node_id: str, now_ms: int) -> int:
        await trio.lowlevel.checkpoint()
        held = self._reservations.get(node_id, {})
        return sum(1 for expiry in held.values() if expiry > now_ms)

    async def put_node(
        self, node_id: str, fields: Mapping[str, str], ttl_ms: int | None = None
    ) -> None:
        await trio.lowlevel.checkpoint()
        self._nodes.setdefault(node_id, {}).update(fields)

    async def put_nodes(
        self, nodes: Mapping[str, Mapping[str, str]], ttl_ms: int | None = None
    ) -> None:
        """Several nodes at once. One instance alone reads no mirror, so nothing expires."""
        await trio.lowlevel.checkpoint()
        for node_id, fields in nodes.items():
            self._nodes.setdefault(node_id, {}).update(fields)

    async def remove_node(self, node_id: str) -> None:
        await trio.lowlevel.checkpoint()
        self._nodes.pop(node_id, None)

    async def get_node(self, node_id: str) -> dict[str, str] | None:
        await trio.lowlevel.checkpoint()
        node = self._nodes.get(node_id)
        return dict(node) if node is not None else None

    async def ping(self) -> bool:
        await trio.lowlevel.checkpoint()
        return True

    @staticmethod
    def _drop_expired(held: dict[str, int], now_ms: int) -> None:
        for member in [m for m, expiry in held.items() if expiry <= now_ms]:
            del held[member]
