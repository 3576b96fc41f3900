"""The one storage interface the scheduler talks to.

Everything several instances must agree on goes through a :class:`Store`: node capacity
reservations (the only atomic step of dispatch) and the mirror of node state. Two backends
implement it with the same semantics — :class:`~trio_scheduler.store.memory.MemoryStore`
(embedded, one instance) and :class:`~trio_scheduler.store.redis.RedisStore` — and one
contract test suite runs against both.

Times are passed in by the caller as wall-clock milliseconds, never read inside the store,
so expiry is deterministic under test and identical on every backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import attrs


@attrs.frozen
class Reservation:
    """Outcome of one reservation attempt."""

    granted: bool
    in_use: int  # slots of the node in use after the attempt


class StoreUnavailable(Exception):
    """The backing store cannot be reached or did not answer within its call deadline;
    callers report SCHEDULER_DEPENDENCY_DOWN."""


class Store(Protocol):
    #: True when no call waits on anything outside this process (the embedded store):
    #: a session then makes its reservation itself instead of in a child task that
    #: protects it from a slow store. Absent means False.
    answers_at_once: bool

    async def reserve(
        self, node_id: str, member: str, capacity: int, now_ms: int, expires_at_ms: int
    ) -> Reservation:
        """Take a slot of ``node_id`` for ``member`` if fewer than ``capacity`` are in use.

        Entries whose expiry is before ``now_ms`` do not count. Reserving a member that
        already holds a slot refreshes it and is granted (idempotent).
        """

    async def release(self, node_id: str, member: str) -> bool:
        """Give the slot back; True when the member held one. Releasing twice is harmless."""

    def release_soon(self, node_id: str, member: str) -> None:
        """Give the slot back without waiting for the store's answer.

        What a session uses: it must never stall on a release. Calls are carried out in
        the order they were made, after any earlier call of this store, so a reservation
        whose caller gave up waiting is still undone after it ran. One that is lost (the
        store is down) expires by itself.
        """

    async def in_use(self, node_id: str, now_ms: int) -> int:
        """Slots of ``node_id`` held by unexpired reservations."""

    async def put_node(
        self, node_id: str, fields: Mapping[str, str], ttl_ms: int | None = None
    ) -> None:
        """Mirror the public state of a node (status, capacity, owner instance, …), kept
        ``ttl_ms`` if given (its instance rewrites it while it lives)."""

    async def put_nodes(
        self, nodes: Mapping[str, Mapping[str, str]], ttl_ms: int | None = None
    ) -> None:
        """:meth:`put_node` for several nodes, in one round trip."""

    async def remove_node(self, node_id: str) -> None:
        """Forget a node's mirrored state (its reservations expire by themselves)."""

    async def get_node(self, node_id: str) -> dict[str, str] | None:
        """Read back a mirrored node, or None."""

    async def ping(self) -> bool:
        """True when the store answers; used by ``GET /ready``."""


def reservation_member(job_id: str, attempt_id: int, instance_id: str | None = None) -> str:
    """The reservation set member of one attempt of one job, taken by ``instance_id``
    (operators and tests can tell whose slots a node's set holds)."""
    member = f"{job_id}:{attempt_id}"
    return f"{member}@{instance_id}" if instance_id else member
