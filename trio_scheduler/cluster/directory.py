"""This instance's nodes, written to the store and told to the other instances.

The store keeps one hash per node (the node mirror). The instance rewrites the hashes of
the nodes that changed as soon as its snapshot changes, and all of them at every instance
heartbeat, with a time to live: the nodes of an instance that died vanish with it, and a
store that lost its data (Redis restarted) is whole again within one heartbeat. Every
change is also sent to the other live instances at once, so a node that registers here is
a candidate there within milliseconds; the heartbeat's version number lets them notice a
message they missed and read the hashes instead.

A node whose socket closed stays in the store for a while as ``departed``, with the status
it had: if it reconnects to another instance (the agent reconnects after 5 s), that
instance gives it its standing back at once, as a reconnect to the same instance does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import structlog
import trio

from trio_scheduler.management.publisher import SnapshotPublisher
from trio_scheduler.management.snapshot import NodeStatus, NodeView, Pairing, Snapshot
from trio_scheduler.store.base import StoreUnavailable

log = structlog.get_logger(__name__)

RETRY_S = 1.0  # after a failed write (the store is down), before trying again
DEPARTED = "departed"


def wall_ms() -> int:
    return int(time.time() * 1000)


def node_fields(
    view: NodeView, instance_id: str, pairing: tuple[str, int] | None
) -> dict[str, str]:
    """What the store (and the other instances) know of one local node."""
    code, expires_ms = pairing if pairing is not None else ("", 0)
    return {
        "status": str(view.status),
        "epoch": str(view.epoch),
        "max_concurrent_jobs": str(view.max_concurrent_jobs),
        "serves": ",".join(sorted(view.pools)),  # the pools it is in while ready
        "services": ",".join(sorted(view.services)),
        "accept_public_jobs": "1" if view.accept_public_jobs else "0",
        "instance": instance_id,
        "pairing_code": code,
        "pairing_expires_ms": str(expires_ms),
    }


def departed_fields(fields: Mapping[str, str]) -> dict[str, str]:
    return {**fields, "status": DEPARTED, "previous_status": fields["status"]}


def standing(fields: Mapping[str, str] | None) -> NodeStatus | None:
    """The status a node had on the instance it was (or still is) connected to."""
    if not fields:
        return None
    status = fields.get("previous_status") if fields.get("status") == DEPARTED else fields.get(
        "status"
    )
    try:
        return NodeStatus(status)
    except ValueError:
        return None


def remote_node(
    node_id: str, fields: Mapping[str, str] | None, link: Callable[[str, str, int], Any],
    now: float, now_ms: int,
) -> tuple[NodeView, str | None, Pairing | None] | None:
    """A node of another instance from its fields: (view, pairing code, pairing), or None
    when it is gone or the fields do not make sense (a newer or older writer)."""
    if not fields or fields.get("status") == DEPARTED:
        return None
    try:
        instance = fields["instance"]
        epoch = int(fields["epoch"])
        view = NodeView(
            node_id=node_id,
            epoch=epoch,
            status=NodeStatus(fields["status"]),
            max_concurrent_jobs=int(fields["max_concurrent_jobs"]),
            pools=frozenset(p for p in fields["serves"].split(",") if p),
            services=frozenset(s for s in fields["services"].split(",") if s),
            accept_public_jobs=fields.get("accept_public_jobs", "1") == "1",
            link=link(instance, node_id, epoch),
            instance=instance,
        )
        code = fields.get("pairing_code") or None
        expires_ms = int(fields.get("pairing_expires_ms") or 0)
    except (KeyError, ValueError):
        return None
    pairing = None
    if code is not None and expires_ms > now_ms:
        pairing = Pairing(node_id, now + (expires_ms - now_ms) / 1000)
    return view, code, pairing


class NodeDirectory:
    def __init__(
        self,
        publisher: SnapshotPublisher,
        store: Any,
        instance_id: str,
        *,
        node_ttl_ms: int | None = None,
        departed_ttl_ms: int | None = None,
        tell: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self._publisher = publisher
        self._store = store
        self._instance_id = instance_id
        self._node_ttl_ms = node_ttl_ms
        self._departed_ttl_ms = departed_ttl_ms
        self._tell = tell  # sends a message to every other live instance
        self._written: dict[str, dict[str, str]] = {}  # node -> fields last written
        self.version = 0  # grows with every change told to the other instances
        self._wall_offset_ms: float | None = None  # wall clock ms - trio clock ms

    @property
    def node_ids(self) -> Iterable[str]:
        return self._written.keys()

    def local_fields(self, snapshot: Snapshot) -> dict[str, dict[str, str]]:
        if self._wall_offset_ms is None:  # fixed, so unchanged nodes keep equal fields
            self._wall_offset_ms = wall_ms() - trio.current_time() * 1000
        offset = self._wall_offset_ms
        codes = {
            p.node_id: (code, int(offset + p.expires_at * 1000))
            for code, p in snapshot.pairings.items()
        }
        return {
            node_id: node_fields(view, self._instance_id, codes.get(node_id))
            for node_id, view in snapshot.nodes.items()
            if view.local
        }

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the snapshot: write and tell what changed among the local nodes."""
        task_status.started()
        snapshot = None
        while True:
            snapshot = await self._publisher.next_change(snapshot)
            try:
                await self._write_changes(snapshot)
            except StoreUnavailable as exc:
                log.warning("node mirror failed; retrying", error=str(exc))
                await trio.sleep(RETRY_S)
                snapshot = None  # try again with whatever is current then

    async def _write_changes(self, snapshot: Snapshot) -> None:
        fields = self.local_fields(snapshot)
        changed = {n: f for n, f in fields.items() if self._written.get(n) != f}
        departed = {n: departed_fields(f) for n, f in self._written.items() if n not in fields}
        if not changed and not departed:
            return
        self.version += 1
        if self._tell is not None:
            self._tell({"kind": "nodes", "version": self.version,
                        "nodes": {**changed, **dict.fromkeys(departed)}})
        # Bookkeeping first: a failed write is repaired by the next heartbeat's rewrite.
        for node_id in departed:
            del self._written[node_id]
        self._written.update(changed)
        if changed:
            await self._store.put_nodes(changed, ttl_ms=self._node_ttl_ms)
        if departed:
            if self._departed_ttl_ms is None:
                for node_id in departed:
                    await self._store.remove_node(node_id)
            else:
                await self._store.put_nodes(departed, ttl_ms=self._departed_ttl_ms)

    async def rewrite(self) -> None:
        """Write every local node again, with a fresh time to live (each heartbeat)."""
        if self._written:
            await self._store.put_nodes(self._written, ttl_ms=self._node_ttl_ms)
