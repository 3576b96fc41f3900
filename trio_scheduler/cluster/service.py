"""This instance among the others that share its Redis.

Three tasks, all at the edge: the inbox reader (every message another instance sends),
the node directory (this instance's nodes, written and told), and the heartbeat, which
announces this instance, rewrites its nodes, reads which instances are alive, reads the
nodes of one it has not heard from properly, and declares dead the ones that went silent.
Everything they learn reaches the rest of the server the usual way: node state as
commands to the management owner, node answers and losses through the dispatcher.
"""

from __future__ import annotations

from typing import Any

import structlog
import trio

from trio_scheduler.cluster.bus import Bus
from trio_scheduler.cluster.directory import NodeDirectory, remote_node, standing, wall_ms
from trio_scheduler.cluster.links import RemoteLink
from trio_scheduler.cluster.relay import Relays
from trio_scheduler.config import Config
from trio_scheduler.dispatch.dispatcher import Dispatcher, InvalidResult
from trio_scheduler.management.owner import NodeManager, RemoteNode, RemoteNodes
from trio_scheduler.management.publisher import SnapshotPublisher
from trio_scheduler.management.snapshot import NodeStatus
from trio_scheduler.protocol import codec
from trio_scheduler.protocol.codec import ProtocolError
from trio_scheduler.protocol.messages import NODE_INBOUND
from trio_scheduler.store import resp
from trio_scheduler.store.base import StoreUnavailable

log = structlog.get_logger(__name__)

WITHDRAW_TIMEOUT_S = 2.0  # a graceful stop tells the store it is gone, within this


class Cluster:
    def __init__(
        self,
        config: Config,
        store: Any,
        instance_id: str,
        *,
        publisher: SnapshotPublisher,
        manager: NodeManager,
        dispatcher: Dispatcher,
        describe: Any,
    ) -> None:
        cluster = config.cluster
        self._config = cluster
        self._store = store
        self.instance_id = instance_id
        self._publisher = publisher
        self._manager = manager
        self._dispatcher = dispatcher
        self._describe = describe  # () -> fields this instance announces (counts, address)
        self.bus = Bus(
            store, instance_id, max_len=cluster.inbox_max_len,
            address=resp.address_of(config.store.redis_url or ""),
            timeout_s=config.store.socket_timeout_s,
        )
        jobs = config.jobs
        self.relays = Relays(self.bus, (jobs.timeout_ms + jobs.reservation_margin_ms) / 1000)
        node_ttl_ms = int(max(cluster.instance_timeout_s, config.nodes.heartbeat_timeout_s) * 1000)
        self.directory = NodeDirectory(
            publisher, store, instance_id,
            node_ttl_ms=node_ttl_ms,
            departed_ttl_ms=int(config.nodes.heartbeat_timeout_s * 1000),
            tell=self._tell_peers,
        )
        self.peers: dict[str, dict[str, str]] = {}  # other live instances -> what they say
        self._applied: dict[str, int] = {}  # instance -> version of its nodes applied here
        self._store_reachable = True
        self.store_resets = 0  # times the store was found to have lost this instance
        self._beat_done = trio.Event()
        dispatcher.relays = self.relays
        manager.evict_remote = self._evict_remote

    # -- the tasks -----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.bus.run, self._on_message)
                await nursery.start(self.directory.run)
                await nursery.start(self._heartbeat)
                nursery.start_soon(self._retry_waiters)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True) as scope:
                scope.relative_deadline = WITHDRAW_TIMEOUT_S
                await self._withdraw()

    async def _heartbeat(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Beat once before reporting started (so peers are known), then forever."""
        await self._try_beat(first=True)
        task_status.started()
        while True:
            await trio.sleep(self._config.instance_heartbeat_s)
            await self._try_beat(first=False)

    async def _try_beat(self, *, first: bool) -> None:
        try:
            await self._beat(first)
        except StoreUnavailable as exc:
            if self._store_reachable:
                log.warning("instance heartbeat failed: store unreachable", error=str(exc))
                self._store_reachable = False
            return
        if not self._store_reachable:
            log.info("store reachable again")
            self._store_reachable = True
        self._beat_done.set()
        self._beat_done = trio.Event()

    async def beaten(self) -> None:
        """Wait for the next heartbeat to complete (operators' tools, tests)."""
        await self._beat_done.wait()

    async def _beat(self, first: bool) -> None:
        cluster = self._config
        ttl_ms = int((cluster.instance_timeout_s - cluster.instance_heartbeat_s) * 1000)
        fields = {
            **self._describe(),
            "node_ids": ",".join(self.directory.node_ids),
            "nodes_version": str(self.directory.version),
        }
        existed = await self._store.announce(
            self.instance_id, fields, ttl_ms, wall_ms() + ttl_ms
        )
        inbox_ttl_ms = int(cluster.instance_timeout_s * 2 * 1000)
        await self._store.open_inbox(self.instance_id, inbox_ttl_ms)
        if not existed and not first:
            log.warning("the store lost this instance's state (Redis restarted?); rewriting it")
            self.store_resets += 1
            await self._dispatcher.reassert_reservations()
        await self.directory.rewrite()
        live = await self._store.live_instances()
        await self._follow(live)

    async def _follow(self, live: dict[str, dict[str, str]]) -> None:
        others = {i: f for i, f in live.items() if i != self.instance_id}
        for instance in set(self.peers) - set(others):
            await self._instance_gone(instance)
        self.peers = others
        for instance, fields in others.items():
            try:
                version = int(fields.get("nodes_version", "0"))
            except ValueError:
                continue
            if version > self._applied.get(instance, -1):
                # A message missed, or an instance not heard from yet: read its nodes.
                await self._resync(instance, fields, version)

    async def _resync(self, instance: str, fields: dict[str, str], version: int) -> None:
        node_ids = [n for n in fields.get("node_ids", "").split(",") if n]
        found = await self._store.get_nodes(node_ids)
        nodes = {n: self._remote_node(n, found.get(n)) for n in node_ids}
        await self._manager.remote_nodes(
            RemoteNodes(instance, {n: r for n, r in nodes.items() if r is not None}, True)
        )
        self._applied[instance] = version

    async def _instance_gone(self, instance: str) -> None:
        log.warning("instance gone; its nodes leave the pools", instance=instance)
        self.peers.pop(instance, None)
        self._applied.pop(instance, None)
        await self._manager.remote_nodes(RemoteNodes(instance, {}, True))
        self._dispatcher.instance_lost(instance)
        self.relays.instance_lost(instance)
        # Its slots on our nodes come back now, not a job timeout later.
        local = [n for n, view in self._publisher.current.nodes.items() if view.local]
        try:
            freed = await self._store.release_instance(local, instance)
        except StoreUnavailable:
            return  # they expire by themselves
        if freed:
            log.info("slots of a dead instance given back", instance=instance, slots=freed)

    async def _retry_waiters(self) -> None:
        interval_s = self._config.wait_retry_ms / 1000
        while True:
            await trio.sleep(interval_s)
            self.relays.sweep(trio.current_time())
            if self._dispatcher.waiting and self.peers:
                self._dispatcher.poke_waiters()

    async def _withdraw(self) -> None:
        self._tell_peers({"kind": "gone"})
        try:
            await self._store.withdraw(self.instance_id)
        except StoreUnavailable as exc:
            log.warning("could not withdraw from the store; it expires", error=str(exc))

    # -- messages from the others --------------------------------------------------------

    async def _on_message(self, message: dict[str, Any]) -> None:
        try:
            await self._handle(message)
        except (KeyError, TypeError, ValueError, ProtocolError) as exc:
            # Another instance of a different version, or a bug: the message is dropped.
            log.warning("cluster message dropped", kind=message.get("kind"), error=str(exc))

    async def _handle(self, message: dict[str, Any]) -> None:
        sender = message["from"]
        match message["kind"]:
            case "assign":
                self._deliver_job(sender, message["node"], message["job"], message["frame"])
            case "to_node":
                node = self._local_node(message["node"])
                if node is not None:
                    node.link.send(message["frame"])
            case "cancel":
                self.relays.drop(message["job"])
                node = self._local_node(message["node"])
                if node is not None:
                    node.link.send(message["frame"])
            case "from_node":
                frame = codec.decode(message["frame"], NODE_INBOUND)
                self._dispatcher.route_from_node(message["node"], frame.job_id,
                                                 frame.session_id, frame)
            case "invalid_result":
                self._dispatcher.route_from_node(
                    message["node"], message["job"], message["session"],
                    InvalidResult(message["job"], message["session"], message["reason"]),
                )
            case "node_lost":
                self._dispatcher.remote_node_lost(message["job"], message["node"], sender)
            case "nodes":
                await self._on_nodes(sender, message)
            case "evict":
                await self._manager.evict(message["node"])
            case "drain":
                await self._manager.drain(message["node"], message.get("reason", "operator"))
            case "undrain":
                await self._manager.undrain(message["node"])
            case "gone":
                if sender in self.peers:
                    await self._instance_gone(sender)

    def _deliver_job(self, origin: str, node_id: str, job_id: str, frame: str) -> None:
        node = self._local_node(node_id)
        if node is not None:
            self.relays.add(job_id, origin, node_id, node.link, trio.current_time())
            if node.link.send(frame):
                return
            self.relays.node_lost(node_id, node.link)
            return
        # Not here (any more): the session's instance fails the attempt over.
        self.bus.post(origin, {"kind": "node_lost", "node": node_id, "job": job_id})

    async def _on_nodes(self, sender: str, message: dict[str, Any]) -> None:
        version = int(message["version"])
        if version <= self._applied.get(sender, -1):
            return  # older than what a read of the store already gave us
        nodes = {n: self._remote_node(n, f) for n, f in message["nodes"].items()}
        await self._manager.remote_nodes(RemoteNodes(sender, nodes, False))
        self._applied[sender] = version

    # -- helpers -------------------------------------------------------------------------

    def _remote_node(self, node_id: str, fields: dict[str, str] | None) -> RemoteNode | None:
        parsed = remote_node(node_id, fields, self._link, trio.current_time(), wall_ms())
        if parsed is None or parsed[0].instance == self.instance_id:
            return None
        view, code, pairing = parsed
        return RemoteNode(view, code, pairing)

    def _link(self, instance: str, node_id: str, epoch: int) -> RemoteLink:
        return RemoteLink(instance, node_id, epoch, self.bus)

    def _local_node(self, node_id: str):
        node = self._publisher.current.nodes.get(node_id)
        return node if node is not None and node.local else None

    def _tell_peers(self, message: dict[str, Any]) -> None:
        self.bus.broadcast(self.peers, message)

    def _evict_remote(self, instance: str, node_id: str) -> None:
        self.bus.post(instance, {"kind": "evict", "node": node_id})

    def forward(self, instance: str, kind: str, node_id: str, **fields: Any) -> None:
        """An operator's command for a node on another instance."""
        self.bus.post(instance, {"kind": kind, "node": node_id, **fields})

    async def standing_of(self, node_id: str) -> NodeStatus | None:
        """The status a node had on another instance (it is moving here), if any."""
        node = self._publisher.current.nodes.get(node_id)
        if node is not None:
            return None if node.local else node.status
        try:
            return standing(await self._store.get_node(node_id))
        except StoreUnavailable:
            return None

    def instances(self) -> dict[str, dict[str, str]]:
        """The live instances as last read (this one included, as it is now)."""
        return {self.instance_id: self._describe(), **self.peers}
