"""Immutable views of node and pool state that any task may hold across awaits.

The owner task builds a new :class:`Snapshot` whenever something a reader cares about
changes; readers only ever swap one reference, so they see either the old or the new
state, never a mix, and need no lock.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from trio_scheduler.management.needs import Needs


class NodeStatus(enum.StrEnum):
    REGISTERING = "registering"
    READY = "ready"
    DEGRADED = "degraded"
    DRAINING = "draining"
    OFFLINE = "offline"


@attrs.frozen
class NodeView:
    """What dispatch may know about one node.

    Deliberately leaves out what changes on every heartbeat (timestamps, reported load):
    an unchanged node's heartbeat then changes no view and publishes nothing.
    """

    node_id: str
    epoch: int  # grows with every registration; stale cleanup compares it
    status: NodeStatus
    max_concurrent_jobs: int
    # Pools it belongs to while ready (pairs and ASR sources), whatever its status now.
    pools: frozenset[str]
    services: frozenset[str]  # service types it reports ready
    accept_public_jobs: bool
    # The handle used to reach the node; identity only, never compared.
    link: Any = attrs.field(eq=False, repr=False)
    # The instance the node is connected to, when that is another one (None: this one).
    instance: str | None = None

    @property
    def schedulable(self) -> bool:
        return self.status is NodeStatus.READY

    @property
    def local(self) -> bool:
        return self.instance is None


@attrs.frozen
class Pairing:
    """A live pairing code: sessions presenting it are pinned to ``node_id``."""

    node_id: str
    expires_at: float  # trio clock


def _freeze_pools(pools: Mapping[str, frozenset[str]]) -> Mapping[str, frozenset[str]]:
    return MappingProxyType(dict(pools))


@attrs.frozen
class Snapshot:
    version: int
    nodes: Mapping[str, NodeView] = attrs.field(converter=lambda m: MappingProxyType(dict(m)))
    # pool key (``src:tgt`` or ``src:*``) -> ids of the *ready* nodes in it
    pools: Mapping[str, frozenset[str]] = attrs.field(converter=_freeze_pools)
    # pairing code -> pairing
    pairings: Mapping[str, Pairing] = attrs.field(
        default=MappingProxyType({}), converter=lambda m: MappingProxyType(dict(m))
    )
    # Services every ready node has (the required ones): checking them per node is moot.
    ready_services: frozenset[str] = frozenset()

    @classmethod
    def empty(cls) -> Snapshot:
        return cls(version=0, nodes={}, pools={})

    def paired_node(self, code: str, now: float) -> str | None:
        """The node a pairing code pins to, if the code is live at ``now``."""
        pairing = self.pairings.get(code)
        if pairing is None or pairing.expires_at <= now or pairing.node_id not in self.nodes:
            return None
        return pairing.node_id

    def candidates(self, needs: Needs) -> frozenset[str]:
        """Ids of the ready nodes in every pool of ``needs`` with its services ready."""
        members: frozenset[str] | None = None
        for key in needs.pools:
            pool = self.pools.get(key)
            if not pool:
                return frozenset()
            members = pool if members is None else members & pool
        if not members:
            return frozenset()
        if needs.services <= self.ready_services:  # the default pipeline: no per-node check
            return members
        if any(not needs.services <= self.nodes[i].services for i in members):
            members = frozenset(i for i in members if needs.services <= self.nodes[i].services)
        return members
