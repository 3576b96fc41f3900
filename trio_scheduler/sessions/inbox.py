"""A session task's inbox: node events before client frames.

Client frames arrive through a channel bounded in frames and in bytes, so a client that
outpaces its session is slowed down by TCP backpressure. Node events (results, node loss, capacity wake-ups) are
put without waiting — a node connection must never block on a session — and are always
taken first: under load, a result releases its node slot at once instead of queueing
behind a backlog of audio chunks, which is what keeps an overloaded server dispatching.
The client's departure overtakes both: a gone client's queued audio and its jobs' answers
are of no use to anyone, and the session must stop at once (PROTOCOL §2.3.5).

A frame that finds the session idle (waiting here, nothing queued) is handled by the
socket's reader itself, in its own task, instead of being queued for the session task to
wake up for: :meth:`take_turn` hands the session to the reader, and until
:meth:`give_back_turn`, :meth:`next` hands out nothing and :meth:`free` waits, so session
code still runs in one task at a time. A wake-up per frame (four a second per browser)
was a good part of a session's cost.
"""

from __future__ import annotations

import collections
from typing import Any

import trio


NUDGE = object()  # from next(): nothing arrived, but the session task has something to do


class SessionInbox:
    """``events_per_turn``: how many events :meth:`next` may hand out in a row without a
    checkpoint. A session that fell behind (a long turn of a busy loop) then catches up on
    its queued frames in one turn instead of one frame per turn, which is what let a
    browser's frames wait seconds on a loaded server; the bound keeps one session from
    holding the loop for long."""

    def __init__(
        self, client_size: int, node_size: int, client_bytes: int = 2**62,
        events_per_turn: int = 1,
    ) -> None:
        self._events_per_turn = events_per_turn
        self._without_checkpoint = 0
        self._client_send, self._client_receive = trio.open_memory_channel[Any](client_size)
        self._client_sizes: collections.deque[int] = collections.deque()  # in channel order
        self._client_bytes = 0
        self._max_client_bytes = client_bytes
        self._client_space = trio.Event()
        self._node_events: collections.deque[Any] = collections.deque()
        self._node_size = node_size
        self._arrived = trio.Event()
        self._gone: Any | None = None
        self._closed = False
        self._parked = False  # the session task waits in next() for something to arrive
        self._held = False  # a frame is handled in place (take_turn .. give_back_turn)
        self._nudged = False
        self._turn_back = trio.Event()
        self.dropped_node_events = 0

    def close(self) -> None:
        """The session has ended: client frames are dropped from now on, and a reader
        waiting for room goes on at once (it must be free to finish the socket's close)."""
        self._closed = True
        self._client_space.set()

    async def put_client(self, event: Any, size: int = 0) -> None:
        """From the socket reader: waits while the session is behind (too many frames, or
        too many bytes queued; one frame larger than the budget still goes alone); after
        :meth:`close`, drops the frame without waiting."""
        while not self.put_client_nowait(event, size):
            if self._client_space.is_set():  # a fresh one, unless others already wait on it
                self._client_space = trio.Event()
            await self._client_space.wait()

    def put_client_nowait(self, event: Any, size: int = 0) -> bool:
        """As :meth:`put_client` when there is room (without a checkpoint); False when the
        session is behind, and the caller then waits in :meth:`put_client`."""
        return self._closed or self._put_client_nowait(event, size)

    def _put_client_nowait(self, event: Any, size: int) -> bool:
        if self._client_bytes and self._client_bytes + size > self._max_client_bytes:
            return False
        try:
            self._client_send.send_nowait(event)
        except trio.WouldBlock:
            return False
        self._client_bytes += size
        self._client_sizes.append(size)
        self._arrived.set()
        return True

    def client_gone(self, event: Any) -> None:
        """From the socket reader when the socket closed: never waits, and from now on
        :meth:`next` returns ``event`` before anything still queued."""
        self._gone = event
        self._arrived.set()

    def put_node(self, event: Any, *, force: bool = False) -> bool:
        """From node connections and the dispatcher: never waits; False when full.

        ``force`` is for the session's own attempts, whose reports must never be lost
        (they may carry a slot); there is at most one at a time.
        """
        if len(self._node_events) >= self._node_size and not force:
            self.dropped_node_events += 1
            return False
        self._node_events.append(event)
        self._arrived.set()
        return True

    def take_node_events(self) -> list[Any]:
        """Every node event not handled yet (for the session's cleanup)."""
        events, self._node_events = list(self._node_events), collections.deque()
        return events

    def take_turn(self) -> bool:
        """For the socket's reader: True when the session task is idle (waiting in
        :meth:`next`, nothing queued, the session not over), and the reader may handle its
        frame itself; it must then call :meth:`give_back_turn`, whatever happens."""
        if (self._parked and not self._held and not self._closed and self._gone is None
                and not self._node_events and not self._client_sizes):
            self._held = True
            self._turn_back = trio.Event()  # one per turn: every free() waits on it
            return True
        return False

    def give_back_turn(self, *, nudge: bool = False) -> None:
        """The frame handled in place is done. ``nudge``: wake the session task even with
        nothing queued (:meth:`next` returns :data:`NUDGE`), for what only it may do."""
        self._held = False
        self._nudged = self._nudged or nudge
        self._turn_back.set()
        if self._nudged or self._gone is not None or self._node_events or self._client_sizes:
            self._arrived.set()

    async def free(self) -> None:
        """Wait until no frame is handled in place (the session task, before it runs
        session code other than through :meth:`next`)."""
        while self._held:
            await self._turn_back.wait()

    async def next(self) -> Any:
        """The next event: the client's departure, else a nudge, else node events, else
        client frames; never while a frame is handled in place.

        Cancel-safe: when a cancellation (a deadline) interrupts it, it has taken nothing,
        so the session can wait under one long-lived cancel scope whose deadline it moves,
        instead of opening one per event.
        """
        while True:
            if self._held:
                pass  # wait for the turn to come back
            elif self._gone is not None:
                await trio.lowlevel.checkpoint()
                return self._gone
            elif self._nudged:
                await trio.lowlevel.checkpoint()
                self._nudged = False
                return NUDGE
            elif self._node_events or self._client_sizes:
                await self._turn()  # before taking: a cancellation here loses nothing
                if self._gone is not None or self._held or self._nudged:
                    continue
                if self._node_events:
                    return self._node_events.popleft()
                event = self._client_receive.receive_nowait()
                self._client_bytes -= self._client_sizes.popleft()
                self._client_space.set()
                return event
            self._arrived = trio.Event()
            self._without_checkpoint = 0
            self._parked = True
            try:
                await self._arrived.wait()
            finally:
                self._parked = False

    async def _turn(self) -> None:
        """A checkpoint once every ``events_per_turn`` events handed out in a row."""
        self._without_checkpoint += 1
        if self._without_checkpoint >= self._events_per_turn:
            self._without_checkpoint = 0
            await trio.lowlevel.checkpoint()
