"""The management owner: the only task that changes node and pool state.

Connection tasks and the admin API send it commands over a channel; it applies them with
the pure rules of :mod:`node_state` and :mod:`pools` to its private records and publishes
a new immutable snapshot when, and only when, something readers can see has changed. A
heartbeat of a healthy, unchanged node therefore costs a dict lookup and a few
comparisons, whatever the number of nodes.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections.abc import Callable
from typing import Any

import attrs
import structlog
import trio

from trio_scheduler.channels import take_queued
from trio_scheduler.management import node_state
from trio_scheduler.management.node_state import Capabilities, HealthRules
from trio_scheduler.management.needs import SELECTION_SERVICES
from trio_scheduler.management.pools import move_node
from trio_scheduler.management.publisher import SnapshotPublisher
from trio_scheduler.management.snapshot import NodeStatus, NodeView, Pairing, Snapshot
from trio_scheduler.protocol import codec
from trio_scheduler.protocol.errors import CloseCode
from trio_scheduler.protocol.messages import (
    NodeControl,
    NodeHeartbeat,
    NodeRegister,
    ResourceUsage,
)

log = structlog.get_logger(__name__)


class Reply:
    """A one-shot answer from the owner to the task that sent a command."""

    def __init__(self) -> None:
        self._event = trio.Event()
        self._value: Any = None

    def set(self, value: Any) -> None:
        self._value = value
        self._event.set()

    async def wait(self) -> Any:
        await self._event.wait()
        return self._value


@attrs.frozen
class Register:
    node_id: str
    message: NodeRegister
    link: Any
    reply: Reply
    # The status the node had on another instance it just left (None: unknown).
    standing: NodeStatus | None = None


@attrs.frozen
class Registered:
    epoch: int
    pairing_code: str


@attrs.frozen
class Heartbeat:
    node_id: str
    epoch: int
    message: NodeHeartbeat


@attrs.frozen
class Disconnect:
    node_id: str
    epoch: int
    reply: Reply


@attrs.frozen
class Drain:
    node_id: str
    reason: str
    reply: Reply


@attrs.frozen
class Undrain:
    node_id: str
    reply: Reply


@attrs.frozen
class RemoteNode:
    """A node of another instance, with its live pairing code if it has one."""

    view: NodeView
    pairing_code: str | None = None
    pairing: Pairing | None = None


@attrs.frozen
class RemoteNodes:
    """What another instance says of its nodes, by node id (None: gone). With
    ``complete``, the nodes it does not list are gone too."""

    instance: str
    nodes: dict[str, RemoteNode | None]
    complete: bool


@attrs.frozen
class Evict:
    """Another instance took the node over: close its socket here."""

    node_id: str


@attrs.frozen
class Sweep:
    pass


@attrs.frozen
class ListNodes:
    reply: Reply


Command = (
    Register | Heartbeat | Disconnect | Drain | Undrain | RemoteNodes | Evict | Sweep
    | ListNodes
)


def _log_status(
    node_id: str, old: NodeStatus | None, new: NodeStatus, reason: str, *,
    level: int = logging.INFO, **fields: Any,
) -> None:
    """Every change of a node's status is one line: from what, to what, and why."""
    log.log(level, "node status", node_id=node_id, old=str(old) if old is not None else None,
            new=str(new), reason=reason, **fields)


@attrs.define
class NodeRecord:
    """The owner's private, mutable state of one node."""

    node_id: str
    epoch: int
    link: Any
    capabilities: Capabilities
    status: NodeStatus
    max_concurrent_jobs: int
    accept_public_jobs: bool
    registered_at: float
    last_heartbeat_at: float
    pairing_code: str
    usage: ResourceUsage | None = None

    def view(self) -> NodeView:
        return NodeView(
            node_id=self.node_id,
            epoch=self.epoch,
            status=self.status,
            max_concurrent_jobs=self.max_concurrent_jobs,
            pools=self.capabilities.pools,
            # Only what selection reads: other types flapping must not republish.
            services=self.capabilities.services_ready & SELECTION_SERVICES,
            accept_public_jobs=self.accept_public_jobs,
            link=self.link,
        )


@attrs.frozen
class NodeSummary:
    """One row of an operator's node listing."""

    node_id: str
    status: str
    pairs: list[str]
    services: list[str]
    pools: list[str]
    max_concurrent_jobs: int
    reported_running_jobs: int | None
    last_heartbeat_age_s: float | None
    usage: dict[str, Any] | None
    instance: str | None = None  # the instance it is connected to, if another one


class NodeManager:
    """Owner task plus the calls connection tasks use to reach it."""

    def __init__(
        self,
        publisher: SnapshotPublisher,
        *,
        default_max_concurrent_jobs: int,
        heartbeat_interval_s: float,
        heartbeat_timeout_s: float,
        health: HealthRules,
        pairing_code_ttl_s: float = 600.0,
        queue_size: int = 1024,
        evict_remote: Callable[[str, str], None] | None = None,
    ) -> None:
        self._publisher = publisher
        self._default_capacity = default_max_concurrent_jobs
        self._sweep_interval = heartbeat_interval_s
        self._timeout = heartbeat_timeout_s
        self._health = health
        self._pairing_ttl = pairing_code_ttl_s
        self._send, self._receive = trio.open_memory_channel[Command](queue_size)
        self._records: dict[str, NodeRecord] = {}
        # Nodes whose socket closed recently, kept for heartbeat_timeout_s: a reconnect
        # within that window gets its status back at once instead of starting over.
        self._departed: dict[str, tuple[NodeRecord, float]] = {}
        self._views: dict[str, NodeView] = {}
        self._pools: dict[str, frozenset[str]] = {}
        self._pairings: dict[str, Pairing] = {}
        # Nodes of other instances, as they report them; a local node of the same id wins.
        self._remote: dict[str, RemoteNode] = {}
        # Asked to close a node's socket on another instance (a takeover): (instance, node).
        self.evict_remote = evict_remote
        self._epochs = itertools.count(1)
        self._version = 0
        self._dirty = False
        self.heartbeats_applied = 0

    # -- calls made by connection tasks and the admin API -------------------------------

    async def register(
        self, node_id: str, message: NodeRegister, link: Any,
        standing: NodeStatus | None = None,
    ) -> Registered:
        """Apply a registration; returns once readers can see it. ``standing``: the status
        the node had on another instance it has just left."""
        reply = Reply()
        await self._send.send(Register(node_id, message, link, reply, standing))
        return await reply.wait()

    async def remote_nodes(self, update: RemoteNodes) -> None:
        """Take in what another instance says of its nodes."""
        await self._send.send(update)

    async def evict(self, node_id: str) -> None:
        """The node registered on another instance: close its socket here (4001)."""
        await self._send.send(Evict(node_id))

    async def heartbeat(self, node_id: str, epoch: int, message: NodeHeartbeat) -> None:
        await self._send.send(Heartbeat(node_id, epoch, message))

    async def disconnect(self, node_id: str, epoch: int) -> bool:
        """Remove the node if ``epoch`` is still its registration.

        Returns False when a newer registration took the id over: the caller's cleanup
        must then leave everything about the node alone.
        """
        reply = Reply()
        await self._send.send(Disconnect(node_id, epoch, reply))
        return await reply.wait()

    async def drain(self, node_id: str, reason: str = "operator request") -> bool:
        """Stop giving the node new jobs; it finishes its running ones. False if unknown."""
        reply = Reply()
        await self._send.send(Drain(node_id, reason, reply))
        return await reply.wait()

    async def undrain(self, node_id: str) -> NodeStatus | None:
        """Let a draining node take jobs again; its status is then what its health says.

        Returns the node's status afterwards, None if no live node has that id.
        """
        reply = Reply()
        await self._send.send(Undrain(node_id, reply))
        return await reply.wait()

    async def list_nodes(self) -> list[NodeSummary]:
        reply = Reply()
        await self._send.send(ListNodes(reply))
        return await reply.wait()

    def retained(self) -> dict[str, int]:
        """Sizes of the owner's records (for the metrics: nothing may grow without bound)."""
        return {
            "nodes_registered": len(self._records),
            "nodes_departed": len(self._departed),
            "nodes_remote": len(self._remote),
            "pairing_codes": len(self._pairings),
        }

    # -- the owner task ----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sweeper)
            task_status.started()
            async for command in self._receive:
                self._apply(command)
                # Coalesce a burst into one publication.
                for command in take_queued(self._receive):
                    self._apply(command)
                self._publish_if_dirty()

    async def _sweeper(self) -> None:
        while True:
            await trio.sleep(self._sweep_interval)
            await self._send.send(Sweep())

    def _apply(self, command: Command) -> None:
        now = trio.current_time()
        match command:
            case Register():
                command.reply.set(self._register(command, now))
                self._publish_if_dirty()  # the caller acks only once readers see it
            case Heartbeat():
                self._heartbeat(command, now)
            case Disconnect():
                command.reply.set(self._disconnect(command, now))
                self._publish_if_dirty()
            case Drain():
                command.reply.set(self._drain(command))
                self._publish_if_dirty()
            case Undrain():
                command.reply.set(self._undrain(command))
                self._publish_if_dirty()
            case RemoteNodes():
                self._remote_update(command)
            case Evict():
                record = self._records.get(command.node_id)
                if record is not None:
                    log.info("node moved to another instance; closing its socket here",
                             node_id=command.node_id)
                    record.link.close_soon(CloseCode.REPLACED, "registered on another instance")
            case Sweep():
                self._sweep(now)
            case ListNodes():
                command.reply.set(self._summaries(now))

    def _register(self, command: Register, now: float) -> Registered:
        message = command.message
        epoch = next(self._epochs)
        previous = self._records.get(command.node_id)
        was = previous.status if previous is not None else None
        if previous is not None and previous.link is not command.link:
            log.info("node re-registered; closing its older socket", node_id=command.node_id)
            previous.link.close_soon(CloseCode.REPLACED, "replaced by a newer registration")
        if previous is None:
            departed = self._departed.pop(command.node_id, None)
            previous = departed[0] if departed else None
            was = NodeStatus.OFFLINE if departed else None
        if previous is not None:
            self._pairings.pop(previous.pairing_code, None)
        capabilities = Capabilities.from_register(message)
        status = NodeStatus.REGISTERING
        usage = None
        remote = self._remote.get(command.node_id)
        elsewhere = remote.view if remote is not None else None
        if previous is None and elsewhere is not None and self.evict_remote is not None:
            # The node moved here from another instance: a takeover, as on one instance.
            log.info("node moved here; closing its socket on its former instance",
                     node_id=command.node_id, instance=elsewhere.instance)
            self.evict_remote(elsewhere.instance, command.node_id)
        standing = command.standing or (elsewhere.status if elsewhere is not None else None)
        if previous is None and standing is not None:
            status = node_state.status_after_move(standing, capabilities, self._health)
        if previous is not None and previous.usage is not None:
            # A reconnect keeps the node's standing (and so its pools) when what we last
            # knew of its load is still healthy with the capabilities it registers now.
            usage = previous.usage
            healthy = node_state.is_healthy(capabilities, usage, self._health)
            status = node_state.status_after_heartbeat(previous.status, healthy)
            if previous.status is NodeStatus.DRAINING:
                status = NodeStatus.DRAINING
        code = self._new_pairing_code()
        self._pairings[code] = Pairing(command.node_id, now + self._pairing_ttl)
        self._records[command.node_id] = NodeRecord(
            node_id=command.node_id,
            epoch=epoch,
            link=command.link,
            capabilities=capabilities,
            status=status,
            max_concurrent_jobs=message.max_concurrent_jobs or self._default_capacity,
            accept_public_jobs=message.accept_public_jobs,
            registered_at=now,
            last_heartbeat_at=now,
            pairing_code=code,
            usage=usage,
        )
        _log_status(command.node_id, was, status, "registered", epoch=epoch)
        self._refresh(command.node_id)
        self._dirty = True  # the pairing table changed
        return Registered(epoch, code)

    def _new_pairing_code(self) -> str:
        while True:
            code = f"{secrets.randbelow(1_000_000):06d}"
            if code not in self._pairings:
                return code

    def _heartbeat(self, command: Heartbeat, now: float) -> None:
        record = self._records.get(command.node_id)
        if record is None or record.epoch != command.epoch:
            return  # a heartbeat from a socket that lost its registration
        self.heartbeats_applied += 1
        message = command.message
        record.last_heartbeat_at = now
        record.usage = message.resource_usage
        if message.capability_by_type is not None or message.language_capabilities is not None:
            record.capabilities = record.capabilities.from_heartbeat(message)
        problem = node_state.health_problem(
            record.capabilities, message.resource_usage, self._health
        )
        status = node_state.status_after_heartbeat(record.status, problem is None)
        if status is not record.status:
            _log_status(record.node_id, record.status, status, problem or "healthy heartbeat")
            record.status = status
        self._refresh(command.node_id)

    def _disconnect(self, command: Disconnect, now: float) -> bool:
        record = self._records.get(command.node_id)
        if record is None or record.epoch != command.epoch:
            return False
        del self._records[command.node_id]
        self._pairings.pop(record.pairing_code, None)
        if record.status is not NodeStatus.OFFLINE:
            _log_status(record.node_id, record.status, NodeStatus.OFFLINE, "socket closed")
            self._departed[command.node_id] = (record, now)
        self._refresh(command.node_id)
        self._dirty = True
        return True

    def _drain(self, command: Drain) -> bool:
        record = self._records.get(command.node_id)
        if record is None or record.status is NodeStatus.OFFLINE:
            return False
        if record.status is not NodeStatus.DRAINING:
            _log_status(record.node_id, record.status, NodeStatus.DRAINING, command.reason)
            record.status = NodeStatus.DRAINING
            record.link.send(codec.encode(NodeControl("drain", command.reason)))
            self._refresh(command.node_id)
        return True

    def _undrain(self, command: Undrain) -> NodeStatus | None:
        record = self._records.get(command.node_id)
        if record is None or record.status is NodeStatus.OFFLINE:
            return None
        if record.status is NodeStatus.DRAINING:
            record.status = node_state.status_after_undrain(
                record.capabilities, record.usage, self._health
            )
            log.info("node undrained", node_id=record.node_id, status=str(record.status))
            self._refresh(command.node_id)
        return record.status

    def _sweep(self, now: float) -> None:
        for record in list(self._records.values()):
            silent_for = now - record.last_heartbeat_at
            if record.status is not NodeStatus.OFFLINE and silent_for > self._timeout:
                _log_status(record.node_id, record.status, NodeStatus.OFFLINE,
                            f"no heartbeat for {silent_for:.0f} s", level=logging.WARNING)
                record.status = NodeStatus.OFFLINE
                self._refresh(record.node_id)
                record.link.close_soon(CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout")
        for node_id, (_, departed_at) in list(self._departed.items()):
            if now - departed_at > self._timeout:
                del self._departed[node_id]
        for code, pairing in list(self._pairings.items()):
            if pairing.expires_at <= now:
                del self._pairings[code]
                self._dirty = True

    def _remote_update(self, update: RemoteNodes) -> None:
        held = {n for n, r in self._remote.items() if r.view.instance == update.instance}
        gone = held - update.nodes.keys() if update.complete else set()
        gone |= {n for n, r in update.nodes.items() if r is None and n in held}
        for node_id in gone:
            node = self._remote.pop(node_id)
            self._dirty |= node.pairing is not None
            self._refresh(node_id)
        for node_id, node in update.nodes.items():
            if node is None:
                continue
            previous = self._remote.get(node_id)
            self._remote[node_id] = node
            if previous is None or (previous.pairing_code, previous.pairing) != (
                node.pairing_code, node.pairing
            ):
                self._dirty = True
            self._refresh(node_id)

    def _refresh(self, node_id: str) -> None:
        """Recompute one node's view and pools; mark dirty only if something changed."""
        record = self._records.get(node_id)
        old = self._views.get(node_id)
        if record is not None:
            new = record.view()
        else:
            remote = self._remote.get(node_id)
            new = remote.view if remote is not None else None
        if old == new and (old is None or old.link == new.link):
            return
        old_pools = old.pools if old is not None and old.schedulable else frozenset()
        new_pools = new.pools if new is not None and new.schedulable else frozenset()
        move_node(self._pools, node_id, old_pools, new_pools)
        if new is None:
            del self._views[node_id]
        else:
            self._views[node_id] = new
        self._dirty = True

    def _publish_if_dirty(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        self._version += 1
        pairings = dict(self._pairings)
        for remote in self._remote.values():
            if remote.pairing_code is not None and remote.pairing is not None:
                pairings.setdefault(remote.pairing_code, remote.pairing)  # local wins a clash
        self._publisher.publish(
            Snapshot(
                self._version,
                self._views,
                self._pools,
                pairings,
                ready_services=self._health.required_services & SELECTION_SERVICES,
            )
        )

    def _summaries(self, now: float) -> list[NodeSummary]:
        return [
            NodeSummary(
                node_id=r.node_id,
                status=str(r.status),
                pairs=sorted(r.capabilities.pairs),
                services=sorted(r.capabilities.services_ready),
                pools=sorted(p for p, members in self._pools.items() if r.node_id in members),
                max_concurrent_jobs=r.max_concurrent_jobs,
                reported_running_jobs=r.usage.running_jobs if r.usage else None,
                last_heartbeat_age_s=round(now - r.last_heartbeat_at, 3),
                usage=codec.converter.unstructure(r.usage) if r.usage else None,
            )
            for r in self._records.values()
        ] + [
            NodeSummary(
                node_id=node_id,
                status=str(remote.view.status),
                pairs=sorted(p for p in remote.view.pools if not p.endswith(":*")),
                services=sorted(remote.view.services),
                pools=sorted(p for p, members in self._pools.items() if node_id in members),
                max_concurrent_jobs=remote.view.max_concurrent_jobs,
                reported_running_jobs=None,
                last_heartbeat_age_s=None,
                usage=None,
                instance=remote.view.instance,
            )
            for node_id, remote in self._remote.items()
            if node_id not in self._records
        ]
