"""A whole scheduler fed with in-memory sockets, for tests under ``MockClock``."""

from __future__ import annotations

from contextlib import asynccontextmanager

import attrs
import trio

from trio_scheduler.config import Config, with_overrides
from trio_scheduler.management.publisher import SnapshotPublisher
from trio_scheduler.management.snapshot import Snapshot
from trio_scheduler.server import Scheduler
from trio_scheduler.simulate.frames import heartbeat_frame, register_frame
from trio_scheduler.simulate.memory_socket import memory_websocket_pair
from trio_scheduler.simulate.peer import Peer
from trio_scheduler.store.memory import MemoryStore


#: How long a test waits for the scheduler's state to change (Trio clock seconds: virtual
#: under MockClock, where a stuck wait ends at once; real on real sockets). A wait for a
#: change behind a longer scheduler timer passes its own ``within``.
STATE_CHANGE_BOUND_S = 10


async def snapshot_where(
    publisher: SnapshotPublisher, predicate, *, within: float = STATE_CHANGE_BOUND_S
) -> Snapshot:
    """The first published snapshot satisfying ``predicate``; TooSlowError after ``within``."""
    with trio.fail_after(within):
        return await publisher.wait_until(predicate)


def node_status_is(node_id: str, status: str | None):
    """A snapshot predicate: the node has ``status`` (None: the node is gone)."""

    def reached(snapshot: Snapshot) -> bool:
        view = snapshot.nodes.get(node_id)
        if status is None:
            return view is None
        return view is not None and str(view.status) == status

    return reached


@attrs.define
class MemoryHarness:
    scheduler: Scheduler
    nursery: trio.Nursery  # where the socket tasks run

    @classmethod
    async def start(cls, nursery: trio.Nursery, store=None, **sections) -> MemoryHarness:
        """Start a scheduler whose background tasks outlive its sockets, as in ``serve``:
        when the test ends, the socket tasks are cancelled and clean up first."""
        config = with_overrides(Config(), **sections) if sections else Config()
        scheduler = Scheduler.build(config, store or MemoryStore())
        sockets: trio.Nursery = await nursery.start(_run_ordered, scheduler)
        return cls(scheduler, sockets)

    def _connect(self, handler) -> Peer:
        server_ws, client_ws = memory_websocket_pair()

        async def serve_socket() -> None:
            try:
                await handler(server_ws)
            finally:
                await server_ws.aclose()

        self.nursery.start_soon(serve_socket)
        return Peer(client_ws)

    def connector(self):
        """``connect(kind)`` for :func:`trio_scheduler.simulate.replay.replay`."""

        @asynccontextmanager
        async def open_peer(kind: str):
            peer = self.session() if kind == "session" else self.node()
            try:
                yield peer
            finally:
                await peer.ws.aclose()

        return open_peer

    def session(self) -> Peer:
        return self._connect(self.scheduler.session_socket)

    def node(self) -> Peer:
        return self._connect(self.scheduler.node_socket)

    async def ready_node(self, languages=None, **register) -> tuple[Peer, str]:
        node = self.node()
        await node.send(register_frame(languages, **register))
        ack = await node.recv()
        assert ack["type"] == "node_register_ack", ack
        node_id = ack["node_id"]
        await node.send(heartbeat_frame(node_id, languages))
        await self.wait_node_status(node_id, "ready")
        return node, node_id

    async def wait_node_status(
        self, node_id: str, status: str | None, *, within: float = STATE_CHANGE_BOUND_S
    ) -> Snapshot:
        """The first snapshot where the node has ``status`` (None: where it is gone);
        ``within`` must cover any scheduler timer the change waits for."""
        return await snapshot_where(
            self.scheduler.publisher, node_status_is(node_id, status), within=within
        )

    async def session_id_for(self, client: Peer, init: dict) -> str:
        await client.send(init)
        ack = await client.recv()
        assert ack["type"] == "session_init_ack", ack
        return ack["session_id"]


async def _run_ordered(scheduler: Scheduler, *, task_status) -> None:
    async with scheduler.background_tasks(), trio.open_nursery() as sockets:
        task_status.started(sockets)
        await trio.sleep_forever()
