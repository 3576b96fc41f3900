"""The current snapshot, and the task that mirrors it to the store.

``publish`` is synchronous: the moment the owner has built a snapshot, every reader sees
it. Mirroring to the store happens afterwards in its own task, coalescing bursts: only the
latest snapshot is written, and only the nodes that differ from what was last written.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
import trio

from trio_scheduler.management.snapshot import NodeView, Snapshot
from trio_scheduler.store.base import Store, StoreUnavailable

log = structlog.get_logger(__name__)

MIRROR_RETRY_S = 1.0  # pause before retrying a failed mirror write

Listener = Callable[[Snapshot, Snapshot], None]


class SnapshotPublisher:
    def __init__(self) -> None:
        self._current = Snapshot.empty()
        self._listeners: list[Listener] = []
        self._changed = trio.Event()  # for the store mirror
        self._published = trio.Event()  # for anyone waiting on a condition

    @property
    def current(self) -> Snapshot:
        return self._current

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(old, new)`` synchronously on every publication."""
        self._listeners.append(listener)

    def publish(self, snapshot: Snapshot) -> None:
        old, self._current = self._current, snapshot
        for listener in self._listeners:
            listener(old, snapshot)
        self._changed.set()
        self._published.set()
        self._published = trio.Event()

    async def wait_until(self, predicate: Callable[[Snapshot], bool]) -> Snapshot:
        """Wait for a published snapshot that satisfies ``predicate`` (operators, tests)."""
        while not predicate(self._current):
            await self._published.wait()
        return self._current

    async def mirror_to_store(
        self,
        store: Store,
        instance_id: str,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Keep the store's copy of node state equal to the latest snapshot."""
        written: dict[str, NodeView] = {}
        task_status.started()
        while True:
            await self._changed.wait()
            self._changed = trio.Event()
            snapshot = self._current
            try:
                for node_id, view in snapshot.nodes.items():
                    if written.get(node_id) != view:
                        await store.put_node(node_id, _node_fields(view, instance_id))
                        written[node_id] = view
                for node_id in [n for n in written if n not in snapshot.nodes]:
                    await store.remove_node(node_id)
                    del written[node_id]
            except Exception as exc:  # the mirror is best effort: never take the server down
                level = log.warning if isinstance(exc, StoreUnavailable) else log.exception
                level("node mirror failed; retrying", error=str(exc))
                self._changed.set()
                await trio.sleep(MIRROR_RETRY_S)


def _node_fields(view: NodeView, instance_id: str) -> dict[str, str]:
    return {
        "status": str(view.status),
        "epoch": str(view.epoch),
        "max_concurrent_jobs": str(view.max_concurrent_jobs),
        "serves": ",".join(sorted(view.pools)),  # the pools it is in while ready
        "services": ",".join(sorted(view.services)),
        "instance": instance_id,
    }
