"""The current snapshot.

``publish`` is synchronous: the moment the owner has built a snapshot, every reader sees
it. Readers that act on changes (the store mirror in :mod:`trio_scheduler.cluster.directory`)
take the latest one when they are ready for it.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from trio_scheduler.management.snapshot import Snapshot

Listener = Callable[[Snapshot, Snapshot], None]


class SnapshotPublisher:
    def __init__(self) -> None:
        self._current = Snapshot.empty()
        self._listeners: list[Listener] = []
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
        self._published.set()
        self._published = trio.Event()

    async def wait_until(self, predicate: Callable[[Snapshot], bool]) -> Snapshot:
        """Wait for a published snapshot that satisfies ``predicate`` (operators, tests)."""
        while not predicate(self._current):
            await self._published.wait()
        return self._current

    async def next_change(self, seen: Snapshot | None) -> Snapshot:
        """The current snapshot, once it is not ``seen`` (bursts coalesce: a slow reader
        gets the latest, not each one)."""
        while self._current is seen:
            await self._published.wait()
        return self._current
